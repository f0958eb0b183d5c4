"""The request inspector: recent requests (summaries from engine snapshots) and, for the
selected one, every plugin hop (fetched on demand): header diffs before/after, a
line diff of changed bodies, local replies, what a log-only plugin would have changed,
callouts and their responses, and the time spent in each callback. A recorded request
can be sent again from the composer."""

from __future__ import annotations

import difflib
import html
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTextBrowser,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from gui.engine_service import lab_api

__all__ = ["InspectorPanel", "body_diff", "header_diff", "render_request_html", "replay_request"]

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


def _anchor(plugin: Any) -> str:
    return "hop-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in str(plugin))


def _diff_html(title: str, before: Any, after: Any, note: str = "") -> str:
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


def _hop_summary(hop: Mapping[str, Any]) -> str:
    if not hop.get("ran"):
        return f"<span style='color:{_GREY}'>skipped: {_e(hop.get('skipped_reason') or '')}</span>"
    what = []
    if hop.get("failure"):
        what.append(f"<span style='color:{_RED}'>failed</span>")
    if hop.get("local_reply"):
        verb = "would reply" if hop.get("mode") == "log-only" else "replied"
        what.append(
            f"<span style='color:{_AMBER}'>{verb} {_e(hop['local_reply'].get('status'))}</span>"
        )
    for key, label in (("request_headers", "req headers"), ("response_headers", "resp headers")):
        rows = header_diff(hop.get(f"{key}_before"), hop.get(f"{key}_after"))
        n = sum(1 for s, _, _ in rows if s != "=")
        if n:
            what.append(f"{label} ±{n}")
    for key, label in (("request_body", "req body"), ("response_body", "resp body")):
        if hop.get(f"{key}_before") != hop.get(f"{key}_after"):
            what.append(f"{label} changed")
    if hop.get("callouts"):
        what.append(f"{len(hop['callouts'])} callout(s)")
    would = [str(w) for w in hop.get("would") or [] if not str(w).startswith("reply_")]
    if would:
        what.append(f"<span style='color:{_AMBER}'>would: {_e(', '.join(would))}</span>")
    return ", ".join(what) or "no change"


def render_request_html(rec: Mapping[str, Any]) -> str:
    if rec.get("error"):
        return f"<p>Request #{_e(rec.get('id'))}: {_e(rec['error'])}</p>"
    status = int(rec.get("status") or 0)
    colour = _STATUS_COLOURS.get(status // 100, _GREY)
    facts = [f"request id {_e(rec.get('request_id'))}", f"{_e(rec.get('duration_ms'))} ms"]
    if rec.get("client"):
        facts.append(f"client {_e(rec['client'])}")
    if rec.get("authority"):
        facts.append(f"authority {_e(rec['authority'])}")
    facts.append(_e(rec.get("outcome") or "ok"))
    if rec.get("response_code_details"):
        facts.append(_e(rec["response_code_details"]))
    hops = list(rec.get("hops") or [])
    out = [
        f"<h3>{_e(rec.get('method'))} {_e(rec.get('path'))} → "
        f"<span style='color:{colour}'>{status}</span></h3>",
        f"<p>{' · '.join(facts)}</p>",
    ]
    if hops:
        rows = []
        for hop in hops:
            us = sum(float(c.get("us") or 0) for c in hop.get("callbacks") or [])
            rows.append(
                [
                    f"<a href='#{_anchor(hop['plugin'])}'><b>{_e(hop['plugin'])}</b></a>",
                    _e(hop.get("mode")),
                    f"{us:.1f} µs" if hop.get("ran") else "—",
                    _hop_summary(hop),
                ]
            )
        out.append("<p><b>Plugin hops</b> (request order; the response runs back up)</p>")
        out.append(_table(["plugin", "mode", "time", "what it did"], rows))
    for hop in hops:
        log_only = hop.get("mode") == "log-only"
        out.append(
            f"<hr><h4><a name='{_anchor(hop['plugin'])}'></a>{_e(hop['plugin'])} "
            f"<small>({_e(hop.get('mode'))})</small></h4>"
        )
        if not hop.get("ran"):
            out.append(f"<p>skipped: {_e(hop.get('skipped_reason') or '')}</p>")
            if hop.get("failure"):
                f = hop["failure"]
                out.append(
                    f"<p style='color:{_RED}'><b>failure</b> {_e(f.get('kind'))}: "
                    f"{_e(f.get('message'))}</p>"
                )
            continue
        note = ""
        if log_only:
            note = " — log-only: what it <i>would</i> have done; nothing was applied"
            out.append(
                f"<p style='color:{_AMBER}'>Log-only: the changes below are what this plugin "
                "would have made; the request and response went on unmodified.</p>"
            )
        if hop.get("would"):
            out.append(
                f"<p style='color:{_AMBER}'><b>would have:</b> "
                + _e(", ".join(map(str, hop["would"])))
                + "</p>"
            )
        if hop.get("failure"):
            f = hop["failure"]
            bt = "".join(f"<br>&nbsp;&nbsp;{_e(b)}" for b in f.get("backtrace") or [])
            out.append(
                f"<p style='color:{_RED}'><b>failure</b> {_e(f.get('kind'))}: "
                f"{_e(f.get('message'))}{bt}</p>"
            )
        if hop.get("local_reply"):
            lr = hop["local_reply"]
            verb = "would have replied" if log_only else "local reply"
            hdrs = "".join(f"<br>&nbsp;&nbsp;{_e(k)}: {_e(v)}" for k, v in lr.get("headers") or [])
            out.append(
                f"<p style='color:{_AMBER}'><b>{verb}</b> {_e(lr.get('status'))}"
                + (f" ({_e(lr['details'])})" if lr.get("details") else "")
                + hdrs
                + (f"<br>body: {_e(str(lr.get('body'))[:500])}" if lr.get("body") else "")
                + "</p>"
            )
        if hop.get("paused_ms"):
            out.append(f"<p>held the stream paused for {_e(hop['paused_ms'])} ms</p>")
        callouts = hop.get("callouts") or []
        if callouts:
            out.append("<p><b>Callouts</b></p>")
            out.append(
                _table(
                    ["cluster", "status", "ms", "failure"],
                    [
                        [
                            _e(c.get("cluster")),
                            _e(c.get("status") or "—"),
                            _e(c.get("elapsed_ms")),
                            f"<span style='color:{_RED}'>{_e(c['failure'])}</span>"
                            if c.get("failure")
                            else "",
                        ]
                        for c in callouts
                    ],
                )
            )
        out.append(
            _diff_html(
                "request headers",
                hop.get("request_headers_before"),
                hop.get("request_headers_after"),
                note,
            )
        )
        out.append(
            _body_html(
                "request body",
                hop.get("request_body_before"),
                hop.get("request_body_after"),
                note,
                (hop.get("request_body_before_size"), hop.get("request_body_after_size")),
            )
        )
        out.append(
            _diff_html(
                "response headers",
                hop.get("response_headers_before"),
                hop.get("response_headers_after"),
                note,
            )
        )
        out.append(
            _body_html(
                "response body",
                hop.get("response_body_before"),
                hop.get("response_body_after"),
                note,
                (hop.get("response_body_before_size"), hop.get("response_body_after_size")),
            )
        )
        cbs = hop.get("callbacks") or []
        if cbs:
            total = sum(float(c.get("us") or 0) for c in cbs)
            out.append(f"<p><b>Callbacks</b> ({total:.1f} µs in all)</p>")
            out.append(
                _table(
                    ["callback", "result", "µs"],
                    [
                        [
                            _e(str(c["name"]).removeprefix("proxy_")),
                            _e("—" if c.get("result") is None else c.get("result")),
                            _e(c["us"]),
                        ]
                        for c in cbs
                    ],
                )
            )
    return "\n".join(out)


def replay_request(rec: Mapping[str, Any]) -> dict[str, Any] | None:
    """(method, path, headers) to send the recorded request again: the headers as the
    client sent them (the first hop's "before" without what the proxy added), without
    pseudo-headers, host, hop-by-hop fields and the request id. None when the record
    has no request headers."""
    hops = rec.get("hops") or []
    before = next(
        (h.get("request_headers_before") for h in hops if h.get("request_headers_before")), None
    )
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
    body = next((h.get("request_body_before") for h in hops if h.get("request_body_before")), "")
    return {
        "method": rec.get("method") or "GET",
        "path": rec.get("path") or "/",
        "headers": headers,
        "body": body or "",
    }


class InspectorPanel(QWidget):
    """Recent requests, newest first; selecting one asks for its hops."""

    request_selected = Signal(int)  # the record id: the window asks the service for it
    capture_toggled = Signal(bool)  # False: the list (and the engine's record ring) pause
    replay_requested = Signal(dict)  # method, path, headers, body of the shown request

    COLUMNS = ("#", "Time", "Method", "Path", "Status", "ms", "Plugins", "Notes")

    def __init__(self, capacity: int = 200, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("InspectorPanel")
        self.capacity = capacity
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        bar = QHBoxLayout()
        self.pause_button = QPushButton("Pause")
        self.pause_button.setCheckable(True)
        self.pause_button.setToolTip(
            "Stop taking new requests, so the ones listed stay available to inspect"
        )
        self.replay_button = QPushButton("Send again from the composer")
        self.replay_button.setEnabled(False)
        self.count_label = QLabel("")
        bar.addWidget(self.pause_button)
        bar.addWidget(self.count_label, 1)
        bar.addWidget(self.replay_button)
        lay.addLayout(bar)
        split = QSplitter(Qt.Orientation.Vertical)
        self.request_list = QTreeWidget()
        self.request_list.setObjectName("request_list")
        self.request_list.setRootIsDecorated(False)
        self.request_list.setUniformRowHeights(True)
        self.request_list.setHeaderLabels(list(self.COLUMNS))
        self.request_list.header().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for col, width in enumerate((50, 90, 60, 200, 50, 60, 200)):
            self.request_list.header().resizeSection(col, width)
        self.detail_view = QTextBrowser()
        self.detail_view.setObjectName("request_detail")
        self.detail_view.setOpenLinks(False)
        split.addWidget(self.request_list)
        split.addWidget(self.detail_view)
        split.setSizes([220, 480])
        lay.addWidget(split)
        self.request_list.itemSelectionChanged.connect(self._on_request_list_selection_changed)
        self.detail_view.anchorClicked.connect(self._on_detail_view_anchor_clicked)
        self.pause_button.toggled.connect(self._on_pause_button_toggled)
        self.replay_button.clicked.connect(self._on_replay_button_clicked)
        self.shown_id = 0
        self.paused = False
        self._replay: dict[str, Any] | None = None

    def append_requests(self, summaries: Iterable[Mapping[str, Any]]) -> None:
        batch = list(summaries)[-self.capacity :]
        if not batch or self.paused:
            return
        lst = self.request_list
        lst.setUpdatesEnabled(False)
        try:
            items = []
            for s in batch:
                t = float(s.get("started") or 0)
                notes = []
                if s.get("local_reply"):
                    notes.append(f"local reply by {s['local_reply']}")
                if s.get("would"):
                    notes.append(f"{s['would']} log-only intent(s)")
                if s.get("failed"):
                    notes.append(f"{s['failed']} failed")
                item = QTreeWidgetItem(
                    [
                        str(s["id"]),
                        time.strftime("%H:%M:%S", time.localtime(t)),
                        str(s.get("method", "")),
                        str(s.get("path", "")),
                        str(s.get("status", "")),
                        f"{float(s.get('duration_ms') or 0):.2f}",
                        ", ".join(s.get("plugins") or []),
                        "; ".join(notes),
                    ]
                )
                item.setData(0, Qt.ItemDataRole.UserRole, int(s["id"]))
                item.setData(1, Qt.ItemDataRole.UserRole, str(s.get("request_id") or ""))
                colour = _STATUS_COLOURS.get(int(s.get("status") or 0) // 100)
                if colour:
                    item.setForeground(4, QColor(colour))
                items.append(item)
            items.reverse()  # newest first
            lst.insertTopLevelItems(0, items)
            while lst.topLevelItemCount() > self.capacity:
                lst.takeTopLevelItem(lst.topLevelItemCount() - 1)
        finally:
            lst.setUpdatesEnabled(True)
        self.count_label.setText(f"{lst.topLevelItemCount()} most recent requests")

    def request_ids(self) -> list[int]:
        lst = self.request_list
        return [
            int(lst.topLevelItem(i).data(0, Qt.ItemDataRole.UserRole))
            for i in range(lst.topLevelItemCount())
        ]

    def rows(self) -> list[list[str]]:
        lst = self.request_list
        return [
            [lst.topLevelItem(i).text(c) for c in range(len(self.COLUMNS))]
            for i in range(lst.topLevelItemCount())
        ]

    def select_request(self, record_id: int) -> None:
        lst = self.request_list
        for i in range(lst.topLevelItemCount()):
            item = lst.topLevelItem(i)
            if item.data(0, Qt.ItemDataRole.UserRole) == record_id:
                lst.setCurrentItem(item)
                return

    def request_id_list(self) -> list[str]:
        """The listed requests' request ids (x-request-id), newest first."""
        lst = self.request_list
        return [
            str(lst.topLevelItem(i).data(1, Qt.ItemDataRole.UserRole))
            for i in range(lst.topLevelItemCount())
        ]

    def select_request_id(self, request_id: str) -> bool:
        """Select the listed request with this request id (x-request-id); False if it is
        not listed (any more)."""
        lst = self.request_list
        for i in range(lst.topLevelItemCount()):
            item = lst.topLevelItem(i)
            if item.data(1, Qt.ItemDataRole.UserRole) == request_id:
                lst.setCurrentItem(item)
                return True
        return False

    def show_details(self, rec: Mapping[str, Any]) -> None:
        self.shown_id = int(rec.get("id") or 0)
        self.detail_view.setHtml(render_request_html(rec))
        self._replay = None if rec.get("error") else replay_request(rec)
        self.replay_button.setEnabled(self._replay is not None)

    def show_hop(self, plugin: str) -> None:
        """Scroll the details to one plugin's hop (what clicking its name does)."""
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
        if items:
            rid = int(items[0].data(0, Qt.ItemDataRole.UserRole))
            self.detail_view.setHtml(f"<p>Loading request #{rid}…</p>")
            self.replay_button.setEnabled(False)
            self.request_selected.emit(rid)
