"""The plugin chain: ``PluginListView`` (effective order and state badges) and
``PluginDetailsPanel`` (state, failure details, modes, phase/priority, config text).

Both take plain plugin snapshots (dicts from ``EngineService.plugins_changed``) and the
effective ``ProxyConfig``; user actions go out as Qt signals that the main window turns
into engine-service commands. Nothing here talks to the engine.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSlider,
    QSpinBox,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from host.proxy.config import FAIL_STRATEGIES, PHASES, PluginSpec

__all__ = ["PluginDetailsPanel", "PluginListView", "state_badge"]

_BADGE_COLOURS = {
    "running": "#3fb950",
    "log-only": "#d29922",
    "canary": "#58a6ff",
    "failed": "#f85149",
    "reloading": "#f85149",
    "disabled": "#8b949e",
    "starting": "#8b949e",
}


def state_badge(p: Mapping[str, Any]) -> tuple[str, str]:
    """(text, colour) for a plugin snapshot: running / log-only / canary N% / failed /
    disabled."""
    state = str(p.get("state", ""))
    if p.get("mode") == "disabled":
        return "disabled", _BADGE_COLOURS["disabled"]
    if state in ("failed", "reloading"):
        text = "failed" if state == "failed" else "failed, reloading"
        if p.get("crash_loop"):
            text += " (crash loop)"
        return text, _BADGE_COLOURS["failed"]
    pct = float(p.get("canary_percent", 100.0))
    parts = []
    if state == "log-only" or p.get("mode") == "log-only":
        parts.append("log-only")
    if pct < 100:
        parts.append(f"canary {pct:g}%")
    if not parts:
        return (state or "running"), _BADGE_COLOURS.get(state, "#3fb950")
    colour = _BADGE_COLOURS["log-only" if parts[0] == "log-only" else "canary"]
    return ", ".join(parts), colour


class PluginListView(QTreeWidget):
    """The chain in effective order (phase, then priority), one row per plugin."""

    plugin_selected = Signal(str)  # "" when nothing is selected

    COLUMNS = ("#", "Plugin", "Phase", "Priority", "State")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("PluginListView")
        self.setColumnCount(len(self.COLUMNS))
        self.setHeaderLabels(list(self.COLUMNS))
        self.setRootIsDecorated(False)
        self.setUniformRowHeights(True)
        self.setAcceptDrops(False)  # the main window takes file drops
        self.header().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.header().setStretchLastSection(True)
        self.itemSelectionChanged.connect(self._on_self_item_selection_changed)
        self._plugins: list[dict[str, Any]] = []

    def set_plugins(self, plugins: Sequence[Mapping[str, Any]]) -> None:
        selected = self.selected_name()
        self.blockSignals(True)
        self.clear()
        self._plugins = [dict(p) for p in plugins]
        for pos, p in enumerate(self._plugins, 1):
            text, colour = state_badge(p)
            prio = p.get("priority")
            item = QTreeWidgetItem(
                [
                    str(pos),
                    str(p["name"]),
                    str(p.get("phase", "")).replace("UNSPECIFIED_PHASE", "—"),
                    "unset" if prio is None else str(prio),
                    text,
                ]
            )
            item.setData(0, Qt.ItemDataRole.UserRole, p["name"])
            item.setForeground(4, QColor(colour))
            bold = QFont()
            bold.setBold(True)
            item.setFont(4, bold)
            if p.get("failure"):
                f = p["failure"]
                item.setToolTip(4, f"{f.get('kind', '')}: {f.get('message', '')}")
            self.addTopLevelItem(item)
            if p["name"] == selected:
                item.setSelected(True)
                self.setCurrentItem(item)
        self.blockSignals(False)
        if selected and self.selected_name() != selected:
            self.plugin_selected.emit("")

    def names(self) -> list[str]:
        return [str(p["name"]) for p in self._plugins]

    def badges(self) -> dict[str, str]:
        return {
            str(self.topLevelItem(i).text(1)): self.topLevelItem(i).text(4)
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

    def plugin(self, name: str) -> dict[str, Any] | None:
        return next((p for p in self._plugins if p["name"] == name), None)

    def _on_self_item_selection_changed(self) -> None:
        self.plugin_selected.emit(self.selected_name())


def _failure_text(p: Mapping[str, Any]) -> str:
    f = p.get("failure")
    if not f:
        return p.get("last_error") or ""
    lines = [f"{f.get('kind', '?')}: {f.get('message', '')}"]
    if f.get("state"):
        lines.append(f"state: {f['state']}")
    bt = f.get("backtrace")
    if bt:
        lines.append("backtrace:")
        lines.extend(f"  {b}" for b in (bt if isinstance(bt, list) else str(bt).splitlines()))
    req = f.get("request")
    if req:
        lines.append(
            "triggered by: "
            + " ".join(str(req.get(k, "")) for k in ("method", "path") if req.get(k))
            + (f" (request id {req.get('request_id')})" if req.get("request_id") else "")
        )
    return "\n".join(lines)


class PluginDetailsPanel(QWidget):
    """The selected plugin: state and failure, operator modes, order, configuration."""

    mode_changed = Signal(str, dict)  # name, set_plugin_mode keyword arguments
    order_changed = Signal(str, str, object)  # name, phase, priority (int or None)
    config_edited = Signal(str, dict)  # name, new pluginConfig
    remove_requested = Signal(str)
    reload_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("PluginDetailsPanel")
        self._name = ""
        self._updating = False
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
        self.failure_text = QPlainTextEdit()
        self.failure_text.setReadOnly(True)
        self.failure_text.setMaximumHeight(90)
        self.failure_text.setPlaceholderText("No failure")
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
        self.canary_label = QLabel("100%")
        self.canary_label.setMinimumWidth(40)
        canary_row.addWidget(self.canary_slider)
        canary_row.addWidget(self.canary_label)
        form.addRow("Canary", canary_row)
        self.canary_key_combo = QComboBox()
        self.canary_key_combo.setEditable(True)
        self.canary_key_combo.addItems(["random", "client-ip", "header:x-user-id"])
        form.addRow("Canary key", self.canary_key_combo)
        self.fail_combo = QComboBox()
        self.fail_combo.addItems(list(FAIL_STRATEGIES))
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

        cfg = QGroupBox("Plugin configuration (YAML or JSON)")
        cl = QVBoxLayout(cfg)
        self.config_edit = QPlainTextEdit()
        self.config_edit.setObjectName("config_edit")
        mono = QFont("monospace")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        self.config_edit.setFont(mono)
        cl.addWidget(self.config_edit)
        self.config_status = QLabel("")
        self.config_status.setWordWrap(True)
        cl.addWidget(self.config_status)
        self.config_apply_button = QPushButton("Apply configuration")
        cl.addWidget(self.config_apply_button)
        lay.addWidget(cfg, 1)

        buttons = QHBoxLayout()
        self.reload_button = QPushButton("Reload")
        self.remove_button = QPushButton("Remove")
        buttons.addWidget(self.reload_button)
        buttons.addWidget(self.remove_button)
        lay.addLayout(buttons)

        self.enabled_check.toggled.connect(self._on_enabled_check_toggled)
        self.log_only_check.toggled.connect(self._on_log_only_check_toggled)
        self.canary_slider.valueChanged.connect(self._on_canary_slider_value_changed)
        self.canary_slider.sliderMoved.connect(self._on_canary_slider_moved)
        self.canary_key_combo.activated.connect(self._on_canary_key_combo_activated)
        self.fail_combo.activated.connect(self._on_fail_combo_activated)
        self.order_apply_button.clicked.connect(self._on_order_apply_button_clicked)
        self.config_apply_button.clicked.connect(self._on_config_apply_button_clicked)
        self.config_edit.textChanged.connect(self._on_config_edit_text_changed)
        self.reload_button.clicked.connect(lambda: self.reload_requested.emit(self._name))
        self.remove_button.clicked.connect(lambda: self.remove_requested.emit(self._name))
        self.show_plugin(None, None)

    @property
    def name(self) -> str:
        return self._name

    def show_plugin(self, p: Mapping[str, Any] | None, spec: PluginSpec | None) -> None:
        """Show a plugin snapshot (and its spec, for the config text); None clears."""
        self._updating = True
        try:
            new_name = str(p["name"]) if p else ""
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
                return
            self.title_label.setEnabled(True)
            badge, colour = state_badge(p)
            self.title_label.setText(f"{p['name']}  ({p.get('root_id') or 'no root id'})")
            counters = p.get("counters") or {}
            self.state_label.setText(
                f"<span style='color:{colour}'><b>{badge}</b></span> · ABI {p.get('abi') or '?'} "
                f"· {int(p.get('vm_memory_bytes') or 0) // 1024} KiB · "
                f"{counters.get('invocations', 0)} invocations"
            )
            self.failure_text.setPlainText(_failure_text(p))
            self.enabled_check.setChecked(p.get("mode") != "disabled")
            self.log_only_check.setChecked(p.get("mode") == "log-only")
            pct = float(p.get("canary_percent", 100.0))
            if not self.canary_slider.isSliderDown():
                self.canary_slider.setValue(round(pct))
            self.canary_label.setText(f"{pct:g}%")
            self.canary_key_combo.setCurrentText(str(p.get("canary_key", "random")))
            self.fail_combo.setCurrentText(str(p.get("fail_strategy", "FAIL_CLOSE")))
            if not same:
                self.phase_combo.setCurrentText(str(p.get("phase", "UNSPECIFIED_PHASE")))
                prio = p.get("priority")
                self.priority_check.setChecked(prio is not None)
                self.priority_spin.setValue(int(prio or 0))
                text = ""
                if spec is not None and spec.plugin_config:
                    text = yaml.safe_dump(spec.plugin_config, sort_keys=False)
                self.config_edit.setPlainText(text)
                self.config_status.setText("")
        finally:
            self._updating = False

    def parse_config_text(self) -> dict[str, Any]:
        """The editor's text as a pluginConfig mapping; raises ValueError with a message
        that says where the problem is."""
        text = self.config_edit.toPlainText()
        if not text.strip():
            return {}
        try:
            value = yaml.safe_load(text)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            raise ValueError(f"{where}{e.problem or 'invalid YAML/JSON'}") from None
        except yaml.YAMLError as e:
            raise ValueError(str(e)) from None
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError(f"the configuration must be a mapping, got {type(value).__name__}")
        try:
            json.dumps(value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"not representable as JSON: {e}") from None
        return value

    # -- slots -----------------------------------------------------------------------------------

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

    def _on_canary_slider_value_changed(self, value: int) -> None:
        self.canary_label.setText(f"{value}%")
        self._emit_mode(canary_percent=float(value))

    def _on_canary_key_combo_activated(self, _index: int) -> None:
        self._emit_mode(canary_key=self.canary_key_combo.currentText().strip())

    def _on_fail_combo_activated(self, _index: int) -> None:
        self._emit_mode(fail_strategy=self.fail_combo.currentText())

    def _on_order_apply_button_clicked(self) -> None:
        if self._name:
            prio = self.priority_spin.value() if self.priority_check.isChecked() else None
            self.order_changed.emit(self._name, self.phase_combo.currentText(), prio)

    def _on_config_edit_text_changed(self) -> None:
        if self._updating:
            return
        try:
            self.parse_config_text()
        except ValueError as e:
            self.config_status.setText(f"<span style='color:#f85149'>{e}</span>")
            self.config_apply_button.setEnabled(False)
        else:
            self.config_status.setText("Syntax OK")
            self.config_apply_button.setEnabled(bool(self._name))

    def _on_config_apply_button_clicked(self) -> None:
        try:
            value = self.parse_config_text()
        except ValueError as e:
            self.config_status.setText(f"<span style='color:#f85149'>{e}</span>")
            return
        if self._name:
            self.config_status.setText("Applying…")
            self.config_edited.emit(self._name, value)

    def set_config_result(self, errors: Sequence[str]) -> None:
        mine = [e for e in errors if e.startswith(f"plugin {self._name}:")] if self._name else []
        if mine:
            self.config_status.setText(
                "<span style='color:#f85149'>Rejected; the running version is kept: "
                + "<br>".join(mine)
                + "</span>"
            )
        elif self.config_status.text() == "Applying…":
            self.config_status.setText("Applied")
