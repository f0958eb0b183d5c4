"""Context management, foreign functions and proxy_get_status: proxy_set_effective_context,
proxy_done, proxy_call_foreign_function (ABI doc §1.5, §2.2, §6.4)."""

from __future__ import annotations

import zlib

import pytest

from host.wasm.abi import callouts, contexts
from host.wasm.pairs import encode_pairs
from host.wasm.types import Status
from tests.fixtures import wat_modules
from tests.host.wasm.conftest import AbiHarness

SENTINEL = 0xAAAAAAAA


def _slot(abi):
    return abi.put(SENTINEL.to_bytes(4, "little"))


# -- proxy_set_effective_context ----------------------------------------------------------


def test_effective_context_switches_to_a_known_stream(abi):
    ctx = abi.http_context()
    with abi.on(abi.root):
        assert contexts.proxy_set_effective_context(abi.vm, ctx.id) == Status.OK
        assert abi.vm.effective is ctx
        assert abi.vm.ctx is ctx
        assert abi.vm.current is abi.root


def test_effective_context_can_be_the_root_itself(abi):
    ctx = abi.http_context()
    with abi.on(ctx):
        assert contexts.proxy_set_effective_context(abi.vm, abi.root.id) == Status.OK
        assert abi.vm.ctx is abi.root


@pytest.mark.parametrize("cid", [0, 999, 0xFFFFFFFF])
def test_unknown_effective_context_is_bad_argument_and_changes_nothing(abi, cid):
    with abi.on(abi.root):
        assert contexts.proxy_set_effective_context(abi.vm, cid) == Status.BAD_ARGUMENT
        assert abi.vm.effective is None
        assert abi.vm.ctx is abi.root


def test_deleted_effective_context_is_bad_argument(abi):
    ctx = abi.http_context()
    ctx.finish()
    assert ctx.deleted
    with abi.on(abi.root):
        assert contexts.proxy_set_effective_context(abi.vm, ctx.id) == Status.BAD_ARGUMENT
        assert abi.vm.ctx is abi.root


# -- a module for proxy_done and proxy_get_status ------------------------------------------

# proxy_on_done returns 0 (roots park in "pending done"); proxy_on_tick calls proxy_done
# and logs its status; proxy_on_delete logs "deleted"; proxy_on_http_call_response logs
# proxy_get_status's code ("code=11" / "code=0" / "code=other") and "msg=<message>".
_CTX_WAT = r"""
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_status" (func $get_status (param i32 i32 i32) (result i32)))
  (import "env" "proxy_done" (func $done (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "code=11")
  (data (i32.const 1088) "code=0")
  (data (i32.const 1152) "code=other")
  (data (i32.const 1216) "msg=")
  (data (i32.const 1280) "deleted")
  (data (i32.const 1344) "done status=0")
  (data (i32.const 1408) "done status=1")
  (data (i32.const 1472) "done status=other")
  (global $heap (mut i32) (i32.const 65536))
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap
      (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 0))
  (func (export "proxy_on_delete") (param i32)
    (drop (call $log (i32.const 2) (i32.const 1280) (i32.const 7))))
  (func (export "proxy_on_tick") (param i32)
    (local $s i32)
    (local.set $s (call $done))
    (if (i32.eqz (local.get $s))
      (then (drop (call $log (i32.const 2) (i32.const 1344) (i32.const 13))))
      (else (if (i32.eq (local.get $s) (i32.const 1))
        (then (drop (call $log (i32.const 2) (i32.const 1408) (i32.const 13))))
        (else (drop (call $log (i32.const 2) (i32.const 1472) (i32.const 17))))))))
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32)
    (local $n i32)
    (drop (call $get_status (i32.const 256) (i32.const 260) (i32.const 264)))
    (if (i32.eq (i32.load (i32.const 256)) (i32.const 11))
      (then (drop (call $log (i32.const 2) (i32.const 1024) (i32.const 7))))
      (else (if (i32.eqz (i32.load (i32.const 256)))
        (then (drop (call $log (i32.const 2) (i32.const 1088) (i32.const 6))))
        (else (drop (call $log (i32.const 2) (i32.const 1152) (i32.const 10)))))))
    (local.set $n (i32.load (i32.const 264)))
    (memory.copy (i32.const 16384) (i32.const 1216) (i32.const 4))
    (memory.copy (i32.const 16388) (i32.load (i32.const 260)) (local.get $n))
    (drop (call $log (i32.const 2) (i32.const 16384) (i32.add (i32.const 4) (local.get $n)))))
)
"""


class Upstream:
    """A dispatcher for cluster "c" whose calls the test completes by hand."""

    def __init__(self):
        self.calls = []

    def has_cluster(self, name):
        return name == "c"

    def dispatch(self, call, done):
        self.calls.append((call, done))

    def cancel(self, call):
        pass


@pytest.fixture
def ctx_abi(start_vm, make_host):
    upstream = Upstream()
    host = make_host(http=upstream)
    host, vm, root = start_vm(wat_modules.compile_wat(_CTX_WAT, "ctx_probe"), host=host)
    h = AbiHarness(host, vm, root)
    h.upstream = upstream
    return h


def plugin_lines(host):
    return [r.message for r in host.logs if r.source == "plugin"]


# -- proxy_done ---------------------------------------------------------------------------


def test_proxy_done_without_a_pending_root_is_not_found(ctx_abi):
    ctx_abi.vm.tick(ctx_abi.root)
    assert plugin_lines(ctx_abi.host) == ["done status=1"]
    with ctx_abi.on(ctx_abi.root):
        assert contexts.proxy_done(ctx_abi.vm) == Status.NOT_FOUND


def test_proxy_done_finishes_a_pending_root_after_the_callback_returns(ctx_abi):
    vm, root, host = ctx_abi.vm, ctx_abi.root, ctx_abi.host
    vm.remove_plugin(root)
    assert root.pending_done is True
    assert root.deleted is False
    host.pending.clear()
    vm.tick(root)  # on_tick calls proxy_done()
    assert plugin_lines(host) == ["done status=0"]  # on_delete not run inside the call
    assert root.deleted is False
    host.run_pending()
    assert plugin_lines(host) == ["done status=0", "deleted"]
    assert root.deleted is True
    assert root.id not in vm.contexts


def test_a_second_proxy_done_for_the_same_root_is_not_found(ctx_abi):
    # cpp-host WasmBase::done erases the root from pending_done_ at once.
    vm, root, host = ctx_abi.vm, ctx_abi.root, ctx_abi.host
    vm.remove_plugin(root)
    host.pending.clear()
    with ctx_abi.on(root):
        assert contexts.proxy_done(vm) == Status.OK
        assert contexts.proxy_done(vm) == Status.NOT_FOUND
    assert len(host.pending) == 1
    host.run_pending()
    assert plugin_lines(host) == ["deleted"]


# -- proxy_get_status ---------------------------------------------------------------------


def _dispatch(ctx_abi):
    headers = encode_pairs([(b":method", b"GET"), (b":path", b"/x"), (b":authority", b"c")])
    up, hp, rt = ctx_abi.put(b"c"), ctx_abi.put(headers), _slot(ctx_abi)
    with ctx_abi.on(ctx_abi.root):
        st = callouts.proxy_http_call(ctx_abi.vm, up, 1, hp, len(headers), 0, 0, 0, 0, 500, rt)
    assert st == Status.OK
    token = ctx_abi.u32(rt)
    assert token not in (0, SENTINEL)
    call, done = ctx_abi.upstream.calls[-1]
    assert call.token == token
    return call, done


def test_get_status_after_a_failed_callout_is_broken_connection_with_the_reason(ctx_abi):
    call, done = _dispatch(ctx_abi)
    call.failure = "reset"
    done(call)
    assert plugin_lines(ctx_abi.host) == []  # delivered later, never inside a call
    ctx_abi.host.run_pending()
    assert plugin_lines(ctx_abi.host) == ["code=11", "msg=reset"]


def test_get_status_after_a_successful_callout_is_ok_and_empty(ctx_abi):
    call, done = _dispatch(ctx_abi)
    call.response_headers = [(b":status", b"200")]
    call.response_body = b"ok"
    done(call)
    ctx_abi.host.run_pending()
    assert plugin_lines(ctx_abi.host) == ["code=0", "msg="]


def test_get_status_reads_the_root_context_from_a_stream_context(abi):
    abi.root.last_status = (14, b"unavailable")
    ctx = abi.http_context()
    rc, rp, rs = _slot(abi), _slot(abi), _slot(abi)
    with abi.on(ctx):
        assert callouts.proxy_get_status(abi.vm, rc, rp, rs) == Status.OK
    assert abi.u32(rc) == 14
    assert abi.returned(rp, rs) == b"unavailable"


def test_get_status_with_no_message_writes_a_null_pointer(abi):
    rc, rp, rs = _slot(abi), _slot(abi), _slot(abi)
    with abi.on(abi.root):
        assert callouts.proxy_get_status(abi.vm, rc, rp, rs) == Status.OK
    assert (abi.u32(rc), abi.u32(rp), abi.u32(rs)) == (0, 0, 0)


# -- proxy_call_foreign_function ------------------------------------------------------------


def call_foreign(abi, name: bytes, args: bytes, *, ret_ptr=None, ret_size=None):
    n, a = abi.put(name), abi.put(args or b"\0")
    rp = _slot(abi) if ret_ptr is None else ret_ptr
    rs = _slot(abi) if ret_size is None else ret_size
    with abi.on(abi.root):
        st = contexts.proxy_call_foreign_function(abi.vm, n, len(name), a, len(args), rp, rs)
    if rp == 0 or (abi.u32(rp), abi.u32(rs)) == (SENTINEL, SENTINEL):
        return st, None
    return st, abi.returned(rp, rs)


def test_compress_and_uncompress_round_trip_through_guest_memory(abi):
    payload = b"hello proxy-wasm " * 20
    st, packed = call_foreign(abi, b"compress", payload)
    assert st == Status.OK
    assert packed == zlib.compress(payload)
    assert len(packed) < len(payload)
    st, unpacked = call_foreign(abi, b"uncompress", packed)
    assert (st, unpacked) == (Status.OK, payload)


def test_uncompress_of_garbage_is_serialization_failure(abi):
    assert call_foreign(abi, b"uncompress", b"not zlib") == (Status.SERIALIZATION_FAILURE, None)


def test_unknown_foreign_function_is_not_found_and_writes_nothing(abi):
    assert call_foreign(abi, b"no_such_function", b"x") == (Status.NOT_FOUND, None)


def test_foreign_function_output_is_discarded_when_ret_ptr_is_zero(abi):
    n, a, rs = abi.put(b"compress"), abi.put(b"data"), _slot(abi)
    allocated = abi.vm.guest_allocations  # the guest allocator's calls so far
    with abi.on(abi.root):
        assert contexts.proxy_call_foreign_function(abi.vm, n, 8, a, 4, 0, rs) == Status.OK
    assert abi.vm.guest_allocations == allocated
    assert abi.u32(rs) == SENTINEL


def test_host_registered_foreign_function_gets_the_argument_bytes(abi):
    seen = []

    def echo_upper(args: bytes):
        seen.append(args)
        return Status.OK, args.upper()

    abi.host.foreign_functions["echo_upper"] = echo_upper
    assert call_foreign(abi, b"echo_upper", b"a\x00b") == (Status.OK, b"A\x00B")
    assert seen == [b"a\x00b"]


def test_foreign_function_status_and_empty_output_are_passed_through(abi):
    abi.host.foreign_functions["fails"] = lambda args: (Status.INTERNAL_FAILURE, b"ignored")
    abi.host.foreign_functions["empty"] = lambda args: (Status.OK, b"")
    assert call_foreign(abi, b"fails", b"") == (Status.INTERNAL_FAILURE, None)
    rp, rs = _slot(abi), _slot(abi)
    st, _ = call_foreign(abi, b"empty", b"", ret_ptr=rp, ret_size=rs)
    assert st == Status.OK
    assert (abi.u32(rp), abi.u32(rs)) == (0, 0)
