"""Logging and time: proxy_log, proxy_get_log_level, proxy_get_current_time_nanoseconds,
proxy_set_tick_period_milliseconds (ABI doc §2.2 "Logging and time", §4.2, §6.6)."""

from __future__ import annotations

import pytest

from host.wasm.abi import logging as lg
from host.wasm.context import StreamInfo
from host.wasm.types import LogLevel, Status

SENTINEL = 0xAAAAAAAA


def log(abi, level: int, msg: bytes):
    p = abi.put(msg or b"\0")
    return lg.proxy_log(abi.vm, level, p, len(msg))


def plugin_records(host):
    return [r for r in host.logs if r.source == "plugin"]


# -- proxy_log ------------------------------------------------------------------------------


def test_every_level_is_logged_with_its_level_plugin_and_context(abi):
    with abi.on(abi.root):
        for level in range(6):
            assert log(abi, level, f"m{level}".encode()) == Status.OK
    recs = plugin_records(abi.host)
    assert [(r.level, r.message) for r in recs] == [(LogLevel(i), f"m{i}") for i in range(6)]
    assert {(r.plugin, r.root_id, r.context_id) for r in recs} == {
        (abi.vm.name, abi.root.root_id, abi.root.id)
    }


def test_a_stream_log_line_carries_the_stream_and_its_request_id(abi):
    ctx = abi.http_context(StreamInfo(request_id="req-42"))
    with abi.on(ctx):
        assert log(abi, 2, b"hello") == Status.OK
    (rec,) = plugin_records(abi.host)
    assert (rec.context_id, rec.request_id, rec.root_id) == (ctx.id, "req-42", abi.root.root_id)


@pytest.mark.parametrize("host_level", list(LogLevel))
def test_lines_below_the_host_level_are_dropped_but_still_ok(abi, host_level):
    abi.host.log_level = host_level
    with abi.on(abi.root):
        for level in range(6):
            assert log(abi, level, str(level).encode()) == Status.OK
    assert [r.message for r in plugin_records(abi.host)] == [
        str(i) for i in range(int(host_level), 6)
    ]


@pytest.mark.parametrize("level", [6, 7, 0x7FFFFFFF, 0xFFFFFFFF])
def test_level_above_5_is_bad_argument_and_logs_nothing(abi, level):
    with abi.on(abi.root):
        assert log(abi, level, b"nope") == Status.BAD_ARGUMENT
    assert plugin_records(abi.host) == []


def test_message_bytes_that_are_not_utf8_do_not_raise(abi):
    with abi.on(abi.root):
        assert log(abi, 2, b"ok \xff\xfe\x00 end") == Status.OK
    (rec,) = plugin_records(abi.host)
    assert rec.message.startswith("ok ")
    assert rec.message.endswith(" end")
    assert "\ufffd" in rec.message


def test_an_empty_message_is_logged(abi):
    with abi.on(abi.root):
        assert lg.proxy_log(abi.vm, 3, 0, 0) == Status.OK
    assert [(r.level, r.message) for r in plugin_records(abi.host)] == [(LogLevel.WARN, "")]


# -- proxy_get_log_level --------------------------------------------------------------------


@pytest.mark.parametrize("host_level", list(LogLevel))
def test_get_log_level_returns_the_host_level(abi, host_level):
    abi.host.log_level = host_level
    ret = abi.put(SENTINEL.to_bytes(4, "little"))
    with abi.on(abi.root):
        assert lg.proxy_get_log_level(abi.vm, ret) == Status.OK
    assert abi.u32(ret) == int(host_level)


# -- proxy_get_current_time_nanoseconds -----------------------------------------------------


def test_current_time_is_the_virtual_clocks_wall_time(abi):
    clock = abi.host.clock
    ret = abi.put(b"\xaa" * 8)
    with abi.on(abi.root):
        assert lg.proxy_get_current_time_nanoseconds(abi.vm, ret) == Status.OK
        first = abi.u64(ret)
        assert first == clock.wall_ns() == 1_700_000_000_000_000_000
        clock.advance(1.5)
        assert lg.proxy_get_current_time_nanoseconds(abi.vm, ret) == Status.OK
    assert abi.u64(ret) - first == 1_500_000


# -- proxy_set_tick_period_milliseconds (§6.6) ---------------------------------------------


def test_tick_period_from_the_root_arms_the_roots_timer(abi):
    now = abi.host.clock.now_ms()
    with abi.on(abi.root):
        assert lg.proxy_set_tick_period_milliseconds(abi.vm, 100) == Status.OK
    assert abi.root.tick_period_ms == 100
    assert abi.root.next_tick_ms == now + 100
    assert abi.vm.due_ticks(now + 99) == []
    assert abi.vm.due_ticks(now + 100) == [abi.root]


def test_tick_period_from_a_stream_context_targets_its_root(abi):
    ctx = abi.http_context()
    now = abi.host.clock.now_ms()
    with abi.on(ctx):
        assert lg.proxy_set_tick_period_milliseconds(abi.vm, 250) == Status.OK
    assert abi.root.tick_period_ms == 250
    assert abi.root.next_tick_ms == now + 250


def test_a_new_tick_period_replaces_and_restarts_the_old_one(abi):
    with abi.on(abi.root):
        lg.proxy_set_tick_period_milliseconds(abi.vm, 1000)
        abi.host.clock.advance(400)
        now = abi.host.clock.now_ms()
        assert lg.proxy_set_tick_period_milliseconds(abi.vm, 50) == Status.OK
    assert (abi.root.tick_period_ms, abi.root.next_tick_ms) == (50, now + 50)


def test_tick_period_zero_disables_the_timer(abi):
    with abi.on(abi.root):
        lg.proxy_set_tick_period_milliseconds(abi.vm, 10)
        assert lg.proxy_set_tick_period_milliseconds(abi.vm, 0) == Status.OK
    assert (abi.root.tick_period_ms, abi.root.next_tick_ms) == (0, None)
    assert abi.vm.due_ticks(abi.host.clock.now_ms() + 10_000) == []
