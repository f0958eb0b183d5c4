"""The desktop app's entry point: build the engine service, the window, run Qt.

``build()`` is what tests and the screenshot script use (it does not enter the event
loop); ``run()`` is ``wasmdesk`` with no arguments.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from PySide6.QtCore import QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from gui.engine_service import EngineService
from gui.main_window import MainWindow
from gui.workspace import Workspace
from host.resources import resources_dir

__all__ = ["build", "run"]


def build(
    workspace: Workspace | None = None,
    *,
    listen: tuple[str, int] | None = None,
    admin: tuple[str, int] | None = None,
) -> tuple[MainWindow, EngineService]:
    """The window and its engine service, not started: call ``service.start()``.

    ``listen``/``admin`` override the workspace's addresses (the defaults are the
    config's, 127.0.0.1:10000 and :9901; a taken port falls back to a free one)."""
    ws = workspace if workspace is not None else Workspace.at()
    config = ws.load()
    ws.lock()  # a second instance on the same workspace runs read-only and says so
    service = EngineService(config, listen=listen, admin=admin)
    window = MainWindow(service, ws)
    return window, service


def run(argv: Sequence[str] | None = None) -> int:
    app = QApplication.instance() or QApplication(list(argv if argv is not None else sys.argv))
    app.setApplicationName("Wasmdesk")
    app.setOrganizationName("wasmdesk")
    icon = resources_dir() / "icons" / "wasmdesk.svg"
    if icon.is_file():
        app.setWindowIcon(QIcon(str(icon)))
    window, service = build()
    window.show()
    service.start()
    # For smoke runs (CI, offscreen): close by itself after N ms.
    quit_after = os.environ.get("WASMDESK_QUIT_AFTER_MS")
    if quit_after and quit_after.isdigit():
        QTimer.singleShot(int(quit_after), window.close)
    rc = app.exec()
    service.close(5.0)
    return int(rc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
