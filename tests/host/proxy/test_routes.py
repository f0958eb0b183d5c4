"""Routes of the Proxy document, clear_route_cache, xds.route_name / xds.cluster_name.

Real proxy, real sockets on 127.0.0.1, two real upstreams that name themselves, and a
plugin written in WAT that reads the route attributes, changes a request header and
(optionally) calls the ``clear_route_cache`` foreign function, as Envoy 1.33+ offers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from host.proxy.config import ConfigError, RouteConfig, dump_config, parse_config
from host.proxy.routes import RouteTable
from host.wasm import HeaderMap
from tests.fixtures.wat_modules import compile_wat
from tests.host.proxy.conftest import ROOT, ProxyHarness, wasm_plugin

# -- two upstreams that say who they are ---------------------------------------------------------


class _Named(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps(
            {
                "upstream": self.server.name,  # type: ignore[attr-defined]
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def upstreams() -> Iterator[dict[str, str]]:
    """Two HTTP upstreams on 127.0.0.1, answering JSON naming themselves: name -> url."""
    servers = []
    urls = {}
    for name in ("a", "b"):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _Named)
        srv.daemon_threads = True
        srv.name = name  # type: ignore[attr-defined]
        threading.Thread(
            target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        servers.append(srv)
        urls[name] = f"http://127.0.0.1:{srv.server_address[1]}"
    yield urls
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def proxy_yaml(
    clusters: dict[str, str],
    routes: list[dict[str, Any]] | None = None,
    default_cluster: str | None = None,
    plugins: tuple[dict[str, Any], ...] = (),
    **extra: Any,
) -> str:
    spec: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "admin": "127.0.0.1:0",
        "clusters": [{"name": n, "url": u} for n, u in clusters.items()],
    }
    if routes is not None:
        spec["routes"] = routes
    if default_cluster is not None:
        spec["defaultCluster"] = default_cluster
    spec.update(extra)
    docs = [{"apiVersion": "wasmdesk.dev/v1alpha1", "kind": "Proxy", "spec": spec}, *plugins]
    return yaml.safe_dump_all(docs, sort_keys=False)


# -- the route plugin (WAT) ----------------------------------------------------------------------

_ROUTER = """\
;; route probe: copies xds.route_name / xds.cluster_name into request headers x-seen-route
;; and x-seen-cluster ("-" when absent); optionally sets x-target: b, and calls the
;; foreign function clear_route_cache putting its status in x-clear-status; on_log logs
;; "route=<xds.route_name> cluster=<xds.cluster_name>".
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $get_prop (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value"
    (func $rep_hdr (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_call_foreign_function"
    (func $foreign (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $set_tick (param i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $set_eff (param i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (memory (export "memory") 4)
  (global $pending (mut i32) (i32.const 0))

  (data (i32.const 1024) "xds\\00route_name")    ;; 14
  (data (i32.const 1040) "xds\\00cluster_name")  ;; 16
  (data (i32.const 1072) "x-seen-route")        ;; 12
  (data (i32.const 1088) "x-seen-cluster")      ;; 14
  (data (i32.const 1104) "x-target")            ;; 8
  (data (i32.const 1120) "b")                   ;; 1
  (data (i32.const 1136) "clear_route_cache")   ;; 17
  (data (i32.const 1160) "route=")              ;; 6
  (data (i32.const 1184) " cluster=")           ;; 9
  (data (i32.const 1200) "-")                   ;; 1
  (data (i32.const 1216) "x-clear-status")      ;; 14
  (data (i32.const 1232) "0123456789")

  (global $heap (mut i32) (i32.const 65536))
  (func (export "malloc") (param $size i32) (result i32)
    (local $p i32)
    (if (i32.gt_u (local.get $size) (i32.const 131072)) (then (return (i32.const 0))))
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (if (i32.gt_u (i32.add (local.get $p) (local.get $size)) (i32.const 196608))
      (then (local.set $p (i32.const 65536))))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (local.get $p))

  (func $prop_to_header (param $path i32) (param $plen i32) (param $hdr i32) (param $hlen i32)
    (if (i32.eqz (call $get_prop (local.get $path) (local.get $plen) (i32.const 256)
                                 (i32.const 260)))
      (then (drop (call $rep_hdr (i32.const 0) (local.get $hdr) (local.get $hlen)
                                 (i32.load (i32.const 256)) (i32.load (i32.const 260)))))
      (else (drop (call $rep_hdr (i32.const 0) (local.get $hdr) (local.get $hlen)
                                 (i32.const 1200) (i32.const 1))))))

  ;; write the property's value (or "-") at $pos; returns the position after it
  (func $put_prop (param $path i32) (param $plen i32) (param $pos i32) (result i32)
    (if (i32.eqz (call $get_prop (local.get $path) (local.get $plen) (i32.const 256)
                                 (i32.const 260)))
      (then
        (memory.copy (local.get $pos) (i32.load (i32.const 256)) (i32.load (i32.const 260)))
        (return (i32.add (local.get $pos) (i32.load (i32.const 260))))))
    (i32.store8 (local.get $pos) (i32.const 45))
    (i32.add (local.get $pos) (i32.const 1)))

  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    @TICK@
    (i32.const 1))

  (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
    (call $prop_to_header (i32.const 1024) (i32.const 14) (i32.const 1072) (i32.const 12))
    (call $prop_to_header (i32.const 1040) (i32.const 16) (i32.const 1088) (i32.const 14))
    @PAUSE@
    @SET_HEADER@
    @CLEAR@
    (i32.const 0))

  ;; paused variant: the next tick acts on the stream (effective context), then resumes it
  (func (export "proxy_on_tick") (param i32)
    (if (global.get $pending)
      (then
        (drop (call $set_eff (global.get $pending)))
        (global.set $pending (i32.const 0))
        @SET_HEADER@
        @CLEAR@
        (drop (call $continue (i32.const 0))))))

  (func (export "proxy_on_log") (param i32)
    (local $pos i32)
    (memory.copy (i32.const 8192) (i32.const 1160) (i32.const 6))
    (local.set $pos (call $put_prop (i32.const 1024) (i32.const 14) (i32.const 8198)))
    (memory.copy (local.get $pos) (i32.const 1184) (i32.const 9))
    (local.set $pos (call $put_prop (i32.const 1040) (i32.const 16)
                                    (i32.add (local.get $pos) (i32.const 9))))
    (drop (call $log (i32.const 2) (i32.const 8192)
                     (i32.sub (local.get $pos) (i32.const 8192)))))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32))
)
"""

_SET = (
    "(drop (call $rep_hdr (i32.const 0) (i32.const 1104) (i32.const 8)"
    " (i32.const 1120) (i32.const 1)))"
)
_CLEAR = (
    "(drop (call $rep_hdr (i32.const 0) (i32.const 1216) (i32.const 14)\n"
    "      (i32.add (i32.const 1232) (call $foreign (i32.const 1136) (i32.const 17)"
    " (i32.const 0) (i32.const 0) (i32.const 256) (i32.const 260))) (i32.const 1)))"
)


def router_wasm(*, set_header: bool = False, clear: bool = False, paused: bool = False) -> bytes:
    """``paused``: on_request_headers pauses; the next tick (20 ms period) sets the header
    and calls clear_route_cache on the stream (proxy_set_effective_context), then resumes
    it, as a plugin does from a callout response."""
    text = _ROUTER.replace("@TICK@", "(drop (call $set_tick (i32.const 20)))" if paused else "")
    pause = "(global.set $pending (local.get $ctx))\n    (return (i32.const 1))"
    text = text.replace("@PAUSE@", pause if paused else "")
    text = text.replace("@SET_HEADER@", _SET if set_header else "")
    text = text.replace("@CLEAR@", _CLEAR if clear else "")
    return compile_wat(text, "router")


@pytest.fixture
def router(wasm_file: Callable[[bytes, str], str]) -> Callable[..., str]:
    counter = [0]

    def make(**kw: Any) -> str:
        counter[0] += 1
        return wasm_file(router_wasm(**kw), f"router{counter[0]}")

    return make


def final_routes(h: ProxyHarness, plugin: str) -> list[str]:
    """What the plugin logged in proxy_on_log, oldest first."""
    return h.sync(
        lambda: [
            r.message
            for _s, r in h.server.logs
            if r.plugin == plugin and r.message.startswith("route=")
        ]
    )


ROUTES = [
    {"name": "api", "match": {"prefix": "/api"}, "cluster": "b"},
    {"name": "exact", "match": {"path": "/exact"}, "cluster": "b"},
    {"name": "host", "match": {"authority": "b.example"}, "cluster": "b"},
    {"name": "hdr", "match": {"headers": {"x-target": "b"}}, "cluster": "b"},
]


# -- routing without plugins ---------------------------------------------------------------------


def test_requests_land_on_the_cluster_their_route_names(start_proxy, upstreams):
    h = start_proxy(proxy_yaml(upstreams, ROUTES, default_cluster="a"))
    with h.client() as c:
        cases = [
            ("/api/users", {}, "b"),
            ("/apix", {}, "b"),  # a prefix, as Envoy's: no segment boundary
            ("/ap", {}, "a"),
            ("/exact?q=1", {}, "b"),  # path: the query does not count
            ("/exact/more", {}, "a"),
            ("/", {"host": "B.Example:8080"}, "b"),  # case-insensitive, any port
            ("/", {"host": "c.example"}, "a"),
            ("/", {"x-target": "b"}, "b"),
            ("/", {"x-target": "bb"}, "a"),
        ]
        for path, headers, want in cases:
            r = c.get(path, headers=headers)
            assert r.status_code == 200, (path, r.text)
            assert r.json()["upstream"] == want, (path, headers)


def test_first_matching_route_wins(start_proxy, upstreams):
    routes = [
        {"name": "narrow", "match": {"prefix": "/api/v2"}, "cluster": "a"},
        {"name": "wide", "match": {"prefix": "/api"}, "cluster": "b"},
    ]
    h = start_proxy(proxy_yaml(upstreams, routes, default_cluster="a"))
    with h.client() as c:
        assert c.get("/api/v2/x").json()["upstream"] == "a"
        assert c.get("/api/v1/x").json()["upstream"] == "b"


def test_all_conditions_of_a_route_must_hold(start_proxy, upstreams):
    routes = [
        {
            "name": "both",
            "match": {"prefix": "/api", "headers": {"x-version": "2"}},
            "cluster": "b",
        }
    ]
    h = start_proxy(proxy_yaml(upstreams, routes, default_cluster="a"))
    with h.client() as c:
        assert c.get("/api", headers={"x-version": "2"}).json()["upstream"] == "b"
        assert c.get("/api").json()["upstream"] == "a"
        assert c.get("/other", headers={"x-version": "2"}).json()["upstream"] == "a"


def test_no_route_and_no_default_cluster_is_404_route_not_found(start_proxy, upstreams, router):
    doc = wasm_plugin("rt", router())
    h = start_proxy(proxy_yaml(upstreams, ROUTES[:1], plugins=(doc,)))
    with h.client() as c:
        assert c.get("/api").json()["upstream"] == "b"
        r = c.get("/nowhere")
    assert r.status_code == 404
    rec = h.wait_for(lambda: [x for x in h.records() if x.path == "/nowhere"], what="record")[0]
    assert rec.response_code_details == "route_not_found"
    assert final_routes(h, "rt")[-1] == "route=- cluster=-"


def test_routes_follow_a_live_config_change(start_proxy, upstreams):
    h = start_proxy(proxy_yaml(upstreams, ROUTES[:1], default_cluster="a"))
    with h.client() as c:
        assert c.get("/api").json()["upstream"] == "b"
        new = parse_config(
            proxy_yaml(
                upstreams, [{"name": "api", "match": {"prefix": "/api"}, "cluster": "a"}], "b"
            ),
            "<test>",
            str(ROOT),
        )
        assert h.apply(new) == []
        assert c.get("/api").json()["upstream"] == "a"
        assert c.get("/else").json()["upstream"] == "b"


# -- what plugins see and do ---------------------------------------------------------------------


def test_plugin_reads_route_and_cluster_names_before_it_runs(start_proxy, upstreams, router):
    doc = wasm_plugin("rt", router())
    h = start_proxy(proxy_yaml(upstreams, ROUTES, default_cluster="a", plugins=(doc,)))
    with h.client() as c:
        api = c.get("/api/x").json()
        other = c.get("/x").json()
    assert api["upstream"] == "b"
    assert api["headers"]["x-seen-route"] == "api"
    assert api["headers"]["x-seen-cluster"] == "b"
    assert other["headers"]["x-seen-route"] == "default"  # the default cluster's route
    assert other["headers"]["x-seen-cluster"] == "a"
    h.wait_for(lambda: len(final_routes(h, "rt")) == 2, what="on_log lines")
    assert final_routes(h, "rt") == ["route=api cluster=b", "route=default cluster=a"]


def test_header_change_with_clear_route_cache_goes_to_the_other_cluster(
    start_proxy, upstreams, router
):
    doc = wasm_plugin("rt", router(set_header=True, clear=True))
    h = start_proxy(proxy_yaml(upstreams, ROUTES, default_cluster="a", plugins=(doc,)))
    with h.client() as c:
        body = c.get("/x").json()
    assert body["upstream"] == "b"
    assert body["headers"]["x-target"] == "b"
    assert body["headers"]["x-clear-status"] == "0"  # OK: the function exists
    # the plugin read the route selected when the headers arrived; on_log the new one
    assert body["headers"]["x-seen-route"] == "default"
    h.wait_for(lambda: final_routes(h, "rt"), what="on_log line")
    assert final_routes(h, "rt") == ["route=hdr cluster=b"]


def test_clear_route_cache_while_paused_reroutes_when_the_stream_resumes(
    start_proxy, upstreams, router
):
    doc = wasm_plugin("rt", router(set_header=True, clear=True, paused=True))
    h = start_proxy(proxy_yaml(upstreams, ROUTES, default_cluster="a", plugins=(doc,)))
    with h.client() as c:
        body = c.get("/x").json()
    assert body["upstream"] == "b"
    assert body["headers"]["x-target"] == "b"
    h.wait_for(lambda: final_routes(h, "rt"), what="on_log line")
    assert final_routes(h, "rt") == ["route=hdr cluster=b"]


def test_header_change_without_clear_route_cache_keeps_the_route(start_proxy, upstreams, router):
    doc = wasm_plugin("rt", router(set_header=True))
    h = start_proxy(proxy_yaml(upstreams, ROUTES, default_cluster="a", plugins=(doc,)))
    with h.client() as c:
        body = c.get("/x").json()
    assert body["headers"]["x-target"] == "b"  # changed, but the route was cached
    assert body["upstream"] == "a"
    h.wait_for(lambda: final_routes(h, "rt"), what="on_log line")
    assert final_routes(h, "rt") == ["route=default cluster=a"]


def test_clear_route_cache_from_a_log_only_plugin_is_counted_not_applied(
    start_proxy, upstreams, router
):
    setter = wasm_plugin("setter", router(set_header=True), priority=10)
    clearer = wasm_plugin("clearer", router(clear=True), mode="log-only", priority=5)
    h = start_proxy(proxy_yaml(upstreams, ROUTES, default_cluster="a", plugins=(setter, clearer)))
    with h.client() as c:
        assert c.get("/x").json()["upstream"] == "a"
    assert h.slot("clearer").counters.get("log_only.would_clear_route_cache") == 1


def test_clear_route_cache_outside_a_stream_is_ok_and_changes_nothing(start_proxy, upstreams):
    from host.wasm import Status

    h = start_proxy(proxy_yaml(upstreams, ROUTES, default_cluster="a"))
    status, out = h.sync(lambda: h.server.host.foreign_functions["clear_route_cache"](b""))
    assert (status, out) == (Status.OK, b"")


# -- the table itself ----------------------------------------------------------------------------


def test_route_table_matches_repeated_headers_joined_as_envoy():
    table = RouteTable([RouteConfig("r", "b", headers=(("x-a", "1,2"),))], "a")
    m = HeaderMap([(b":path", b"/"), (b"x-a", b"1"), (b"x-a", b"2")])
    route = table.select(m)
    assert route is not None and route.name == "r"
    assert table.select(HeaderMap([(b":path", b"/"), (b"x-a", b"1")])).name == "default"
    assert RouteTable([], None).select(m) is None


# -- config: validation and export ---------------------------------------------------------------

_CLUSTERS = {
    "a": "http://127.0.0.1:1",
    "b": "http://127.0.0.1:2",
    "g": "grpc://127.0.0.1:3",
    "t": "tcp://127.0.0.1:4",
}


def _errors(routes: Any, **extra: Any) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(proxy_yaml(_CLUSTERS, routes, **extra), "cfg.yaml")
    return str(e.value)


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        pytest.param(
            {"name": "x", "match": {"prefix": "/"}, "cluster": "nope"},
            "spec.routes[0].cluster: 'nope' is not a cluster in spec.clusters",
            id="unknown_cluster",
        ),
        pytest.param(
            {"name": "x", "match": {}, "cluster": "a"},
            "spec.routes[0].match: empty match",
            id="empty_match",
        ),
        pytest.param(
            {"name": "x", "cluster": "a"},
            "spec.routes[0].match: required field is missing",
            id="no_match",
        ),
        pytest.param(
            {"name": "x", "match": {"safe_regex": "^/a.*"}, "cluster": "a"},
            "spec.routes[0].match.safe_regex: regular expressions are not supported",
            id="regex",
        ),
        pytest.param(
            {"name": "x", "match": {"prefix": "/a", "path": "/a"}, "cluster": "a"},
            "spec.routes[0].match: give prefix or path, not both",
            id="prefix_and_path",
        ),
        pytest.param(
            {"name": "x", "match": {"prefix": "api"}, "cluster": "a"},
            "spec.routes[0].match.prefix: expected a path starting with '/'",
            id="relative_prefix",
        ),
        pytest.param(
            {"name": "x", "match": {"prefix": "/"}, "cluster": "t"},
            "spec.routes[0].cluster: tcp://127.0.0.1:4 is a tcp:// cluster: only a spec.tcp "
            "listener forwards to it, not an HTTP route",
            id="tcp_cluster",
        ),
        pytest.param(
            {"name": "x", "match": {"headers": {"x-a": ["1"]}}, "cluster": "a"},
            "spec.routes[0].match.headers.x-a: expected the header's exact value",
            id="header_list",
        ),
        pytest.param(
            {"name": "x", "match": {"prefix": "/"}, "cluster": "a", "weight": 1},
            "spec.routes[0].weight: unknown field",
            id="unknown_field",
        ),
    ],
)
def test_invalid_routes_are_refused_with_file_and_line(route, expected):
    text = _errors([{"name": "ok", "match": {"prefix": "/ok"}, "cluster": "a"}, route])
    expected = expected.replace("routes[0]", "routes[1]")
    assert expected in text
    line = next(ln for ln in text.splitlines() if expected in ln)
    assert line.startswith("cfg.yaml:")
    assert int(line.split(":")[1]) > 1  # the route's own line, not the document's


def test_unknown_direction_is_refused():
    assert "spec.direction: expected one of CLIENT, SERVER" in _errors(None, direction="INBOUND")


def test_routes_survive_export_unchanged_and_when_made_in_code(tmp_path: Path):
    text = proxy_yaml(_CLUSTERS, ROUTES, default_cluster="a", direction="CLIENT")
    cfg = parse_config(text, "cfg.yaml")
    assert [r.name for r in cfg.routes] == ["api", "exact", "host", "hdr"]
    assert cfg.direction == "CLIENT"
    again = parse_config(dump_config(cfg), "again.yaml")
    assert again.routes == cfg.routes and again.direction == "CLIENT"
    # built in code (no raw document): written out too
    import dataclasses

    made = dataclasses.replace(
        parse_config(proxy_yaml(_CLUSTERS), "x.yaml"), routes=cfg.routes, direction="CLIENT"
    )
    back = parse_config(dump_config(made), "back.yaml")
    assert back.routes == cfg.routes and back.direction == "CLIENT"
    # and dropped again when removed
    gone = parse_config(dump_config(dataclasses.replace(cfg, routes=(), direction="SERVER")), "g")
    assert gone.routes == () and gone.direction == "SERVER"


def test_the_apps_workspace_export_keeps_routes(tmp_path: Path):
    from gui.workspace import Workspace

    cfg = parse_config(proxy_yaml(_CLUSTERS, ROUTES, default_cluster="a"), "cfg.yaml")
    out = tmp_path / "export.yaml"
    Workspace(tmp_path / "ws.yaml").export_to(cfg, out)
    assert parse_config(out.read_text(), str(out)).routes == cfg.routes


def test_config_dump_lists_the_routes_with_the_default_last(start_proxy, upstreams):
    h = start_proxy(proxy_yaml(upstreams, ROUTES[:2], default_cluster="a"))
    dump = h.admin("GET", "/config_dump").json()
    assert dump["routes"] == [
        {"name": "api", "match": "prefix /api", "cluster": "b"},
        {"name": "exact", "match": "path /exact", "cluster": "b"},
        {"name": "default", "match": "any request", "cluster": "a"},
    ]
    assert "routes:" in dump["yaml"]
