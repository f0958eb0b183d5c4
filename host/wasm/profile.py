"""Where a plugin's time goes: host calls per guest callback (name, count, time).

With ``VmConfig(profile=True)`` every host function is wrapped in a timer, and each
guest callback leaves an entry in ``vm.profile``: (callback, context id, total ns,
{host function: [count, ns]}). The guest's own time is the total minus the host
calls. Off by default: the wrapper costs two clock reads per host call.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import Any

from host.wasm.runtime import HostFunction

__all__ = ["ProfileEntry", "profile_json", "profiled"]

ProfileEntry = tuple[str, int, int, dict[str, list[int]]]

_now = time.perf_counter_ns


def profiled(functions: Iterable[HostFunction]) -> tuple[HostFunction, ...]:
    out: list[HostFunction] = []
    for hf in functions:
        impl, name = hf.impl, hf.name

        def timed(vm: Any, *args: int, _impl: Any = impl, _name: str = name) -> int | None:
            t0 = _now()
            try:
                r: int | None = _impl(vm, *args)
                return r
            finally:
                d = vm.hostcalls
                if d is not None:
                    e = d.get(_name)
                    if e is None:
                        d[_name] = [1, _now() - t0]
                    else:
                        e[0] += 1
                        e[1] += _now() - t0

        out.append(dataclasses.replace(hf, impl=timed))
    return tuple(out)


def profile_json(entries: Iterable[ProfileEntry]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for callback, cid, total_ns, calls in entries:
        host_ns = sum(ns for _n, ns in calls.values())
        out.append(
            {
                "callback": callback,
                "context_id": cid,
                "total_us": round(total_ns / 1000, 1),
                "guest_us": round(max(0, total_ns - host_ns) / 1000, 1),
                "host_calls": [
                    {"name": n, "count": c, "us": round(ns / 1000, 1)}
                    for n, (c, ns) in sorted(calls.items(), key=lambda kv: -kv[1][1])
                ],
            }
        )
    return out
