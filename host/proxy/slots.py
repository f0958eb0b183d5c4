"""Plugin slots and instances: one configured plugin, and one running VM serving it.

A ``PluginSlot`` is one configured plugin (one WasmPlugin document): its spec,
its operator mode (enforce / log-only / disabled, canary share and key), its
failure state and counters. A ``PluginInstance`` is one running VM + root
context for a slot; requests hold the instance they started on (``acquire`` /
``release``), so a swap never touches in-flight requests, and a retired instance
closes when its last request ends. Both reach their owner (the
``PluginManager``) only through ``SlotOwner``.
"""

from __future__ import annotations

import time
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from host.headers import HeaderMap
from host.proxy.canary import canary_sampled
from host.proxy.errors import PluginError
from host.proxy.snapshots import FailureView, PluginSnapshot, PluginState
from host.wasm import PluginHost
from host.wasm.context import RootContext
from host.wasm.diagnosis import plugin_warnings
from host.wasm.runtime import Module
from host.wasm.types import Failure
from host.wasm.vm import PluginVM

if TYPE_CHECKING:
    from host.proxy.config import PluginSpec
    from host.proxy.stats import Counter, Histogram

__all__ = ["Admission", "PluginInstance", "PluginSlot", "SlotOwner"]


class Admission:
    """What one plugin does on one request or connection (``PluginSlot.admit``).

    A plain class with its own ``__init__``, not a NamedTuple: compiled, a NamedTuple's
    ``__new__`` stays an interpreted frame per plugin per request."""

    __slots__ = ("enforce", "inst", "policy", "rejects", "skipped")

    def __init__(
        self,
        inst: PluginInstance | None,
        enforce: bool,
        skipped: str = "",
        rejects: bool = False,
        policy: str = "",
    ) -> None:
        self.inst = inst  # the instance to run; None: the plugin does not run
        self.enforce = enforce  # its mode applies what it does (not log-only)
        self.skipped = skipped  # why it is skipped (the inspector's reason), when it is
        self.rejects = rejects  # failed, and its policy rejects (FAIL_CLOSE / FAIL_RELOAD)
        self.policy = policy  # the failure policy that decided, when the plugin had failed


class SlotOwner(Protocol):
    """What slots and instances ask of the plugin manager that owns them."""

    @property
    def host(self) -> PluginHost: ...

    def stat_inc(self, name: str, n: int = 1) -> None: ...

    def stat_counter(self, name: str) -> Counter | None: ...  # None: no stats store

    def maybe_reload(self, slot: PluginSlot) -> None: ...

    def instance_closed(self, inst: PluginInstance) -> None: ...

    def vm_closed(self, vm: PluginVM) -> None: ...


class PluginInstance:
    """One running VM + root context serving a slot."""

    def __init__(self, slot: PluginSlot, vm: PluginVM, root: RootContext, module: Module) -> None:
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

    def adopt(self, slot: PluginSlot) -> None:
        """Serve ``slot`` (the instance was validated in a scratch slot): the slot
        records the module it now runs, which the module watcher compares against."""
        self.slot = slot
        slot.abi = self.vm.abi
        slot.sha256 = self.module.sha256

    def acquire(self) -> None:
        """A request starts on this instance."""
        self.inflight += 1

    def release(self) -> None:
        """A request that started on this instance ended: a retired one closes after
        its last."""
        self.inflight -= 1
        self.maybe_retire()

    def maybe_retire(self) -> None:
        if self.retired and self.inflight <= 0 and not self.closed:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        owner = self.slot.manager
        owner.instance_closed(self)
        vm = self.vm
        try:
            vm.remove_plugin(self.root)
        finally:
            if not vm.roots:  # the last plugin on a (possibly shared) VM
                vm.close()
                owner.vm_closed(vm)


class PluginSlot:
    """One configured plugin: identity, operator mode, state and counters."""

    def __init__(self, manager: SlotOwner, spec: PluginSpec) -> None:
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
        # why the last load, reload or new version of it failed (None: it did not)
        self.error: PluginError | None = None
        self.counters: dict[str, int] = {}
        self._stat_counters: dict[str, Counter] = {}
        # guest time per request (all callbacks), newest last: the Overview's average
        self.callback_us: deque[float] = deque(maxlen=2048)
        # the stats store's wasm.<name>.callback_time_us, looked up on first use
        self.callback_time_stat: Histogram | None = None
        self._sdk: tuple[str, str] | None = None  # (module sha256, likely SDK)
        # why the plugin's match does not select this listener; None: it applies
        self.not_applied: str | None = None

    # -- counters (mirrored into the stats store as wasm.<name>.<counter>) --

    def count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n
        # the store's counter objects, looked up once per name (a per-request hot path)
        c = self._stat_counters.get(what)
        if c is None:
            c = self.manager.stat_counter(f"wasm.{self.name}.{what}")
            if c is None:
                return
            self._stat_counters[what] = c
        c.value += n

    @property
    def last_error(self) -> str:
        """``error`` as the one line the admin API's ``last_error`` has always shown."""
        return self.error.text if self.error is not None else ""

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

    def admit(self, headers: HeaderMap, client_ip: str, forced: bool | None = None) -> Admission:
        """Whether this plugin runs on one request (or TCP connection: no headers), as its
        mode, canary and failure policy decide, counted in its stats: disabled, not
        sampled by the canary (``canary_skipped``), failed and skipped by FAIL_OPEN or
        log-only (``fail_open_skipped``), failed and rejecting it (FAIL_CLOSE/FAIL_RELOAD:
        ``fail_closed_rejected``), or the instance to run."""
        mode = self.mode
        if mode == "disabled":
            return Admission(None, False, "disabled")
        if not canary_sampled(self.canary_percent, self.canary_key, headers, client_ip, forced):
            self.count("canary_skipped")
            return Admission(None, False, "not sampled by canary")
        enforce = mode != "log-only"
        inst = self.instance_for_request()
        if inst is not None:
            return Admission(inst, enforce)
        # Failed (or still starting) plugin: its failure policy decides.
        policy = self.effective_policy()
        if not enforce or policy == "FAIL_OPEN":
            self.count("fail_open_skipped")
            return Admission(None, enforce, f"failed, {policy}: skipped", policy=policy)
        self.count("fail_closed_rejected")
        return Admission(None, enforce, rejects=True, policy=policy)

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

    def snapshot(self) -> PluginSnapshot:
        inst = self.instance
        live = inst is not None and not inst.closed
        state = PluginState(self.state)
        if state is PluginState.RUNNING and self.mode == "log-only":
            state = PluginState.LOG_ONLY
        if self.not_applied is not None and state not in (
            PluginState.FAILED,
            PluginState.RELOADING,
        ):
            state = PluginState.NOT_APPLIED
        failure = self.failure
        return PluginSnapshot(
            name=self.name,
            state=state,
            # NETWORK: runs on the spec.tcp listeners; HTTP (also for an unspecified type)
            type="NETWORK" if self.spec.type == "NETWORK" else "HTTP",
            not_applied=self.not_applied,
            mode=self.mode,
            canary_percent=self.canary_percent,
            canary_key=self.canary_key,
            fail_strategy=self.effective_policy(),
            failure=(
                FailureView.of(failure, self.failure_request, self.crash_session)
                if failure is not None
                else None
            ),
            crash_loop=self.crash_loop,
            # wall-clock ISO time (and seconds from now) of the next FAIL_RELOAD try
            reload_at=_wall_clock(self.reload_at),
            reload_in_s=(
                round(max(0.0, self.reload_at - time.monotonic()), 3)
                if self.reload_at is not None
                else None
            ),
            abi=inst.vm.abi if inst is not None else self.abi,
            sha256=inst.module.sha256 if inst is not None else self.sha256,
            root_id=self.spec.plugin_name,
            phase=self.spec.phase,
            priority=self.spec.priority,
            vm_memory_bytes=inst.vm.memory_bytes() if inst is not None and live else 0,
            counters=dict(self.counters),
            sdk=self.sdk_name(),
            time_per_request_us=(
                sum(self.callback_us) / len(self.callback_us) if self.callback_us else None
            ),
            error=self.error,
            warnings=tuple(
                plugin_warnings(
                    inst.vm if inst is not None else None,
                    self.manager.host.logs,
                    self.name,
                    self.spec.plugin_name,
                )
            ),
            # live contexts of its VM (root + streams; the whole VM when shared) and the
            # http callouts its root context still waits for: both flat in a steady state
            contexts=len(inst.vm.contexts) if inst is not None and live else 0,
            inflight_callouts=len(inst.root.http_calls) if inst is not None and live else 0,
        )


def _wall_clock(monotonic_at: float | None) -> str | None:
    """A ``time.monotonic()`` reading as a wall-clock ISO 8601 time (UTC), or None."""
    if monotonic_at is None:
        return None
    at = time.time() + (monotonic_at - time.monotonic())
    return datetime.fromtimestamp(at, tz=UTC).isoformat(timespec="milliseconds")
