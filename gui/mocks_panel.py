"""Callout mocks in a table: one rule per row (cluster, path, method, gRPC method,
status, body, delay, failure), checked with the same parser as ``--mocks`` files.
Apply hands the rules to the engine (the proxy answers matching callouts in place of
the clusters) and to the Lab tab's replays; Load and Save read and write the YAML."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import yaml
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from gui.engine_service import lab_api

__all__ = ["MocksPanel"]

# (column title, rule field)
COLUMNS = (
    ("Cluster", "cluster"),
    ("Path", "path"),
    ("Method", "method"),
    ("gRPC method", "grpc_method"),
    ("Status", "status"),
    ("Body", "body"),
    ("Delay ms", "delay_ms"),
    ("Failure", "failure"),
)
_NUMBERS = {"status", "delay_ms"}


class MocksPanel(QWidget):
    mocks_applied = Signal(list)  # the rules as dicts ([] turns mocking off)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.applied: list[dict[str, Any]] = []  # the rules last applied
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([c for c, _ in COLUMNS])
        self.table.horizontalHeader().setSectionResizeMode(5, QHeaderView.ResizeMode.Stretch)
        self.add_button = QPushButton("Add")
        self.remove_button = QPushButton("Remove")
        self.apply_button = QPushButton("Apply")
        self.apply_button.setToolTip("Answer matching callouts from these rules (proxy and Lab)")
        self.load_button = QPushButton("Load YAML…")
        self.save_button = QPushButton("Save YAML…")
        self.message_label = QLabel("No mocks: callouts go to the clusters.")
        self.message_label.setWordWrap(True)
        buttons = QHBoxLayout()
        for b in (self.add_button, self.remove_button, self.apply_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.load_button)
        buttons.addWidget(self.save_button)
        lay = QVBoxLayout(self)
        lay.addLayout(buttons)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.message_label)
        self.add_button.clicked.connect(lambda: self.add_rule({"cluster": "", "status": 200}))
        self.remove_button.clicked.connect(self._on_remove_button_clicked)
        self.apply_button.clicked.connect(self.apply)
        self.load_button.clicked.connect(self._on_load_button_clicked)
        self.save_button.clicked.connect(self._on_save_button_clicked)

    def add_rule(self, rule: dict[str, Any]) -> None:
        row = self.table.rowCount()
        self.table.insertRow(row)
        for col, (_t, key) in enumerate(COLUMNS):
            v = rule.get(key)
            self.table.setItem(row, col, QTableWidgetItem("" if v is None else str(v)))

    def _on_remove_button_clicked(self) -> None:
        rows = sorted({i.row() for i in self.table.selectedIndexes()}, reverse=True)
        for r in rows:
            self.table.removeRow(r)

    def rules(self) -> list[dict[str, Any]]:
        """The table as mock rules (empty cells left out; numbers as numbers)."""
        out: list[dict[str, Any]] = []
        for row in range(self.table.rowCount()):
            rule: dict[str, Any] = {}
            for col, (_t, key) in enumerate(COLUMNS):
                item = self.table.item(row, col)
                text = item.text().strip() if item is not None else ""
                if not text:
                    continue
                if key in _NUMBERS:
                    try:
                        rule[key] = float(text) if key == "delay_ms" else int(text)
                    except ValueError:
                        rule[key] = text  # the parser names the row and field
                else:
                    rule[key] = text
            if rule:
                out.append(rule)
        return out

    def apply(self) -> bool:
        rules = self.rules()
        error = lab_api.check_mock_rules(rules)
        if error:
            self.message_label.setText(f"<span style='color:#f85149'>{html.escape(error)}</span>")
            return False
        self.applied = rules
        n = len(rules)
        clusters = ", ".join(sorted({str(r.get("cluster")) for r in rules}))
        self.message_label.setText(
            f"{n} rule{'s' if n != 1 else ''} applied: callouts to {clusters} are answered here"
            if n
            else "No mocks: callouts go to the clusters."
        )
        self.mocks_applied.emit(rules)
        return True

    def load(self, path: str) -> bool:
        try:
            rules = lab_api.load_mock_rules(path)
        except ValueError as e:
            self.message_label.setText(f"<span style='color:#f85149'>{html.escape(str(e))}</span>")
            return False
        self.table.setRowCount(0)
        for r in rules:
            self.add_rule(r)
        self.message_label.setText(f"loaded {len(rules)} rules from {path}; Apply to use")
        return True

    def save(self, path: str) -> None:
        try:
            Path(path).write_text(yaml.safe_dump(self.rules(), sort_keys=False), "utf-8")
        except OSError as e:
            self.message_label.setText(f"cannot save {path}: {e.strerror or e}")

    def _on_load_button_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load mocks", "", "YAML (*.yaml *.yml)")
        if path:
            self.load(path)

    def _on_save_button_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save mocks", "", "YAML (*.yaml)")
        if path:
            self.save(path)
