"""Integration: plugins built from source with the AssemblyScript SDK
(@solo-io/proxy-runtime) through the real host and the offline runner.

Behaviour of each plugin: resources/plugins/README.md.
"""

from __future__ import annotations

import json
import socket

import pytest

from host.resources import demo_plugin
from host.runner import TryRequest, TryResult, run_try
from host.wasm import Engine, HeaderMap, LogLevel, PluginHost, VmConfig


@pytest.fixture(scope="module")
def engine():
    e = Engine(cache_dir=False)
    yield e
    e.close()


def run(name: str, engine: Engine, **kw: object) -> TryResult:
    kw.setdefault("root_id", name)
    if isinstance(kw.get("configuration"), dict):
        kw["configuration"] = json.dumps(kw["configuration"]).encode()
    return run_try(demo_plugin(name).read_bytes(), TryRequest(**kw), engine=engine)  # type: ignore[arg-type]


def header(pairs: list[tuple[bytes, bytes]], name: str) -> str | None:
    for k, v in pairs:
        if k == name.encode():
            return v.decode()
    return None


def messages(r: TryResult, level: str | None = None) -> list[str]:
    return [str(rec["message"]) for rec in r.logs if level is None or rec["level"] == level]


# -- header mutation ----------------------------------------------------------------------


def test_add_header_adds_request_and_response_headers_with_defaults(engine):
    r = run("add_header", engine, path="/demo")
    assert r.ok, r.failure
    assert r.abi == "0.2.0"
    assert r.sdk.startswith("AssemblyScript")
    assert header(r.request_headers, "x-wasmdesk") == "hello"
    assert header(r.response_headers, "x-wasmdesk-plugin") == "add_header"
    assert r.request_forwarded
    assert "add_header: added x-wasmdesk to /demo" in messages(r, "info")


def test_add_header_uses_its_json_configuration(engine):
    r = run(
        "add_header", engine,
        configuration={"request_header": {"name": "x-team", "value": "blue"},
                       "response_header": {"name": "x-served-by", "value": "wasmdesk"}},
    )
    assert r.ok
    assert header(r.request_headers, "x-team") == "blue"
    assert header(r.request_headers, "x-wasmdesk") is None
    assert header(r.response_headers, "x-served-by") == "wasmdesk"


def test_typical_plugin_reads_headers_adds_one_and_logs(engine):
    r = run("typical", engine, path="/t", headers=[("user-agent", "ua/1")])
    assert r.ok
    assert header(r.request_headers, "x-typical") == "1"
    assert header(r.response_headers, "x-typical-response") == "1"
    assert "typical /t ua/1" in messages(r)


# -- local reply 403 -------------------------------------------------------------------------


def test_auth_token_rejects_request_without_token_with_local_403(engine):
    r = run("auth_token", engine, path="/private")
    assert r.ok
    assert not r.request_forwarded
    assert r.local_response is not None
    assert r.local_response["status"] == 403
    assert r.local_response["body"] == "forbidden: missing or invalid token\n"
    assert r.response_status == 403
    # The local reply travels the response path: its headers are what the client gets.
    assert header(r.response_headers, "x-wasmdesk-denied-by") == "auth_token"
    assert header(r.response_headers, "content-length") == str(len(b"forbidden: missing or invalid token\n"))
    assert r.metrics["auth_token.denied"] == 1
    assert r.metrics["auth_token.allowed"] == 0


def test_auth_token_lets_a_valid_token_through(engine):
    r = run("auth_token", engine, path="/private", headers=[("authorization", "Bearer demo-token")])
    assert r.ok
    assert r.local_response is None
    assert r.request_forwarded
    assert r.response_status == 200
    assert r.metrics["auth_token.allowed"] == 1


def test_auth_token_allow_paths_and_custom_status_from_config(engine):
    cfg = {"token": "s3cret", "deny_status": 401, "allow_paths": ["/health"]}
    ok = run("auth_token", engine, path="/health/live", configuration=cfg)
    assert ok.request_forwarded and ok.local_response is None
    denied = run("auth_token", engine, path="/x", configuration=cfg,
                 headers=[("authorization", "Bearer demo-token")])
    assert denied.local_response is not None and denied.local_response["status"] == 401


# -- body rewrite with buffering --------------------------------------------------------------


def test_body_rewrite_buffers_the_response_and_replaces_text(engine):
    r = run("body_rewrite", engine, response_headers=[("content-type", "text/plain")],
            response_body=b"hello world, hello")
    assert r.ok
    assert r.response_body == b"HELLO world, HELLO"
    assert header(r.response_headers, "content-length") is None  # removed: length changed
    assert "body_rewrite: 2 replacements" in messages(r)


def test_body_rewrite_skips_content_types_it_does_not_handle(engine):
    r = run("body_rewrite", engine, response_headers=[("content-type", "image/png")],
            response_body=b"hello")
    assert r.response_body == b"hello"


def test_body_echo_request_rewrites_the_buffered_request_body(engine):
    r = run("body_echo_request", engine, method="POST", body=b"abc def")
    assert r.ok
    assert r.request_body == b"ABC DEF"


# -- http_call then resume ----------------------------------------------------------------------


def test_callout_resumes_the_request_with_the_callout_answer(engine, upstream):
    r = run("callout", engine, clusters={"auth": upstream.url},
            headers=[("authorization", "Bearer t0k")])
    assert r.ok, r.failure
    assert r.request_forwarded
    assert header(r.request_headers, "x-auth-result") == "user-t0k"
    assert len(r.callouts) == 1
    c = r.callouts[0]
    assert c["cluster"] == "auth" and c["response_status"] == 200
    assert [":path", "/check"] in c["headers"]
    assert upstream.requests[0]["path"] == "/check"
    assert upstream.requests[0]["headers"]["authorization"] == "Bearer t0k"
    # the response callback ran on the root context, after the request callback returned
    names = [cb["name"] for cb in r.callbacks]
    assert names.index("proxy_on_http_call_response") > names.index("proxy_on_request_headers")


def test_callout_denial_becomes_a_local_reply(engine, upstream):
    r = run("callout", engine, clusters={"auth": upstream.url})
    assert r.local_response is not None
    assert r.local_response["status"] == 403
    assert "403" in str(r.local_response["body"])
    assert not r.request_forwarded


def test_callout_to_a_refused_port_reaches_the_plugin_as_a_failed_call(engine):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    r = run("callout", engine, clusters={"auth": f"http://127.0.0.1:{port}"})
    assert r.callouts[0]["failure"] == "connect_failure"
    assert r.local_response is not None and r.local_response["status"] == 503


def test_callout_timeout_reaches_the_plugin_as_a_failed_call(engine, upstream):
    r = run("callout", engine, clusters={"auth": upstream.url},
            configuration={"path": "/slow?ms=800", "timeout_ms": 100})
    assert r.callouts[0]["failure"] == "timeout"
    assert r.local_response is not None and r.local_response["status"] == 503


def test_callout_to_an_unknown_cluster_gets_bad_argument_and_plugin_decides(engine):
    r = run("callout", engine, clusters={})
    # proxy_http_call answered BAD_ARGUMENT synchronously (Envoy: unknown cluster)
    assert r.callouts == []
    assert any("unknown cluster" in m for m in messages(r))


# -- metrics ------------------------------------------------------------------------------------


def test_path_counter_counts_per_path_and_records_body_sizes(engine):
    r = run("path_counter", engine, method="POST", path="/a/b?x=1", body=b"12345")
    assert r.ok
    assert r.metrics["path_counter.total"] == 1
    assert r.metrics["path_counter.requests._a_b"] == 1
    hist = r.metrics["path_counter.request_bytes"]
    assert isinstance(hist, dict) and hist["count"] == 1 and hist["sum"] == 5


def test_metrics_accumulate_across_requests_on_one_vm(engine):
    host = PluginHost(engine, log_level=LogLevel.WARN)
    vm = host.create_vm(host.compile(demo_plugin("path_counter").read_bytes()), VmConfig())
    root = vm.start_plugin("path_counter", b"")
    for path in ["/x", "/x", "/y"]:
        ctx = vm.new_http_context(root)
        ctx.on_request_headers(HeaderMap([(":path", path), (":method", "GET")]), True)
        ctx.finish()
    snap = host.metrics.snapshot()
    assert snap["path_counter.total"] == 3
    assert snap["path_counter.requests._x"] == 2
    assert snap["path_counter.requests._y"] == 1
    host.close()


# -- shared data and queues ---------------------------------------------------------------------


def test_shared_data_counter_increments_with_cas_across_two_vms(engine):
    host = PluginHost(engine, log_level=LogLevel.WARN)
    module = host.compile(demo_plugin("shared_data").read_bytes())
    vms = [host.create_vm(module, VmConfig(vm_id="shared")) for _ in range(2)]
    roots = [vm.start_plugin("shared_data", b"") for vm in vms]
    seen = []
    for i in range(6):
        vm, root = vms[i % 2], roots[i % 2]
        ctx = vm.new_http_context(root)
        h = HeaderMap([(":path", f"/p{i}"), (":method", "GET")])
        ctx.on_request_headers(h, True)
        seen.append(h.get("x-shared-count"))
        ctx.finish()
    assert seen == [str(n).encode() for n in range(1, 7)]
    value, cas = host.shared_data.get("shared", b"shared_data.counter")
    assert value == b"6" and cas > 0
    host.close()


def test_shared_queue_delivers_on_queue_ready_after_the_callback(engine):
    r = run("shared_data", engine, path="/queued")
    assert r.ok
    assert "queue: /queued" in messages(r)
    assert r.metrics["shared_data.dequeued"] == 1
    names = [cb["name"] for cb in r.callbacks]
    assert names.index("proxy_on_queue_ready") > names.index("proxy_on_request_headers")


# -- tick ----------------------------------------------------------------------------------------


def test_ticker_fires_the_requested_ticks(engine):
    r = run("ticker", engine, configuration={"period_ms": 50}, ticks=3)
    assert r.ok
    assert r.ticks_fired == 3
    assert r.metrics["ticker.ticks"] == 3
    assert ["tick 1", "tick 2", "tick 3"] == [m for m in messages(r) if m.startswith("tick ")]
    assert header(r.request_headers, "x-ticks") == "3"


# -- log levels -----------------------------------------------------------------------------------


def test_log_levels_are_all_delivered_at_trace(engine):
    r = run("log_levels", engine, log_level=LogLevel.TRACE)
    levels = {m: rec["level"] for rec in r.logs for m in [rec["message"]] if str(m).startswith("level ")}
    assert levels == {
        "level trace": "trace", "level debug": "debug", "level info": "info",
        "level warn": "warn", "level error": "error", "level critical": "critical",
    }


def test_log_level_filters_lower_levels(engine):
    r = run("log_levels", engine, log_level=LogLevel.WARN)
    got = [m for m in messages(r) if m.startswith("level ")]
    assert got == ["level warn", "level error", "level critical"]


# -- plugin configuration parsing -------------------------------------------------------------------


def test_config_parse_reads_nested_json_configuration(engine):
    cfg = {"name": "n1", "enabled": False, "limit": 3, "tags": ["a", "b"], "nested": {"key": 'k"q'}}
    r = run("config_parse", engine, configuration=cfg)
    assert r.ok
    got = {k.decode(): v.decode() for k, v in r.request_headers if k.startswith(b"x-config-")}
    assert got == {"x-config-name": "n1", "x-config-enabled": "false", "x-config-limit": "3",
                   "x-config-tags": "a,b", "x-config-nested-key": 'k"q'}


def test_config_parse_rejects_an_invalid_configuration_at_configure(engine):
    r = run("config_parse", engine, configuration={"enabled": 1})
    assert not r.ok
    assert r.failure is not None and r.failure["state"] == "CONFIGURE_FAILED"
    assert any("config_parse:" in m for m in messages(r, "error"))
    assert r.request_headers == []  # no traffic reached a plugin that failed configure


def test_wrong_root_id_makes_the_sdk_exit_and_the_runner_says_why(engine):
    r = run("add_header", engine, root_id="not-registered")
    assert not r.ok
    assert r.failure is not None and r.failure["kind"] == "proc_exit"
    # the SDK's own words are recognised; the hint sits in warnings (try text and --json)
    (w,) = r.warnings
    assert "no context for root id 'not-registered'" in w
    assert "Missing root context factory for root id: not-registered" in w
    assert "pluginName" in w and "--root-id" in w
