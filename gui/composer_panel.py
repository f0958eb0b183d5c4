"""The request composer: one request through the proxy and its response, in HTTP/1.1,
HTTP/2 (prior knowledge) or gRPC (a unary call: a method name, a JSON, text or raw
message, metadata and a deadline; ``gui/composer_send.py``), and bounded demo load (N
req/s for T seconds) with a progress bar. Emits what the user asked for; the main window
hands it to the engine service. It keeps a history of what was sent (copied as curl,
saved or loaded as HAR: ``gui/composer_history.py``)."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtGui import QFont, QGuiApplication
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
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

from gui.composer_history import MAX_HISTORY, as_curl, history_from_har, save_history
from gui.composer_send import (
    MAX_DEADLINE_S,
    PAYLOAD_FORMATS,
    PROTOCOLS,
    check_grpc_method,
    encode_payload,
    grpc_status_text,
    parse_metadata,
    result_text,
)
from gui.traffic import MAX_LOAD_RPS, MAX_LOAD_SECONDS, check_load_input, load_status

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


_GRPC_NOTE = (
    "gRPC: a unary call with the message as the bytes given. Wasmdesk has no protobuf "
    "descriptors: JSON is sent as its UTF-8 text (for a server with a JSON codec); give a "
    "protobuf message as hex or base64. Metadata: one 'key: value' a line (-bin: base64)."
)


class ComposerPanel(QWidget):
    send_requested = Signal(str, str, list, bytes)  # method, path, headers, body (HTTP/1.1)
    # HTTP/2: {protocol, method, path, headers, body}; gRPC: {protocol, method (the
    # /package.Service/Method), message (bytes), metadata, deadline_s}
    request_composed = Signal(dict)
    load_requested = Signal(float, float)  # rps, seconds
    load_stop_requested = Signal()
    inspect_requested = Signal(str)  # the shown response's request id (x-request-id)

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
        self.protocol_combo = QComboBox()
        self.protocol_combo.setObjectName("protocol_combo")
        self.protocol_combo.addItems(list(PROTOCOLS))
        self.protocol_combo.setToolTip(
            "HTTP/1.1; HTTP/2 with prior knowledge (h2c, as curl --http2-prior-knowledge), "
            "or by ALPN h2 to a TLS listener; gRPC: a unary call over HTTP/2"
        )
        row.addWidget(self.protocol_combo)
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
        # gRPC only: how the message box is read, the deadline, and what is sent
        self.grpc_box = QWidget()
        gl = QHBoxLayout(self.grpc_box)
        gl.setContentsMargins(0, 0, 0, 0)
        self.payload_combo = QComboBox()
        for key, label in PAYLOAD_FORMATS:
            self.payload_combo.addItem(label, key)
        self.deadline_spin = QDoubleSpinBox()
        self.deadline_spin.setRange(0, MAX_DEADLINE_S * 10)
        self.deadline_spin.setValue(10.0)
        self.deadline_spin.setSuffix(" s deadline")
        self.deadline_spin.setToolTip(f"0 to {MAX_DEADLINE_S:g} seconds (grpc-timeout)")
        gl.addWidget(QLabel("Message as"))
        gl.addWidget(self.payload_combo, 1)
        gl.addWidget(self.deadline_spin)
        form.addRow(self.grpc_box)
        self.grpc_note = QLabel(_GRPC_NOTE)
        self.grpc_note.setWordWrap(True)
        self.grpc_note.setStyleSheet("color:#8b949e")
        form.addRow(self.grpc_note)
        self._form = form
        self.error_label = QLabel("")
        self.error_label.setStyleSheet("color:#f85149")
        self.error_label.setWordWrap(True)
        form.addRow(self.error_label)
        # history: what was sent from here; copy as curl; save or load it as HAR
        self.base_url = "http://127.0.0.1:10000"  # the proxy's address (the window sets it)
        self.ca_file = ""  # the CA a TLS proxy is checked against (curl --cacert)
        self.history: deque[dict[str, Any]] = deque(maxlen=MAX_HISTORY)
        hrow = QHBoxLayout()
        self.history_combo = QComboBox()
        self.history_combo.setToolTip("Requests sent from here (newest first)")
        self.history_combo.setPlaceholderText("History")
        self.curl_button = QPushButton("Copy as curl")
        self.save_har_button = QPushButton("Save HAR…")
        self.load_har_button = QPushButton("Load HAR…")
        hrow.addWidget(self.history_combo, 1)
        hrow.addWidget(self.curl_button)
        hrow.addWidget(self.save_har_button)
        hrow.addWidget(self.load_har_button)
        form.addRow(hrow)
        self.history_combo.activated.connect(self._on_history_combo_activated)
        self.curl_button.clicked.connect(self._on_curl_button_clicked)
        self.save_har_button.clicked.connect(self._on_save_har_button_clicked)
        self.load_har_button.clicked.connect(self._on_load_har_button_clicked)
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
        self.inspect_button = QPushButton("Show in inspector")
        self.inspect_button.setToolTip("Open this request's record: every plugin hop")
        self.inspect_button.setEnabled(False)
        top = QHBoxLayout()
        top.addWidget(self.status_label, 1)
        top.addWidget(self.inspect_button)
        rl.addLayout(top)
        rl.addWidget(self.response_view)
        lay.addWidget(resp, 1)
        load = QGroupBox("Load (bounded)")
        ll = QHBoxLayout(load)
        # The boxes take any number typed (a QSpinBox drops the keystroke that would
        # exceed its maximum: 130 became 13); Start checks the bounds and says so.
        self.rps_spin = QSpinBox()
        self.rps_spin.setRange(0, MAX_LOAD_RPS * 1000)
        self.rps_spin.setValue(200)
        self.rps_spin.setSuffix(" req/s")
        self.rps_spin.setToolTip(f"1 to {MAX_LOAD_RPS} requests per second")
        self.seconds_spin = QDoubleSpinBox()
        self.seconds_spin.setRange(0, MAX_LOAD_SECONDS * 1000)
        self.seconds_spin.setToolTip(f"0.5 to {MAX_LOAD_SECONDS:g} seconds")
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
        self.inspect_button.clicked.connect(self._on_inspect_button_clicked)
        self.protocol_combo.currentTextChanged.connect(self._on_protocol_combo_changed)
        self._request_id = ""
        self._on_protocol_combo_changed(self.protocol)

    @property
    def protocol(self) -> str:
        return self.protocol_combo.currentText()

    def _on_protocol_combo_changed(self, protocol: str) -> None:
        grpc = protocol == "gRPC"
        self.method_combo.setVisible(not grpc)  # a gRPC call is always a POST
        self.grpc_box.setVisible(grpc)
        self.grpc_note.setVisible(grpc)
        for field, (http, g) in (
            (self.headers_edit, ("Headers", "Metadata")),
            (self.body_edit, ("Body", "Message")),
        ):
            label = self._form.labelForField(field)
            if isinstance(label, QLabel):
                label.setText(g if grpc else http)
        self.path_edit.setPlaceholderText("/package.Service/Method" if grpc else "/path?query")
        self.headers_edit.setPlaceholderText(
            "x-user: alice" if grpc else "authorization: Bearer demo-token"
        )
        self.body_edit.setPlaceholderText('{"name": "world"}' if grpc else "")

    def _send_grpc(self) -> None:
        try:
            method = check_grpc_method(self.path_edit.text())
            metadata = parse_metadata(self.headers_edit.toPlainText())
            fmt = str(self.payload_combo.currentData())
            message = encode_payload(self.body_edit.toPlainText(), fmt)
        except ValueError as e:
            self.error_label.setText(str(e))
            return
        deadline = float(self.deadline_spin.value())
        if not 0 < deadline <= MAX_DEADLINE_S:
            self.error_label.setText(
                f"The deadline is more than 0 and at most {MAX_DEADLINE_S:g} s."
            )
            return
        self.error_label.setText("")
        self.status_label.setText("Calling…")
        self._remember(
            {
                "protocol": "gRPC",
                "method": "POST",
                "path": method,
                "headers": [list(h) for h in self._typed_pairs()],
                "body": self.body_edit.toPlainText(),
                "payload_format": fmt,
                "deadline_s": deadline,
            }
        )
        self.request_composed.emit(
            {
                "protocol": "gRPC",
                "method": method,
                "message": message,
                "metadata": metadata,
                "deadline_s": deadline,
            }
        )

    def _typed_pairs(self) -> list[tuple[str, str]]:
        """The header (or metadata) lines as typed, split at the first colon."""
        out = []
        for line in self.headers_edit.toPlainText().splitlines():
            if line.strip():
                k, _, v = line.partition(":")
                out.append((k.strip(), v.strip()))
        return out

    def _on_send_button_clicked(self) -> None:
        if self.protocol == "gRPC":
            self._send_grpc()
            return
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
        entry: dict[str, Any] = {
            "method": self.method_combo.currentText(),
            "path": path,
            "headers": [list(h) for h in headers],
            "body": self.body_edit.toPlainText(),
        }
        if self.protocol != "HTTP/1.1":
            entry["protocol"] = self.protocol
        self._remember(entry)
        if self.protocol == "HTTP/1.1":
            self.send_requested.emit(self.method_combo.currentText(), path, headers, body)
            return
        self.request_composed.emit(
            {
                "protocol": self.protocol,
                "method": self.method_combo.currentText(),
                "path": path,
                "headers": headers,
                "body": body,
            }
        )

    # -- history ---------------------------------------------------------------------------

    def _remember(self, entry: dict[str, Any]) -> None:
        self.history.append(entry)
        self._show_history()

    def _show_history(self) -> None:
        self.history_combo.clear()
        for e in reversed(self.history):
            resp = e.get("response") or {}
            status = resp.get("status")
            proto = str(e.get("protocol") or "HTTP/1.1")
            if proto == "gRPC":
                code = resp.get("grpc_status")
                done = f"  → {grpc_status_text(code)}" if code is not None else ""
                self.history_combo.addItem(f"gRPC {e['path']}{done}")
                continue
            prefix = "" if proto == "HTTP/1.1" else f"{proto} "
            self.history_combo.addItem(
                f"{prefix}{e['method']} {e['path']}" + (f"  → {status}" if status else "")
            )

    def _on_history_combo_activated(self, index: int) -> None:
        if 0 <= index < len(self.history):
            self.fill(self.history[len(self.history) - 1 - index])

    def current_request(self) -> dict[str, Any] | None:
        """The form as a request (None and a message when a header line is bad)."""
        try:
            headers = parse_headers(self.headers_edit.toPlainText())
        except ValueError as e:
            self.error_label.setText(str(e))
            return None
        out: dict[str, Any] = {
            "method": self.method_combo.currentText(),
            "path": self.path_edit.text().strip() or "/",
            "headers": [list(h) for h in headers],
            "body": self.body_edit.toPlainText(),
        }
        if self.protocol != "HTTP/1.1":
            out["protocol"] = self.protocol
        if self.protocol == "gRPC":
            out.update(
                method="POST",
                payload_format=str(self.payload_combo.currentData()),
                deadline_s=float(self.deadline_spin.value()),
            )
        return out

    def curl_command(self) -> str:
        """The form as a curl line (HTTP/2: ``--http2-prior-knowledge``; gRPC: the framed
        message piped in from printf); "" and a message when the form is not valid."""
        req = self.current_request()
        if req is None:
            return ""
        try:
            return as_curl(self.base_url, req, self.ca_file)
        except ValueError as e:
            self.error_label.setText(str(e))
            return ""

    def _on_curl_button_clicked(self) -> None:
        cmd = self.curl_command()
        if cmd:
            QGuiApplication.clipboard().setText(cmd)
            self.error_label.setText("")

    def save_har(self, path: str) -> None:
        try:
            save_history(path, self.history, self.base_url)
        except OSError as e:
            self.error_label.setText(f"cannot save {path}: {e.strerror or e}")

    def load_har(self, path: str) -> None:
        try:
            self.history = history_from_har(path)
        except ValueError as e:
            self.error_label.setText(str(e))
            return
        self.error_label.setText("")
        self._show_history()
        if self.history:
            self.fill(self.history[-1])

    def _on_save_har_button_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save history as HAR", "", "HAR (*.har)")
        if path:
            self.save_har(path)

    def _on_load_har_button_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load a HAR", "", "HAR (*.har *.json)")
        if path:
            self.load_har(path)

    def fill(self, d: Mapping[str, Any]) -> None:
        """Put a request in the form (from the inspector's "Send again")."""
        proto = str(d.get("protocol") or "HTTP/1.1")
        self.protocol_combo.setCurrentText(proto if proto in PROTOCOLS else "HTTP/1.1")
        if proto == "gRPC":
            i = self.payload_combo.findData(str(d.get("payload_format") or "json"))
            self.payload_combo.setCurrentIndex(max(0, i))
            self.deadline_spin.setValue(float(d.get("deadline_s") or 10.0))
        self.method_combo.setCurrentText(str(d.get("method") or "GET"))
        self.path_edit.setText(str(d.get("path") or "/"))
        self.headers_edit.setPlainText("\n".join(f"{k}: {v}" for k, v in d.get("headers") or []))
        self.body_edit.setPlainText(str(d.get("body") or ""))
        self.error_label.setText("")

    def _on_load_button_clicked(self) -> None:
        rps, seconds = float(self.rps_spin.value()), float(self.seconds_spin.value())
        error = check_load_input(rps, seconds)
        if error:
            self.load_result_label.setStyleSheet("color:#f85149")
            self.load_result_label.setText(error)
            return
        self.load_result_label.setStyleSheet("")
        self.load_requested.emit(rps, seconds)

    def _on_inspect_button_clicked(self) -> None:
        if self._request_id:
            self.inspect_requested.emit(self._request_id)

    def show_response(self, d: Mapping[str, Any]) -> None:
        self._request_id = "" if d.get("error") else str(d.get("request_id") or "")
        self.inspect_button.setEnabled(bool(self._request_id))
        if d.get("error"):
            self.status_label.setText(f"No response: {d['error']}")
            self.response_view.setPlainText("")
            return
        if d.get("protocol") == "gRPC":
            self._show_grpc_result(d)
            return
        proto = d.get("protocol")
        self.status_label.setText(
            f"{d.get('status')} · {d.get('elapsed_ms')} ms · {d.get('body_size', 0)} bytes"
            + (f" · {proto}" if proto and proto != "HTTP/1.1" else "")
        )
        if self.history and "response" not in self.history[-1]:
            self.history[-1]["response"] = {
                "status": d.get("status"),
                "headers": [list(h) for h in d.get("headers") or []],
                "body": d.get("body", ""),
                "elapsed_ms": d.get("elapsed_ms"),
            }
            self._show_history()
        head = "\n".join(f"{k}: {v}" for k, v in d.get("headers") or [])
        self.response_view.setPlainText(f"{head}\n\n{d.get('body', '')}")

    def _show_grpc_result(self, d: Mapping[str, Any]) -> None:
        code = d.get("grpc_status")
        msg = str(d.get("grpc_message") or "")
        self.status_label.setText(
            f"gRPC {grpc_status_text(code)} · {d.get('elapsed_ms')} ms · "
            f"{d.get('body_size', 0)} bytes" + (f" · {msg}" if msg else "")
        )
        self.status_label.setToolTip(msg)
        if self.history and "response" not in self.history[-1]:
            self.history[-1]["response"] = {
                "status": 200,
                "grpc_status": code,
                "grpc_message": msg,
                "headers": [list(h) for h in d.get("initial_metadata") or []],
                "trailers": [list(h) for h in d.get("trailing_metadata") or []],
                "body": d.get("body", ""),
                "elapsed_ms": d.get("elapsed_ms"),
            }
            self._show_history()
        self.response_view.setPlainText(result_text(d))

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
        summary, behind = load_status(0, 0, float(d.get("rps") or 0), 0.0, dict(d))
        text = f"{summary.removeprefix('traffic ')} in {d.get('elapsed_s')} s ({statuses})"
        self.load_result_label.setStyleSheet("color:#d29922" if behind else "")
        self.load_result_label.setText(text)
