"""``LoadUrlDialog``: load a plugin from an http(s) URL, pinned by its sha256.

Checks what can be checked before anything is fetched (scheme, host, 64 hex digits,
a root id) and says so under each field; the download, the digest comparison and the
start-up happen in the engine, which refuses the plugin as a whole if any step fails.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

__all__ = ["LoadUrlDialog", "check_module_url", "check_sha256"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_ROOT_ID = re.compile(r"[A-Za-z0-9_.:-]{0,256}")  # empty: Envoy/Istio's default root id


def check_module_url(url: str) -> str:
    """ "" when ``url`` is an http(s) URL with a host, else what is wrong."""
    url = url.strip()
    if not url:
        return "Type the module's URL (http:// or https://)."
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        return f"Not a valid URL: {e}"
    if parts.scheme not in ("http", "https"):
        return "Only http:// and https:// URLs can be downloaded here (use Load .wasm… for files)."
    if not parts.hostname:
        return "The URL has no host."
    if port == 0:
        return "Port 0 is not a valid port."
    return ""


def check_sha256(text: str) -> str:
    t = text.strip()
    if not t:
        return "Type the module's sha256 (sha256sum plugin.wasm): it is checked after download."
    if _SHA256.fullmatch(t.lower()) is None:
        return f"A sha256 is 64 hexadecimal digits; this has {len(t)} characters."
    return ""


class LoadUrlDialog(QDialog):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("LoadUrlDialog")
        self.setWindowTitle("Load a plugin from a URL")
        self.setMinimumWidth(560)
        lay = QVBoxLayout(self)
        intro = QLabel(
            "The module is downloaded by the engine, checked against the sha256, compiled, "
            "started and configured in a scratch VM before it joins the chain. If any step "
            "fails, nothing changes."
        )
        intro.setWordWrap(True)
        lay.addWidget(intro)
        form = QFormLayout()
        self.url_edit = QLineEdit()
        self.url_edit.setPlaceholderText("https://example.com/plugins/filter.wasm")
        self.sha_edit = QLineEdit()
        self.sha_edit.setPlaceholderText("64 hexadecimal digits")
        self.root_edit = QLineEdit()
        self.root_edit.setPlaceholderText(
            'empty = "" (Envoy/Istio default); else the name the plugin registers'
        )
        self.error_label = QLabel("")
        self.error_label.setObjectName("url_error")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color:#f85149")
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow("URL", self.url_edit)
        form.addRow("sha256", self.sha_edit)
        form.addRow("Root id", self.root_edit)
        lay.addLayout(form)
        lay.addWidget(self.error_label)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setText("Load")
        lay.addWidget(self.buttons)
        self.buttons.accepted.connect(self._on_buttons_accepted)
        self.buttons.rejected.connect(self.reject)
        self.url_edit.textEdited.connect(lambda _t: self.problem())
        self.sha_edit.textEdited.connect(lambda _t: self.problem())
        self.root_edit.textEdited.connect(lambda _t: self.problem())
        self.problem()

    def problem(self) -> str:
        """What stops loading ("" when nothing); shown under the fields."""
        msg = check_module_url(self.url_edit.text()) or check_sha256(self.sha_edit.text())
        if not msg and not _ROOT_ID.fullmatch(self.root_edit.text().strip()):
            msg = "A root id is empty or letters, digits, _ . : - (at most 256)."
        self.error_label.setText(msg)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(not msg)
        return msg

    def values(self) -> tuple[str, str, str]:
        """(url, sha256, root id), trimmed; sha256 lower-cased."""
        return (
            self.url_edit.text().strip(),
            self.sha_edit.text().strip().lower(),
            self.root_edit.text().strip(),
        )

    def _on_buttons_accepted(self) -> None:
        if not self.problem():
            self.accept()
