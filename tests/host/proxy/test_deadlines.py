"""The exchanges' deadlines on one loop timer (``host/proxy/deadlines.py``): each owner's
deadline comes at its time, an unwatched one never comes, a later watch replaces an
earlier one, an earlier deadline re-arms the timer, and one failing owner does not
strand the others. Then through the proxy: a short route timeout registered after a
long one still answers 504 at its own time."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import yaml

from host.proxy.deadlines import Deadlines


class Owner:
    def __init__(self, name: str, log: list[tuple[str, float]], loop: Any) -> None:
        self.name, self.log, self.loop = name, log, loop
        self.fail = False

    def deadline_passed(self) -> None:
        self.log.append((self.name, self.loop.time()))
        if self.fail:
            raise RuntimeError(f"{self.name} fails")


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest):
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        lp = uvloop.new_event_loop()
    else:
        lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def test_each_deadline_comes_at_its_time_and_only_watched_ones_come(loop) -> None:
    d = Deadlines(loop)
    log: list[tuple[str, float]] = []
    a, b, c, e = (Owner(n, log, loop) for n in "abce")
    armed: list[float] = []
    real_call_at = d._call_at

    def call_at(when: float, cb: Any) -> Any:
        armed.append(when)
        return real_call_at(when, cb)

    d._call_at = call_at  # type: ignore[method-assign]

    async def run() -> float:
        t0 = loop.time()
        d.watch(a, 0.10)
        d.watch(b, 0.20)  # later than the armed timer: no new timer
        d.watch(c, 0.15)
        d.unwatch(c)  # never comes
        d.watch(e, 0.05)  # earlier: the timer is re-armed
        d.watch(b, 0.25)  # a second watch replaces the first
        await asyncio.sleep(0.4)
        return t0

    t0 = loop.run_until_complete(run())
    assert [n for n, _ in log] == ["e", "a", "b"]
    for name, due in (("e", 0.05), ("a", 0.10), ("b", 0.25)):
        at = dict(log)[name] - t0
        assert due - 0.002 <= at < due + 0.1, (name, at)
    assert len(armed) == 4  # a, e (earlier), then re-armed at a, then at b
    assert d.due_at == {}


def test_a_failing_owner_does_not_strand_the_others(loop) -> None:
    d = Deadlines(loop)
    log: list[tuple[str, float]] = []
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    first, second, later = (Owner(n, log, loop) for n in ("first", "second", "later"))
    first.fail = True

    async def run() -> None:
        d.watch(first, 0.02)
        d.watch(second, 0.02)
        d.watch(later, 0.08)
        await asyncio.sleep(0.2)

    loop.run_until_complete(run())
    assert sorted(n for n, _ in log) == ["first", "later", "second"]
    assert [str(e["exception"]) for e in errors] == ["first fails"]


def test_a_short_route_timeout_after_a_long_one_answers_at_its_own_time(
    start_proxy, upstream
) -> None:
    spec = {
        "listen": "127.0.0.1:0",
        "admin": "127.0.0.1:0",
        "clusters": [
            {"name": "long", "url": upstream.url, "timeout": "3s"},
            {"name": "short", "url": upstream.url, "timeout": "200ms"},
        ],
        "routes": [{"name": "short", "match": {"prefix": "/slow-short"}, "cluster": "short"}],
        "defaultCluster": "long",
    }
    h = start_proxy(
        yaml.safe_dump({"apiVersion": "wasmdesk.dev/v1alpha1", "kind": "Proxy", "spec": spec})
    )
    results: dict[str, tuple[int, float]] = {}

    def get(name: str, path: str) -> None:
        with h.client() as c:
            t = time.monotonic()
            r = c.get(path)
            results[name] = (r.status_code, time.monotonic() - t)

    slow = threading.Thread(target=get, args=("long", "/slow?ms=700"))
    slow.start()
    time.sleep(0.1)  # the long deadline (3 s) is armed first
    get("short", "/slow-short?ms=1500")
    slow.join(10)
    status, took = results["short"]
    assert status == 504 and took < 1.0, results
    assert results["long"][0] == 200, results  # 700 ms is inside its 3 s
