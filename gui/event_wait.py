"""Waiting on the GUI thread without blocking it: the scripts that drive the app
(``gui.screenshot``, ``bench/bench_gui.py``) run Qt's event loop while they wait."""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import QEventLoop, QTimer

__all__ = ["pump", "pump_until"]


def pump(ms: float) -> None:
    """Run the event loop for ``ms`` milliseconds."""
    loop = QEventLoop()
    QTimer.singleShot(int(ms), loop.quit)
    loop.exec()


def pump_until(predicate: Callable[[], object], timeout_s: float, step_ms: float = 20) -> bool:
    """Run the event loop until ``predicate()`` is true (True) or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        pump(step_ms)
    return False
