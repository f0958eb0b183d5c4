"""Stream control: continue/close stream, 0.1.0's continue_request/response and
clear_route_cache, send_local_response (ABI §2.2 "Stream control", §6.1, §6.2).

Every effect is recorded on the VM and applied after the guest call returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from host.wasm.abi._common import BAD_ARGUMENT, OK, hostfn, read, signed32
from host.wasm.abi._validate import valid_headers
from host.wasm.context import HttpContext, LocalResponse, MapState, TcpContext
from host.wasm.pairs import PairsError, decode_pairs
from host.wasm.types import LogLevel, StreamType

if TYPE_CHECKING:
    from host.wasm.vm import PluginVM


_DETAILS_WHITESPACE = str.maketrans({c: "_" for c in " \t\f\v\n\r"})
MAX_LOCAL_REPLY_BODY = 16 * 1024 * 1024
"""Larger local-reply bodies answer BAD_ARGUMENT (Envoy has no such limit): copying
100 MB out of the guest alone takes about the whole default callback budget."""


def proxy_continue_stream(vm: PluginVM, stream_type: int) -> int:
    if stream_type > 3:
        return BAD_ARGUMENT
    ctx = vm.ctx
    st = StreamType(stream_type)
    if isinstance(ctx, HttpContext) and st in (StreamType.HTTP_REQUEST, StreamType.HTTP_RESPONSE):
        vm.request_action("continue", ctx, st)
        return OK
    if isinstance(ctx, TcpContext) and st in (StreamType.DOWNSTREAM, StreamType.UPSTREAM):
        # Envoy answers UNIMPLEMENTED for UPSTREAM (and the Rust SDK then panics);
        # resuming it is a harmless superset.
        vm.request_action("continue", ctx, st)
        return OK
    return BAD_ARGUMENT


def proxy_close_stream(vm: PluginVM, stream_type: int) -> int:
    if stream_type > 3:
        return BAD_ARGUMENT
    ctx = vm.ctx
    st = StreamType(stream_type)
    if isinstance(ctx, HttpContext):
        if st in (StreamType.HTTP_REQUEST, StreamType.HTTP_RESPONSE):
            vm.request_action("close", ctx, st)
        return OK  # TCP stream types on an HTTP stream: ignored, as Envoy does
    if isinstance(ctx, TcpContext):
        vm.request_action("close", ctx, st)
        return OK
    return BAD_ARGUMENT


def proxy_continue_request(vm: PluginVM) -> int:
    return proxy_continue_stream(vm, StreamType.HTTP_REQUEST)


def proxy_continue_response(vm: PluginVM) -> int:
    return proxy_continue_stream(vm, StreamType.HTTP_RESPONSE)


def proxy_clear_route_cache(vm: PluginVM) -> int:
    ctx = vm.ctx
    if isinstance(ctx, HttpContext):
        ctx.route_cache_dirty = True
    return OK


def proxy_send_local_response(
    vm: PluginVM,
    status_code: int,
    details_ptr: int,
    details_len: int,
    body_ptr: int,
    body_len: int,
    headers_ptr: int,
    headers_len: int,
    grpc_status: int,
) -> int:
    details = read(vm, details_ptr, details_len)
    if body_len > MAX_LOCAL_REPLY_BODY:
        vm.instance.check(body_ptr, body_len)  # a bad pointer is still the guest's fault
        from host.wasm.abi.logging import emit

        emit(
            vm,
            LogLevel.WARN,
            f"send_local_response body of {body_len} bytes is over the "
            f"{MAX_LOCAL_REPLY_BODY}-byte limit: BAD_ARGUMENT",
            "host",
        )
        return BAD_ARGUMENT
    body = read(vm, body_ptr, body_len)
    raw_headers = read(vm, headers_ptr, headers_len)
    ctx = vm.ctx
    if not isinstance(ctx, HttpContext) or ctx.done:
        return BAD_ARGUMENT
    # One local reply per stream, and only before the response went downstream:
    # a second one is refused deterministically (ABI doc §6.2 leaves the choice).
    if ctx.local_response is not None or ctx.response.headers_state == MapState.RELEASED:
        return BAD_ARGUMENT
    if not 100 <= status_code <= 999:
        return BAD_ARGUMENT
    try:
        headers = decode_pairs(raw_headers)
    except PairsError:
        return BAD_ARGUMENT
    if not valid_headers(headers):
        return BAD_ARGUMENT  # CR/LF/NUL would split the response
    gs = signed32(grpc_status)
    ctx.local_response = LocalResponse(
        status=status_code,
        # Envoy (StringUtil::replaceAllEmptySpace) replaces each space, tab, FF, VT, LF
        # and CR with "_", one for one: no collapsing, no stripping (ABI doc §2.2).
        details=details.decode("utf-8", "replace").translate(_DETAILS_WHITESPACE),
        body=body,
        headers=[(k.lower(), v) for k, v in headers],
        grpc_status=gs if 0 <= gs <= 16 else None,
    )
    ctx.local_response_during = vm.current_callback
    vm.request_action("local_reply", ctx, None)
    return OK


FUNCTIONS = (
    hostfn("proxy_continue_stream", "i", "i", proxy_continue_stream),
    hostfn("proxy_close_stream", "i", "i", proxy_close_stream),
    hostfn("proxy_continue_request", "", "i", proxy_continue_request),
    hostfn("proxy_continue_response", "", "i", proxy_continue_response),
    hostfn("proxy_clear_route_cache", "", "i", proxy_clear_route_cache),
    hostfn("proxy_send_local_response", "iiiiiiii", "i", proxy_send_local_response),
)
