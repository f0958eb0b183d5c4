"""``LoadUrlDialog``: load a plugin from an http(s) URL, pinned by its sha256, or from an
OCI image (``oci://registry/repo:tag`` or without ``oci://``), which **Pull** fetches into
the download cache first with a progress bar, filling in the image digest (the sha256
Istio compares for OCI) and the root id the image names.

Checks what can be checked before anything is fetched (scheme, host, 64 hex digits,
a root id) and says so under each field; the download, the digest comparison and the
start-up happen in the engine, which refuses the plugin as a whole if any step fails.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from host.proxy.config import http_url_error, is_sha256

__all__ = ["LoadUrlDialog", "check_module_url", "check_sha256", "is_image", "name_from_url"]

_ROOT_ID = re.compile(r"[A-Za-z0-9_.:-]{0,256}")  # empty: Envoy/Istio's default root id


def is_image(url: str) -> bool:
    """An OCI image reference (``oci://…`` or a bare ``registry/repo[:tag]``)."""
    from host.cli_oci import is_image_ref

    return is_image_ref(url.strip())


def check_module_url(url: str) -> str:
    """ "" when ``url`` is an http(s) URL with a host or an image reference, else what is
    wrong."""
    url = url.strip()
    if not url:
        return "Type the module's URL (http:// or https://) or image (oci://registry/repo:tag)."
    if is_image(url):
        return ""
    try:
        scheme = urlsplit(url).scheme
    except ValueError as e:
        return f"Not a valid URL: {e}"
    if scheme not in ("http", "https"):  # what this dialog fetches
        return (
            "Only http:// and https:// URLs and oci:// images can be fetched here "
            "(use Load .wasm… for files)."
        )
    problem = http_url_error(url)  # the config's rule for spec.url
    return f"{problem[:1].upper()}{problem[1:]}." if problem else ""


def check_sha256(text: str) -> str:
    t = text.strip()
    if not t:
        return "Type the module's sha256 (sha256sum plugin.wasm): it is checked after download."
    if not is_sha256(t.lower()):
        return f"A sha256 is 64 hexadecimal digits; this has {len(t)} characters."
    return ""


def name_from_url(url: str) -> str:
    """A plugin name from a module URL or image reference (the repository's last part):
    the slot's name, never its root id (that defaults to "", as Envoy/Istio)."""
    if is_image(url):
        from host.oci import OciError, parse_reference

        try:
            name = parse_reference(url).repository.rsplit("/", 1)[-1]
        except OciError:
            return ""
        return re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    try:
        name = urlsplit(url.strip()).path.rsplit("/", 1)[-1]
    except ValueError:
        return ""
    stem = name[:-5] if name.lower().endswith(".wasm") else name
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem)


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
        self._add_pull_row(lay)
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
        url = self.url_edit.text()
        image = is_image(url)
        self.pull_button.setVisible(image)
        sha = self.sha_edit.text()
        optional = image and not sha.strip()  # a tag without a digest: Istio allows it
        msg = check_module_url(url) or ("" if optional else check_sha256(sha))
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

    # -- OCI images: pull with progress ------------------------------------------------------

    def _add_pull_row(self, lay: QVBoxLayout) -> None:
        from gui.background import Background

        row = QHBoxLayout()
        self.pull_button = QPushButton("Pull")
        self.pull_button.setObjectName("pull_button")
        self.pull_button.setToolTip("Fetch the image now: fills in its digest and root id")
        self.pull_progress = QProgressBar()
        self.pull_progress.setObjectName("pull_progress")
        self.pull_progress.setFormat("%v / %m KiB")
        self.pull_progress.setVisible(False)
        self.image_label = QLabel("")
        self.image_label.setObjectName("image_info")
        self.image_label.setWordWrap(True)
        row.addWidget(self.pull_button)
        row.addWidget(self.pull_progress, 1)
        lay.addLayout(row)
        lay.addWidget(self.image_label)
        self.pull_job = Background(self)
        self.pull_job.progress.connect(self._on_pull_job_progress)
        self.pull_job.finished.connect(self._on_pull_job_finished)
        self.pull_job.failed.connect(self._on_pull_job_failed)
        self.pull_button.clicked.connect(self.pull)

    def pull(self) -> None:
        """Pull the image into the download cache (a worker thread)."""
        from host.cli_oci import download_dir
        from host.oci import pull_module

        url = self.url_edit.text().strip()
        sha = self.sha_edit.text().strip().lower()
        if not is_image(url) or self.pull_job.running:
            return
        self.pull_button.setEnabled(False)
        self.pull_progress.setVisible(True)
        self.pull_progress.setRange(0, 0)
        self.image_label.setText(f"Pulling {url}…")
        cache = download_dir()
        self.pull_job.start(
            lambda progress: pull_module(url, sha256=sha, cache_dir=cache, progress=progress)
        )

    def _on_pull_job_progress(self, done: int, total: int) -> None:
        self.pull_progress.setRange(0, max(1, total // 1024))
        self.pull_progress.setValue(done // 1024)

    def _on_pull_job_finished(self, pulled: Any) -> None:
        from host.oci.module_source import default_root_id, image_warnings

        self.pull_button.setEnabled(True)
        self.pull_progress.setRange(0, 1)
        self.pull_progress.setValue(1)
        self.sha_edit.setText(pulled.sha256)
        root = default_root_id(pulled)
        if root and not self.root_edit.text().strip():  # the user typed none
            self.root_edit.setText(root)
        rc = pulled.runtime_config
        info = f"{pulled.variant} image {pulled.digest[:19]}…" + (
            " (from the cache)" if pulled.from_cache else ""
        )
        if rc is not None:
            abis, roots = ", ".join(rc.abi_versions) or "-", ", ".join(rc.root_ids) or "-"
            info += f"; ABI {abis}; root ids {roots}"
        warnings = image_warnings(pulled, self.root_edit.text().strip())
        self.image_label.setText(info + "".join(f"\nwarning: {w}" for w in warnings))
        self.problem()

    def _on_pull_job_failed(self, message: str) -> None:
        self.pull_button.setEnabled(True)
        self.pull_progress.setVisible(False)
        self.image_label.setText("")
        self.error_label.setText(f"Pull failed: {message}")
