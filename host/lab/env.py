"""Environment sources for the lab: what a plugin's clock and random bytes are.

``RecordingClock`` (under ``serve --record``) is the real clock that also notes every
value a guest obtained, per VM and context, so the recorder can store them with the
request. ``ReplayClock`` (in a replay) is a virtual clock that hands the guest the
recorded values in order, and when there are none (or they run out) a fixed clock and
bytes from a fixed seed: two replays of one session see exactly the same values.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from host.wasm.plugin_host import Clock, VirtualClock

if TYPE_CHECKING:
    from host.wasm.vm import PluginVM

__all__ = ["FIXED_START_NS", "RecordingClock", "ReplayClock"]

# 2025-01-01T00:00:00Z: the wall clock of a replay without recorded values
FIXED_START_NS = 1_735_689_600_000_000_000
# at most this many values per context are kept (a plugin reading the clock in a loop)
MAX_VALUES = 4096


class RecordingClock(Clock):
    """The real clock; every value a guest obtains is noted by (VM, context id)."""

    def __init__(self) -> None:
        self.values: dict[tuple[int, int], list[list[Any]]] = {}

    def _note(self, vm: PluginVM, kind: str, value: Any) -> None:
        key = (id(vm), vm.ctx.id)
        got = self.values.setdefault(key, [])
        if len(got) < MAX_VALUES:
            got.append([kind, value])

    def guest_wall_ns(self, vm: PluginVM) -> int:
        v = self.wall_ns()
        self._note(vm, "wall", v)
        return v

    def guest_monotonic_ns(self, vm: PluginVM) -> int:
        v = self.monotonic_ns()
        self._note(vm, "mono", v)
        return v

    def guest_random(self, vm: PluginVM, n: int) -> bytes:
        data = super().guest_random(vm, n)
        self._note(vm, "random", data.hex())
        return data

    def take(self, vm: PluginVM, context_id: int) -> list[list[Any]]:
        return self.values.pop((id(vm), context_id), [])


class ReplayClock(VirtualClock):
    """Recorded guest values first (in order, same kind), then a fixed clock and seed."""

    def __init__(self, seed: int = 0, start_wall_ns: int = FIXED_START_NS) -> None:
        super().__init__(start_wall_ns)
        self.rng = random.Random(seed)
        self.queue: list[list[Any]] = []
        self.used_recorded = 0

    def feed(self, values: list[list[Any]]) -> None:
        self.queue = [list(v) for v in values if isinstance(v, list) and len(v) == 2]

    def _next(self, kind: str) -> Any:
        if self.queue and self.queue[0][0] == kind:
            self.used_recorded += 1
            return self.queue.pop(0)[1]
        return None

    def guest_wall_ns(self, vm: PluginVM) -> int:
        v = self._next("wall")
        return int(v) if isinstance(v, int) else self.wall_ns()

    def guest_monotonic_ns(self, vm: PluginVM) -> int:
        v = self._next("mono")
        return int(v) if isinstance(v, int) else self.monotonic_ns()

    def guest_random(self, vm: PluginVM, n: int) -> bytes:
        v = self._next("random")
        if isinstance(v, str):
            try:
                data = bytes.fromhex(v)
            except ValueError:
                data = b""
            if len(data) == n:
                return data
        return self.rng.randbytes(n)
