"""Failure policies with trapping plugins (issue §4 failStrategy): FAIL_CLOSE, FAIL_OPEN,
FAIL_RELOAD (backoff, fresh instance, crash-loop guard), and plugins whose start-up or
configure fails (strict vs lenient start, live reload)."""

from __future__ import annotations

import time

import pytest

from host.proxy.errors import ErrorKind
from host.proxy.plugins import ReloadPolicy
from host.proxy.server import StartupError
from tests.fixtures.wat_modules import (
    make_configure_fails_module,
    make_start_fails_module,
    make_trap_module,
)

from .conftest import make_config, plugin, wasm_plugin


def _trapper(probe, fail: str | None = None, **kw):
    return wasm_plugin("trapper", probe(trap_path="/boom"), fail=fail, **kw)


# -- FAIL_CLOSE --------------------------------------------------------------------------------


def test_fail_close_answers_503_naming_the_plugin_for_the_trapping_and_later_requests(
    start_proxy, probe, upstream
):
    h = start_proxy(make_config(_trapper(probe), clusters={"backend": upstream.url}))
    with h.client() as c:
        assert c.get("/ok").status_code == 200
        assert h.admin("GET", "/ready").status_code == 200
        r = c.get("/boom")
        assert r.status_code == 503
        assert r.headers["x-wasmdesk-failed-plugin"] == "trapper"
        assert r.text.startswith("wasm plugin trapper failed (FAIL_CLOSE): ")
        assert "unreachable" in r.text
        for _ in range(3):
            r = c.get("/ok")
            assert r.status_code == 503
            assert "wasm plugin trapper failed (FAIL_CLOSE)" in r.text
    assert [q["path"] for q in upstream.requests] == ["/ok"]
    ready = h.admin("GET", "/ready")
    assert ready.status_code == 503
    assert "trapper" in ready.text
    (snap,) = h.admin("GET", "/plugins").json()["plugins"]
    assert snap["state"] == "failed"
    assert snap["failure"]["kind"] == "unreachable"
    assert snap["failure"]["callback"] == "proxy_on_request_headers"
    assert [":path", "/boom"] in snap["failure"]["request"]["headers"]
    st = h.stats()
    assert st["wasm.trapper.traps"] == 1
    assert st["wasm.trapper.fail_closed_rejected"] == 3
    assert st["wasm.trapper.failed"] == 1


def test_fail_close_trap_in_the_response_path(start_proxy, wasm_file):
    trap = wasm_file(make_trap_module("proxy_on_response_headers", "unreachable"), "t")
    h = start_proxy(make_config(wasm_plugin("resp-trap", trap)))
    with h.client() as c:
        r = c.get("/r")
        assert r.status_code == 503
        assert "resp-trap" in r.text
        assert c.get("/r").status_code == 503


def test_fail_close_trap_in_the_request_body(start_proxy, wasm_file, upstream):
    trap = wasm_file(make_trap_module("proxy_on_request_body", "oob"), "t")
    h = start_proxy(make_config(wasm_plugin("body-trap", trap), clusters={"backend": upstream.url}))
    with h.client() as c:
        r = c.post("/b", content=b"some body")
        assert r.status_code == 503
        assert "memory" in r.text.lower() or "out of bounds" in r.text.lower()
        assert c.get("/after").status_code == 503
    assert h.slot("body-trap").failure.callback == "proxy_on_request_body"


def test_endless_loop_is_interrupted_and_fails_closed(start_proxy, wasm_file):
    loop = wasm_file(make_trap_module("proxy_on_request_headers", "loop"), "loop")
    h = start_proxy(make_config(wasm_plugin("spinner", loop)))
    with h.client() as c:
        t0 = time.monotonic()
        r = c.get("/spin")
        assert r.status_code == 503
        assert time.monotonic() - t0 < 2.0  # the 100 ms callback budget stopped it
        assert "spinner" in r.text
        # the proxy itself was never blocked for longer than that
        assert c.get("/again").status_code == 503


def test_trap_with_several_plugins_stops_the_chain_at_the_failed_plugin(
    start_proxy, probe, upstream
):
    cfg = make_config(
        wasm_plugin("first", probe(), phase="AUTHN"),
        _trapper(probe, phase="AUTHZ"),
        wasm_plugin("last", probe()),
        clusters={"backend": upstream.url},
    )
    h = start_proxy(cfg)
    with h.client() as c:
        r = c.get("/boom")
    assert r.status_code == 503
    # the failure reply runs through the response path of the plugin before it
    assert r.headers.get("x-order-resp") == "first"
    assert upstream.requests == []
    hops = {hop.plugin: hop for hop in h.records()[-1].hops}
    assert hops["last"].request_headers_before is None


# -- FAIL_OPEN ---------------------------------------------------------------------------------


def test_fail_open_skips_the_failed_plugin(start_proxy, probe, upstream):
    cfg = make_config(
        _trapper(probe, fail="FAIL_OPEN"),
        wasm_plugin("other", probe()),
        clusters={"backend": upstream.url},
    )
    h = start_proxy(cfg)
    with h.client() as c:
        r = c.get("/ok")
        assert r.json()["headers"]["x-order"] == "trapper,other"
        r = c.get("/boom")  # the trapping request itself goes on without the plugin
        assert r.status_code == 200
        assert r.json()["headers"]["x-order"] == "other"
        for _ in range(3):
            r = c.get("/ok")
            assert r.status_code == 200
            assert r.json()["headers"]["x-order"] == "other"
            assert r.headers["x-order-resp"] == "other"
    assert h.slot("trapper").state == "failed"
    assert h.admin("GET", "/ready").status_code == 200
    st = h.stats()
    assert st["wasm.trapper.traps"] == 1
    assert st["wasm.trapper.fail_open_skipped"] == 3


def test_fail_open_trap_in_the_response_path_keeps_the_upstream_response(start_proxy, wasm_file):
    trap = wasm_file(make_trap_module("proxy_on_response_headers", "div_zero"), "t")
    h = start_proxy(make_config(wasm_plugin("resp-trap", trap, fail="FAIL_OPEN")))
    with h.client() as c:
        r = c.get("/r")
        assert r.status_code == 200
        assert r.json()["path"] == "/r"
        assert c.get("/r").status_code == 200


# -- FAIL_RELOAD -------------------------------------------------------------------------------


def test_fail_reload_gets_a_fresh_instance_after_backoff(start_proxy, probe):
    h = start_proxy(make_config(_trapper(probe, fail="FAIL_RELOAD")))
    h.server.manager.reload_policy = ReloadPolicy(base_s=0.1, max_s=0.2)
    old = h.slot("trapper").instance
    with h.client() as c:
        assert c.get("/ok").status_code == 200
        t0 = time.monotonic()
        r = c.get("/boom")
        assert r.status_code == 503
        assert "FAIL_RELOAD" in r.text
        # while the backoff runs, requests are refused (503 naming the reload)
        r = c.get("/ok")
        if h.slot("trapper").state == "reloading":
            assert r.status_code == 503
            assert "reloading in" in r.text
        h.wait_for(lambda: h.slot("trapper").state == "running", timeout=3, what="reload")
        assert time.monotonic() - t0 >= 0.05 - 0.01  # jittered: base * [0.5, 1]
        r = c.get("/ok")
        assert r.status_code == 200
        assert r.json()["headers"]["x-order"] == "trapper"
    new = h.slot("trapper").instance
    assert new is not old
    assert new.vm is not old.vm
    assert old.closed  # the failed instance was retired
    st = h.stats()
    assert st["wasm.trapper.vm_reload"] == 1
    assert st["wasm.trapper.vm_reload_success"] == 1
    assert st["wasm.trapper.vm_reload_backoff"] == 1
    assert h.admin("GET", "/ready").status_code == 200


def test_fail_reload_crash_loop_guard_stops_reloading(start_proxy, probe):
    h = start_proxy(make_config(_trapper(probe, fail="FAIL_RELOAD")))
    h.server.manager.reload_policy = ReloadPolicy(
        base_s=0.02, max_s=0.05, loop_window_s=60, loop_max_reloads=2
    )
    with h.client() as c:
        for _ in range(2):
            assert c.get("/boom").status_code == 503
            h.wait_for(lambda: h.slot("trapper").state == "running", timeout=3, what="reload")
            assert c.get("/ok").status_code == 200
        assert c.get("/boom").status_code == 503  # third failure inside the window
        slot = h.slot("trapper")
        assert slot.crash_loop is True
        assert slot.state == "failed"
        time.sleep(0.2)  # longer than any backoff: no reload happens
        assert h.slot("trapper").state == "failed"
        r = c.get("/ok")
        assert r.status_code == 503
        assert "crash loop" in r.text
        (snap,) = h.admin("GET", "/plugins").json()["plugins"]
        assert snap["crash_loop"] is True
        assert h.stats()["wasm.trapper.vm_reload_crash_loop"] == 1
        # a reload by hand clears it
        rr = h.admin("POST", "/plugins/trapper/reload", json={})
        assert rr.status_code == 200, rr.text
        assert c.get("/ok").status_code == 200
        assert h.slot("trapper").crash_loop is False


def test_fail_reload_in_flight_failure_does_not_affect_other_requests(start_proxy, probe):
    """Only the trapping request (and those during the backoff) fail: requests before it
    were answered normally, and after the reload the plugin serves again."""
    h = start_proxy(make_config(_trapper(probe, fail="FAIL_RELOAD")))
    h.server.manager.reload_policy = ReloadPolicy(base_s=0.02, max_s=0.05)
    codes = []
    with h.client() as c:
        for i in range(30):
            codes.append(c.get("/boom" if i == 10 else "/ok").status_code)
            if i == 10:
                h.wait_for(lambda: h.slot("trapper").state == "running", timeout=3)
    assert codes[:10] == [200] * 10
    assert codes[10] == 503
    assert codes[11:] == [200] * 19


# -- start-up and configure failures -----------------------------------------------------------


@pytest.mark.parametrize("maker", [make_configure_fails_module, make_start_fails_module])
def test_strict_start_refuses_a_plugin_whose_startup_fails(start_proxy, wasm_file, maker):
    path = wasm_file(maker(), "bad")
    with pytest.raises(StartupError) as ei:
        start_proxy(make_config(wasm_plugin("bad", path)))
    assert "bad" in str(ei.value)


def test_strict_start_refuses_invalid_plugin_configuration(start_proxy):
    cfg = make_config(
        wasm_plugin("cp", plugin("config_parse"), root_id="config_parse", config={"limit": 3})
    )
    with pytest.raises(StartupError) as ei:
        start_proxy(cfg)
    assert "cp" in str(ei.value)
    assert 'missing required field "name"' in str(ei.value)


def test_strict_start_refuses_a_missing_module(start_proxy, tmp_path):
    with pytest.raises(StartupError) as ei:
        start_proxy(make_config(wasm_plugin("gone", str(tmp_path / "nope.wasm"))))
    assert "nope.wasm" in str(ei.value)


@pytest.mark.parametrize("fail", ["FAIL_CLOSE", "FAIL_RELOAD"])
def test_lenient_start_serves_with_the_failed_plugin_failing_closed(start_proxy, wasm_file, fail):
    path = wasm_file(make_configure_fails_module(), "bad")
    h = start_proxy(make_config(wasm_plugin("bad", path, fail=fail)), strict=False)
    with h.client() as c:
        for _ in range(2):
            r = c.get("/x")
            assert r.status_code == 503
            assert r.headers["x-wasmdesk-failed-plugin"] == "bad"
            assert f"wasm plugin bad failed ({fail})" in r.text
            assert "bad config" in r.text or "CONFIGURE_FAILED" in r.text
    (snap,) = h.admin("GET", "/plugins").json()["plugins"]
    assert snap["state"] == "failed"
    assert snap["last_error"]
    assert h.admin("GET", "/ready").status_code == 503
    # the plugin's own complaint made it to the logs
    assert any(r.message == "bad config" for _s, r in h.server.logs)


def test_lenient_start_with_fail_open_skips_the_failed_plugin(start_proxy, wasm_file, probe):
    path = wasm_file(make_start_fails_module(), "bad")
    cfg = make_config(wasm_plugin("bad", path, fail="FAIL_OPEN"), wasm_plugin("good", probe()))
    h = start_proxy(cfg, strict=False)
    with h.client() as c:
        r = c.get("/x")
    assert r.status_code == 200
    assert r.json()["headers"]["x-order"] == "good"
    assert h.admin("GET", "/ready").status_code == 200


def test_a_new_plugin_failing_configure_on_live_reload_is_failed_per_policy(
    start_proxy, wasm_file, probe
):
    good = wasm_plugin("good", probe())
    h = start_proxy(make_config(good))
    path = wasm_file(make_configure_fails_module(), "bad")
    errors = h.apply(make_config(good, wasm_plugin("bad", path)))
    assert [(e.plugin, e.kind) for e in errors] == [("bad", ErrorKind.CONFIGURE)]
    with h.client() as c:
        r = c.get("/x")
        assert r.status_code == 503
        assert r.headers["x-wasmdesk-failed-plugin"] == "bad"
    # only the failStrategy changes: applied in place to the failed plugin
    h.apply(make_config(good, wasm_plugin("bad", path, fail="FAIL_OPEN")))
    assert h.slot("bad").state == "failed"
    with h.client() as c:
        r = c.get("/x")
        assert r.status_code == 200
        assert r.json()["headers"]["x-order"] == "good"


def test_fail_reload_fresh_instance_gets_ticks(start_proxy, probe):
    """The probe pauses every request until its next tick (50 ms); after a FAIL_RELOAD
    reload the fresh instance must tick again."""
    h = start_proxy(
        make_config(
            wasm_plugin(
                "ticking", probe(trap_path="/boom", pause_until_tick_ms=50), fail="FAIL_RELOAD"
            )
        )
    )
    h.server.manager.reload_policy = ReloadPolicy(base_s=0.05, max_s=0.1)
    h.server.manager.pause_timeout_s = 1.5
    with h.client() as c:
        assert c.get("/ok").status_code == 200
        assert c.get("/boom").status_code == 503
        h.wait_for(lambda: h.slot("ticking").state == "running", timeout=3, what="reload")
        r = c.get("/ok")
        assert r.status_code == 200, r.text


def test_admin_reload_of_a_failed_plugin_gets_ticks(start_proxy, probe):
    h = start_proxy(
        make_config(wasm_plugin("ticking", probe(trap_path="/boom", pause_until_tick_ms=50)))
    )
    h.server.manager.pause_timeout_s = 1.5
    with h.client() as c:
        assert c.get("/boom").status_code == 503
        assert h.admin("POST", "/plugins/ticking/reload", json={}).status_code == 200
        r = c.get("/ok")
        assert r.status_code == 200, r.text


def test_trap_in_a_tick_fails_the_plugin_per_policy(start_proxy, probe):
    """A trap outside any request (proxy_on_tick) fails the plugin like a request trap."""
    path = probe(trap_on_tick_ms=50)
    h = start_proxy(
        make_config(
            wasm_plugin("close", path, phase="AUTHN"),
            wasm_plugin("open", path, fail="FAIL_OPEN"),
        )
    )
    h.wait_for(
        lambda: h.slot("close").state == "failed" and h.slot("open").state == "failed",
        timeout=3,
        what="the tick traps",
    )
    assert h.slot("close").failure.callback == "proxy_on_tick"
    with h.client() as c:
        r = c.get("/t")
    assert r.status_code == 503
    assert "wasm plugin close failed (FAIL_CLOSE)" in r.text
    assert "proxy_on_tick" in r.text
    st = h.stats()
    assert st["wasm.close.traps"] == 1 and st["wasm.open.traps"] == 1


# -- what the inspector records about a trap ---------------------------------------------------


@pytest.mark.parametrize(
    ("callback", "method", "ran"),
    [
        ("proxy_on_request_headers", "GET", ["proxy_on_request_headers"]),
        ("proxy_on_request_body", "POST", ["proxy_on_request_headers", "proxy_on_request_body"]),
        (
            "proxy_on_response_headers",
            "GET",
            ["proxy_on_request_headers", "proxy_on_response_headers"],
        ),
        (
            "proxy_on_response_body",
            "GET",
            ["proxy_on_request_headers", "proxy_on_response_headers", "proxy_on_response_body"],
        ),
    ],
)
def test_the_trapping_requests_hop_carries_the_failure_and_the_callbacks_that_ran(
    start_proxy, wasm_file, upstream, callback, method, ran
):
    trap = wasm_file(make_trap_module(callback, "unreachable"), "t")
    h = start_proxy(make_config(wasm_plugin("trapper", trap), clusters={"backend": upstream.url}))
    with h.client() as c:
        body = b"payload" if method == "POST" else None
        r = c.request(method, "/boom?q=1", content=body, headers={"host": "svc.local"})
        assert r.status_code == 503
        assert c.get("/later").status_code == 503
    recs = {rec.path: rec for rec in h.records()}
    (hop,) = recs["/boom?q=1"].hops
    assert hop.ran
    f = hop.failure
    assert f is not None, "the trapping request's hop lost its failure"
    assert (f["state"], f["kind"], f["callback"]) == ("RUNTIME_ERROR", "unreachable", callback)
    assert "unreachable" in f["message"]
    assert any(callback in line for line in f["backtrace"])
    assert f["request"]["path"] == "/boom?q=1"
    assert f["request"]["method"] == method
    assert f["request"]["authority"] == "svc.local"
    assert [name for name, _r, _us in hop.callbacks] == ran
    assert hop.callbacks[-1][1] == "trap"
    # the JSON the inspector and /requests hand out says the same
    d = recs["/boom?q=1"].to_dict()["hops"][0]
    assert d["failure"] == f
    assert [cb["name"] for cb in d["callbacks"]] == ran
    # a later request rejected by the policy names the failure that made it so
    (later,) = recs["/later"].hops
    assert not later.ran and later.failure["request"]["path"] == "/boom?q=1"


def test_a_log_only_plugins_trap_is_on_its_hop_and_the_request_goes_on(
    start_proxy, probe, upstream
):
    h = start_proxy(
        make_config(_trapper(probe, mode="log-only"), clusters={"backend": upstream.url})
    )
    with h.client() as c:
        assert c.get("/boom").status_code == 200
    (hop,) = h.records()[-1].hops
    assert hop.failure is not None
    assert hop.failure["kind"] == "unreachable"
    assert hop.failure["request"]["path"] == "/boom"
    assert [name for name, _r, _us in hop.callbacks] == ["proxy_on_request_headers"]


def test_the_failure_request_names_method_path_and_authority(start_proxy, probe, upstream):
    h = start_proxy(make_config(_trapper(probe), clusters={"backend": upstream.url}))
    with h.client() as c:
        assert c.post("/boom", content=b"x", headers={"host": "api.example"}).status_code == 503
    (snap,) = h.admin("GET", "/plugins").json()["plugins"]
    req = snap["failure"]["request"]
    assert (req["method"], req["path"], req["authority"]) == ("POST", "/boom", "api.example")
    assert req["request_id"] and req["client"].startswith("127.0.0.1:")
    assert [":method", "POST"] in req["headers"]


def test_a_later_failure_outside_a_request_does_not_name_the_earlier_request(start_proxy, probe):
    h = start_proxy(make_config(wasm_plugin("p", probe(trap_path="/boom", trap_on_tick_ms=1000))))
    with h.client() as c:
        assert c.get("/boom").status_code == 503
    first = h.sync(lambda: h.server.manager.slots["p"].failure_dict())
    assert first["callback"] == "proxy_on_request_headers"
    assert first["request"]["path"] == "/boom"
    assert h.call(h.server.reload_plugin("p")) is None
    h.wait_for(lambda: h.slot("p").state == "failed", timeout=5, what="the tick trap")
    later = h.sync(lambda: h.server.manager.slots["p"].failure_dict())
    assert later["callback"] == "proxy_on_tick"
    assert "request" not in later
