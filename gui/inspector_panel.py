"""The request inspector: recent requests (summaries from engine snapshots) and, for the
selected one, every plugin hop (fetched on demand): header diffs before/after, body
changes, local replies, log-only intents, callouts and time per callback."""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QHeaderView,
    QSplitter,
    QTextBrowser,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

__all__ = ["InspectorPanel", "header_diff"]

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


def _diff_html(title: str, before: Any, after: Any) -> str:
    if before is None and after is None:
        return ""
    rows = header_diff(before, after)
    changed = any(s != "=" for s, _, _ in rows)
    parts = [f"<p><b>{html.escape(title)}</b>{'' if changed else ' (unchanged)'}</p>"]
    parts.append("<pre style='margin:0'>")
    for sign, name, value in rows:
        colour = {"+": "#3fb950", "-": "#f85149"}.get(sign, "#8b949e")
        text = html.escape(f"{sign if sign != '=' else ' '} {name}: {value}")
        parts.append(f"<span style='color:{colour}'>{text}</span>")
    parts.append("</pre>")
    return "\n".join(parts)


def _body_html(title: str, before: str | None, after: str | None) -> str:
    if (before is None and after is None) or before == after:
        return ""
    return (
        f"<p><b>{html.escape(title)}</b> changed</p><pre style='margin:0'>"
        f"<span style='color:#f85149'>- {html.escape((before or '')[:2000])}</span>\n"
        f"<span style='color:#3fb950'>+ {html.escape((after or '')[:2000])}</span></pre>"
    )


def render_request_html(rec: Mapping[str, Any]) -> str:
    if rec.get("error"):
        return f"<p>Request #{rec.get('id')}: {html.escape(str(rec['error']))}</p>"
    out = [
        f"<h3>{html.escape(str(rec.get('method')))} {html.escape(str(rec.get('path')))} → "
        f"{rec.get('status')}</h3>",
        f"<p>request id {html.escape(str(rec.get('request_id')))} · "
        f"{rec.get('duration_ms')} ms · {html.escape(str(rec.get('outcome') or 'ok'))}"
        + (
            f" · {html.escape(str(rec['response_code_details']))}"
            if rec.get("response_code_details")
            else ""
        )
        + "</p>",
    ]
    for hop in rec.get("hops") or []:
        head = f"<hr><h4>{html.escape(str(hop['plugin']))} <small>({hop.get('mode')})</small></h4>"
        out.append(head)
        if not hop.get("ran"):
            out.append(f"<p>skipped: {html.escape(str(hop.get('skipped_reason') or ''))}</p>")
            continue
        cbs = hop.get("callbacks") or []
        if cbs:
            total = sum(float(c.get("us") or 0) for c in cbs)
            items = ", ".join(f"{c['name'].removeprefix('proxy_')} {c['us']} µs" for c in cbs)
            out.append(f"<p>callbacks ({total:.1f} µs): {html.escape(items)}</p>")
        if hop.get("local_reply"):
            lr = hop["local_reply"]
            out.append(f"<p style='color:#d29922'><b>local reply</b> {html.escape(str(lr))}</p>")
        if hop.get("would"):
            out.append(
                "<p style='color:#d29922'><b>log-only: would have</b> "
                + html.escape(", ".join(map(str, hop["would"])))
                + "</p>"
            )
        if hop.get("failure"):
            out.append(
                f"<p style='color:#f85149'><b>failure</b> {html.escape(str(hop['failure']))}</p>"
            )
        for c in hop.get("callouts") or []:
            out.append(f"<p><b>callout</b> {html.escape(str(c))}</p>")
        out.append(
            _diff_html(
                "request headers",
                hop.get("request_headers_before"),
                hop.get("request_headers_after"),
            )
        )
        out.append(
            _body_html(
                "request body", hop.get("request_body_before"), hop.get("request_body_after")
            )
        )
        out.append(
            _diff_html(
                "response headers",
                hop.get("response_headers_before"),
                hop.get("response_headers_after"),
            )
        )
        out.append(
            _body_html(
                "response body", hop.get("response_body_before"), hop.get("response_body_after")
            )
        )
    return "\n".join(out)


class InspectorPanel(QWidget):
    """Recent requests, newest first; selecting one asks for its hops."""

    request_selected = Signal(int)  # the record id: the window asks the service for it

    COLUMNS = ("#", "Time", "Method", "Path", "Status", "ms", "Plugins", "Notes")

    def __init__(self, capacity: int = 200, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("InspectorPanel")
        self.capacity = capacity
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
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
        split.setSizes([250, 350])
        lay.addWidget(split)
        self.request_list.itemSelectionChanged.connect(self._on_request_list_selection_changed)
        self.shown_id = 0

    def append_requests(self, summaries: Iterable[Mapping[str, Any]]) -> None:
        batch = list(summaries)[-self.capacity :]
        if not batch:
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

    def show_details(self, rec: Mapping[str, Any]) -> None:
        self.shown_id = int(rec.get("id") or 0)
        self.detail_view.setHtml(render_request_html(rec))

    def _on_request_list_selection_changed(self) -> None:
        items = self.request_list.selectedItems()
        if items:
            rid = int(items[0].data(0, Qt.ItemDataRole.UserRole))
            self.detail_view.setHtml(f"<p>Loading request #{rid}…</p>")
            self.request_selected.emit(rid)
