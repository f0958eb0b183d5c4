"""The failure-policy decision: what a plugin's failure leads to, as a pure function.

Given the plugin's failStrategy, the failure's fail state, the times of its recent
failures, the reloads tried so far and the clock, ``decide`` says what happens:
fail closed (requests get a 503), skip (FAIL_OPEN: requests go on without it),
reload at a time (FAIL_RELOAD: Envoy's jittered, doubling backoff, 1 s base), or
stop reloading (the crash-loop guard: too many failures inside the window). No
clock, no random numbers, no state here: the caller passes ``now`` and the jitter
draw, and applies the decision (``host.proxy.plugins.PluginManager``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from host.wasm.types import FailState

__all__ = [
    "DEFAULT_RELOAD_POLICY",
    "Decision",
    "FailureAction",
    "ReloadPolicy",
    "decide",
    "reload_delay",
]


@dataclass(frozen=True)
class ReloadPolicy:
    """FAIL_RELOAD pacing (Envoy: jittered backoff, 1 s base) and the crash-loop guard."""

    base_s: float = 1.0
    max_s: float = 30.0
    loop_window_s: float = 60.0
    loop_max_reloads: int = 5  # more failures than this inside the window: stay failed


DEFAULT_RELOAD_POLICY = ReloadPolicy()


class FailureAction(StrEnum):
    """What a plugin's failure leads to."""

    FAIL_CLOSED = "fail closed"  # the plugin stays failed; enforcing requests get a 503
    SKIP = "skip"  # FAIL_OPEN: the plugin stays failed; requests go on without it
    RELOAD = "reload"  # FAIL_RELOAD: a fresh VM at ``Decision.reload_at``
    CRASH_LOOP = "crash loop"  # FAIL_RELOAD, but failing too often: reloads stop


@dataclass(frozen=True)
class Decision:
    """``decide``'s answer: the action, and for RELOAD when (same clock as ``now``)."""

    action: FailureAction
    reload_at: float | None = None
    recent_failures: int = 0  # failures inside the crash-loop window (FAIL_RELOAD only)


def reload_delay(attempts: int, policy: ReloadPolicy, jitter: float) -> float:
    """Seconds before the next FAIL_RELOAD try after ``attempts`` tries: the base on the
    first, then doubling up to the cap, each scaled by 0.5 + jitter/2 (``jitter`` in [0, 1))."""
    scale = 0.5 + jitter * 0.5
    if not attempts:
        return policy.base_s * scale
    return min(policy.max_s, policy.base_s * float(2**attempts)) * scale


def decide(
    strategy: str,
    fail_state: FailState | None,
    failures: Iterable[float],
    now: float,
    *,
    attempts: int,
    policy: ReloadPolicy,
    jitter: float,
) -> Decision:
    """The action for a failure at ``now``. ``failures``: the plugin's failure times (this
    one included); ``attempts``: reloads scheduled since it last ran well; ``strategy``:
    FAIL_CLOSE, FAIL_OPEN or FAIL_RELOAD ("" counts as FAIL_CLOSE). Only a runtime error
    is reloadable (cpp-host): a VM that cannot start or configure stays failed."""
    if strategy == "FAIL_RELOAD" and (fail_state is None or fail_state == FailState.RUNTIME_ERROR):
        recent = sum(1 for t in failures if now - t <= policy.loop_window_s)
        if recent > policy.loop_max_reloads:
            return Decision(FailureAction.CRASH_LOOP, recent_failures=recent)
        return Decision(
            FailureAction.RELOAD,
            reload_at=now + reload_delay(attempts, policy, jitter),
            recent_failures=recent,
        )
    if strategy == "FAIL_OPEN":
        return Decision(FailureAction.SKIP)
    return Decision(FailureAction.FAIL_CLOSED)
