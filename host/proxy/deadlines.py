"""The exchanges' deadlines (Envoy's route timeout) on one loop timer per server.

A timer per request (``loop.call_later``, then ``cancel`` when the answer came) cost
about 7k instructions a request in uvloop: a handle and a libuv timer made, started,
stopped and closed, most often minutes before it would have fired. Here a request's
deadline is an entry in a dict, and one timer is armed at the earliest deadline
only when that one is earlier than the armed one; when it fires it expires what is
due and re-arms at the next. A deadline is exactly as precise as before (the timer
fires at it, not on a tick).
"""

from __future__ import annotations

import asyncio
from typing import Final, Protocol

__all__ = ["Deadlines", "Expiring"]

# a timer may fire a little before its time (libuv counts in milliseconds)
_EARLY: Final = 0.001


class Expiring(Protocol):
    def deadline_passed(self) -> None:
        """Its deadline came (it is no longer watched)."""


class Deadlines:
    """Each watched owner's deadline (``loop.time()`` based), one timer for them all."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.due_at: dict[Expiring, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = 0.0
        # bound once: a call by name looks the method up every time
        self._time = loop.time
        self._call_at = loop.call_at
        self._fire_cb = self._fire

    def watch(self, owner: Expiring, delay: float) -> None:
        """``owner.deadline_passed()`` in ``delay`` seconds unless unwatched first (a
        second watch replaces the first)."""
        at = self._time() + delay
        self.due_at[owner] = at
        if self._timer is None or at < self._armed_at:
            self._arm(at)

    def unwatch(self, owner: Expiring) -> None:
        self.due_at.pop(owner, None)

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = at
        self._timer = self._call_at(at, self._fire_cb)

    def _fire(self) -> None:
        self._timer = None
        now = self._time() + _EARLY
        due = [owner for owner, at in self.due_at.items() if at <= now]
        for owner in due:
            del self.due_at[owner]
        for owner in due:
            try:
                owner.deadline_passed()  # may watch or unwatch others
            except Exception as e:  # one owner's failure does not strand the others
                self.loop.call_exception_handler(
                    {"message": "deadline callback failed", "exception": e}
                )
        if self.due_at and self._timer is None:
            self._arm(min(self.due_at.values()))
