"""TCP stream callbacks and gRPC callouts through the dispatcher interface.

The WAT modules record what they saw at fixed guest addresses; the tests read guest
memory directly, so every assertion is about what the plugin really observed.
"""

from __future__ import annotations

from collections.abc import Callable

import wasmtime

from host.wasm import Action, HeaderMap, PluginHost
from host.wasm.context import GrpcCall, StreamListener
from host.wasm.types import Status, StreamType

# Results area: 0x200 + 4*i (u32 each).
R = 0x200

COMMON = """
  (memory (export "memory") 2)
  (global $bump (mut i32) (i32.const 0x8000))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    global.get $bump local.set $p
    global.get $bump local.get $n i32.add i32.const 7 i32.add i32.const -8 i32.and global.set $bump
    local.get $p)
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_done") (param i32) (result i32) i32.const 1)
  (func $rec (param $i i32) (param $v i32) (i32.store (i32.add (i32.const 0x200) (i32.shl (local.get $i) (i32.const 2))) (local.get $v)))
"""

TCP_WAT = f"""
(module
  (import "env" "proxy_get_buffer_bytes" (func $get_buf (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set_buf (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (import "env" "proxy_close_stream" (func $close (param i32) (result i32)))
  {COMMON}
  (data (i32.const 0x100) "X!")
  (global $conn (mut i32) (i32.const 0))
  (func (export "proxy_on_new_connection") (param $id i32) (result i32)
    (call $rec (i32.const 0) (local.get $id)) (global.set $conn (local.get $id)) i32.const 0)
  ;; downstream: pause until 3+ bytes are buffered, then prepend "X" and forward
  (func (export "proxy_on_downstream_data") (param $id i32) (param $size i32) (param $eos i32) (result i32)
    (call $rec (i32.const 1) (local.get $size))
    (call $rec (i32.const 2) (local.get $eos))
    (if (i32.lt_u (local.get $size) (i32.const 3)) (then (return (i32.const 1))))
    (call $rec (i32.const 3) (call $get_buf (i32.const 2) (i32.const 0) (i32.const 100) (i32.const 0x300) (i32.const 0x304)))
    (call $rec (i32.const 4) (call $set_buf (i32.const 2) (i32.const 0) (i32.const 0) (i32.const 0x100) (i32.const 1)))
    i32.const 0)
  ;; upstream: append "!"; data "close" makes the plugin close the connection
  (func (export "proxy_on_upstream_data") (param $id i32) (param $size i32) (param $eos i32) (result i32)
    (call $rec (i32.const 5) (local.get $size))
    (call $rec (i32.const 6) (call $set_buf (i32.const 3) (i32.const 0xFFFFFFFF) (i32.const 0) (i32.const 0x101) (i32.const 1)))
    (if (i32.eq (local.get $size) (i32.const 5)) (then (call $rec (i32.const 7) (call $close (i32.const 2)))))
    i32.const 0)
  (func (export "proxy_on_downstream_connection_close") (param $id i32) (param $peer i32)
    (call $rec (i32.const 8) (i32.add (i32.const 100) (local.get $peer))))
  (func (export "proxy_on_upstream_connection_close") (param $id i32) (param $peer i32)
    (call $rec (i32.const 9) (i32.add (i32.const 200) (local.get $peer))))
  (func (export "proxy_on_log") (param $id i32) (call $rec (i32.const 10) (i32.const 1)))
  (func (export "proxy_on_delete") (param $id i32) (call $rec (i32.const 11) (i32.const 1)))
)
"""

GRPC_WAT = f"""
(module
  (import "env" "proxy_grpc_call" (func $grpc_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_stream" (func $grpc_stream (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_send" (func $grpc_send (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_cancel" (func $grpc_cancel (param i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buf (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $get_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_status" (func $get_status (param i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $set_eff (param i32) (result i32)))
  {COMMON}
  (data (i32.const 0x100) "authz")
  (data (i32.const 0x110) "pkg.Auth")
  (data (i32.const 0x120) "Check")
  (data (i32.const 0x130) "ping")
  (global $stream_ctx (mut i32) (i32.const 0))
  (func (export "proxy_on_request_headers") (param $id i32) (param $n i32) (param $eos i32) (result i32)
    (global.set $stream_ctx (local.get $id))
    ;; unary call, token to 0x400; then a stream, token to 0x404; send on both
    (call $rec (i32.const 0) (call $grpc_call (i32.const 0x100) (i32.const 5) (i32.const 0x110) (i32.const 8)
        (i32.const 0x120) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 0x130) (i32.const 4)
        (i32.const 1000) (i32.const 0x400)))
    (call $rec (i32.const 1) (call $grpc_stream (i32.const 0x100) (i32.const 5) (i32.const 0x110) (i32.const 8)
        (i32.const 0x120) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 0x404)))
    (call $rec (i32.const 2) (call $grpc_send (i32.load (i32.const 0x404)) (i32.const 0x130) (i32.const 4) (i32.const 0)))
    (call $rec (i32.const 3) (call $grpc_send (i32.load (i32.const 0x400)) (i32.const 0x130) (i32.const 4) (i32.const 0)))
    (call $rec (i32.const 4) (call $grpc_send (i32.const 0x7777) (i32.const 0x130) (i32.const 4) (i32.const 0)))
    i32.const 1)
  (func (export "proxy_on_grpc_receive_initial_metadata") (param $root i32) (param $tok i32) (param $n i32)
    (call $rec (i32.const 5) (local.get $n))
    (call $rec (i32.const 6) (call $get_pairs (i32.const 4) (i32.const 0x408) (i32.const 0x40c))))
  (func (export "proxy_on_grpc_receive") (param $root i32) (param $tok i32) (param $size i32)
    (call $rec (i32.const 7) (local.get $root))
    (call $rec (i32.const 8) (local.get $size))
    (call $rec (i32.const 9) (call $get_buf (i32.const 5) (i32.const 0) (i32.const 100) (i32.const 0x410) (i32.const 0x414))))
  (func (export "proxy_on_grpc_close") (param $root i32) (param $tok i32) (param $status i32)
    (call $rec (i32.const 10) (local.get $status))
    (call $rec (i32.const 11) (call $get_status (i32.const 0x418) (i32.const 0x41c) (i32.const 0x420)))
    (call $rec (i32.const 12) (call $set_eff (global.get $stream_ctx)))
    (call $rec (i32.const 13) (call $continue (i32.const 0))))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32))
)
"""


def rec(vm, i: int) -> int:
    return vm.instance.read_u32(R + 4 * i)


def signed(v: int) -> int:
    return v - (1 << 32) if v & 0x80000000 else v


class Events(StreamListener):
    def __init__(self) -> None:
        self.resumed: list[StreamType] = []
        self.closed: list[StreamType] = []

    def on_resume(self, ctx, stream):
        self.resumed.append(stream)

    def on_close(self, ctx, stream):
        self.closed.append(stream)


def test_tcp_data_is_buffered_while_paused_then_modified_and_forwarded(start_vm):
    host, vm, root = start_vm(bytes(wasmtime.wat2wasm(TCP_WAT)))
    ctx = vm.new_tcp_context(root)
    assert ctx.on_new_connection() == Action.CONTINUE
    assert rec(vm, 0) == ctx.id
    assert ctx.on_downstream_data(b"ab", False) == Action.PAUSE
    assert rec(vm, 1) == 2
    # the paused data stays in the buffer; the next chunk is appended and the size grows
    assert ctx.on_downstream_data(b"cd", True) == Action.CONTINUE
    assert rec(vm, 1) == 4 and rec(vm, 2) == 1
    assert rec(vm, 3) == Status.OK and rec(vm, 4) == Status.OK
    p, n = vm.instance.read_u32(0x300), vm.instance.read_u32(0x304)
    assert vm.instance.read(p, n) == b"abcd"
    assert ctx.take_data(StreamType.DOWNSTREAM) == b"Xabcd"


def test_tcp_upstream_append_close_and_lifecycle(start_vm):
    host, vm, root = start_vm(bytes(wasmtime.wat2wasm(TCP_WAT)))
    ev = Events()
    ctx = vm.new_tcp_context(root, listener=ev)
    ctx.on_new_connection()
    assert ctx.on_upstream_data(b"pong", False) == Action.CONTINUE
    assert ctx.take_data(StreamType.UPSTREAM) == b"pong!"
    assert rec(vm, 6) == Status.OK
    # the plugin closes the downstream connection from within the callback
    assert ctx.on_upstream_data(b"close", False) == Action.CLOSE
    assert rec(vm, 7) == Status.OK
    ctx.on_downstream_close(peer=2)
    ctx.on_upstream_close(peer=0)
    assert rec(vm, 8) == 102 and rec(vm, 9) == 200
    ctx.finish()
    assert rec(vm, 10) == 1 and rec(vm, 11) == 1
    assert ctx.deleted and ctx.id not in vm.contexts


class FakeGrpc:
    """A gRPC dispatcher that accepts calls and answers when told to."""

    def __init__(self) -> None:
        self.calls: list[GrpcCall] = []
        self.events: list[object] = []
        self.sent: list[tuple[int, bytes, bool]] = []
        self.cancelled: list[int] = []

    def start(self, call: GrpcCall, events: object) -> Status:
        self.calls.append(call)
        self.events.append(events)
        return Status.OK

    def send(self, call: GrpcCall, message: bytes, end_stream: bool) -> Status:
        self.sent.append((call.token, message, end_stream))
        return Status.OK

    def cancel(self, call: GrpcCall) -> None:
        self.cancelled.append(call.token)

    def close(self, call: GrpcCall) -> None:
        pass


def _grpc_vm(start_vm, make_host: Callable[..., PluginHost], grpc: object):
    host = make_host(grpc=grpc)
    return start_vm(bytes(wasmtime.wat2wasm(GRPC_WAT)), host=host)


def test_grpc_call_and_stream_go_through_the_dispatcher(start_vm, make_host):
    fake = FakeGrpc()
    host, vm, root = _grpc_vm(start_vm, make_host, fake)
    ev = Events()
    ctx = vm.new_http_context(root, listener=ev)
    assert ctx.on_request_headers(HeaderMap([(":path", "/")]), True) == Action.PAUSE
    assert rec(vm, 0) == Status.OK and rec(vm, 1) == Status.OK
    unary, stream = fake.calls
    assert (unary.cluster, unary.service, unary.method, unary.message) == ("authz", "pkg.Auth", "Check", b"ping")
    assert not unary.stream and stream.stream
    assert unary.token == vm.instance.read_u32(0x400) and unary.token % 4 == 1
    assert stream.token == vm.instance.read_u32(0x404) and stream.token % 4 == 2
    # send on the stream: OK; on a unary call: BAD_ARGUMENT; unknown token: NOT_FOUND
    assert rec(vm, 2) == Status.OK and fake.sent == [(stream.token, b"ping", False)]
    assert rec(vm, 3) == Status.BAD_ARGUMENT
    assert rec(vm, 4) == Status.NOT_FOUND

    events = fake.events[0]
    events.initial_metadata(unary, [(b"x-md", b"1")])
    events.message(unary, b"reply!")  # a unary call's answer completes it (Envoy)
    events.close(unary, 0, b"")  # ... so a close after it is dropped
    fake.events[1].close(stream, 0, b"")
    # nothing is delivered until the host runs its pending queue (never re-entrantly)
    assert rec(vm, 8) == 0
    host.run_pending()
    assert rec(vm, 5) == 1 and rec(vm, 6) == Status.OK
    assert rec(vm, 7) == root.id  # gRPC callbacks carry the root id
    assert rec(vm, 8) == 6 and rec(vm, 9) == Status.OK
    p, n = vm.instance.read_u32(0x410), vm.instance.read_u32(0x414)
    assert vm.instance.read(p, n) == b"reply!"
    assert rec(vm, 10) == 0 and rec(vm, 11) == Status.OK
    # the close callback resumed the paused stream through the effective context
    assert rec(vm, 12) == Status.OK and rec(vm, 13) == Status.OK
    assert ev.resumed == [StreamType.HTTP_REQUEST]
    assert unary.token not in root.grpc_calls and stream.token not in root.grpc_calls
    assert vm.instance.read_u32(0x418) == 0  # the stream closed with OK


def test_grpc_close_with_error_status_reports_it_through_get_status(start_vm, make_host):
    fake = FakeGrpc()
    host, vm, root = _grpc_vm(start_vm, make_host, fake)
    ctx = vm.new_http_context(root)
    ctx.on_request_headers(HeaderMap([(":path", "/")]), True)
    fake.events[0].close(fake.calls[0], 14, b"upstream unavailable")
    host.run_pending()
    assert rec(vm, 10) == 14
    code = vm.instance.read_u32(0x418)
    p, n = vm.instance.read_u32(0x41c), vm.instance.read_u32(0x420)
    assert code == 14 and vm.instance.read(p, n) == b"upstream unavailable"


def test_without_a_grpc_transport_calls_get_internal_failure_and_a_log_line(start_vm, make_host):
    host, vm, root = _grpc_vm(start_vm, make_host, None)
    ctx = vm.new_http_context(root)
    ctx.on_request_headers(HeaderMap([(":path", "/")]), True)
    assert rec(vm, 0) == Status.INTERNAL_FAILURE and rec(vm, 1) == Status.INTERNAL_FAILURE
    assert rec(vm, 2) == Status.NOT_FOUND  # nothing to send on
    assert not vm.failed
    assert any("not available" in r.message for r in host.logs)


def test_grpc_callbacks_are_dropped_after_cancel(start_vm, make_host):
    fake = FakeGrpc()
    host, vm, root = _grpc_vm(start_vm, make_host, fake)
    ctx = vm.new_http_context(root)
    ctx.on_request_headers(HeaderMap([(":path", "/")]), True)
    unary = fake.calls[0]
    vm.remove_plugin(root)
    assert unary.token in fake.cancelled
    fake.events[0].message(unary, b"late")
    host.run_pending()
    assert rec(vm, 8) == 0  # never delivered
