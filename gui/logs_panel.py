"""Plugin log lines: a bounded table with level, plugin and request id; filters by
plugin and minimum level, and a search box. Fed in batches from engine snapshots."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QShowEvent
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from gui.when_shown import WhenShown

__all__ = ["LEVELS", "LogsPanel"]

LEVELS = ("trace", "debug", "info", "warn", "error", "critical")
_RANK = {name: i for i, name in enumerate(LEVELS)}
_LEVEL_COLOURS = {"warn": "#d29922", "error": "#f85149", "critical": "#f85149"}
_Index = QModelIndex | QPersistentModelIndex


class _LogModel(QAbstractTableModel):
    COLUMNS = ("Time", "Level", "Plugin", "Request id", "Message")

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.rows: list[tuple[str, str, str, str, str]] = []

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return len(self.COLUMNS)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section]
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return row[index.column()]
        if role == Qt.ItemDataRole.ForegroundRole and index.column() == 1:
            c = _LEVEL_COLOURS.get(row[1])
            return QColor(c) if c else None
        return None

    def append(self, lines: list[tuple[str, str, str, str, str]]) -> None:
        if not lines:
            return
        lines = lines[-self.capacity :]
        overflow = len(self.rows) + len(lines) - self.capacity
        if overflow > 0:
            self.beginRemoveRows(QModelIndex(), 0, overflow - 1)
            del self.rows[:overflow]
            self.endRemoveRows()
        first = len(self.rows)
        self.beginInsertRows(QModelIndex(), first, first + len(lines) - 1)
        self.rows.extend(lines)
        self.endInsertRows()

    def clear(self) -> None:
        self.beginResetModel()
        self.rows.clear()
        self.endResetModel()


class _LogFilter(QSortFilterProxyModel):
    def __init__(self) -> None:
        super().__init__()
        self.plugin = ""
        self.min_rank = 0
        self.needle = ""

    def set_filters(self, plugin: str, min_level: str, needle: str) -> None:
        self.beginFilterChange()
        self.plugin = plugin
        self.min_rank = _RANK.get(min_level, 0)
        self.needle = needle.lower()
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(self, source_row: int, source_parent: _Index) -> bool:
        model = self.sourceModel()
        assert isinstance(model, _LogModel)
        _t, level, plugin, rid, msg = model.rows[source_row]
        if self.plugin and plugin != self.plugin:
            return False
        if _RANK.get(level, 0) < self.min_rank:
            return False
        return not self.needle or self.needle in msg.lower() or self.needle in rid.lower()


class LogsPanel(QWidget):
    """Plugin log lines; double-click a line to open its request in the inspector."""

    request_activated = Signal(str)  # a line's request id
    plugin_level_changed = Signal(str)  # the level plugins should log at

    def __init__(self, capacity: int = 5000, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("LogsPanel")
        # lines that arrive while the panel sits on a hidden tab wait until it is shown
        self._when_shown = WhenShown(self, self._add_lines, capacity)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        bar = QHBoxLayout()
        self.plugin_combo = QComboBox()
        self.plugin_combo.addItem("All plugins", "")
        self.level_combo = QComboBox()
        for lv in LEVELS:
            self.level_combo.addItem(f"≥ {lv}", lv)
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("Search messages and request ids")
        self.search_edit.setClearButtonEnabled(True)
        self.count_label = QLabel("0 lines")
        # what plugins log at all (the engine's level), not a view filter
        self.plugin_level_combo = QComboBox()
        self.plugin_level_combo.setObjectName("plugin_log_level")
        for lv in LEVELS:
            self.plugin_level_combo.addItem(lv, lv)
        self.plugin_level_combo.setCurrentText("info")
        self.plugin_level_combo.setToolTip(
            "The level plugins log at (the engine's, as the admin API's /logging sets it); "
            "the Level filter only hides lines"
        )
        bar.addWidget(QLabel("Plugins log at"))
        bar.addWidget(self.plugin_level_combo)
        bar.addWidget(QLabel("Plugin"))
        bar.addWidget(self.plugin_combo)
        bar.addWidget(QLabel("Level"))
        bar.addWidget(self.level_combo)
        bar.addWidget(self.search_edit, 1)
        bar.addWidget(self.count_label)
        lay.addLayout(bar)
        self.model = _LogModel(capacity)
        self.proxy = _LogFilter()
        self.proxy.setSourceModel(self.model)
        self.table = QTableView()
        self.table.setObjectName("logs_table")
        self.table.setModel(self.proxy)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(20)
        self.table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        h = self.table.horizontalHeader()
        h.setStretchLastSection(True)
        for col, width in enumerate((90, 60, 110, 110)):
            h.resizeSection(col, width)
        h.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        lay.addWidget(self.table)
        self._plugins: set[str] = set()
        self.plugin_combo.currentIndexChanged.connect(self._on_filters_changed)
        self.level_combo.currentIndexChanged.connect(self._on_filters_changed)
        self.search_edit.textChanged.connect(self._on_filters_changed)
        self.table.doubleClicked.connect(self._on_table_double_clicked)
        self.plugin_level_combo.activated.connect(
            lambda _i: self.plugin_level_changed.emit(self.plugin_level_combo.currentText())
        )
        self.table.setToolTip("Double-click a line with a request id to inspect that request")

    def append_logs(self, logs: Iterable[Mapping[str, Any]]) -> None:
        self._when_shown.add(logs)

    def showEvent(self, event: QShowEvent) -> None:
        self._when_shown.flush()
        super().showEvent(event)

    def _add_lines(self, logs: Iterable[Mapping[str, Any]]) -> None:
        lines = []
        for d in logs:
            t = float(d.get("time") or 0.0)
            stamp = time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"
            plugin = str(d.get("plugin", ""))
            lines.append(
                (
                    stamp,
                    str(d.get("level", "")),
                    plugin,
                    str(d.get("request_id", "")),
                    str(d.get("message", "")),
                )
            )
            if plugin and plugin not in self._plugins:
                self._plugins.add(plugin)
                self.plugin_combo.addItem(plugin, plugin)
        if not lines:
            return
        bar = self.table.verticalScrollBar()
        at_bottom = bar.value() >= bar.maximum() - 2
        self.model.append(lines)
        self._update_count()
        if at_bottom:
            self.table.scrollToBottom()

    def visible_rows(self) -> list[tuple[str, ...]]:
        """The rows the filters let through (for tests and copy)."""
        self._when_shown.flush()
        out = []
        for r in range(self.proxy.rowCount()):
            src = self.proxy.mapToSource(self.proxy.index(r, 0)).row()
            out.append(self.model.rows[src])
        return out

    def set_filters(self, plugin: str = "", min_level: str = "trace", search: str = "") -> None:
        i = self.plugin_combo.findData(plugin)
        if plugin and i < 0:
            self.plugin_combo.addItem(plugin, plugin)
            self._plugins.add(plugin)
            i = self.plugin_combo.findData(plugin)
        self.plugin_combo.setCurrentIndex(max(0, i))
        self.level_combo.setCurrentIndex(max(0, self.level_combo.findData(min_level)))
        self.search_edit.setText(search)

    def _on_table_double_clicked(self, index: QModelIndex) -> None:
        src = self.proxy.mapToSource(index)
        if src.isValid():
            rid = self.model.rows[src.row()][3]
            if rid:
                self.request_activated.emit(rid)

    def _on_filters_changed(self, *_args: object) -> None:
        self.proxy.set_filters(
            str(self.plugin_combo.currentData() or ""),
            str(self.level_combo.currentData() or "trace"),
            self.search_edit.text(),
        )
        self._update_count()

    def _update_count(self) -> None:
        shown, total = self.proxy.rowCount(), self.model.rowCount()
        self.count_label.setText(
            f"{total} lines" if shown == total else f"{shown} of {total} lines"
        )
