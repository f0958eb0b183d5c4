"""The proxy's stats store and its Envoy-compatible renderings.

One writer, many readers. The engine thread (the asyncio loop) is the only writer:
it creates stats and bumps them. Other threads (the GUI's ~10 Hz timer, tests) call
``StatsStore.snapshot()`` and get an immutable ``StatsSnapshot``; the renderers
(``render_text``, ``render_json``, ``render_prometheus``) are pure functions of a
snapshot. The write path takes no lock: a counter increment is one ``+=`` on a slotted
object. A lock guards only stat *creation* and the snapshot's copy of the stat tables;
readers copy values (a histogram's bucket list is copied in one C-level call, and the
snapshot's count is the sum of that copy, so ``+Inf == _count`` always holds; its
``sum`` may lag or lead by the sample being recorded at that instant).

This module must not do I/O, import Qt, or call into wasm. ``reset_counters`` is a
write: call it on the engine thread (the admin API runs there).

Naming rules
------------
* A stat's identity is its Envoy-style dotted name (``http.downstream_rq_total``,
  ``wasm.<plugin name>.vm_reload``, operator reference §1.5). A name belongs to one
  type: asking for ``gauge("x")`` after ``counter("x")`` raises ``ValueError``.
* Labels (Envoy's tags) are optional: ``counter("http.downstream_rq",
  labels={"response_code_class": "2xx"})``. Label keys are sorted; the dotted name is
  the base name plus ``.``-joined label values in that order
  (``http.downstream_rq.2xx``), and that is what ``/stats`` text and JSON show. The
  base name is the Prometheus metric name (Envoy's ``tag_extracted_name``), the labels
  its labels. A dotted name's labels are fixed by its first registration; asking for it
  again with other labels (or none) raises ``ValueError``. Label keys must match
  ``[a-zA-Z_][a-zA-Z0-9_]*``; ``le`` is refused on histograms. Envoy's default
  regex tag extraction is out of scope.
* Plugin-defined metrics (``proxy_define_metric``, ``host.wasm.metrics``) appear under
  an internal custom namespace, ``wasmcustom.<name>`` (Envoy ``stats_handler.h``
  ``CustomStatNamespace``). Snapshot keys and ``filter=`` see the full internal name,
  as Envoy's filter does; ``/stats`` text and JSON show the name with the namespace
  stripped. A store stat of the same internal name wins over a plugin metric.
* Prometheus (``prometheus_stats.cc``): metric name = ``envoy_`` + the base name with
  every character outside ``[a-zA-Z0-9_]`` replaced by ``_``; a custom-namespace stat
  is exported stripped and *without* the ``envoy_`` prefix, and skipped when its
  sanitised name is empty or starts with a digit. Families are grouped and sorted by
  name, counters first, then gauges, then histograms (Envoy's order); a family name
  already used by an earlier type, or a repeated label set within a family (two names
  that sanitise alike), is skipped so the exposition stays valid. Label values are
  escaped (``\\`` ``"`` newline). Unlabelled series are written without ``{}``.
* Istio's stats plugin encodes its labels into the metric name
  (``reporter=.=destination;.;...;.;_istio_requests_total``); Prometheus output
  splits such plugin metrics into ``istio_requests_total{reporter="destination",...}``
  as Istio's proxy does (``host.proxy.istio_stats``). Text and JSON keep the flat name.

Histograms
----------
Envoy's default bucket bounds (``host.wasm.metrics.ENVOY_BUCKETS``, in ms for
latencies) plus an overflow bucket; a value ``v`` lands in the first bucket with
``v <= bound`` (Prometheus ``le``). Values are non-negative (Envoy histograms are
unsigned). Quantiles are estimated by linear interpolation inside the bucket that
holds the rank (the first bucket spans ``[0, 0.5]``; the overflow bucket answers its
lower bound). The text form imitates Envoy's ``P0(i,c) P25(i,c) ... P100(i,c)``
summary (``No recorded values`` when empty). Envoy pairs an *interval* value (since
the last periodic merge) with the *cumulative* one; we do no periodic merges, so the
one interval is the whole life since the last ``reset_counters`` and both slots carry
the same value, exactly as Envoy prints them after its first merge. Quantiles are
rounded to 4 decimals in text and JSON; NaN is ``nan`` in text and ``null`` in JSON.

``filter`` is an RE2 pattern applied with ``search`` (Envoy uses RE2 with partial
match), compiled by ``host.safe_regex``: linear time, so no filter can stall the
engine; a pattern RE2 refuses raises ``PatternError`` (a ``ValueError``). An already
compiled ``re.Pattern`` is used as given (trusted callers only). ``used_only`` keeps the stats
that were ever written: a counter or histogram once non-zero (surviving
``reset_counters``, as Envoy's used flag does), a gauge once set. Plugin metrics carry
no used flag, so they count as used while non-zero.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from types import MappingProxyType
from typing import Any, Final, NamedTuple, TypeVar

from host.proxy.istio_stats import split_istio_name
from host.safe_regex import SafePattern, compile_pattern
from host.wasm.metrics import ENVOY_BUCKETS, MetricsRegistry
from host.wasm.types import MetricType

__all__ = [
    "CUSTOM_NAMESPACE",
    "ENVOY_BUCKETS",
    "SUPPORTED_PERCENTILES",
    "Counter",
    "Gauge",
    "Histogram",
    "HistogramSnapshot",
    "Labels",
    "RateTracker",
    "StatLabels",
    "StatsSnapshot",
    "StatsStore",
    "prometheus_name",
    "render_json",
    "render_prometheus",
    "render_text",
]

CUSTOM_NAMESPACE: Final = "wasmcustom"
# Envoy's supported quantiles, as percentages (histogram_impl.cc).
SUPPORTED_PERCENTILES: Final[tuple[float, ...]] = (
    0.0,
    25.0,
    50.0,
    75.0,
    90.0,
    95.0,
    99.0,
    99.5,
    99.9,
    100.0,
)

Labels = tuple[tuple[str, str], ...]
Filter = str | re.Pattern[str] | SafePattern | None

_BOUNDS: Final = ENVOY_BUCKETS
_FLOAT_BOUNDS: Final[tuple[float, ...]] = tuple(float(b) for b in ENVOY_BUCKETS)
_NBUCKETS: Final = len(ENVOY_BUCKETS) + 1
_LABEL_KEY: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_PROM_INVALID: Final = re.compile(r"[^a-zA-Z0-9_]")


# -- the stats (written by the engine thread only) ------------------------------------------


class Counter:
    """A monotonic count. ``inc()`` or a direct ``value += n`` on the engine thread."""

    __slots__ = ("_was_used", "name", "value")

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0
        self._was_used = False  # non-zero before the last reset

    def inc(self, n: int = 1) -> None:
        self.value += n

    @property
    def used(self) -> bool:
        return self._was_used or self.value != 0

    def _reset(self) -> None:
        if self.value:
            self._was_used = True
        self.value = 0


class Gauge:
    """A value that goes up and down; untouched by ``reset_counters``."""

    __slots__ = ("name", "used", "value")

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0
        self.used = False

    def set(self, v: int) -> None:
        self.value = v
        self.used = True

    def inc(self, n: int = 1) -> None:
        self.value += n
        self.used = True

    def dec(self, n: int = 1) -> None:
        self.value -= n
        self.used = True


class Histogram:
    """Count, sum and Envoy default buckets (``ENVOY_BUCKETS`` + overflow)."""

    __slots__ = ("_was_used", "buckets", "count", "name", "sum")

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.sum: float = 0.0
        self.buckets = [0] * _NBUCKETS
        self._was_used = False

    def record(self, v: float) -> None:
        self.count += 1
        self.sum += v
        self.buckets[_bucket(v)] += 1

    def quantile(self, q: float) -> float:
        return _quantile(_BOUNDS, self.buckets, q)

    @property
    def used(self) -> bool:
        return self._was_used or self.count != 0

    def _reset(self) -> None:
        if self.count:
            self._was_used = True
        # A fresh list, not an in-place clear: a reader copying the old one stays consistent.
        self.buckets = [0] * _NBUCKETS
        self.count = 0
        self.sum = 0.0


def _bucket(v: float) -> int:
    """``bisect_left(_BOUNDS, v)`` on unboxed floats (a NaN lands in bucket 0, as there):
    compiled, a few dozen instructions instead of a library call comparing int to float."""
    lo, hi = 0, len(_FLOAT_BOUNDS)
    while lo < hi:
        mid = (lo + hi) >> 1
        if _FLOAT_BOUNDS[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _quantile(bounds: tuple[float, ...], buckets: Iterable[int], q: float) -> float:
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], not {q}")
    counts = list(buckets)
    total = sum(counts)
    if total == 0:
        return math.nan
    rank = q * total
    cum = 0
    for i, n in enumerate(counts):
        if n == 0:
            continue
        if cum + n >= rank:
            lo = float(bounds[i - 1]) if i > 0 else 0.0
            if i >= len(bounds):  # overflow bucket: no upper bound to interpolate towards
                return lo
            return lo + (float(bounds[i]) - lo) * (rank - cum) / n
        cum += n
    return float(bounds[-1])  # not reached: the last non-empty bucket holds rank <= total


_S = TypeVar("_S", Counter, Gauge, Histogram)


# -- snapshots ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    count: int
    sum: float
    buckets: tuple[int, ...]  # per bucket (not cumulative); the last is the overflow bucket
    p50: float
    p99: float
    bounds: tuple[float, ...] = ENVOY_BUCKETS

    @classmethod
    def of(
        cls, buckets: Iterable[int], total: float, bounds: tuple[float, ...] = ENVOY_BUCKETS
    ) -> HistogramSnapshot:
        b = tuple(buckets)
        return cls(sum(b), total, b, _quantile(bounds, b, 0.5), _quantile(bounds, b, 0.99), bounds)

    def quantile(self, q: float) -> float:
        return _quantile(self.bounds, self.buckets, q)

    def cumulative(self) -> tuple[int, ...]:
        """Cumulative counts per upper bound, as Prometheus ``le`` buckets (without +Inf)."""
        out: list[int] = []
        cum = 0
        for n in self.buckets[: len(self.bounds)]:
            cum += n
            out.append(cum)
        return tuple(out)


class StatLabels(NamedTuple):
    base: str  # Envoy's tag_extracted_name: the Prometheus metric name before sanitising
    labels: Labels


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """The store at one instant. Immutable; keys are full internal names."""

    seq: int  # increases by one per snapshot of a store
    time: float  # the store's clock (time.monotonic by default): for rates
    wall_time: float  # time.time(): for display
    counters: Mapping[str, int] = field(default_factory=_empty)
    gauges: Mapping[str, int] = field(default_factory=_empty)
    histograms: Mapping[str, HistogramSnapshot] = field(default_factory=_empty)
    labels: Mapping[str, StatLabels] = field(default_factory=_empty)  # only labelled stats
    used: frozenset[str] = frozenset()
    custom_namespaces: frozenset[str] = frozenset()

    def display_name(self, name: str) -> str:
        """The name as ``/stats`` shows it: a custom namespace (``wasmcustom.``) stripped."""
        ns, dot, rest = name.partition(".")
        return rest if dot and ns in self.custom_namespaces else name


# -- the store ------------------------------------------------------------------------------


class StatsStore:
    """Get-or-create stats by dotted name; snapshots for other threads.

    Hold on to the returned stat objects on hot paths; the lookup is a dict ``get``.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}
        self._histograms: dict[str, Histogram] = {}
        self._labels: dict[str, StatLabels] = {}
        self._registries: list[tuple[MetricsRegistry, str]] = []
        self._namespaces: frozenset[str] = frozenset()
        self._seq = 0

    def counter(self, name: str, labels: Mapping[str, str] | None = None) -> Counter:
        return self._get(self._counters, Counter, name, labels)

    def gauge(self, name: str, labels: Mapping[str, str] | None = None) -> Gauge:
        return self._get(self._gauges, Gauge, name, labels)

    def histogram(self, name: str, labels: Mapping[str, str] | None = None) -> Histogram:
        if labels and "le" in labels:
            raise ValueError("'le' is reserved for Prometheus histogram buckets")
        return self._get(self._histograms, Histogram, name, labels)

    def _get(
        self, table: dict[str, _S], kind: type[_S], name: str, labels: Mapping[str, str] | None
    ) -> _S:
        if not labels:
            s = table.get(name)
            if s is not None:
                if name in self._labels:
                    raise ValueError(
                        f"stat {name!r} was registered with labels "
                        f"{dict(self._labels[name].labels)}"
                    )
                return s
            return self._create(table, kind, name, None)
        canon: Labels = tuple(sorted(labels.items()))
        full = ".".join((name, *(v for _, v in canon)))
        s = table.get(full)
        if s is not None:
            if self._labels.get(full) != (name, canon):
                raise ValueError(f"stat {full!r} was registered with other labels")
            return s
        return self._create(table, kind, full, StatLabels(name, canon))

    def _create(
        self, table: dict[str, _S], kind: type[_S], full: str, info: StatLabels | None
    ) -> _S:
        if not full:
            raise ValueError("a stat needs a name")
        if info is not None:
            if not info.base:
                raise ValueError("a stat needs a name")
            for k, _ in info.labels:
                if not _LABEL_KEY.fullmatch(k):
                    raise ValueError(f"label name {k!r} must match [a-zA-Z_][a-zA-Z0-9_]*")
        with self._lock:
            s = table.get(full)
            if s is not None:  # only the writer creates, but stay correct if two do
                return s
            for other in (self._counters, self._gauges, self._histograms):
                if other is not table and full in other:
                    raise ValueError(f"stat {full!r} already exists with another type")
            made: _S = kind(full)
            if info is not None:
                self._labels[full] = info
            table[full] = made
            return made

    def include_plugin_metrics(
        self, registry: MetricsRegistry, namespace: str = CUSTOM_NAMESPACE
    ) -> None:
        """Show a plugin metrics registry's metrics as ``<namespace>.<name>``.

        The store reads ``registry.by_name`` at each snapshot (no copy is kept) and
        resets it in ``reset_counters``. Including the same registry again is a no-op.
        """
        if not namespace or "." in namespace:
            raise ValueError(f"namespace must be one dot-free segment, not {namespace!r}")
        with self._lock:
            if any(r is registry for r, _ in self._registries):
                return
            self._registries.append((registry, namespace))
            self._namespaces = self._namespaces | {namespace}

    def remove_plugin_metrics(self, registry: MetricsRegistry) -> None:
        with self._lock:
            self._registries = [(r, ns) for r, ns in self._registries if r is not registry]
            self._namespaces = frozenset(ns for _, ns in self._registries)

    def reset_counters(self) -> None:
        """Envoy ``/reset_counters``: counters and histograms to zero, gauges untouched.
        Plugin-defined counters and histograms too. Engine thread only."""
        with self._lock:
            counters = tuple(self._counters.values())
            histograms = tuple(self._histograms.values())
            registries = tuple(r for r, _ in self._registries)
        for c in counters:
            c._reset()
        for h in histograms:
            h._reset()
        for r in registries:
            r.reset()

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            self._seq += 1
            seq = self._seq
            now, wall = self._clock(), time.time()
            counter_objs = tuple(self._counters.values())
            gauge_objs = tuple(self._gauges.values())
            hist_objs = tuple(self._histograms.values())
            labels = dict(self._labels)
            registries = tuple(self._registries)
            namespaces = self._namespaces
        counters: dict[str, int] = {}
        gauges: dict[str, int] = {}
        histograms: dict[str, HistogramSnapshot] = {}
        used: set[str] = set()
        for c in counter_objs:
            v = c.value
            counters[c.name] = v
            if v or c._was_used:
                used.add(c.name)
        for g in gauge_objs:
            gauges[g.name] = g.value
            if g.used:
                used.add(g.name)
        for h in hist_objs:
            hs = HistogramSnapshot.of(list(h.buckets), h.sum)
            histograms[h.name] = hs
            if hs.count or h._was_used:
                used.add(h.name)
        for registry, ns in registries:
            for mname, m in dict(registry.by_name).items():
                full = f"{ns}.{mname}"
                if full in counters or full in gauges or full in histograms:
                    continue
                if m.type == MetricType.COUNTER:
                    counters[full] = v = m.value
                elif m.type == MetricType.GAUGE:
                    gauges[full] = v = m.value
                else:
                    hs = HistogramSnapshot.of(list(m.buckets), m.sum)
                    histograms[full] = hs
                    v = hs.count
                if v:
                    used.add(full)
        return StatsSnapshot(
            seq=seq,
            time=now,
            wall_time=wall,
            counters=MappingProxyType(counters),
            gauges=MappingProxyType(gauges),
            histograms=MappingProxyType(histograms),
            labels=MappingProxyType(labels),
            used=frozenset(used),
            custom_namespaces=namespaces,
        )


# -- renderers (pure functions of a snapshot) -------------------------------------------------


def _matcher(snap: StatsSnapshot, flt: Filter, used_only: bool) -> Callable[[str], bool]:
    rx: re.Pattern[str] | SafePattern | None = flt if not isinstance(flt, str) else None
    if isinstance(flt, str) and flt:
        rx = compile_pattern(flt)

    def keep(name: str) -> bool:
        if used_only and name not in snap.used:
            return False
        return rx is None or rx.search(name) is not None

    return keep


def _num(x: float) -> str:
    """Shortest form: integral values without ``.0`` (as Envoy's fmt prints doubles)."""
    if isinstance(x, int):
        return str(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x.is_integer() and abs(x) < 2**53:
        return str(int(x))
    return repr(x)


def _q(h: HistogramSnapshot, pct: float) -> float:
    v = h.quantile(pct / 100.0)
    return v if math.isnan(v) else round(v, 4)


def render_text(snap: StatsSnapshot, filter: Filter = None, used_only: bool = False) -> str:
    """Envoy ``/stats``: ``name: value`` lines, counters and gauges sorted together,
    then histograms as ``name: P0(i,c) P25(i,c) ... P100(i,c)``."""
    keep = _matcher(snap, filter, used_only)
    numeric = sorted(
        (snap.display_name(n), n, v)
        for table in (snap.counters, snap.gauges)
        for n, v in table.items()
        if keep(n)
    )
    lines = [f"{d}: {v}" for d, _, v in numeric]
    for d, _, h in sorted(
        (snap.display_name(n), n, h) for n, h in snap.histograms.items() if keep(n)
    ):
        if h.count == 0:
            lines.append(f"{d}: No recorded values")
            continue
        parts = []
        for p in SUPPORTED_PERCENTILES:
            v = _num(_q(h, p))
            parts.append(f"P{p:g}({v},{v})")
        lines.append(f"{d}: " + " ".join(parts))
    return "".join(line + "\n" for line in lines)


def _json_num(x: float) -> float | int | None:
    return None if math.isnan(x) else x


def render_json(
    snap: StatsSnapshot, filter: Filter = None, used_only: bool = False
) -> dict[str, Any]:
    """Envoy ``/stats?format=json``: ``{"stats": [{"name", "value"}..., {"histograms": ...}]}``.
    The histograms element is present only when a histogram is selected."""
    keep = _matcher(snap, filter, used_only)
    numeric = sorted(
        (snap.display_name(n), n, v)
        for table in (snap.counters, snap.gauges)
        for n, v in table.items()
        if keep(n)
    )
    stats: list[dict[str, Any]] = [{"name": d, "value": v} for d, _, v in numeric]
    hists = sorted((snap.display_name(n), n, h) for n, h in snap.histograms.items() if keep(n))
    if hists:
        computed = []
        for d, _, h in hists:
            values = []
            for p in SUPPORTED_PERCENTILES:
                v = _json_num(_q(h, p))
                values.append({"interval": v, "cumulative": v})
            computed.append({"name": d, "values": values})
        stats.append(
            {
                "histograms": {
                    "supported_quantiles": list(SUPPORTED_PERCENTILES),
                    "computed_quantiles": computed,
                }
            }
        )
    return {"stats": stats}


def prometheus_name(base: str, custom_namespaces: Iterable[str] = ()) -> str | None:
    """Envoy's ``PrometheusStatsFormatter::metricName``; ``None``: not exportable."""
    ns, dot, rest = base.partition(".")
    if dot and ns in custom_namespaces:
        name = _PROM_INVALID.sub("_", rest)
        if not name or name[0].isdigit():
            return None
        return name
    return "envoy_" + _PROM_INVALID.sub("_", base)


def _escape_label_value(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label_text(labels: Labels) -> str:
    return ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in labels)


def render_prometheus(snap: StatsSnapshot, filter: Filter = None, used_only: bool = False) -> str:
    """``/stats/prometheus``: text exposition format 0.0.4 (see the module docstring)."""
    keep = _matcher(snap, filter, used_only)
    out: list[str] = []
    families_done: set[str] = set()
    tables: tuple[tuple[str, Mapping[str, Any]], ...] = (
        ("counter", snap.counters),
        ("gauge", snap.gauges),
        ("histogram", snap.histograms),
    )
    for type_name, table in tables:
        groups: dict[str, list[tuple[str, str, Any]]] = {}
        for name, value in table.items():
            if not keep(name):
                continue
            found = _prometheus_series(snap, name, type_name == "histogram")
            if found is None:
                continue
            family, labels = found
            groups.setdefault(family, []).append((_label_text(labels), name, value))
        for family in sorted(groups):
            if family in families_done:  # one family, one type
                continue
            families_done.add(family)
            out.append(f"# TYPE {family} {type_name}")
            seen: set[str] = set()
            for lt, _, value in sorted(groups[family], key=lambda e: (e[0], e[1])):
                if lt in seen:  # two names that sanitise alike: keep the first
                    continue
                seen.add(lt)
                if type_name == "histogram":
                    out.extend(_prom_histogram(family, lt, value))
                else:
                    out.append(f"{family}{{{lt}}} {value}" if lt else f"{family} {value}")
    return "".join(line + "\n" for line in out)


def _prometheus_series(
    snap: StatsSnapshot, name: str, histogram: bool
) -> tuple[str, Labels] | None:
    """Family name and labels of one stat; ``None``: not exportable.

    Store stats use their registered labels. A plugin metric in Istio's tag encoding
    (``reporter=.=destination;.;...;.;_istio_requests_total``) is split as Istio's
    proxy does (``host.proxy.istio_stats``); ``le`` on a histogram keeps it flat."""
    info = snap.labels.get(name)
    if info is not None:
        return _some(prometheus_name(info.base, snap.custom_namespaces), info.labels)
    ns, dot, rest = name.partition(".")
    if dot and ns in snap.custom_namespaces:
        split = split_istio_name(rest)
        if split is not None and not (histogram and any(k == "le" for k, _ in split[1])):
            base, labels = split
            family = _PROM_INVALID.sub("_", base)
            return None if family[0].isdigit() else (family, labels)
    return _some(prometheus_name(name, snap.custom_namespaces), ())


def _some(family: str | None, labels: Labels) -> tuple[str, Labels] | None:
    return None if family is None else (family, labels)


def _prom_histogram(family: str, lt: str, h: HistogramSnapshot) -> list[str]:
    pre = lt + "," if lt else ""
    lines = [
        f'{family}_bucket{{{pre}le="{bound:.32g}"}} {cum}'
        for bound, cum in zip(h.bounds, h.cumulative(), strict=True)
    ]
    lines.append(f'{family}_bucket{{{pre}le="+Inf"}} {h.count}')
    tail = f"{{{lt}}}" if lt else ""
    lines.append(f"{family}_sum{tail} {_num(h.sum)}")
    lines.append(f"{family}_count{tail} {h.count}")
    return lines


# -- rates for the GUI's graphs -----------------------------------------------------------------


@dataclass(slots=True)
class _Series:
    samples: deque[tuple[float, float]]
    offset: float = 0.0  # sum of values lost to counter resets
    last_raw: float | None = None


class RateTracker:
    """Per-second rates of selected counters from successive snapshots.

    Each tracked name keeps a ring of ``(time, value)`` samples, bounded both by count
    (``max_samples``; the default holds 5 minutes at 10 Hz) and by age (``window_s``).
    ``add`` is O(1) per tracked name (amortised: old samples drop off the left). A
    counter going down (``reset_counters``) is taken as a reset, as Prometheus'
    ``rate()`` does: the increase continues from the new value. A histogram name
    tracks its sample count. Not thread-safe: one owner (the GUI thread).
    """

    __slots__ = ("_last_seq", "_last_time", "_series", "max_samples", "window_s")

    def __init__(
        self, names: Iterable[str] = (), window_s: float = 300.0, max_samples: int = 3000
    ) -> None:
        if window_s <= 0 or max_samples < 2:
            raise ValueError("window_s must be > 0 and max_samples >= 2")
        self.window_s = window_s
        self.max_samples = max_samples
        self._series: dict[str, _Series] = {}
        self._last_seq = -1
        self._last_time = -math.inf
        for n in names:
            self.track(n)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._series)

    def track(self, name: str) -> None:
        if name not in self._series:
            self._series[name] = _Series(deque(maxlen=self.max_samples))

    def untrack(self, name: str) -> None:
        self._series.pop(name, None)

    def add(self, snap: StatsSnapshot) -> None:
        """Take one snapshot; a repeated or out-of-order snapshot is ignored."""
        if snap.seq == self._last_seq or snap.time <= self._last_time:
            return
        self._last_seq, self._last_time = snap.seq, snap.time
        t, horizon = snap.time, snap.time - self.window_s
        for name, s in self._series.items():
            raw: float
            if name in snap.counters:
                raw = float(snap.counters[name])
            elif name in snap.histograms:
                raw = float(snap.histograms[name].count)
            else:
                continue
            if s.last_raw is not None and raw < s.last_raw:
                s.offset += s.last_raw
            s.last_raw = raw
            s.samples.append((t, raw + s.offset))
            # keep one sample at or before the horizon so a full-window rate has a base
            while len(s.samples) > 2 and s.samples[1][0] <= horizon:
                s.samples.popleft()

    def rate(self, name: str, over_s: float | None = None) -> float | None:
        """Per-second rate over the last ``over_s`` seconds (default: the whole window),
        from the newest sample and the newest one at least that old (else the oldest).
        ``None`` until two samples exist."""
        s = self._series.get(name)
        if s is None or len(s.samples) < 2:
            return None
        t1, v1 = s.samples[-1]
        # a hair of slack so float clock steps (0.1 s ticks) do not skip the exact sample
        start = t1 - (self.window_s if over_s is None else over_s) + 1e-9
        t0, v0 = s.samples[0]
        for i in range(len(s.samples) - 2, -1, -1):
            ti, vi = s.samples[i]
            if ti <= start:
                t0, v0 = ti, vi
                break
        return (v1 - v0) / (t1 - t0)

    def series(self, name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(times, rates)``: the rate between each sample and the one before it, for
        plotting (times are the later sample's)."""
        s = self._series.get(name)
        if s is None or len(s.samples) < 2:
            return (), ()
        pts = list(s.samples)
        times = tuple(t for t, _ in pts[1:])
        rates = tuple((b[1] - a[1]) / (b[0] - a[0]) for a, b in pairwise(pts))
        return times, rates
