"""The main window: the header bar (proxy address, Generate traffic), the plugin chain
with its details, and the graphs / logs / inspector / composer tabs.

It talks to the engine only through an engine service (``gui.engine_service.EngineService``
or a fake with the same signals and methods): commands as method calls, changes as
signals, live data pulled by a 10 Hz timer with ``service.snapshot()``.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from PySide6.QtCore import QElapsedTimer, Qt, QTimer
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QDragEnterEvent,
    QDropEvent,
    QGuiApplication,
    QKeySequence,
)
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from gui.chain_order import MoveRefused, priorities_for_move
from gui.composer_panel import ComposerPanel
from gui.config_retry import ConfigRetryDialog
from gui.inspector_panel import InspectorPanel
from gui.intercept_panel import InterceptPanel
from gui.json_schema import SchemaError, form_problem, load_schema, schema_path_for
from gui.lab_panel import LabPanel
from gui.logs_panel import LogsPanel
from gui.mocks_panel import MocksPanel
from gui.plugin_panel import (
    PluginDetailsPanel,
    PluginListView,
    env_vars,
    plugin_error_lines,
    plugin_error_text,
)
from gui.stats_panel import StatsPanel
from gui.tls_client import ListenerTls
from gui.traffic import load_status
from gui.url_dialog import (
    LoadUrlDialog,
    check_module_url,
    check_sha256,
    is_image,
    name_from_url,
)
from gui.workspace import Workspace
from host.proxy.config import (
    ConfigError,
    PluginSpec,
    ProxyConfig,
    load_config,
    new_plugin,
    with_changes,
)
from host.proxy.errors import ErrorKind, PluginError
from host.proxy.request_views import HeldView, RequestGone, RequestView
from host.proxy.snapshots import PluginSnapshot

__all__ = ["MainWindow", "load_url_spec", "load_wasm_spec", "schema_for"]

WASM_MAGIC = b"\0asm"
DEMO_RPS = 300.0
DEMO_SECONDS = 20.0


class _Service(Protocol):  # what the window needs of an engine service
    listen_address: tuple[str, int]
    admin_address: tuple[str, int]
    notes: list[str]
    listener_tls: ListenerTls | None  # the listener speaks TLS: the CA the app trusts

    @property
    def config(self) -> ProxyConfig: ...
    def snapshot(self) -> Any: ...
    def apply_config(self, config: ProxyConfig, *, check_new: bool = ...) -> bool: ...
    def set_plugin_mode(self, name: str, **kw: Any) -> bool: ...
    def reload_plugin(self, name: str) -> bool: ...
    def fetch_request(self, record_id: int) -> bool: ...
    def send_request(
        self, method: str, url_path: str, headers: Any = (), body: bytes = b"", **kw: Any
    ) -> bool: ...
    def send_grpc(
        self, method: str, message: bytes, metadata: Any = ..., deadline_s: float = ...
    ) -> bool: ...
    def generate_traffic(self, rps: float = ..., seconds: float = ...) -> bool: ...
    def stop_traffic(self) -> bool: ...
    def arm_intercept(self, plugin: str, stage: str = ..., path: str = ...) -> bool: ...
    def disarm_intercept(self) -> bool: ...
    def resume_intercept(self, held_id: int, headers: Any = ..., body: Any = ...) -> bool: ...
    def set_capture(self, on: bool) -> None: ...
    def close(self, timeout_s: float = ...) -> bool: ...


def _plugin_name_for(path: Path, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", path.stem.lower()).strip("-")[:50] or "plugin"
    if not base[0].isalpha():
        base = f"p-{base}"
    name, n = base, 2
    while name in taken:
        name = f"{base}-{n}"
        n += 1
    return name


def load_wasm_spec(path: str | Path, config: ProxyConfig) -> PluginSpec:
    """A new WasmPlugin for a module file, checked before anything changes: raises
    ValueError with a message for the user when the file is not a readable .wasm."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{p}: no such file")
    if not p.is_file():
        raise ValueError(f"{p}: not a file")
    try:
        with p.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ValueError(f"{p}: cannot read it: {e.strerror or e}") from None
    if magic != WASM_MAGIC:
        raise ValueError(
            f"{p.name} is not a WebAssembly module (it does not start with \\0asm). "
            "Load a compiled Proxy-Wasm plugin (.wasm)."
        )
    name = _plugin_name_for(p, {s.name for s in config.plugins})
    try:
        # pluginName unset: root id "", as Envoy/Istio (C++ SDK factories register there)
        return new_plugin(name, str(p.resolve()), plugin_name="")
    except ConfigError as e:
        raise ValueError(f"{p.name}: {e}") from None


def load_url_spec(url: str, sha256: str, root_id: str, config: ProxyConfig) -> PluginSpec:
    """A new WasmPlugin for a module at an http(s) URL pinned by sha256; raises
    ValueError with a message for the user when an input is malformed."""
    image = is_image(url)
    problem = check_module_url(url) or (
        "" if image and not sha256.strip() else check_sha256(sha256)
    )
    if problem:
        raise ValueError(problem)
    stem = url.strip().rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    if image:  # registry/org/repo:tag@sha256:… -> repo
        stem = name_from_url(url) or "plugin"
    name = _plugin_name_for(Path(stem), {s.name for s in config.plugins})
    try:
        return new_plugin(
            name, url.strip(), sha256=sha256.strip().lower(), plugin_name=root_id.strip()
        )
    except ConfigError as e:
        raise ValueError(str(e)) from None


def schema_for(
    spec: PluginSpec | None, cache: dict[str, tuple[int, Any, str]] | None = None
) -> tuple[Any, str]:
    """(schema, note) for a plugin: the ``<module>.schema.json`` beside a file module
    when there is a usable one, else (None, why the form is not available). ``cache``
    (path → (mtime, schema, note)) saves re-reading an unchanged file."""
    cache = cache if cache is not None else {}
    if spec is None:
        return None, ""
    try:
        kind, location = spec.location_kind, spec.location
    except ValueError as e:
        return None, str(e)
    if kind != "file":
        return None, (
            "Modules fetched from a URL come without a schema: edit the configuration as "
            "YAML or JSON."
        )
    path = schema_path_for(location)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return None, (
            f"No {path.name} beside the module, so there is no form: edit the configuration "
            "as YAML or JSON."
        )
    cached = cache.get(str(path))
    if cached is not None and cached[0] == mtime:
        return cached[1], cached[2]
    schema: Any = None
    try:
        schema = load_schema(path)
        problem = form_problem(schema)
        note = "" if problem is None else f"{path.name}: {problem}; edit the YAML instead."
        if problem is not None:
            schema = None
    except SchemaError as e:
        note = f"{e}; edit the configuration as YAML or JSON."
    cache[str(path)] = (mtime, schema, note)
    return schema, note


class MainWindow(QMainWindow):
    def __init__(
        self,
        service: _Service,
        workspace: Workspace | None = None,
        *,
        poll_interval_ms: int = 100,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("MainWindow")
        self.setWindowTitle("Wasmdesk")
        self.resize(1400, 900)
        self.setAcceptDrops(True)
        self.service = service
        self.workspace = workspace
        self.last_error = ""
        self._pending: ProxyConfig | None = None
        self._closing = False
        self._engine_stopped = False
        self._select_after_change = ""
        self._env_pending = ""
        self._traffic_rps = DEMO_RPS
        self._traffic_started = time.monotonic()
        self._schemas: dict[str, tuple[int, Any, str]] = {}
        # the plugin snapshots of the last poll
        self._latest_plugins: Sequence[PluginSnapshot] | None = None

        # -- header bar
        header = QWidget()
        header.setObjectName("header_bar")
        hl = QHBoxLayout(header)
        hl.setContentsMargins(6, 4, 6, 4)
        hl.addWidget(QLabel("<b>Proxy</b>"))
        self.address_edit = QLineEdit("starting…")
        self.address_edit.setObjectName("proxy_address")
        self.address_edit.setReadOnly(True)
        self.address_edit.setMinimumWidth(220)
        hl.addWidget(self.address_edit)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the proxy address")
        hl.addWidget(self.copy_button)
        self.admin_label = QLabel("")
        self.admin_label.setObjectName("admin_link")
        self.admin_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.admin_label.setOpenExternalLinks(True)
        hl.addWidget(self.admin_label)
        hl.addStretch(1)
        self.traffic_label = QLabel("")
        hl.addWidget(self.traffic_label)
        self.generate_button = QPushButton("Generate traffic")
        self.generate_button.setObjectName("generate_traffic")
        self.generate_button.setToolTip(
            f"Send {DEMO_RPS:g} requests/s for {DEMO_SECONDS:g} s through the proxy"
        )
        self.generate_button.setEnabled(False)
        hl.addWidget(self.generate_button)
        self.stop_traffic_button = QPushButton("Stop")
        self.stop_traffic_button.setObjectName("stop_traffic")
        self.stop_traffic_button.setToolTip("Stop the generated traffic")
        self.stop_traffic_button.setEnabled(False)
        hl.addWidget(self.stop_traffic_button)

        # -- plugins (left)
        self.plugin_list = PluginListView()
        self.load_button = QPushButton("Load .wasm…")
        self.load_button.setToolTip("Or drop a .wasm file on the window")
        self.load_url_button = QPushButton("From URL…")
        self.load_url_button.setToolTip("Download a module over http(s), pinned by its sha256")
        self.up_button = QPushButton("▲")
        self.up_button.setToolTip("Run earlier within its phase (raises its priority)")
        self.down_button = QPushButton("▼")
        self.down_button.setToolTip("Run later within its phase (lowers its priority)")
        for b in (self.up_button, self.down_button):
            b.setMaximumWidth(36)
        self.plugin_details = PluginDetailsPanel()
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(QLabel("<b>Plugin chain</b> (effective order)"))
        ll.addWidget(self.plugin_list, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.load_button, 1)
        buttons.addWidget(self.load_url_button, 1)
        buttons.addWidget(self.up_button)
        buttons.addWidget(self.down_button)
        ll.addLayout(buttons)
        left_split = QSplitter(Qt.Orientation.Vertical)
        left_split.addWidget(left)
        # the details scroll, so the window fits 1024x700 with nothing cut off
        details_scroll = QScrollArea()
        details_scroll.setObjectName("details_scroll")
        details_scroll.setWidgetResizable(True)
        details_scroll.setFrameShape(QFrame.Shape.NoFrame)
        details_scroll.setWidget(self.plugin_details)
        details_scroll.setMinimumWidth(380)  # the modes and the form stay readable
        left_split.addWidget(details_scroll)
        left_split.setSizes([150, 700])

        # -- tabs (right)
        self.stats_panel = StatsPanel()
        self.logs_panel = LogsPanel()
        self.inspector_panel = InspectorPanel()
        self.composer_panel = ComposerPanel()
        self.intercept_panel = InterceptPanel()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.stats_panel, "Graphs")
        self.tabs.addTab(self.logs_panel, "Logs")
        self.tabs.addTab(self.inspector_panel, "Inspector")
        self.tabs.addTab(self.composer_panel, "Composer")
        self.tabs.addTab(self.intercept_panel, "Intercept")
        self.lab_panel = LabPanel()
        self.tabs.addTab(self.lab_panel, "Lab")
        self.mocks_panel = MocksPanel()
        self.tabs.addTab(self.mocks_panel, "Mocks")

        body = QSplitter(Qt.Orientation.Horizontal)
        body.addWidget(left_split)
        body.addWidget(self.tabs)
        body.setSizes([420, 980])
        central = QWidget()
        cl = QVBoxLayout(central)
        cl.setContentsMargins(0, 0, 0, 0)
        cl.addWidget(header)
        cl.addWidget(body, 1)
        self.setCentralWidget(central)
        self.lag_label = QLabel("")
        self.lag_label.setObjectName("lag_label")
        # its own fixed box with a rule before it: messages end before it, never under it
        self.lag_label.setMinimumWidth(
            self.lag_label.fontMetrics().horizontalAdvance("GUI lag ≤ 9999 ms") + 24
        )
        self.lag_label.setStyleSheet(
            "QLabel { border-left: 1px solid #8b949e; padding-left: 8px; }"
        )
        self.statusBar().addPermanentWidget(self.lag_label)
        self.undo_button = QPushButton("Undo remove")
        self.undo_button.setObjectName("undo_remove")
        self.undo_button.hide()
        self.statusBar().addPermanentWidget(self.undo_button)
        self._removed: tuple[PluginSpec, int] | None = None
        self._retry: ConfigRetryDialog | None = None
        self._loading: PluginSpec | None = None  # the module a load is checking
        self._chain_names: tuple[str, ...] = ()
        if workspace is not None and workspace.message:
            self.statusBar().showMessage(workspace.message, 15000)
        if workspace is not None and workspace.set_aside is not None:
            # the saved workspace failed to load: say so once the window is up
            msg = workspace.message
            QTimer.singleShot(0, lambda: self.show_error("Workspace set aside", msg))
        if workspace is not None and workspace.locked_by is not None:
            self.setWindowTitle("Wasmdesk — read-only workspace")
        self._build_menu()
        self._add_shortcuts()

        # -- wiring
        self.copy_button.clicked.connect(self._on_copy_button_clicked)
        self.generate_button.clicked.connect(self._on_generate_button_clicked)
        self.stop_traffic_button.clicked.connect(self._on_stop_traffic_button_clicked)
        self.load_button.clicked.connect(self._on_load_button_clicked)
        self.load_url_button.clicked.connect(self._on_load_url_button_clicked)
        self.up_button.clicked.connect(lambda: self._move_selected(-1))
        self.down_button.clicked.connect(lambda: self._move_selected(+1))
        self.plugin_list.plugin_selected.connect(self._on_plugin_list_plugin_selected)
        self.plugin_list.plugin_moved.connect(self._on_plugin_list_plugin_moved)
        self.plugin_list.files_dropped.connect(self._on_plugin_list_files_dropped)
        d = self.plugin_details
        d.mode_changed.connect(self._on_plugin_details_mode_changed)
        d.order_changed.connect(self._on_plugin_details_order_changed)
        d.config_edited.connect(self._on_plugin_details_config_edited)
        d.remove_requested.connect(self._on_plugin_details_remove_requested)
        d.reload_requested.connect(self._on_plugin_details_reload_requested)
        d.env_edited.connect(self._on_plugin_details_env_edited)
        d.logs_requested.connect(self._on_plugin_details_logs_requested)
        self.undo_button.clicked.connect(self.undo_remove)
        self.logs_panel.plugin_level_changed.connect(self.set_plugin_log_level)
        self.inspector_panel.request_selected.connect(self._on_inspector_panel_request_selected)
        self.inspector_panel.capture_toggled.connect(self.service.set_capture)
        self.inspector_panel.replay_requested.connect(self._on_inspector_panel_replay_requested)
        self.inspector_panel.intercept_requested.connect(
            lambda _: self.tabs.setCurrentWidget(self.intercept_panel)
        )
        ip = self.intercept_panel
        ip.arm_requested.connect(self.service.arm_intercept)
        ip.disarm_requested.connect(self.service.disarm_intercept)
        ip.resume_requested.connect(self.service.resume_intercept)
        self.logs_panel.request_activated.connect(self._on_logs_panel_request_activated)
        d.reproduce_requested.connect(self._on_plugin_details_reproduce_requested)
        if hasattr(service, "set_recording"):
            self.lab_panel.record_toggled.connect(service.set_recording)
            service.recording_changed.connect(self.lab_panel.set_recording)
        if hasattr(service, "set_mocks"):
            self.mocks_panel.mocks_applied.connect(service.set_mocks)
        self.mocks_panel.mocks_applied.connect(
            lambda rules: setattr(self.lab_panel, "mocks", list(rules))
        )
        c = self.composer_panel
        c.send_requested.connect(self._on_composer_panel_send_requested)
        c.request_composed.connect(self._on_composer_panel_request_composed)
        c.load_requested.connect(self._on_composer_panel_load_requested)
        c.load_stop_requested.connect(self._on_composer_panel_load_stop_requested)
        c.inspect_requested.connect(self._on_logs_panel_request_activated)
        s: Any = service
        s.started.connect(self._on_service_started)
        s.start_failed.connect(self._on_service_start_failed)
        s.stopped.connect(self._on_service_stopped)
        s.plugins_changed.connect(self._on_service_plugins_changed)
        s.config_applied.connect(self._on_service_config_applied)
        s.config_refused.connect(self._on_service_config_refused)
        s.command_failed.connect(self._on_service_command_failed)
        s.plugin_reloaded.connect(self._on_service_plugin_reloaded)
        s.response_received.connect(self._on_service_response_received)
        s.request_details_received.connect(self._on_service_request_details_received)
        s.traffic_progress.connect(self._on_service_traffic_progress)
        s.traffic_finished.connect(self._on_service_traffic_finished)
        s.intercepts_changed.connect(self._on_service_intercepts_changed)

        self.poll_timer = QTimer(self)
        self.poll_timer.setInterval(poll_interval_ms)
        self.poll_timer.timeout.connect(self._on_poll_timer_timeout)
        self.save_timer = QTimer(self)
        self.save_timer.setSingleShot(True)
        self.save_timer.setInterval(500)
        self.save_timer.timeout.connect(self._on_save_timer_timeout)
        # event-loop lag: how late a 50 ms timer fires (issue item 10)
        self.lag_timer = QTimer(self)
        self.lag_timer.setInterval(50)
        self.lag_timer.timeout.connect(self._on_lag_timer_timeout)
        self._lag_clock = QElapsedTimer()
        self.max_lag_ms = 0.0
        self.lag_samples: deque[float] = deque(maxlen=1200)  # the last minute, 20 Hz
        self._window_lag_ms = 0.0
        self._lag_shown_at = 0.0
        self.polls = 0
        self.poll_ms_max = 0.0

    def _build_menu(self) -> None:
        m = self.menuBar().addMenu("&File")
        load = QAction("&Load plugin…", self)
        load.triggered.connect(self._on_load_button_clicked)
        load_url = QAction("Load plugin from &URL…", self)
        load_url.triggered.connect(self._on_load_url_button_clicked)
        imp = QAction("&Import WasmPlugin YAML…", self)
        imp.triggered.connect(self._on_import_action_triggered)
        exp = QAction("&Export WasmPlugin YAML…", self)
        exp.triggered.connect(self._on_export_action_triggered)
        cluster = QAction("Export for a &cluster…", self)
        cluster.triggered.connect(self.open_export_cluster_dialog)
        quit_ = QAction("&Quit", self)
        quit_.triggered.connect(self.close)
        for a in (load, load_url, imp, exp, cluster):
            m.addAction(a)
        m.addSeparator()
        m.addAction(quit_)

    def _add_shortcuts(self) -> None:
        """Ctrl+O load, Ctrl+S save, Ctrl+Q quit, Ctrl+F filter, F5 reload the plugin,
        Ctrl+Z undo a Remove."""
        for text, keys, slot in (
            ("Load plugin", QKeySequence.StandardKey.Open, self._on_load_button_clicked),
            ("Save workspace", QKeySequence.StandardKey.Save, self._on_save_shortcut),
            ("Quit", QKeySequence("Ctrl+Q"), self.close),
            ("Filter", QKeySequence.StandardKey.Find, self.focus_filter),
            ("Reload plugin", QKeySequence("F5"), self._on_reload_shortcut),
            ("Undo remove", QKeySequence.StandardKey.Undo, self.undo_remove),
        ):
            a = QAction(text, self)
            a.setObjectName(f"shortcut_{text.lower().replace(' ', '_')}")
            a.setShortcut(keys)
            a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            a.triggered.connect(slot)
            self.addAction(a)

    def _on_save_shortcut(self) -> None:
        self.save_workspace()
        if self.workspace is not None and self.workspace.writable:
            self.statusBar().showMessage(f"Workspace saved to {self.workspace.path}", 4000)

    def _on_reload_shortcut(self) -> None:
        name = self.plugin_list.selected_name()
        if name:
            self.service.reload_plugin(name)
            self.statusBar().showMessage(f"Reloading {name}…", 3000)

    def focus_filter(self) -> None:
        """Ctrl+F: the current tab's filter or search box."""
        tab = self.tabs.currentWidget()
        for attr in ("filter_edit", "search_edit", "metric_filter"):
            edit = getattr(tab, attr, None)
            if isinstance(edit, QLineEdit):
                if attr == "metric_filter":
                    self.stats_panel.set_picker_open(True)
                edit.setFocus()
                edit.selectAll()
                return

    def set_plugin_log_level(self, level: str) -> None:
        """The level plugins log at, from the Logs tab."""
        setter = getattr(self.service, "set_log_level", None)
        if setter is not None and setter(level):
            self.statusBar().showMessage(f"Plugins now log at {level} and above", 4000)

    def undo_remove(self) -> bool:
        """Put the last removed plugin back where it was (same spec, same place)."""
        if self._removed is None:
            return False
        spec, index = self._removed
        self._removed = None
        self.undo_button.hide()
        base = self._base_config()
        if any(p.name == spec.name for p in base.plugins):
            return False
        plugins = list(base.plugins)
        plugins.insert(min(index, len(plugins)), spec)
        self._select_after_change = spec.name
        return self._apply(dataclasses.replace(base, plugins=tuple(plugins)))

    # -- helpers -----------------------------------------------------------------------------

    def show_error(self, title: str, text: str) -> None:
        """A non-blocking message box (and ``last_error`` for tests)."""
        self.last_error = text
        self.statusBar().showMessage(text, 10000)
        box = QMessageBox(
            QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, self
        )
        box.setObjectName("error_box")
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()

    def _base_config(self) -> ProxyConfig:
        return self._pending if self._pending is not None else self.service.config

    def _apply(self, config: ProxyConfig, *, check_new: bool = False) -> bool:
        if check_new:
            ok = self.service.apply_config(config, check_new=True)
        else:
            ok = self.service.apply_config(config)
        if ok:
            self._pending = config
        return ok

    def _spec(self, name: str) -> PluginSpec | None:
        return next((p for p in self._base_config().plugins if p.name == name), None)

    def load_plugin_file(self, path: str | Path) -> bool:
        """What "Load .wasm" and a drop do: add the module as a new plugin. A file that
        is not a module gives a message and changes nothing."""
        base = self._base_config()
        try:
            spec = load_wasm_spec(path, base)
        except ValueError as e:
            self.show_error("Cannot load this file", str(e))
            return False
        new = dataclasses.replace(base, plugins=(*base.plugins, spec))
        if not self._apply(new, check_new=True):
            return False
        self._loading = spec
        self.statusBar().showMessage(f"Loading {spec.name} from {Path(path).name}…", 5000)
        self._select_after_change = spec.name
        return True

    def load_plugin_url(self, url: str, sha256: str, root_id: str) -> bool:
        """What "From URL…" does: the engine downloads the module, checks its sha256 and
        starts it in a scratch VM; only then does it join the chain."""
        base = self._base_config()
        try:
            spec = load_url_spec(url, sha256, root_id, base)
        except ValueError as e:
            self.show_error("Cannot load from this URL", str(e))
            return False
        new = dataclasses.replace(base, plugins=(*base.plugins, spec))
        if not self._apply(new, check_new=True):
            return False
        self._loading = spec
        self.statusBar().showMessage(f"Downloading {url}…", 10000)
        self._select_after_change = spec.name
        return True

    def move_plugin(self, name: str, position: int) -> bool:
        """Move a plugin to ``position`` in its chain (the HTTP one, or the TCP one for a
        ``type: NETWORK`` plugin; within its phase) by changing priorities; a move into
        another phase gets a message and changes nothing."""
        base = self._base_config()
        kind = next((p.type for p in base.plugins if p.name == name), "HTTP")
        try:
            # each chain is ordered on its own: a TCP plugin never sits among HTTP ones
            changes = priorities_for_move(
                [p for p in base.plugins if (p.type == "NETWORK") == (kind == "NETWORK")],
                name,
                position,
            )
        except MoveRefused as e:
            self.last_error = str(e)
            self.statusBar().showMessage(str(e), 8000)
            return False
        if not changes:
            return True
        try:
            plugins = tuple(
                with_changes(p, priority=changes[p.name]) if p.name in changes else p
                for p in base.plugins
            )
        except (ConfigError, ValueError) as e:
            self.show_error(f"Cannot move {name}", str(e))
            return False
        self._apply(dataclasses.replace(base, plugins=plugins))
        said = ", ".join(f"{n} → {v}" for n, v in changes.items())
        self.statusBar().showMessage(f"New priorities: {said}", 6000)
        return True

    def import_config_file(self, path: str | Path) -> bool:
        try:
            config = load_config(path)
        except ConfigError as e:
            self.show_error("Cannot import this file", str(e))
            return False
        current = self._base_config()
        return self._apply(
            dataclasses.replace(
                config,
                listen_host=current.listen_host,
                listen_port=current.listen_port,
                admin_host=current.admin_host,
                admin_port=current.admin_port,
            ),
            check_new=True,
        )

    def schedule_save(self) -> None:
        if self.workspace is not None:
            self.save_timer.start()

    def save_workspace(self) -> None:
        if self.workspace is None:
            return
        try:
            if not self.workspace.save(self._base_config()):
                why = (
                    f"another Wasmdesk (pid {self.workspace.locked_by}) has it open"
                    if self.workspace.locked_by is not None
                    else "it is invalid and was kept as it is"
                )
                self.statusBar().showMessage(f"Not saving: {self.workspace.path}: {why}", 10000)
        except OSError as e:
            self.statusBar().showMessage(f"Could not save the workspace: {e}", 10000)

    # -- service signals -------------------------------------------------------------------------

    def _on_service_started(self) -> None:
        h, p = self.service.listen_address
        ah, ap = self.service.admin_address
        tls = self.service.listener_tls
        proxy_url = f"{'https' if tls is not None else 'http'}://{h}:{p}"
        self.address_edit.setText(proxy_url)
        self.inspector_panel.base_url = self.composer_panel.base_url = proxy_url
        ca = (tls.ca_file or "") if tls is not None else ""
        self.inspector_panel.ca_file = self.composer_panel.ca_file = ca
        url = f"http://{ah}:{ap}/"
        self.admin_label.setText(f'admin <a href="{url}" style="color:#58a6ff">{url}</a>')
        self.admin_label.setToolTip("Open the admin API in the browser")
        self.generate_button.setEnabled(True)
        notes = list(self.service.notes)
        if self.workspace is not None and self.workspace.lock_note:
            notes.append(self.workspace.lock_note)
        if notes:  # all of them, in one message (one would replace the other)
            self.statusBar().showMessage("; ".join(notes), 20000)
        self.poll_timer.start()
        self._lag_clock.start()
        self.lag_timer.start()

    def _on_service_start_failed(self, message: str) -> None:
        self.address_edit.setText("not running")
        self.show_error("The proxy did not start", message)

    def _on_service_stopped(self) -> None:
        self._engine_stopped = True
        self.poll_timer.stop()
        self.generate_button.setEnabled(False)
        if not self._closing:
            self.address_edit.setText("stopped")

    def _on_service_plugins_changed(self, plugins: list[PluginSnapshot]) -> None:
        self._latest_plugins = plugins
        names = tuple(p.name for p in plugins)
        if self._chain_names and names != self._chain_names:
            added = [n for n in names if n not in self._chain_names]
            gone = [n for n in self._chain_names if n not in names]
            if added or gone:
                said = ", ".join([f"+{n}" for n in added] + [f"−{n}" for n in gone])
                self.stats_panel.add_marker(f"chain {said}")
        self._chain_names = names
        self.stats_panel.prune_plugins(names)
        if self._loading is not None and self._loading.name in names:
            self._loading = None
            if self._retry is not None:
                self._retry.accept()
                self._retry = None
        self.plugin_list.set_plugins(plugins)
        # intercept holds HTTP requests: the TCP plugins have no hop there
        self.intercept_panel.set_plugins(self.plugin_list.names_of_kind("HTTP"))
        want = self._select_after_change
        if want and want in self.plugin_list.names():
            self._select_after_change = ""
            self.plugin_list.select(want)
        self._refresh_details()
        self.schedule_save()

    def _on_service_config_applied(self, errors: list[PluginError]) -> None:
        self._pending = None
        self.plugin_details.set_config_result(errors)
        if self._env_pending:
            mine = [e for e in errors if e.plugin == self._env_pending]
            self.plugin_details.set_env_result("; ".join(plugin_error_lines(e)[0] for e in mine))
            self._env_pending = ""
            self._refresh_details()
        if errors:
            self.show_error(
                "Some plugins did not take the new configuration",
                "\n".join(plugin_error_text(e) for e in errors),
            )
        else:
            self.statusBar().showMessage("Configuration applied", 4000)
            self.stats_panel.add_marker("config")
        self.schedule_save()

    def _on_service_config_refused(self, errors: list[PluginError]) -> None:
        self._pending = None
        self._select_after_change = ""
        spec, self._loading = self._loading, None
        mine = [e for e in errors if spec is not None and e.plugin == spec.name]
        if spec is not None and mine and mine[0].kind is ErrorKind.CONFIGURE:
            self.open_config_retry(spec, "\n".join(plugin_error_lines(mine[0])))
            return
        self.show_error(
            "The plugin was not added",
            "\n".join(plugin_error_text(e) for e in errors)
            + "\n\nNothing was changed: the chain runs as before.",
        )

    def _on_service_command_failed(self, message: str) -> None:
        self._pending = None
        self.show_error("The engine refused", message)
        self._refresh_details()

    def _on_service_plugin_reloaded(self, name: str, error: PluginError | None) -> None:
        if error is not None:
            self.show_error(f"{name} did not reload", "\n".join(plugin_error_lines(error)))
        else:
            self.statusBar().showMessage(f"{name} reloaded", 4000)

    def _on_service_response_received(self, d: dict[str, Any]) -> None:
        self.composer_panel.show_response(d)

    def _on_service_request_details_received(self, rec: RequestView | RequestGone) -> None:
        self.inspector_panel.show_details(rec)

    def _on_service_traffic_progress(self, sent: int, planned: int) -> None:
        self.composer_panel.show_progress(sent, planned)
        elapsed = time.monotonic() - self._traffic_started
        text, behind = load_status(sent, planned, self._traffic_rps, elapsed)
        self._show_traffic(text, behind)

    def _on_service_traffic_finished(self, d: dict[str, Any]) -> None:
        self.composer_panel.show_load_result(d)
        text, behind = load_status(0, 0, float(d.get("rps") or self._traffic_rps), 0.0, d)
        self._show_traffic(text, behind)
        self.generate_button.setEnabled(not self._engine_stopped)
        self.stop_traffic_button.setEnabled(False)

    def _show_traffic(self, text: str, behind: bool) -> None:
        """The header's load line: sent vs planned, achieved vs planned rate, in amber
        when the generator cannot keep up (issue 12 item 5)."""
        self.traffic_label.setText(text)
        self.traffic_label.setStyleSheet("color:#d29922" if behind else "")

    def _traffic_began(self, rps: float) -> None:
        self._traffic_rps = rps
        self._traffic_started = time.monotonic()
        self.generate_button.setEnabled(False)
        self.stop_traffic_button.setEnabled(True)
        self._show_traffic(f"traffic starting · {rps:g} req/s planned", False)

    def _on_stop_traffic_button_clicked(self) -> None:
        self.service.stop_traffic()

    def _on_service_intercepts_changed(self, held: Sequence[HeldView]) -> None:
        self.intercept_panel.show_held(held)
        n = len(held)
        title = f"Intercept ({n})" if n else "Intercept"
        self.tabs.setTabText(self.tabs.indexOf(self.intercept_panel), title)
        if n:
            self.statusBar().showMessage(f"{n} request(s) held by intercept", 5000)

    # -- timers ----------------------------------------------------------------------------------

    def _on_poll_timer_timeout(self) -> None:
        t0 = time.perf_counter()
        snap = self.service.snapshot()
        if snap is None:
            return
        self.stats_panel.update_stats(snap.stats, redraw=self.stats_panel.isVisible())
        if snap.logs:
            self.logs_panel.append_logs(snap.logs)
        if snap.requests:
            self.inspector_panel.append_requests(snap.requests)
        self.polls += 1
        self._latest_plugins = snap.plugins
        if self.polls % 10 == 0:  # counters in the details, once a second
            self._refresh_details(snap.plugins)
        self.poll_ms_max = max(self.poll_ms_max, (time.perf_counter() - t0) * 1000)

    def _on_lag_timer_timeout(self) -> None:
        elapsed = self._lag_clock.restart()
        lag = max(0.0, elapsed - self.lag_timer.interval())
        self.lag_samples.append(lag)
        self.max_lag_ms = max(self.max_lag_ms, lag)
        self._window_lag_ms = max(self._window_lag_ms, lag)
        now = time.monotonic()
        if now - self._lag_shown_at >= 1.0:
            self.lag_label.setText(f"GUI lag ≤ {self._window_lag_ms:.0f} ms")
            self._window_lag_ms = 0.0
            self._lag_shown_at = now

    def _on_save_timer_timeout(self) -> None:
        self.save_workspace()

    # -- user actions ----------------------------------------------------------------------------

    def _refresh_details(self, plugins: Sequence[PluginSnapshot] | None = None) -> None:
        name = self.plugin_list.selected_name()
        p: PluginSnapshot | None = None
        plugins = plugins if plugins is not None else self._latest_plugins
        if name:
            if plugins is not None:
                p = next((x for x in plugins if x.name == name), None)
            if p is None:
                p = self.plugin_list.plugin(name)
        spec = self._spec(name) if name else None
        schema, note = schema_for(spec, self._schemas) if p is not None else (None, "")
        self.plugin_details.show_plugin(p, spec, schema, note)

    def _on_copy_button_clicked(self) -> None:
        QGuiApplication.clipboard().setText(self.address_edit.text())
        self.statusBar().showMessage("Proxy address copied", 3000)

    def _on_generate_button_clicked(self) -> None:
        if self.service.generate_traffic(DEMO_RPS, DEMO_SECONDS):
            self._traffic_began(DEMO_RPS)
            self.composer_panel.show_load_started()
            self.tabs.setCurrentWidget(self.stats_panel)

    def _on_load_button_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Load a Proxy-Wasm plugin", "", "WebAssembly modules (*.wasm);;All files (*)"
        )
        if path:
            self.load_plugin_file(path)

    def _on_load_url_button_clicked(self) -> None:
        dlg = LoadUrlDialog(self)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.accepted.connect(lambda: self.load_plugin_url(*dlg.values()))
        dlg.open()

    def open_export_cluster_dialog(self) -> Any:
        """File ▸ Export for a cluster…: WasmPlugin documents a cluster accepts."""
        from gui.export_dialog import ExportClusterDialog

        dlg = ExportClusterDialog(self._base_config(), self)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.exported.connect(lambda path: self.statusBar().showMessage(f"Wrote {path}", 10000))
        dlg.open()
        return dlg

    def _move_selected(self, step: int) -> None:
        name = self.plugin_list.selected_name()
        if name:
            self.move_plugin(name, max(0, self.plugin_list.chain_index(name) + step))

    def _on_plugin_list_plugin_moved(self, name: str, position: int) -> None:
        self.move_plugin(name, position)

    def _on_plugin_list_files_dropped(self, files: list[str]) -> None:
        for f in files:
            self.load_plugin_file(f)

    def _on_import_action_triggered(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Import WasmPlugin YAML", "", "YAML (*.yaml *.yml);;All files (*)"
        )
        if path:
            self.import_config_file(path)

    def _on_export_action_triggered(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export WasmPlugin YAML", "wasmdesk.yaml", "YAML (*.yaml *.yml)"
        )
        if path:
            try:
                Workspace(Path(path)).export_to(self._base_config(), path)
            except OSError as e:
                self.show_error("Export failed", str(e))

    def _on_plugin_list_plugin_selected(self, name: str) -> None:
        self._refresh_details()

    def _on_plugin_details_mode_changed(self, name: str, kw: dict[str, Any]) -> None:
        if self.service.set_plugin_mode(name, **kw):
            said = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in kw.items())
            self.stats_panel.add_marker(f"{name}: {said}")

    def open_config_retry(self, spec: PluginSpec, error: str) -> ConfigRetryDialog:
        """A module whose configure failed: its error, a config editor and Retry."""
        if self._retry is None:
            schema, _note = schema_for(spec, self._schemas)
            self._retry = ConfigRetryDialog(
                spec.name, error, schema, spec.plugin_config or None, self
            )
            self._retry.retry_requested.connect(lambda cfg, s=spec: self._retry_with_config(s, cfg))
            self._retry.rejected.connect(self._on_retry_rejected)
            self._retry.open()
        else:
            self._retry.show_error(error)
        self.last_error = error
        self.statusBar().showMessage(f"{spec.name} needs a configuration: {error}", 10000)
        return self._retry

    def _on_retry_rejected(self) -> None:
        self._retry = None

    def _retry_with_config(self, spec: PluginSpec, config: dict[str, Any]) -> None:
        base = self._base_config()
        try:
            spec = with_changes(spec, plugin_config=config)
        except (ConfigError, ValueError) as e:
            if self._retry is not None:
                self._retry.show_error(str(e))
            return
        new = dataclasses.replace(
            base, plugins=(*(p for p in base.plugins if p.name != spec.name), spec)
        )
        if self._apply(new, check_new=True):
            self._loading = spec
            self._select_after_change = spec.name

    def _on_plugin_details_order_changed(self, name: str, phase: str, priority: Any) -> None:
        self._change_spec(name, phase=phase, priority=priority)

    def _on_plugin_details_config_edited(self, name: str, value: dict[str, Any]) -> None:
        self._change_spec(name, plugin_config=value)

    def _change_spec(self, name: str, **changes: Any) -> None:
        base = self._base_config()
        try:
            plugins = tuple(
                with_changes(p, **changes) if p.name == name else p for p in base.plugins
            )
        except (ConfigError, ValueError) as e:
            self.show_error(f"Invalid change to {name}", str(e))
            return
        self._apply(dataclasses.replace(base, plugins=plugins))

    def _on_plugin_details_remove_requested(self, name: str) -> None:
        base = self._base_config()
        index = next((i for i, p in enumerate(base.plugins) if p.name == name), None)
        if index is None:
            return
        if self._apply(
            dataclasses.replace(base, plugins=tuple(p for p in base.plugins if p.name != name))
        ):
            # undoable rather than confirmed: Undo (or Ctrl+Z) puts it back as it was
            self._removed = (base.plugins[index], index)
            self.undo_button.setText(f"Undo remove {name}")
            self.undo_button.show()
            self.statusBar().showMessage(f"Removed {name}", 15000)

    def _on_plugin_details_reload_requested(self, name: str) -> None:
        self.service.reload_plugin(name)

    def _on_plugin_details_env_edited(self, name: str, entries: list[Any]) -> None:
        base = self._base_config()
        try:
            plugins = tuple(
                with_changes(p, env=env_vars(entries)) if p.name == name else p
                for p in base.plugins
            )
        except (ConfigError, ValueError) as e:
            self.plugin_details.set_env_result(str(e))
            return
        if self._apply(dataclasses.replace(base, plugins=plugins)):
            self._env_pending = name

    def _on_plugin_details_logs_requested(self, name: str) -> None:
        self.logs_panel.set_filters(plugin=name)
        self.tabs.setCurrentWidget(self.logs_panel)

    def _on_inspector_panel_request_selected(self, record_id: int) -> None:
        self.service.fetch_request(record_id)

    def _on_inspector_panel_replay_requested(self, d: dict[str, Any]) -> None:
        self.composer_panel.fill(d)
        self.tabs.setCurrentWidget(self.composer_panel)

    def _on_logs_panel_request_activated(self, request_id: str) -> None:
        if self.inspector_panel.select_request_id(request_id):
            self.tabs.setCurrentWidget(self.inspector_panel)
        else:
            self.statusBar().showMessage(
                f"Request {request_id} is no longer in the inspector (it keeps the most "
                "recent ones; Pause it to keep them)",
                8000,
            )

    def _on_plugin_details_reproduce_requested(self, name: str, session: str) -> None:
        """The failure panel's Reproduce: the lab replays the crash session through the
        plugin's module with its configuration and shows the failure."""
        spec = next((p for p in self.service.config.plugins if p.name == name), None)
        if spec is None or not session:
            return
        try:
            module = spec.location if spec.location_kind == "file" else ""
        except ValueError:
            module = ""
        lab = self.lab_panel
        lab.session_edit.setText(session)
        lab.a_edit.setText(module)
        lab.config_a_edit.setText(spec.plugin_config_json.decode("utf-8", "replace"))
        lab.root_id_edit.setText(spec.plugin_name)
        self.tabs.setCurrentWidget(lab)
        lab.reproduce()

    def _on_composer_panel_send_requested(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        self.service.send_request(method, path, headers, body)

    def _on_composer_panel_request_composed(self, d: dict[str, Any]) -> None:
        """An HTTP/2 request or a gRPC call from the composer."""
        if d.get("protocol") == "gRPC":
            self.service.send_grpc(d["method"], d["message"], d["metadata"], d["deadline_s"])
        else:
            self.service.send_request(
                d["method"], d["path"], d["headers"], d["body"], protocol=d["protocol"]
            )

    def _on_composer_panel_load_requested(self, rps: float, seconds: float) -> None:
        if self.service.generate_traffic(rps, seconds):
            self.composer_panel.show_load_started()
            self._traffic_began(rps)

    def _on_composer_panel_load_stop_requested(self) -> None:
        self.service.stop_traffic()

    # -- drag and drop, close ----------------------------------------------------------------------

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        md = event.mimeData()
        if md.hasUrls() and any(u.isLocalFile() for u in md.urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        files = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        for f in files:
            self.load_plugin_file(f)
        event.acceptProposedAction()

    def closeEvent(self, event: QCloseEvent) -> None:
        self._closing = True
        self.poll_timer.stop()
        self.lag_timer.stop()
        self.save_timer.stop()
        self.save_workspace()
        if self.workspace is not None:
            self.workspace.unlock()
        if not self.service.close(5.0):
            self.statusBar().showMessage("The engine did not stop in time")
        event.accept()
