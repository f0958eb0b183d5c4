"""Plugin-defined metrics (``proxy_define_metric`` and friends, ABI doc §2.2).

Names are global to the host, as in Envoy's stats store: two plugins defining the
same name share one metric. Each definition gets its own id bound to that metric;
ids follow cpp-host's scheme (``id & 3 == type``). Histograms keep Envoy's default
bucket bounds, a count and a sum, so they export to Prometheus unchanged.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from host.wasm.types import MetricType

__all__ = ["ENVOY_BUCKETS", "Metric", "MetricsRegistry"]

# Envoy's default histogram bucket upper bounds.
ENVOY_BUCKETS: tuple[float, ...] = (
    0.5,
    1,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    300000,
    600000,
    1800000,
    3600000,
)


@dataclass
class Metric:
    name: str
    type: MetricType
    value: int = 0  # counter / gauge
    count: int = 0  # histogram
    sum: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(ENVOY_BUCKETS) + 1))

    def record(self, v: int) -> None:
        self.count += 1
        self.sum += v
        self.buckets[bisect.bisect_left(ENVOY_BUCKETS, v)] += 1

    def snapshot(self) -> int | dict[str, object]:
        if self.type == MetricType.HISTOGRAM:
            return {"count": self.count, "sum": self.sum, "buckets": list(self.buckets)}
        return self.value


class MetricsRegistry:
    def __init__(self) -> None:
        self.by_name: dict[str, Metric] = {}  # for display: the latest metric of a name
        self._by_key: dict[tuple[MetricType, str], Metric] = {}
        self._by_id: dict[int, Metric] = {}
        self._next = 0

    def define(self, mtype: MetricType, name: str) -> int:
        # Envoy keeps counters, gauges and histograms in separate stores, so a name
        # is looked up per type: defining gauge "x" must not detach a later
        # definition of counter "x" from the existing counter (ABI doc §2.2 "Metrics").
        key = (mtype, name)
        m = self._by_key.get(key)
        if m is None:
            m = Metric(name, mtype)
            self._by_key[key] = m
        self.by_name[name] = m
        self._next += 1
        mid = (self._next << 2) | int(mtype)
        self._by_id[mid] = m
        return mid

    def get(self, mid: int) -> Metric | None:
        return self._by_id.get(mid)

    def snapshot(self) -> dict[str, int | dict[str, object]]:
        return {name: m.snapshot() for name, m in sorted(self.by_name.items())}

    def reset(self) -> None:
        for m in self._by_key.values():
            if m.type == MetricType.COUNTER:
                m.value = 0
            elif m.type == MetricType.HISTOGRAM:
                m.count = m.sum = 0
                m.buckets = [0] * (len(ENVOY_BUCKETS) + 1)
