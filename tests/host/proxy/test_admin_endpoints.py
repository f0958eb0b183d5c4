"""The admin endpoints people type from Envoy habit (issue 13 §13): ``/clusters``,
``/server_info``, ``/memory``, ``/help``, in Envoy's shapes with Wasmdesk's content.
Real proxy, real sockets."""

from __future__ import annotations

import re

import pytest

from host import __version__
from host.proxy.admin import ROUTES

from .conftest import free_port, make_config, plugin, wasm_plugin


@pytest.fixture
def proxy(start_proxy, upstream, probe):
    dead = free_port()
    shared = probe()
    h = start_proxy(
        make_config(
            wasm_plugin("add", shared, root_id="one", vm_id="shared"),
            wasm_plugin("add2", shared, root_id="two", vm_id="shared"),
            wasm_plugin("counter", plugin("path_counter"), root_id="path_counter"),
            clusters={
                "backend": upstream.url,
                "dead": f"http://127.0.0.1:{dead}",
                "authz": "https://auth.example:8443",  # callouts only
            },
            default_cluster="backend",
        )
    )
    h.dead_port = dead
    h.backend_port = int(upstream.url.rsplit(":", 1)[1])
    return h


def test_clusters_text_is_envoys_line_format(proxy):
    r = proxy.admin("GET", "/clusters")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    lines = r.text.splitlines()
    b = f"backend::127.0.0.1:{proxy.backend_port}"
    for line in (
        "backend::observability_name::backend",
        "backend::added_via_api::false",
        f"{b}::rq_error::0",
        f"{b}::health_flags::healthy",
        f"{b}::weight::1",
        f"{b}::hostname::127.0.0.1",
        "authz::auth.example:8443::health_flags::healthy",
    ):
        assert line in lines, line
    # every line is name::...::value with the cluster first
    assert all(re.fullmatch(r"(backend|dead|authz)::.+::.*", ln) for ln in lines), lines
    # errors per host come from the proxy's own counter
    proxy.apply(make_config(clusters={"dead": f"http://127.0.0.1:{proxy.dead_port}"}))
    with proxy.client() as c:
        assert c.get("/x").status_code == 503
    assert (
        f"dead::127.0.0.1:{proxy.dead_port}::rq_error::1"
        in proxy.admin("GET", "/clusters").text.splitlines()
    )


def test_clusters_json_is_envoys_cluster_statuses(proxy):
    doc = proxy.admin("GET", "/clusters", params={"format": "json"}).json()
    by = {c["name"]: c for c in doc["cluster_statuses"]}
    assert set(by) == {"backend", "dead", "authz"}
    (host,) = by["backend"]["host_statuses"]
    assert host["address"] == {
        "socket_address": {"address": "127.0.0.1", "port_value": proxy.backend_port}
    }
    assert host["health_status"] == {"eds_health_status": "HEALTHY"}
    assert {"name": "rq_error", "value": "0"} in host["stats"]
    assert by["authz"]["host_statuses"][0]["address"]["socket_address"]["port_value"] == 8443


def test_server_info(proxy):
    r = proxy.admin("GET", "/server_info")
    assert r.status_code == 200
    info = r.json()
    assert info["state"] == "LIVE"
    assert info["version"].startswith(f"wasmdesk/{__version__}/python-")
    assert re.fullmatch(r"\d+s", info["uptime_current_epoch"])
    assert info["uptime_all_epochs"] == info["uptime_current_epoch"]
    assert info["command_line_options"]["config_path"] == "<test>"
    assert info["command_line_options"]["log_level"] == "info"
    assert info["node"]["user_agent_name"] == "wasmdesk"
    # which data path serves: the mypyc build when it matches the sources, else why not
    from host import _native

    assert info["data_path"] == _native.current()
    assert info["data_path"] == "compiled" or info["data_path"].startswith("pure: ")
    # the C crossing comes with the build, ctypes without it
    assert info["wasm_crossing"] == ("C" if info["data_path"] == "compiled" else "ctypes")
    # a library server (and the app) releases the GIL in guest calls; serve keeps it
    assert info["wasm_calls_keep_gil"] is False


def test_memory_shows_rss_and_each_vms_linear_memory(proxy):
    r = proxy.admin("GET", "/memory")
    assert r.status_code == 200
    mem = r.json()
    for key in ("allocated", "heap_size", "pageheap_unmapped", "pageheap_free",
                "total_thread_cache", "total_physical_bytes"):  # fmt: skip
        assert isinstance(mem[key], str) and mem[key].isdigit(), key  # uint64 as in Envoy
    assert int(mem["total_physical_bytes"]) > 10 << 20  # a Python process with wasmtime
    assert int(mem["peak_physical_bytes"]) >= int(mem["total_physical_bytes"]) // 2
    vms = mem["wasm"]["vms"]
    # add and add2 share one VM (same vm_id and module, as Envoy): one entry, both plugins
    assert sorted(sorted(v["plugins"]) for v in vms) == [["add", "add2"], ["counter"]]
    plugins = {p["name"]: p for p in proxy.admin("GET", "/plugins").json()["plugins"]}
    for v in vms:
        assert v["linear_memory_bytes"] == plugins[v["plugins"][0]]["vm_memory_bytes"] >= 65536
    assert int(mem["wasm"]["linear_memory_bytes"]) == sum(v["linear_memory_bytes"] for v in vms)


def test_help_lists_every_endpoint_as_envoy_does(proxy):
    r = proxy.admin("GET", "/help")
    assert r.status_code == 200
    lines = r.text.splitlines()
    assert lines[0] == "admin commands are:"
    assert "  /quitquitquit (POST): exit the server" in lines
    assert "  /reset_counters (POST): reset all counters to zero" in lines
    assert any(ln.startswith("  /stats: ") for ln in lines)
    listed = {ln.split(":")[0].strip().removesuffix(" (POST)") for ln in lines[1:]}
    assert listed == {r.label for r in ROUTES if r.label}
    assert {"/clusters", "/server_info", "/memory", "/help"} <= listed
    # the index keeps working and names the new endpoints too
    index = proxy.admin("GET", "/").text
    for ep in ("/clusters", "/server_info", "/memory", "/help"):
        assert ep in index
