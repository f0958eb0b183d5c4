"""Buffers: proxy_get/set_buffer_bytes, proxy_get_buffer_status, and 0.1.0's
proxy_get_configuration (ABI §2.2 "Buffers", §6.3)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from host.wasm.abi._common import BAD_ARGUMENT, NOT_FOUND, OK, hostfn, read, return_bytes
from host.wasm.context import HttpContext, TcpContext
from host.wasm.types import BufferType

if TYPE_CHECKING:
    from host.wasm.vm import PluginVM

_MAX_TYPE = 8


def _buffer(vm: PluginVM, btype: int) -> tuple[int, bytes | bytearray | None, bool]:
    """(status, buffer, mutable) for buffer type ``btype`` in the current context."""
    ctx = vm.ctx
    root = ctx.root
    if btype == BufferType.VM_CONFIGURATION:
        return OK, vm.config.vm_configuration, False
    if btype == BufferType.PLUGIN_CONFIGURATION:
        conf = getattr(root, "configuring", None)
        return (OK, conf, False) if conf is not None else (NOT_FOUND, None, False)
    if btype in (BufferType.HTTP_REQUEST_BODY, BufferType.HTTP_RESPONSE_BODY):
        if not isinstance(ctx, HttpContext):
            return NOT_FOUND, None, False
        d = ctx.request if btype == BufferType.HTTP_REQUEST_BODY else ctx.response
        if d.body_active or d.buffering or d.paused:
            return OK, d.body, True
        return OK, b"", False  # no body current: empty (Envoy)
    if btype in (BufferType.DOWNSTREAM_DATA, BufferType.UPSTREAM_DATA):
        if not isinstance(ctx, TcpContext):
            return NOT_FOUND, None, False
        return OK, ctx.downstream if btype == BufferType.DOWNSTREAM_DATA else ctx.upstream, True
    if btype == BufferType.HTTP_CALL_RESPONSE_BODY:
        resp = getattr(root, "callout_response", None)
        return (OK, resp.response_body, False) if resp is not None else (NOT_FOUND, None, False)
    if btype == BufferType.GRPC_RECEIVE_BUFFER:
        msg = getattr(root, "grpc_message", None)
        return (OK, msg, False) if msg is not None else (NOT_FOUND, None, False)
    if btype == BufferType.CALL_DATA:
        data = getattr(root, "call_data", None)
        return (OK, data, False) if data is not None else (NOT_FOUND, None, False)
    return BAD_ARGUMENT, None, False


def proxy_get_buffer_bytes(
    vm: PluginVM, btype: int, start: int, max_size: int, ret_ptr: int, ret_size: int
) -> int:
    if btype > _MAX_TYPE:
        return BAD_ARGUMENT
    status, buf, _ = _buffer(vm, btype)
    if buf is None:
        return status
    # Clamp, never fail, on out-of-range start/size (cpp-host; the Rust SDK reads
    # whole buffers with max_size = 0xFFFFFFFF).
    n = len(buf)
    s = min(start, n)
    e = min(s + max_size, n)
    return return_bytes(vm, bytes(buf[s:e]), ret_ptr, ret_size)


def proxy_set_buffer_bytes(
    vm: PluginVM, btype: int, start: int, size: int, data_ptr: int, data_len: int
) -> int:
    if btype > _MAX_TYPE:
        return BAD_ARGUMENT
    data = read(vm, data_ptr, data_len)
    status, buf, mutable = _buffer(vm, btype)
    if buf is None:
        return status
    if not mutable or not isinstance(buf, bytearray):
        # Immutable buffers (configurations, callout bodies, gRPC messages, call
        # data) or no body current.
        return BAD_ARGUMENT if btype not in (0, 1) else NOT_FOUND
    # The general splice: a superset of Envoy's prepend (0,0), append (start >= len)
    # and replace-all (0, size >= len). ABI doc §2.2 [DISAGREE].
    n = len(buf)
    s = min(start, n)
    e = min(s + size, n)
    buf[s:e] = data
    return OK


def proxy_get_buffer_status(vm: PluginVM, btype: int, ret_len: int, ret_flags: int) -> int:
    if btype > _MAX_TYPE:
        return BAD_ARGUMENT
    status, buf, _ = _buffer(vm, btype)
    if buf is None:
        return status
    vm.instance.check(ret_flags, 4)
    vm.instance.write_u32(ret_len, len(buf))
    vm.instance.write_u32(ret_flags, 0)  # cpp-host never sets EndOfStream here
    return OK


def proxy_get_configuration(vm: PluginVM, ret_ptr: int, ret_size: int) -> int:
    # 0.1.0: the plugin configuration during on_configure, else the VM configuration.
    conf = getattr(vm.ctx.root, "configuring", None)
    data = conf if conf is not None else vm.config.vm_configuration
    return return_bytes(vm, data, ret_ptr, ret_size)


FUNCTIONS = (
    hostfn("proxy_get_buffer_bytes", "iiiii", "i", proxy_get_buffer_bytes),
    hostfn("proxy_set_buffer_bytes", "iiiii", "i", proxy_set_buffer_bytes),
    hostfn("proxy_get_buffer_status", "iii", "i", proxy_get_buffer_status),
    hostfn("proxy_get_configuration", "ii", "i", proxy_get_configuration),
)
