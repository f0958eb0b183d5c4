"""The debugging lab in the app: A/B of two plugin versions on a recorded session,
crash reproduction, and the Record toggle.

Pick a session (a HAR: recorded with Record or ``serve --record``, a crash session, or
one saved from a browser) and two versions (two modules, or one module with two
configurations). Compare replays the session through both (the lab's replay, on a
worker thread with its own wasmtime engine: the GUI thread never runs wasm), then lists
the requests with a "differs" column; selecting one shows the inspector's diff view
between A and B, with where each callback's time went (guest code and host calls by
name). Reproduce replays the session through A alone and shows the failure with its
backtrace. Record asks the engine to record live traffic (the path comes back
from the engine, in the app's data directory).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QTextBrowser,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from gui.engine_service import lab_api
from gui.inspector_panel import _body_html, _diff_html, _e

__all__ = ["LabPanel", "ab_detail_html"]


def _timing_html(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    """Where the time went, per callback: guest µs and host calls (name ×count µs)."""
    rows: list[str] = []
    for label, r in (("A", a), ("B", b)):
        for p in r.get("profile") or []:
            calls = ", ".join(
                f"{c['name']} ×{c['count']} {c['us']}" for c in p.get("host_calls") or []
            )
            rows.append(
                f"<tr><td>{label}</td><td>{_e(p['callback'])}</td>"
                f"<td align='right'>{_e(p['total_us'])}</td>"
                f"<td align='right'>{_e(p['guest_us'])}</td><td>{_e(calls)}</td></tr>"
            )
    if not rows:
        return ""
    return (
        "<p><b>where the time goes</b> (µs; host calls: name ×count µs)</p>"
        "<table cellspacing='6'><tr><th>#</th><th>callback</th><th>total</th>"
        "<th>guest</th><th>host calls</th></tr>" + "".join(rows) + "</table>"
    )


def ab_detail_html(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    """The inspector's diff view between A's and B's outcome of one request."""
    if "skipped" in a or "skipped" in b:
        return f"<p>A: {_e(a.get('skipped', 'ran'))}<br>B: {_e(b.get('skipped', 'ran'))}</p>"
    parts = [
        f"<h3>{_e(a.get('method', ''))} {_e(a.get('path', ''))}</h3>",
        f"<p>status A {_e(a['response']['status'])} → B {_e(b['response']['status'])}; "
        f"forwarded A {_e(a['request']['forwarded'])} → B {_e(b['request']['forwarded'])}</p>",
        _diff_html("request headers (A → B)", a["request"]["headers"], b["request"]["headers"]),
        _body_html("request body (A → B)", a["request"]["body"], b["request"]["body"]),
        _diff_html("response headers (A → B)", a["response"]["headers"], b["response"]["headers"]),
        _body_html("response body (A → B)", a["response"]["body"], b["response"]["body"]),
    ]
    for label, r in (("A", a), ("B", b)):
        lr = r.get("local_response")
        if lr:
            parts.append(f"<p><b>{label} replied locally</b> {_e(lr['status'])}</p>")
        if r.get("failure"):
            f = r["failure"]
            parts.append(
                f"<p><b>{label} failed</b> in {_e(f['callback'])}: {_e(f['kind'])}: "
                f"{_e(f['message'])}</p><pre>{_e(chr(10).join(f['backtrace']))}</pre>"
            )
    parts.append(_timing_html(a, b))
    logs_a = "\n".join(f"[{x['level']}] {x['message']}" for x in a.get("logs") or [])
    logs_b = "\n".join(f"[{x['level']}] {x['message']}" for x in b.get("logs") or [])
    parts.append(_body_html("logs (A → B)", logs_a, logs_b))
    return "\n".join(p for p in parts if p)


class LabPanel(QWidget):
    """Session, A and B pickers; Compare, Reproduce, Record; the request table and diff."""

    record_toggled = Signal(bool)  # the window asks the engine to record (or stop)
    _finished = Signal(str, object)  # (what, result or error text), from the worker

    COLUMNS = ("#", "Method", "Path", "A", "B", "Differs")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.result: dict[str, Any] | None = None
        self.mocks: list[dict[str, Any]] = []  # the Mocks tab's applied rules, for callouts
        self.reproduced: dict[str, Any] | None = None
        self._worker: threading.Thread | None = None

        self.session_edit = QLineEdit()
        self.session_edit.setPlaceholderText("a HAR: recorded, a crash session, or a browser's")
        self.a_edit = QLineEdit()
        self.a_edit.setPlaceholderText("A: a .wasm module")
        self.b_edit = QLineEdit()
        self.b_edit.setPlaceholderText("B: another .wasm (empty: A with B's configuration)")
        self.config_a_edit = QLineEdit()
        self.config_a_edit.setPlaceholderText("A's configuration (JSON)")
        self.config_b_edit = QLineEdit()
        self.config_b_edit.setPlaceholderText("B's configuration (JSON)")
        self.root_id_edit = QLineEdit()
        self.root_id_edit.setPlaceholderText("root id (default: A's file name)")

        form = QFormLayout()
        for label, edit, pick in (
            ("Session", self.session_edit, "HAR (*.har *.json)"),
            ("A", self.a_edit, "WebAssembly (*.wasm)"),
            ("B", self.b_edit, "WebAssembly (*.wasm)"),
        ):
            row = QHBoxLayout()
            row.addWidget(edit, 1)
            browse = QPushButton("Browse…")
            browse.clicked.connect(lambda _=False, e=edit, f=pick: self._browse(e, f))
            row.addWidget(browse)
            form.addRow(label, row)
        form.addRow("A config", self.config_a_edit)
        form.addRow("B config", self.config_b_edit)
        form.addRow("Root id", self.root_id_edit)

        self.compare_button = QPushButton("Compare A and B")
        self.compare_button.clicked.connect(self._on_compare_button_clicked)
        self.reproduce_button = QPushButton("Reproduce with A")
        self.reproduce_button.setToolTip("replay the session through A and show its failure")
        self.reproduce_button.clicked.connect(self._on_reproduce_button_clicked)
        self.record_button = QPushButton("Record")
        self.record_button.setCheckable(True)
        self.record_button.setToolTip("record live traffic as a HAR session in the data folder")
        self.record_button.toggled.connect(self.record_toggled.emit)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.compare_button)
        buttons.addWidget(self.reproduce_button)
        buttons.addStretch(1)
        buttons.addWidget(self.record_button)

        self.table = QTreeWidget()
        self.table.setHeaderLabels(list(self.COLUMNS))
        self.table.setRootIsDecorated(False)
        self.table.header().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._on_table_selection_changed)
        self.detail_view = QTextBrowser()
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(self.detail_view)
        split.setSizes([300, 400])

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status_label)
        layout.addWidget(split, 1)
        self._finished.connect(self._on_finished)

    # -- actions --

    def _browse(self, edit: QLineEdit, pattern: str) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a file", edit.text(), pattern)
        if path:
            edit.setText(path)

    @property
    def busy(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def _run(self, what: str, fn: Any, *args: Any) -> None:
        if self.busy:
            return

        def work() -> None:
            try:
                res: object = fn(*args)
            except ValueError as e:
                res = str(e)
            except Exception as e:  # a lab bug must not take the app down
                res = f"{type(e).__name__}: {e}"
            self._finished.emit(what, res)

        self.compare_button.setEnabled(False)
        self.reproduce_button.setEnabled(False)
        self.status_label.setText("replaying…")
        self._worker = threading.Thread(target=work, name=f"lab-{what}", daemon=True)
        self._worker.start()

    def compare(self) -> None:
        self._run(
            "compare",
            lab_api.run_ab,
            self.session_edit.text().strip(),
            self.a_edit.text().strip(),
            self.b_edit.text().strip(),
            self.config_a_edit.text(),
            self.config_b_edit.text() or self.config_a_edit.text(),
            self.root_id_edit.text().strip(),
            self.mocks,
        )

    def reproduce(self) -> None:
        self._run(
            "reproduce",
            lab_api.run_reproduce,
            self.session_edit.text().strip(),
            self.a_edit.text().strip(),
            self.config_a_edit.text(),
            self.root_id_edit.text().strip(),
            self.mocks,
        )

    def _on_compare_button_clicked(self) -> None:
        self.compare()

    def _on_reproduce_button_clicked(self) -> None:
        self.reproduce()

    def set_recording(self, on: bool, path: str = "") -> None:
        """The engine's answer: recording on (into ``path``) or off."""
        self.record_button.blockSignals(True)
        self.record_button.setChecked(on)
        self.record_button.blockSignals(False)
        if path:
            self.status_label.setText(f"recording into {path}" if on else f"recorded into {path}")
            if not on:
                self.session_edit.setText(path)

    # -- results --

    def _on_finished(self, what: str, res: object) -> None:
        # done, even if the worker thread has not quite returned yet: the next run may start
        self._worker = None
        self.compare_button.setEnabled(True)
        self.reproduce_button.setEnabled(True)
        if isinstance(res, str):
            self.status_label.setText(f"<span style='color:#f85149'>{_e(res)}</span>")
            return
        assert isinstance(res, dict)
        if what == "compare":
            self.show_result(res)
        else:
            self.show_reproduced(res)

    def show_result(self, res: dict[str, Any]) -> None:
        self.result = res
        self.table.clear()
        a_reqs, b_reqs = res["a"]["requests"], res["b"]["requests"]
        for i, row in enumerate(res["diff"]["requests"]):
            a = a_reqs[i] if i < len(a_reqs) else {}
            b = b_reqs[i] if i < len(b_reqs) else {}
            item = QTreeWidgetItem(
                [
                    str(row["index"]),
                    str(row["method"]),
                    str(row["path"]),
                    str((a.get("response") or {}).get("status", "–")),
                    str((b.get("response") or {}).get("status", "–")),
                    ", ".join(row["diff"]) if row["differs"] else "",
                ]
            )
            item.setData(0, Qt.ItemDataRole.UserRole, i)
            self.table.addTopLevelItem(item)
        s = res["diff"]["summary"]
        self.status_label.setText(
            f"{s['requests']} requests: {s['identical']} identical, {s['different']} different"
        )
        if self.table.topLevelItemCount():
            first = next(
                (
                    self.table.topLevelItem(i)
                    for i, r in enumerate(res["diff"]["requests"])
                    if r["differs"]
                ),
                self.table.topLevelItem(0),
            )
            self.table.setCurrentItem(first)

    def show_reproduced(self, out: dict[str, Any]) -> None:
        self.reproduced = out
        f = out.get("failure")
        if f is None:
            self.status_label.setText(
                f"no failure: {len(out['requests'])} requests replayed without a trap"
            )
            self.detail_view.setHtml("")
            return
        self.status_label.setText(
            f"reproduced on request #{f.get('request_index', '?')}: {f['kind']} in {f['callback']}"
        )
        self.detail_view.setHtml(
            f"<p><b>{_e(f['kind'])}</b> in {_e(f['callback'])}: {_e(f['message'])}</p>"
            f"<pre>{_e(chr(10).join(f['backtrace']))}</pre>"
        )

    def differs_column(self) -> list[str]:
        return [self.table.topLevelItem(i).text(5) for i in range(self.table.topLevelItemCount())]

    def _on_table_selection_changed(self) -> None:
        items = self.table.selectedItems()
        if not items or self.result is None:
            return
        i = int(items[0].data(0, Qt.ItemDataRole.UserRole))
        a_reqs, b_reqs = self.result["a"]["requests"], self.result["b"]["requests"]
        if i < len(a_reqs) and i < len(b_reqs):
            self.detail_view.setHtml(ab_detail_html(a_reqs[i], b_reqs[i]))
