"""Helpers for GUI tests: do what a user does (drag a row, send from the composer)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QDropEvent

from gui.plugin_panel import PLUGIN_MIME, PluginListView


def drop_plugin(view: PluginListView, name: str, target: str, below: bool = False) -> None:
    """Drag the row ``name`` and drop it on the upper (or lower) third of ``target``."""
    i = view.names().index(name)
    mime = view.mimeData([view.topLevelItem(i)])
    assert mime.hasFormat(PLUGIN_MIME)
    point = view.row_center(target)
    rect_h = view.visualItemRect(view.topLevelItem(view.names().index(target))).height()
    y = point.y() + (rect_h // 3 if below else -rect_h // 3)
    ev = QDropEvent(
        QPointF(point.x(), y),
        Qt.DropAction.MoveAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    view.dropEvent(ev)


def send(qtbot: Any, window: Any, path: str, headers: str = "") -> dict[str, Any]:
    """Send one request from the composer, as a user would; the response dict."""
    c = window.composer_panel
    c.method_combo.setCurrentText("GET")
    c.path_edit.setText(path)
    c.headers_edit.setPlainText(headers)
    c.body_edit.setPlainText("")
    with qtbot.waitSignal(window.service.response_received, timeout=10_000) as got:
        c.send_button.click()
    resp: dict[str, Any] = got.args[0]
    return resp
