"""What the app and the admin API read about a plugin, as frozen values.

``PluginSlot.snapshot()`` makes a ``PluginSnapshot``: the plugin's shown state, its
operator knobs, its last failure (``FailureView``) and load error (``PluginError``), its
VM and counters, at one moment. ``gui.engine_service`` hands these to the window as they
are; the admin API's ``/plugins`` is ``to_dict()`` of each (the JSON it always had).

A value module: the GUI may import it (pyproject's import-linter contract).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from host.proxy.errors import PluginError
from host.wasm.types import Failure

__all__ = ["FailureView", "PluginSnapshot", "PluginState"]


class PluginState(StrEnum):
    """A plugin's state as shown: the slot's state, with a running plugin that only
    logs shown as ``log-only`` and one whose match skips this listener ``not applied``."""

    STARTING = "starting"
    RUNNING = "running"
    LOG_ONLY = "log-only"
    NOT_APPLIED = "not applied"
    FAILED = "failed"
    RELOADING = "reloading"
    DISABLED = "disabled"


@dataclass(frozen=True)
class FailureView:
    """A plugin's last failure (``host.wasm.types.Failure``'s fields) with the request
    that triggered it (``chain.request_facts``; None outside a request) and the lab's
    session of the requests before it (None when none was kept)."""

    state: str
    kind: str
    message: str
    callback: str = ""
    context_id: int = 0
    backtrace: tuple[str, ...] = field(default=())
    request: Mapping[str, Any] | None = None
    session: str | None = None

    @classmethod
    def of(
        cls,
        failure: Failure,
        request: Mapping[str, Any] | None = None,
        session: str | None = None,
    ) -> FailureView:
        return cls(
            failure.state.name,
            failure.kind,
            failure.message,
            failure.callback,
            failure.context_id,
            failure.backtrace,
            request,
            session,
        )

    def to_dict(self) -> dict[str, Any]:
        """The admin API's ``failure`` object: ``request`` and ``session`` only when set."""
        d: dict[str, Any] = {
            "state": self.state,
            "kind": self.kind,
            "message": self.message,
            "callback": self.callback,
            "context_id": self.context_id,
            "backtrace": list(self.backtrace),
        }
        if self.request is not None:
            d["request"] = self.request
        if self.session is not None:
            d["session"] = self.session
        return d


@dataclass(frozen=True)
class PluginSnapshot:
    """One plugin at one moment (``/plugins``' object for it, as fields)."""

    name: str
    state: PluginState = PluginState.RUNNING
    type: str = "HTTP"  # the WasmPlugin's type: "HTTP", or "NETWORK" (a TCP plugin)
    not_applied: str | None = None  # why its match skips this listener
    mode: str = "enforce"
    canary_percent: float = 100.0
    canary_key: str = "random"
    fail_strategy: str = "FAIL_CLOSE"  # the effective one
    failure: FailureView | None = None
    crash_loop: bool = False
    reload_at: str | None = None  # ISO 8601 (UTC) of the next FAIL_RELOAD try
    reload_in_s: float | None = None
    abi: str | None = None
    sha256: str = ""
    root_id: str = ""
    phase: str = "UNSPECIFIED_PHASE"
    priority: int | None = None
    vm_memory_bytes: int = 0
    counters: Mapping[str, int] = field(default_factory=dict)
    sdk: str = ""
    time_per_request_us: float | None = None  # guest time per request, None before one
    error: PluginError | None = None  # why its last load or new version failed
    warnings: tuple[str, ...] = field(default=())
    contexts: int = 0  # live contexts of its VM
    inflight_callouts: int = 0

    @property
    def last_error(self) -> str:
        """``error`` as one line ("" when none)."""
        return self.error.text if self.error is not None else ""

    def to_dict(self) -> dict[str, Any]:
        """The admin API's JSON object for this plugin (its keys in their old order;
        ``error`` is ``last_error`` as fields)."""
        return {
            "name": self.name,
            "type": self.type,
            "state": self.state.value,
            "not_applied": self.not_applied,
            "mode": self.mode,
            "canary_percent": self.canary_percent,
            "canary_key": self.canary_key,
            "fail_strategy": self.fail_strategy,
            "failure": self.failure.to_dict() if self.failure is not None else None,
            "crash_loop": self.crash_loop,
            "reload_at": self.reload_at,
            "reload_in_s": self.reload_in_s,
            "abi": self.abi,
            "sha256": self.sha256,
            "root_id": self.root_id,
            "phase": self.phase,
            "priority": self.priority,
            "vm_memory_bytes": self.vm_memory_bytes,
            "counters": dict(self.counters),
            "sdk": self.sdk,
            "time_per_request_us": self.time_per_request_us,
            "last_error": self.last_error,
            "error": self.error.to_dict() if self.error is not None else None,
            "warnings": list(self.warnings),
            "contexts": self.contexts,
            "inflight_callouts": self.inflight_callouts,
        }
