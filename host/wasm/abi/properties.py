"""Properties: proxy_get_property, proxy_set_property (ABI §2.2, §5.2-5.4)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from host.wasm.abi._common import NOT_FOUND, OK, hostfn, read, return_bytes
from host.wasm.attributes import lookup
from host.wasm.context import HttpContext, TcpContext

if TYPE_CHECKING:
    from host.wasm.vm import PluginVM


def proxy_get_property(
    vm: PluginVM, path_ptr: int, path_len: int, ret_ptr: int, ret_size: int
) -> int:
    path = read(vm, path_ptr, path_len)
    value = lookup(vm.ctx, path)
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
    ctx.filter_state[path] = value
    return OK


FUNCTIONS = (
    hostfn("proxy_get_property", "iiii", "i", proxy_get_property),
    hostfn("proxy_set_property", "iiii", "i", proxy_set_property),
)
