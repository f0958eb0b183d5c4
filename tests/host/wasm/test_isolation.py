"""Failure isolation (ABI doc §6.8): a trap, a runaway loop, a memory bomb, a bad pointer,
proc_exit or a failing host function fails that plugin's VM (sticky), never the
process, and never another VM on the same host."""

from __future__ import annotations

import time

import pytest

from host.wasm import Action, FailState, HeaderMap, VmConfig, VmStartError
from tests.fixtures import wat_modules as wm

# trap kind (fixture name) -> (Failure.kind, the function the top backtrace frame names)
TRAPS = {
    "unreachable": ("unreachable", "proxy_on_request_headers"),
    "oob": ("memory_out_of_bounds", "proxy_on_request_headers"),
    "loop": ("interrupt", "proxy_on_request_headers"),
    "memory_bomb": ("unreachable", "memory_bomb_capped"),
    "div_zero": ("integer_division_by_zero", "proxy_on_request_headers"),
    "stack_overflow": ("stack_overflow", "recurse"),
}
assert set(TRAPS) == set(wm.TRAP_KINDS) - {"memory_grow_report"}


def request(path: str = "/") -> HeaderMap:
    return HeaderMap([(":method", "GET"), (":path", path), (":authority", "example")])


def messages(host) -> list[str]:
    return [r.message for r in host.logs]


@pytest.mark.parametrize("kind", list(TRAPS))
def test_trap_in_request_headers_fails_only_that_vm(make_host, kind):
    host = make_host()
    bad = host.create_vm(
        host.compile(wm.make_trap_module("proxy_on_request_headers", kind)), VmConfig(name="bad")
    )
    good = host.create_vm(host.compile(wm.make_hostcall_sequence_module()), VmConfig(name="good"))
    bad_root, good_root = bad.start_plugin("bad", b""), good.start_plugin("good", b"")
    bad.trace_calls = True
    failure_kind, top_frame = TRAPS[kind]
    forwarded: list[HeaderMap] = []

    for i in range(3):
        bad_ctx, good_ctx = bad.new_http_context(bad_root), good.new_http_context(good_root)
        calls_before = len(bad.trace)
        t0 = time.perf_counter()
        action = bad_ctx.on_request_headers(request(f"/{i}"), True)
        elapsed = time.perf_counter() - t0
        assert action == Action.FAILED
        if i == 0:
            trapped = ("proxy_on_request_headers", bad_ctx.id, f"trap: {failure_kind}")
            assert bad.trace[-1] == trapped
            if kind == "loop":  # interrupted by the default 100 ms budget
                assert 0.05 < elapsed < 1.0
        else:
            assert len(bad.trace) == calls_before  # sticky: no guest code runs any more
        bad_ctx.finish()  # on_done / on_log / on_delete skipped on a failed VM
        assert len(bad.trace) == calls_before + (2 if i == 0 else 0)
        headers = request(f"/{i}")
        assert good_ctx.on_request_headers(headers, True) == Action.CONTINUE
        good_ctx.finish()
        forwarded.append(headers)

    f = bad.failure
    assert f is not None
    assert f.state == FailState.RUNTIME_ERROR
    assert (f.kind, f.callback) == (failure_kind, "proxy_on_request_headers")
    assert f.message.startswith("proxy_on_request_headers: ")
    assert f.backtrace and top_frame in f.backtrace[0]
    assert any(m.startswith("plugin VM failed: " + failure_kind) for m in messages(host))
    assert good.failure is None
    assert [h.get("x-typical") for h in forwarded] == [b"1"] * 3
    assert messages(host).count("typical") == 3


def test_stack_overflow_backtrace_still_names_the_callback(start_vm):
    host, vm, root = start_vm(wm.make_trap_module("proxy_on_request_headers", "stack_overflow"))
    vm.new_http_context(root).on_request_headers(request(), True)
    assert vm.failure is not None
    assert any("proxy_on_request_headers" in frame for frame in vm.failure.backtrace)


def test_memory_bomb_is_stopped_by_the_memory_cap(start_vm):
    host, vm, root = start_vm(
        wm.make_trap_module("proxy_on_request_headers", "memory_bomb"),
        memory_limit_bytes=16 << 20,
    )
    assert vm.new_http_context(root).on_request_headers(request(), True) == Action.FAILED
    assert vm.failure is not None
    assert "memory_bomb_capped" in vm.failure.backtrace[0]
    assert vm.memory_bytes() <= 16 << 20


def test_memory_grows_up_to_the_configured_cap_and_no_further(start_vm):
    host, vm, root = start_vm(
        wm.make_trap_module("proxy_on_request_headers", "memory_grow_report"),
        memory_limit_bytes=16 << 20,
    )

    assert vm.new_http_context(root).on_request_headers(request(), True) == Action.CONTINUE

    assert messages(host) == ["grew to 256 pages"]
    assert vm.failure is None


def test_infinite_loop_is_interrupted_within_a_custom_budget(start_vm):
    host, vm, root = start_vm(
        wm.make_trap_module("proxy_on_request_headers", "loop"), callback_timeout_ms=30
    )
    t0 = time.perf_counter()
    action = vm.new_http_context(root).on_request_headers(request(), True)
    elapsed = time.perf_counter() - t0

    assert action == Action.FAILED
    assert vm.failure is not None and vm.failure.kind == "interrupt"
    assert 0.015 < elapsed < 1.0


def test_bad_guest_pointers_get_invalid_memory_access_and_change_nothing(start_vm):
    host, vm, root = start_vm(wm.make_bad_pointer_module())
    headers = request("/kept")
    before = headers.items()

    assert vm.new_http_context(root).on_request_headers(headers, True) == Action.CONTINUE

    assert messages(host) == ["statuses: 6,6,6,6,6"]
    assert headers.items() == before
    assert vm.failure is None


def test_proc_exit_in_a_callback_fails_the_vm_with_its_exit_code(start_vm):
    host, vm, root = start_vm(wm.make_wasi_probe_module())
    headers = HeaderMap([(f"x-h{i}", "v") for i in range(77)])  # the probe's trigger

    assert vm.new_http_context(root).on_request_headers(headers, False) == Action.FAILED

    f = vm.failure
    assert f is not None
    assert f.state == FailState.RUNTIME_ERROR
    assert (f.kind, f.callback) == ("proc_exit", "proxy_on_request_headers")
    assert "proc_exit(3)" in f.message
    assert vm.instance.proc_exit_code == 3


def test_wasi_probe_without_the_trigger_keeps_working(start_vm):
    host, vm, root = start_vm(wm.make_wasi_probe_module())
    assert vm.new_http_context(root).on_request_headers(request(), True) == Action.CONTINUE
    assert vm.failure is None


def test_host_function_raising_becomes_a_host_error_failure(start_vm, monkeypatch):
    host, vm, root = start_vm(wm.make_hostcall_sequence_module())

    real_sink = host.log_sink

    def broken_sink(record):
        if record.source == "plugin":  # the plugin's proxy_log line, not the host's own
            raise RuntimeError("log sink exploded")
        if real_sink is not None:
            real_sink(record)

    # the host's log breaks under proxy_log: the host function raises inside the callback
    # (its sink, not ``host.log`` itself: PluginHost is a compiled class with the data path
    # compiled, whose methods cannot be replaced on an instance)
    monkeypatch.setattr(host, "log_sink", broken_sink)

    action = vm.new_http_context(root).on_request_headers(request(), True)  # must not raise

    assert action == Action.FAILED
    f = vm.failure
    assert f is not None
    assert f.state == FailState.RUNTIME_ERROR
    assert (f.kind, f.callback) == ("host_error", "proxy_on_request_headers")
    assert "RuntimeError" in f.message and "log sink exploded" in f.message
    monkeypatch.undo()
    assert vm.new_http_context(root).on_request_headers(request(), True) == Action.FAILED


@pytest.mark.parametrize("kind", ["unreachable", "loop"])
def test_trap_in_the_allocator_during_a_hostcall_fails_the_vm_naming_the_allocator(
    start_vm, kind
):
    host, vm, root = start_vm(wm.make_trap_module("malloc", kind))

    assert vm.new_http_context(root).on_request_headers(request(), True) == Action.FAILED

    f = vm.failure
    assert f is not None
    assert f.state == FailState.RUNTIME_ERROR
    assert f.kind == ("unreachable" if kind == "unreachable" else "interrupt")
    assert f.callback == "proxy_on_request_headers"
    assert "malloc" in f.message and "allocator" in f.message
    assert "malloc" in f.backtrace[0]


def test_allocator_growing_memory_to_the_cap_inside_a_hostcall_is_not_a_failure(start_vm):
    # The fixture's malloc first grows memory one page at a time until the cap refuses,
    # then serves the request from its heap (the README's "returns 0" does not hold: the
    # heap already fits). The hostcall result must land in the re-read, grown memory.
    host, vm, root = start_vm(
        wm.make_trap_module("malloc", "memory_grow_report"), memory_limit_bytes=4 << 20
    )

    assert vm.new_http_context(root).on_request_headers(request("/p"), True) == Action.CONTINUE

    assert messages(host) == ["grew to 64 pages"]
    assert vm.failure is None
    ptr, size = vm.instance.read_u32(256), vm.instance.read_u32(260)
    assert vm.instance.read(ptr, size) == b"/p"


def test_trap_in_initialize_is_unable_to_initialize_code(make_host):
    host = make_host()
    with pytest.raises(VmStartError) as err:
        host.create_vm(host.compile(wm.make_trap_module("_initialize", "unreachable")), VmConfig())
    f = err.value.failure
    assert f.state == FailState.UNABLE_TO_INITIALIZE_CODE
    assert (f.kind, f.callback) == ("unreachable", "_initialize")


def test_loop_in_initialize_is_interrupted(make_host):
    host = make_host()
    with pytest.raises(VmStartError) as err:
        host.create_vm(
            host.compile(wm.make_trap_module("_initialize", "loop")),
            VmConfig(callback_timeout_ms=20),
        )
    assert (err.value.failure.state, err.value.failure.kind) == (
        FailState.UNABLE_TO_INITIALIZE_CODE, "interrupt",
    )


def test_trap_in_configure_is_configure_failed(make_host):
    host = make_host()
    vm = host.create_vm(host.compile(wm.make_trap_module("proxy_on_configure", "oob")), VmConfig())
    with pytest.raises(VmStartError) as err:
        vm.start_plugin("p", b"")
    f = err.value.failure
    assert f.state == FailState.CONFIGURE_FAILED
    assert (f.kind, f.callback) == ("memory_out_of_bounds", "proxy_on_configure")
    assert vm.failed


def test_reconfiguring_a_failed_vm_keeps_its_runtime_error(start_vm):
    host, vm, root = start_vm(wm.make_trap_module("proxy_on_request_headers", "unreachable"))
    vm.new_http_context(root).on_request_headers(request(), True)
    assert vm.failure is not None and vm.failure.state == FailState.RUNTIME_ERROR

    assert vm.configure(root, b"new configuration") is False

    assert vm.failure.state == FailState.RUNTIME_ERROR
    assert vm.failure.callback == "proxy_on_request_headers"


def test_trap_in_vm_start_is_start_failed(make_host):
    host = make_host()
    module = host.compile(wm.make_trap_module("proxy_on_vm_start", "div_zero"))
    vm = host.create_vm(module, VmConfig())
    with pytest.raises(VmStartError) as err:
        vm.start_plugin("p", b"")
    assert (err.value.failure.state, err.value.failure.kind) == (
        FailState.START_FAILED, "integer_division_by_zero",
    )


def test_trap_in_on_done_still_deletes_the_stream_and_fails_the_vm(start_vm):
    host, vm, root = start_vm(wm.make_trap_module("proxy_on_done", "unreachable"))
    vm.trace_calls = True
    ctx = vm.new_http_context(root)
    assert ctx.on_request_headers(request(), True) == Action.CONTINUE

    ctx.finish()

    assert vm.failure is not None and vm.failure.callback == "proxy_on_done"
    assert [name for name, _, _ in vm.trace][-1] == "proxy_on_done"  # no on_log / on_delete
    assert ctx.deleted and ctx.id not in vm.contexts


def test_failed_vm_stops_ticks_and_callout_deliveries(start_vm):
    host, vm, root = start_vm(wm.make_trap_module("proxy_on_tick", "unreachable"))
    vm.trace_calls = True

    assert vm.tick(root) is False
    assert vm.failure is not None and vm.failure.callback == "proxy_on_tick"
    calls = len(vm.trace)
    assert vm.tick(root) is False
    assert len(vm.trace) == calls


def test_failure_listeners_hear_of_the_failure_once(start_vm):
    host, vm, root = start_vm(wm.make_trap_module("proxy_on_request_headers", "unreachable"))
    heard = []

    class Listener:
        def vm_failed(self, failed_vm):
            heard.append(failed_vm.failure.kind)

    vm.failure_listeners.append(Listener())
    for _ in range(3):
        vm.new_http_context(root).on_request_headers(request(), True)

    assert heard == ["unreachable"]
