"""Context management and foreign functions: proxy_set_effective_context,
proxy_done, proxy_call_foreign_function (ABI §1.5, §2.2)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from host.wasm.abi._common import BAD_ARGUMENT, NOT_FOUND, OK, hostfn, read, return_bytes
from host.wasm.context import RootContext
from host.wasm.types import Status

if TYPE_CHECKING:
    from host.wasm.vm import PluginVM


def proxy_set_effective_context(vm: PluginVM, context_id: int) -> int:
    ctx = vm.contexts.get(context_id)
    if ctx is None or ctx.deleted:
        return BAD_ARGUMENT
    vm.effective = ctx  # for the rest of the current callback only
    return OK


def proxy_done(vm: PluginVM) -> int:
    root = vm.ctx.root
    if isinstance(root, RootContext) and root.pending_done:
        # cpp-host WasmBase::done takes the root out of pending_done_ at once (the
        # delete itself is deferred), so a second proxy_done is NOT_FOUND (ABI doc §1.5).
        root.pending_done = False
        vm.root_done(root)
        return OK
    return NOT_FOUND


def proxy_call_foreign_function(
    vm: PluginVM,
    name_ptr: int,
    name_len: int,
    args_ptr: int,
    args_len: int,
    ret_ptr: int,
    ret_size: int,
) -> int:
    name = read(vm, name_ptr, name_len).decode("utf-8", "replace")
    args = read(vm, args_ptr, args_len)
    fn = vm.host.foreign_functions.get(name)
    if fn is None:
        return NOT_FOUND
    vm.check_budget()
    host = vm.host
    caller, host.foreign_caller = host.foreign_caller, vm  # for functions that need the stream
    try:
        status, out = fn(args)
    finally:
        host.foreign_caller = caller
    if status != Status.OK:
        return int(status)
    if ret_ptr == 0:
        return OK  # cpp-host: output discarded when the plugin gave no slot
    return return_bytes(vm, out, ret_ptr, ret_size)


FUNCTIONS = (
    hostfn("proxy_set_effective_context", "i", "i", proxy_set_effective_context),
    hostfn("proxy_done", "", "i", proxy_done),
    hostfn("proxy_call_foreign_function", "iiiiii", "i", proxy_call_foreign_function),
)
