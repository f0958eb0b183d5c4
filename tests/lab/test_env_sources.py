"""The guest's clock and random bytes go through the host's environment source: the
WASI clocks (realtime, monotonic), random_get and proxy_get_current_time_nanoseconds
are recorded in order, and a replay clock hands exactly those values back."""

from __future__ import annotations

import struct

from host.lab.env import FIXED_START_NS, RecordingClock, ReplayClock
from host.wasm import PluginHost, VmConfig
from tests.fixtures.wat_modules import make_wasi_probe_module


def _u64(vm: object, addr: int) -> int:
    return int(struct.unpack("<Q", vm.instance.read(addr, 8))[0])  # type: ignore[attr-defined]


def _start(clock: object) -> tuple[PluginHost, object]:
    host = PluginHost(clock=clock)  # type: ignore[arg-type]
    vm = host.create_vm(host.compile(make_wasi_probe_module()), VmConfig(name="probe"))
    vm.start_plugin("t", b"")
    return host, vm


def test_wasi_clocks_and_random_are_recorded_then_replayed() -> None:
    rec = RecordingClock()
    host, vm = _start(rec)
    try:
        values = [v for per_ctx in rec.values.values() for v in per_ctx]
        kinds = [k for k, _ in values]
        assert kinds == ["wall", "mono", "random"]
        inst = vm.instance  # type: ignore[attr-defined]
        wall, mono = _u64(vm, 272), _u64(vm, 280)
        rand = inst.read(544, 16)
        assert [wall, mono, bytes.fromhex(values[2][1])] == [values[0][1], values[1][1], rand]
    finally:
        host.close()
    replay_clock = ReplayClock(seed=7)
    replay_clock.feed(values)
    host, vm = _start(replay_clock)
    try:
        inst = vm.instance  # type: ignore[attr-defined]
        assert _u64(vm, 272) == values[0][1]
        assert _u64(vm, 280) == values[1][1]
        assert inst.read(544, 16).hex() == values[2][1]
        assert replay_clock.used_recorded == 3
    finally:
        host.close()


def test_without_recorded_values_the_clock_is_fixed_and_the_bytes_seeded() -> None:
    got = []
    for _ in range(2):
        host, vm = _start(ReplayClock(seed=1))
        inst = vm.instance  # type: ignore[attr-defined]
        got.append((_u64(vm, 272), inst.read(544, 16)))
        host.close()
    assert got[0] == got[1]
    assert got[0][0] == FIXED_START_NS
    host, vm = _start(ReplayClock(seed=2))
    assert vm.instance.read(544, 16) != got[0][1]  # type: ignore[attr-defined]
    host.close()
