"""The intercept tab: arm a rule (hold the next request at a chosen plugin hop, before
its request-headers, request-body or response-headers callback), then edit the held
request's headers (and body) and resume it, or resume it unchanged. The engine side is
``host.proxy.intercept``; a held request resumes unchanged by itself after its timeout.
Emits what the user asked for; the main window hands it to the engine service."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from host.proxy.request_views import HeldView

__all__ = ["InterceptPanel", "format_headers", "parse_header_lines"]

STAGE_LABELS = (
    ("request_headers", "before its request headers"),
    ("request_body", "before its request body (last chunk)"),
    ("response_headers", "before its response headers"),
)


def format_headers(pairs: Sequence[Sequence[str]]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in pairs)


def parse_header_lines(text: str) -> list[list[str]]:
    """``name: value`` per line, pseudo-headers too (``:path: /x``); raises ValueError
    naming the bad line."""
    out: list[list[str]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        pseudo = line.startswith(":")
        name, sep, value = (line[1:] if pseudo else line).partition(":")
        name = name.strip()
        if not sep or not name or any(c.isspace() for c in name):
            raise ValueError(f"line {n}: expected 'name: value', got {line!r}")
        out.append([(":" if pseudo else "") + name.lower(), value.strip()])
    return out


class InterceptPanel(QWidget):
    """Arm / disarm, the held requests, and the editor for the selected one."""

    arm_requested = Signal(str, str, str)  # plugin, stage, path substring
    disarm_requested = Signal()
    resume_requested = Signal(int, object, object)  # id, headers or None, body or None

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("InterceptPanel")
        mono = QFont("monospace")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        rule = QGroupBox("Hold the next request")
        form = QFormLayout(rule)
        self.plugin_combo = QComboBox()
        self.stage_combo = QComboBox()
        for key, label in STAGE_LABELS:
            self.stage_combo.addItem(label, key)
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("any path (or a substring: /api)")
        row = QHBoxLayout()
        self.arm_button = QPushButton("Arm")
        self.disarm_button = QPushButton("Disarm and release all")
        self.rule_label = QLabel("not armed")
        row.addWidget(self.arm_button)
        row.addWidget(self.disarm_button)
        row.addWidget(self.rule_label, 1)
        form.addRow("at plugin", self.plugin_combo)
        form.addRow("stage", self.stage_combo)
        form.addRow("path contains", self.path_edit)
        form.addRow(row)
        lay.addWidget(rule)
        held = QGroupBox("Held requests")
        hl = QVBoxLayout(held)
        self.held_list = QListWidget()
        self.held_list.setMaximumHeight(110)
        hl.addWidget(self.held_list)
        self.headers_edit = QPlainTextEdit()
        self.headers_edit.setFont(mono)
        self.headers_edit.setPlaceholderText("the held request's headers, one 'name: value' a line")
        self.body_edit = QPlainTextEdit()
        self.body_edit.setFont(mono)
        self.body_edit.setMaximumHeight(100)
        self.body_edit.setPlaceholderText("body (editable at the request-body stage)")
        self.error_label = QLabel("")
        self.error_label.setStyleSheet("color:#f85149")
        self.error_label.setWordWrap(True)
        buttons = QHBoxLayout()
        self.resume_button = QPushButton("Resume with edits")
        self.unchanged_button = QPushButton("Resume unchanged")
        buttons.addStretch(1)
        buttons.addWidget(self.unchanged_button)
        buttons.addWidget(self.resume_button)
        hl.addWidget(QLabel("Headers"))
        hl.addWidget(self.headers_edit, 1)
        hl.addWidget(QLabel("Body"))
        hl.addWidget(self.body_edit)
        hl.addWidget(self.error_label)
        hl.addLayout(buttons)
        lay.addWidget(held, 1)
        self.countdown = QTimer(self)
        self.countdown.setInterval(1000)
        self.countdown.timeout.connect(self._refresh_labels)
        self.arm_button.clicked.connect(self._on_arm_button_clicked)
        self.disarm_button.clicked.connect(self._on_disarm_button_clicked)
        self.held_list.currentItemChanged.connect(self._on_held_list_current_item_changed)
        self.resume_button.clicked.connect(self._on_resume_button_clicked)
        self.unchanged_button.clicked.connect(self._on_unchanged_button_clicked)
        self.held: dict[int, HeldView] = {}
        self._shown = 0
        self._set_editor(None)

    def set_plugins(self, names: Sequence[str]) -> None:
        current = self.plugin_combo.currentText()
        self.plugin_combo.clear()
        self.plugin_combo.addItems(list(names))
        if current in names:
            self.plugin_combo.setCurrentText(current)

    def _on_arm_button_clicked(self) -> None:
        plugin = self.plugin_combo.currentText()
        if not plugin:
            self.rule_label.setText("load a plugin first: requests are held at a plugin's hop")
            return
        stage = str(self.stage_combo.currentData())
        path = self.path_edit.text().strip()
        self.arm_requested.emit(plugin, stage, path)
        where = f" on paths containing {path}" if path else ""
        self.rule_label.setText(
            f"armed: the next request{where} is held at {plugin}, {self.stage_combo.currentText()}"
        )

    def _on_disarm_button_clicked(self) -> None:
        self.disarm_requested.emit()
        self.rule_label.setText("not armed")

    def show_held(self, held: Sequence[HeldView]) -> None:
        """The engine's held requests (on every catch and release)."""
        self.held = {h.id: h for h in held}
        keep = self._shown if self._shown in self.held else 0
        self.held_list.blockSignals(True)
        self.held_list.clear()
        for h in held:
            item = QListWidgetItem(self._label(h))
            item.setData(256, h.id)
            self.held_list.addItem(item)
            if h.id == keep:
                self.held_list.setCurrentItem(item)
        self.held_list.blockSignals(False)
        if keep == 0 and self.held_list.count():
            self.held_list.setCurrentRow(0)  # the first one caught: its editor
        elif keep == 0:
            self._set_editor(None)
        if self.held:
            self.rule_label.setText(f"{len(self.held)} request(s) held")
            self.countdown.start()
        else:
            self.countdown.stop()

    def _label(self, h: HeldView) -> str:
        left = h.timeout_s - (time.time() - h.held_at)
        stage = dict(STAGE_LABELS).get(h.stage, h.stage)
        return (
            f"#{h.id} {h.method} {h.path} at {h.plugin}, {stage} "
            f"(resumes unchanged in {max(0, left):.0f} s)"
        )

    def _refresh_labels(self) -> None:
        for i in range(self.held_list.count()):
            item = self.held_list.item(i)
            h = self.held.get(int(item.data(256)))
            if h is not None:
                item.setText(self._label(h))

    def _on_held_list_current_item_changed(self, item: QListWidgetItem | None, _: Any) -> None:
        self._set_editor(self.held.get(int(item.data(256))) if item is not None else None)

    def _set_editor(self, h: HeldView | None) -> None:
        self._shown = h.id if h is not None else 0
        self.error_label.setText("")
        for w in (self.headers_edit, self.resume_button, self.unchanged_button):
            w.setEnabled(h is not None)
        self.headers_edit.setPlainText(format_headers(h.headers) if h is not None else "")
        body = h.body if h is not None else None
        # at the request body the route is chosen (the head may be sent): read only
        self.headers_edit.setReadOnly(body is not None)
        self.body_edit.setEnabled(body is not None)
        self.body_edit.setPlainText(body if body is not None else "")

    def _on_resume_button_clicked(self) -> None:
        if not self._shown:
            return
        body = self.body_edit.toPlainText() if self.body_edit.isEnabled() else None
        headers = None
        if body is None:
            try:
                headers = parse_header_lines(self.headers_edit.toPlainText())
            except ValueError as e:
                self.error_label.setText(str(e))
                return
        self.resume_requested.emit(self._shown, headers, body)

    def _on_unchanged_button_clicked(self) -> None:
        if self._shown:
            self.resume_requested.emit(self._shown, None, None)
