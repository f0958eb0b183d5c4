"""``ExportClusterDialog``: File ▸ Export for a cluster….

Writes only the WasmPlugin documents of the running configuration, in the form
``kubectl apply`` and Istio accept (see :mod:`host.cluster_export`): images pinned by
digest, namespace and selector set. A plugin that loads a local file cannot be fetched by
a cluster, so the dialog lists those and offers to push each to a registry first
(``REGISTRY/REPO-PREFIX/<plugin>:<module sha256 prefix>``, the *oci* variant). Pushes,
pulls and the file write run in a worker thread with a progress bar; the confirmation
names the file written.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from gui.background import Background
from host.proxy.config import PluginSpec, ProxyConfig

__all__ = ["ExportClusterDialog", "parse_selector"]


def parse_selector(text: str) -> dict[str, str]:
    """``app=web, tier=front`` -> labels; ValueError naming a malformed pair."""
    labels: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        k, sep, v = part.partition("=")
        if not sep or not k.strip() or "*" in part:
            raise ValueError(f"selector: expected key=value pairs, got {part!r}")
        labels[k.strip()] = v.strip()
    return labels


class ExportClusterDialog(QDialog):
    exported = Signal(str)  # the file written

    def __init__(self, config: ProxyConfig, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("ExportClusterDialog")
        self.setWindowTitle("Export for a cluster")
        self.setMinimumWidth(600)
        self.config = config
        self.local = [s for s in config.plugins if s.location_kind == "file"]
        lay = QVBoxLayout(self)
        intro = QLabel(
            "Writes the WasmPlugin documents (not the Proxy document) for kubectl apply: "
            "images pinned by digest, the namespace and selector below."
        )
        intro.setWordWrap(True)
        lay.addWidget(intro)
        form = QFormLayout()
        namespaces = sorted({s.namespace for s in config.plugins}) or ["default"]
        self.namespace_edit = QLineEdit(namespaces[0])
        self.selector_edit = QLineEdit()
        self.selector_edit.setPlaceholderText("app=web (for plugins without selector/targetRefs)")
        self.registry_edit = QLineEdit()
        self.registry_edit.setPlaceholderText("registry.example.com/wasm-plugins")
        self.path_edit = QLineEdit(str(Path.cwd() / "wasmplugins.yaml"))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._on_browse_clicked)
        row = QHBoxLayout()
        row.addWidget(self.path_edit, 1)
        row.addWidget(browse)
        form.addRow("Namespace", self.namespace_edit)
        form.addRow("Selector", self.selector_edit)
        if self.local:
            names = ", ".join(s.name for s in self.local)
            note = QLabel(
                f"These plugins load a local file, which a cluster cannot fetch: {names}. "
                "They are pushed to this registry first:"
            )
            note.setObjectName("local_note")
            note.setWordWrap(True)
            form.addRow(note)
            form.addRow("Push to", self.registry_edit)
        form.addRow("File", row)
        lay.addLayout(form)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status_label = QLabel("")
        self.status_label.setObjectName("export_error")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.progress)
        lay.addWidget(self.status_label)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Export")
        self.buttons.accepted.connect(self.export)
        self.buttons.rejected.connect(self.reject)
        lay.addWidget(self.buttons)
        self.job = Background(self)
        self.job.progress.connect(self._on_job_progress)
        self.job.finished.connect(self._on_job_finished)
        self.job.failed.connect(self._on_job_failed)
        self.last_message = ""

    def _on_browse_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export for a cluster", self.path_edit.text(), "YAML (*.yaml *.yml)"
        )
        if path:
            self.path_edit.setText(path)

    def export(self) -> None:
        """Check the fields, then push, resolve and write in the worker thread."""
        if self.job.running:
            return
        try:
            labels = parse_selector(self.selector_edit.text())
        except ValueError as e:
            self.status_label.setText(str(e))
            return
        namespace = self.namespace_edit.text().strip() or None
        prefix = self.registry_edit.text().strip().removeprefix("oci://").rstrip("/")
        if self.local and not prefix:
            self.status_label.setText(
                "Type a registry to push the local modules to (e.g. "
                "registry.example.com/wasm-plugins), or load them from a registry."
            )
            return
        path = Path(self.path_edit.text().strip()).expanduser()
        config, local = self.config, list(self.local)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(False)
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.status_label.setText("Exporting…")
        self.job.start(
            lambda progress: _export(config, local, prefix, namespace, labels, path, progress)
        )

    def _on_job_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)

    def _on_job_finished(self, result: tuple[Path, int, list[str]]) -> None:
        path, count, warnings = result
        self.progress.setVisible(False)
        self.last_message = f"Wrote {count} WasmPlugin document(s) to {path}."
        if warnings:
            self.last_message += "\n\n" + "\n".join(f"• {w}" for w in warnings)
        self.status_label.setText("")
        self.exported.emit(str(path))
        box = QMessageBox(
            QMessageBox.Icon.Information,
            "Exported for a cluster",
            self.last_message,
            QMessageBox.StandardButton.Ok,
            self.parentWidget(),
        )
        box.setObjectName("export_done_box")
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()
        self.accept()

    def _on_job_failed(self, message: str) -> None:
        self.progress.setVisible(False)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(True)
        self.status_label.setText(f"Export failed: {message}")


def _export(
    config: ProxyConfig,
    local: list[PluginSpec],
    prefix: str,
    namespace: str | None,
    labels: dict[str, str],
    path: Path,
    progress: Any,
) -> tuple[Path, int, list[str]]:
    """The worker: push local modules, resolve images, write the file."""
    from host.cli_oci import download_dir
    from host.cluster_export import export_for_cluster
    from host.oci import RuntimeConfig, pull_module, push_module
    from host.wasm import Engine
    from host.wasm.vm import detect_abi

    pushed: dict[str, str] = {}
    for spec in local:
        wasm = Path(spec.location).read_bytes()
        engine = Engine(cache_dir=False)
        try:
            abi = detect_abi(engine.compile(wasm)) or ""
        finally:
            engine.close()
        rc = RuntimeConfig(
            "envoy_proxy",
            (f"v{abi}",) if abi else (),
            (spec.plugin_name,) if spec.plugin_name else (),
        )
        tag = hashlib.sha256(wasm).hexdigest()[:12]
        result = push_module(
            wasm, f"{prefix}/{spec.name}:{tag}", runtime_config=rc, progress=progress
        )
        pushed[spec.name] = f"oci://{result.ref.registry}/{result.ref.repository}@{result.digest}"
    cache = download_dir()
    out = export_for_cluster(
        config,
        namespace=namespace,
        match_labels=labels or None,
        resolve=lambda s: pull_module(
            s.location,
            sha256=s.sha256,
            pull_policy=s.image_pull_policy,
            cache_dir=cache,
            progress=progress,
        ),
        pushed=pushed,
    )
    path.write_text(out.yaml, encoding="utf-8")
    return path, len(out.documents), out.warnings
