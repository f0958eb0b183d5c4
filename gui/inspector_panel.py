"""The request inspector: recent requests (summaries from engine snapshots; a filter bar
and sortable columns) and, for the selected one, every plugin hop (fetched once per
selection): header diffs before/after, a line diff of changed bodies, local replies,
what a log-only plugin would have changed, callouts and their responses, hops never
reached, and each callback's named result and time; Request and Response tabs show
both ends of the chain. A recorded request can be sent again from the composer, copied
as curl or saved as HAR (``gui.inspector_export``)."""

from __future__ import annotations

import contextlib
import difflib
import html
import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QColor, QGuiApplication, QShowEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QTabWidget,
    QTextBrowser,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from gui.composer_send import grpc_status_text
from gui.engine_service import lab_api
from gui.inspector_export import (
    InspectorFilter,
    callback_result_name,
    hop_not_reached,
    parse_filter,
    record_exchange,
    record_to_curl,
    record_to_har,
)
from gui.when_shown import WhenShown
from host.proxy.request_views import (
    HeaderPairs,
    HopView,
    RequestGone,
    RequestSummary,
    RequestView,
)
from host.proxy.snapshots import FailureView

__all__ = [
    "InspectorPanel",
    "body_diff",
    "header_diff",
    "render_exchange_html",
    "render_request_html",
    "replay_request",
]

_STATUS_COLOURS = {2: "#3fb950", 3: "#58a6ff", 4: "#d29922", 5: "#f85149"}


def header_diff(
    before: Sequence[Sequence[str]] | None, after: Sequence[Sequence[str]] | None
) -> list[tuple[str, str, str]]:
    """[(sign, name, value)] with sign "+" added, "-" removed, "=" unchanged."""
    b = [(str(k), str(v)) for k, v in (before or [])]
    a = [(str(k), str(v)) for k, v in (after or [])]
    out: list[tuple[str, str, str]] = []
    remaining = list(a)
    for pair in b:
        if pair in remaining:
            remaining.remove(pair)
            out.append(("=", *pair))
        else:
            out.append(("-", *pair))
    out.extend(("+", *pair) for pair in remaining)
    return out


_GREEN, _RED, _GREY, _AMBER = "#3fb950", "#f85149", "#8b949e", "#d29922"
_BODY_SHOWN = 4096


def _e(v: Any) -> str:
    return html.escape(str(v))


def _anchor(plugin: str) -> str:
    return "hop-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in plugin)


def _diff_html(
    title: str, before: HeaderPairs | None, after: HeaderPairs | None, note: str = ""
) -> str:
    if before is None and after is None:
        return ""
    rows = header_diff(before, after)
    changed = any(s != "=" for s, _, _ in rows)
    added = sum(1 for s, _, _ in rows if s == "+")
    removed = sum(1 for s, _, _ in rows if s == "-")
    summary = f"+{added} −{removed}" if changed else "unchanged"
    parts = [f"<p><b>{_e(title)}</b> <span style='color:{_GREY}'>({summary}){note}</span></p>"]
    parts.append("<pre style='margin:0'>")
    for sign, name, value in rows:
        colour = {"+": _GREEN, "-": _RED}.get(sign, _GREY)
        text = _e(f"{sign if sign != '=' else ' '} {name}: {value}")
        parts.append(f"<span style='color:{colour}'>{text}</span>")
    parts.append("</pre>")
    return "\n".join(parts)


def body_diff(before: str, after: str) -> list[tuple[str, str]]:
    """[(sign, line)] of a line-level diff ("+", "-", " "), for text bodies."""
    out: list[tuple[str, str]] = []
    b_lines = before.splitlines() or ([""] if before else [])
    a_lines = after.splitlines() or ([""] if after else [])
    for line in difflib.ndiff(b_lines, a_lines):
        sign, text = line[:1], line[2:]
        if sign in "+- ":
            out.append((sign, text))
    return out


def _body_html(
    title: str,
    before: str | None,
    after: str | None,
    note: str = "",
    sizes: tuple[int | None, int | None] = (None, None),
) -> str:
    """``sizes``: the whole lengths the engine saw, when the stored text is cut short."""
    if before is None and after is None:
        return ""
    b, a = before or "", after or ""
    b_size = sizes[0] if sizes[0] is not None else len(b.encode())
    a_size = sizes[1] if sizes[1] is not None else len(a.encode())
    if b == a:
        return (
            f"<p><b>{_e(title)}</b> <span style='color:{_GREY}'>(unchanged, "
            f"{b_size} bytes seen){note}</span></p>"
        )
    cut = ""
    if len(b) >= _BODY_SHOWN or len(a) >= _BODY_SHOWN:
        cut = f", first {_BODY_SHOWN} bytes shown"
    elif b_size > len(b.encode()) or a_size > len(a.encode()):
        cut = ", diff of the recorded start"
    parts = [
        f"<p><b>{_e(title)}</b> <span style='color:{_GREY}'>(changed: {b_size} → "
        f"{a_size} bytes{cut}){note}</span></p><pre style='margin:0'>"
    ]
    for sign, line in body_diff(b, a):
        colour = {"+": _GREEN, "-": _RED}.get(sign, _GREY)
        parts.append(f"<span style='color:{colour}'>{_e(sign)} {_e(line)}</span>")
    parts.append("</pre>")
    return "\n".join(parts)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th align='left'>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table cellspacing='0' cellpadding='2'><tr>{head}</tr>{body}</table>"


def _changed_headers(before: HeaderPairs | None, after: HeaderPairs | None) -> int:
    return sum(1 for sign, _, _ in header_diff(before, after) if sign != "=")


def _hop_summary(hop: HopView) -> str:
    if hop_not_reached(hop):
        return f"<span style='color:{_GREY}'>not reached (an earlier hop answered)</span>"
    if not hop.ran:
        return f"<span style='color:{_GREY}'>skipped: {_e(hop.skipped_reason)}</span>"
    what = []
    if hop.failure:
        what.append(f"<span style='color:{_RED}'>failed</span>")
    if hop.local_reply:
        verb = "would reply" if hop.mode == "log-only" else "replied"
        what.append(f"<span style='color:{_AMBER}'>{verb} {_e(hop.local_reply.status)}</span>")
    for label, before, after in (
        ("req headers", hop.request_headers_before, hop.request_headers_after),
        ("resp headers", hop.response_headers_before, hop.response_headers_after),
    ):
        n = _changed_headers(before, after)
        if n:
            what.append(f"{label} ±{n}")
    for label, body_before, body_after in (
        ("req body", hop.request_body_before, hop.request_body_after),
        ("resp body", hop.response_body_before, hop.response_body_after),
    ):
        if body_before != body_after:
            what.append(f"{label} changed")
    for label, before, after in (
        ("req trailers", hop.request_trailers_before, hop.request_trailers_after),
        ("resp trailers", hop.response_trailers_before, hop.response_trailers_after),
    ):
        n = _changed_headers(before, after)
        if n:
            what.append(f"{label} ±{n}")
    if hop.callouts:
        what.append(f"{len(hop.callouts)} callout(s)")
    would = [w for w in hop.would if not w.startswith("reply_")]
    if would:
        what.append(f"<span style='color:{_AMBER}'>would: {_e(', '.join(would))}</span>")
    return ", ".join(what) or "no change"


def _grpc_html(rec: RequestView) -> str:
    """The gRPC status line of a gRPC exchange ("" otherwise): code and name, and the
    grpc-message."""
    code = rec.grpc_status
    if code is None:
        return ""
    colour = _GREEN if code == 0 else _RED
    msg = rec.grpc_message
    return (
        f"<p><b>gRPC status</b> <span style='color:{colour}'>{_e(grpc_status_text(code))}"
        "</span>" + (f" · grpc-message: {_e(msg)}" if msg else "") + "</p>"
    )


def _failure_html(f: FailureView, backtrace: bool = True) -> str:
    bt = "".join(f"<br>&nbsp;&nbsp;{_e(b)}" for b in f.backtrace) if backtrace else ""
    return f"<p style='color:{_RED}'><b>failure</b> {_e(f.kind)}: {_e(f.message)}{bt}</p>"


def _hop_html(hop: HopView) -> list[str]:
    """One hop's section of the details: what it did, each part's diff, its callbacks."""
    log_only = hop.mode == "log-only"
    out = [
        f"<hr><h4><a name='{_anchor(hop.plugin)}'></a>{_e(hop.plugin)} "
        f"<small>({_e(hop.mode)})</small></h4>"
    ]
    if hop_not_reached(hop):
        out.append(
            "<p>not reached: an earlier plugin answered (or the request ended) before "
            "this one was called</p>"
        )
        return out
    if not hop.ran:
        out.append(f"<p>skipped: {_e(hop.skipped_reason)}</p>")
        if hop.failure:
            out.append(_failure_html(hop.failure, backtrace=False))
        return out
    note = ""
    if log_only:
        note = " — log-only: what it <i>would</i> have done; nothing was applied"
        out.append(
            f"<p style='color:{_AMBER}'>Log-only: the changes below are what this plugin "
            "would have made; the request and response went on unmodified.</p>"
        )
    if hop.would:
        would = _e(", ".join(hop.would))
        out.append(f"<p style='color:{_AMBER}'><b>would have:</b> {would}</p>")
    if hop.failure:
        out.append(_failure_html(hop.failure))
    lr = hop.local_reply
    if lr:
        verb = "would have replied" if log_only else "local reply"
        hdrs = "".join(f"<br>&nbsp;&nbsp;{_e(k)}: {_e(v)}" for k, v in lr.headers)
        out.append(
            f"<p style='color:{_AMBER}'><b>{verb}</b> {_e(lr.status)}"
            + (f" ({_e(lr.details)})" if lr.details else "")
            + hdrs
            + (f"<br>body: {_e(lr.body[:500])}" if lr.body else "")
            + "</p>"
        )
    if hop.paused_ms:
        out.append(f"<p>held the stream paused for {_e(hop.paused_ms)} ms</p>")
    if hop.callouts:
        out.append("<p><b>Callouts</b></p>")
        out.append(
            _table(
                ["cluster", "status", "ms", "failure"],
                [
                    [
                        _e(c.cluster),
                        _e(c.status or "—"),
                        _e(c.elapsed_ms),
                        f"<span style='color:{_RED}'>{_e(c.failure)}</span>" if c.failure else "",
                    ]
                    for c in hop.callouts
                ],
            )
        )
    out.append(
        _diff_html("request headers", hop.request_headers_before, hop.request_headers_after, note)
    )
    out.append(
        _body_html(
            "request body",
            hop.request_body_before,
            hop.request_body_after,
            note,
            (hop.request_body_before_size, hop.request_body_after_size),
        )
    )
    if hop.request_trailers_before is not None:
        out.append(
            _diff_html(
                "request trailers", hop.request_trailers_before, hop.request_trailers_after, note
            )
        )
    out.append(
        _diff_html(
            "response headers", hop.response_headers_before, hop.response_headers_after, note
        )
    )
    out.append(
        _body_html(
            "response body",
            hop.response_body_before,
            hop.response_body_after,
            note,
            (hop.response_body_before_size, hop.response_body_after_size),
        )
    )
    if hop.response_trailers_before is not None:
        out.append(
            _diff_html(
                "response trailers",
                hop.response_trailers_before,
                hop.response_trailers_after,
                note,
            )
        )
    if hop.callbacks:
        total = sum(c.us for c in hop.callbacks)
        out.append(f"<p><b>Callbacks</b> ({total:.1f} µs in all)</p>")
        out.append(
            _table(
                ["callback", "result", "µs"],
                [
                    [
                        _e(c.name.removeprefix("proxy_")),
                        _e(callback_result_name(c.name, c.result)),
                        _e(c.us),
                    ]
                    for c in hop.callbacks
                ],
            )
        )
    return out


def render_request_html(rec: RequestView | RequestGone) -> str:
    if isinstance(rec, RequestGone):
        return f"<p>Request #{_e(rec.id)}: {_e(rec.error)}</p>"
    status = rec.status
    colour = _STATUS_COLOURS.get(status // 100, _GREY)
    facts = [f"request id {_e(rec.request_id)}", f"{_e(rec.duration_ms)} ms"]
    if rec.protocol:
        facts.insert(0, _e(rec.protocol))
    if rec.client:
        facts.append(f"client {_e(rec.client)}")
    if rec.authority:
        facts.append(f"authority {_e(rec.authority)}")
    facts.append(_e(rec.outcome or "ok"))
    if rec.response_code_details:
        facts.append(_e(rec.response_code_details))
    out = [
        f"<h3>{_e(rec.method)} {_e(rec.path)} → <span style='color:{colour}'>{status}</span></h3>",
        f"<p>{' · '.join(facts)}</p>",
        _grpc_html(rec),
    ]
    if rec.hops:
        rows = []
        for hop in rec.hops:
            us = sum(c.us for c in hop.callbacks)
            rows.append(
                [
                    f"<a href='#{_anchor(hop.plugin)}'><b>{_e(hop.plugin)}</b></a>",
                    _e(hop.mode),
                    f"{us:.1f} µs" if hop.ran and not hop_not_reached(hop) else "—",
                    _hop_summary(hop),
                ]
            )
        out.append("<p><b>Plugin hops</b> (request order; the response runs back up)</p>")
        out.append(_table(["plugin", "mode", "time", "what it did"], rows))
    for hop in rec.hops:
        out.extend(_hop_html(hop))
    return "\n".join(out)


def replay_request(rec: RequestView) -> dict[str, Any] | None:
    """(method, path, headers) to send the recorded request again: the headers as the
    client sent them (the first hop's "before" without what the proxy added), without
    pseudo-headers, host, hop-by-hop fields and the request id. None when the record
    has no request headers."""
    hops = rec.hops
    before = next((h.request_headers_before for h in hops if h.request_headers_before), None)
    if before is None:
        return None
    # what the proxy added (x-forwarded-for/-proto) goes; x-request-id too, so the proxy
    # gives the new request a fresh one
    sent = lab_api.client_view(before)
    skip = {
        "host",
        "content-length",
        "connection",
        "transfer-encoding",
        "keep-alive",
        "x-request-id",
    }
    headers = [[k, v] for k, v in sent if not k.startswith(":") and k.lower() not in skip]
    body = next((h.request_body_before for h in hops if h.request_body_before), "")
    out: dict[str, Any] = {
        "method": rec.method or "GET",
        "path": rec.path or "/",
        "headers": headers,
        "body": body,
    }
    ctype = next((v for k, v in headers if k.lower() == "content-type"), "")
    if rec.grpc_status is not None or ctype.startswith("application/grpc"):
        return _grpc_replay(out)
    if rec.protocol == "HTTP/2":
        out["protocol"] = "HTTP/2"
    return out


def _grpc_replay(req: dict[str, Any]) -> dict[str, Any]:
    """A recorded gRPC request as a composer gRPC call: the metadata without what the
    gRPC client sets, and the first message, unframed (text when it is UTF-8, else hex;
    the record keeps the body as UTF-8 text, so bytes that were not UTF-8 are lost)."""
    data = str(req["body"]).encode("utf-8")
    if len(data) >= 5 and int.from_bytes(data[1:5], "big") <= len(data) - 5:
        data = data[5 : 5 + int.from_bytes(data[1:5], "big")]
    try:
        text, fmt = data.decode("utf-8"), "text"
        if "\ufffd" in text or any(c < " " and c not in "\t\n\r" for c in text):
            raise ValueError
    except ValueError:
        text, fmt = data.hex(" "), "hex"
    if fmt == "text":
        with contextlib.suppress(ValueError):
            json.loads(text)
            fmt = "json"
    set_by_client = {"content-type", "te", "user-agent"}
    return {
        "protocol": "gRPC",
        "method": "POST",
        "path": req["path"],
        "headers": [
            [k, v]
            for k, v in req["headers"]
            if k.lower() not in set_by_client and not k.lower().startswith("grpc-")
        ],
        "body": text,
        "payload_format": fmt,
    }


def _pairs_html(title: str, pairs: HeaderPairs | None) -> str:
    if pairs is None:
        return f"<p><b>{_e(title)}</b> <span style='color:{_GREY}'>(no plugin saw them)</span></p>"
    rows = "".join(f"{_e(k)}: {_e(v)}\n" for k, v in pairs)
    return f"<p><b>{_e(title)}</b></p><pre style='margin:0'>{rows}</pre>"


def _text_html(title: str, body: str | None) -> str:
    if not body:
        return ""
    shown = body[:_BODY_SHOWN]
    more = f" (first {_BODY_SHOWN} characters)" if len(body) > _BODY_SHOWN else ""
    return f"<p><b>{_e(title)}</b>{more}</p><pre style='margin:0'>{_e(shown)}</pre>"


def render_exchange_html(rec: RequestView | RequestGone, side: str) -> str:
    """The Request tab (``side="request"``) or the Response tab: headers and body as
    the client and as the upstream saw them (where they differ, both)."""
    if isinstance(rec, RequestGone):
        return f"<p>{_e(rec.error)}</p>"
    ex = record_exchange(rec)
    out: list[str] = []
    if side == "request":
        out.append(f"<h3>{_e(rec.method)} {_e(rec.path)}</h3>")
        client, upstream = ex.request_headers_client, ex.request_headers_upstream
        out.append(_pairs_html("headers as the client sent them", client))
        if upstream is not None and upstream != client:
            out.append(_pairs_html("headers as upstream received them", upstream))
        body_c, body_u = ex.request_body_client, ex.request_body_upstream
        out.append(_text_html("body as the client sent it", body_c))
        if body_u is not None and body_u != body_c:
            out.append(_text_html("body as upstream received it", body_u))
        tr_c, tr_u = ex.request_trailers_client, ex.request_trailers_upstream
        if tr_c is not None:
            out.append(_pairs_html("trailers as the client sent them", tr_c))
        if tr_u is not None and tr_u != tr_c:
            out.append(_pairs_html("trailers as upstream received them", tr_u))
        return "\n".join(out)
    status = rec.status
    colour = _STATUS_COLOURS.get(status // 100, _GREY)
    out.append(f"<h3><span style='color:{colour}'>{status}</span></h3>")
    out.append(_grpc_html(rec))
    lr = ex.local_reply
    if lr is not None:
        out.append(
            f"<p style='color:{_AMBER}'>local reply {_e(lr.status)}"
            + (f" ({_e(lr.details)})" if lr.details else "")
            + ": upstream was not asked</p>"
        )
    up, client = ex.response_headers_upstream, ex.response_headers_client
    if lr is None:
        out.append(_pairs_html("headers as upstream sent them", up))
    if client is not None and client != up:
        out.append(_pairs_html("headers as the client received them", client))
    body_u, body_c = ex.response_body_upstream, ex.response_body_client
    out.append(_text_html("body as upstream sent it", body_u))
    if body_c is not None and body_c != body_u:
        out.append(_text_html("body as the client received it", body_c))
    if lr is not None and lr.body:
        out.append(_text_html("local reply body", lr.body))
    tr_u, tr_c = ex.response_trailers_upstream, ex.response_trailers_client
    if tr_u is not None:
        out.append(_pairs_html("trailers as upstream sent them", tr_u))
    if tr_c is not None and tr_c != tr_u:
        out.append(_pairs_html("trailers as the client received them", tr_c))
    return "\n".join(out)


class _RequestItem(QTreeWidgetItem):
    """A row that sorts numerically by id, status and time."""

    NUMERIC = (0, 4, 5)

    def __lt__(self, other: QTreeWidgetItem) -> bool:
        tree = self.treeWidget()
        col = tree.sortColumn() if tree is not None else 0
        if col in self.NUMERIC:
            try:
                return float(self.text(col) or 0) < float(other.text(col) or 0)
            except ValueError:
                pass
        if col == 1:  # the time column: the record's order
            return int(self.data(0, _ID_ROLE) or 0) < int(other.data(0, _ID_ROLE) or 0)
        return self.text(col) < other.text(col)


_ID_ROLE = Qt.ItemDataRole.UserRole
_FOLLOW_EVERY_S = 1.0  # "follow newest" fetches the newest record at most this often


class InspectorPanel(QWidget):
    """Recent requests, newest first; selecting one asks for its hops, once.

    The selection is pinned to its record: new rows do not move it, and the selected
    row is kept when older ones leave the list. Details are fetched and rendered once
    per selection (issue 12 item 1: re-rendering them for every poll halved the proxy's
    throughput). "Follow newest" selects the newest request instead, at most once a
    second."""

    request_selected = Signal(int)  # the record id: the window asks the service for it
    capture_toggled = Signal(bool)  # False: the list (and the engine's record ring) pause
    replay_requested = Signal(dict)  # method, path, headers, body of the shown request
    intercept_requested = Signal(dict)  # {"plugin", "stage"} or {} to disarm

    # "Protocol" is the last logical column (the row lists' indices stay as they were)
    # and is shown after "Method"
    COLUMNS = ("#", "Time", "Method", "Path", "Status", "ms", "Plugins", "Notes", "Protocol")
    PROTOCOL_COLUMN = 8

    def __init__(self, capacity: int = 200, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("InspectorPanel")
        self.capacity = capacity
        self.base_url = ""  # the proxy (http://host:port), for curl and HAR exports
        self.ca_file = ""  # the CA a TLS proxy is checked against (curl --cacert)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        bar = QHBoxLayout()
        self.pause_button = QPushButton("Pause")
        self.pause_button.setCheckable(True)
        self.pause_button.setToolTip(
            "Stop taking new requests, so the ones listed stay available to inspect"
        )
        self.follow_check = QCheckBox("Follow newest")
        self.follow_check.setToolTip(
            "Show the newest request's details as requests arrive (once a second)"
        )
        self.filter_edit = QLineEdit()
        self.filter_edit.setObjectName("inspector_filter")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.setPlaceholderText(
            "filter: status:5xx method:POST path:/api plugin:auth changed:add-header failed "
            "protocol:h2 grpc:error"
        )
        self.filter_edit.setToolTip(
            "Every term must hold. status: a code (404) or class (5xx); method; path: a "
            "substring (a bare word too); plugin: ran on it; changed: changed headers, "
            "body or replied; failed: a plugin failed or the status is 5xx / none; "
            "protocol: http/1.1, http/2 (h2) or grpc; grpc: a status code or name "
            "(14, unavailable) or error (any but OK)"
        )
        self.count_label = QLabel("")
        bar.addWidget(self.pause_button)
        bar.addWidget(self.follow_check)
        bar.addWidget(self.filter_edit, 1)
        bar.addWidget(self.count_label)
        lay.addLayout(bar)
        self.filter_error = QLabel("")
        self.filter_error.setStyleSheet(f"color:{_RED}")
        self.filter_error.hide()
        lay.addWidget(self.filter_error)
        split = QSplitter(Qt.Orientation.Vertical)
        self.request_list = QTreeWidget()
        self.request_list.setObjectName("request_list")
        self.request_list.setRootIsDecorated(False)
        self.request_list.setUniformRowHeights(True)
        self.request_list.setHeaderLabels(list(self.COLUMNS))
        self.request_list.header().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for col, width in enumerate((50, 90, 60, 200, 50, 60, 200)):
            self.request_list.header().resizeSection(col, width)
        self.request_list.header().moveSection(self.PROTOCOL_COLUMN, 3)
        self.request_list.header().resizeSection(self.PROTOCOL_COLUMN, 70)
        self.request_list.setSortingEnabled(True)
        self.request_list.sortByColumn(0, Qt.SortOrder.DescendingOrder)
        details = QWidget()
        dl = QVBoxLayout(details)
        dl.setContentsMargins(0, 0, 0, 0)
        actions = QHBoxLayout()
        self.curl_button = QPushButton("Copy as curl")
        self.har_button = QPushButton("Save as HAR…")
        self.intercept_button = QPushButton("Intercept…")
        self.intercept_button.setToolTip(
            "Pause the next request at a plugin hop, edit its headers or body, resume"
        )
        self.replay_button = QPushButton("Send again from the composer")
        for b in (self.curl_button, self.har_button, self.replay_button):
            b.setEnabled(False)
        actions.addWidget(self.curl_button)
        actions.addWidget(self.har_button)
        actions.addStretch(1)
        actions.addWidget(self.intercept_button)
        actions.addWidget(self.replay_button)
        dl.addLayout(actions)
        self.detail_tabs = QTabWidget()
        self.detail_view = QTextBrowser()
        self.detail_view.setObjectName("request_detail")
        self.detail_view.setOpenLinks(False)
        self.request_view = QTextBrowser()
        self.request_view.setObjectName("request_request")
        self.response_view = QTextBrowser()
        self.response_view.setObjectName("request_response")
        self.detail_tabs.addTab(self.detail_view, "Plugin hops")
        self.detail_tabs.addTab(self.request_view, "Request")
        self.detail_tabs.addTab(self.response_view, "Response")
        dl.addWidget(self.detail_tabs, 1)
        split.addWidget(self.request_list)
        split.addWidget(details)
        split.setSizes([220, 480])
        lay.addWidget(split)
        self.request_list.itemSelectionChanged.connect(self._on_request_list_selection_changed)
        self.detail_view.anchorClicked.connect(self._on_detail_view_anchor_clicked)
        self.pause_button.toggled.connect(self._on_pause_button_toggled)
        self.follow_check.toggled.connect(self._on_follow_check_toggled)
        self.filter_edit.textChanged.connect(self._on_filter_edit_text_changed)
        self.replay_button.clicked.connect(self._on_replay_button_clicked)
        self.curl_button.clicked.connect(self._on_curl_button_clicked)
        self.har_button.clicked.connect(self._on_har_button_clicked)
        self.intercept_button.clicked.connect(self._on_intercept_button_clicked)
        self.shown_id = 0
        self.selected_id = 0  # the pinned selection (0: none)
        self.paused = False
        self.renders = 0  # detail renders (one per selection): what item 1 measures
        self._replay: dict[str, Any] | None = None
        self._record: RequestView | None = None
        self._items: dict[int, QTreeWidgetItem] = {}  # by id, oldest first
        self._summaries: dict[int, RequestSummary] = {}
        self._filter = InspectorFilter()
        self._updating = False
        self._followed_at = 0.0
        self.plugin_names: list[str] = []  # for the intercept dialog
        # summaries that arrive while the panel sits on a hidden tab wait until it is shown
        self._when_shown = WhenShown(self, self._add_rows, capacity)

    # -- the list -------------------------------------------------------------------------

    def append_requests(self, summaries: Iterable[RequestSummary]) -> None:
        if self.paused:
            return
        self._when_shown.add(summaries)

    def showEvent(self, event: QShowEvent) -> None:
        self._when_shown.flush()
        super().showEvent(event)

    def _add_rows(self, summaries: Iterable[RequestSummary]) -> None:
        batch = list(summaries)[-self.capacity :]
        if not batch:
            return
        lst = self.request_list
        self._updating = True
        lst.setUpdatesEnabled(False)
        lst.setSortingEnabled(False)
        try:
            items = []
            for s in batch:
                rid = s.id
                notes = []
                if s.local_reply:
                    notes.append(f"local reply by {s.local_reply}")
                if s.would:
                    notes.append(f"{s.would} log-only intent(s)")
                if s.failed:
                    notes.append(f"{s.failed} failed")
                code = s.grpc_status
                if code is not None:  # a gRPC exchange: its status first
                    msg = s.grpc_message
                    notes.insert(0, f"gRPC {grpc_status_text(code)}" + (f": {msg}" if msg else ""))
                item = _RequestItem(
                    [
                        str(rid),
                        time.strftime("%H:%M:%S", time.localtime(s.started)),
                        s.method,
                        s.path,
                        str(s.status),
                        f"{s.duration_ms:.2f}",
                        ", ".join(s.plugins),
                        "; ".join(notes),
                        "gRPC" if code is not None else (s.protocol or "HTTP/1.1"),
                    ]
                )
                item.setData(0, _ID_ROLE, rid)
                item.setData(1, _ID_ROLE, s.request_id)
                colour = _STATUS_COLOURS.get(s.status // 100)
                if colour:
                    item.setForeground(4, QColor(colour))
                if code:  # a gRPC error: the note says which
                    item.setForeground(7, QColor(_RED))
                old = self._items.pop(rid, None)
                if old is not None:  # the same id again (a restarted engine): replace
                    lst.takeTopLevelItem(lst.indexOfTopLevelItem(old))
                self._items[rid] = item
                self._summaries[rid] = s
                items.append(item)
            lst.addTopLevelItems(items)
            if not self._filter.empty:  # (hiding works once an item is in the tree)
                for item, s in zip(items, batch, strict=True):
                    item.setHidden(not self._filter.matches(s))
            self._trim()
        finally:
            lst.setSortingEnabled(True)
            lst.setUpdatesEnabled(True)
            self._updating = False
        self._update_count()
        if self.follow_check.isChecked():
            self._follow()

    def _trim(self) -> None:
        """Drop the oldest rows past capacity; the selected row stays (pinned)."""
        lst = self.request_list
        excess = len(self._items) - self.capacity
        if excess <= 0:
            return
        for rid in list(self._items):
            if excess <= 0:
                break
            if rid == self.selected_id:
                continue
            item = self._items.pop(rid)
            self._summaries.pop(rid, None)
            lst.takeTopLevelItem(lst.indexOfTopLevelItem(item))
            excess -= 1

    def _update_count(self) -> None:
        n = len(self._items)
        shown = sum(1 for it in self._items.values() if not it.isHidden())
        text = f"{n} most recent requests"
        if shown != n:
            text = f"{shown} of {n} most recent requests"
        self.count_label.setText(text)

    def request_ids(self) -> list[int]:
        """The listed ids in display order (newest first unless sorted otherwise)."""
        self._when_shown.flush()
        lst = self.request_list
        return [int(lst.topLevelItem(i).data(0, _ID_ROLE)) for i in range(lst.topLevelItemCount())]

    def visible_request_ids(self) -> list[int]:
        self._when_shown.flush()
        lst = self.request_list
        out = []
        for i in range(lst.topLevelItemCount()):
            item = lst.topLevelItem(i)
            if not item.isHidden():
                out.append(int(item.data(0, _ID_ROLE)))
        return out

    def rows(self) -> list[list[str]]:
        self._when_shown.flush()
        lst = self.request_list
        return [
            [lst.topLevelItem(i).text(c) for c in range(len(self.COLUMNS))]
            for i in range(lst.topLevelItemCount())
        ]

    def select_request(self, record_id: int) -> None:
        self._when_shown.flush()
        item = self._items.get(record_id)
        if item is not None:
            item.setHidden(False)
            self.request_list.setCurrentItem(item)

    def request_id_list(self) -> list[str]:
        """The listed requests' request ids (x-request-id), newest first."""
        self._when_shown.flush()
        lst = self.request_list
        return [str(lst.topLevelItem(i).data(1, _ID_ROLE)) for i in range(lst.topLevelItemCount())]

    def select_request_id(self, request_id: str) -> bool:
        """Select the listed request with this request id (x-request-id); False if it is
        not listed (any more)."""
        self._when_shown.flush()
        for item in self._items.values():
            if item.data(1, _ID_ROLE) == request_id:
                item.setHidden(False)
                self.request_list.setCurrentItem(item)
                return True
        return False

    def set_filter(self, text: str) -> None:
        self.filter_edit.setText(text)

    def _on_filter_edit_text_changed(self, text: str) -> None:
        try:
            self._filter = parse_filter(text)
        except ValueError as e:
            self.filter_error.setText(str(e))
            self.filter_error.show()
            return
        self.filter_error.hide()
        self._updating = True
        try:
            for rid, item in self._items.items():
                hide = not self._filter.empty and not self._filter.matches(self._summaries[rid])
                item.setHidden(hide and rid != self.selected_id)
        finally:
            self._updating = False
        self._update_count()

    # -- selection and details ------------------------------------------------------------

    def _follow(self) -> None:
        now = time.monotonic()
        if now - self._followed_at < _FOLLOW_EVERY_S:
            return
        newest = next((rid for rid in reversed(self._items) if not self._items[rid].isHidden()), 0)
        if newest and newest != self.selected_id:
            self._followed_at = now
            self.request_list.setCurrentItem(self._items[newest])

    def _on_follow_check_toggled(self, on: bool) -> None:
        if on:
            self._followed_at = 0.0
            self._follow()

    def show_details(self, rec: RequestView | RequestGone) -> None:
        """Render one record (what the service sent for the selection). A record for
        another id than the selected one (an answer that arrived late) is ignored."""
        rid = rec.id
        if self.selected_id and rid != self.selected_id:
            return
        self.shown_id = rid
        self.renders += 1
        self._record = rec if isinstance(rec, RequestView) else None
        self.detail_view.setHtml(render_request_html(rec))
        self.request_view.setHtml(render_exchange_html(rec, "request"))
        self.response_view.setHtml(render_exchange_html(rec, "response"))
        self._replay = replay_request(self._record) if self._record is not None else None
        self.replay_button.setEnabled(self._replay is not None)
        self.curl_button.setEnabled(self._record is not None)
        self.har_button.setEnabled(self._record is not None)

    def show_hop(self, plugin: str) -> None:
        """Scroll the details to one plugin's hop (what clicking its name does)."""
        self.detail_tabs.setCurrentWidget(self.detail_view)
        self.detail_view.scrollToAnchor(_anchor(plugin))

    def _on_detail_view_anchor_clicked(self, url: QUrl) -> None:
        if url.fragment():
            self.detail_view.scrollToAnchor(url.fragment())

    def set_paused(self, paused: bool) -> None:
        self.pause_button.setChecked(paused)

    def _on_pause_button_toggled(self, on: bool) -> None:
        self.paused = on
        self.pause_button.setText("Resume" if on else "Pause")
        self.capture_toggled.emit(not on)

    def _on_replay_button_clicked(self) -> None:
        if self._replay is not None:
            self.replay_requested.emit(dict(self._replay))

    def _on_request_list_selection_changed(self) -> None:
        items = self.request_list.selectedItems()
        if not items:
            return
        rid = int(items[0].data(0, _ID_ROLE))
        if rid == self.selected_id:
            return  # the same record: its details are already shown (or on their way)
        if self._updating:
            # the list changed under the selection (not the user): keep the pinned one
            pinned = self._items.get(self.selected_id)
            if pinned is not None:
                self.request_list.setCurrentItem(pinned)
                return
        self.selected_id = rid
        self.detail_view.setHtml(f"<p>Loading request #{rid}…</p>")
        self.request_view.setHtml("")
        self.response_view.setHtml("")
        for b in (self.replay_button, self.curl_button, self.har_button):
            b.setEnabled(False)
        self.request_selected.emit(rid)

    # -- export ---------------------------------------------------------------------------

    def curl_text(self) -> str:
        return record_to_curl(self._record, self.base_url, self.ca_file) if self._record else ""

    def har(self) -> dict[str, Any] | None:
        return record_to_har(self._record, self.base_url) if self._record else None

    def _on_curl_button_clicked(self) -> None:
        text = self.curl_text()
        if text:
            QGuiApplication.clipboard().setText(text)
            self.count_label.setText("curl command copied")

    def save_har(self, path: str) -> str:
        """Write the shown record as HAR; "" or the error for the user."""
        har = self.har()
        if har is None:
            return "no request is shown"
        try:
            with open(path, "w", encoding="utf-8") as f:
                json.dump(har, f, indent=1)
        except OSError as e:
            return f"{path}: {e.strerror or e}"
        return ""

    def _on_har_button_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save the request as HAR", f"request-{self.shown_id}.har", "HAR (*.har)"
        )
        if path:
            err = self.save_har(path)
            self.count_label.setText(err or f"saved {path}")

    def _on_intercept_button_clicked(self) -> None:
        self.intercept_requested.emit({})
