"""A Proxy-Wasm plugin VM: one module instance, its contexts and its lifecycle.

``PluginVM`` is cpp-host's ``WasmBase`` + ``ContextBase`` for one wasm instance:
ABI detection (§1.2), linking the host-function table, start-up (§1.3), the
allocator (§1.4), context ids and lifecycle (§1.5), and every guest callback,
funnelled through one method that sets the current context, resets the effective
context, enforces the callback deadline, and turns a trap into a sticky VM failure
(§6.8). Actions a plugin asks for from a host function (continue, close, local
reply) are recorded and applied after the guest call returns (§6.0).

No sockets, no asyncio, no threads: the caller drives it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from host.headers import HeaderMap
from host.wasm.context import (
    Action,
    Context,
    GrpcCall,
    HttpCallout,
    HttpContext,
    MapState,
    RootContext,
    StreamInfo,
    StreamListener,
    TcpContext,
)
from host.wasm.profile import ProfileEntry, profiled
from host.wasm.runtime import CallFailed, Import, Instance, LoadError, Module, ProcExit, RawFunc
from host.wasm.types import ABI_MARKERS, FailState, Failure, LogLevel, Status, StreamType

if TYPE_CHECKING:
    from host.wasm.plugin_host import PluginHost

__all__ = [
    "DEFAULT_MEMORY_LIMIT",
    "PluginVM",
    "VmConfig",
    "VmStartError",
    "detect_abi",
    "export_signature_problems",
    "load_abi",
]

DEFAULT_MEMORY_LIMIT: Final = 256 * 1024 * 1024
DEFAULT_CALLBACK_TIMEOUT_MS: Final = 100.0
# enum members read on the per-callback path (a module global is one dict lookup)
_perf_ns: Final = time.perf_counter_ns
_CONTINUE: Final = Action.CONTINUE
_RELEASED: Final = MapState.RELEASED
_ACTIVE: Final = MapState.ACTIVE
_HTTP_REQUEST: Final = StreamType.HTTP_REQUEST
_GRACE_TICKS: Final = 2  # past the guest's own epoch deadline, so that one reports first

WASI_MODULES: Final = ("wasi_snapshot_preview1", "wasi_unstable")
WASI_NOSYS: Final = 52
_START_FUNCTIONS: Final = frozenset(("_start", "_initialize", "main", "__main_void"))
# gRPC events that carry a payload: the RootContext slot it is readable from, and the
# root callback that reads it (ABI doc §3.4).
_GRPC_PAYLOAD_EVENTS = {
    "initial_metadata": ("grpc_initial_metadata", "proxy_on_grpc_receive_initial_metadata"),
    "message": ("grpc_message", "proxy_on_grpc_receive"),
    "trailing_metadata": ("grpc_trailing_metadata", "proxy_on_grpc_receive_trailing_metadata"),
}


@dataclass(frozen=True)
class VmConfig:
    """How to run one VM. ``env`` is what WASI ``environ_get`` shows (vmConfig.env)."""

    vm_id: str = ""
    name: str = ""  # for log lines and failures: the plugin (or VM) name
    vm_configuration: bytes = b""
    env: tuple[tuple[str, str], ...] = ()
    callback_timeout_ms: float = DEFAULT_CALLBACK_TIMEOUT_MS
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT
    # "spec": proxy_on_memory_allocate first (ABI 0.2.1 text; right for TinyGo);
    # "envoy": malloc first, as cpp-host/Envoy/Kong do. ABI doc §1.4.
    allocator: str = "spec"
    args: tuple[str, ...] = field(default=())
    trace_calls: bool = False  # record every guest call from start-up on (vm.trace)
    profile: bool = False  # time host calls per guest callback (vm.profile, wasm/profile.py)


class VmStartError(Exception):
    """The VM or a plugin on it could not start; ``failure`` says why (for display)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class _Trapped(Exception):
    """Internal: the guest call failed and the VM is now failed."""


class BudgetExceeded(Exception):
    """Raised by ``PluginVM.check_budget`` inside a host function: the callback's
    time budget is spent (the trampoline turns it into a trap)."""


def detect_abi(module: Module) -> str | None:
    """The ABI version from the first function export that is a marker (cpp-host rule)."""
    for exp in module.exports:
        if exp.kind == "func" and exp.name in ABI_MARKERS:
            return ABI_MARKERS[exp.name]
    return None


def load_abi(module: Module) -> tuple[str | None, list[str]]:
    """The ABI version this host runs ``module`` as, and warnings about that choice.

    A marker decides (``detect_abi``). A module without one that has the shape of a
    pre-0.1.0 plugin (Istio 1.4/1.5) runs as 0.1.0, with a warning (``abi.legacy``).
    """
    from host.wasm.abi.legacy import legacy_abi

    abi = detect_abi(module)
    if abi is not None:
        return abi, []
    return legacy_abi(module)


# name -> (params, results); headers callbacks depend on the ABI version (_HEADERS).
_CALLBACKS: dict[str, tuple[int, int]] = {
    "proxy_on_context_create": (2, 0),
    "proxy_on_vm_start": (2, 1),
    "proxy_on_configure": (2, 1),
    "proxy_validate_configuration": (2, 1),
    "proxy_on_tick": (1, 0),
    "proxy_on_queue_ready": (2, 0),
    "proxy_on_done": (1, 1),
    "proxy_on_log": (1, 0),
    "proxy_on_delete": (1, 0),
    "proxy_on_new_connection": (1, 1),
    "proxy_on_downstream_data": (3, 1),
    "proxy_on_upstream_data": (3, 1),
    "proxy_on_downstream_connection_close": (2, 0),
    "proxy_on_upstream_connection_close": (2, 0),
    "proxy_on_request_body": (3, 1),
    "proxy_on_request_trailers": (2, 1),
    "proxy_on_request_metadata": (2, 1),
    "proxy_on_response_body": (3, 1),
    "proxy_on_response_trailers": (2, 1),
    "proxy_on_response_metadata": (2, 1),
    "proxy_on_http_call_response": (5, 0),
    "proxy_on_grpc_receive_initial_metadata": (3, 0),
    "proxy_on_grpc_receive": (3, 0),
    "proxy_on_grpc_receive_trailing_metadata": (3, 0),
    "proxy_on_grpc_close": (3, 0),
}


# Callbacks whose parameter count differs between ABI versions (ABI doc §3.3): the
# headers callbacks take end_of_stream from 0.2.0 on. Plugins of 2020 (C++ SDK, mosn,
# TinyGo-era Go) often pair the 0.1.0 marker with the 3-parameter shape, so each is
# called with the arity its export has (cpp-host would treat it as absent).
_HEADERS: Final = ("proxy_on_request_headers", "proxy_on_response_headers")
_HEADERS_ARITIES: Final = (3, 2)
# Other exports the host calls, with the one shape it calls them with.
_OTHER_EXPORTS: dict[str, tuple[int, int]] = {
    "proxy_on_foreign_function": (3, 0),
    "proxy_on_grpc_trailing_metadata": (3, 0),  # the AssemblyScript runtime's misspelling
    "proxy_on_memory_allocate": (1, 1),
    "malloc": (1, 1),
    "_initialize": (0, 0),
    "_start": (0, 0),
}


def _shape(nparams: int, nresults: int) -> str:
    return f"({', '.join(('i32',) * nparams)}) -> ({', '.join(('i32',) * nresults)})"


def export_signature_problems(module: Module) -> list[str]:
    """One line per export the host would call but cannot, because of its signature.

    Such an export is never called (as in cpp-host); ``inspect``, ``try`` and
    ``/plugins`` show these lines instead of ignoring the export silently.
    """
    out = []
    for exp in module.exports:
        if exp.kind != "func":
            continue
        want: list[tuple[int, int]]
        if exp.name in _HEADERS:
            want = [(n, 1) for n in _HEADERS_ARITIES]
        elif exp.name in _CALLBACKS:
            want = [_CALLBACKS[exp.name]]
        elif exp.name in _OTHER_EXPORTS:
            want = [_OTHER_EXPORTS[exp.name]]
        else:
            continue
        if any(exp.params == ("i32",) * p and exp.results == ("i32",) * r for p, r in want):
            continue
        got = f"({', '.join(exp.params)}) -> ({', '.join(exp.results)})"
        expected = " or ".join(_shape(p, r) for p, r in want)
        out.append(
            f"export {exp.name} has signature {got}; the host calls it as {expected}: "
            "it is never called"
        )
    return out


def _lookup(
    inst: Instance, name: str, nparams: int, nresults: int, mismatched: list[str]
) -> RawFunc | None:
    """The export ``name`` with that many i32 parameters and results, or None (noted in
    ``mismatched`` when it exists with another signature)."""
    f = inst.func(name, ("i32",) * nparams, ("i32",) * nresults)
    if f is None and inst.has_export(name):
        mismatched.append(name)
    return f


class Callbacks:
    """Guest exports resolved once per instance; None = absent (means "continue").

    ``request_headers_eos`` / ``response_headers_eos``: whether that headers
    callback takes ``end_of_stream`` (its export has 3 parameters), whatever the
    ABI marker says. ``mismatched``: exports present with a signature the host
    cannot call (never called; see ``export_signature_problems``).
    """

    def __init__(self, inst: Instance, abi: str) -> None:
        self.mismatched: list[str] = []
        mismatched = self.mismatched

        def get(name: str) -> RawFunc | None:
            np, nr = _CALLBACKS[name]
            return _lookup(inst, name, np, nr, mismatched)

        # one declared attribute per callback of _CALLBACKS (a compiled class: reading
        # one is a slot load, not a dictionary lookup through __getattr__)
        self.proxy_on_context_create = get("proxy_on_context_create")
        self.proxy_on_vm_start = get("proxy_on_vm_start")
        self.proxy_on_configure = get("proxy_on_configure")
        self.proxy_validate_configuration = get("proxy_validate_configuration")
        self.proxy_on_tick = get("proxy_on_tick")
        self.proxy_on_queue_ready = get("proxy_on_queue_ready")
        self.proxy_on_done = get("proxy_on_done")
        self.proxy_on_log = get("proxy_on_log")
        self.proxy_on_delete = get("proxy_on_delete")
        self.proxy_on_new_connection = get("proxy_on_new_connection")
        self.proxy_on_downstream_data = get("proxy_on_downstream_data")
        self.proxy_on_upstream_data = get("proxy_on_upstream_data")
        self.proxy_on_downstream_connection_close = get("proxy_on_downstream_connection_close")
        self.proxy_on_upstream_connection_close = get("proxy_on_upstream_connection_close")
        self.proxy_on_request_body = get("proxy_on_request_body")
        self.proxy_on_request_trailers = get("proxy_on_request_trailers")
        self.proxy_on_request_metadata = get("proxy_on_request_metadata")
        self.proxy_on_response_body = get("proxy_on_response_body")
        self.proxy_on_response_trailers = get("proxy_on_response_trailers")
        self.proxy_on_response_metadata = get("proxy_on_response_metadata")
        self.proxy_on_http_call_response = get("proxy_on_http_call_response")
        self.proxy_on_grpc_receive_initial_metadata = get("proxy_on_grpc_receive_initial_metadata")
        self.proxy_on_grpc_receive = get("proxy_on_grpc_receive")
        # The AssemblyScript runtime exports this callback misspelled (ABI doc §3.4).
        self.proxy_on_grpc_receive_trailing_metadata = get(
            "proxy_on_grpc_receive_trailing_metadata"
        ) or inst.func("proxy_on_grpc_trailing_metadata", ("i32",) * 3, ())
        self.proxy_on_grpc_close = get("proxy_on_grpc_close")
        # The ABI's arity first, then the other one (one lookup per instance).
        arities = _HEADERS_ARITIES if abi != "0.1.0" else _HEADERS_ARITIES[::-1]
        self.proxy_on_request_headers = self._headers(inst, "proxy_on_request_headers", arities)
        self.proxy_on_response_headers = self._headers(inst, "proxy_on_response_headers", arities)
        self.request_headers_eos = (
            self.proxy_on_request_headers is not None and self.proxy_on_request_headers.nparams == 3
        )
        self.response_headers_eos = (
            self.proxy_on_response_headers is not None
            and self.proxy_on_response_headers.nparams == 3
        )
        # 0.2.0 added this callback; a 0.1.0-marked module that exports it gets it too.
        self.proxy_on_foreign_function = _lookup(
            inst, "proxy_on_foreign_function", 3, 0, self.mismatched
        )
        self._initialize = inst.func("_initialize", (), ())
        self._start = inst.func("_start", (), ())
        self.main = inst.func("main", ("i32", "i32"), ("i32",))
        self.__main_void = inst.func("__main_void", (), ("i32",))
        self.proxy_on_memory_allocate = inst.func("proxy_on_memory_allocate", ("i32",), ("i32",))
        self.malloc = inst.func("malloc", ("i32",), ("i32",))

    def _headers(self, inst: Instance, name: str, arities: tuple[int, ...]) -> RawFunc | None:
        for n in arities:
            fn = inst.func(name, ("i32",) * n, ("i32",))
            if fn is not None:
                return fn
        if inst.has_export(name):
            self.mismatched.append(name)
        return None

    def main_void(self) -> RawFunc | None:
        return self.__main_void


class PluginVM:
    def __init__(self, host: PluginHost, module: Module, config: VmConfig) -> None:
        from host.wasm.abi import FUNCTIONS

        self.host = host
        self.module = module
        self.config = config
        self.name = config.name or module.sha256[:12]
        self.guest_allocations = 0  # calls of the guest allocator from host functions
        self.failure: Failure | None = None
        self.contexts: dict[int, Context] = {}
        self.roots: dict[str, RootContext] = {}
        self._next_context_id = 1
        self._deadline = host.engine.deadline_ticks(config.callback_timeout_ms)
        # A guest call shorter than this cannot have spent its budget in host calls: the
        # epoch moves at most once per TICK_MS (plus a tick right after the call began),
        # so only a longer call reads the epoch again when it returns (see _call).
        self._budget_floor_ns = (
            (self._deadline + _GRACE_TICKS - 1) * host.engine.TICK_MS * 1_000_000
        )
        self.vm_context = Context(self, 0, None)
        self.current: Context = self.vm_context
        self.effective: Context | None = None
        self._actions: list[tuple[str, Context, StreamType | None]] = []
        self.callback_ns = 0
        self.callback_count = 0
        self.trap_count = 0
        self.failure_listeners: list[object] = []
        self.current_callback = ""
        self.last_call_ns = 0
        self.trace_calls = config.trace_calls  # record every guest call (vm.trace)
        self.trace: list[tuple[str, int, int | str | None]] = []
        # proxy_http_call refused for too many calls in flight (and the callback_count
        # of the last refusal, so it is logged once per callback)
        self.callouts_refused = 0
        self.callouts_refused_at = -1
        # Host-call time counts against the callback budget: the engine epoch at which
        # the running outermost callback's budget ends (0 = none running), checked by
        # host functions that can run long and after the callback returns. The epoch is
        # the clock the guest's own deadline uses, so both agree (also under load).
        self.call_deadline_epoch = 0
        self._engine = host.engine
        self._budget_spent = False
        # WASI output left to the running callback (abi.wasi; reset per callback)
        self.output_callback = -1
        self.output_left = 0
        # host calls per guest callback, when profiled (host/wasm/profile.py)
        self.profile: list[ProfileEntry] = []
        self.hostcalls: dict[str, list[int]] | None = {} if config.profile else None

        abi, self.warnings = load_abi(module)
        if abi is None:
            raise VmStartError(
                Failure(
                    FailState.UNABLE_TO_CREATE_VM,
                    "no_abi_marker",
                    "Missing or unknown Proxy-Wasm ABI version: the module exports none of "
                    "proxy_abi_version_0_1_0, _0_2_0, _0_2_1, nor imports "
                    "proxy_get_configuration as pre-0.1.0 plugins do (is it a Proxy-Wasm "
                    "plugin?)",
                    at=time.time(),
                )
            )
        self.abi = abi
        host.engine.ensure_ticker()
        try:
            self.instance = Instance(
                module,
                profiled(FUNCTIONS) if config.profile else FUNCTIONS,
                self,
                memory_limit_bytes=config.memory_limit_bytes,
                stub_result=_stub_result,
                start_deadline_ticks=self._deadline,
            )
        except LoadError as e:
            raise VmStartError(
                Failure(FailState.UNABLE_TO_CREATE_VM, e.kind, e.message, at=time.time())
            ) from e
        try:
            self._setup()
        except VmStartError:
            self.instance.close()
            raise

    def _setup(self) -> None:
        inst = self.instance
        if not inst.mem_size and inst._memory is None:
            raise VmStartError(
                Failure(
                    FailState.UNABLE_TO_CREATE_VM,
                    "no_memory",
                    "module exports no linear memory",
                    at=time.time(),
                )
            )
        cb = Callbacks(inst, self.abi)
        self.cb = cb
        if cb.mismatched:
            self.warnings += export_signature_problems(self.module)
        order = (
            (cb.proxy_on_memory_allocate, cb.malloc)
            if self.config.allocator == "spec"
            else (cb.malloc, cb.proxy_on_memory_allocate)
        )
        self._allocator = order[0] or order[1]
        if self._allocator is None:
            raise VmStartError(
                Failure(
                    FailState.MISSING_FUNCTION,
                    "missing_allocator",
                    "Wasm module is missing malloc function (exports neither "
                    "proxy_on_memory_allocate nor malloc)",
                    at=time.time(),
                )
            )
        # Start-up (§1.3 step 4) on the VM context.
        try:
            if cb._initialize is not None:
                self._call(cb._initialize, (), self.vm_context, "_initialize")
                if cb.main is not None:
                    self._call(cb.main, (0, 0), self.vm_context, "main")
                elif cb.main_void() is not None:
                    self._call(cb.main_void(), (), self.vm_context, "__main_void")  # type: ignore[arg-type]
            elif cb._start is not None:
                self._call(cb._start, (), self.vm_context, "_start")
        except _Trapped:
            f = self.failed_with()
            assert f is not None
            self.failure = Failure(
                FailState.UNABLE_TO_INITIALIZE_CODE,
                f.kind,
                f.message,
                f.callback,
                0,
                f.backtrace,
                f.at,
            )
            raise VmStartError(self._failure()) from None

    # -- identity / info ----------------------------------------------------------------

    @property
    def failed(self) -> bool:
        return self.failure is not None

    @property
    def closed(self) -> bool:
        return self.instance._closed

    @property
    def stubbed_imports(self) -> list[Import]:
        return list(self.instance.stubbed)

    def memory_bytes(self) -> int:
        if self.instance._closed:
            return 0
        return self.instance.memory_pages() * 65536

    @property
    def ctx(self) -> Context:
        """The context host functions act on: the effective one if set, else current."""
        return self.effective if self.effective is not None else self.current

    # -- guest calls ----------------------------------------------------------------------

    def _call(self, fn: RawFunc, args: tuple[int, ...], ctx: Context, name: str) -> int | None:
        """The one door into the guest: current context set, effective context reset,
        deadline applied, a trap turned into a sticky VM failure (§6.8)."""
        if self.failure is not None:
            raise _Trapped()
        prev = (self.current, self.effective, self.current_callback)
        self.current = ctx
        self.effective = None
        self.current_callback = name
        outer_calls = self.hostcalls
        if outer_calls is not None:
            self.hostcalls = {}
        t0 = _perf_ns()
        engine = self._engine
        prev_deadline = self.call_deadline_epoch
        if not prev_deadline:
            self.call_deadline_epoch = engine.epoch + self._deadline + _GRACE_TICKS
        t1 = 0
        try:
            r = self.instance.call(fn, args, self._deadline)
            t1 = _perf_ns()
            if (
                not prev_deadline
                and t1 - t0 >= self._budget_floor_ns
                and engine.epoch > self.call_deadline_epoch
            ):
                self._budget_spent = True
                raise CallFailed("interrupt", "")  # host calls spent the budget
        except CallFailed as e:
            if (
                e.kind == "proc_exit"
                and self.instance.proc_exit_code == 0
                and name in _START_FUNCTIONS
            ):
                # proc_exit(0) at the end of a WASI command's _start is a clean exit.
                self.instance.proc_exit_code = None
                if self.trace_calls:
                    self.trace.append((name, ctx.id, "proc_exit(0)"))
                return None
            kind, message = e.kind, e.message
            if self._budget_spent:
                self._budget_spent = False
                kind = "interrupt"
                message = (
                    f"{name}: callback exceeded its time budget "
                    f"({self.config.callback_timeout_ms:g} ms) in host calls "
                    f"({(_perf_ns() - t0) / 1e6:.0f} ms)"
                )
            if self.trace_calls:
                self.trace.append((name, ctx.id, f"trap: {kind}"))
            self.trap_count += 1
            bt = e.backtrace
            if bt and not any(f.startswith(name) for f in bt):
                bt = (*bt, f"{name} (entered by the host)")
            self._fail(FailState.RUNTIME_ERROR, kind, message, name, ctx.id, bt)
            raise _Trapped() from None
        finally:
            dt = (t1 or _perf_ns()) - t0
            self.last_call_ns = dt
            self.callback_ns += dt
            self.callback_count += 1
            self.current, self.effective, self.current_callback = prev
            self.call_deadline_epoch = prev_deadline
            if outer_calls is not None and self.hostcalls is not None:
                self.profile.append((name, ctx.id, dt, self.hostcalls))
                self.hostcalls = outer_calls
        if self.trace_calls:
            self.trace.append((name, ctx.id, r))
        return r

    def failed_with(self) -> Failure | None:
        """``self.failure`` read afresh (a guest call in between may have set it; mypy
        would keep an earlier narrowing of the attribute, and mypyc would check it)."""
        return self.failure

    def _failure(self) -> Failure:
        f = self.failure
        assert f is not None
        return f

    def check_budget(self) -> None:
        """From a host function that can run long: fail the running callback (a trap
        reported as ``interrupt``) once its budget is spent, host time included."""
        if self.call_deadline_epoch and self._engine.epoch > self.call_deadline_epoch:
            self._budget_spent = True
            raise BudgetExceeded(self.current_callback)

    def _fail(
        self,
        state: FailState,
        kind: str,
        message: str,
        callback: str,
        context_id: int,
        backtrace: tuple[str, ...] = (),
    ) -> None:
        if self.failure is None:
            self.failure = Failure(
                state, kind, message, callback, context_id, backtrace, time.time()
            )
            self._host_log(LogLevel.CRITICAL, f"plugin VM failed: {kind}: {message}")
            for listener in list(self.failure_listeners):
                fn = getattr(listener, "vm_failed", None)
                if fn is not None:
                    fn(self)

    def _host_log(self, level: LogLevel, message: str, ctx: Context | None = None) -> None:
        from host.wasm.plugin_host import LogRecord

        c = ctx or self.vm_context
        root_id = c.root.root_id if isinstance(c.root, RootContext) else ""
        self.host.log(LogRecord(level, message, self.name, root_id, c.id, source="host"))

    def allocate(self, size: int) -> int:
        """Call the guest allocator from a host function. Re-entrant: it shares the
        running callback's deadline, a trap in it fails the outer call, and it runs
        on the VM context (id 0) as in cpp-host, so host functions it calls (Go's
        runtime calls clocks) act on no stream (ABI doc §1.4)."""
        self.guest_allocations += 1
        prev_current, prev_effective = self.current, self.effective
        self.current = self.vm_context
        self.effective = None
        inst = self.instance
        try:
            if inst.depth:  # from a host function, inside a callback: the usual case
                return inst._call_nested(self._allocator, (size,)) or 0  # type: ignore[arg-type]
            return inst.call(self._allocator, (size,), self._deadline) or 0  # type: ignore[arg-type]
        finally:
            self.current = prev_current
            self.effective = prev_effective

    # -- deferred actions (§6.0) --------------------------------------------------------

    def request_action(self, kind: str, ctx: Context, stream: StreamType | None) -> None:
        self._actions.append((kind, ctx, stream))

    def _take_actions(self) -> list[tuple[str, Context, StreamType | None]]:
        acts, self._actions = self._actions, []
        return acts

    def _apply_actions(self, acts: list[tuple[str, Context, StreamType | None]]) -> None:
        for kind, ctx, stream in acts:
            if ctx.deleted:
                continue
            listener = getattr(ctx, "listener", None)
            if kind == "continue" and isinstance(ctx, HttpContext) and stream is not None:
                d = ctx.direction(stream)
                if d.paused or d.buffering:
                    d.paused = False
                    d.buffering = False
                    if d.headers_state == MapState.ACTIVE:
                        d.headers_state = MapState.RELEASED  # forwarded on resume (§6.1.4)
                    if listener is not None:
                        listener.on_resume(ctx, stream)
            elif kind == "continue" and isinstance(ctx, TcpContext) and stream is not None:
                if stream in ctx.paused:
                    ctx.paused.discard(stream)
                    if listener is not None:
                        listener.on_resume(ctx, stream)
            elif kind == "close" and stream is not None:
                if listener is not None:
                    listener.on_close(ctx, stream)
            elif kind == "local_reply" and isinstance(ctx, HttpContext):
                if listener is not None:
                    listener.on_local_reply(ctx)

    def _run_root_callback(
        self, fn: RawFunc | None, args: tuple[int, ...], root: RootContext, name: str
    ) -> bool:
        """Run a callback that is not a stream event; apply what it asked afterwards."""
        if fn is None or self.failure is not None or root.deleted:
            return self.failure is None
        try:
            self._call(fn, args, root, name)
        except _Trapped:
            self._apply_actions(self._take_actions())
            return False
        self._apply_actions(self._take_actions())
        return True

    # -- plugins (root contexts) ------------------------------------------------------------

    def _new_id(self) -> int:
        cid = self._next_context_id
        self._next_context_id += 1
        return cid

    def start_plugin(
        self, root_id: str, configuration: bytes, plugin_name: str = ""
    ) -> RootContext:
        """Create the root context, then on_vm_start and on_configure (§1.3 step 5)."""
        if self.failure is not None:
            raise VmStartError(self._failure())
        if root_id in self.roots:
            raise ValueError(
                f"a plugin with root id {root_id!r} already runs on this VM; "
                "reconfigure it (configure) or remove it first"
            )
        root = RootContext(self, self._new_id(), root_id, plugin_name or root_id, configuration)
        self.contexts[root.id] = root
        self.roots[root_id] = root
        cb = self.cb
        try:
            if cb.proxy_on_context_create is not None:
                self._call(
                    cb.proxy_on_context_create, (root.id, 0), root, "proxy_on_context_create"
                )
            root.created = True
            if cb.proxy_on_vm_start is not None:
                ok = self._call(
                    cb.proxy_on_vm_start,
                    (root.id, len(self.config.vm_configuration)),
                    root,
                    "proxy_on_vm_start",
                )
                if ok == 0:
                    self._fail(
                        FailState.START_FAILED,
                        "start_failed",
                        "proxy_on_vm_start returned false",
                        "proxy_on_vm_start",
                        root.id,
                    )
                    raise VmStartError(self._failure())
        except _Trapped:
            f = self.failed_with()
            assert f is not None
            self.failure = Failure(
                FailState.START_FAILED,
                f.kind,
                f.message,
                f.callback,
                f.context_id,
                f.backtrace,
                f.at,
            )
            raise VmStartError(self._failure()) from None
        if not self.configure(root, configuration):
            raise VmStartError(self._failure())
        self._apply_actions(self._take_actions())
        return root

    def configure(self, root: RootContext, configuration: bytes) -> bool:
        """on_configure with ``configuration`` readable as PLUGIN_CONFIGURATION.

        At start-up a refusal fails the plugin (CONFIGURE_FAILED, as Envoy). On a
        running plugin a refusal only returns False: the VM keeps serving (Envoy
        rejects the update). A trap fails the VM either way; a VM that already
        failed is left as it is (its RUNTIME_ERROR stays reloadable).
        """
        if self.failure is not None:
            return False
        starting = not root.configured
        cb = self.cb
        root.configuring = configuration
        ok: int | None
        try:
            if cb.proxy_on_configure is None:
                ok = 1
            else:
                ok = self._call(
                    cb.proxy_on_configure, (root.id, len(configuration)), root, "proxy_on_configure"
                )
        except _Trapped:
            f = self.failed_with()
            assert f is not None
            self.failure = Failure(
                FailState.CONFIGURE_FAILED,
                f.kind,
                f.message,
                f.callback,
                f.context_id,
                f.backtrace,
                f.at,
            )
            return False
        finally:
            root.configuring = None
        if ok == 0:
            if starting:
                self._fail(
                    FailState.CONFIGURE_FAILED,
                    "configure_failed",
                    "proxy_on_configure returned false (the plugin rejected its configuration)",
                    "proxy_on_configure",
                    root.id,
                )
            else:
                self._host_log(
                    LogLevel.ERROR,
                    "proxy_on_configure returned false: the new configuration was rejected",
                    root,
                )
            return False
        root.configuration = configuration
        root.configured = True
        return True

    def validate_configuration(self, root: RootContext, configuration: bytes) -> bool | None:
        """The non-spec ``proxy_validate_configuration``; None when not exported."""
        fn = self.cb.proxy_validate_configuration
        if fn is None:
            return None
        root.configuring = configuration
        try:
            return bool(
                self._call(fn, (root.id, len(configuration)), root, "proxy_validate_configuration")
            )
        except _Trapped:
            return False
        finally:
            root.configuring = None

    def root(self, root_id: str) -> RootContext:
        return self.roots[root_id]

    def tick(self, root: RootContext) -> bool:
        root.next_tick_ms = (
            self.host.clock.now_ms() + root.tick_period_ms if root.tick_period_ms else None
        )
        return self._run_root_callback(self.cb.proxy_on_tick, (root.id,), root, "proxy_on_tick")

    def due_ticks(self, now_ms: float) -> list[RootContext]:
        return [
            r
            for r in self.roots.values()
            if r.next_tick_ms is not None and r.next_tick_ms <= now_ms and not r.deleted
        ]

    def call_foreign_function(self, root: RootContext, function_id: int, args: bytes) -> bool:
        root.call_data = args
        try:
            return self._run_root_callback(
                self.cb.proxy_on_foreign_function,
                (root.id, function_id, len(args)),
                root,
                "proxy_on_foreign_function",
            )
        finally:
            root.call_data = None

    # -- callouts ----------------------------------------------------------------------

    def http_call_done(self, call: HttpCallout) -> None:
        """Dispatcher completion: posted, never delivered inside a guest call."""
        self.host.post(lambda: self._deliver_http_response(call))

    def _deliver_http_response(self, call: HttpCallout) -> None:
        root = self._root_of_call(call.token)
        if root is None:
            return
        del root.http_calls[call.token]
        if call.failure is not None:
            root.last_status = (Status.BROKEN_CONNECTION, call.failure.encode())
            nh = nb = nt = 0
            root.callout_response = HttpCallout(
                call.token, call.cluster, [], b"", [], call.timeout_ms, call.context_id
            )
        else:
            root.last_status = (Status.OK, b"")
            nh = len(call.response_headers)
            nb = len(call.response_body)
            nt = len(call.response_trailers)
            root.callout_response = call
        try:
            self._run_root_callback(
                self.cb.proxy_on_http_call_response,
                (root.id, call.token, nh, nb, nt),
                root,
                "proxy_on_http_call_response",
            )
        finally:
            root.callout_response = None
            root.last_status = (Status.OK, b"")  # valid only inside the callback

    def _root_of_call(self, token: int) -> RootContext | None:
        for r in self.roots.values():
            if token in r.http_calls and not r.deleted:
                return r
        return None

    def grpc_event(self, call: GrpcCall, kind: str, payload: object, status: int = 0) -> None:
        self.host.post(lambda: self._deliver_grpc(call, kind, payload, status))

    def _deliver_grpc(self, call: GrpcCall, kind: str, payload: object, status: int) -> None:
        root = next((r for r in self.roots.values() if call.token in r.grpc_calls), None)
        if root is None or root.deleted:
            return
        size = len(payload) if isinstance(payload, (bytes, list)) else 0
        if kind in _GRPC_PAYLOAD_EVENTS:
            # The payload is readable (as a buffer or a map) only inside its callback.
            slot, name = _GRPC_PAYLOAD_EVENTS[kind]
            if kind == "message" and not call.stream:
                # a unary call's answer is its completion: no close follows (Envoy)
                root.grpc_calls.pop(call.token, None)
            setattr(root, slot, payload)
            try:
                self._run_root_callback(
                    getattr(self.cb, name), (root.id, call.token, size), root, name
                )
            finally:
                setattr(root, slot, None)
        elif kind == "close":
            root.grpc_calls.pop(call.token, None)
            root.last_status = (status, payload if isinstance(payload, bytes) else b"")
            try:
                self._run_root_callback(
                    self.cb.proxy_on_grpc_close,
                    (root.id, call.token, status),
                    root,
                    "proxy_on_grpc_close",
                )
            finally:
                root.last_status = (Status.OK, b"")

    def queue_ready(self, root: RootContext, token: int) -> bool:
        return self._run_root_callback(
            self.cb.proxy_on_queue_ready, (root.id, token), root, "proxy_on_queue_ready"
        )

    # -- HTTP streams --------------------------------------------------------------------

    def new_http_context(
        self,
        root: RootContext,
        info: StreamInfo | None = None,
        listener: StreamListener | None = None,
    ) -> HttpContext:
        if root.deleted:
            raise ValueError(f"root context {root.id} ({root.root_id!r}) was removed")
        ctx = HttpContext(self, self._new_id(), root, info)
        ctx.listener = listener
        self.contexts[ctx.id] = ctx
        return ctx

    def _ensure_created(self, ctx: Context) -> None:
        if not ctx.created:
            ctx.created = True
            fn = self.cb.proxy_on_context_create
            if fn is not None:
                self._call(fn, (ctx.id, ctx.root.id), ctx, "proxy_on_context_create")

    def _stream_call(
        self, ctx: HttpContext | TcpContext, fn: RawFunc | None, args: tuple[int, ...], name: str
    ) -> int | None:
        """Run a stream callback (after lazily creating the context); record its time."""
        if not ctx.created:
            self._ensure_created(ctx)
        if fn is None:
            ctx.callbacks.append((name, None, 0.0))
            return 0
        r = self._call(fn, args, ctx, name)
        ctx.callbacks.append((name, r, self.last_call_ns / 1000.0))
        return r

    def _settle(
        self, ctx: HttpContext, stream: StreamType, paused: bool, local_before: object
    ) -> Action:
        """Fold the actions recorded during a stream callback into its result (§6.0-6.2)."""
        if not self._actions:
            if ctx.local_response is not None and ctx.local_response is not local_before:
                return Action.LOCAL_REPLY  # pragma: no cover - a reply always records one
            return Action.PAUSE if paused else Action.CONTINUE
        acts = self._take_actions()
        own_continue = own_close = False
        others = []
        for a in acts:
            kind, c, s = a
            if c is ctx and s == stream:
                if kind == "continue":
                    own_continue = True
                elif kind == "close":
                    own_close = True
            elif not (c is ctx and kind == "local_reply"):
                others.append(a)
        d = ctx.direction(stream)
        if ctx.local_response is not None and ctx.local_response is not local_before:
            d.paused = False
            d.buffering = False
            result = Action.LOCAL_REPLY
        elif own_close:
            result = Action.CLOSE
        elif paused and not own_continue:
            result = Action.PAUSE
        else:
            result = Action.CONTINUE
        if others:
            self._apply_actions(others)
        return result

    def http_headers(
        self, ctx: HttpContext, stream: StreamType, headers: HeaderMap, end_of_stream: bool
    ) -> Action:
        if self.failure is not None or self.instance._closed:
            return Action.FAILED
        if ctx.deleted:
            return Action.CONTINUE  # finished stream: nothing reaches the guest (§6.0)
        req = stream == _HTTP_REQUEST
        d = ctx.request if req else ctx.response
        d.headers = headers
        d.headers_state = _ACTIVE
        d.end_of_stream = end_of_stream
        cb = self.cb
        fn = cb.proxy_on_request_headers if req else cb.proxy_on_response_headers
        name = "proxy_on_request_headers" if req else "proxy_on_response_headers"
        eos = cb.request_headers_eos if req else cb.response_headers_eos
        args = (ctx.id, len(headers), int(end_of_stream)) if eos else (ctx.id, len(headers))
        before = ctx.local_response
        try:
            r = self._stream_call(ctx, fn, args, name)
        except _Trapped:
            self._take_actions()
            return Action.FAILED
        # Headers results (§3.3): 0 Continue, 2 ContinueAndEndStream (= Continue);
        # anything else stops headers *and* body until continue_stream.
        paused = r != 0 and r != 2
        if not paused and not self._actions and ctx.local_response is before:
            # the common case (nothing asked for during the callback): _settle's answer
            d.paused = False
            d.headers_state = _RELEASED
            return _CONTINUE
        d.paused = paused
        action = self._settle(ctx, stream, paused, before)
        if action == Action.CONTINUE:
            d.paused = False
            d.headers_state = MapState.RELEASED
        return action

    def http_body(
        self, ctx: HttpContext, stream: StreamType, chunk: bytes, end_of_stream: bool
    ) -> Action:
        if self.failure is not None or self.instance._closed:
            return Action.FAILED
        if ctx.deleted:
            return Action.CONTINUE
        d = ctx.direction(stream)
        if not (d.buffering or d.paused):
            d.body.clear()  # what the last Continue released is gone from the buffer
        d.body += chunk
        d.end_of_stream = end_of_stream
        if end_of_stream and d.trailers is None:
            d.trailers_writable = True  # a plugin may add trailers from the last chunk
        req = stream == StreamType.HTTP_REQUEST
        fn = self.cb.proxy_on_request_body if req else self.cb.proxy_on_response_body
        name = "proxy_on_request_body" if req else "proxy_on_response_body"
        before = ctx.local_response
        d.body_active = True
        try:
            r = self._stream_call(ctx, fn, (ctx.id, len(d.body), int(end_of_stream)), name)
        except _Trapped:
            self._take_actions()
            return Action.FAILED
        finally:
            d.body_active = False
            d.trailers_writable = False
        # Body results: 0 Continue; 1/2 StopIterationAndBuffer/Watermark: keep
        # accumulating and call again with the total; 3 StopIterationNoBuffer.
        # At end of stream a stop waits for continue_stream.
        stop = r != 0
        if stop:
            if end_of_stream:
                d.paused = True
            else:
                d.buffering = True
        action = self._settle(ctx, stream, stop, before)
        if action == Action.CONTINUE:
            d.paused = False
            d.buffering = False
        return action

    def http_trailers(self, ctx: HttpContext, stream: StreamType, trailers: HeaderMap) -> Action:
        if self.failure is not None or self.instance._closed:
            return Action.FAILED
        if ctx.deleted:
            return Action.CONTINUE
        d = ctx.direction(stream)
        d.trailers = trailers
        d.trailers_writable = True
        d.end_of_stream = True
        req = stream == StreamType.HTTP_REQUEST
        fn = self.cb.proxy_on_request_trailers if req else self.cb.proxy_on_response_trailers
        name = "proxy_on_request_trailers" if req else "proxy_on_response_trailers"
        before = ctx.local_response
        try:
            r = self._stream_call(ctx, fn, (ctx.id, len(trailers)), name)
        except _Trapped:
            self._take_actions()
            return Action.FAILED
        finally:
            d.trailers_writable = False
        d.paused = r != 0
        action = self._settle(ctx, stream, d.paused, before)
        if action == Action.CONTINUE:
            d.paused = False
        return action

    def finish_stream(self, ctx: HttpContext | TcpContext) -> None:
        """on_done → on_log → on_delete (spec order); skipped entirely on a failed VM."""
        if ctx.deleted:
            return
        try:
            if self.failure is None and ctx.created:
                cb = self.cb
                if isinstance(ctx, HttpContext):
                    ctx.done = True
                try:
                    if cb.proxy_on_done is not None:
                        self._stream_call(ctx, cb.proxy_on_done, (ctx.id,), "proxy_on_done")
                    if cb.proxy_on_log is not None:
                        if isinstance(ctx, HttpContext):
                            ctx.access_log_phase = True
                        self._stream_call(ctx, cb.proxy_on_log, (ctx.id,), "proxy_on_log")
                    if cb.proxy_on_delete is not None:
                        self._stream_call(ctx, cb.proxy_on_delete, (ctx.id,), "proxy_on_delete")
                except _Trapped:
                    pass
                self._take_actions()  # nothing may act on a finished stream
        finally:
            ctx.deleted = True
            self.contexts.pop(ctx.id, None)

    # -- TCP streams ---------------------------------------------------------------------

    def new_tcp_context(
        self,
        root: RootContext,
        info: StreamInfo | None = None,
        listener: StreamListener | None = None,
    ) -> TcpContext:
        if root.deleted:
            raise ValueError(f"root context {root.id} ({root.root_id!r}) was removed")
        ctx = TcpContext(self, self._new_id(), root, info)
        ctx.listener = listener
        self.contexts[ctx.id] = ctx
        return ctx

    def _settle_tcp(self, ctx: TcpContext, stream: StreamType, stop: bool) -> Action:
        acts = self._take_actions()
        own_continue = any(k == "continue" and c is ctx and s == stream for k, c, s in acts)
        own_close = any(k == "close" and c is ctx for k, c, s in acts)
        self._apply_actions([a for a in acts if a[1] is not ctx])
        if own_close:
            return Action.CLOSE
        if stop and not own_continue:
            ctx.paused.add(stream)
            return Action.PAUSE
        ctx.paused.discard(stream)
        return Action.CONTINUE

    def tcp_new_connection(self, ctx: TcpContext) -> Action:
        if self.failure is not None or self.instance._closed:
            return Action.FAILED
        if ctx.deleted:
            return Action.CONTINUE
        try:
            r = self._stream_call(
                ctx, self.cb.proxy_on_new_connection, (ctx.id,), "proxy_on_new_connection"
            )
        except _Trapped:
            self._take_actions()
            return Action.FAILED
        return self._settle_tcp(ctx, StreamType.DOWNSTREAM, r != 0)

    def tcp_data(
        self, ctx: TcpContext, stream: StreamType, data: bytes, end_of_stream: bool
    ) -> Action:
        if self.failure is not None or self.instance._closed:
            return Action.FAILED
        if ctx.deleted:
            return Action.CONTINUE
        down = stream == StreamType.DOWNSTREAM
        buf = ctx.downstream if down else ctx.upstream
        buf += data
        fn = self.cb.proxy_on_downstream_data if down else self.cb.proxy_on_upstream_data
        name = "proxy_on_downstream_data" if down else "proxy_on_upstream_data"
        ctx.data_active = stream
        try:
            r = self._stream_call(ctx, fn, (ctx.id, len(buf), int(end_of_stream)), name)
        except _Trapped:
            self._take_actions()
            return Action.FAILED
        finally:
            ctx.data_active = None
        return self._settle_tcp(ctx, stream, r != 0)

    def tcp_close(self, ctx: TcpContext, stream: StreamType, peer: int) -> None:
        if self.failure is not None or ctx.deleted:
            return
        down = stream == StreamType.DOWNSTREAM
        fn = (
            self.cb.proxy_on_downstream_connection_close
            if down
            else self.cb.proxy_on_upstream_connection_close
        )
        name = (
            "proxy_on_downstream_connection_close" if down else "proxy_on_upstream_connection_close"
        )
        try:
            self._stream_call(ctx, fn, (ctx.id, peer), name)
        except _Trapped:
            pass
        self._apply_actions(self._take_actions())

    # -- shutdown ------------------------------------------------------------------------

    def remove_plugin(self, root: RootContext) -> None:
        """on_done(root); on_delete now, or once the plugin calls proxy_done (§1.5)."""
        if root.deleted or root.pending_done:
            return  # already gone, or parked until the plugin calls proxy_done
        for call in list(root.http_calls.values()):
            self.host.http.cancel(call)
        root.http_calls.clear()
        for g in list(root.grpc_calls.values()):
            self.host.grpc.cancel(g)
        root.grpc_calls.clear()
        root.next_tick_ms = None
        if self.failure is None and root.created:
            try:
                done = 1
                if self.cb.proxy_on_done is not None:
                    done = self._call(self.cb.proxy_on_done, (root.id,), root, "proxy_on_done") or 0
                if done:
                    self._delete_root(root)
                else:
                    root.pending_done = True
                    return
            except _Trapped:
                pass
        root.deleted = True
        self.contexts.pop(root.id, None)
        self.roots.pop(root.root_id, None)

    def _delete_root(self, root: RootContext) -> None:
        if self.failure is None and self.cb.proxy_on_delete is not None and not root.deleted:
            try:
                self._call(self.cb.proxy_on_delete, (root.id,), root, "proxy_on_delete")
            except _Trapped:
                pass
        root.deleted = True
        root.pending_done = False
        self.contexts.pop(root.id, None)
        self.roots.pop(root.root_id, None)

    def root_done(self, root: RootContext) -> None:
        """A plugin called proxy_done() for a root parked in "pending done"."""
        self.host.post(lambda: self._delete_root(root))

    def close(self) -> None:
        if self.instance._closed:
            return
        for ctx in list(self.contexts.values()):
            if isinstance(ctx, (HttpContext, TcpContext)):
                self.finish_stream(ctx)
        for root in list(self.roots.values()):
            if root.pending_done:
                self._delete_root(root)  # on_done was already delivered once
                continue
            self.remove_plugin(root)
            if root.pending_done:
                self._delete_root(root)
        self.instance.close()
        self.host.vm_closed(self)

    def __enter__(self) -> PluginVM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stub_result(imp: Import) -> int:
    if imp.module in WASI_MODULES:
        return WASI_NOSYS
    # An unknown env function (or a known one with a foreign signature, such as the
    # AssemblyScript SDK's 10-parameter proxy_grpc_call): INTERNAL_FAILURE, which
    # every SDK accepts without trapping.
    return int(Status.INTERNAL_FAILURE)


__all__ += ["ProcExit"]
