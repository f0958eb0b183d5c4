"""Shared fixtures for the host tests: a real engine, real VMs, and a harness that calls
host functions directly against a real instance's memory and allocator."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

from host.wasm import Engine, LogLevel, PluginHost, VirtualClock, VmConfig
from host.wasm.context import Context, HttpContext, RootContext, StreamInfo
from host.wasm.vm import PluginVM
from tests.fixtures import wat_modules


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    eng = Engine(cache_dir=False)
    yield eng
    eng.close()


@pytest.fixture
def make_host(engine: Engine) -> Iterator[Callable[..., PluginHost]]:
    hosts: list[PluginHost] = []

    def make(**kw: object) -> PluginHost:
        kw.setdefault("log_level", LogLevel.TRACE)
        kw.setdefault("clock", VirtualClock())
        h = PluginHost(engine, **kw)  # type: ignore[arg-type]
        hosts.append(h)
        return h

    yield make
    for h in hosts:
        h.close()


@pytest.fixture
def start_vm(make_host: Callable[..., PluginHost]) -> Callable[..., tuple[PluginHost, PluginVM, RootContext]]:
    """start_vm(wasm, root_id="t", configuration=b"", host=None, **VmConfig fields)."""

    def start(
        wasm: bytes, root_id: str = "t", configuration: bytes = b"", host: PluginHost | None = None,
        **vm_kw: object,
    ) -> tuple[PluginHost, PluginVM, RootContext]:
        h = host or make_host()
        vm_kw.setdefault("name", root_id or "plugin")
        vm = h.create_vm(h.compile(wasm), VmConfig(**vm_kw))  # type: ignore[arg-type]
        root = vm.start_plugin(root_id, configuration)
        return h, vm, root

    return start


class AbiHarness:
    """Calls host functions (``host.wasm.abi.*``) as the guest would, on a real VM.

    ``put`` copies bytes into guest memory through the guest's own allocator;
    ``slot`` reserves zeroed out-parameter space; ``on(ctx)`` makes ``ctx`` the
    current context, as a running callback would.
    """

    def __init__(self, host: PluginHost, vm: PluginVM, root: RootContext) -> None:
        self.host = host
        self.vm = vm
        self.root = root
        self.inst = vm.instance

    def put(self, data: bytes) -> int:
        p = self.vm.allocate(max(len(data), 1))
        assert p
        self.inst.write(p, data)
        return p

    def slot(self, size: int = 8) -> int:
        return self.put(b"\0" * size)

    def u32(self, ptr: int) -> int:
        return self.inst.read_u32(ptr)

    def u64(self, ptr: int) -> int:
        return int.from_bytes(self.inst.read(ptr, 8), "little")

    def returned(self, ptr_slot: int, size_slot: int) -> bytes:
        """The bytes a host function returned through (ret_ptr, ret_size) slots."""
        p, n = self.u32(ptr_slot), self.u32(size_slot)
        return self.inst.read(p, n) if n else b""

    @contextlib.contextmanager
    def on(self, ctx: Context) -> Iterator[Context]:
        prev = self.vm.current, self.vm.effective
        self.vm.current, self.vm.effective = ctx, None
        try:
            yield ctx
        finally:
            self.vm.current, self.vm.effective = prev

    def http_context(self, info: StreamInfo | None = None) -> HttpContext:
        ctx = self.vm.new_http_context(self.root, info)
        ctx.created = True
        return ctx


@pytest.fixture
def abi(start_vm: Callable[..., tuple[PluginHost, PluginVM, RootContext]]) -> AbiHarness:
    """A harness on the callback-less fixture module (memory + malloc only)."""
    host, vm, root = start_vm(wat_modules.make_missing_callbacks_module())
    return AbiHarness(host, vm, root)
