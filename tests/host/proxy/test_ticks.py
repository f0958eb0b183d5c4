"""Tick scheduling on its own (host.proxy.ticks.TickScheduler) with real VMs running the
SDK-built ticker plugin: one loop timer for the earliest due tick; when it fires only the
due roots tick, in the order given; a closed instance is skipped; cancel stops the timer."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from host.proxy.ticks import TickScheduler
from host.wasm import PluginHost, VmConfig
from host.wasm.context import RootContext
from host.wasm.vm import PluginVM

from .conftest import plugin

TICKER = Path(plugin("ticker")).read_bytes()


@dataclass
class _Instance:
    """What the scheduler reads of a plugin instance (host.proxy.slots.PluginInstance)."""

    vm: PluginVM
    root: RootContext
    closed: bool = False


@pytest.fixture
def host() -> Iterator[PluginHost]:
    h = PluginHost()
    yield h
    h.close()


def _ticker(host: PluginHost, name: str, period_ms: int) -> _Instance:
    vm = host.create_vm(host.compile(TICKER), VmConfig(name=name))
    conf = json.dumps({"period_ms": period_ms}).encode()
    return _Instance(vm, vm.start_plugin("ticker", conf, name))


def _ticks(host: PluginHost, name: str) -> list[str]:
    return [r.message for r in host.logs if r.plugin == name and r.message.startswith("tick ")]


def test_the_earliest_due_tick_fires_and_only_due_roots_tick(host: PluginHost) -> None:
    fast = _ticker(host, "fast", 50)
    slow = _ticker(host, "slow", 5_000)
    closed = _ticker(host, "closed", 50)
    closed.closed = True
    order: list[str] = []

    async def main() -> float:
        fired = asyncio.Event()
        sched = TickScheduler(asyncio.get_running_loop(), host.clock.now_ms, fired.set)
        t0 = time.monotonic()
        sched.schedule([slow, fast, closed])
        await asyncio.wait_for(fired.wait(), 2.0)
        waited = time.monotonic() - t0
        sched.tick_due([slow, fast, closed], lambda inst: order.append("failed"))
        sched.cancel()
        return waited

    waited = asyncio.run(main())
    assert 0.03 <= waited < 1.0  # the 50 ms tick's timer, not the 5 s one
    assert _ticks(host, "fast") == ["tick 1"]
    assert _ticks(host, "slow") == [] and _ticks(host, "closed") == []
    assert order == []  # nothing failed
    # the fast root's next tick moved one period on
    assert fast.root.next_tick_ms is not None and slow.root.next_tick_ms is not None
    assert fast.root.next_tick_ms < slow.root.next_tick_ms


def test_nothing_to_tick_arms_no_timer_and_cancel_stops_one(host: PluginHost) -> None:
    fast = _ticker(host, "fast", 50)

    async def main() -> tuple[bool, bool]:
        fired = asyncio.Event()
        sched = TickScheduler(asyncio.get_running_loop(), host.clock.now_ms, fired.set)
        fast.closed = True
        sched.schedule([fast])  # only a closed instance: no timer
        await asyncio.sleep(0.15)
        none_fired = not fired.is_set()
        fast.closed = False
        sched.schedule([fast])
        sched.cancel()
        await asyncio.sleep(0.15)
        return none_fired, not fired.is_set()

    assert asyncio.run(main()) == (True, True)
