"""The dialog for a plugin whose configure fails without a configuration (issue 12 item 4).

Loading a module runs it in a scratch VM first; when its ``proxy_on_configure`` refuses
(typically "missing required field name" with no config), the window opens this instead
of a dead-end error: the plugin's own error, an editor for its pluginConfig (YAML or
JSON, checked against its ``<module>.schema.json`` when there is one) and Retry, which
loads the module again with that configuration.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from gui.json_schema import validate

__all__ = ["ConfigRetryDialog", "parse_plugin_config"]


def parse_plugin_config(text: str) -> dict[str, Any]:
    """YAML/JSON text as a pluginConfig mapping; ValueError with a message otherwise."""
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
        json.dumps(value)  # pluginConfig goes to the plugin as JSON text
    except (TypeError, ValueError) as e:
        raise ValueError(f"not representable as JSON: {e}") from None
    return value


class ConfigRetryDialog(QDialog):
    """The plugin's configure error, a config editor and Retry (non-modal)."""

    retry_requested = Signal(dict)  # the pluginConfig to load the module with

    def __init__(
        self,
        plugin: str,
        error: str,
        schema: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("config_retry_dialog")
        self.setWindowTitle(f"{plugin} needs a configuration")
        self.plugin = plugin
        self.schema = schema
        lay = QVBoxLayout(self)
        intro = QLabel(
            f"<b>{plugin}</b> refused to start without a suitable configuration. "
            "Enter its pluginConfig (YAML or JSON) and Retry; nothing was added yet."
        )
        intro.setWordWrap(True)
        lay.addWidget(intro)
        self.error_label = QLabel("")
        self.error_label.setObjectName("plugin_error")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color:#f85149")
        lay.addWidget(self.error_label)
        self.editor = QPlainTextEdit()
        self.editor.setObjectName("retry_config_edit")
        self.editor.setPlaceholderText('e.g. {"name": "demo"}')
        if config:
            self.editor.setPlainText(json.dumps(dict(config), indent=2))
        lay.addWidget(self.editor, 1)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        lay.addWidget(self.status_label)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.retry_button = QPushButton("Retry")
        self.retry_button.setObjectName("retry_button")
        self.retry_button.setDefault(True)
        buttons.addButton(self.retry_button, QDialogButtonBox.ButtonRole.ActionRole)
        lay.addWidget(buttons)
        buttons.rejected.connect(self.reject)
        self.retry_button.clicked.connect(self._on_retry_button_clicked)
        self.show_error(error)
        self.resize(520, 380)

    def show_error(self, error: str) -> None:
        """The plugin's own error (again after a failed Retry)."""
        self.error_label.setText(error)
        self.retry_button.setEnabled(True)

    def config(self) -> dict[str, Any]:
        """The editor's configuration; ValueError naming what is wrong (syntax or, with
        a schema, its rules)."""
        value = parse_plugin_config(self.editor.toPlainText())
        if self.schema is not None:
            issues = validate(self.schema, value)
            if issues:
                raise ValueError("; ".join(str(i) for i in issues))
        return value

    def _on_retry_button_clicked(self) -> None:
        try:
            value = self.config()
        except ValueError as e:
            self.status_label.setText(str(e))
            return
        self.status_label.setText("Loading…")
        self.retry_button.setEnabled(False)
        self.retry_requested.emit(value)
