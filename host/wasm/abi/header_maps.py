"""Header, trailer and metadata maps (ABI §2.2 "Header / trailer / metadata maps").

Availability follows Envoy: a stream's request (response) headers are reachable
inside their callback and while the plugin holds them paused, and again in the
access-log phase (``proxy_on_log``); once forwarded, value reads and mutations
answer BAD_ARGUMENT and a pairs read answers an empty map (ABI doc §6.1.4).
Callout and gRPC maps are read-only and exist only inside their callback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from host.wasm.abi._common import BAD_ARGUMENT, NOT_FOUND, OK, hostfn, read, return_bytes
from host.wasm.abi._validate import valid_header, valid_headers
from host.wasm.context import HttpContext, MapState, RootContext
from host.wasm.pairs import HeaderMap, PairsError, decode_pairs, encode_pairs, serialized_size
from host.wasm.types import MapType

if TYPE_CHECKING:
    from host.wasm.vm import PluginVM

_MAX_TYPE: Final = 7
_ACTIVE: Final = MapState.ACTIVE


def _map(vm: PluginVM, mtype: int, write: bool) -> HeaderMap | None:
    ctx = vm.effective if vm.effective is not None else vm.current  # vm.ctx, inlined
    if mtype <= 3:  # MapType.HTTP_RESPONSE_TRAILERS
        if not isinstance(ctx, HttpContext) or ctx.deleted:
            return None
        d = ctx.request if mtype < 2 else ctx.response
        if not mtype & 1:  # HTTP_REQUEST_HEADERS (0) or HTTP_RESPONSE_HEADERS (2)
            if d.headers_state == _ACTIVE and not ctx.access_log_phase:
                return d.headers
            if ctx.access_log_phase and not write:
                return d.headers
            return None
        # trailers
        if d.trailers_writable or d.paused:
            if d.trailers is None and write and d.trailers_writable:
                d.trailers = HeaderMap()  # created on demand from the last body chunk
            return d.trailers
        if ctx.access_log_phase and not write:
            return d.trailers
        return None
    if write:
        return None
    root = ctx.root
    if not isinstance(root, RootContext):
        return None
    if mtype == MapType.HTTP_CALL_RESPONSE_HEADERS and root.callout_response is not None:
        return HeaderMap.from_pairs(root.callout_response.response_headers)
    if mtype == MapType.HTTP_CALL_RESPONSE_TRAILERS and root.callout_response is not None:
        return HeaderMap.from_pairs(root.callout_response.response_trailers)
    if mtype == MapType.GRPC_RECEIVE_INITIAL_METADATA and root.grpc_initial_metadata is not None:
        return HeaderMap.from_pairs(root.grpc_initial_metadata)
    if mtype == MapType.GRPC_RECEIVE_TRAILING_METADATA and root.grpc_trailing_metadata is not None:
        return HeaderMap.from_pairs(root.grpc_trailing_metadata)
    return None


def proxy_get_header_map_pairs(vm: PluginVM, mtype: int, ret_ptr: int, ret_size: int) -> int:
    if mtype > _MAX_TYPE:
        return BAD_ARGUMENT
    m = _map(vm, mtype, False)
    # Empty or unavailable → OK with (0, 0): the Rust SDK panics on anything else.
    return return_bytes(vm, encode_pairs(m) if m is not None else b"", ret_ptr, ret_size)


def proxy_set_header_map_pairs(vm: PluginVM, mtype: int, ptr: int, size: int) -> int:
    if mtype > _MAX_TYPE:
        return BAD_ARGUMENT
    raw = read(vm, ptr, size)
    m = _map(vm, mtype, True)
    if m is None:
        return BAD_ARGUMENT
    try:
        pairs = decode_pairs(raw)
    except PairsError:
        return BAD_ARGUMENT
    if not valid_headers(pairs):
        return BAD_ARGUMENT  # CR/LF/NUL in a value or a non-token name
    m.set_all(pairs, checked=True)
    return OK


def proxy_get_header_map_value(
    vm: PluginVM, mtype: int, key_ptr: int, key_len: int, ret_ptr: int, ret_size: int
) -> int:
    if mtype > _MAX_TYPE:
        return BAD_ARGUMENT
    key = vm.instance.read(key_ptr, key_len)
    m = _map(vm, mtype, False)
    if m is None:
        ctx = vm.ctx
        if not (isinstance(ctx, HttpContext) and ctx.access_log_phase):
            return BAD_ARGUMENT
        # Envoy getHeaderMapValue: a map that does not exist in the access-log phase
        # (e.g. no response headers on a reset stream) is a missing key, not
        # BAD_ARGUMENT (ABI doc §2.2) -- Rust plugins reading :status in on_log panic
        # on BAD_ARGUMENT.
        value = None
    else:
        value = m.get(key)
    if value is None:
        if vm.abi == "0.1.0":
            return return_bytes(vm, b"", ret_ptr, ret_size)  # 0.1.0: OK and empty
        return NOT_FOUND
    return return_bytes(vm, value, ret_ptr, ret_size)


def proxy_add_header_map_value(
    vm: PluginVM, mtype: int, key_ptr: int, key_len: int, val_ptr: int, val_len: int
) -> int:
    if mtype > _MAX_TYPE:
        return BAD_ARGUMENT
    inst = vm.instance
    key = inst.read(key_ptr, key_len)
    value = inst.read(val_ptr, val_len)
    m = _map(vm, mtype, True)
    if m is None or not valid_header(key, value):
        return BAD_ARGUMENT
    m.add(key, value, checked=True)  # (a map the parser verified stays so)
    return OK


def proxy_replace_header_map_value(
    vm: PluginVM, mtype: int, key_ptr: int, key_len: int, val_ptr: int, val_len: int
) -> int:
    if mtype > _MAX_TYPE:
        return BAD_ARGUMENT
    inst = vm.instance
    key = inst.read(key_ptr, key_len)
    value = inst.read(val_ptr, val_len)
    m = _map(vm, mtype, True)
    if m is None or not valid_header(key, value):
        return BAD_ARGUMENT
    m.replace(key, value, checked=True)
    return OK


def proxy_remove_header_map_value(vm: PluginVM, mtype: int, key_ptr: int, key_len: int) -> int:
    if mtype > _MAX_TYPE:
        return BAD_ARGUMENT
    key = read(vm, key_ptr, key_len)
    m = _map(vm, mtype, True)
    if m is None:
        return BAD_ARGUMENT
    m.remove(key)
    return OK


def proxy_get_header_map_size(vm: PluginVM, mtype: int, ret: int) -> int:
    if mtype > _MAX_TYPE:
        return BAD_ARGUMENT
    m = _map(vm, mtype, False)
    if m is None:
        return BAD_ARGUMENT
    # The spec's definition: the size of the serialized pairs (Envoy writes byteSize()).
    vm.instance.write_u32(ret, serialized_size(m))
    return OK


FUNCTIONS = (
    hostfn("proxy_get_header_map_pairs", "iii", "i", proxy_get_header_map_pairs),
    hostfn("proxy_set_header_map_pairs", "iii", "i", proxy_set_header_map_pairs),
    hostfn("proxy_get_header_map_value", "iiiii", "i", proxy_get_header_map_value),
    hostfn("proxy_add_header_map_value", "iiiii", "i", proxy_add_header_map_value),
    hostfn("proxy_replace_header_map_value", "iiiii", "i", proxy_replace_header_map_value),
    hostfn("proxy_remove_header_map_value", "iii", "i", proxy_remove_header_map_value),
    hostfn("proxy_get_header_map_size", "ii", "i", proxy_get_header_map_size),
)
