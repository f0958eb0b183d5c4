"""Plugins of the proxy: the plugin manager, which keeps the slots and composes the parts.

``PluginManager`` holds the configured plugins (``host.proxy.slots``: a slot per
plugin, an instance per running VM) and brings them to a configuration: it
validates every change in a scratch VM before swapping it in, starts instances
(sharing a VM between plugins that name the same vm_id, as Envoy) and applies
the failure policy. The jobs around that are parts of their own: modules are
fetched, verified, cached and compiled by ``host.proxy.modules``; what a failure
leads to (FAIL_CLOSE, FAIL_OPEN, FAIL_RELOAD with jittered backoff and a
crash-loop guard) is decided by ``host.proxy.policy``; ticks are timed by
``host.proxy.ticks``; finished requests land in ``host.proxy.inspector``'s ring;
http callouts go out through ``host.proxy.callouts``. The request chain reaches
the manager through ``chain.ChainHost``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from host.proxy.callouts import CalloutDispatcher
from host.proxy.chain import ChainRun, RequestRecord, request_facts
from host.proxy.config.enums import FailStrategy, Mode
from host.proxy.config.model import FAIL_STRATEGIES, MODES
from host.proxy.config.validate import CANARY_KEY_RULE
from host.proxy.config.validate import canary_key as parse_canary_key
from host.proxy.errors import PluginError
from host.proxy.grpc_callouts import GrpcCalloutDispatcher
from host.proxy.http1 import LocalReply
from host.proxy.inspector import InspectorRing
from host.proxy.modules import ModuleError, ModuleSource
from host.proxy.plugins_requests import RequestServices
from host.proxy.policy import (
    DEFAULT_RELOAD_POLICY,
    FailureAction,
    ReloadPolicy,
    decide,
    reload_delay,
)
from host.proxy.routes import plugin_match_verdict
from host.proxy.slots import PluginInstance, PluginSlot
from host.proxy.ticks import TickScheduler
from host.wasm import LogLevel, PluginHost, VmConfig, VmStartError
from host.wasm.plugin_host import LogRecord
from host.wasm.runtime import Module
from host.wasm.types import FailState, Failure
from host.wasm.vm import PluginVM

if TYPE_CHECKING:
    from host.proxy.config import PluginSpec, ProxyConfig
    from host.proxy.intercept import Interceptor
    from host.proxy.stats import Counter, StatsStore

__all__ = [
    "CalloutDispatcher",
    "ModuleError",
    "PluginInstance",
    "PluginManager",
    "PluginSlot",
    "ReloadPolicy",
]


class PluginManager(RequestServices):
    """The configured plugins of one proxy, kept running to its configuration."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: PluginHost,
        stats: StatsStore | None = None,
        *,
        reload_policy: ReloadPolicy = DEFAULT_RELOAD_POLICY,
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
        # the type NETWORK plugins in effective order (the TCP listeners run them)
        self.network_ordered: list[PluginSlot] = []
        # the ordered slots whose match selects the listener: the ones requests run
        self.applied: list[PluginSlot] = []
        # the listener match is evaluated against: (bound port, SERVER | CLIENT)
        self.listener: tuple[int, str] | None = None
        self.cluster_urls: dict[str, tuple[str, float]] = {}
        # clusters the proxy itself provides (the demo upstream): kept by apply()
        self.builtin_cluster_urls: dict[str, tuple[str, float]] = {}
        self.inspector = InspectorRing(inspector_size)
        self.recent: deque[RequestRecord] = self.inspector.recent
        # requests a plugin holds paused (chain.ChainRun._wait until settled or done)
        self.paused_runs: set[ChainRun] = set()
        self.pause_timeout_s = 30.0  # longest a plugin may hold a stream paused
        # set only while an intercept rule is armed or a request held (host.proxy.intercept)
        self.intercept: Interceptor | None = None
        self._log = log
        self.modules = ModuleSource(host, cache_dir, self.log_info)
        self._shared_vms: dict[tuple[str, str], PluginVM] = {}
        self._pending_scheduled = False
        self.ticks = TickScheduler(loop, host.clock.now_ms, self._fire_ticks)
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
        self.request_listeners: list[Callable[[RequestRecord], None]] = self.inspector.listeners
        # only requests on which a plugin failed
        self.failure_listeners: list[Callable[[RequestRecord], None]] = (
            self.inspector.failure_listeners
        )
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

    def stat_counter(self, name: str) -> Counter | None:
        return self.stats.counter(name) if self.stats is not None else None

    def count(self, what: str) -> None:
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

    # -- per request (chain.ChainHost) ------------------------------------------------------

    def run_paused(self, run: ChainRun) -> None:
        """A plugin paused ``run`` (until it is settled or done)."""
        self.paused_runs.add(run)

    def run_unpaused(self, run: ChainRun) -> None:
        """``run`` is no longer paused (resumed, timed out, failed or finished)."""
        self.paused_runs.discard(run)

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

    # record_callback_time, record_detail, request_finished: RequestServices (compiled)

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
        rp = self.reload_policy
        decision = decide(
            policy,
            vm.failure.state if vm.failure is not None else None,
            slot.failures,
            now,
            attempts=slot.reload_attempts,
            policy=rp,
            jitter=random.random(),
        )
        if decision.action is FailureAction.CRASH_LOOP:
            slot.crash_loop = True
            slot.state = "failed"
            slot.reload_at = None
            slot.count("vm_reload_crash_loop")
            self.log_error(
                f"plugin {slot.name}: crash loop ({decision.recent_failures} failures in "
                f"{rp.loop_window_s:.0f}s): reloads stopped"
            )
        elif decision.action is FailureAction.RELOAD and decision.reload_at is not None:
            self._schedule_reload(slot, now, decision.reload_at - now)
        else:  # FAIL_CLOSED or SKIP: failed; the chain applies the strategy per request
            slot.state = "failed"
        self._retire(inst)
        self._release_paused(vm)

    def _schedule_reload(self, slot: PluginSlot, now: float, delay: float) -> None:
        """FAIL_RELOAD: a fresh VM ``delay`` seconds from ``now`` (policy.reload_delay:
        a jittered, doubling backoff)."""
        slot.reload_attempts += 1
        slot.state = "reloading"
        slot.reload_at = now + delay
        slot.count("vm_reload_backoff")
        self.loop.call_later(delay, self.maybe_reload, slot)

    def _release_paused(self, vm: PluginVM) -> None:
        """Requests paused by a plugin of the failed ``vm`` get its failure policy now
        (a serving or a retired instance): none waits for the pause timeout."""
        for run in list(self.paused_runs):
            if run.paused_on_vm(vm):
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

    def instance_closed(self, inst: PluginInstance) -> None:
        """``inst`` closed (slots.SlotOwner): it gets no more ticks."""
        self._instances.discard(inst)

    def vm_closed(self, vm: PluginVM) -> None:
        """``vm`` closed (slots.SlotOwner): no plugin starts in it any more."""
        for key, v in list(self._shared_vms.items()):
            if v is vm:
                del self._shared_vms[key]

    # -- configuration --------------------------------------------------------------------------

    async def prepare(
        self, spec: PluginSpec, *, share: bool = True
    ) -> tuple[Module | None, PluginInstance | None, PluginError | None]:
        """Fetch and compile a plugin and start it in a scratch slot (start-up and
        configure must succeed). Returns the module (None when it could not be had),
        the validated instance (None when it failed) and the error (None when fine).
        ``share``: False never starts it in a running VM of the same vm_id (a check
        must not touch one)."""
        try:
            data = await self.modules.fetch(spec)
            module = self.modules.compile(data, spec.url)
        except ModuleError as e:
            return None, None, PluginError(e.kind, spec.name, str(e), at=time.time())
        scratch = PluginSlot(self, spec)
        try:
            inst = self._start_instance(scratch, spec, module, share=share)
        except VmStartError as e:
            # what the plugin itself logged while it failed (among the newest lines; not
            # the host's own line about the failure, which is the error)
            logs = tuple(
                r.message
                for r in list(self.host.logs)[-20:]
                if r.plugin == spec.name and r.source != "host"
            )
            return module, None, PluginError.from_failure(spec.name, e.failure, logs)
        return module, inst, None

    async def check(self, spec: PluginSpec) -> PluginError | None:
        """What ``prepare`` checks (fetch, sha256, compile, start, configure), in a VM of
        its own that is closed again: nothing running changes. None, or the error."""
        _module, inst, err = await self.prepare(spec, share=False)
        if inst is not None:
            inst.retired = True
            inst.close()
        return err

    async def apply(self, config: ProxyConfig) -> list[PluginError]:
        """Bring the running plugins to ``config``: unchanged plugins keep running,
        mode/canary/failStrategy changes apply in place, anything else is validated
        in a scratch VM and swapped in atomically. Returns the errors (a plugin whose
        new version failed keeps its old instance)."""
        from host.proxy.config import effective_order

        self.cluster_urls = dict(self.builtin_cluster_urls)
        self.modules.pull_secrets = dict(config.pull_secrets)
        self.cluster_urls.update({c.name: (c.url, c.timeout_s) for c in config.clusters})
        errors: list[PluginError] = []
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
                        slot.error = None
                    new_slots[spec.name] = slot
                    continue
                if not _needs_restart(slot.file_spec, spec):
                    # only the operator knobs changed in the file: they win
                    slot.file_spec = spec
                    slot.refused_spec = None
                    slot.error = None
                    self._apply_in_place(slot, spec)
                    new_slots[spec.name] = slot
                    continue
            module, inst, err = await self.prepare(spec)
            if err is not None:
                errors.append(err)
                self.log_error(str(err))
                if slot is not None and slot.instance is not None:
                    slot.error = err
                    slot.refused_spec = spec
                    new_slots[spec.name] = slot  # keep the old version running
                    continue
                slot = slot or PluginSlot(self, spec)
                slot.spec = slot.file_spec = spec
                slot.state = "failed"
                slot.error = err
                slot.failure = Failure(
                    FailState.UNABLE_TO_CREATE_VM if module is None else FailState.CONFIGURE_FAILED,
                    "load_failed",
                    err.text,
                    at=err.at,
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
            slot.error = None
            self._apply_in_place(slot, spec)
            if old is not None and old is not inst:
                self._retire(old)
            new_slots[spec.name] = slot
        for name, slot in self.slots.items():
            if name not in wanted and slot.instance is not None:
                self._retire(slot.instance)
        self.slots = new_slots
        order = {s.name: i for i, s in enumerate(effective_order(list(config.plugins)))}
        self.ordered = sorted(
            (s for s in self.slots.values() if s.spec.type != "NETWORK"),
            key=lambda s: order.get(s.name, 1 << 30),
        )
        # type NETWORK: run on the spec.tcp listeners (host.proxy.tcp), in the same order
        self.network_ordered = sorted(
            (s for s in self.slots.values() if s.spec.type == "NETWORK"),
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
                delay = reload_delay(slot.reload_attempts, self.reload_policy, random.random())
                self._schedule_reload(slot, time.monotonic(), delay)
        slot.spec = dataclasses.replace(
            slot.spec,
            mode=Mode(slot.mode),
            canary_percent=slot.canary_percent,
            canary_key=slot.canary_key,
            fail_strategy=FailStrategy(slot.fail_strategy),
        )
        return slot

    async def reload(self, name: str) -> PluginError | None:
        """Reload one plugin from its source (clears a crash loop). None, or the error."""
        slot = self.slots.get(name)
        if slot is None:
            raise KeyError(name)
        _module, inst, err = await self.prepare(slot.spec)
        if err is not None:
            slot.error = err
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
        slot.error = None
        if old is not None and old is not inst:
            self._retire(old)
        self._schedule_ticks()
        return None

    # -- ticks ---------------------------------------------------------------------------------

    def _schedule_ticks(self) -> None:
        """One timer for the earliest due tick across all live instances: a retired
        instance keeps ticking while it still serves requests (one may be paused
        until its next tick)."""
        self.ticks.schedule(self._instances)

    def _fire_ticks(self) -> None:
        # serving instances first, in configuration order, then the retired ones
        serving = [s.instance for s in self.slots.values() if s.instance is not None]
        retired = [i for i in self._instances if i.retired and i not in serving]
        self.ticks.tick_due(serving + retired, lambda inst: self.plugin_failed(inst, None))
        self.host.run_pending()
        self._schedule_ticks()

    # -- shutdown -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        self.ticks.cancel()
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
        self.network_ordered = []
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
