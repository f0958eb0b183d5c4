"""The failure-policy decision (host.proxy.policy) as a table: failStrategy, fail state,
failure history and clock in, action and reload time out. No VM, no loop: the function
is pure, so each case states the whole input; the proxy-level behaviour (503s, skips,
reloads, the crash-loop guard over real traps) is in test_proxy_failure.py."""

from __future__ import annotations

import pytest

from host.proxy.policy import Decision, FailureAction, ReloadPolicy, decide, reload_delay
from host.wasm.types import FailState

RP = ReloadPolicy(base_s=1.0, max_s=30.0, loop_window_s=60.0, loop_max_reloads=5)
RUNTIME = FailState.RUNTIME_ERROR

CASES = [
    # id, strategy, fail state, failure times, now, attempts, jitter -> decision
    ("close", "FAIL_CLOSE", RUNTIME, [100.0], 100.0, 0, 0.5, Decision(FailureAction.FAIL_CLOSED)),
    ("empty is close", "", RUNTIME, [100.0], 100.0, 0, 0.5, Decision(FailureAction.FAIL_CLOSED)),
    ("open skips", "FAIL_OPEN", RUNTIME, [100.0], 100.0, 0, 0.5, Decision(FailureAction.SKIP)),
    (
        "open never reloads, however often it failed",
        "FAIL_OPEN", RUNTIME, [float(t) for t in range(90, 101)], 100.0, 3, 0.5,
        Decision(FailureAction.SKIP),
    ),
    (
        "first reload: base, jitter 0 halves it",
        "FAIL_RELOAD", RUNTIME, [100.0], 100.0, 0, 0.0,
        Decision(FailureAction.RELOAD, reload_at=100.5, recent_failures=1),
    ),
    (
        "first reload: base, jitter 0.5 is 3/4 of it",
        "FAIL_RELOAD", RUNTIME, [100.0], 100.0, 0, 0.5,
        Decision(FailureAction.RELOAD, reload_at=100.75, recent_failures=1),
    ),
    (
        "no fail state counts as a runtime error",
        "FAIL_RELOAD", None, [100.0], 100.0, 0, 0.0,
        Decision(FailureAction.RELOAD, reload_at=100.5, recent_failures=1),
    ),
    (
        "third try doubles twice",
        "FAIL_RELOAD", RUNTIME, [98.0, 99.0, 100.0], 100.0, 2, 0.0,
        Decision(FailureAction.RELOAD, reload_at=102.0, recent_failures=3),
    ),
    (
        "backoff is capped at max_s",
        "FAIL_RELOAD", RUNTIME, [100.0], 100.0, 10, 0.0,
        Decision(FailureAction.RELOAD, reload_at=115.0, recent_failures=1),
    ),
    (
        "exactly loop_max_reloads in the window: still reloads",
        "FAIL_RELOAD", RUNTIME, [60.0, 70.0, 80.0, 90.0, 100.0], 100.0, 4, 0.0,
        Decision(FailureAction.RELOAD, reload_at=108.0, recent_failures=5),
    ),
    (
        "one more than loop_max_reloads in the window: crash loop",
        "FAIL_RELOAD", RUNTIME, [50.0, 60.0, 70.0, 80.0, 90.0, 100.0], 100.0, 5, 0.0,
        Decision(FailureAction.CRASH_LOOP, recent_failures=6),
    ),
    (
        "failures older than the window do not count (the window's edge does)",
        "FAIL_RELOAD", RUNTIME, [1.0, 2.0, 3.0, 40.0, 50.0, 100.0], 100.0, 0, 0.0,
        Decision(FailureAction.RELOAD, reload_at=100.5, recent_failures=3),
    ),
    (
        "a VM that could not start is not reloaded",
        "FAIL_RELOAD", FailState.UNABLE_TO_CREATE_VM, [100.0], 100.0, 0, 0.0,
        Decision(FailureAction.FAIL_CLOSED),
    ),
    (
        "a plugin that failed to configure is not reloaded",
        "FAIL_RELOAD", FailState.CONFIGURE_FAILED, [100.0], 100.0, 0, 0.0,
        Decision(FailureAction.FAIL_CLOSED),
    ),
]


@pytest.mark.parametrize(
    ("strategy", "state", "failures", "now", "attempts", "jitter", "expected"),
    [pytest.param(*c[1:], id=c[0]) for c in CASES],
)
def test_decide_table(
    strategy: str,
    state: FailState | None,
    failures: list[float],
    now: float,
    attempts: int,
    jitter: float,
    expected: Decision,
) -> None:
    got = decide(strategy, state, failures, now, attempts=attempts, policy=RP, jitter=jitter)
    assert got == expected


def test_the_window_edge_is_inclusive() -> None:
    # a failure exactly loop_window_s before now is inside the window: six of them loop
    edge = [40.0, 50.0, 60.0, 70.0, 80.0, 100.0]
    got = decide("FAIL_RELOAD", RUNTIME, edge, 100.0, attempts=0, policy=RP, jitter=0.0)
    assert got.action is FailureAction.CRASH_LOOP and got.recent_failures == 6
    outside = [39.999, *edge[1:]]
    got = decide("FAIL_RELOAD", RUNTIME, outside, 100.0, attempts=0, policy=RP, jitter=0.0)
    assert got.action is FailureAction.RELOAD and got.recent_failures == 5


@pytest.mark.parametrize(
    ("attempts", "jitter", "delay"),
    [(0, 0.0, 0.5), (0, 0.999, 0.9995), (1, 0.0, 1.0), (1, 1.0, 2.0), (3, 0.0, 4.0),
     (4, 1.0, 16.0), (5, 1.0, 30.0), (40, 0.0, 15.0)],
)
def test_reload_delay_doubles_with_jitter_and_a_cap(
    attempts: int, jitter: float, delay: float
) -> None:
    assert reload_delay(attempts, RP, jitter) == pytest.approx(delay)


def test_decide_reads_the_history_once_and_leaves_it_alone() -> None:
    history = [99.0, 100.0]
    decide("FAIL_RELOAD", RUNTIME, history, 100.0, attempts=1, policy=RP, jitter=0.25)
    assert history == [99.0, 100.0]
    # a generator works too: the history is only iterated
    got = decide("FAIL_RELOAD", RUNTIME, iter(history), 100.0, attempts=1, policy=RP, jitter=0.25)
    assert got == Decision(FailureAction.RELOAD, reload_at=100.0 + 2 * 0.625, recent_failures=2)
