"""Helpers every host function uses: guest memory access and returning bytes.

Steps each host function follows (cpp-host ``src/exports.cc``): validate enum
arguments, take the context from the owning VM (``vm.ctx``, never a global),
read guest memory with bounds checks (``GuestFault`` → INVALID_MEMORY_ACCESS, done
by the trampoline), delegate, copy results back through the guest allocator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from host.wasm.runtime import HostFunction
from host.wasm.types import Status

if TYPE_CHECKING:
    from host.wasm.vm import PluginVM

OK: Final = int(Status.OK)
NOT_FOUND: Final = int(Status.NOT_FOUND)
BAD_ARGUMENT: Final = int(Status.BAD_ARGUMENT)
INVALID_MEMORY_ACCESS: Final = int(Status.INVALID_MEMORY_ACCESS)

_SIG = {"i": "i32", "I": "i64"}


def hostfn(
    name: str,
    params: str,
    results: str,
    impl: Callable[..., int | None],
    module: str = "env",
    fault: int = INVALID_MEMORY_ACCESS,
) -> HostFunction:
    """Declare a host function; ``params``/``results`` spell types as i (i32) and I (i64)."""
    return HostFunction(
        module, name, tuple(_SIG[c] for c in params), tuple(_SIG[c] for c in results), impl, fault
    )


def read(vm: PluginVM, ptr: int, size: int) -> bytes:
    return vm.instance.read(ptr, size)


def return_bytes(vm: PluginVM, data: bytes, ret_ptr: int, ret_size: int) -> int:
    """Copy ``data`` into a fresh guest allocation and write (ptr, size) to the out-slots.

    Zero-length results write (0, 0) without calling the allocator (cpp-host).
    """
    inst = vm.instance
    if ret_ptr + 4 > inst.mem_size or ret_size + 4 > inst.mem_size:
        inst.check(ret_ptr, 4)
        inst.check(ret_size, 4)
    n = len(data)
    if n == 0:
        inst.write_u32(ret_ptr, 0)
        inst.write_u32(ret_size, 0)
        return OK
    p = vm.allocate(n)
    if p == 0:
        return INVALID_MEMORY_ACCESS
    inst.write(p, data)
    # the out-slots were checked above (before allocating); memory only grows
    inst.write_u32(ret_ptr, p)
    inst.write_u32(ret_size, n)
    return OK


def signed32(v: int) -> int:
    return v - (1 << 32) if v & 0x80000000 else v


def signed64(v: int) -> int:
    return v - (1 << 64) if v & (1 << 63) else v
