"""``Background``: run one blocking job (a registry pull or push) in a Python thread and
deliver its progress, result or error to the GUI thread as Qt signals.

The job gets a ``progress(done, total)`` callable; signals emitted from the worker thread
reach slots of objects living in the GUI thread queued, so the widgets are only touched
there. One job per ``Background``; ``running`` says whether it is still busy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal

__all__ = ["Background"]


class Background(QObject):
    progress = Signal(int, int)  # bytes done, bytes total
    finished = Signal(object)  # the job's result
    failed = Signal(str)  # its error message

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, job: Callable[[Callable[[int, int], None]], Any]) -> None:
        if self.running:
            raise RuntimeError("a job is already running")

        def run() -> None:
            try:
                result = job(lambda done, total: self.progress.emit(done, total))
            except Exception as e:  # every failure is reported, never raised into Qt
                msg = getattr(e, "message", None) or str(e) or type(e).__name__
                self.failed.emit(msg)
                return
            self.finished.emit(result)

        self._thread = threading.Thread(target=run, name="wasmdesk-background", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
