"""The admin API over real sockets (issue §5): every endpoint, methods, errors, stats
in text / JSON / Prometheus, /reset_counters, /ready when a FAIL_CLOSE plugin failed."""

from __future__ import annotations

import re
import socket

import pytest
import yaml

from host.proxy.config import parse_config

from .conftest import make_config, plugin, wasm_plugin


def _cfg(probe=None, **kw):
    plugins = [
        wasm_plugin(
            "auth",
            plugin("auth_token"),
            root_id="auth_token",
            phase="AUTHN",
            mode="log-only",
            config={"token": "t", "allow_paths": []},
        ),
        wasm_plugin("counter", plugin("path_counter"), root_id="path_counter", phase="STATS"),
        wasm_plugin("add", plugin("add_header"), root_id="add_header", priority=10),
    ]
    if probe is not None:
        plugins.append(wasm_plugin("trapper", probe(trap_path="/boom")))
    return make_config(*plugins, **kw)


@pytest.fixture
def proxy(start_proxy, probe):
    h = start_proxy(_cfg(probe))
    with h.client() as c:
        for path in ("/a", "/b", "/a"):
            assert c.get(path).status_code == 200
    return h


def test_ready(start_proxy, probe):
    h = start_proxy(_cfg(probe))
    r = h.admin("GET", "/ready")
    assert r.status_code == 200
    assert r.text == "LIVE\n"
    with h.client() as c:
        assert c.get("/boom").status_code == 503
    r = h.admin("GET", "/ready")
    assert r.status_code == 503
    assert "trapper" in r.text
    # HEAD works like GET, without a body
    r = h.admin("HEAD", "/ready")
    assert r.status_code == 503 and r.content == b""


def test_stats_text(proxy):
    r = proxy.admin("GET", "/stats")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    lines = dict(ln.split(": ", 1) for ln in r.text.splitlines() if ": " in ln and "P0(" not in ln)
    assert lines["http.downstream_rq_total"] == "3"
    assert lines["http.downstream_rq_2xx"] == "3"
    assert lines["wasm.add.invocations"] == "3"
    assert lines["path_counter.total"] == "3"  # a plugin metric, under its own name
    assert lines["path_counter.requests._a"] == "2"
    assert lines["auth_token.denied"] == "3"
    assert lines["wasm.auth.log_only.would_reply_403"] == "3"
    assert "wasm.add.vm_memory_size" in lines
    assert "http.downstream_cx_active" in lines
    hist = [ln for ln in r.text.splitlines() if ln.startswith("http.downstream_rq_time: ")]
    assert hist and "P50(" in hist[0]
    assert any(ln.startswith("wasm.add.callback_time_us: P0(") for ln in r.text.splitlines())
    # filter
    r = proxy.admin("GET", "/stats", params={"filter": "^http\\."})
    assert all(ln.startswith("http.") for ln in r.text.splitlines() if ln)
    assert proxy.admin("GET", "/stats", params={"filter": "("}).status_code == 400


def test_stats_json_shape(proxy):
    r = proxy.admin("GET", "/stats?format=json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    assert set(doc) == {"stats"}
    plain = [s for s in doc["stats"] if "name" in s]
    assert all(set(s) == {"name", "value"} for s in plain)
    names = [s["name"] for s in plain]
    assert names == sorted(names)
    values = {s["name"]: s["value"] for s in plain}
    assert values["http.downstream_rq_total"] == 3
    (hist,) = [s["histograms"] for s in doc["stats"] if "histograms" in s]
    assert hist["supported_quantiles"][0] == 0.0 and hist["supported_quantiles"][-1] == 100.0
    by_name = {q["name"]: q["values"] for q in hist["computed_quantiles"]}
    assert "http.downstream_rq_time" in by_name
    assert "wasm.add.callback_time_us" in by_name
    assert len(by_name["http.downstream_rq_time"]) == len(hist["supported_quantiles"])
    assert set(by_name["http.downstream_rq_time"][0]) == {"interval", "cumulative"}


_PROM_SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
    r'(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*)?\})? (?P<value>-?[0-9.eE+-]+|NaN|[+-]Inf)$'
)


def _parse_prometheus(text: str) -> dict[str, tuple[str, list[tuple[str, float]]]]:
    """A strict reader of the text exposition format: family -> (type, samples)."""
    families: dict[str, tuple[str, list[tuple[str, float]]]] = {}
    current = None
    assert text.endswith("\n")
    for ln in text.splitlines():
        if ln.startswith("# TYPE "):
            _, _, name, typ = ln.split(" ")
            assert typ in ("counter", "gauge", "histogram", "summary", "untyped"), ln
            assert name not in families, f"family {name} declared twice"
            families[name] = (typ, [])
            current = name
            continue
        if ln.startswith("#") or not ln:
            continue
        m = _PROM_SAMPLE.match(ln)
        assert m, f"not a valid sample line: {ln!r}"
        metric = m.group(1)
        assert current is not None
        typ = families[current][0]
        if typ == "histogram":
            assert metric in (f"{current}_bucket", f"{current}_sum", f"{current}_count"), ln
        else:
            assert metric == current, ln
        families[current][1].append((ln, float(m.group("value"))))
    return families


def test_stats_prometheus_parses(proxy):
    r = proxy.admin("GET", "/stats/prometheus")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    fams = _parse_prometheus(r.text)
    assert fams["envoy_http_downstream_rq_total"][0] == "counter"
    assert fams["envoy_http_downstream_rq_total"][1][0][1] == 3
    # plugin metrics: custom namespace, exported without the envoy_ prefix
    assert fams["path_counter_total"][1][0][1] == 3
    typ, samples = fams["envoy_http_downstream_rq_time"]
    assert typ == "histogram"
    buckets = [v for ln, v in samples if "_bucket" in ln]
    assert buckets == sorted(buckets)  # cumulative
    inf = next(v for ln, v in samples if 'le="+Inf"' in ln)
    count = next(v for ln, v in samples if ln.startswith("envoy_http_downstream_rq_time_count"))
    assert inf == count == 3
    # also reachable as /stats?format=prometheus
    r2 = proxy.admin("GET", "/stats?format=prometheus")
    assert r2.status_code == 200
    _parse_prometheus(r2.text)


def test_config_dump(proxy):
    r = proxy.admin("GET", "/config_dump")
    assert r.status_code == 200
    doc = r.json()
    assert doc["listen"] == f"127.0.0.1:{proxy.port}"
    assert doc["admin"].startswith("127.0.0.1:")
    assert doc["default_cluster"] == "wasmdesk-demo-upstream"
    assert [p["name"] for p in doc["plugins"]] == ["auth", "counter", "add", "trapper"]
    assert len(doc["order"]) == 4
    # the YAML form parses back into the same plugins
    y = proxy.admin("GET", "/config_dump", params={"format": "yaml"})
    assert y.status_code == 200
    cfg = parse_config(y.text, "<dump>", "/")
    assert [p.name for p in cfg.plugins] == ["auth", "counter", "add", "trapper"]
    assert cfg.plugins[0].mode == "log-only"
    assert doc["yaml"] == y.text
    list(yaml.safe_load_all(y.text))


def test_plugins_endpoint(proxy):
    r = proxy.admin("GET", "/plugins")
    assert r.status_code == 200
    plugins = {p["name"]: p for p in r.json()["plugins"]}
    assert list(plugins) == ["auth", "counter", "add", "trapper"]
    add = plugins["add"]
    for key in (
        "state",
        "mode",
        "canary_percent",
        "canary_key",
        "fail_strategy",
        "failure",
        "abi",
        "vm_memory_bytes",
        "counters",
        "root_id",
        "phase",
        "priority",
        "sha256",
        "crash_loop",
        "last_error",
    ):
        assert key in add, key
    assert add["state"] == "running"
    assert add["mode"] == "enforce"
    assert add["canary_percent"] == 100.0
    assert add["fail_strategy"] == "FAIL_CLOSE"
    assert add["failure"] is None
    assert add["abi"] == "0.2.0"
    assert add["vm_memory_bytes"] >= 65536
    assert add["counters"]["invocations"] == 3
    assert plugins["trapper"]["abi"] == "0.2.1"
    assert plugins["auth"]["state"] == "log-only"


def test_logging(proxy):
    r = proxy.admin("GET", "/logging")
    assert r.status_code == 200
    assert r.json() == {"plugin_log_level": "info"}
    r = proxy.admin("POST", "/logging?level=debug", json={})
    assert r.status_code == 200
    assert r.json() == {"plugin_log_level": "debug"}
    assert proxy.sync(lambda: proxy.server.host.log_level.name) == "DEBUG"
    assert proxy.admin("POST", "/logging?level=loud", json={}).status_code == 400
    assert proxy.admin("POST", "/logging", json={}).status_code == 400
    # Envoy's bare `POST /logging?level=` now needs the JSON content type too
    r = proxy.admin("POST", "/logging?level=error")
    assert r.status_code == 415
    assert proxy.admin("GET", "/logging").json() == {"plugin_log_level": "debug"}
    r = proxy.admin("POST", "/logging", json={"level": "warn"})
    assert r.json() == {"plugin_log_level": "warn"}


def test_requests_and_logs(proxy):
    r = proxy.admin("GET", "/requests?limit=2")
    assert r.status_code == 200
    reqs = r.json()["requests"]
    assert [q["path"] for q in reqs] == ["/b", "/a"]
    assert [h["plugin"] for h in reqs[-1]["hops"]] == ["auth", "counter", "add", "trapper"]
    assert proxy.admin("GET", "/requests?limit=x").status_code == 400
    logs = proxy.admin("GET", "/logs").json()
    assert any("auth_token: denied /a" in ln["message"] for ln in logs["logs"])
    later = proxy.admin("GET", f"/logs?since={logs['next']}").json()
    assert later["logs"] == []


def test_set_mode(proxy):
    r = proxy.admin(
        "POST",
        "/plugins/add/mode",
        json={"mode": "log-only", "canary-percent": 50, "canary-key": "header:X-User"},
    )
    assert r.status_code == 200, r.text
    snap = r.json()
    assert snap["mode"] == "log-only"
    assert snap["canary_percent"] == 50.0
    assert snap["canary_key"] == "header:x-user"
    with proxy.client() as c:
        doc = c.get("/m", headers={"x-wasmdesk-canary": "always"}).json()
        assert "x-wasmdesk" not in doc["headers"]  # log-only: not applied
    # a form (what a cross-site page can post) is refused and changes nothing
    r = proxy.admin(
        "POST",
        "/plugins/add/mode",
        content=b"mode=enforce&canary-percent=100",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 415
    assert "curl -X POST -H 'content-type: application/json'" in r.text
    assert proxy.slot("add").mode == "log-only"
    # query parameters with a JSON body work, and the change shows in the config dump
    r = proxy.admin("POST", "/plugins/add/mode?mode=enforce", json={"canary-percent": 100})
    assert r.status_code == 200
    with proxy.client() as c:
        assert c.get("/m").json()["headers"]["x-wasmdesk"] == "hello"
    dump = proxy.admin("GET", "/config_dump", params={"format": "yaml"}).text
    assert "wasmdesk.dev/canary-key: header:x-user" in dump
    # errors
    assert proxy.admin("POST", "/plugins/nope/mode", json={"mode": "enforce"}).status_code == 404
    assert proxy.admin("POST", "/plugins/add/mode", json={"mode": "loud"}).status_code == 400
    assert proxy.admin("POST", "/plugins/add/mode", json={"canary-percent": 150}).status_code == 400
    assert (
        proxy.admin("POST", "/plugins/add/mode", json={"canary-key": "cookie"}).status_code == 400
    )
    bad = {"content-type": "application/json"}
    assert proxy.admin("POST", "/plugins/add/mode", content=b"{not", headers=bad).status_code == 400
    assert proxy.admin("POST", "/plugins/add/mode", content=b"[1]", headers=bad).status_code == 400
    assert (
        proxy.admin("POST", "/plugins/add/mode", json={"fail-strategy": "FAIL_OPEN"}).json()[
            "fail_strategy"
        ]
        == "FAIL_OPEN"
    )


def test_reload_endpoint(proxy):
    before = proxy.slot("add").instance
    r = proxy.admin("POST", "/plugins/add/reload", json={})
    assert r.status_code == 200
    assert r.json() == {"reloaded": "add"}
    assert proxy.slot("add").instance is not before
    assert proxy.admin("POST", "/plugins/nope/reload", json={}).status_code == 404
    with proxy.client() as c:
        assert c.get("/r").json()["headers"]["x-wasmdesk"] == "hello"


def test_reset_counters(proxy):
    assert proxy.stats()["http.downstream_rq_total"] == 3
    r = proxy.admin("POST", "/reset_counters", json={})
    assert r.status_code == 200
    st = proxy.stats()
    assert st["http.downstream_rq_total"] == 0
    assert st["http.downstream_rq_2xx"] == 0
    assert st["wasm.add.invocations"] == 0
    assert st["path_counter.total"] == 0  # plugin-defined counters too
    assert st["wasm.auth.log_only.would_reply_403"] == 0
    # gauges are not counters
    assert st["wasm.add.vm_memory_size"] > 0
    text = proxy.admin("GET", "/stats").text
    assert "http.downstream_rq_time: No recorded values" in text
    (snap,) = [p for p in proxy.admin("GET", "/plugins").json()["plugins"] if p["name"] == "add"]
    assert snap["counters"] == {}
    with proxy.client() as c:
        c.get("/again")
    assert proxy.stats()["http.downstream_rq_total"] == 1


@pytest.mark.parametrize(
    "path", ["/plugins/add/mode", "/plugins/add/reload", "/reset_counters", "/quitquitquit"]
)
def test_get_on_post_endpoints_is_405(proxy, path):
    r = proxy.admin("GET", path)
    assert r.status_code == 405
    assert "POST" in r.text


@pytest.mark.parametrize("path", ["/ready", "/stats", "/plugins", "/config_dump"])
def test_post_on_get_endpoints_is_405(proxy, path):
    assert proxy.admin("POST", path).status_code == 405


def test_unknown_endpoint_is_404(proxy):
    assert proxy.admin("GET", "/nope").status_code == 404
    assert proxy.admin("GET", "/plugins/add").status_code == 404


def test_index_lists_the_endpoints(proxy):
    r = proxy.admin("GET", "/")
    assert r.status_code == 200
    for ep in ("/ready", "/stats", "/config_dump", "/plugins", "/reset_counters"):
        assert ep in r.text


def test_admin_keep_alive_and_malformed_request(proxy):
    port = proxy.server.admin_address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rb")
        for _ in range(3):
            s.sendall(b"GET /ready HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n\r\n" % port)
            assert f.readline().startswith(b"HTTP/1.1 200")
            length = 0
            while (ln := f.readline()) != b"\r\n":
                if ln.lower().startswith(b"content-length:"):
                    length = int(ln.split(b":")[1])
            assert f.read(length) == b"LIVE\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"NOT HTTP\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    assert proxy.admin("GET", "/ready").status_code == 200


def test_admin_listens_on_loopback_only(start_proxy):
    from host.proxy.config import ConfigError

    text = "apiVersion: wasmdesk.dev/v1alpha1\nkind: Proxy\nspec:\n  admin: 0.0.0.0:9901\n"
    with pytest.raises(ConfigError, match="loopback"):
        parse_config(text)
    h = start_proxy(make_config())
    assert h.server.admin_address[0] == "127.0.0.1"


def test_stats_cover_status_classes_latency_connections_and_upstream_errors(start_proxy, upstream):
    from .conftest import free_port

    h = start_proxy(
        make_config(
            wasm_plugin(
                "auth",
                plugin("auth_token"),
                root_id="auth_token",
                config={"allow_paths": ["/public", "/status"]},
            ),
            clusters={"backend": upstream.url, "dead": f"http://127.0.0.1:{free_port()}"},
            default_cluster="backend",
        )
    )
    with h.client() as c:
        assert c.get("/public/x").status_code == 200
        assert c.get("/private").status_code == 403
        assert c.get("/status/500").status_code == 500
        st = h.stats()
        assert st["http.downstream_cx_active"] == 1  # this client's connection
    st = h.stats()
    assert st["http.downstream_rq_total"] == 3
    assert st["http.downstream_rq_2xx"] == 1
    assert st["http.downstream_rq_5xx"] == 1
    assert st["http.downstream_rq_4xx"] == 1
    assert h.wait_for(lambda: h.stats()["http.downstream_cx_active"] == 0)
    # upstream errors per cluster
    h.apply(make_config(clusters={"dead": f"http://127.0.0.1:{free_port()}"}))
    with h.client() as c:
        assert c.get("/x").status_code == 503
    assert h.stats()["cluster.dead.upstream_rq_error"] == 1
