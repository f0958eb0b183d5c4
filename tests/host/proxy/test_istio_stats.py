"""Istio's stats-plugin metrics on ``/stats/prometheus`` as Istio's proxy exports them.

Istio's Wasm stats plugin (istio/proxy ``extensions/stats``) encodes its labels into
the metric name (``reporter=.=destination;.;...;.;_istio_requests_total``) and
Istio's bootstrap ``stats_tags`` cut them back out, so Prometheus sees
``istio_requests_total{reporter="destination",...}``. A WAT plugin defines such
metrics through the real ABI (``proxy_define_metric``), traffic goes through the real
proxy, and the exposition text is asserted exactly. Plain ``/stats`` keeps the flat
names, as Envoy's does.
"""

from __future__ import annotations

import pytest

from host.proxy.istio_stats import split_istio_name
from tests.fixtures.wat_modules import compile_wat

from .conftest import make_config, wasm_plugin

REQUESTS = (
    "reporter=.=destination;.;source_workload=.=productpage-v1;.;"
    "response_code=.=200;.;_istio_requests_total"
)
DURATION = "reporter=.=destination;.;response_code=.=200;.;_istio_request_duration_milliseconds"
BUILD = "component.proxy.tag.1.20.0;._istio_build"


def _wat_string(s: str) -> str:
    return "".join(f"\\{b:02x}" for b in s.encode())


# On each request: istio_requests_total += 1, the duration histogram records 7 and
# 30 (ms), istio_build is set to 1 at configure time.
ISTIO_WAT = f"""
(module
  (import "env" "proxy_define_metric" (func $def (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $inc (param i32 i64) (result i32)))
  (import "env" "proxy_record_metric" (func $rec (param i32 i64) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "{_wat_string(REQUESTS)}")
  (data (i32.const 2048) "{_wat_string(DURATION)}")
  (data (i32.const 3072) "{_wat_string(BUILD)}")
  (global $heap (mut i32) (i32.const 65536))
  (global $requests (mut i32) (i32.const 0))
  (global $duration (mut i32) (i32.const 0))
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $def (i32.const 0) (i32.const 1024) (i32.const {len(REQUESTS)}) (i32.const 256)))
    (global.set $requests (i32.load (i32.const 256)))
    (drop (call $def (i32.const 2) (i32.const 2048) (i32.const {len(DURATION)}) (i32.const 256)))
    (global.set $duration (i32.load (i32.const 256)))
    (drop (call $def (i32.const 1) (i32.const 3072) (i32.const {len(BUILD)}) (i32.const 256)))
    (drop (call $rec (i32.load (i32.const 256)) (i64.const 1)))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $inc (global.get $requests) (i64.const 1)))
    (drop (call $rec (global.get $duration) (i64.const 7)))
    (drop (call $rec (global.get $duration) (i64.const 30)))
    (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32)))
"""


@pytest.fixture
def istio_proxy(start_proxy, wasm_file):
    path = wasm_file(compile_wat(ISTIO_WAT, "istio_stats"), "istio_stats")
    h = start_proxy(make_config(wasm_plugin("stats", path)))
    with h.client() as c:
        for _ in range(3):
            assert c.get("/productpage").status_code == 200
    return h


def _duration_lines(labels: str, count: int) -> list[str]:
    # 7 ms falls in le=10, 30 ms in le=50 (Envoy's default buckets)
    bounds = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
              60000, 300000, 600000, 1800000, 3600000]  # fmt: skip
    lines = []
    for b in bounds:
        n = 0 if b < 10 else count if b < 50 else 2 * count
        le = f"{b:g}" if b < 1e5 else str(int(b))
        lines.append(f'istio_request_duration_milliseconds_bucket{{{labels},le="{le}"}} {n}')
    lines.append(f'istio_request_duration_milliseconds_bucket{{{labels},le="+Inf"}} {2 * count}')
    lines.append(f"istio_request_duration_milliseconds_sum{{{labels}}} {37 * count}")
    lines.append(f"istio_request_duration_milliseconds_count{{{labels}}} {2 * count}")
    return lines


def test_istio_metrics_render_as_istio_families_with_labels(istio_proxy):
    r = istio_proxy.admin("GET", "/stats/prometheus", params={"filter": "istio"})
    assert r.status_code == 200
    expected = [
        "# TYPE istio_requests_total counter",
        'istio_requests_total{reporter="destination",source_workload="productpage-v1",'
        'response_code="200"} 3',
        "# TYPE istio_build gauge",
        'istio_build{component="proxy",tag="1.20.0"} 1',
        "# TYPE istio_request_duration_milliseconds histogram",
        *_duration_lines('reporter="destination",response_code="200"', 3),
    ]
    assert r.text == "".join(line + "\n" for line in expected)


def test_plain_stats_keep_the_flat_istio_names(istio_proxy):
    text = istio_proxy.admin("GET", "/stats", params={"filter": "istio"}).text
    lines = text.splitlines()
    assert f"{REQUESTS}: 3" in lines
    assert f"{BUILD}: 1" in lines
    assert any(ln.startswith(f"{DURATION}: P0(") for ln in lines)
    names = {s["name"] for s in istio_proxy.admin("GET", "/stats?format=json").json()["stats"]
             if "name" in s}  # fmt: skip
    assert REQUESTS in names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "reporter=.=source;.;destination_service=.=reviews.default.svc.cluster.local;.;"
            "_istio_requests_total",
            (
                "istio_requests_total",
                (
                    ("reporter", "source"),
                    ("destination_service", "reviews.default.svc.cluster.local"),
                ),
            ),
        ),
        # an empty value is a value (Istio writes "unknown", but "" must survive)
        (
            "reporter=.=;.;_istio_tcp_sent_bytes_total",
            ("istio_tcp_sent_bytes_total", (("reporter", ""),)),
        ),
        # not the encoding, or not exportable faithfully: the caller keeps the flat name
        ("auth_token.denied", None),
        ("reporter=.=a;.;", None),  # no metric name
        ("reporter=.=a;.;reporter=.=b;.;_istio_x", None),  # a tag twice
        ("bad-key=.=a;.;_istio_x", None),  # not a Prometheus label name
        ("reporter;.;_istio_x=.=y", None),
        ("reporter=.=a;.;_", None),
    ],
)
def test_split_istio_name(name, expected):
    assert split_istio_name(name) == expected


def test_names_that_cannot_be_split_faithfully_stay_flat_and_valid():
    from host.proxy.stats import StatsStore, render_prometheus
    from host.wasm.metrics import MetricsRegistry
    from host.wasm.types import MetricType

    s = StatsStore()
    reg = MetricsRegistry()
    s.include_plugin_metrics(reg)
    # "le" would clash with the bucket label: the histogram keeps its flat name
    h = reg.get(reg.define(MetricType.HISTOGRAM, "reporter=.=a;.;le=.=x;.;_istio_d"))
    h.record(3)  # type: ignore[union-attr]
    reg.get(reg.define(MetricType.COUNTER, "_plain_total")).value = 2  # type: ignore[union-attr]
    text = render_prometheus(s.snapshot())
    assert "# TYPE reporter___a___le___x____istio_d histogram\n" in text
    assert 'reporter___a___le___x____istio_d_bucket{le="+Inf"} 1\n' in text
    # an untagged plugin metric keeps its leading underscore (only Istio's encoding drops it)
    assert "# TYPE _plain_total counter\n_plain_total 2\n" in text
