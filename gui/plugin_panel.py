"""The plugin chain: ``PluginListView`` (effective order, state badges, drag to reorder
within a phase) and ``PluginDetailsPanel`` (state and failure, operator modes, phase and
priority, vmConfig env, and the configuration as a schema form or YAML/JSON text).

Both take plugin snapshots (``host.proxy.snapshots.PluginSnapshot`` values), the
plugin's ``PluginSpec`` and its schema; user actions go out as Qt signals that the main
window turns into engine-service commands. Nothing here talks to the engine.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from PySide6.QtCore import QMimeData, QPoint, Qt, Signal
from PySide6.QtGui import QColor, QDragEnterEvent, QDragMoveEvent, QDropEvent, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSlider,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from gui.config_form import ConfigForm
from gui.config_retry import parse_plugin_config
from gui.json_schema import validate
from host.proxy.config import (
    FAIL_STRATEGIES,
    PHASES,
    EnvVar,
    PluginSpec,
    canary_key,
    is_env_name,
)
from host.proxy.errors import PluginError
from host.proxy.snapshots import PluginSnapshot, PluginState

__all__ = [
    "PLUGIN_MIME",
    "PluginDetailsPanel",
    "PluginListView",
    "plugin_error_lines",
    "plugin_error_text",
    "plugin_kind",
    "state_badge",
]

PLUGIN_MIME = "application/x-wasmdesk-plugin"
_ERR = "#f85149"
CANARY_KEYS = (
    ("random", "random per request"),
    ("client-ip", "client IP (sticky)"),
    ("header", "request header (sticky)"),
)

_BADGE_COLOURS = {
    "running": "#3fb950",
    "log-only": "#d29922",
    "canary": "#58a6ff",
    "failed": "#f85149",
    "reloading": "#f85149",
    "disabled": "#8b949e",
    "starting": "#8b949e",
    "not applied": "#8b949e",
}


def plugin_kind(p: PluginSnapshot) -> str:
    """The kind shown: "TCP" for a ``type: NETWORK`` plugin, else "HTTP"."""
    return "TCP" if p.type == "NETWORK" else "HTTP"


def state_badge(p: PluginSnapshot) -> tuple[str, str]:
    """(text, colour) for a plugin snapshot: running / log-only / canary N% / failed /
    disabled."""
    state = p.state
    if p.mode == "disabled":
        return "disabled", _BADGE_COLOURS["disabled"]
    if state is PluginState.NOT_APPLIED:  # its match leaves out this listener: not a failure
        return state, _BADGE_COLOURS[state]
    if state in (PluginState.FAILED, PluginState.RELOADING):
        text = "failed" if state is PluginState.FAILED else "failed, reloading"
        if state is PluginState.FAILED and p.fail_strategy == "FAIL_OPEN":
            text = "failed, skipped"  # FAIL_OPEN: requests go on without it
        if p.crash_loop:
            text += " (crash loop)"
        return text, _BADGE_COLOURS["failed"]
    pct = float(p.canary_percent)
    parts = []
    if state is PluginState.LOG_ONLY or p.mode == "log-only":
        parts.append("log-only")
    if pct < 100:
        parts.append(f"canary {pct:g}%")
    if not parts:
        return (state or "running"), _BADGE_COLOURS.get(state, "#3fb950")
    colour = _BADGE_COLOURS["log-only" if parts[0] == "log-only" else "canary"]
    return ", ".join(parts), colour


class PluginListView(QTreeWidget):
    """The chain in effective order (phase, then priority), one row per plugin: the HTTP
    plugins, then the TCP (``type: NETWORK``) ones, each numbered in its own chain (a
    network filter never sees an HTTP request, nor an HTTP plugin a TCP connection).

    Dragging a row within its phase (and kind) asks for a new position
    (``plugin_moved``); the rows themselves only change when the engine publishes the
    new order. A ``.wasm`` dropped here is handed on (``files_dropped``)."""

    plugin_selected = Signal(str)  # "" when nothing is selected
    plugin_moved = Signal(str, int)  # name, new 0-based position in its kind's chain
    files_dropped = Signal(list)  # local file paths

    COLUMNS = ("#", "Plugin", "Type", "Phase", "Priority", "State")
    STATE_COLUMN = 5

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("PluginListView")
        self.setColumnCount(len(self.COLUMNS))
        self.setHeaderLabels(list(self.COLUMNS))
        self.setRootIsDecorated(False)
        self.setUniformRowHeights(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setDragEnabled(True)
        self.setAcceptDrops(True)
        self.viewport().setAcceptDrops(True)
        self.setDropIndicatorShown(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragDrop)
        self.setDefaultDropAction(Qt.DropAction.MoveAction)
        self.setToolTip("Drag a plugin within its phase to change its priority")
        self.header().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.header().setStretchLastSection(True)
        self.itemSelectionChanged.connect(self._on_self_item_selection_changed)
        self._plugins: list[PluginSnapshot] = []

    def set_plugins(self, plugins: Sequence[PluginSnapshot]) -> None:
        selected = self.selected_name()
        self.blockSignals(True)
        self.clear()
        # the HTTP chain first, then the TCP one, each in the engine's order
        http = [p for p in plugins if plugin_kind(p) == "HTTP"]
        self._plugins = http + [p for p in plugins if plugin_kind(p) == "TCP"]
        state_col = self.STATE_COLUMN
        for i, p in enumerate(self._plugins):
            text, colour = state_badge(p)
            prio = p.priority
            kind = plugin_kind(p)
            item = QTreeWidgetItem(
                [
                    str(i + 1 if i < len(http) else i + 1 - len(http)),
                    p.name,
                    kind,
                    str(p.phase).replace("UNSPECIFIED_PHASE", "—"),
                    "unset" if prio is None else str(prio),
                    text,
                ]
            )
            if kind == "TCP":
                item.setToolTip(
                    2,
                    "A network (TCP) filter: it runs on the TCP listeners of the Proxy "
                    "document (spec.tcp), per connection, not on HTTP requests",
                )
            item.setData(0, Qt.ItemDataRole.UserRole, p.name)
            item.setFlags(
                Qt.ItemFlag.ItemIsEnabled
                | Qt.ItemFlag.ItemIsSelectable
                | Qt.ItemFlag.ItemIsDragEnabled
            )
            item.setForeground(state_col, QColor(colour))
            bold = QFont()
            bold.setBold(True)
            item.setFont(state_col, bold)
            f = p.failure
            if f is not None:
                item.setToolTip(state_col, f"{f.kind}: {f.message}")
            self.addTopLevelItem(item)
            if p.name == selected:
                item.setSelected(True)
                self.setCurrentItem(item)
        self.blockSignals(False)
        if selected and self.selected_name() != selected:
            self.plugin_selected.emit("")

    def names(self) -> list[str]:
        return [p.name for p in self._plugins]

    def badges(self) -> dict[str, str]:
        return {
            str(self.topLevelItem(i).text(1)): self.topLevelItem(i).text(self.STATE_COLUMN)
            for i in range(self.topLevelItemCount())
        }

    def selected_name(self) -> str:
        items = self.selectedItems()
        return str(items[0].data(0, Qt.ItemDataRole.UserRole)) if items else ""

    def select(self, name: str) -> None:
        for i in range(self.topLevelItemCount()):
            item = self.topLevelItem(i)
            if item.data(0, Qt.ItemDataRole.UserRole) == name:
                self.setCurrentItem(item)
                return

    def plugin(self, name: str) -> PluginSnapshot | None:
        return next((p for p in self._plugins if p.name == name), None)

    def kinds(self) -> dict[str, str]:
        """Each plugin's kind as shown: "HTTP" or "TCP"."""
        return {p.name: plugin_kind(p) for p in self._plugins}

    def names_of_kind(self, kind: str) -> list[str]:
        return [p.name for p in self._plugins if plugin_kind(p) == kind]

    def chain_index(self, name: str) -> int:
        """``name``'s 0-based position in its own kind's chain (HTTP or TCP)."""
        p = self.plugin(name)
        return self.names_of_kind(plugin_kind(p)).index(name) if p is not None else -1

    def row_center(self, name: str) -> QPoint:
        """Where a row is drawn (viewport coordinates), for drops and tests."""
        i = self.names().index(name)
        return self.visualItemRect(self.topLevelItem(i)).center()

    def _on_self_item_selection_changed(self) -> None:
        self.plugin_selected.emit(self.selected_name())

    # -- drag to reorder ---------------------------------------------------------------------

    def mimeTypes(self) -> list[str]:
        return [PLUGIN_MIME, "text/uri-list"]

    def mimeData(self, items: Sequence[QTreeWidgetItem]) -> QMimeData:
        md = QMimeData()
        if items:
            md.setData(PLUGIN_MIME, str(items[0].data(0, Qt.ItemDataRole.UserRole)).encode())
        return md

    def drop_position(self, pos: QPoint, moving: str) -> int:
        """The chain position (after taking ``moving`` out) a drop at ``pos`` means."""
        names = self.names()
        item = self.itemAt(pos)
        if item is None:
            target = len(names)
        else:
            row = self.indexOfTopLevelItem(item)
            rect = self.visualItemRect(item)
            target = row if pos.y() < rect.center().y() else row + 1
        if moving in names and names.index(moving) < target:
            target -= 1
        return target

    def _phase_allows(self, moving: str, target: int) -> bool:
        p = self.plugin(moving)
        if p is None:
            return False
        rest = [q for q in self._plugins if q.name != moving]
        before = rest[target - 1] if target > 0 else None
        after = rest[target] if target < len(rest) else None
        kind = plugin_kind(p)
        return any(
            q is not None and q.phase == p.phase and plugin_kind(q) == kind
            for q in (before, after)
        ) or (self.names().index(moving) == target)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        md = event.mimeData()
        if md.hasFormat(PLUGIN_MIME) or md.hasUrls():
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        md = event.mimeData()
        if md.hasUrls():
            event.acceptProposedAction()
            return
        if not md.hasFormat(PLUGIN_MIME):
            event.ignore()
            return
        super().dragMoveEvent(event)  # draws the drop indicator
        name = bytes(md.data(PLUGIN_MIME).data()).decode()
        if self._phase_allows(name, self.drop_position(event.position().toPoint(), name)):
            event.acceptProposedAction()
        else:
            event.ignore()  # the forbidden cursor: another phase

    def dropEvent(self, event: QDropEvent) -> None:
        md = event.mimeData()
        if md.hasUrls():
            files = [u.toLocalFile() for u in md.urls() if u.isLocalFile()]
            event.acceptProposedAction()
            if files:
                self.files_dropped.emit(files)
            return
        if not md.hasFormat(PLUGIN_MIME):
            event.ignore()
            return
        name = bytes(md.data(PLUGIN_MIME).data()).decode()
        target = self.drop_position(event.position().toPoint(), name)
        # never let Qt move the rows itself: the engine's order is the truth
        event.setDropAction(Qt.DropAction.IgnoreAction)
        event.accept()
        if name in self.names() and self.names().index(name) != target:
            p = self.plugin(name)
            assert p is not None
            # the position in its own kind's chain: count the rows of that kind above it
            rest = [q for q in self._plugins if q.name != name]
            kind = plugin_kind(p)
            self.plugin_moved.emit(name, sum(1 for q in rest[:target] if plugin_kind(q) == kind))


def plugin_summary(p: PluginSnapshot) -> list[tuple[str, str]]:
    """The Overview's facts about a plugin snapshot, as (label, value) rows: ABI, SDK,
    root id, memory, invocations, traps, time per request and its other counters."""
    counters = dict(p.counters)
    per_req = p.time_per_request_us
    rows = [
        ("Type", "TCP (network filter)" if plugin_kind(p) == "TCP" else "HTTP"),
        ("ABI", str(p.abi or "?")),
        ("SDK", p.sdk or "unknown"),
        ("Root id", repr(p.root_id)),
        ("Memory", f"{p.vm_memory_bytes / 1024:.0f} KiB"),
        ("Invocations", str(counters.pop("invocations", 0))),
        ("Traps", str(counters.pop("traps", 0))),
        (
            "Time per request",
            f"{float(per_req):.1f} µs of CPU" if per_req is not None else "no request yet",
        ),
    ]
    rows.extend((k, str(v)) for k, v in sorted(counters.items()))
    return rows


def plugin_summary_html(p: PluginSnapshot) -> str:
    cells = "".join(
        f"<tr><td style='color:#8b949e;padding-right:10px'>{_esc(k)}</td><td>{_esc(v)}</td></tr>"
        for k, v in plugin_summary(p)
    )
    return f"<table>{cells}</table>"


def _request_line(req: Mapping[str, Any]) -> str:
    headers = {str(k): str(v) for k, v in (req.get("headers") or [])}
    method = req.get("method") or headers.get(":method", "")
    path = req.get("path") or headers.get(":path", "")
    out = " ".join(x for x in (method, path) if x) or "a request"
    extra = [f"request id {req['request_id']}"] if req.get("request_id") else []
    if req.get("client"):
        extra.append(f"from {req['client']}")
    return out + (f" ({', '.join(extra)})" if extra else "")


def _failure_text(p: PluginSnapshot) -> str:
    f = p.failure
    if f is None:
        if p.not_applied:
            return f"not applied on this listener: {p.not_applied}"
        return "\n".join(plugin_error_lines(p.error)) if p.error is not None else ""
    lines = [f"{f.kind or '?'}: {f.message}"]
    if f.state:
        lines.append(f"state: {f.state}")
    if f.callback:
        lines.append(f"in callback: {f.callback}")
    if f.backtrace:
        lines.append("backtrace:")
        lines.extend(f"  {b}" for b in f.backtrace)
    req = f.request
    if req:
        lines.append("triggered by: " + _request_line(req))
        for k, v in req.get("headers") or []:
            lines.append(f"  {k}: {v}")
    elif f.kind != "load_failed":
        lines.append("triggered outside a request (start-up, a tick or a callout response)")
    # a load failure's message is its error; a later error (a refused new version) is not
    if p.error is not None and f.message != p.error.text:
        lines.append("last error: " + "\n".join(plugin_error_lines(p.error)))
    return "\n".join(lines)


def _error_head(err: PluginError) -> str:
    head = f"{err.kind} failed: {err.message}"
    return head + (f" ({err.state}, {err.reason})" if err.state else "")


def plugin_error_lines(err: PluginError) -> list[str]:
    """A plugin error for display, from its fields: what failed and why, then the log
    lines the plugin wrote while it failed."""
    lines = [_error_head(err)]
    if err.log:
        lines.append("The plugin's log:")
        lines.extend(f"  {line}" for line in err.log)
    return lines


def plugin_error_text(err: PluginError) -> str:
    """``plugin_error_lines`` as text, after the plugin's name."""
    return f"{err.plugin}: " + "\n".join(plugin_error_lines(err))


class PluginDetailsPanel(QWidget):
    """The selected plugin: state and failure, operator modes, order, vmConfig env, and
    its configuration (a form when the plugin ships a schema, else YAML/JSON text)."""

    mode_changed = Signal(str, dict)  # name, set_plugin_mode keyword arguments
    order_changed = Signal(str, str, object)  # name, phase, priority (int or None)
    config_edited = Signal(str, dict)  # name, new pluginConfig
    env_edited = Signal(str, list)  # name, [(name, valueFrom, value)]
    remove_requested = Signal(str)
    reload_requested = Signal(str)
    logs_requested = Signal(str)  # show this plugin's log lines
    reproduce_requested = Signal(str, str)  # name, crash session (the lab replays it)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("PluginDetailsPanel")
        self._name = ""
        self._updating = False
        self._schema: Mapping[str, Any] | None = None
        self._env_shown: tuple[Any, ...] | None = None
        self._env_dirty = False
        self.form: ConfigForm | None = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        self.title_label = QLabel("No plugin selected")
        self.title_label.setObjectName("plugin_title")
        f = self.title_label.font()
        f.setBold(True)
        f.setPointSize(f.pointSize() + 1)
        self.title_label.setFont(f)
        lay.addWidget(self.title_label)
        self.state_label = QLabel("")
        self.state_label.setWordWrap(True)
        self.state_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.state_label)
        self.sections = QTabWidget()
        self.sections.setObjectName("plugin_sections")
        lay.addWidget(self.sections, 1)
        self.sections.addTab(self._build_overview(), "Overview")
        self.sections.addTab(self._build_config(), "Configuration")
        self.sections.addTab(self._build_env(), "vmConfig env")
        buttons = QHBoxLayout()
        self.reload_button = QPushButton("Reload")
        self.reload_button.setToolTip("Start a fresh VM from the module (clears a failure)")
        self.logs_button = QPushButton("Logs")
        self.logs_button.setToolTip("Show this plugin's log lines")
        self.remove_button = QPushButton("Remove")
        self.reproduce_button = QPushButton("Reproduce")
        self.reproduce_button.setToolTip(
            "Replay the requests that led to the failure through the module (Lab tab)"
        )
        self._session = ""
        buttons.addWidget(self.reload_button)
        buttons.addWidget(self.reproduce_button)
        buttons.addWidget(self.logs_button)
        buttons.addStretch(1)
        buttons.addWidget(self.remove_button)
        lay.addLayout(buttons)
        self.reload_button.clicked.connect(lambda: self.reload_requested.emit(self._name))
        self.remove_button.clicked.connect(lambda: self.remove_requested.emit(self._name))
        self.logs_button.clicked.connect(lambda: self.logs_requested.emit(self._name))
        self.reproduce_button.clicked.connect(
            lambda: self.reproduce_requested.emit(self._name, self._session)
        )
        self.show_plugin(None, None)

    # -- building -----------------------------------------------------------------------------

    def _build_overview(self) -> QWidget:
        page = QWidget()
        lay = QVBoxLayout(page)
        lay.setContentsMargins(2, 2, 2, 2)
        self.failure_text = QPlainTextEdit()
        self.failure_text.setObjectName("failure_text")
        self.failure_text.setReadOnly(True)
        self.failure_text.setMaximumHeight(130)
        self.failure_text.setPlaceholderText("No failure")
        mono = QFont("monospace")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        self.failure_text.setFont(mono)
        self.summary_label = QLabel("")
        self.summary_label.setObjectName("plugin_summary")
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.summary_label.setWordWrap(True)
        lay.addWidget(self.summary_label)
        lay.addWidget(self.failure_text)

        modes = QGroupBox("Modes")
        form = QFormLayout(modes)
        self.enabled_check = QCheckBox("Enabled")
        self.log_only_check = QCheckBox("Log-only (record what it would do, change nothing)")
        form.addRow(self.enabled_check)
        form.addRow(self.log_only_check)
        canary_row = QHBoxLayout()
        self.canary_slider = QSlider(Qt.Orientation.Horizontal)
        self.canary_slider.setRange(0, 100)
        self.canary_slider.setTracking(False)  # apply on release, not on every pixel
        self.canary_slider.setPageStep(10)
        self.canary_label = QLabel("100%")
        self.canary_label.setMinimumWidth(40)
        self.canary_label.hide()  # the number field says it (kept for older callers)
        # an exact number beside the slider (a drag lands on 23% when 25% was meant)
        self.canary_spin = QSpinBox()
        self.canary_spin.setObjectName("canary_spin")
        self.canary_spin.setRange(0, 100)
        self.canary_spin.setSuffix(" %")
        self.canary_spin.setKeyboardTracking(False)  # apply on Enter / focus out
        canary_row.addWidget(self.canary_slider)
        canary_row.addWidget(self.canary_spin)
        canary_row.addWidget(self.canary_label)
        form.addRow("Canary", canary_row)
        key_row = QHBoxLayout()
        self.canary_key_combo = QComboBox()
        for key, label in CANARY_KEYS:
            self.canary_key_combo.addItem(label, key)
        self.canary_header_edit = QLineEdit()
        self.canary_header_edit.setPlaceholderText("header name, e.g. x-user-id")
        key_row.addWidget(self.canary_key_combo)
        key_row.addWidget(self.canary_header_edit, 1)
        form.addRow("Canary key", key_row)
        self.canary_key_error = QLabel("")
        self.canary_key_error.setStyleSheet(f"color:{_ERR}")
        self.canary_key_error.hide()
        form.addRow(self.canary_key_error)
        self.fail_combo = QComboBox()
        self.fail_combo.addItems(list(FAIL_STRATEGIES))
        self.fail_combo.setToolTip(
            "What a request gets once the plugin failed: FAIL_CLOSE answers 503, FAIL_OPEN "
            "skips the plugin, FAIL_RELOAD starts a fresh VM (503 meanwhile)"
        )
        form.addRow("Failure policy", self.fail_combo)
        self.phase_combo = QComboBox()
        self.phase_combo.addItems(list(PHASES))
        form.addRow("Phase", self.phase_combo)
        prio_row = QHBoxLayout()
        self.priority_check = QCheckBox("set")
        self.priority_spin = QSpinBox()
        self.priority_spin.setRange(-(2**31), 2**31 - 1)
        prio_row.addWidget(self.priority_check)
        prio_row.addWidget(self.priority_spin, 1)
        form.addRow("Priority", prio_row)
        self.order_apply_button = QPushButton("Apply phase/priority")
        form.addRow(self.order_apply_button)
        lay.addWidget(modes)
        lay.addStretch(1)

        self.enabled_check.toggled.connect(self._on_enabled_check_toggled)
        self.log_only_check.toggled.connect(self._on_log_only_check_toggled)
        self.canary_slider.valueChanged.connect(self._on_canary_slider_value_changed)
        self.canary_slider.sliderMoved.connect(self._on_canary_slider_moved)
        self.canary_spin.valueChanged.connect(self._on_canary_spin_value_changed)
        self.canary_key_combo.activated.connect(self._on_canary_key_combo_activated)
        self.canary_header_edit.editingFinished.connect(self._on_canary_header_edit_finished)
        self.fail_combo.activated.connect(self._on_fail_combo_activated)
        self.order_apply_button.clicked.connect(self._on_order_apply_button_clicked)
        return page

    def _build_config(self) -> QWidget:
        page = QWidget()
        lay = QVBoxLayout(page)
        lay.setContentsMargins(2, 2, 2, 2)
        self.config_tabs = QTabWidget()
        self.config_tabs.setObjectName("config_tabs")
        self.form_scroll = QScrollArea()
        self.form_scroll.setWidgetResizable(True)
        self.form_note = QLabel("")
        self.form_note.setWordWrap(True)
        self.form_note.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.form_scroll.setWidget(self.form_note)
        self.config_edit = QPlainTextEdit()
        self.config_edit.setObjectName("config_edit")
        mono = QFont("monospace")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        self.config_edit.setFont(mono)
        self.config_edit.setPlaceholderText("{}  (YAML or JSON; empty means no configuration)")
        self.config_tabs.addTab(self.form_scroll, "Form")
        self.config_tabs.addTab(self.config_edit, "YAML / JSON")
        lay.addWidget(self.config_tabs, 1)
        self.config_status = QLabel("")
        self.config_status.setObjectName("config_status")
        self.config_status.setWordWrap(True)
        self.config_status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.config_status)
        self.config_apply_button = QPushButton("Apply configuration")
        self.config_apply_button.setToolTip(
            "Reconfigure the plugin live; if it rejects the configuration, the running "
            "version is kept"
        )
        lay.addWidget(self.config_apply_button)
        self.config_apply_button.clicked.connect(self._on_config_apply_button_clicked)
        self.config_edit.textChanged.connect(self._on_config_edit_text_changed)
        self.config_tabs.currentChanged.connect(self._on_config_tabs_current_changed)
        return page

    def _build_env(self) -> QWidget:
        page = QWidget()
        lay = QVBoxLayout(page)
        lay.setContentsMargins(2, 2, 2, 2)
        intro = QLabel(
            "Environment variables the module reads with WASI <code>environ_get</code> "
            "(Istio <code>vmConfig.env</code>). INLINE takes the value given; HOST passes "
            "the variable of the Wasmdesk process. Applying restarts the plugin's VM."
        )
        intro.setWordWrap(True)
        lay.addWidget(intro)
        self.env_table = QTableWidget(0, 3)
        self.env_table.setObjectName("env_table")
        self.env_table.setHorizontalHeaderLabels(["Name", "valueFrom", "Value"])
        self.env_table.horizontalHeader().setStretchLastSection(True)
        self.env_table.verticalHeader().setVisible(False)
        lay.addWidget(self.env_table, 1)
        row = QHBoxLayout()
        self.env_add_button = QPushButton("Add")
        self.env_remove_button = QPushButton("Remove")
        self.env_apply_button = QPushButton("Apply env")
        row.addWidget(self.env_add_button)
        row.addWidget(self.env_remove_button)
        row.addStretch(1)
        row.addWidget(self.env_apply_button)
        lay.addLayout(row)
        self.env_status = QLabel("")
        self.env_status.setObjectName("env_status")
        self.env_status.setWordWrap(True)
        self.env_status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.env_status)
        self.env_add_button.clicked.connect(self._on_env_add_button_clicked)
        self.env_remove_button.clicked.connect(self._on_env_remove_button_clicked)
        self.env_apply_button.clicked.connect(self._on_env_apply_button_clicked)
        self.env_table.itemChanged.connect(self._on_env_table_item_changed)
        return page

    @property
    def name(self) -> str:
        return self._name

    # -- showing a plugin ----------------------------------------------------------------------

    def show_plugin(
        self,
        p: PluginSnapshot | None,
        spec: PluginSpec | None,
        schema: Mapping[str, Any] | None = None,
        schema_note: str = "",
    ) -> None:
        """Show a plugin snapshot with its spec (config, env) and configuration schema
        (None: the YAML editor only; ``schema_note`` says why); None clears."""
        self._updating = True
        try:
            new_name = p.name if p is not None else ""
            same = new_name == self._name
            self._name = new_name
            if not same or p is None:
                for w in self.findChildren(QWidget):
                    w.setEnabled(p is not None)
            if p is None:
                self.title_label.setText("No plugin selected")
                self.state_label.setText("Select a plugin, or load a .wasm file.")
                self.failure_text.setPlainText("")
                self.config_edit.setPlainText("")
                self._set_schema(None, "")
                self._show_env(())
                return
            self.title_label.setEnabled(True)
            badge, colour = state_badge(p)
            tcp = plugin_kind(p) == "TCP"
            self.title_label.setText(
                f"{p.name}  ({p.root_id or 'no root id'})"
                + ("  · TCP (network filter)" if tcp else "")
            )
            self.state_label.setText(
                f"<span style='color:{colour}'><b>{badge}</b></span> · ABI {p.abi or '?'} "
                f"· {p.vm_memory_bytes // 1024} KiB · "
                f"{p.counters.get('invocations', 0)} invocations"
            )
            self.failure_text.setPlainText(_failure_text(p))
            self._session = (p.failure.session if p.failure is not None else None) or ""
            self.reproduce_button.setEnabled(bool(self._session))
            self.summary_label.setText(plugin_summary_html(p))
            self.enabled_check.setChecked(p.mode != "disabled")
            self.log_only_check.setChecked(p.mode == "log-only")
            pct = float(p.canary_percent)
            if not self.canary_slider.isSliderDown():
                self.canary_slider.setValue(round(pct))
            if not self.canary_spin.hasFocus():
                self.canary_spin.blockSignals(True)
                self.canary_spin.setValue(round(pct))
                self.canary_spin.blockSignals(False)
            self.canary_label.setText(f"{pct:g}%")
            self._show_canary_key(p.canary_key)
            # a TCP connection has no request header to key a canary on
            header_item = self.canary_key_combo.model().item(
                self.canary_key_combo.findData("header")
            )
            header_item.setEnabled(not tcp)
            self.fail_combo.setCurrentText(p.fail_strategy)
            if not same:
                self.phase_combo.setCurrentText(p.phase)
                prio = p.priority
                self.priority_check.setChecked(prio is not None)
                self.priority_spin.setValue(int(prio or 0))
                config = dict(spec.plugin_config) if spec is not None else {}
                self.config_edit.setPlainText(
                    yaml.safe_dump(config, sort_keys=False, allow_unicode=True) if config else ""
                )
                self._set_schema(schema, schema_note)
                if self.form is not None:
                    self.form.set_value(config)
                self.config_status.setText("")
                self._env_dirty = False
            if (
                spec is not None
                and not self._env_dirty
                and self._env_shown != (spec.env, spec.vm_env)
            ):
                self._show_env(spec.env, spec.vm_env)
        finally:
            self._updating = False

    def _show_canary_key(self, key: str) -> None:
        kind = "header" if key.startswith("header:") else key
        i = self.canary_key_combo.findData(kind)
        self.canary_key_combo.setCurrentIndex(max(0, i))
        if kind == "header" and not self.canary_header_edit.hasFocus():
            self.canary_header_edit.setText(key[len("header:") :])
        self.canary_header_edit.setEnabled(kind == "header")

    def _set_schema(self, schema: Mapping[str, Any] | None, note: str) -> None:
        self._schema = schema
        old = self.form
        if schema is not None:
            self.form = ConfigForm(schema)
            self.form.value_edited.connect(self._on_form_value_edited)
            self.form_scroll.takeWidget()
            self.form_scroll.setWidget(self.form)
            self.config_tabs.setTabEnabled(0, True)
            self.config_tabs.setCurrentIndex(0)
        else:
            self.form = None
            self.form_scroll.takeWidget()
            self.form_note = QLabel(note or "This plugin has no configuration schema.")
            self.form_note.setWordWrap(True)
            self.form_note.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
            self.form_scroll.setWidget(self.form_note)
            self.config_tabs.setTabEnabled(0, False)
            self.config_tabs.setCurrentIndex(1)
        self.config_tabs.setTabToolTip(0, note)
        if old is not None:
            old.deleteLater()

    @property
    def schema(self) -> Mapping[str, Any] | None:
        return self._schema

    # -- configuration ---------------------------------------------------------------------------

    def parse_config_text(self) -> dict[str, Any]:
        """The editor's text as a pluginConfig mapping; raises ValueError with a message
        that says where the problem is."""
        return parse_plugin_config(self.config_edit.toPlainText())

    def form_active(self) -> bool:
        return self.form is not None and self.config_tabs.currentIndex() == 0

    def current_config(self) -> dict[str, Any]:
        """What Apply would send; raises ValueError listing what is wrong (syntax, or
        the schema's rules when the plugin ships one)."""
        if self.form_active():
            assert self.form is not None
            issues = self.form.issues()
            if issues:
                raise ValueError("; ".join(str(i) for i in issues))
            return self.form.value()
        value = self.parse_config_text()
        if self._schema is not None:
            issues = validate(self._schema, value)
            if issues:
                raise ValueError("; ".join(str(i) for i in issues))
        return value

    def _set_status(self, ok: bool, text: str) -> None:
        colour = "#3fb950" if ok else _ERR
        self.config_status.setText(f"<span style='color:{colour}'>{_esc(text)}</span>")

    def _check_config(self) -> None:
        if self._updating:
            return
        try:
            self.current_config()
        except ValueError as e:
            self._set_status(False, str(e))
            self.config_apply_button.setEnabled(False)
        else:
            what = "Valid" if self._schema is not None else "Syntax OK"
            self.config_status.setText(what)
            self.config_apply_button.setEnabled(bool(self._name))

    def _on_config_edit_text_changed(self) -> None:
        if not self.form_active():
            self._check_config()

    def _on_form_value_edited(self) -> None:
        self._check_config()

    def _on_config_tabs_current_changed(self, index: int) -> None:
        if self._updating or self.form is None:
            return
        if index == 1:  # form → text
            value = self.form.value()
            self._updating = True
            try:
                self.config_edit.setPlainText(
                    yaml.safe_dump(value, sort_keys=False, allow_unicode=True) if value else ""
                )
            finally:
                self._updating = False
        else:  # text → form (what does not fit shows in the form's banner)
            try:
                value = self.parse_config_text()
            except ValueError as e:
                self._set_status(
                    False, f"The YAML / JSON text does not parse, the form keeps its values: {e}"
                )
                return
            self.form.set_value(value)
        self._check_config()

    def _on_config_apply_button_clicked(self) -> None:
        try:
            value = self.current_config()
        except ValueError as e:
            self._set_status(False, str(e))
            return
        if self._name:
            self.config_status.setText("Applying…")
            self.config_edited.emit(self._name, value)

    def set_config_result(self, errors: Sequence[PluginError]) -> None:
        mine = [e for e in errors if e.plugin == self._name] if self._name else []
        if mine:
            parts = ["<span style='color:#f85149'><b>Rejected; the running version is kept.</b>"]
            for e in mine:
                parts.append("<br>" + _esc(_error_head(e)))
                if e.log:
                    parts.append("<br>The plugin's log:")
                    parts.extend(f"<br>&nbsp;&nbsp;{_esc(line)}" for line in e.log)
            parts.append("</span>")
            self.config_status.setText("".join(parts))
        elif self.config_status.text() == "Applying…":
            self.config_status.setText("Applied")

    def config_status_text(self) -> str:
        """The status line as plain text (for tests and copying)."""
        return re.sub(r"<[^>]+>", "\n", self.config_status.text()).replace("&nbsp;", " ")

    # -- vmConfig env ------------------------------------------------------------------------------

    def _show_env(self, env: Sequence[Any], resolved: Sequence[Any] = ()) -> None:
        self._env_shown = (tuple(env), tuple(resolved))
        t = self.env_table
        t.blockSignals(True)
        t.setRowCount(0)
        for e in env:
            self._add_env_row(str(e[0]), str(e[1]), str(e[2]))
        t.blockSignals(False)
        seen = ", ".join(f"{k}={v}" for k, v in resolved) or "nothing"
        missing = [str(e[0]) for e in env if e[1] == "HOST" and e[0] not in dict(resolved)]
        text = f"The module sees: {seen}"
        if missing:
            text += f" (not set in this process: {', '.join(missing)})"
        self.env_status.setText(_esc(text))
        self._env_dirty = False

    def _add_env_row(self, name: str, source: str, value: str) -> None:
        t = self.env_table
        r = t.rowCount()
        t.insertRow(r)
        t.setItem(r, 0, QTableWidgetItem(name))
        combo = QComboBox()
        combo.addItems(["INLINE", "HOST"])
        combo.setCurrentText(source if source in ("INLINE", "HOST") else "INLINE")
        combo.currentTextChanged.connect(lambda _t: self._on_env_table_item_changed(None))
        t.setCellWidget(r, 1, combo)
        t.setItem(r, 2, QTableWidgetItem(value))

    def env_entries(self) -> list[tuple[str, str, str]]:
        out = []
        t = self.env_table
        for r in range(t.rowCount()):
            name = (t.item(r, 0).text() if t.item(r, 0) else "").strip()
            combo = t.cellWidget(r, 1)
            source = combo.currentText() if isinstance(combo, QComboBox) else "INLINE"
            value = t.item(r, 2).text() if t.item(r, 2) else ""
            out.append((name, source, value if source == "INLINE" else ""))
        return out

    def env_problems(self) -> list[str]:
        problems = []
        seen: set[str] = set()
        for i, (name, _source, value) in enumerate(self.env_entries(), 1):
            if not is_env_name(name):
                problems.append(f"row {i}: {name!r} is not a valid variable name (A-Z, 0-9, _)")
            elif name in seen:
                problems.append(f"row {i}: {name} is listed twice")
            seen.add(name)
            if len(value) > 2048:
                problems.append(f"row {i}: the value is longer than 2048 characters")
        return problems

    def _on_env_table_item_changed(self, _item: QTableWidgetItem | None) -> None:
        if self._updating:
            return
        self._env_dirty = True
        problems = self.env_problems()
        self.env_apply_button.setEnabled(not problems and bool(self._name))
        if problems:
            self.env_status.setText(
                f"<span style='color:{_ERR}'>{_esc('; '.join(problems))}</span>"
            )
        else:
            self.env_status.setText("Not applied yet")

    def _on_env_add_button_clicked(self) -> None:
        self._add_env_row("", "INLINE", "")
        r = self.env_table.rowCount() - 1
        self.env_table.setCurrentCell(r, 0)
        self._on_env_table_item_changed(None)
        self.env_table.editItem(self.env_table.item(r, 0))

    def _on_env_remove_button_clicked(self) -> None:
        r = self.env_table.currentRow()
        if r < 0:
            r = self.env_table.rowCount() - 1
        if r >= 0:
            self.env_table.removeRow(r)
            self._on_env_table_item_changed(None)

    def _on_env_apply_button_clicked(self) -> None:
        problems = self.env_problems()
        if problems:
            self.env_status.setText(
                f"<span style='color:{_ERR}'>{_esc('; '.join(problems))}</span>"
            )
            return
        if self._name:
            self.env_status.setText("Applying…")
            self.env_edited.emit(self._name, self.env_entries())

    def set_env_result(self, error: str) -> None:
        """What became of an env change: "" applied (the table follows the spec again)."""
        if error:
            self.env_status.setText(
                f"<span style='color:{_ERR}'>Not applied, the running version is kept: "
                f"{_esc(error)}</span>"
            )
        else:
            self._env_dirty = False
            self._env_shown = None  # the next show_plugin redraws from the new spec

    # -- modes -------------------------------------------------------------------------------------

    def _emit_mode(self, **kw: Any) -> None:
        if not self._updating and self._name:
            self.mode_changed.emit(self._name, kw)

    def _on_enabled_check_toggled(self, on: bool) -> None:
        mode = ("log-only" if self.log_only_check.isChecked() else "enforce") if on else "disabled"
        self._emit_mode(mode=mode)

    def _on_log_only_check_toggled(self, on: bool) -> None:
        if not self.enabled_check.isChecked():
            return  # stays disabled; the choice applies when re-enabled
        self._emit_mode(mode="log-only" if on else "enforce")

    def _on_canary_slider_moved(self, value: int) -> None:
        self.canary_label.setText(f"{value}%")
        self.canary_spin.blockSignals(True)
        self.canary_spin.setValue(value)
        self.canary_spin.blockSignals(False)

    def _on_canary_spin_value_changed(self, value: int) -> None:
        if self._updating:
            return
        self.canary_slider.blockSignals(True)
        self.canary_slider.setValue(value)
        self.canary_slider.blockSignals(False)
        self.canary_label.setText(f"{value}%")
        self._emit_mode(canary_percent=float(value))

    def _on_canary_slider_value_changed(self, value: int) -> None:
        self.canary_label.setText(f"{value}%")
        self.canary_spin.blockSignals(True)
        self.canary_spin.setValue(value)
        self.canary_spin.blockSignals(False)
        self._emit_mode(canary_percent=float(value))

    def canary_key(self) -> str | None:
        """The key the controls describe; None (and an inline message) when the header
        name is not a valid header name."""
        kind = str(self.canary_key_combo.currentData())
        self.canary_header_edit.setEnabled(kind == "header")
        if kind != "header":
            self.canary_key_error.hide()
            return kind
        header = self.canary_header_edit.text().strip().lower()
        if canary_key(f"header:{header}") is None:
            self.canary_key_error.setText(
                "Type the request header whose value decides (e.g. x-user-id)"
                if not header
                else f"{header!r} is not a valid header name"
            )
            self.canary_key_error.show()
            return None
        self.canary_key_error.hide()
        return f"header:{header}"

    def _on_canary_key_combo_activated(self, _index: int) -> None:
        key = self.canary_key()
        if key is not None:
            self._emit_mode(canary_key=key)
        elif self.canary_header_edit.isEnabled():
            self.canary_header_edit.setFocus()

    def _on_canary_header_edit_finished(self) -> None:
        key = self.canary_key()
        if key is not None:
            self._emit_mode(canary_key=key)

    def _on_fail_combo_activated(self, _index: int) -> None:
        self._emit_mode(fail_strategy=self.fail_combo.currentText())

    def _on_order_apply_button_clicked(self) -> None:
        if self._name:
            prio = self.priority_spin.value() if self.priority_check.isChecked() else None
            self.order_changed.emit(self._name, self.phase_combo.currentText(), prio)


def _esc(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", "<br>")
    )


def env_vars(entries: Sequence[tuple[str, str, str]]) -> tuple[EnvVar, ...]:
    return tuple(EnvVar(n, s, v) for n, s, v in entries)
