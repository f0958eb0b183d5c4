"""The proxy's stats store and its Envoy-compatible renderings (host/proxy/stats.py)."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
import statistics
import sys
import threading
import time
from bisect import bisect_left

import pytest

from host.proxy.stats import (
    ENVOY_BUCKETS,
    SUPPORTED_PERCENTILES,
    HistogramSnapshot,
    RateTracker,
    StatsSnapshot,
    StatsStore,
    prometheus_name,
    render_json,
    render_prometheus,
    render_text,
)
from host.safe_regex import PatternError
from host.wasm.metrics import MetricsRegistry
from host.wasm.types import MetricType


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def bucket_bounds(i: int) -> tuple[float, float]:
    lo = 0.0 if i == 0 else float(ENVOY_BUCKETS[i - 1])
    hi = math.inf if i >= len(ENVOY_BUCKETS) else float(ENVOY_BUCKETS[i])
    return lo, hi


def uniform_1_to_100(store: StatsStore, name: str = "h") -> None:
    h = store.histogram(name)
    for v in range(1, 101):
        for _ in range(10):
            h.record(v)


# -- arithmetic -------------------------------------------------------------------------------


def test_counter_inc_and_direct_increment_add_up():
    c = StatsStore().counter("http.downstream_rq_total")
    c.inc()
    c.inc(4)
    c.value += 5  # the hot path may bump the slot directly
    assert c.value == 10
    assert c.used


def test_counter_is_slotted_so_increments_stay_cheap():
    c = StatsStore().counter("x")
    with pytest.raises(AttributeError):
        c.extra = 1  # type: ignore[attr-defined]


def test_gauge_set_inc_dec():
    g = StatsStore().gauge("http.downstream_cx_active")
    assert not g.used
    g.inc()
    g.inc(3)
    g.dec()
    assert g.value == 3
    g.set(42)
    assert g.value == 42
    g.dec(50)
    assert g.value == -8


def test_histogram_keeps_count_sum_and_le_buckets():
    h = StatsStore().histogram("t")
    for v in (0, 0.5, 0.6, 1, 7, 3_600_000, 4_000_000):
        h.record(v)
    assert h.count == 7
    assert h.sum == pytest.approx(7_600_009.1)
    assert len(h.buckets) == len(ENVOY_BUCKETS) + 1
    assert h.buckets[0] == 2  # 0 and 0.5: a value on a bound belongs to that bound (le)
    assert h.buckets[1] == 2  # 0.6 and 1
    assert h.buckets[3] == 1  # 7 in (5, 10]
    assert h.buckets[len(ENVOY_BUCKETS) - 1] == 1  # 3_600_000, the last bound
    assert h.buckets[-1] == 1  # overflow
    assert sum(h.buckets) == h.count


def test_the_compiled_bucket_search_agrees_with_bisect_on_every_kind_of_value():
    from host.proxy.stats import _bucket

    rng = random.Random(8)
    values = [float(b) for b in ENVOY_BUCKETS]
    values += [b * (1 + d) for b in values for d in (-1e-9, 1e-9)]
    values += [0.0, -0.0, -1.0, 1e-300, math.inf, -math.inf]
    values += [rng.uniform(0, 4e6) for _ in range(500)] + [rng.expovariate(0.01) for _ in range(500)]
    for v in values:
        assert _bucket(v) == bisect_left(ENVOY_BUCKETS, v), v
    assert _bucket(math.nan) == bisect_left(ENVOY_BUCKETS, math.nan) == 0


def test_get_or_create_returns_the_same_object():
    s = StatsStore()
    assert s.counter("a") is s.counter("a")
    assert s.gauge("g") is s.gauge("g")
    assert s.histogram("h") is s.histogram("h")


def test_a_name_belongs_to_one_type():
    s = StatsStore()
    s.counter("wasm.p.vm_reload")
    with pytest.raises(ValueError, match="another type"):
        s.gauge("wasm.p.vm_reload")
    with pytest.raises(ValueError, match="another type"):
        s.histogram("wasm.p.vm_reload")


def test_empty_name_is_refused():
    with pytest.raises(ValueError):
        StatsStore().counter("")


# -- labels -----------------------------------------------------------------------------------


def test_labels_make_a_dotted_name_from_sorted_keys():
    s = StatsStore()
    c = s.counter("http.rq", labels={"zone": "eu", "code_class": "2xx"})
    assert c.name == "http.rq.2xx.eu"
    assert s.counter("http.rq", labels={"code_class": "2xx", "zone": "eu"}) is c
    snap = s.snapshot()
    assert snap.labels["http.rq.2xx.eu"] == ("http.rq", (("code_class", "2xx"), ("zone", "eu")))


def test_a_labelled_name_keeps_its_labels():
    s = StatsStore()
    s.counter("http.rq", labels={"code": "2xx"})
    with pytest.raises(ValueError, match="labels"):
        s.counter("http.rq.2xx")
    with pytest.raises(ValueError, match="other labels"):
        s.counter("http.rq", labels={"class": "2xx"})
    s.counter("a.b")
    with pytest.raises(ValueError, match="other labels"):
        s.counter("a", labels={"x": "b"})


@pytest.mark.parametrize("key", ["", "1abc", "a-b", "a.b", "é"])
def test_label_names_must_be_prometheus_names(key):
    with pytest.raises(ValueError, match="label name"):
        StatsStore().counter("x", labels={key: "v"})


def test_le_label_is_reserved_on_histograms():
    with pytest.raises(ValueError, match="le"):
        StatsStore().histogram("x", labels={"le": "1"})


# -- quantiles --------------------------------------------------------------------------------


def test_quantiles_of_uniform_1_to_100_interpolate_inside_the_bucket():
    s = StatsStore()
    uniform_1_to_100(s)
    h = s.snapshot().histograms["h"]
    # 500 of 1000 samples are <= 50 and 250 are <= 25: the median sits at the top of (25, 50].
    assert 25 < h.p50 <= 50
    assert h.p50 == pytest.approx(50.0)
    assert 50 < h.p99 <= 100
    assert h.p99 == pytest.approx(99.0)
    assert h.quantile(0.0) == 0.5  # lower bound of the first non-empty bucket, (0.5, 1]
    assert h.quantile(1.0) == 100.0
    assert h.quantile(0.75) == pytest.approx(75.0)


def test_quantiles_of_random_samples_land_in_the_true_quantiles_bucket():
    rng = random.Random(7)
    samples = [rng.uniform(1, 100) for _ in range(1000)]
    s = StatsStore()
    h = s.histogram("rq_time")
    for v in samples:
        h.record(v)
    snap = s.snapshot().histograms["rq_time"]
    ordered = sorted(samples)
    for q, est in ((0.5, snap.p50), (0.99, snap.p99)):
        true = ordered[math.ceil(q * len(ordered)) - 1]
        lo, hi = bucket_bounds(bisect_left(ENVOY_BUCKETS, true))
        assert lo <= est <= hi, (q, true, est)
    assert snap.p50 == pytest.approx(statistics.median(samples), abs=25)


def test_quantile_of_an_empty_histogram_is_nan_and_q_is_checked():
    h = StatsStore().histogram("h")
    assert math.isnan(h.quantile(0.5))
    with pytest.raises(ValueError):
        h.quantile(1.5)


def test_overflow_bucket_answers_its_lower_bound():
    h = StatsStore().histogram("h")
    h.record(10**9)
    assert h.quantile(0.5) == ENVOY_BUCKETS[-1]


def test_live_histogram_quantile_matches_its_snapshot():
    s = StatsStore()
    uniform_1_to_100(s)
    assert s.histogram("h").quantile(0.9) == s.snapshot().histograms["h"].quantile(0.9)


# -- snapshots ----------------------------------------------------------------------------------


def test_snapshot_is_immutable():
    s = StatsStore()
    s.counter("c").inc()
    s.histogram("h").record(3)
    snap = s.snapshot()
    with pytest.raises(TypeError):
        snap.counters["c"] = 5  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.seq = 99  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.histograms["h"].count = 0  # type: ignore[misc]
    assert isinstance(snap.histograms["h"].buckets, tuple)


def test_snapshot_is_isolated_from_later_writes():
    clock = FakeClock(5.0)
    s = StatsStore(clock=clock)
    c, g, h = s.counter("c"), s.gauge("g"), s.histogram("h")
    c.inc(2)
    g.set(7)
    h.record(3)
    first = s.snapshot()
    c.inc(100)
    g.set(0)
    h.record(3)
    s.counter("new").inc()
    s.reset_counters()
    clock.t = 6.0
    second = s.snapshot()
    assert first.counters == {"c": 2}
    assert first.gauges == {"g": 7}
    assert first.histograms["h"].count == 1 and first.histograms["h"].sum == 3
    assert first.time == 5.0 and second.time == 6.0
    assert second.seq == first.seq + 1
    assert second.counters == {"c": 0, "new": 0}
    assert second.gauges == {"g": 0}


def test_snapshot_display_name_strips_custom_namespace_only():
    snap = StatsSnapshot(1, 0.0, 0.0, custom_namespaces=frozenset({"wasmcustom"}))
    assert snap.display_name("wasmcustom.my.metric") == "my.metric"
    assert snap.display_name("wasmcustom") == "wasmcustom"
    assert snap.display_name("wasm.p.vm_reload") == "wasm.p.vm_reload"


def test_histogram_snapshot_cumulative_counts():
    hs = HistogramSnapshot.of([1, 2, 0, 3] + [0] * (len(ENVOY_BUCKETS) - 3), 10)
    assert hs.count == 6
    assert hs.cumulative()[:4] == (1, 3, 3, 6)
    assert len(hs.cumulative()) == len(ENVOY_BUCKETS)


# -- reset and used ---------------------------------------------------------------------------


def test_reset_counters_zeroes_counters_and_histograms_but_not_gauges():
    s = StatsStore()
    s.counter("c").inc(9)
    s.gauge("g").set(4)
    uniform_1_to_100(s)
    s.reset_counters()
    snap = s.snapshot()
    assert snap.counters["c"] == 0
    assert snap.gauges["g"] == 4
    h = snap.histograms["h"]
    assert (h.count, h.sum, set(h.buckets)) == (0, 0, {0})
    assert math.isnan(h.p50)
    s.counter("c").inc()
    assert s.snapshot().counters["c"] == 1


def test_used_only_keeps_stats_ever_written():
    s = StatsStore()
    s.counter("never")
    s.counter("written").inc()
    s.counter("reset_after_use").inc()
    s.gauge("gauge_never")
    s.gauge("gauge_set_zero").set(0)
    s.histogram("hist_never")
    s.histogram("hist_used").record(1)
    s.reset_counters()
    s.counter("written").inc()
    snap = s.snapshot()
    assert snap.used == {"written", "reset_after_use", "gauge_set_zero", "hist_used"}
    text = render_text(snap, used_only=True)
    assert [line.split(":")[0] for line in text.splitlines()] == [
        "gauge_set_zero",
        "reset_after_use",
        "written",
        "hist_used",
    ]
    assert "never" in render_text(snap)


# -- filter -------------------------------------------------------------------------------------


def test_filter_is_a_regex_searched_in_the_full_name():
    s = StatsStore()
    s.counter("wasm.auth.vm_reload").inc()
    s.counter("wasm.auth.vm_reload_failure")
    s.counter("wasm.rate.vm_reload")
    s.gauge("wasm.auth.vm_memory_size").set(1)
    s.histogram("http.downstream_rq_time").record(1)
    snap = s.snapshot()
    names = lambda text: [line.split(":")[0] for line in text.splitlines()]  # noqa: E731
    assert names(render_text(snap, filter=r"auth\.vm_reload")) == [
        "wasm.auth.vm_reload",
        "wasm.auth.vm_reload_failure",
    ]
    assert names(render_text(snap, filter=r"vm_reload$")) == [
        "wasm.auth.vm_reload",
        "wasm.rate.vm_reload",
    ]
    assert names(render_text(snap, filter=re.compile("rq_time"))) == ["http.downstream_rq_time"]
    assert names(render_text(snap, filter=r"auth", used_only=True)) == [
        "wasm.auth.vm_memory_size",
        "wasm.auth.vm_reload",
    ]
    assert render_text(snap, filter="") == render_text(snap)
    js = render_json(snap, filter="memory")
    assert js == {"stats": [{"name": "wasm.auth.vm_memory_size", "value": 1}]}
    prom = render_prometheus(snap, filter="rate")
    assert prom == "# TYPE envoy_wasm_rate_vm_reload counter\nenvoy_wasm_rate_vm_reload 0\n"


def test_bad_filter_raises_pattern_error():
    with pytest.raises(PatternError, match="missing"):
        render_text(StatsStore().snapshot(), filter="(")
    # RE2 has no lookaround or backreferences: refused, never run by a backtracking engine
    with pytest.raises(PatternError):
        render_text(StatsStore().snapshot(), filter="(?=a)")


def test_filter_is_linear_time():
    """``^(\\w+\\.?)+!`` makes Python's re backtrack for minutes on a long name; RE2
    answers at once."""
    s = StatsStore()
    s.counter("wasm.authentication_plugin.log_only.would_reply_403_forbidden").inc()
    t0 = time.monotonic()
    assert render_text(s.snapshot(), filter=r"^(\w+\.?)+!") == ""
    assert time.monotonic() - t0 < 0.5


# -- text -------------------------------------------------------------------------------------


def test_text_lists_counters_and_gauges_sorted_then_histograms():
    s = StatsStore()
    s.counter("wasm.envoy.wasm.runtime.wasmtime.created").inc(2)
    s.gauge("wasm.envoy.wasm.runtime.wasmtime.active").set(1)
    s.counter("wasm.auth.vm_reload")
    s.gauge("wasm.auth.vm_memory_size").set(1114112)
    s.counter("http.downstream_rq", labels={"response_code_class": "2xx"}).inc(3)
    s.histogram("a.first_histogram")
    uniform_1_to_100(s, "http.downstream_rq_time")
    assert render_text(s.snapshot()).splitlines() == [
        "http.downstream_rq.2xx: 3",
        "wasm.auth.vm_memory_size: 1114112",
        "wasm.auth.vm_reload: 0",
        "wasm.envoy.wasm.runtime.wasmtime.active: 1",
        "wasm.envoy.wasm.runtime.wasmtime.created: 2",
        "a.first_histogram: No recorded values",
        "http.downstream_rq_time: P0(0.5,0.5) P25(25,25) P50(50,50) P75(75,75) P90(90,90)"
        " P95(95,95) P99(99,99) P99.5(99.5,99.5) P99.9(99.9,99.9) P100(100,100)",
    ]


def test_text_quantiles_are_rounded_and_empty_store_renders_nothing():
    s = StatsStore()
    assert render_text(s.snapshot()) == ""
    h = s.histogram("h")
    for v in (0.5, 2, 2, 2, 2, 2, 2):
        h.record(v)
    line = render_text(s.snapshot())
    assert line.endswith("\n")
    # rank 3.5 of 7: one sample in [0, 0.5], then 2.5 of the 6 in (1, 5] -> 1 + 4 * 2.5 / 6
    assert "P50(2.6667,2.6667)" in line


# -- JSON -------------------------------------------------------------------------------------


def test_json_counters_and_gauges_have_envoys_shape():
    s = StatsStore()
    s.counter("b.counter").inc(2)
    s.gauge("a.gauge").set(3)
    assert render_json(s.snapshot()) == {
        "stats": [{"name": "a.gauge", "value": 3}, {"name": "b.counter", "value": 2}]
    }


def test_json_histograms_follow_the_stats_entries():
    s = StatsStore()
    s.counter("c").inc()
    uniform_1_to_100(s, "rq_time")
    s.histogram("empty")
    out = render_json(s.snapshot())
    json.dumps(out, allow_nan=False)  # NaN is rendered as null
    stats = out["stats"]
    assert stats[0] == {"name": "c", "value": 1}
    hist = stats[-1]["histograms"]
    assert hist["supported_quantiles"] == [
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
    ]
    assert [c["name"] for c in hist["computed_quantiles"]] == ["empty", "rq_time"]
    empty, rq = hist["computed_quantiles"]
    assert empty["values"] == [{"interval": None, "cumulative": None}] * 10
    assert len(rq["values"]) == len(SUPPORTED_PERCENTILES)
    assert rq["values"][2] == {"interval": 50.0, "cumulative": 50.0}
    assert rq["values"][6] == {"interval": 99.0, "cumulative": 99.0}


# -- Prometheus -----------------------------------------------------------------------------------

_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r'(?:\{(?P<labels>(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\})?'
    r" (?P<value>\S+)$"
)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')


def _unescape(v: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v)


def parse_exposition(text: str) -> dict[str, dict]:
    """A strict reader of text format 0.0.4: families with their TYPE and samples."""
    assert text.endswith("\n")
    families: dict[str, dict] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith("#"):
            m = re.fullmatch(r"# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)", line)
            assert m, line
            assert m.group(1) not in families, f"second TYPE line for {m.group(1)}"
            current = m.group(1)
            families[current] = {"type": m.group(2), "samples": []}
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name = m.group("name")
        assert current is not None, "sample before any TYPE line"
        fam = families[current]
        suffixes = ("_bucket", "_sum", "_count") if fam["type"] == "histogram" else ("",)
        assert any(name == current + sfx for sfx in suffixes), (name, current)
        labels = tuple((k, _unescape(v)) for k, v in _LABEL.findall(m.group("labels") or ""))
        value = float(m.group("value"))
        fam["samples"].append((name, labels, value))
    return families


def check_histogram_family(family: str, fam: dict) -> None:
    series: dict[tuple, dict] = {}
    for name, labels, value in fam["samples"]:
        plain = tuple(kv for kv in labels if kv[0] != "le")
        s = series.setdefault(plain, {"buckets": []})
        if name.endswith("_bucket"):
            s["buckets"].append((dict(labels)["le"], value))
        else:
            s[name[len(family) + 1 :]] = value
    for s in series.values():
        les = [le for le, _ in s["buckets"]]
        assert les[-1] == "+Inf"
        assert [float(le) for le in les[:-1]] == [float(b) for b in ENVOY_BUCKETS]
        counts = [v for _, v in s["buckets"]]
        assert counts == sorted(counts), "cumulative bucket counts must not decrease"
        assert counts[-1] == s["count"], "+Inf bucket equals _count"
        assert "sum" in s


def test_prometheus_exposition_is_valid_line_by_line():
    s = StatsStore()
    s.counter("http.downstream_rq_total").inc(7)
    for cls, n in (("2xx", 5), ("5xx", 2)):
        s.counter("http.downstream_rq", labels={"response_code_class": cls}).inc(n)
    s.gauge("wasm.my-plugin.vm_memory_size").set(65536)
    uniform_1_to_100(s, "http.downstream_rq_time")
    lat = s.histogram("wasm.callback_time", labels={"plugin": "auth"})
    for v in (0.2, 3, 3, 70, 10**7):
        lat.record(v)
    s.histogram("wasm.callback_time", labels={"plugin": "idle"})
    families = parse_exposition(render_prometheus(s.snapshot()))
    assert {k: f["type"] for k, f in families.items()} == {
        "envoy_http_downstream_rq": "counter",
        "envoy_http_downstream_rq_total": "counter",
        "envoy_wasm_my_plugin_vm_memory_size": "gauge",
        "envoy_http_downstream_rq_time": "histogram",
        "envoy_wasm_callback_time": "histogram",
    }
    assert families["envoy_http_downstream_rq"]["samples"] == [
        ("envoy_http_downstream_rq", (("response_code_class", "2xx"),), 5.0),
        ("envoy_http_downstream_rq", (("response_code_class", "5xx"),), 2.0),
    ]
    assert families["envoy_wasm_my_plugin_vm_memory_size"]["samples"] == [
        ("envoy_wasm_my_plugin_vm_memory_size", (), 65536.0)
    ]
    for name, fam in families.items():
        if fam["type"] == "histogram":
            check_histogram_family(name, fam)
    cb = [
        smp
        for smp in families["envoy_wasm_callback_time"]["samples"]
        if dict(smp[1]).get("plugin") == "auth"
    ]
    assert cb[-1] == ("envoy_wasm_callback_time_count", (("plugin", "auth"),), 5.0)
    assert cb[-2] == ("envoy_wasm_callback_time_sum", (("plugin", "auth"),), 10000076.2)
    assert ("envoy_wasm_callback_time_bucket", (("plugin", "auth"), ("le", "0.5")), 1.0) in cb
    assert ("envoy_wasm_callback_time_bucket", (("plugin", "auth"), ("le", "5")), 3.0) in cb
    assert ("envoy_wasm_callback_time_bucket", (("plugin", "auth"), ("le", "3600000")), 4.0) in cb
    # type order: counters, then gauges, then histograms (Envoy's)
    types = [f["type"] for f in families.values()]
    assert types == sorted(types, key=["counter", "gauge", "histogram"].index)


def test_prometheus_escapes_label_values():
    s = StatsStore()
    nasty = 'say "hi"\\path\nnext'
    s.counter("x", labels={"v": nasty}).inc()
    text = render_prometheus(s.snapshot())
    assert text.splitlines()[1] == r'envoy_x{v="say \"hi\"\\path\nnext"} 1'
    fam = parse_exposition(text)["envoy_x"]
    assert fam["samples"] == [("envoy_x", (("v", nasty),), 1.0)]


def test_prometheus_names_are_sanitised_with_envoy_prefix():
    assert prometheus_name("wasm.my-plugin.vm_reload") == "envoy_wasm_my_plugin_vm_reload"
    assert prometheus_name("cluster.a:b/c.rq") == "envoy_cluster_a_b_c_rq"
    ns = {"wasmcustom"}
    assert prometheus_name("wasmcustom.my.metric-x", ns) == "my_metric_x"
    assert prometheus_name("wasmcustom.9lives", ns) is None
    assert prometheus_name("wasmcustom.9lives") == "envoy_wasmcustom_9lives"


def test_prometheus_keeps_one_type_and_one_series_per_family():
    s = StatsStore()
    s.counter("a.b").inc(1)
    s.counter("a_b").inc(2)  # sanitises to the same series: the first by name is kept
    s.gauge("a-b").set(3)  # same family as a counter: skipped
    text = render_prometheus(s.snapshot())
    assert text == "# TYPE envoy_a_b counter\nenvoy_a_b 1\n"


def test_prometheus_used_only():
    s = StatsStore()
    s.counter("unused")
    s.histogram("unused_h")
    s.counter("used").inc()
    assert render_prometheus(s.snapshot(), used_only=True) == (
        "# TYPE envoy_used counter\nenvoy_used 1\n"
    )


# -- plugin-defined metrics -------------------------------------------------------------------


def plugin_registry() -> MetricsRegistry:
    reg = MetricsRegistry()
    c = reg.get(reg.define(MetricType.COUNTER, "auth.denied"))
    g = reg.get(reg.define(MetricType.GAUGE, "queue_depth"))
    h = reg.get(reg.define(MetricType.HISTOGRAM, "token_age_ms"))
    assert c and g and h
    c.value += 3
    g.value = 12
    for v in (2, 40, 40):
        h.record(v)
    reg.define(MetricType.COUNTER, "9bad")
    return reg


def test_plugin_metrics_live_under_wasmcustom_and_show_stripped():
    s = StatsStore()
    s.counter("wasm.auth.vm_reload").inc()
    reg = plugin_registry()
    s.include_plugin_metrics(reg)
    snap = s.snapshot()
    assert snap.counters["wasmcustom.auth.denied"] == 3
    assert snap.gauges["wasmcustom.queue_depth"] == 12
    assert snap.histograms["wasmcustom.token_age_ms"].count == 3
    text = render_text(snap)
    assert "wasmcustom" not in text
    assert text.splitlines()[:4] == [
        "9bad: 0",
        "auth.denied: 3",
        "queue_depth: 12",
        "wasm.auth.vm_reload: 1",
    ]
    assert text.splitlines()[4].startswith("token_age_ms: P0(")
    assert {"name": "auth.denied", "value": 3} in render_json(snap)["stats"]
    # filter= sees the full internal name, as Envoy's does
    assert render_text(snap, filter="^wasmcustom\\.auth").splitlines() == ["auth.denied: 3"]
    # a later write to the registry shows in the next snapshot, not this one
    reg.get(reg.define(MetricType.COUNTER, "auth.denied")).value += 1  # type: ignore[union-attr]
    assert snap.counters["wasmcustom.auth.denied"] == 3
    assert s.snapshot().counters["wasmcustom.auth.denied"] == 4


def test_plugin_metrics_in_prometheus_have_no_envoy_prefix():
    s = StatsStore()
    s.include_plugin_metrics(plugin_registry())
    families = parse_exposition(render_prometheus(s.snapshot()))
    assert {k: f["type"] for k, f in families.items()} == {
        "auth_denied": "counter",
        "queue_depth": "gauge",
        "token_age_ms": "histogram",
    }  # "9bad" cannot be a Prometheus name: skipped, as Envoy does
    check_histogram_family("token_age_ms", families["token_age_ms"])
    assert families["token_age_ms"]["samples"][-2:] == [
        ("token_age_ms_sum", (), 82.0),
        ("token_age_ms_count", (), 3.0),
    ]


def test_plugin_metrics_used_only_and_reset():
    s = StatsStore()
    reg = plugin_registry()
    s.include_plugin_metrics(reg)
    s.include_plugin_metrics(reg)  # again: no-op
    assert "9bad" not in render_text(s.snapshot(), used_only=True)
    s.reset_counters()
    snap = s.snapshot()
    assert snap.counters["wasmcustom.auth.denied"] == 0
    assert snap.gauges["wasmcustom.queue_depth"] == 12
    assert snap.histograms["wasmcustom.token_age_ms"].count == 0


def test_store_stat_wins_over_plugin_metric_of_the_same_name_and_removal():
    s = StatsStore()
    s.counter("wasmcustom.auth.denied").inc(100)
    reg = plugin_registry()
    s.include_plugin_metrics(reg)
    assert s.snapshot().counters["wasmcustom.auth.denied"] == 100
    s.remove_plugin_metrics(reg)
    snap = s.snapshot()
    assert "wasmcustom.queue_depth" not in snap.gauges
    assert render_text(snap) == "wasmcustom.auth.denied: 100\n"  # no namespace left to strip


def test_namespace_must_be_one_segment():
    with pytest.raises(ValueError):
        StatsStore().include_plugin_metrics(MetricsRegistry(), namespace="a.b")


# -- threads ------------------------------------------------------------------------------------


def test_snapshots_from_another_thread_while_the_writer_increments():
    s = StatsStore()
    reg = MetricsRegistry()
    s.include_plugin_metrics(reg)
    n = 200_000
    errors: list[BaseException] = []
    done = threading.Event()
    seen: list[int] = []

    def writer() -> None:
        try:
            c, h, g = s.counter("c"), s.histogram("h"), s.gauge("g")
            pm = reg.get(reg.define(MetricType.COUNTER, "pm"))
            assert pm is not None
            for i in range(n):
                c.value += 1
                g.set(i)
                if i % 16 == 0:
                    h.record(i % 1000)
                    pm.value += 1
                if i % 2000 == 0:  # tables grow while readers copy them
                    s.counter(f"dyn.{i}").inc()
                    reg.define(MetricType.GAUGE, f"dyn{i}")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            done.set()

    def reader() -> None:
        try:
            while not done.is_set():
                snap = s.snapshot()
                seen.append(snap.counters.get("c", 0))
                hs = snap.histograms.get("h")
                if hs is not None:
                    assert sum(hs.buckets) == hs.count
                render_prometheus(snap)
                render_text(snap, used_only=True)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # interleave the two threads finely
    try:
        threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        sys.setswitchinterval(old)
    assert errors == []
    assert len(seen) > 1
    assert seen == sorted(seen), "a counter never goes back between snapshots"
    final = s.snapshot()
    assert final.counters["c"] == n
    assert final.histograms["h"].count == n // 16
    assert final.counters["wasmcustom.pm"] == n // 16
    assert final.gauges["g"] == n - 1
    assert len([k for k in final.counters if k.startswith("dyn.")]) == n // 2000


# -- rates ----------------------------------------------------------------------------------------


def test_rate_tracker_computes_per_second_rates():
    clock = FakeClock(0.0)
    s = StatsStore(clock=clock)
    c = s.counter("http.downstream_rq_total")
    tr = RateTracker(["http.downstream_rq_total", "missing"])
    assert tr.rate("http.downstream_rq_total") is None
    for _ in range(50):  # 10 Hz for 5 s, 10 requests per tick: 100/s
        c.inc(10)
        clock.t += 0.1
        tr.add(s.snapshot())
    assert tr.rate("http.downstream_rq_total") == pytest.approx(100.0)
    assert tr.rate("http.downstream_rq_total", over_s=1.0) == pytest.approx(100.0)
    for _ in range(10):  # one quiet second
        clock.t += 0.1
        tr.add(s.snapshot())
    assert tr.rate("http.downstream_rq_total", over_s=1.0) == pytest.approx(0.0)
    assert tr.rate("http.downstream_rq_total", over_s=2.0) == pytest.approx(50.0)
    assert tr.rate("missing") is None
    assert tr.rate("untracked") is None
    times, rates = tr.series("http.downstream_rq_total")
    assert len(times) == len(rates) == 59
    assert rates[0] == pytest.approx(100.0) and rates[-1] == 0.0


def test_rate_tracker_survives_counter_resets():
    clock = FakeClock(0.0)
    s = StatsStore(clock=clock)
    c = s.counter("c")
    tr = RateTracker(["c"])
    for i in range(20):
        c.inc(5)
        if i == 10:
            s.reset_counters()
            c.inc(5)
        clock.t += 1.0
        tr.add(s.snapshot())
    assert tr.rate("c", over_s=5.0) == pytest.approx(5.0)
    assert min(tr.series("c")[1]) >= 0


def test_rate_tracker_memory_is_bounded_by_count_and_age():
    clock = FakeClock(0.0)
    s = StatsStore(clock=clock)
    c = s.counter("c")
    tr = RateTracker(["c"], window_s=300.0, max_samples=3000)
    for _ in range(5000):
        c.inc()
        clock.t += 0.1
        tr.add(s.snapshot())
    assert len(tr.series("c")[0]) == 2999
    slow = RateTracker(["c"], window_s=10.0)
    for _ in range(100):
        c.inc()
        clock.t += 1.0
        slow.add(s.snapshot())
    times = slow.series("c")[0]
    assert times[-1] - times[0] <= 10.0
    assert slow.rate("c") == pytest.approx(1.0)


def test_rate_tracker_ignores_repeated_snapshots_and_tracks_histogram_counts():
    clock = FakeClock(0.0)
    s = StatsStore(clock=clock)
    h = s.histogram("rq_time")
    tr = RateTracker()
    tr.track("rq_time")
    assert tr.names == ("rq_time",)
    for _ in range(3):
        h.record(5)
        h.record(5)
        clock.t += 0.5
        snap = s.snapshot()
        tr.add(snap)
        tr.add(snap)  # the same snapshot twice counts once
    assert len(tr.series("rq_time")[0]) == 2
    assert tr.rate("rq_time") == pytest.approx(4.0)
    tr.untrack("rq_time")
    assert tr.rate("rq_time") is None


def test_rate_tracker_rejects_silly_bounds():
    with pytest.raises(ValueError):
        RateTracker(window_s=0)
    with pytest.raises(ValueError):
        RateTracker(max_samples=1)
