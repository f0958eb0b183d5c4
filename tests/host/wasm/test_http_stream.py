"""HTTP stream semantics of the sans-IO API (ABI doc §6.0-6.4, §6.6), driven by small
inline WAT plugins so that each test controls the exact hostcall sequence.

Plugins talk back to the test in two ways: ``proxy_log`` lines (``host.logs``) and
numbers stored in fixed guest-memory slots (``Plugin.rec`` in WAT, ``recorded`` here).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import wasmtime

from host.wasm import Action, HeaderMap, VirtualClock
from host.wasm.context import HttpCallout, MapState, StreamListener
from host.wasm.pairs import encode_pairs
from host.wasm.types import Status, StreamType

REQ = StreamType.HTTP_REQUEST

# --------------------------------------------------------------------------- WAT builder

_SIGS = {
    "proxy_log": "(param i32 i32 i32) (result i32)",
    "proxy_set_effective_context": "(param i32) (result i32)",
    "proxy_continue_stream": "(param i32) (result i32)",
    "proxy_close_stream": "(param i32) (result i32)",
    "proxy_get_header_map_value": "(param i32 i32 i32 i32 i32) (result i32)",
    "proxy_add_header_map_value": "(param i32 i32 i32 i32 i32) (result i32)",
    "proxy_get_header_map_pairs": "(param i32 i32 i32) (result i32)",
    "proxy_get_buffer_bytes": "(param i32 i32 i32 i32 i32) (result i32)",
    "proxy_send_local_response": "(param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)",
    "proxy_http_call": "(param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)",
    "proxy_get_status": "(param i32 i32 i32) (result i32)",
    "proxy_set_tick_period_milliseconds": "(param i32) (result i32)",
}

RET_PTR, RET_SIZE, RET_CODE = 256, 260, 264  # out-slots
REC_BASE = 8192  # record slots: 4 bytes each
OUT = f"(i32.const {RET_PTR}) (i32.const {RET_SIZE})"  # (ret_ptr, ret_size) out-slots
LOG_RETURNED = (  # proxy_log the bytes a hostcall just returned through OUT
    f"(drop (call $proxy_log (i32.const 2) (i32.load (i32.const {RET_PTR}))"
    f" (i32.load (i32.const {RET_SIZE}))))"
)


def get_buffer(buffer_type: int) -> str:
    return (
        f"(call $proxy_get_buffer_bytes (i32.const {buffer_type}) (i32.const 0) (i32.const 100)"
        f" {OUT})"
    )


def get_pairs(map_type: int) -> str:
    return f"(call $proxy_get_header_map_pairs (i32.const {map_type}) {OUT})"


class Plugin:
    """A minimal 0.2.1 plugin: memory (2 pages), a bump ``malloc``, the marker, string
    constants (``s``), log lines (``log``) and record slots (``rec``). Host imports are
    added for every ``$proxy_*`` the functions call."""

    def __init__(self) -> None:
        self.funcs: list[str] = []
        self.data: list[str] = []
        self._next = 1024

    def s(self, text: str | bytes) -> str:
        """``(i32.const ptr) (i32.const len)`` of a constant placed in guest memory."""
        raw = text.encode() if isinstance(text, str) else text
        addr = self._next
        self._next += (len(raw) + 8) & ~7
        assert self._next < REC_BASE
        escaped = "".join("\\%02x" % c for c in raw)
        self.data.append(f'(data (i32.const {addr}) "{escaped}")')
        return f"(i32.const {addr}) (i32.const {len(raw)})"

    def log(self, text: str, level: int = 2) -> str:
        return f"(drop (call $proxy_log (i32.const {level}) {self.s(text)}))"

    @staticmethod
    def rec(slot: int, expr: str) -> str:
        return f"(i32.store (i32.const {REC_BASE + 4 * slot}) {expr})"

    def func(self, text: str) -> Plugin:
        self.funcs.append(text)
        return self

    def build(self) -> bytes:
        body = "\n".join(self.funcs)
        imports = "\n".join(
            f'  (import "env" "{n}" (func ${n} {sig}))'
            for n, sig in _SIGS.items()
            if f"${n} " in body or f"${n})" in body or n == "proxy_log"
        )
        text = f"""(module
{imports}
  (memory (export "memory") 2)
  {chr(10).join(self.data)}
  (global $heap (mut i32) (i32.const 65536))
  (func $malloc (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (global.set $heap (i32.add (local.get $p) (local.get $n)))
    (if (i32.gt_u (global.get $heap) (i32.shl (memory.size) (i32.const 16)))
      (then (if (i32.eq (memory.grow (i32.add (i32.const 1) (i32.shr_u
                  (i32.sub (global.get $heap) (i32.shl (memory.size) (i32.const 16)))
                  (i32.const 16)))) (i32.const -1))
              (then (return (i32.const 0))))))
    (local.get $p))
  (global $stream (mut i32) (i32.const 0))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
{body}
)"""
        return bytes(wasmtime.wat2wasm(text))


def recorded(vm, slot: int) -> int:
    return vm.instance.read_u32(REC_BASE + 4 * slot)


def messages(host) -> list[str]:
    return [r.message for r in host.logs]


class Recorder(StreamListener):
    """Records what the stream driver hears, and whether a guest call was running."""

    def __init__(self, vm, host) -> None:
        self.vm = vm
        self.host = host
        self.events: list[tuple[str, object]] = []
        self.during_guest_call: list[bool] = []
        self.logs_seen: list[list[str]] = []

    def _note(self, what: str, arg: object) -> None:
        self.events.append((what, arg))
        self.during_guest_call.append(self.vm.instance.depth != 0 or self.vm.current_callback != "")
        self.logs_seen.append(messages(self.host))

    def on_resume(self, ctx, stream) -> None:
        self._note("resume", stream)

    def on_local_reply(self, ctx) -> None:
        self._note("local_reply", ctx.local_response.status if ctx.local_response else None)

    def on_close(self, ctx, stream) -> None:
        self._note("close", stream)


def request_headers() -> HeaderMap:
    return HeaderMap([(":method", "GET"), (":path", "/a"), (":authority", "example")])


# WAT fragments shared by several plugins

PAUSE_HEADERS = """
  (func (export "proxy_on_request_headers") (param $c i32) (param i32 i32) (result i32)
    (global.set $stream (local.get $c))
    (i32.const 1))"""


def resume_from_tick(p: Plugin) -> str:
    """on_tick: effective context = the stored stream, add x-tick, continue the request,
    record the three statuses and whether x-tick is readable, log "tick end"."""
    return f"""
  (func (export "proxy_on_tick") (param $root i32)
    {p.rec(0, "(call $proxy_set_effective_context (global.get $stream))")}
    {p.rec(1, f'(call $proxy_add_header_map_value (i32.const 0) {p.s("x-tick")} {p.s("1")})')}
    {p.rec(2, "(call $proxy_continue_stream (i32.const 0))")}
    {p.rec(3, f'(call $proxy_get_header_map_value (i32.const 0) {p.s("x-tick")} '
              f'(i32.const {RET_PTR}) (i32.const {RET_SIZE}))')}
    {p.log("tick end")})"""


# --------------------------------------------------------------------------- pause / continue


def test_request_headers_pause_holds_the_stream(start_vm):
    p = Plugin().func(PAUSE_HEADERS)
    host, vm, root = start_vm(p.build())
    ctx = vm.new_http_context(root)

    assert ctx.on_request_headers(request_headers(), True) == Action.PAUSE
    assert ctx.request.paused
    assert ctx.request.headers_state == MapState.ACTIVE


def test_tick_edits_paused_request_headers_and_resume_is_heard_after_the_tick(start_vm):
    p = Plugin().func(PAUSE_HEADERS)
    p.func(resume_from_tick(p))
    host, vm, root = start_vm(p.build())
    ctx = vm.new_http_context(root)
    listener = Recorder(vm, host)
    ctx.listener = listener
    headers = request_headers()
    assert ctx.on_request_headers(headers, True) == Action.PAUSE

    vm.tick(root)

    # set_effective_context, add, continue, and the read after the continue: all OK
    assert [recorded(vm, i) for i in range(4)] == [Status.OK] * 4
    assert headers.get("x-tick") == b"1"
    assert listener.events == [("resume", REQ)]
    # Delivered after the tick callback returned (§6.0), never from inside it.
    assert listener.during_guest_call == [False]
    assert "tick end" in listener.logs_seen[0]
    assert not ctx.request.paused


def test_request_headers_resumed_from_a_tick_are_released(start_vm):
    p = Plugin().func(PAUSE_HEADERS)
    p.func(resume_from_tick(p))
    host, vm, root = start_vm(p.build())
    ctx = vm.new_http_context(root)
    headers = request_headers()
    ctx.on_request_headers(headers, True)
    vm.tick(root)  # adds x-tick, continues

    vm.tick(root)  # the stream has been forwarded: its headers are gone

    assert recorded(vm, 1) == Status.BAD_ARGUMENT
    assert recorded(vm, 3) == Status.BAD_ARGUMENT
    assert ctx.request.headers_state == MapState.RELEASED


def test_continue_inside_the_callback_that_pauses_means_continue(start_vm):
    p = Plugin().func("""
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $proxy_continue_stream (i32.const 0)))
    (i32.const 1))""")
    host, vm, root = start_vm(p.build())
    ctx = vm.new_http_context(root)
    listener = Recorder(vm, host)
    ctx.listener = listener

    assert ctx.on_request_headers(request_headers(), True) == Action.CONTINUE
    assert not ctx.request.paused
    assert ctx.request.headers_state == MapState.RELEASED
    assert listener.events == []  # folded into the action, nothing to resume


def test_continue_on_a_stream_that_is_not_paused_is_an_ok_no_op(start_vm):
    p = Plugin().func("""
  (func (export "proxy_on_request_headers") (param $c i32) (param i32 i32) (result i32)
    (global.set $stream (local.get $c))
    (i32.const 0))""")
    p.func(resume_from_tick(p))
    host, vm, root = start_vm(p.build())
    ctx = vm.new_http_context(root)
    listener = Recorder(vm, host)
    ctx.listener = listener
    assert ctx.on_request_headers(request_headers(), False) == Action.CONTINUE

    vm.tick(root)

    assert recorded(vm, 2) == Status.OK
    assert listener.events == []


# --------------------------------------------------------------------------- body buffering


def _body_plugin(p: Plugin, result: str) -> Plugin:
    """on_request_body records the body_size of call i in slot 4 + i, logs the buffer it
    can read, and returns ``result``."""
    return p.func(f"""
  (global $calls (mut i32) (i32.const 0))
  (func (export "proxy_on_request_body") (param $c i32) (param $size i32) (param $eos i32)
    (result i32)
    (global.set $stream (local.get $c))
    (i32.store (i32.add (i32.const {REC_BASE + 16}) (i32.shl (global.get $calls) (i32.const 2)))
               (local.get $size))
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (drop (call $proxy_get_buffer_bytes (i32.const 0) (i32.const 0) (local.get $size) {OUT}))
    {LOG_RETURNED}
    {result})""")


def test_body_buffering_appends_chunks_and_reports_the_total_size(start_vm):
    # Pause (buffer) until end of stream, then continue.
    p = _body_plugin(Plugin(), "(i32.eqz (local.get $eos))")
    host, vm, root = start_vm(p.build())
    ctx = vm.new_http_context(root)
    assert ctx.on_request_headers(request_headers(), False) == Action.CONTINUE

    assert ctx.on_request_body(b"abc", False) == Action.PAUSE
    assert ctx.on_request_body(b"defg", False) == Action.PAUSE
    assert ctx.on_request_body(b"hi", True) == Action.CONTINUE

    sizes = [recorded(vm, 4 + i) for i in range(3)]
    assert sizes == [3, 7, 9]
    assert messages(host) == ["abc", "abcdefg", "abcdefghi"]
    assert ctx.take_body(REQ) == b"abcdefghi"  # Continue releases the whole buffer


def test_body_continue_without_buffering_releases_each_chunk(start_vm):
    p = _body_plugin(Plugin(), "(i32.const 0)")
    host, vm, root = start_vm(p.build())
    ctx = vm.new_http_context(root)
    ctx.on_request_headers(request_headers(), False)

    assert ctx.on_request_body(b"one", False) == Action.CONTINUE
    assert ctx.take_body(REQ) == b"one"
    assert ctx.on_request_body(b"two", True) == Action.CONTINUE
    assert ctx.take_body(REQ) == b"two"
    assert messages(host) == ["one", "two"]


def test_body_pause_at_end_of_stream_waits_for_continue_stream(start_vm):
    p = _body_plugin(Plugin(), "(i32.const 1)")
    p.func("""
  (func (export "proxy_on_tick") (param i32)
    (drop (call $proxy_set_effective_context (global.get $stream)))
    (drop (call $proxy_continue_stream (i32.const 0))))""")
    host, vm, root = start_vm(p.build())
    ctx = vm.new_http_context(root)
    listener = Recorder(vm, host)
    ctx.listener = listener
    ctx.on_request_headers(request_headers(), False)

    assert ctx.on_request_body(b"part1-", False) == Action.PAUSE
    assert ctx.on_request_body(b"part2", True) == Action.PAUSE
    assert listener.events == []  # still waiting

    vm.tick(root)

    assert listener.events == [("resume", REQ)]
    assert listener.during_guest_call == [False]
    assert ctx.take_body(REQ) == b"part1-part2"


# --------------------------------------------------------------------------- local reply / close

_REPLY_HEADERS = encode_pairs([(b"X-Why", b"denied")])


def test_local_reply_during_request_headers_overrides_continue(start_vm):
    p = Plugin()
    p.func(f"""
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    {p.rec(0, f'(call $proxy_send_local_response (i32.const 403) {p.s("access denied")} '
              f'{p.s("go away")} {p.s(_REPLY_HEADERS)} (i32.const -1))')}
    (i32.const 0))""")
    host, vm, root = start_vm(p.build())
    ctx = vm.new_http_context(root)

    assert ctx.on_request_headers(request_headers(), True) == Action.LOCAL_REPLY

    assert recorded(vm, 0) == Status.OK
    lr = ctx.local_response
    assert lr is not None
    assert (lr.status, lr.body, lr.grpc_status) == (403, b"go away", None)
    assert lr.details == "access_denied"
    rh = lr.response_headers()
    assert rh.get(":status") == b"403"
    assert rh.get("content-length") == b"7"
    assert rh.get("content-type") == b"text/plain"
    assert rh.get("x-why") == b"denied"


def test_second_local_reply_on_a_stream_is_refused(start_vm):
    p = Plugin()
    send = (
        "(call $proxy_send_local_response (i32.const 403) (i32.const 0) (i32.const 0) "
        f'{p.s("x")} (i32.const 0) (i32.const 0) (i32.const -1))'
    )
    p.func(f"""
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    {p.rec(0, send)}
    {p.rec(1, send)}
    (i32.const 0))""")
    host, vm, root = start_vm(p.build())
    ctx = vm.new_http_context(root)

    assert ctx.on_request_headers(request_headers(), True) == Action.LOCAL_REPLY
    assert (recorded(vm, 0), recorded(vm, 1)) == (Status.OK, Status.BAD_ARGUMENT)


def test_close_stream_in_request_headers_resets_the_stream_and_lifecycle_follows(start_vm):
    p = Plugin().func("""
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $proxy_close_stream (i32.const 0)))
    (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32))""")
    host, vm, root = start_vm(p.build())
    vm.trace_calls = True
    ctx = vm.new_http_context(root)

    assert ctx.on_request_headers(request_headers(), True) == Action.CLOSE

    ctx.finish()
    assert [name for name, cid, _ in vm.trace if cid == ctx.id][-3:] == [
        "proxy_on_done", "proxy_on_log", "proxy_on_delete",
    ]


# --------------------------------------------------------------------------- http_call


class SyncDispatcher:
    """An HttpDispatcher whose upstream answers inside dispatch() (the hard case for
    §6.0: the answer must still be delivered later, by run_pending)."""

    def __init__(self, failure: str | None = None) -> None:
        self.failure = failure
        self.calls: list[HttpCallout] = []
        self.cancelled: list[HttpCallout] = []

    def has_cluster(self, name: str) -> bool:
        return name == "auth"

    def dispatch(self, call, done) -> None:
        self.calls.append(call)
        if self.failure is not None:
            call.failure = self.failure
        else:
            call.response_status = 200
            call.response_headers = [(b":status", b"200")] + [
                (f"x-{i}".encode(), b"v") for i in range(5)
            ]
            call.response_body = b"body"
        done(call)

    def cancel(self, call) -> None:
        self.cancelled.append(call)


_CALL_HEADERS = encode_pairs(
    [(b":method", b"GET"), (b":path", b"/check"), (b":authority", b"auth")]
)


def _callout_plugin(on_response_extra: Callable[[Plugin], str] | None = None) -> Plugin:
    """Request headers: http_call to "auth", Pause. Response callback: records its
    arguments (slots 0-4), map 6 status/size (5, 6), buffer 4 status (7), get_status
    code (8), and logs the body and the status message. on_tick reads map 6 and
    buffer 4 again (slots 10, 11, 12)."""
    p = Plugin()
    extra = on_response_extra(p) if on_response_extra is not None else ""
    p.func(f"""
  (func (export "proxy_on_request_headers") (param $c i32) (param i32 i32) (result i32)
    (global.set $stream (local.get $c))
    {p.rec(20, f'(call $proxy_http_call {p.s("auth")} {p.s(_CALL_HEADERS)} (i32.const 0) '
               f'(i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 300))')}
    {p.rec(21, "(i32.load (i32.const 300))")}
    (i32.const 1))
  (func (export "proxy_on_http_call_response")
    (param $root i32) (param $token i32) (param $nh i32) (param $nb i32) (param $nt i32)
    {p.rec(0, "(local.get $root)")}
    {p.rec(1, "(local.get $token)")}
    {p.rec(2, "(local.get $nh)")}
    {p.rec(3, "(local.get $nb)")}
    {p.rec(4, "(local.get $nt)")}
    {p.rec(5, get_pairs(6))}
    {p.rec(6, f"(i32.load (i32.const {RET_SIZE}))")}
    {p.rec(7, get_buffer(4))}
    {LOG_RETURNED}
    (drop (call $proxy_get_status (i32.const {RET_CODE}) {OUT}))
    {p.rec(8, f"(i32.load (i32.const {RET_CODE}))")}
    {LOG_RETURNED}
    {extra})
  (func (export "proxy_on_tick") (param i32)
    {p.rec(10, get_pairs(6))}
    {p.rec(11, f"(i32.load (i32.const {RET_SIZE}))")}
    {p.rec(12, get_buffer(4))})""")
    return p


def test_http_call_response_is_delivered_only_by_run_pending_to_the_root(make_host, start_vm):
    dispatcher = SyncDispatcher()
    host = make_host(http=dispatcher)
    host, vm, root = start_vm(_callout_plugin().build(), host=host)
    ctx = vm.new_http_context(root)

    assert ctx.on_request_headers(request_headers(), True) == Action.PAUSE
    assert recorded(vm, 20) == Status.OK
    [call] = dispatcher.calls
    assert recorded(vm, 21) == call.token != 0
    assert call.headers[:2] == [(b":method", b"GET"), (b":path", b"/check")]
    # Answered synchronously by the dispatcher, yet not delivered during the guest call
    assert recorded(vm, 0) == 0
    assert messages(host) == []

    assert host.run_pending() == 1

    assert recorded(vm, 0) == root.id  # callouts belong to the root context (§3.4)
    assert recorded(vm, 1) == call.token
    assert [recorded(vm, i) for i in (2, 3, 4)] == [6, 4, 0]
    assert recorded(vm, 5) == Status.OK and recorded(vm, 6) > 0
    assert recorded(vm, 7) == Status.OK
    assert recorded(vm, 8) == Status.OK
    assert messages(host) == ["body", ""]


def test_http_call_response_data_is_readable_only_inside_its_callback(make_host, start_vm):
    host = make_host(http=SyncDispatcher())
    host, vm, root = start_vm(_callout_plugin().build(), host=host)
    vm.new_http_context(root).on_request_headers(request_headers(), True)
    host.run_pending()

    vm.tick(root)

    assert recorded(vm, 10) == Status.OK and recorded(vm, 11) == 0  # empty map
    assert recorded(vm, 12) == Status.NOT_FOUND


def test_failed_http_call_delivers_zero_counts_and_status_11_with_the_reason(make_host, start_vm):
    host = make_host(http=SyncDispatcher(failure="timeout"))
    host, vm, root = start_vm(_callout_plugin().build(), host=host)
    vm.new_http_context(root).on_request_headers(request_headers(), True)

    host.run_pending()

    assert recorded(vm, 0) == root.id
    assert [recorded(vm, i) for i in (2, 3, 4)] == [0, 0, 0]
    assert recorded(vm, 8) == Status.BROKEN_CONNECTION == 11
    assert messages(host)[-1] == "timeout"


def test_http_call_to_an_unknown_cluster_is_bad_argument_and_never_dispatched(
    make_host, start_vm
):
    dispatcher = SyncDispatcher()
    p = Plugin()
    p.func(f"""
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    {p.rec(0, f'(call $proxy_http_call {p.s("nowhere")} {p.s(_CALL_HEADERS)} (i32.const 0) '
              f'(i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 300))')}
    (i32.const 0))""")
    host, vm, root = start_vm(p.build(), host=make_host(http=dispatcher))

    vm.new_http_context(root).on_request_headers(request_headers(), True)

    assert recorded(vm, 0) == Status.BAD_ARGUMENT
    assert dispatcher.calls == []
    assert len(host.pending) == 0


def test_local_reply_from_http_call_response_reaches_the_listener_after_the_callback(
    make_host, start_vm
):
    def reply_to_the_stream(p: Plugin) -> str:
        send = (
            f"(call $proxy_send_local_response (i32.const 403) (i32.const 0) (i32.const 0) "
            f'{p.s("denied")} (i32.const 0) (i32.const 0) (i32.const -1))'
        )
        return f"""
    (drop (call $proxy_set_effective_context (global.get $stream)))
    {p.rec(30, send)}
    {p.log("response callback end")}"""

    plugin = _callout_plugin(reply_to_the_stream)
    host, vm, root = start_vm(plugin.build(), host=make_host(http=SyncDispatcher()))
    ctx = vm.new_http_context(root)
    listener = Recorder(vm, host)
    ctx.listener = listener
    assert ctx.on_request_headers(request_headers(), True) == Action.PAUSE

    host.run_pending()

    assert recorded(vm, 30) == Status.OK
    assert listener.events == [("local_reply", 403)]
    assert listener.during_guest_call == [False]
    assert "response callback end" in listener.logs_seen[0]
    assert ctx.local_response is not None and ctx.local_response.body == b"denied"


def test_removing_the_plugin_cancels_its_outstanding_http_calls(make_host, start_vm):
    class Holding(SyncDispatcher):
        def dispatch(self, call, done) -> None:
            self.calls.append(call)  # never answers

    dispatcher = Holding()
    host, vm, root = start_vm(_callout_plugin().build(), host=make_host(http=dispatcher))
    vm.new_http_context(root).on_request_headers(request_headers(), True)

    vm.remove_plugin(root)

    assert dispatcher.cancelled == dispatcher.calls != []


# --------------------------------------------------------------------------- ticks


def test_ticks_follow_the_tick_period_on_a_virtual_clock(make_host, start_vm):
    clock = VirtualClock()
    p = Plugin()
    p.func(f"""
  (global $ticks (mut i32) (i32.const 0))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $proxy_set_tick_period_milliseconds (i32.const 100)))
    (i32.const 1))
  (func (export "proxy_on_tick") (param $root i32)
    (global.set $ticks (i32.add (global.get $ticks) (i32.const 1)))
    {p.rec(0, "(global.get $ticks)")}
    {p.rec(1, "(local.get $root)")}
    (if (i32.eq (global.get $ticks) (i32.const 2))
      (then (drop (call $proxy_set_tick_period_milliseconds (i32.const 0))))))""")
    host, vm, root = start_vm(p.build(), host=make_host(clock=clock))
    assert root.tick_period_ms == 100

    clock.advance(99)
    assert vm.due_ticks(clock.now_ms()) == []
    clock.advance(1)
    assert vm.due_ticks(clock.now_ms()) == [root]

    assert vm.tick(root)
    assert (recorded(vm, 0), recorded(vm, 1)) == (1, root.id)
    assert vm.due_ticks(clock.now_ms()) == []  # re-armed one period later
    clock.advance(100)
    assert vm.due_ticks(clock.now_ms()) == [root]
    vm.tick(root)  # the second tick sets the period to 0
    clock.advance(1000)
    assert vm.due_ticks(clock.now_ms()) == []
    assert recorded(vm, 0) == 2


def test_tick_period_set_from_a_stream_context_targets_its_root(make_host, start_vm):
    clock = VirtualClock()
    p = Plugin().func("""
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $proxy_set_tick_period_milliseconds (i32.const 50)))
    (i32.const 0))""")
    host, vm, root = start_vm(p.build(), host=make_host(clock=clock))
    vm.new_http_context(root).on_request_headers(request_headers(), True)

    assert root.tick_period_ms == 50
    clock.advance(50)
    assert vm.due_ticks(clock.now_ms()) == [root]
