"""The request composer: one request through the proxy and its response, and bounded
demo load (N req/s for T seconds) with a progress bar. Emits what the user asked for;
the main window hands it to the engine service."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from gui.traffic import MAX_LOAD_RPS, MAX_LOAD_SECONDS

__all__ = ["ComposerPanel", "parse_headers"]

_TOKEN = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def parse_headers(text: str) -> list[tuple[str, str]]:
    """``name: value`` per line; raises ValueError naming the bad line."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not name or not set(name) <= _TOKEN:
            raise ValueError(f"header line {n}: expected 'name: value', got {line!r}")
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"header line {n}: the value contains a control character")
        out.append((name, value.strip()))
    return out


class ComposerPanel(QWidget):
    send_requested = Signal(str, str, list, bytes)  # method, path, headers, body
    load_requested = Signal(float, float)  # rps, seconds
    load_stop_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("ComposerPanel")
        mono = QFont("monospace")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        req = QGroupBox("Request")
        form = QFormLayout(req)
        row = QHBoxLayout()
        self.method_combo = QComboBox()
        self.method_combo.addItems(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
        self.path_edit = QLineEdit("/hello")
        self.path_edit.setPlaceholderText("/path?query")
        self.send_button = QPushButton("Send")
        self.send_button.setDefault(True)
        row.addWidget(self.method_combo)
        row.addWidget(self.path_edit, 1)
        row.addWidget(self.send_button)
        form.addRow(row)
        self.headers_edit = QPlainTextEdit()
        self.headers_edit.setPlaceholderText("authorization: Bearer demo-token")
        self.headers_edit.setFont(mono)
        self.headers_edit.setMaximumHeight(80)
        form.addRow("Headers", self.headers_edit)
        self.body_edit = QPlainTextEdit()
        self.body_edit.setFont(mono)
        self.body_edit.setMaximumHeight(80)
        form.addRow("Body", self.body_edit)
        self.error_label = QLabel("")
        self.error_label.setStyleSheet("color:#f85149")
        self.error_label.setWordWrap(True)
        form.addRow(self.error_label)
        lay.addWidget(req)
        resp = QGroupBox("Response")
        rl = QVBoxLayout(resp)
        self.status_label = QLabel("—")
        f = self.status_label.font()
        f.setBold(True)
        self.status_label.setFont(f)
        self.response_view = QPlainTextEdit()
        self.response_view.setReadOnly(True)
        self.response_view.setFont(mono)
        rl.addWidget(self.status_label)
        rl.addWidget(self.response_view)
        lay.addWidget(resp, 1)
        load = QGroupBox("Load (bounded)")
        ll = QHBoxLayout(load)
        self.rps_spin = QSpinBox()
        self.rps_spin.setRange(1, MAX_LOAD_RPS)
        self.rps_spin.setValue(200)
        self.rps_spin.setSuffix(" req/s")
        self.seconds_spin = QDoubleSpinBox()
        self.seconds_spin.setRange(0.5, MAX_LOAD_SECONDS)
        self.seconds_spin.setValue(10)
        self.seconds_spin.setSuffix(" s")
        self.load_button = QPushButton("Start load")
        self.load_stop_button = QPushButton("Stop")
        self.load_stop_button.setEnabled(False)
        self.load_progress = QProgressBar()
        self.load_progress.setRange(0, 1)
        self.load_progress.setValue(0)
        self.load_result_label = QLabel("")
        self.load_result_label.setWordWrap(True)  # a long result must not widen the window
        ll.addWidget(self.rps_spin)
        ll.addWidget(self.seconds_spin)
        ll.addWidget(self.load_button)
        ll.addWidget(self.load_stop_button)
        ll.addWidget(self.load_progress, 1)
        ll.addWidget(self.load_result_label)
        lay.addWidget(load)
        self.send_button.clicked.connect(self._on_send_button_clicked)
        self.path_edit.returnPressed.connect(self._on_send_button_clicked)
        self.load_button.clicked.connect(self._on_load_button_clicked)
        self.load_stop_button.clicked.connect(self.load_stop_requested.emit)

    def _on_send_button_clicked(self) -> None:
        path = self.path_edit.text().strip()
        if not path.startswith("/") or any(c.isspace() for c in path):
            self.error_label.setText("The path must start with '/' and contain no spaces.")
            return
        try:
            headers = parse_headers(self.headers_edit.toPlainText())
        except ValueError as e:
            self.error_label.setText(str(e))
            return
        self.error_label.setText("")
        self.status_label.setText("Sending…")
        body = self.body_edit.toPlainText().encode("utf-8")
        self.send_requested.emit(self.method_combo.currentText(), path, headers, body)

    def fill(self, d: Mapping[str, Any]) -> None:
        """Put a request in the form (from the inspector's "Send again")."""
        self.method_combo.setCurrentText(str(d.get("method") or "GET"))
        self.path_edit.setText(str(d.get("path") or "/"))
        self.headers_edit.setPlainText("\n".join(f"{k}: {v}" for k, v in d.get("headers") or []))
        self.body_edit.setPlainText(str(d.get("body") or ""))
        self.error_label.setText("")

    def _on_load_button_clicked(self) -> None:
        self.load_requested.emit(float(self.rps_spin.value()), float(self.seconds_spin.value()))

    def show_response(self, d: Mapping[str, Any]) -> None:
        if d.get("error"):
            self.status_label.setText(f"No response: {d['error']}")
            self.response_view.setPlainText("")
            return
        self.status_label.setText(
            f"{d.get('status')} · {d.get('elapsed_ms')} ms · {d.get('body_size', 0)} bytes"
        )
        head = "\n".join(f"{k}: {v}" for k, v in d.get("headers") or [])
        self.response_view.setPlainText(f"{head}\n\n{d.get('body', '')}")

    def show_progress(self, sent: int, planned: int) -> None:
        self.load_progress.setRange(0, max(1, planned))
        self.load_progress.setValue(min(sent, planned))
        self.load_button.setEnabled(sent < planned)
        self.load_stop_button.setEnabled(sent < planned)

    def show_load_started(self) -> None:
        self.load_stop_button.setEnabled(True)
        self.load_result_label.setText("running…")

    def show_load_result(self, d: Mapping[str, Any]) -> None:
        self.load_button.setEnabled(True)
        self.load_stop_button.setEnabled(False)
        statuses = ", ".join(f"{k}: {v}" for k, v in (d.get("statuses") or {}).items())
        text = f"{d.get('sent')} sent in {d.get('elapsed_s')} s ({statuses})"
        if d.get("errors"):
            text += f"; {d['errors']} errors"
        if d.get("cancelled"):
            text += "; stopped"
        self.load_result_label.setText(text)
