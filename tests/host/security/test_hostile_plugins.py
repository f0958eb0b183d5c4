"""Issue 13 item 12a: the hostile-plugin suite.

Each case is a plugin that misbehaves (a trap in every callback, infinite loops,
memory bombs, bad pointers to every host function, garbage results, 10,000 callouts,
a 100 MB local reply, a 1 ms tick, a plugin that never resumes, output floods), run
under FAIL_CLOSE and FAIL_OPEN through the real proxy (``ProxyServer`` in-process,
real sockets on 127.0.0.1) next to a well-behaved plugin. For every case and policy:
the process lives (data path and admin API answer), the policy is applied to every
request, the other plugin is unaffected.

Summary table: run with ``-s`` to see it, or set ``WASMDESK_HOSTILE_REPORT=/tmp/x.json``
to get it as JSON (one row per case × policy).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.fixtures import wat_modules as wm
from tests.host.proxy.conftest import make_config, probe_wasm, wasm_plugin
from tests.host.security.hostile_wat import (
    CLUSTER,
    HEADERS,
    bad_pointers_module,
    callout_headers,
    callout_module,
    hostile_module,
    http_call,
)

DEMO = "wasmdesk-demo-upstream"
POLICIES = ("FAIL_CLOSE", "FAIL_OPEN")
PAUSE_TIMEOUT_S = 0.3  # the suite's; the default (30 s) is unchanged
# a plugin that never resumes: every request ends at the pause timeout (504), no callout
# has to come back first, so a shorter one shows the same
NEVER_RESUMES_TIMEOUT_S = 0.1


@dataclass(frozen=True)
class Case:
    name: str
    wasm: Callable[[], bytes]
    # fails_at_start | fails | fails_after_response | fails_in_background |
    # fails_while_paused | ok | paused
    outcome: str
    failure_kind: str = ""  # expected Failure.kind when it fails ("" = any)
    annotations: dict[str, str] = field(default_factory=dict)
    slow: bool = False
    max_request_s: float = 2.0


def _trap(cb: str, kind: str = "unreachable") -> Callable[[], bytes]:
    return lambda: wm.make_trap_module(cb, kind)


def _call_response_trap() -> bytes:
    h = callout_headers(b"/bytes/1")
    return hostile_module(
        data={CLUSTER: DEMO.encode(), HEADERS: h},
        request_headers=f"(drop {http_call(len(DEMO), len(h))})\n    (i32.const 1)",
        call_response="(unreachable)",
    )


def _local_reply(size: int) -> Callable[[], bytes]:
    pages = size // 65536 + 4
    return lambda: hostile_module(
        pages=pages,
        data={1024: b"hostile"},
        request_headers=f"""
    (drop (call $local_reply (i32.const 200) (i32.const 1024) (i32.const 7)
      (i32.const 65536) (i32.const {size}) (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 0)""",
    )


def _flood(call: str) -> Callable[[], bytes]:
    # an endless loop of one host call (1 MiB each): the budget must stop it
    return lambda: hostile_module(
        pages=20,
        request_headers=f"""
    (i32.store (i32.const 256) (i32.const 65536))
    (i32.store (i32.const 260) (i32.const 1048576))
    (loop $l (drop {call}) (br $l))
    (i32.const 0)""",
    )


FD_WRITE = "(call $fd_write (i32.const 1) (i32.const 256) (i32.const 1) (i32.const 300))"
LOG = "(call $log (i32.const 2) (i32.const 65536) (i32.const 1048576))"

CASES = [
    # a trap in each callback
    Case("trap in _initialize", _trap("_initialize"), "fails_at_start", "unreachable"),
    Case("trap in vm_start", _trap("proxy_on_vm_start"), "fails_at_start", "unreachable"),
    Case("trap in configure", _trap("proxy_on_configure"), "fails_at_start", "unreachable"),
    Case("trap in context_create", _trap("proxy_on_context_create"), "fails_at_start"),
    Case("trap in request_headers", _trap("proxy_on_request_headers"), "fails", "unreachable"),
    Case("trap in request_body", _trap("proxy_on_request_body"), "fails", "unreachable"),
    Case("trap in response_headers", _trap("proxy_on_response_headers"), "fails"),
    Case("trap in response_body", _trap("proxy_on_response_body"), "fails", "unreachable"),
    Case("trap in done", _trap("proxy_on_done"), "fails_after_response", "unreachable"),
    Case("trap in log", _trap("proxy_on_log"), "fails_after_response", "unreachable"),
    Case("trap in delete", _trap("proxy_on_delete"), "fails_after_response", "unreachable"),
    Case(
        "trap in tick",
        lambda: probe_wasm(trap_on_tick_ms=20),
        "fails_in_background",
        "unreachable",
    ),
    # KNOWN GAP (left to the chain's owner): the request paused on the callout waits
    # for the pause timeout (504) instead of getting the policy when the VM fails.
    Case("trap in http_call_response", _call_response_trap, "fails_while_paused", "unreachable"),
    # runaway code and memory
    Case("loop in allocator", _trap("malloc", "loop"), "fails", "interrupt"),
    Case("loop in _initialize", _trap("_initialize", "loop"), "fails_at_start", "interrupt"),
    Case("memory bomb", _trap("proxy_on_request_headers", "memory_bomb"), "fails", "unreachable"),
    Case(
        "initial memory above the cap",
        lambda: hostile_module(pages=5000),
        "fails_at_start",
    ),
    Case("stack overflow", _trap("proxy_on_request_headers", "stack_overflow"), "fails"),
    # bad input to the host
    Case("bad pointers to every host function", bad_pointers_module, "ok"),
    Case(
        "garbage callback results",
        lambda: hostile_module(
            vm_start="(i32.const 0xdead)",
            configure="(i32.const -1)",
            done="(i32.const 77)",
            request_headers="(i32.const 0x7fffffff)",
        ),
        "paused",
    ),
    # floods
    Case(
        "10,000 callouts",
        lambda: callout_module(DEMO, callout_headers(b"/bytes/1"), repeat=10_000),
        "ok",
        annotations={"wasmdesk.dev/callback-timeout": "2s"},
        max_request_s=5.0,
    ),
    Case("fd_write flood", _flood(FD_WRITE), "fails", "interrupt"),
    Case("proxy_log flood", _flood(LOG), "fails", "interrupt"),
    # refused (BAD_ARGUMENT, over 16 MiB): the plugin continues, the request goes on
    Case("100 MB local reply", _local_reply(100 * 1024 * 1024), "ok"),
    Case(
        "1 ms tick",
        lambda: hostile_module(
            configure="(drop (call $set_tick (i32.const 1))) (i32.const 1)",
            tick="(global.set $n (i32.add (global.get $n) (i32.const 1)))",
        ),
        "ok",
        max_request_s=0.5,
    ),
    Case("never resumes", lambda: hostile_module(request_headers="(i32.const 1)"), "paused"),
]

_ROWS: list[dict[str, Any]] = []


@pytest.fixture(scope="module", autouse=True)
def _summary() -> Iterator[None]:
    yield
    if not _ROWS:
        return
    rows = sorted(_ROWS, key=lambda r: (r["case"], r["policy"]))
    width = max(len(r["case"]) for r in rows)
    lines = [
        f"{'case':<{width}}  {'policy':<10}  survived  policy applied  statuses",
        *(
            f"{r['case']:<{width}}  {r['policy']:<10}  {'yes' if r['survived'] else 'NO':<8}"
            f"  {r['policy_applied']:<14}  {' '.join(map(str, r['statuses']))}"
            for r in rows
        ),
    ]
    print("\n\nhostile-plugin suite\n" + "\n".join(lines))
    out = os.environ.get("WASMDESK_HOSTILE_REPORT")
    if out:
        with open(out, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


def _expected(case: Case, policy: str, n: int) -> list[int]:
    failed = 503 if policy == "FAIL_CLOSE" else 200
    if case.outcome in ("fails_at_start", "fails", "fails_in_background"):
        return [failed] * n
    if case.outcome == "fails_after_response":
        return [200] + [failed] * (n - 1)
    if case.outcome == "fails_while_paused":
        # the policy reaches the stream the failed VM held paused at once, as Envoy
        return [failed] * n
    if case.outcome == "paused":
        return [504] * n
    return [200] * n


def _params() -> list[Any]:
    return [
        pytest.param(c, p, id=f"{c.name}-{p}", marks=[pytest.mark.slow] if c.slow else [])
        for c in CASES
        for p in POLICIES
    ]


@pytest.mark.parametrize("case,policy", _params())
def test_hostile_plugin(start_proxy, wasm_file, case: Case, policy: str) -> None:
    row: dict[str, Any] = {"case": case.name, "policy": policy, "survived": False}
    row["policy_applied"] = "n/a" if case.outcome in ("ok", "paused") else "no"
    row["statuses"] = []
    _ROWS.append(row)
    good = wasm_plugin("good", wasm_file(probe_wasm(tag="good"), "good"), fail="FAIL_CLOSE")
    hostile = wasm_plugin(
        "hostile", wasm_file(case.wasm(), "hostile"), fail=policy, annotations=case.annotations
    )
    h = start_proxy(make_config(good, hostile), strict=False)
    # Cases that only pause to wait for a callout get a long pause timeout: the policy must
    # reach the paused stream when the VM fails, long before any timeout (a loaded machine
    # can take more than the suite's short timeout for the callout's round trip).
    waits_for_callout = case.outcome == "fails_while_paused"
    h.server.manager.pause_timeout_s = (
        10.0
        if waits_for_callout
        else NEVER_RESUMES_TIMEOUT_S
        if case.outcome == "paused"
        else PAUSE_TIMEOUT_S
    )
    if case.outcome == "fails_in_background":
        h.wait_for(lambda: h.slot("hostile").state == "failed", 5, "the tick to trap")

    n = 3
    statuses = []
    with h.client(timeout=30) as c:
        for i in range(n):
            t0 = time.monotonic()
            r = c.post(f"/req/{i}", content=b"hello body")
            took = time.monotonic() - t0
            statuses.append(r.status_code)
            row["statuses"] = statuses
            if r.status_code == 200 and "application/json" in r.headers.get("content-type", ""):
                # the other plugin still ran on this request
                assert r.json()["headers"].get("x-probe-tag") == "good", r.text
            if r.status_code == 503:
                assert "hostile" in r.text  # the body names the failed plugin
            waits = case.outcome == "paused"
            assert took < case.max_request_s + (PAUSE_TIMEOUT_S if waits else 0)
    # the process lives: data path and admin API answer
    ready = h.admin("GET", "/ready", timeout=5)
    assert ready.status_code in (200, 503)
    with h.client(timeout=5) as c:
        c.get("/after")
    row["survived"] = True
    slot = h.slot("hostile")
    assert h.slot("good").state == "running"  # the other plugin is unaffected
    assert statuses == _expected(case, policy, n), statuses
    if case.outcome.startswith("fails"):
        assert slot.state == "failed"
        failure = h.sync(lambda: slot.failure)
        if case.failure_kind:
            # start-up failures are "load_failed" with the trap's kind in the message
            assert failure is not None, slot.state
            assert case.failure_kind in (failure.kind, *failure.message.split(": ")), failure
        row["policy_applied"] = "yes"
    else:
        assert slot.state == "running"
