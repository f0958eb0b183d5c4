"""``/plugins`` carries each plugin's ``warnings``: a pre-0.1.0 module run as 0.1.0, and a
plugin whose SDK found no context for its root id (with the pluginName hint)."""

from __future__ import annotations

from typing import Any

from tests.host.proxy.conftest import ROOT, config_text, wasm_plugin
from tests.host.wasm.test_legacy_abi import LEGACY

CPP_2020 = str(ROOT / "resources/plugins/c/cpp_2020_like.wasm")


def snapshot(h: Any, name: str) -> dict[str, Any]:
    (snap,) = [p for p in h.admin("GET", "/plugins").json()["plugins"] if p["name"] == name]
    return snap


def test_plugins_endpoint_warns_about_a_root_id_without_context_factory(start_proxy):
    h = start_proxy(
        config_text(
            wasm_plugin("good", CPP_2020),  # pluginName unset: root id "", the SDK default
            wasm_plugin("named", CPP_2020, root_id="stats_outbound"),
        )
    )
    with h.client() as c:
        r = c.get("/x")
    assert r.status_code == 200
    assert snapshot(h, "good")["warnings"] == []
    assert snapshot(h, "good")["root_id"] == ""
    (w,) = snapshot(h, "named")["warnings"]
    assert w.startswith("the plugin found no context for root id 'stats_outbound'")
    assert "Istio pluginName" in w


def test_plugins_endpoint_warns_about_a_pre_0_1_0_module(start_proxy, wasm_file):
    h = start_proxy(config_text(wasm_plugin("legacy", wasm_file(LEGACY, "legacy"))))
    with h.client() as c:
        r = c.get("/x")
    assert r.status_code == 200
    snap = snapshot(h, "legacy")
    assert snap["abi"] == "0.1.0" and snap["state"] == "running"
    (w,) = snap["warnings"]
    assert "pre-0.1.0 plugin (Istio 1.4/1.5 era), run as ABI 0.1.0" in w
