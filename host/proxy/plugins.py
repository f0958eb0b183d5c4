"""Plugins of the proxy: modules, VMs, failure policies and live reconfiguration.

A ``PluginSlot`` is one configured plugin (one WasmPlugin document): its spec,
its operator mode (enforce / log-only / disabled, canary share and key), its
failure state and counters. A ``PluginInstance`` is one running VM + root
context for a slot; requests hold the instance they started on, so a swap never
touches in-flight requests, and a retired instance closes when its last request
ends. ``PluginManager`` loads modules (file, http(s); cached by sha256), starts
instances (sharing a VM between plugins that name the same vm_id, as Envoy),
applies the failure policy (FAIL_CLOSE, FAIL_OPEN, FAIL_RELOAD with jittered
backoff and a crash-loop guard), validates every change in a scratch VM before
swapping it in, and fires ticks, callouts and queue deliveries on the loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from host.callout_request import build_callout_request
from host.proxy.chain import ChainRun, RequestRecord, request_facts
from host.proxy.config.enums import FailStrategy, Mode
from host.proxy.config.model import FAIL_STRATEGIES, MODES
from host.proxy.config.validate import CANARY_KEY_RULE
from host.proxy.config.validate import canary_key as parse_canary_key
from host.proxy.grpc_callouts import GrpcCalloutDispatcher
from host.proxy.http1 import ExchangeInfo, LocalReply
from host.proxy.routes import plugin_match_verdict
from host.wasm import LogLevel, PluginHost, VmConfig, VmStartError
from host.wasm.context import HttpCallout, HttpContext
from host.wasm.diagnosis import plugin_warnings
from host.wasm.plugin_host import LogRecord
from host.wasm.runtime import LoadError, Module
from host.wasm.types import FailState, Failure
from host.wasm.vm import PluginVM

if TYPE_CHECKING:
    from host.proxy.config import PluginSpec, ProxyConfig
    from host.proxy.intercept import Interceptor
    from host.proxy.stats import StatsStore

__all__ = [
    "CalloutDispatcher",
    "PluginInstance",
    "PluginManager",
    "PluginSlot",
    "ReloadPolicy",
]


@dataclass(frozen=True)
class ReloadPolicy:
    """FAIL_RELOAD pacing (Envoy: jittered backoff, 1 s base) and the crash-loop guard."""

    base_s: float = 1.0
    max_s: float = 30.0
    loop_window_s: float = 60.0
    loop_max_reloads: int = 5  # more failures than this inside the window: stay failed


class PluginInstance:
    """One running VM + root context serving a slot."""

    def __init__(self, slot: PluginSlot, vm: PluginVM, root: Any, module: Module) -> None:
        slot.abi = vm.abi
        slot.sha256 = module.sha256
        self.slot = slot  # a scratch slot while validated: adopt() moves it to the real one
        self.vm = vm
        self.root = root
        self.module = module
        self.inflight = 0
        self.has_request_body = vm.cb.proxy_on_request_body is not None
        self.has_response_body = vm.cb.proxy_on_response_body is not None
        self.retired = False
        self.closed = False
        self.started = time.time()

    def adopt(self, slot: PluginSlot) -> None:
        """Serve ``slot`` (the instance was validated in a scratch slot): the slot
        records the module it now runs, which the module watcher compares against."""
        self.slot = slot
        slot.abi = self.vm.abi
        slot.sha256 = self.module.sha256

    def maybe_retire(self) -> None:
        if self.retired and self.inflight <= 0 and not self.closed:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.slot.manager._instances.discard(self)
        vm = self.vm
        try:
            vm.remove_plugin(self.root)
        finally:
            if not vm.roots:  # the last plugin on a (possibly shared) VM
                vm.close()
                self.slot.manager._vm_closed(vm)


class PluginSlot:
    """One configured plugin: identity, operator mode, state and counters."""

    def __init__(self, manager: PluginManager, spec: PluginSpec) -> None:
        self.manager = manager
        self.spec = spec
        # the document as the config last gave it (``spec`` also carries the operator's
        # runtime changes): a reload only touches the slot when this changes
        self.file_spec = spec
        # a version of the document that failed validation and the old one kept running:
        # not retried until the document (or its module) changes again
        self.refused_spec: PluginSpec | None = None
        self.name = spec.name
        self.mode: str = spec.mode
        self.canary_percent: float = float(spec.canary_percent)
        self.canary_key: str = spec.canary_key
        self.fail_strategy: str = spec.fail_strategy
        self.instance: PluginInstance | None = None
        self.state = "starting"  # starting | running | failed | reloading | disabled
        self.failure: Failure | None = None
        # the request the failure happened on (chain.request_facts), None outside one
        self.failure_request: dict[str, Any] | None = None
        self.crash_session: str | None = None  # the lab's HAR of the requests before a trap
        self.failures: deque[float] = deque(maxlen=64)
        self.reload_attempts = 0
        self.reload_at: float | None = None  # time.monotonic() of the next FAIL_RELOAD try
        self.crash_loop = False
        self.abi: str | None = None
        self.sha256 = ""
        self.last_error = ""
        self.counters: dict[str, int] = {}
        self.callback_us: deque[float] = deque(maxlen=2048)
        self._sdk: tuple[str, str] | None = None  # (module sha256, likely SDK)
        # why the plugin's match does not select this listener; None: it applies
        self.not_applied: str | None = None

    # -- counters (mirrored into the stats store as wasm.<name>.<counter>) --

    def count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n
        self.manager.stat_inc(f"wasm.{self.name}.{what}", n)

    def effective_policy(self) -> str:
        return self.fail_strategy or "FAIL_CLOSE"

    def instance_for_request(self) -> PluginInstance | None:
        inst = self.instance
        if inst is None or inst.vm.failed:
            if self.state == "reloading":
                self.manager.maybe_reload(self)
                inst = self.instance
                if inst is not None and not inst.vm.failed:
                    return inst
            return None
        return inst

    def failure_dict(self) -> dict[str, Any] | None:
        if self.failure is None:
            return None
        d = self.failure.to_dict()
        if self.failure_request is not None:
            d["request"] = self.failure_request
        if self.crash_session is not None:
            d["session"] = self.crash_session
        return d

    def sdk_name(self) -> str:
        """The likely SDK of the running module (``wasmdesk inspect``'s guess), computed
        once per module."""
        inst = self.instance
        if inst is None:
            return ""
        sha = inst.module.sha256
        if self._sdk is None or self._sdk[0] != sha:
            from host.wasm.module_info import describe

            try:
                self._sdk = (sha, describe(inst.module).sdk)
            except Exception:  # a guess for the overview, never a reason to fail
                self._sdk = (sha, "unknown")
        return self._sdk[1]

    def snapshot(self) -> dict[str, Any]:
        inst = self.instance
        state = self.state
        if state == "running" and self.mode == "log-only":
            state = "log-only"
        if self.not_applied is not None and state not in ("failed", "reloading"):
            state = "not applied"
        return {
            "name": self.name,
            "state": state,
            "not_applied": self.not_applied,
            "mode": self.mode,
            "canary_percent": self.canary_percent,
            "canary_key": self.canary_key,
            "fail_strategy": self.effective_policy(),
            "failure": self.failure_dict(),
            "crash_loop": self.crash_loop,
            # wall-clock ISO time (and seconds from now) of the next FAIL_RELOAD try
            "reload_at": _wall_clock(self.reload_at),
            "reload_in_s": (
                round(max(0.0, self.reload_at - time.monotonic()), 3)
                if self.reload_at is not None
                else None
            ),
            "abi": inst.vm.abi if inst is not None else self.abi,
            "sha256": inst.module.sha256 if inst is not None else self.sha256,
            "root_id": self.spec.plugin_name,
            "phase": self.spec.phase,
            "priority": self.spec.priority,
            "vm_memory_bytes": inst.vm.memory_bytes()
            if inst is not None and not inst.closed
            else 0,
            "counters": dict(self.counters),
            "sdk": self.sdk_name(),
            "time_per_request_us": (
                sum(self.callback_us) / len(self.callback_us) if self.callback_us else None
            ),
            "last_error": self.last_error,
            "warnings": plugin_warnings(
                inst.vm if inst is not None else None,
                self.manager.host.logs,
                self.name,
                self.spec.plugin_name,
            ),
            # live contexts of its VM (root + streams; the whole VM when shared) and the
            # http callouts its root context still waits for: both flat in a steady state
            "contexts": len(inst.vm.contexts) if inst is not None and not inst.closed else 0,
            "inflight_callouts": len(inst.root.http_calls)
            if inst is not None and not inst.closed
            else 0,
        }


def _wall_clock(monotonic_at: float | None) -> str | None:
    """A ``time.monotonic()`` reading as a wall-clock ISO 8601 time (UTC), or None."""
    if monotonic_at is None:
        return None
    at = time.time() + (monotonic_at - time.monotonic())
    return datetime.fromtimestamp(at, tz=UTC).isoformat(timespec="milliseconds")


CLUSTER_CONCURRENCY = 32
"""Callouts one cluster carries at once; the rest wait their turn (FIFO)."""


class CalloutDispatcher:
    """``proxy_http_call`` over httpx to the configured clusters (off the hot path).

    Requests go to the cluster's own address (``host.callout_request``); each
    cluster carries at most ``CLUSTER_CONCURRENCY`` at once, the rest queue.
    """

    def __init__(self, manager: PluginManager) -> None:
        self.m = manager
        self._client: httpx.AsyncClient | None = None
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._queues: dict[str, asyncio.Semaphore] = {}

    def has_cluster(self, name: str) -> bool:
        return name in self.m.cluster_urls

    def dispatch(self, call: HttpCallout, done: Callable[[HttpCallout], None]) -> None:
        task = self.m.loop.create_task(self._run(call, done))
        self._tasks[id(call)] = task
        task.add_done_callback(lambda _t: self._tasks.pop(id(call), None))

    def cancel(self, call: HttpCallout) -> None:
        t = self._tasks.pop(id(call), None)
        if t is not None:
            t.cancel()

    async def _run(self, call: HttpCallout, done: Callable[[HttpCallout], None]) -> None:
        base, default_timeout = self.m.cluster_urls[call.cluster]
        timeout = call.timeout_ms / 1000.0 if call.timeout_ms else default_timeout
        if self._client is None:
            # The per-cluster semaphores bound what the pool sees: httpx's pool does
            # work proportional to its queue on every change (quadratic in the queue).
            self._client = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            )
        sem = self._queues.get(call.cluster)
        if sem is None:
            sem = self._queues[call.cluster] = asyncio.Semaphore(CLUSTER_CONCURRENCY)
        t0 = time.perf_counter()
        try:
            req = build_callout_request(base, call)
            async with sem:  # FIFO per cluster; the timeout covers the wait, as Envoy's
                left = timeout - (time.perf_counter() - t0)
                if left <= 0:
                    raise httpx.PoolTimeout("queued past the callout timeout")
                resp = await self._client.request(
                    req.method,
                    req.url,
                    headers=req.headers,
                    content=call.body or None,
                    timeout=left,
                )
        except ValueError as e:
            call.failure = f"reset: {e}"
        except httpx.TimeoutException:
            call.failure = "timeout"
        except httpx.ConnectError:
            call.failure = "connect_failure"
        except httpx.HTTPError as e:
            call.failure = f"reset: {type(e).__name__}"
        else:
            call.response_status = resp.status_code
            call.response_headers = [(b":status", str(resp.status_code).encode())] + [
                (k.lower(), v) for k, v in resp.headers.raw
            ]
            call.response_body = resp.content
        call.elapsed_ms = (time.perf_counter() - t0) * 1000
        self.m.stat_inc(
            f"cluster.{call.cluster}.callout_" + ("failure" if call.failure else "success")
        )
        done(call)

    async def aclose(self) -> None:
        for t in list(self._tasks.values()):
            t.cancel()
        if self._client is not None:
            await self._client.aclose()


class ModuleError(Exception):
    """A module could not be fetched, verified or compiled: the message says why."""


class PluginManager:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: PluginHost,
        stats: StatsStore | None = None,
        *,
        reload_policy: ReloadPolicy = ReloadPolicy(),
        buffer_limit: int = 1 << 20,
        inspector_size: int = 200,
        log: Callable[[str], None] | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.loop = loop
        self.host = host
        self.stats = stats
        self.reload_policy = reload_policy
        self.buffer_limit = buffer_limit
        self.slots: dict[str, PluginSlot] = {}
        self.ordered: list[PluginSlot] = []
        # the ordered slots whose match selects the listener: the ones requests run
        self.applied: list[PluginSlot] = []
        # the listener match is evaluated against: (bound port, SERVER | CLIENT)
        self.listener: tuple[int, str] | None = None
        self.cluster_urls: dict[str, tuple[str, float]] = {}
        # clusters the proxy itself provides (the demo upstream): kept by apply()
        self.builtin_cluster_urls: dict[str, tuple[str, float]] = {}
        self.recent: deque[RequestRecord] = deque(maxlen=inspector_size)
        # requests a plugin holds paused (chain.ChainRun._wait until settled or done)
        self.paused_runs: set[ChainRun] = set()
        self.pause_timeout_s = 30.0  # longest a plugin may hold a stream paused
        # set only while an intercept rule is armed or a request held (host.proxy.intercept)
        self.intercept: Interceptor | None = None
        self._log = log
        self.cache_dir = cache_dir
        self.pull_secrets: dict[str, str] = {}  # imagePullSecret name -> docker config file
        self._shared_vms: dict[tuple[str, str], PluginVM] = {}
        self._pending_scheduled = False
        self._tick_handle: asyncio.TimerHandle | None = None
        # every instance not closed yet: the serving ones and the retired ones that
        # still have requests in flight (both get their ticks)
        self._instances: set[PluginInstance] = set()
        self.callouts = CalloutDispatcher(self)
        host.http = self.callouts
        # gRPC callouts (grpcio is imported on the first call); clusters set by the server
        self.grpc_callouts = GrpcCalloutDispatcher(
            loop,
            on_finished=lambda cluster, ok: self.stat_inc(
                f"cluster.{cluster}.grpc_callout_" + ("success" if ok else "failure")
            ),
        )
        host.grpc = self.grpc_callouts
        host.wakeup = self._wakeup
        self._record_seq = 0
        self.counters: dict[str, int] = {}
        self.request_listeners: list[Callable[[RequestRecord], None]] = []
        # serve --record, POST /recording: host.lab.record.Recorder (not imported here:
        # the lab builds on the proxy, not the other way)
        self.recorder: Any = None

    @property
    def paused_streams(self) -> int:
        """How many requests a plugin holds paused right now (``wasm.paused_streams``)."""
        return len(self.paused_runs)

    # -- small services ------------------------------------------------------------------

    def log_error(self, message: str) -> None:
        self.host.log(LogRecord(LogLevel.ERROR, message, "wasmdesk", "", 0, source="host"))
        if self._log is not None:
            self._log(message)

    def log_info(self, message: str) -> None:
        self.host.log(LogRecord(LogLevel.INFO, message, "wasmdesk", "", 0, source="host"))
        if self._log is not None:
            self._log(message)

    def stat_inc(self, name: str, n: int = 1) -> None:
        if self.stats is not None:
            self.stats.counter(name).inc(n)

    def count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1
        self.stat_inc(f"wasmdesk.{what}")

    def over_buffer_limit(self, size: int) -> bool:
        return size > self.buffer_limit

    def _wakeup(self) -> None:
        """Deliveries were posted (callout results, queue items): run them next turn."""
        if not self._pending_scheduled:
            self._pending_scheduled = True
            self.loop.call_soon(self._run_pending)

    def _run_pending(self) -> None:
        self._pending_scheduled = False
        try:
            self.host.run_pending()
        except Exception as e:  # a host bug must not stop the loop
            self.log_error(f"error delivering plugin events: {type(e).__name__}: {e}")
        self._schedule_ticks()

    # -- per request ------------------------------------------------------------------------

    def new_chain(self, info: ExchangeInfo) -> ChainRun:
        return ChainRun(self, info)

    def failure_reply(self, slot: PluginSlot) -> LocalReply:
        f = slot.failure
        why = f"{f.kind}: {f.message}" if f is not None else (slot.last_error or "not running")
        if slot.state == "reloading" and slot.reload_at is not None:
            why += f" (reloading in {max(0.0, slot.reload_at - time.monotonic()):.1f}s)"
        if slot.crash_loop:
            why += " (crash loop: reloads stopped; reload the plugin to try again)"
        body = f"wasm plugin {slot.name} failed ({slot.effective_policy()}): {why}\n".encode()
        return LocalReply(
            503,
            body,
            [(b"x-wasmdesk-failed-plugin", slot.name.encode())],
            details="wasm_fail_stream",
        )

    def record_callback_time(self, slot: PluginSlot, ctx: HttpContext) -> None:
        total = 0.0
        for _name, _r, us in ctx.callbacks:
            total += us
        slot.callback_us.append(total)
        if self.stats is not None:
            self.stats.histogram(f"wasm.{slot.name}.callback_time_us").record(total)

    def request_finished(self, run: ChainRun) -> None:
        info = run.info
        h = run.headers
        self._record_seq += 1
        rec = RequestRecord(
            id=self._record_seq,
            request_id=info.request_id,
            method=(h.get(b":method") or b"").decode("latin-1") if h else "",
            path=(h.get(b":path") or b"").decode("latin-1") if h else "",
            authority=(h.get(b":authority") or b"").decode("latin-1") if h else "",
            client=f"{info.client[0]}:{info.client[1]}",
            status=info.status,
            outcome=info.outcome,
            duration_ms=(time.monotonic() - info.start) * 1000,
            started=info.start_wall_ns / 1e9,
            hops=run.records,
            response_code_details=info.response_code_details,
        )
        self.recent.append(rec)
        for fn in self.request_listeners:
            fn(rec)
        if self.recorder is not None:
            self.recorder.exchange_finished(run, rec)

    # -- failure policy -----------------------------------------------------------------------

    def plugin_failed(self, inst: PluginInstance, run: ChainRun | None) -> None:
        slot = inst.slot
        if slot.instance is not inst or slot.state in ("failed", "reloading"):
            return  # already handled (or an old instance)
        vm = inst.vm
        slot.failure = vm.failure
        slot.count("traps")
        # a failure outside a request (tick, callout, queue) must not name an older one
        slot.failure_request = (
            request_facts(run) if run is not None and run.headers is not None else None
        )
        slot.crash_session = None  # set by the lab's CrashKeeper when the request finishes
        now = time.monotonic()
        slot.failures.append(now)
        policy = slot.effective_policy()
        self.log_error(
            f"plugin {slot.name} failed ({policy}): "
            f"{vm.failure.kind if vm.failure else '?'}: {vm.failure.message if vm.failure else ''}"
        )
        if policy == "FAIL_RELOAD" and (
            vm.failure is None or vm.failure.state == FailState.RUNTIME_ERROR
        ):
            rp = self.reload_policy
            recent = [t for t in slot.failures if now - t <= rp.loop_window_s]
            if len(recent) > rp.loop_max_reloads:
                slot.crash_loop = True
                slot.state = "failed"
                slot.reload_at = None
                slot.count("vm_reload_crash_loop")
                self.log_error(
                    f"plugin {slot.name}: crash loop ({len(recent)} failures in "
                    f"{rp.loop_window_s:.0f}s): reloads stopped"
                )
            else:
                self._schedule_reload(slot, now)
        else:
            slot.state = "failed"
        self._retire(inst)
        self._release_paused(vm)

    def _schedule_reload(self, slot: PluginSlot, now: float) -> None:
        """FAIL_RELOAD: a fresh VM after a jittered, doubling backoff."""
        rp = self.reload_policy
        delay = min(rp.max_s, rp.base_s * (2**slot.reload_attempts))
        delay = (
            delay * (0.5 + random.random() * 0.5)
            if slot.reload_attempts
            else rp.base_s * (0.5 + random.random() * 0.5)
        )
        slot.reload_attempts += 1
        slot.state = "reloading"
        slot.reload_at = now + delay
        slot.count("vm_reload_backoff")
        self.loop.call_later(delay, self.maybe_reload, slot)

    def _release_paused(self, vm: PluginVM) -> None:
        """Requests paused by a plugin of the failed ``vm`` get its failure policy now
        (a serving or a retired instance): none waits for the pause timeout."""
        for run in list(self.paused_runs):
            hop = run._waiting_hop
            if hop is not None and hop.inst.vm is vm:
                run.paused_vm_failed()

    def maybe_reload(self, slot: PluginSlot) -> None:
        if slot.state != "reloading" or slot.reload_at is None:
            return
        if time.monotonic() < slot.reload_at:
            return
        slot.reload_at = None
        module = slot.instance.module if slot.instance is not None else None
        if module is None:
            return
        slot.count("vm_reload")
        try:
            inst = self._start_instance(slot, slot.spec, module)
        except VmStartError as e:
            slot.count("vm_reload_failure")
            slot.failure = e.failure
            slot.state = "failed"
            self.log_error(f"plugin {slot.name}: reload failed: {e.failure.message}")
            return
        slot.count("vm_reload_success")
        old = slot.instance
        slot.instance = inst
        slot.state = "running"
        slot.failure = None
        if old is not None and old is not inst:
            self._retire(old)
        self._schedule_ticks()
        self.log_info(f"plugin {slot.name}: reloaded with a fresh VM")

    def _retire(self, inst: PluginInstance) -> None:
        inst.retired = True
        inst.maybe_retire()

    # -- modules ----------------------------------------------------------------------------

    async def fetch_module(self, spec: PluginSpec) -> bytes:
        kind = spec.location_kind
        loc = spec.location
        if kind == "file":
            try:
                data = Path(loc).read_bytes()
            except OSError as e:
                raise ModuleError(f"cannot read {loc}: {e.strerror or e}") from None
        elif kind in ("http", "https"):
            cached = self._cache_get(spec.sha256)
            if cached is not None:
                return cached
            try:
                async with httpx.AsyncClient(follow_redirects=True, trust_env=False) as client:
                    resp = await client.get(loc, timeout=30.0)
            except httpx.HTTPError as e:
                raise ModuleError(f"cannot download {loc}: {type(e).__name__}: {e}") from None
            if resp.status_code != 200:
                raise ModuleError(f"cannot download {loc}: HTTP {resp.status_code}")
            data = resp.content
        else:  # oci: Istio's variants, pull policy and digest rules (host/oci)
            from host.oci.module_source import pull_for_plugin

            try:
                return await pull_for_plugin(spec, self.pull_secrets, self.cache_dir, self.log_info)
            except ValueError as e:
                raise ModuleError(str(e)) from None
        digest = hashlib.sha256(data).hexdigest()
        if spec.sha256 and digest != spec.sha256:
            raise ModuleError(
                f"sha256 mismatch for {spec.url}: expected {spec.sha256}, got {digest}"
            )
        if kind in ("http", "https"):
            self._cache_put(digest, data)
        return data

    def _cache_get(self, sha256: str) -> bytes | None:
        if not sha256 or self.cache_dir is None:
            return None
        p = self.cache_dir / f"{sha256}.wasm"
        try:
            data = p.read_bytes()
        except OSError:
            return None
        return data if hashlib.sha256(data).hexdigest() == sha256 else None

    def _cache_put(self, sha256: str, data: bytes) -> None:
        if self.cache_dir is None:
            return
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_dir / f".{sha256}.tmp"
            tmp.write_bytes(data)
            tmp.replace(self.cache_dir / f"{sha256}.wasm")
        except OSError:
            pass

    def compile(self, data: bytes, what: str) -> Module:
        try:
            return self.host.compile(data)
        except LoadError as e:
            raise ModuleError(f"{what}: {e.message}") from None

    # -- starting instances -------------------------------------------------------------------

    def _vm_config(self, spec: PluginSpec) -> VmConfig:
        return VmConfig(
            vm_id=spec.vm_id,
            name=spec.name,
            env=tuple(spec.vm_env),
            callback_timeout_ms=spec.callback_timeout_ms,
            memory_limit_bytes=spec.memory_limit_bytes,
        )

    def _start_instance(
        self, slot: PluginSlot, spec: PluginSpec, module: Module, *, share: bool = True
    ) -> PluginInstance:
        """A VM (new, or shared by vm_id unless ``share`` is False) with the plugin
        started and configured."""
        cfg = self._vm_config(spec)
        vm: PluginVM | None = None
        shared_key = (spec.vm_id, module.sha256) if spec.vm_id and share else None
        if shared_key is not None:
            vm = self._shared_vms.get(shared_key)
            if vm is not None and (vm.failed or vm.closed or spec.plugin_name in vm.roots):
                vm = None
        fresh = vm is None
        if vm is None:
            vm = self.host.create_vm(module, cfg)
            if shared_key is not None:
                self._shared_vms[shared_key] = vm
        try:
            root = vm.start_plugin(spec.plugin_name, spec.plugin_config_json, spec.name)
        except VmStartError:
            if fresh:
                vm.close()
                if shared_key is not None:
                    self._shared_vms.pop(shared_key, None)
            raise
        except ValueError as e:
            raise VmStartError(
                Failure(FailState.UNABLE_TO_CREATE_VM, "root_id_in_use", str(e), at=time.time())
            ) from None
        vm.failure_listeners.append(self)
        inst = PluginInstance(slot, vm, root, module)
        self._instances.add(inst)
        return inst

    def vm_failed(self, vm: PluginVM) -> None:
        """A VM trapped outside a request (tick, callout response, queue delivery)."""
        for slot in self.slots.values():
            inst = slot.instance
            if inst is not None and inst.vm is vm and slot.state == "running":
                self.loop.call_soon(self.plugin_failed, inst, None)
        # requests a retired instance of this VM still holds paused
        self.loop.call_soon(self._release_paused, vm)

    def _vm_closed(self, vm: PluginVM) -> None:
        for key, v in list(self._shared_vms.items()):
            if v is vm:
                del self._shared_vms[key]

    # -- configuration --------------------------------------------------------------------------

    async def prepare(
        self, spec: PluginSpec, *, share: bool = True
    ) -> tuple[Module, PluginInstance | None, str]:
        """Fetch and compile a plugin and start it in a scratch slot (start-up and
        configure must succeed). Returns the module, the validated instance (None when
        it failed) and an error message ("" when fine). ``share``: False never starts it
        in a running VM of the same vm_id (a check must not touch one)."""
        try:
            data = await self.fetch_module(spec)
            module = self.compile(data, spec.url)
        except ModuleError as e:
            return None, None, str(e)  # type: ignore[return-value]
        scratch = PluginSlot(self, spec)
        try:
            inst = self._start_instance(scratch, spec, module, share=share)
        except VmStartError as e:
            f = e.failure
            logs = [r.message for r in list(self.host.logs)[-20:] if r.plugin == spec.name]
            extra = f" (plugin log: {' | '.join(logs[-5:])})" if logs else ""
            return module, None, f"{f.state.name}: {f.kind}: {f.message}{extra}"
        return module, inst, ""

    async def check(self, spec: PluginSpec) -> str | None:
        """What ``prepare`` checks (fetch, sha256, compile, start, configure), in a VM of
        its own that is closed again: nothing running changes. None, or the error."""
        _module, inst, err = await self.prepare(spec, share=False)
        if inst is not None:
            inst.retired = True
            inst.close()
        return err or None

    async def apply(self, config: ProxyConfig) -> list[str]:
        """Bring the running plugins to ``config``: unchanged plugins keep running,
        mode/canary/failStrategy changes apply in place, anything else is validated
        in a scratch VM and swapped in atomically. Returns the errors (a plugin whose
        new version failed keeps its old instance)."""
        from host.proxy.config import effective_order

        self.cluster_urls = dict(self.builtin_cluster_urls)
        self.pull_secrets = dict(config.pull_secrets)
        self.cluster_urls.update({c.name: (c.url, c.timeout_s) for c in config.clusters})
        errors: list[str] = []
        wanted = {s.name: s for s in config.plugins}
        new_slots: dict[str, PluginSlot] = {}
        for spec in config.plugins:
            slot = self.slots.get(spec.name)
            if slot is not None and slot.state != "starting":
                if spec == slot.file_spec or spec == slot.refused_spec:
                    # its document did not change (or is the version refused before):
                    # keep what runs, the operator's runtime changes, its state
                    # (failed, crash loop) and the reason of the last refusal
                    slot.spec = dataclasses.replace(slot.spec, raw=spec.raw, line=spec.line)
                    if spec == slot.file_spec and slot.refused_spec is not None:
                        # back to the version that runs: that replaces the refused one
                        slot.refused_spec = None
                        slot.last_error = ""
                    new_slots[spec.name] = slot
                    continue
                if not _needs_restart(slot.file_spec, spec):
                    # only the operator knobs changed in the file: they win
                    slot.file_spec = spec
                    slot.refused_spec = None
                    slot.last_error = ""
                    self._apply_in_place(slot, spec)
                    new_slots[spec.name] = slot
                    continue
            module, inst, err = await self.prepare(spec)
            if err:
                msg = f"plugin {spec.name}: {err}"
                errors.append(msg)
                self.log_error(msg)
                if slot is not None and slot.instance is not None:
                    slot.last_error = err
                    slot.refused_spec = spec
                    new_slots[spec.name] = slot  # keep the old version running
                    continue
                slot = slot or PluginSlot(self, spec)
                slot.spec = slot.file_spec = spec
                slot.state = "failed"
                slot.last_error = err
                slot.failure = Failure(
                    FailState.UNABLE_TO_CREATE_VM if module is None else FailState.CONFIGURE_FAILED,
                    "load_failed",
                    err,
                    at=time.time(),
                )
                self._apply_in_place(slot, spec)
                new_slots[spec.name] = slot
                continue
            assert inst is not None
            if slot is None:
                slot = PluginSlot(self, spec)
            old = slot.instance
            inst.adopt(slot)
            slot.spec = slot.file_spec = spec
            slot.refused_spec = None
            slot.instance = inst  # the swap: new requests see the new instance
            slot.state = "running"
            slot.failure = None
            slot.crash_loop = False
            slot.reload_attempts = 0
            slot.reload_at = None
            slot.last_error = ""
            self._apply_in_place(slot, spec)
            if old is not None and old is not inst:
                self._retire(old)
            new_slots[spec.name] = slot
        for name, slot in self.slots.items():
            if name not in wanted and slot.instance is not None:
                self._retire(slot.instance)
        self.slots = new_slots
        order = {s.name: i for i, s in enumerate(effective_order(list(config.plugins)))}
        for slot in self.slots.values():
            if slot.spec.type == "NETWORK":
                self.log_info(f"plugin {slot.name}: type NETWORK is not run by the HTTP proxy")
        self.ordered = sorted(
            (s for s in self.slots.values() if s.spec.type != "NETWORK"),
            key=lambda s: order.get(s.name, 1 << 30),
        )
        self._apply_match()
        self._schedule_ticks()
        return errors

    def set_listener(self, port: int, direction: str) -> None:
        """The listener the plugins serve (its bound port and traffic direction): each
        plugin's ``match`` is applied to it, as Istio does when it builds the listener."""
        self.listener = (port, direction)
        self._apply_match()

    def _apply_match(self) -> None:
        for slot in self.ordered:
            if self.listener is None:
                slot.not_applied = None
            else:
                slot.not_applied = plugin_match_verdict(slot.spec.match, *self.listener)
        self.applied = [s for s in self.ordered if s.not_applied is None]

    def _apply_in_place(self, slot: PluginSlot, spec: PluginSpec) -> None:
        slot.spec = spec
        slot.mode = spec.mode
        slot.canary_percent = float(spec.canary_percent)
        slot.canary_key = spec.canary_key
        slot.fail_strategy = spec.fail_strategy
        # a plugin set to disabled stays loaded; the chain skips it

    def set_mode(
        self,
        name: str,
        mode: str | None = None,
        canary_percent: float | None = None,
        canary_key: str | None = None,
        fail_strategy: str | None = None,
    ) -> PluginSlot:
        slot = self.slots.get(name)
        if slot is None:
            raise KeyError(name)
        if mode is not None:
            if mode not in MODES:
                raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
            slot.mode = Mode(mode)
        if canary_percent is not None:
            if not 0 <= canary_percent <= 100:
                raise ValueError(f"canary-percent must be within 0..100, got {canary_percent}")
            slot.canary_percent = float(canary_percent)
        if canary_key is not None:
            key = parse_canary_key(canary_key)
            if key is None:
                raise ValueError(f"canary-key must be {CANARY_KEY_RULE}")
            slot.canary_key = key
        if fail_strategy is not None:
            if fail_strategy not in FAIL_STRATEGIES:
                raise ValueError("failStrategy must be FAIL_CLOSE, FAIL_OPEN or FAIL_RELOAD")
            slot.fail_strategy = FailStrategy(fail_strategy)
            if (
                fail_strategy == "FAIL_RELOAD"
                and slot.state == "failed"
                and not slot.crash_loop
                and slot.instance is not None
                and (slot.failure is None or slot.failure.state == FailState.RUNTIME_ERROR)
            ):
                # already failed: the new policy applies to that failure too
                self._schedule_reload(slot, time.monotonic())
        slot.spec = dataclasses.replace(
            slot.spec,
            mode=Mode(slot.mode),
            canary_percent=slot.canary_percent,
            canary_key=slot.canary_key,
            fail_strategy=FailStrategy(slot.fail_strategy),
        )
        return slot

    async def reload(self, name: str) -> str:
        """Reload one plugin from its source (clears a crash loop). "" or an error."""
        slot = self.slots.get(name)
        if slot is None:
            raise KeyError(name)
        _module, inst, err = await self.prepare(slot.spec)
        if err:
            slot.last_error = err
            return err
        assert inst is not None
        old = slot.instance
        inst.adopt(slot)
        slot.instance = inst
        slot.state = "running"
        slot.failure = None
        slot.crash_loop = False
        slot.reload_attempts = 0
        slot.reload_at = None
        slot.failures.clear()
        slot.last_error = ""
        if old is not None and old is not inst:
            self._retire(old)
        self._schedule_ticks()
        return ""

    # -- ticks ---------------------------------------------------------------------------------

    def _schedule_ticks(self) -> None:
        """One timer for the earliest due tick across all live instances: a retired
        instance keeps ticking while it still serves requests (one may be paused
        until its next tick)."""
        earliest: float | None = None
        for inst in self._instances:
            if inst.vm.failed or inst.closed:
                continue
            t = inst.root.next_tick_ms
            if t is not None and (earliest is None or t < earliest):
                earliest = t
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        if earliest is not None:
            delay = max(0.0, (earliest - self.host.clock.now_ms()) / 1000.0)
            self._tick_handle = self.loop.call_later(delay, self._fire_ticks)

    def _fire_ticks(self) -> None:
        self._tick_handle = None
        now = self.host.clock.now_ms()
        # serving instances first, in configuration order, then the retired ones
        serving = [s.instance for s in self.slots.values() if s.instance is not None]
        retired = [i for i in self._instances if i.retired and i not in serving]
        for inst in serving + retired:
            if inst.vm.failed or inst.closed:
                continue
            root = inst.root
            if root.next_tick_ms is not None and root.next_tick_ms <= now:
                if not inst.vm.tick(root):
                    self.plugin_failed(inst, None)
        self.host.run_pending()
        self._schedule_ticks()

    # -- shutdown -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        await self.callouts.aclose()
        await self.grpc_callouts.aclose()
        for slot in self.slots.values():
            if slot.instance is not None:
                slot.instance.retired = True
                slot.instance.close()
        for inst in list(self._instances):  # retired ones still serving requests
            inst.retired = True
            inst.close()
        self.slots.clear()
        self.ordered = []
        self.applied = []


def _needs_restart(old: PluginSpec, new: PluginSpec) -> bool:
    """Whether a spec change needs a new VM (anything but the operator knobs)."""
    knobs = (
        "mode",
        "canary_percent",
        "canary_key",
        "fail_strategy",
        "raw",
        "line",
        "priority",
        "phase",
    )
    for f in dataclasses.fields(old):
        if f.name in knobs:
            continue
        if getattr(old, f.name) != getattr(new, f.name):
            return True
    return False
