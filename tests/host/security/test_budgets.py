"""Issue 13 items 4 and 6: what one plugin can make the host spend.

Host-call time counts against the callback budget; log lines, WASI output and
``uncompress`` are bounded; callouts are kept per context (and dropped with it),
capped per VM in flight, and queued per cluster so 10,000 of them do not stall
the proxy. Real VMs, real proxy on loopback.
"""

from __future__ import annotations

import gc
import json
import time
import weakref
import zlib

import pytest

from host.wasm import VmConfig
from host.wasm.abi.callouts import MAX_INFLIGHT_CALLOUTS
from host.wasm.abi.logging import MAX_LOG_LINE
from host.wasm.abi.wasi import MAX_OUTPUT_PER_CALLBACK
from host.wasm.context import MAX_CALLOUT_RECORDS, Action
from host.wasm.pairs import HeaderMap
from host.wasm.plugin_host import MAX_FOREIGN_OUTPUT
from host.wasm.runtime import GuestFault
from host.wasm.types import Status
from tests.host.proxy.conftest import make_config, wasm_plugin
from tests.host.security.hostile_wat import (
    CLUSTER,
    HEADERS,
    callout_headers,
    callout_module,
    hostile_module,
    http_call,
)

FF_IMPORT = """
  (import "env" "proxy_call_foreign_function"
    (func $ff (param i32 i32 i32 i32 i32 i32) (result i32)))
"""


def _request() -> HeaderMap:
    return HeaderMap([(":method", "GET"), (":path", "/"), (":authority", "example")])


def _slow_host_module(calls: int) -> bytes:
    from tests.host.security.hostile_wat import IMPORTS

    body = "\n".join(
        "    (drop (call $ff (i32.const 1024) (i32.const 4) (i32.const 0) (i32.const 0)"
        " (i32.const 0) (i32.const 0)))"
        for _ in range(calls)
    )
    return hostile_module(
        imports=IMPORTS + FF_IMPORT,
        data={1024: b"slow"},
        request_headers=body + "\n    (i32.const 0)",
    )


def _run_with_slow_foreign_function(make_host, calls: int, sleep_s: float):
    host = make_host()
    host.foreign_functions["slow"] = lambda _a: (time.sleep(sleep_s), (Status.OK, b""))[1]
    vm = host.create_vm(host.compile(_slow_host_module(calls)), VmConfig(name="slow"))
    root = vm.start_plugin("slow", b"")
    ctx = vm.new_http_context(root)
    return vm, ctx.on_request_headers(_request(), True)


def test_a_long_host_call_fails_the_callback_with_its_budget_spent(make_host):
    # Before: the guest returned normally after a 250 ms host call (budget 100 ms).
    vm, action = _run_with_slow_foreign_function(make_host, 1, 0.25)
    assert action == Action.FAILED
    assert vm.failure is not None and vm.failure.kind == "interrupt"
    assert "in host calls" in vm.failure.message
    assert vm.failure.callback == "proxy_on_request_headers"


def test_host_time_adds_up_across_calls_and_the_next_call_is_refused(make_host):
    # 3 x 90 ms: the second call ends past the budget (as the epoch clock counts it,
    # 5 ms ticks), so the third is not even run.
    ran = []
    host = make_host()

    def slow(_a: bytes) -> tuple[Status, bytes]:
        ran.append(1)
        time.sleep(0.09)
        return Status.OK, b""

    host.foreign_functions["slow"] = slow
    vm = host.create_vm(host.compile(_slow_host_module(3)), VmConfig(name="slow"))
    ctx = vm.new_http_context(vm.start_plugin("slow", b""))
    assert ctx.on_request_headers(_request(), True) == Action.FAILED
    assert vm.failure is not None and vm.failure.kind == "interrupt"
    assert len(ran) == 2


def test_host_calls_within_the_budget_are_fine(make_host):
    vm, action = _run_with_slow_foreign_function(make_host, 2, 0.01)
    assert action == Action.CONTINUE and vm.failure is None


def test_log_lines_are_cut_at_the_cap_with_a_marker(make_host):
    big = 8 * 1024 * 1024
    mod = hostile_module(
        pages=130,
        request_headers=f"""
    (drop (call $log (i32.const 2) (i32.const 65536) (i32.const {big})))
    (i32.const 0)""",
    )
    host = make_host()
    vm = host.create_vm(host.compile(mod), VmConfig(name="big"))
    ctx = vm.new_http_context(vm.start_plugin("big", b""))
    assert ctx.on_request_headers(_request(), True) == Action.CONTINUE
    line = [r.message for r in host.logs if r.source == "plugin"][-1]
    assert len(line) < MAX_LOG_LINE + 100
    assert line.endswith(f"[truncated: {big - MAX_LOG_LINE} more bytes]")


def _fd_write_module(size: int, times: int, pages: int) -> bytes:
    # iovec at 256: (65536, size); nwritten at 300
    return hostile_module(
        pages=pages,
        request_headers=f"""
    (i32.store (i32.const 256) (i32.const 65536))
    (i32.store (i32.const 260) (i32.const {size}))
    (global.set $n (i32.const 0))
    (block $d (loop $l
      (br_if $d (i32.ge_u (global.get $n) (i32.const {times})))
      (drop (call $fd_write (i32.const 1) (i32.const 256) (i32.const 1) (i32.const 300)))
      (global.set $n (i32.add (global.get $n) (i32.const 1)))
      (br $l)))
    (i32.const 0)""",
    )


def test_one_huge_fd_write_is_cheap_and_cut(make_host):
    # Before: 200 MiB were copied, decoded and logged (seconds, hundreds of MB).
    size = 200 * 1024 * 1024
    host = make_host()
    vm = host.create_vm(host.compile(_fd_write_module(size, 1, 3300)), VmConfig(name="w"))
    ctx = vm.new_http_context(vm.start_plugin("w", b""))
    t0 = time.perf_counter()
    assert ctx.on_request_headers(_request(), True) == Action.CONTINUE
    assert time.perf_counter() - t0 < 0.1
    assert vm.instance.read_u32(300) == size  # reported written: the guest does not retry
    (line,) = [r.message for r in host.logs if r.source == "stdout"]
    assert len(line) < MAX_LOG_LINE + 100 and "truncated" in line


def test_fd_write_output_per_callback_is_capped(make_host):
    host = make_host()
    vm = host.create_vm(host.compile(_fd_write_module(1 << 20, 100, 20)), VmConfig(name="w"))
    root = vm.start_plugin("w", b"")
    for _ in range(2):  # the cap is per callback: the next one may print again
        before = len(host.logs)
        ctx = vm.new_http_context(root)
        assert ctx.on_request_headers(_request(), True) == Action.CONTINUE
        recs = list(host.logs)[before:]
        out = [r for r in recs if r.source == "stdout"]
        assert sum(len(r.message) for r in out) <= MAX_OUTPUT_PER_CALLBACK + 100 * len(out)
        assert len(out) == MAX_OUTPUT_PER_CALLBACK // MAX_LOG_LINE
        assert [r.source for r in recs].count("host") == 1  # one "output dropped" line


def test_uncompress_is_bounded():
    from host.wasm import PluginHost

    host = PluginHost(engine=None)
    try:
        un = host.foreign_functions["uncompress"]
        bomb = zlib.compress(b"\0" * (MAX_FOREIGN_OUTPUT + 1))
        assert len(bomb) < 100_000
        assert un(bomb) == (Status.BAD_ARGUMENT, b"")
        assert un(zlib.compress(b"x" * 1000)) == (Status.OK, b"x" * 1000)
        assert un(zlib.compress(b"abc")[:-2])[0] == Status.SERIALIZATION_FAILURE
        assert un(b"not zlib")[0] == Status.SERIALIZATION_FAILURE
    finally:
        host.close()


# -- callouts: per context, bounded, queued -----------------------------------------------


class _HoldingDispatcher:
    """Accepts every call and completes none until told to."""

    def __init__(self) -> None:
        self.calls: list[object] = []

    def has_cluster(self, name: str) -> bool:
        return True

    def dispatch(self, call, done) -> None:
        self.calls.append((call, done))

    def cancel(self, call) -> None:
        pass


def test_callouts_live_on_their_context_and_go_with_it(make_host):
    host = make_host()
    d = _HoldingDispatcher()
    host.http = d
    mod = callout_module("c", callout_headers(b"/x"), repeat=150)
    vm = host.create_vm(host.compile(mod), VmConfig(name="c"))
    root = vm.start_plugin("c", b"")
    ctx = vm.new_http_context(root)
    assert ctx.on_request_headers(_request(), True) == Action.CONTINUE
    assert ctx.callouts_issued == 150
    assert len(ctx.callouts or ()) == MAX_CALLOUT_RECORDS  # the newest, for display
    first = weakref.ref(d.calls[0][0])
    for call, done in d.calls:
        call.response_status = 200
        done(call)
    host.run_pending()
    ctx.finish()
    d.calls.clear()
    del ctx
    gc.collect()
    # Before: PluginVM.callouts kept every call ever made (and every request scanned it).
    assert first() is None
    assert not hasattr(vm, "callouts")


def test_in_flight_callouts_are_capped_per_vm(make_host):
    host = make_host()
    d = _HoldingDispatcher()
    host.http = d
    mod = callout_module("c", callout_headers(b"/x"), repeat=MAX_INFLIGHT_CALLOUTS + 5)
    vm = host.create_vm(host.compile(mod), VmConfig(name="c", callback_timeout_ms=5000))
    ctx = vm.new_http_context(vm.start_plugin("c", b""))
    h = HeaderMap(list(_request()))
    assert ctx.on_request_headers(h, True) == Action.CONTINUE
    assert h.get(b"x-calls-ok") == str(MAX_INFLIGHT_CALLOUTS).encode()
    assert h.get(b"x-call-status") == str(int(Status.INTERNAL_FAILURE)).encode()
    assert len(d.calls) == MAX_INFLIGHT_CALLOUTS and vm.callouts_refused == 5
    warns = [r.message for r in host.logs if "already in flight" in r.message]
    assert len(warns) == 1  # one line per callback, not one per refused call
    # answered calls free their slots
    for call, done in d.calls[:10]:
        done(call)
    host.run_pending()
    ctx2 = vm.new_http_context(vm.roots["c"])
    h2 = HeaderMap(list(_request()))
    ctx2.on_request_headers(h2, True)
    assert h2.get(b"x-calls-ok") == b"10"


@pytest.mark.alone  # its figures are timing: nothing else runs meanwhile
def test_ten_thousand_callouts_do_not_stall_the_proxy(start_proxy, wasm_file):
    # Before: 10,000 calls stopped data path and admin API for > 9 minutes.
    mod = hostile_module(
        data={CLUSTER: b"wasmdesk-demo-upstream", HEADERS: callout_headers(b"/bytes/1")},
        funcs="  (global $done (mut i32) (i32.const 0))",
        request_headers=f"""
    (if (i32.eqz (global.get $done))
      (then
        (global.set $done (i32.const 1))
        (global.set $n (i32.const 0))
        (block $d (loop $l
          (br_if $d (i32.ge_u (global.get $n) (i32.const 10000)))
          (drop {http_call(22, len(callout_headers(b"/bytes/1")))})
          (global.set $n (i32.add (global.get $n) (i32.const 1)))
          (br $l)))))
    (i32.const 0)""",
    )
    h = start_proxy(
        make_config(
            wasm_plugin(
                "flood",
                wasm_file(mod, "flood"),
                annotations={"wasmdesk.dev/callback-timeout": "5s"},
            )
        )
    )
    with h.client() as c:
        assert c.get("/flood").status_code == 200
        # the callouts are in flight now; plain requests must keep answering
        worst = 0.0
        for i in range(5):
            t0 = time.monotonic()
            assert c.get(f"/plain/{i}").status_code == 200
            worst = max(worst, time.monotonic() - t0)
    assert worst < 1.0, f"a plain request took {worst:.2f}s while callouts ran"
    r = h.admin("GET", "/stats?format=json", timeout=2.0)
    assert r.status_code == 200
    stats = {s["name"]: s["value"] for s in r.json()["stats"] if "name" in s}
    done = stats.get("cluster.wasmdesk-demo-upstream.callout_success", 0)
    assert done <= MAX_INFLIGHT_CALLOUTS
    # /quitquitquit answers at once, mid-flood
    t0 = time.monotonic()
    assert h.admin("POST", "/quitquitquit", json={}, timeout=2.0).status_code == 200
    assert time.monotonic() - t0 < 1.0
    assert h.sync(lambda: h.server._stop_event.is_set())
    h.wait_for(
        lambda: (
            h.stats().get("cluster.wasmdesk-demo-upstream.callout_success", 0)
            + h.stats().get("cluster.wasmdesk-demo-upstream.callout_failure", 0)
            >= MAX_INFLIGHT_CALLOUTS
        ),
        timeout=20,
        what="the 1000 admitted callouts to finish",
    )


def test_inspector_keeps_only_this_requests_callouts(start_proxy, wasm_file):
    mod = callout_module("wasmdesk-demo-upstream", callout_headers(b"/bytes/1"), repeat=120)
    h = start_proxy(make_config(wasm_plugin("c", wasm_file(mod, "c"))))
    with h.client() as c:
        for i in range(3):
            assert c.get(f"/r{i}").status_code == 200
    recs = h.records()
    assert [len(r.hops[0].callouts) for r in recs] == [MAX_CALLOUT_RECORDS] * 3
    json.dumps([r.hops[0].callouts for r in recs])  # still plain data


def test_local_reply_bodies_over_the_cap_are_refused(abi):
    from host.wasm.abi import stream_control as sc

    ctx = abi.http_context()
    size = sc.MAX_LOCAL_REPLY_BODY + 1
    body = abi.vm.allocate(size)
    assert body
    with abi.on(ctx):
        st = sc.proxy_send_local_response(abi.vm, 200, 0, 0, body, size, 0, 0, 0xFFFFFFFF)
        assert st == Status.BAD_ARGUMENT and ctx.local_response is None
        with pytest.raises(GuestFault):  # the trampoline answers INVALID_MEMORY_ACCESS
            sc.proxy_send_local_response(abi.vm, 200, 0, 0, 0xFFFFFF00, size, 0, 0, 0)
        st = sc.proxy_send_local_response(abi.vm, 200, 0, 0, body, 1 << 20, 0, 0, 0xFFFFFFFF)
        assert st == Status.OK and len(ctx.local_response.body) == 1 << 20
