"""Shared data (with CAS) and shared queues (ABI §2.2, §6.5, §6.7), scoped by vm_id."""

from __future__ import annotations

from typing import TYPE_CHECKING

from host.wasm.abi._common import NOT_FOUND, OK, hostfn, read, return_bytes
from host.wasm.context import RootContext
from host.wasm.types import Status

if TYPE_CHECKING:
    from host.wasm.vm import PluginVM


def proxy_get_shared_data(
    vm: PluginVM, key_ptr: int, key_len: int, ret_val_ptr: int, ret_val_size: int, ret_cas: int
) -> int:
    key = read(vm, key_ptr, key_len)
    vm.instance.check(ret_cas, 4)
    entry = vm.host.shared_data.get(vm.config.vm_id, key)
    if entry is None:
        return NOT_FOUND
    value, cas = entry
    status = return_bytes(vm, value, ret_val_ptr, ret_val_size)
    if status == OK:
        vm.instance.write_u32(ret_cas, cas)
    return status


def proxy_set_shared_data(
    vm: PluginVM, key_ptr: int, key_len: int, val_ptr: int, val_len: int, cas: int
) -> int:
    key = read(vm, key_ptr, key_len)
    value = read(vm, val_ptr, val_len)
    if vm.host.shared_data.set(vm.config.vm_id, key, value, cas):
        return OK
    return int(Status.CAS_MISMATCH)


def proxy_register_shared_queue(vm: PluginVM, name_ptr: int, name_len: int, ret_token: int) -> int:
    name = read(vm, name_ptr, name_len).decode("utf-8", "replace")
    vm.instance.check(ret_token, 4)
    root = vm.ctx.root
    q = vm.host.queues.register(
        vm.config.vm_id, name, root if isinstance(root, RootContext) else None
    )
    vm.instance.write_u32(ret_token, q.token)
    return OK


def proxy_resolve_shared_queue(
    vm: PluginVM, vm_id_ptr: int, vm_id_len: int, name_ptr: int, name_len: int, ret_token: int
) -> int:
    vm_id = read(vm, vm_id_ptr, vm_id_len).decode("utf-8", "replace")
    name = read(vm, name_ptr, name_len).decode("utf-8", "replace")
    vm.instance.check(ret_token, 4)
    q = vm.host.queues.resolve(vm_id or vm.config.vm_id, name)
    if q is None:
        return NOT_FOUND
    vm.instance.write_u32(ret_token, q.token)
    return OK


def proxy_enqueue_shared_queue(vm: PluginVM, token: int, val_ptr: int, val_len: int) -> int:
    value = read(vm, val_ptr, val_len)
    q = vm.host.queues.enqueue(token, value)
    if q is None:
        return NOT_FOUND
    receiver = q.receiver
    if isinstance(receiver, RootContext):
        # One notification per enqueue, delivered after this guest call (never inside).
        rvm = receiver.vm

        def deliver() -> None:
            rvm.queue_ready(receiver, token)

        vm.host.post(deliver)
    return OK


def proxy_dequeue_shared_queue(vm: PluginVM, token: int, ret_ptr: int, ret_size: int) -> int:
    vm.instance.check(ret_ptr, 4)
    vm.instance.check(ret_size, 4)
    known, item = vm.host.queues.dequeue(token)
    if not known:
        return NOT_FOUND
    if item is None:
        return int(Status.EMPTY)
    return return_bytes(vm, item, ret_ptr, ret_size)


FUNCTIONS = (
    hostfn("proxy_get_shared_data", "iiiii", "i", proxy_get_shared_data),
    hostfn("proxy_set_shared_data", "iiiii", "i", proxy_set_shared_data),
    hostfn("proxy_register_shared_queue", "iii", "i", proxy_register_shared_queue),
    hostfn("proxy_resolve_shared_queue", "iiiii", "i", proxy_resolve_shared_queue),
    hostfn("proxy_enqueue_shared_queue", "iii", "i", proxy_enqueue_shared_queue),
    hostfn("proxy_dequeue_shared_queue", "iii", "i", proxy_dequeue_shared_queue),
)
