"""Tick scheduling: one loop timer for the earliest due ``proxy_on_tick`` of all VMs.

Each live plugin instance's root context says when its next tick is due (the
plugin host's clock, ms). ``TickScheduler`` keeps a single timer for the earliest
of them and, when it fires, ticks every due root in the order given (serving
instances first, then retired ones still serving requests), reporting a VM that
failed in its tick. The owner re-arms it after anything that changes tick times.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

from host.wasm.context import RootContext
from host.wasm.vm import PluginVM

__all__ = ["TickScheduler", "Tickable"]


class Tickable(Protocol):
    """A plugin instance as the scheduler sees it: its VM, its root, whether closed."""

    @property
    def vm(self) -> PluginVM: ...

    @property
    def root(self) -> RootContext: ...

    @property
    def closed(self) -> bool: ...


T = TypeVar("T", bound=Tickable)


class TickScheduler:
    """One timer on ``loop`` for the earliest due tick of what ``schedule`` is given."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        now_ms: Callable[[], float],
        on_due: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._now_ms = now_ms
        self._on_due = on_due
        self._handle: asyncio.TimerHandle | None = None

    def schedule(self, instances: Iterable[Tickable]) -> None:
        """Re-arm the timer for the earliest tick among the live ``instances``."""
        earliest: float | None = None
        for inst in instances:
            if inst.vm.failed or inst.closed:
                continue
            t = inst.root.next_tick_ms
            if t is not None and (earliest is None or t < earliest):
                earliest = t
        self.cancel()
        if earliest is not None:
            delay = max(0.0, (earliest - self._now_ms()) / 1000.0)
            self._handle = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._on_due()

    def tick_due(self, instances: Iterable[T], failed: Callable[[T], None]) -> None:
        """Tick every live instance whose tick is due now, in the order given; ``failed``
        gets each one whose VM failed in its tick."""
        now = self._now_ms()
        for inst in instances:
            if inst.vm.failed or inst.closed:
                continue
            root = inst.root
            if root.next_tick_ms is not None and root.next_tick_ms <= now:
                if not inst.vm.tick(root):
                    failed(inst)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
