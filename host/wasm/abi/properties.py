"""Properties: proxy_get_property, proxy_set_property (ABI §2.2, §5.2-5.4).

Values set with proxy_set_property live in the stream's filter state under
``wasm.<name>`` (Envoy's CelState); a property declared with the ``declare_property``
foreign function (``host.wasm.foreign``) may be read-only once set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from host.wasm.abi._common import BAD_ARGUMENT, NOT_FOUND, OK, hostfn, read, return_bytes
from host.wasm.attributes import SerializationFailure, lookup
from host.wasm.context import HttpContext, TcpContext
from host.wasm.types import Status

if TYPE_CHECKING:
    from host.wasm.vm import PluginVM

FILTER_STATE_PREFIX = b"wasm."


def proxy_get_property(
    vm: PluginVM, path_ptr: int, path_len: int, ret_ptr: int, ret_size: int
) -> int:
    path = read(vm, path_ptr, path_len)
    try:
        value = lookup(vm.ctx, path)
    except SerializationFailure:
        return int(Status.SERIALIZATION_FAILURE)
    if value is None:
        return NOT_FOUND
    return return_bytes(vm, value, ret_ptr, ret_size)


def proxy_set_property(
    vm: PluginVM, path_ptr: int, path_len: int, val_ptr: int, val_len: int
) -> int:
    path = read(vm, path_ptr, path_len)
    value = read(vm, val_ptr, val_len)
    ctx = vm.ctx
    if not isinstance(ctx, (HttpContext, TcpContext)):
        return NOT_FOUND  # no stream to hold filter state (Envoy)
    if path.endswith(b"\0"):
        path = path[:-1]
    key = FILTER_STATE_PREFIX + path
    declared = ctx.root.foreign_data.get("properties")
    if declared is not None:
        proto = declared.get(path)
        # Envoy's CelState: a read-only property takes its first value only.
        if proto is not None and proto.readonly and key in ctx.filter_state:
            return BAD_ARGUMENT
    ctx.filter_state[key] = value
    return OK


FUNCTIONS = (
    hostfn("proxy_get_property", "iiii", "i", proxy_get_property),
    hostfn("proxy_set_property", "iiii", "i", proxy_set_property),
)
