"""The process-wide side of the Proxy-Wasm host: what plugin VMs share.

``PluginHost`` owns the wasmtime engine and everything Envoy keeps outside a VM:
shared data and queues (by vm_id), plugin-defined metrics, foreign functions, the
callout dispatchers, the log sink and the clock. It also owns the queue of
deferred deliveries (HTTP/gRPC callout results, ``proxy_on_queue_ready``): those
are never delivered from inside a guest call (ABI doc §6.0); the driver drains
them with ``run_pending`` (the offline runner in a loop, the proxy from its
event loop via ``wakeup``).

It must not do I/O itself: callouts go through the dispatcher the caller supplies.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from mypy_extensions import mypyc_attr

from host.wasm import foreign
from host.wasm.metrics import MetricsRegistry
from host.wasm.node import DEFAULT_NODE
from host.wasm.runtime import Engine, Module
from host.wasm.shared import SharedData, SharedQueues
from host.wasm.types import LogLevel, Status

if TYPE_CHECKING:
    from host.wasm.context import GrpcCall, HttpCallout
    from host.wasm.vm import PluginVM, VmConfig

__all__ = [
    "Clock",
    "GrpcDispatcher",
    "HttpDispatcher",
    "LogRecord",
    "NoGrpcDispatcher",
    "NoHttpDispatcher",
    "PluginHost",
    "VirtualClock",
]


class LogRecord:
    """One log line: from the plugin (proxy_log, stdout, stderr) or the host about it.

    A slotted class, not a dataclass: one is made per plugin log call on the hot path.
    """

    __slots__ = (
        "context_id",
        "level",
        "message",
        "plugin",
        "request_id",
        "root_id",
        "source",
        "time",
    )

    def __init__(
        self,
        level: LogLevel,
        message: str,
        plugin: str,
        root_id: str,
        context_id: int,
        request_id: str = "",
        source: str = "plugin",
        time_: float | None = None,
    ) -> None:
        self.level = level
        self.message = message
        self.plugin = plugin
        self.root_id = root_id
        self.context_id = context_id
        self.request_id = request_id
        self.source = source  # "plugin" (proxy_log), "stdout", "stderr", "host"
        self.time = time.time() if time_ is None else time_

    def __repr__(self) -> str:
        return f"LogRecord({self.level.name}, {self.message!r}, plugin={self.plugin!r})"

    def to_dict(self) -> dict[str, object]:
        return {
            "level": self.level.name.lower(),
            "message": self.message,
            "plugin": self.plugin,
            "context_id": self.context_id,
            "request_id": self.request_id,
            "source": self.source,
        }


@mypyc_attr(allow_interpreted_subclasses=True)  # (the lab's RecordingClock)
class Clock:
    """Wall and monotonic time for plugins; frozen per callback is allowed by the ABI."""

    def wall_ns(self) -> int:
        return time.time_ns()

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def now_ms(self) -> float:
        return time.monotonic() * 1000.0

    # -- what a guest obtains (host functions call these, so the debugging lab can
    # record them under serve and play them back in a replay) --

    def guest_wall_ns(self, vm: PluginVM) -> int:
        return self.wall_ns()

    def guest_monotonic_ns(self, vm: PluginVM) -> int:
        return self.monotonic_ns()

    def guest_random(self, vm: PluginVM, n: int) -> bytes:
        return os.urandom(n)


@mypyc_attr(allow_interpreted_subclasses=True)  # (the lab's ReplayClock)
class VirtualClock(Clock):
    """A clock that moves only when told to: deterministic ticks and timeouts in tests."""

    def __init__(self, start_wall_ns: int = 1_700_000_000_000_000_000) -> None:
        self._wall = start_wall_ns
        self._mono = 1_000_000_000

    def advance(self, ms: float) -> None:
        d = int(ms * 1_000_000)
        self._wall += d
        self._mono += d

    def wall_ns(self) -> int:
        return self._wall

    def monotonic_ns(self) -> int:
        return self._mono

    def now_ms(self) -> float:
        return self._mono / 1_000_000


class HttpDispatcher(Protocol):
    """Carries ``proxy_http_call`` requests; supplied by whoever drives the host."""

    def has_cluster(self, name: str) -> bool: ...

    def dispatch(self, call: HttpCallout, done: Callable[[HttpCallout], None]) -> None:
        """Start the call; later invoke ``done(call)`` with the response fields set
        (or ``call.failure``). ``done`` may be called from any code on the host's
        thread, never from inside a guest call; it only posts the delivery."""
        ...

    def cancel(self, call: HttpCallout) -> None: ...


class NoHttpDispatcher:
    """No clusters at all: every ``proxy_http_call`` gets BAD_ARGUMENT (unknown upstream)."""

    def has_cluster(self, name: str) -> bool:
        return False

    def dispatch(self, call: HttpCallout, done: Callable[[HttpCallout], None]) -> None:
        call.failure = "unknown_cluster"
        done(call)

    def cancel(self, call: HttpCallout) -> None:
        pass


class GrpcDispatcher(Protocol):
    """Carries gRPC callouts. Events come back through the ``events`` object:
    ``initial_metadata(call, pairs)``, ``message(call, bytes)``,
    ``trailing_metadata(call, pairs)``, ``close(call, status, message)``."""

    def start(self, call: GrpcCall, events: object) -> Status: ...

    def send(self, call: GrpcCall, message: bytes, end_stream: bool) -> Status: ...

    def cancel(self, call: GrpcCall) -> None: ...

    def close(self, call: GrpcCall) -> None: ...


class NoGrpcDispatcher:
    """The default until a gRPC transport exists: calls are refused with
    INTERNAL_FAILURE (a status every SDK accepts without trapping) and a host log
    line saying why."""

    reason = "gRPC callouts are not available in this host yet (no gRPC transport)"

    def start(self, call: GrpcCall, events: object) -> Status:
        return Status.INTERNAL_FAILURE

    def send(self, call: GrpcCall, message: bytes, end_stream: bool) -> Status:
        return Status.NOT_FOUND

    def cancel(self, call: GrpcCall) -> None:
        pass

    def close(self, call: GrpcCall) -> None:
        pass


ForeignFunction = Callable[[bytes], tuple[Status, bytes]]
MAX_FOREIGN_OUTPUT = 16 * 1024 * 1024
"""The most ``uncompress`` produces; more answers BAD_ARGUMENT."""


class PluginHost:
    def __init__(
        self,
        engine: Engine | None = None,
        *,
        clock: Clock | None = None,
        http: HttpDispatcher | None = None,
        grpc: GrpcDispatcher | None = None,
        log_level: LogLevel = LogLevel.INFO,
        log_sink: Callable[[LogRecord], None] | None = None,
    ) -> None:
        self._own_engine = engine is None
        self.engine = engine if engine is not None else Engine()
        self.clock = clock or Clock()
        self.http: HttpDispatcher = http or NoHttpDispatcher()
        self.grpc: GrpcDispatcher = grpc or NoGrpcDispatcher()
        self.log_level = log_level
        self.log_sink = log_sink
        self.logs: deque[LogRecord] = deque(maxlen=10_000)
        self.shared_data = SharedData()
        self.queues = SharedQueues()
        self.metrics = MetricsRegistry()
        self.foreign_functions: dict[str, ForeignFunction] = {}
        self.foreign_caller: PluginVM | None = None  # the VM inside proxy_call_foreign_function
        self.node = DEFAULT_NODE  # xds.node (the Proxy document's spec.node)
        self.pending: deque[Callable[[], None]] = deque()
        self.wakeup: Callable[[], None] | None = None
        self.vms: list[PluginVM] = []
        self._next_callout_token = 0
        self._register_default_foreign_functions()

    # -- modules and VMs --

    def compile(self, wasm: bytes) -> Module:
        return self.engine.compile(wasm)

    def create_vm(self, module: Module, config: VmConfig) -> PluginVM:
        from host.wasm.vm import PluginVM

        vm = PluginVM(self, module, config)
        self.vms.append(vm)
        return vm

    def vm_closed(self, vm: PluginVM) -> None:
        if vm in self.vms:
            self.vms.remove(vm)
        vm_id = vm.config.vm_id
        if not any(v.config.vm_id == vm_id for v in self.vms):
            # Envoy drops shared data and queues with the last VM of a vm_id.
            self.shared_data.drop_vm_id(vm_id)
            self.queues.drop_vm_id(vm_id)

    # -- deferred work --

    def post(self, fn: Callable[[], None]) -> None:
        self.pending.append(fn)
        if self.wakeup is not None:
            self.wakeup()

    def run_pending(self, limit: int = 10_000) -> int:
        n = 0
        while self.pending and n < limit:
            self.pending.popleft()()
            n += 1
        return n

    def next_callout_token(self) -> int:
        # Unique, non-zero, low 2 bits 0 (cpp-host's HTTP-call token class).
        self._next_callout_token += 1
        return (self._next_callout_token << 2) & 0xFFFFFFFF or 4

    # -- logging --

    def log(self, record: LogRecord) -> None:
        self.logs.append(record)
        if self.log_sink is not None:
            self.log_sink(record)

    # -- foreign functions --

    def _register_default_foreign_functions(self) -> None:
        import zlib

        def compress(args: bytes) -> tuple[Status, bytes]:
            return Status.OK, zlib.compress(args)

        def uncompress(args: bytes) -> tuple[Status, bytes]:
            # Bounded: a few KiB of deflate can expand to gigabytes (issue 13).
            d = zlib.decompressobj()
            try:
                out = d.decompress(args, MAX_FOREIGN_OUTPUT)
            except zlib.error:
                return Status.SERIALIZATION_FAILURE, b""
            if d.unconsumed_tail:
                return Status.BAD_ARGUMENT, b""  # more than MAX_FOREIGN_OUTPUT bytes
            if not d.eof:
                return Status.SERIALIZATION_FAILURE, b""  # truncated stream
            return Status.OK, out

        # Envoy registers these two (zlib); plugins use them for payload compression.
        self.foreign_functions["compress"] = compress
        self.foreign_functions["uncompress"] = uncompress
        foreign.register(self)  # filter state, declare_property, CEL (host.wasm.foreign)
        # Envoy 1.33+: the calling stream's route is selected again (args ignored).
        self.foreign_functions["clear_route_cache"] = self._clear_route_cache

    def _clear_route_cache(self, args: bytes) -> tuple[Status, bytes]:
        """``clear_route_cache``: flag the calling HTTP stream (``route_cache_dirty``, as
        0.1.0's proxy_clear_route_cache does); its driver selects the route again. The
        caller is ``foreign_caller``, the VM whose guest is in proxy_call_foreign_function
        (cpp-host's current context). Outside an HTTP stream it does nothing, as Envoy."""
        from host.wasm.context import HttpContext

        vm = self.foreign_caller
        if vm is not None and isinstance(vm.ctx, HttpContext):
            vm.ctx.route_cache_dirty = True
        return Status.OK, b""

    def close(self) -> None:
        for vm in list(self.vms):
            vm.close()
        if self._own_engine:
            self.engine.close()

    def __enter__(self) -> PluginHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
