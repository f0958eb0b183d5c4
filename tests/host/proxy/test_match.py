"""A WasmPlugin's ``match`` applied to the listener (Istio TrafficSelector semantics):
its bound port and the traffic direction the Proxy document declares. Real proxy, real
sockets on 127.0.0.1, probe plugins built from WAT."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from host.proxy.config import TrafficSelector, parse_config, with_changes
from host.proxy.routes import plugin_match_verdict
from tests.fixtures.wat_modules import make_configure_fails_module
from tests.host.proxy.conftest import ROOT, config_text, wasm_plugin


def with_match(doc: dict[str, Any], *selectors: dict[str, Any]) -> dict[str, Any]:
    doc["spec"]["match"] = list(selectors)
    return doc


def proxy_text(*plugins: dict[str, Any], direction: str | None = None) -> str:
    text = config_text(*plugins)
    if direction is not None:
        text = text.replace(
            "  admin: 127.0.0.1:0\n", f"  admin: 127.0.0.1:0\n  direction: {direction}\n", 1
        )
    return text


def order_seen(h: Any) -> list[str]:
    with h.client() as c:
        r = c.get("/")
    assert r.status_code == 200, r.text
    seen = r.json()["headers"].get("x-order")
    return seen.split(",") if seen else []


@pytest.mark.parametrize(
    ("match", "port", "direction", "applies"),
    [
        ((), 10000, "SERVER", True),
        ((TrafficSelector("CLIENT_AND_SERVER", (9999,)),), 10000, "SERVER", False),
        ((TrafficSelector("CLIENT_AND_SERVER", (9999, 10000)),), 10000, "SERVER", True),
        ((TrafficSelector("CLIENT", ()),), 10000, "SERVER", False),
        ((TrafficSelector("CLIENT", ()),), 10000, "CLIENT", True),
        ((TrafficSelector("SERVER", ()),), 10000, "CLIENT", False),
        ((TrafficSelector("UNDEFINED", ()),), 10000, "CLIENT", True),
        # any selector may hold; each needs all its conditions
        (
            (TrafficSelector("CLIENT", ()), TrafficSelector("SERVER", (10000,))),
            10000,
            "SERVER",
            True,
        ),
        (
            (TrafficSelector("SERVER", (9999,)), TrafficSelector("CLIENT", (10000,))),
            10000,
            "SERVER",
            False,
        ),
    ],
)
def test_match_verdict_follows_istio(match, port, direction, applies):
    assert (plugin_match_verdict(match, port, direction) is None) is applies


def test_match_verdict_says_why():
    why = plugin_match_verdict((TrafficSelector("CLIENT_AND_SERVER", (9999,)),), 10000, "SERVER")
    assert why == "match: ports [9999] vs listener 10000 (SERVER)"


def test_plugin_whose_ports_miss_the_listener_does_not_run(start_proxy, probe):
    miss = with_match(wasm_plugin("miss", probe(), priority=3), {"ports": [{"number": 9999}]})
    plain = wasm_plugin("plain", probe(), priority=2)
    h = start_proxy(proxy_text(miss, plain))
    assert h.port != 9999
    assert order_seen(h) == ["plain"]
    snap = {p["name"]: p for p in h.admin("GET", "/plugins").json()["plugins"]}
    assert snap["miss"]["state"] == "not applied"
    assert snap["miss"]["not_applied"] == f"match: ports [9999] vs listener {h.port} (SERVER)"
    assert snap["plain"]["state"] == "running" and snap["plain"]["not_applied"] is None
    order = h.admin("GET", "/config_dump").json()["order"]
    assert "not applied (match: ports [9999]" in order[0]
    assert "not applied" not in order[1]
    assert h.slot("miss").counters.get("invocations", 0) == 0
    assert "failed" not in snap["miss"]["state"]


def test_plugin_matching_the_bound_port_runs(start_proxy, probe):
    # the listener binds port 0: the real port is only known once it listens, so the
    # matching plugin arrives with a live config change
    h = start_proxy(proxy_text(wasm_plugin("plain", probe(), priority=2)))
    hit = with_match(wasm_plugin("hit", probe(), priority=3), {"ports": [{"number": h.port}]})
    miss = with_match(wasm_plugin("miss", probe(), priority=1), {"ports": [{"number": 9999}]})
    cfg = parse_config(
        proxy_text(hit, wasm_plugin("plain", probe(), priority=2), miss), "<test>", str(ROOT)
    )
    assert h.apply(cfg) == []
    assert order_seen(h) == ["hit", "plain"]


@pytest.mark.parametrize(
    ("direction", "ran"),
    [
        (None, ["server", "both"]),  # default SERVER: an inbound sidecar
        ("SERVER", ["server", "both"]),
        ("CLIENT", ["client", "both"]),
    ],
)
def test_mode_is_matched_against_the_proxy_direction(start_proxy, probe, direction, ran):
    docs = [
        with_match(wasm_plugin("client", probe(), priority=3), {"mode": "CLIENT"}),
        with_match(wasm_plugin("server", probe(), priority=2), {"mode": "SERVER"}),
        with_match(wasm_plugin("both", probe(), priority=1), {"mode": "CLIENT_AND_SERVER"}),
    ]
    h = start_proxy(proxy_text(*docs, direction=direction))
    assert order_seen(h) == ran


def test_changing_the_direction_live_reapplies_match(start_proxy, probe):
    doc = with_match(wasm_plugin("client", probe()), {"mode": "CLIENT"})
    h = start_proxy(proxy_text(doc))
    assert order_seen(h) == []
    cfg = parse_config(proxy_text(doc, direction="CLIENT"), "<test>", str(ROOT))
    assert h.apply(cfg) == []
    assert order_seen(h) == ["client"]


def test_a_failed_plugin_that_does_not_apply_does_not_fail_readiness(start_proxy, probe, wasm_file):
    bad = wasm_file(make_configure_fails_module(), "bad")
    doc = with_match(wasm_plugin("miss", bad, fail="FAIL_CLOSE"), {"ports": [{"number": 9999}]})
    h = start_proxy(proxy_text(doc, wasm_plugin("plain", probe())), strict=False)
    assert h.slot("miss").state == "failed"
    r = h.admin("GET", "/ready")
    assert r.status_code == 200, r.text  # it serves no traffic on this listener
    assert order_seen(h) == ["plain"]


def test_match_changed_in_code_is_exported_and_applied(start_proxy, probe):
    h = start_proxy(proxy_text(wasm_plugin("p", probe())))
    cfg = h.sync(h.server.current_config)
    spec = with_changes(cfg.plugins[0], match=[("CLIENT_AND_SERVER", (9999,))])
    h.apply(dataclasses.replace(cfg, plugins=(spec,)))
    assert order_seen(h) == []
    assert "number: 9999" in h.sync(h.server.config_yaml)


@pytest.mark.parametrize(("direction", "value"), [(None, 1), ("CLIENT", 2)])
def test_listener_direction_attribute_follows_the_proxy_direction(
    start_proxy, probe, direction, value
):
    from host.proxy.chain import ChainRun
    from host.proxy.http1 import ExchangeInfo

    h = start_proxy(proxy_text(wasm_plugin("p", probe()), direction=direction))

    def info() -> int:
        run = ChainRun(h.server.manager, ExchangeInfo(("127.0.0.1", 1), ("127.0.0.1", 2), 1))
        return run._stream_info().listener_direction  # xds.listener_direction (Envoy enum)

    assert h.sync(info) == value
