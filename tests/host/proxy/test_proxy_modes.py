"""Operator modes over real traffic (issue §4): log-only, canary N% (random, sticky
header hash, client-ip, forced by x-wasmdesk-canary), their composition, disabled."""

from __future__ import annotations

import time

from tests.fixtures.wat_modules import make_trap_module

from .conftest import make_config, plugin, wasm_plugin


def _hdr(doc: dict, name: str) -> str | None:
    for k, v in doc["headers"].items():
        if k.lower() == name:
            return v
    return None


def _auth(**kw):
    return wasm_plugin(
        "auth",
        plugin("auth_token"),
        root_id="auth_token",
        config={"token": "s3cret", "allow_paths": []},
        **kw,
    )


def _add(**kw):
    return wasm_plugin("add", plugin("add_header"), root_id="add_header", **kw)


# -- log-only ----------------------------------------------------------------------------------


def test_log_only_local_reply_is_counted_not_applied(start_proxy, probe):
    h = start_proxy(
        make_config(_auth(mode="log-only", phase="AUTHN"), wasm_plugin("after", probe()))
    )
    with h.client() as c:
        for _ in range(3):
            r = c.get("/private")
            assert r.status_code == 200
            assert "x-wasmdesk-denied-by" not in r.headers
            # the plugin after it still ran, on the real stream
            assert r.json()["headers"]["x-order"] == "after"
        assert c.get("/private", headers={"authorization": "Bearer s3cret"}).status_code == 200
    st = h.stats()
    assert st["wasm.auth.log_only.would_reply_403"] == 3
    assert "wasm.auth.local_reply_403" not in st
    # the plugin's own metrics stay live
    assert st["auth_token.denied"] == 3
    assert st["auth_token.allowed"] == 1
    rec = h.records()[0]
    hop = rec.hops[0]
    assert hop.mode == "log-only"
    assert hop.would == ["reply_403"]
    assert hop.local_reply["status"] == 403
    # /plugins shows the mode
    (snap,) = [p for p in h.admin("GET", "/plugins").json()["plugins"] if p["name"] == "auth"]
    assert snap["mode"] == "log-only"
    assert snap["state"] == "log-only"
    assert snap["counters"]["log_only.would_reply_403"] == 3


def test_log_only_header_changes_are_not_applied_and_later_plugins_see_the_original(
    start_proxy, probe, upstream
):
    cfg = make_config(
        _add(mode="log-only", phase="AUTHN"),
        wasm_plugin("observer", probe()),
        clusters={"backend": upstream.url},
    )
    h = start_proxy(cfg)
    with h.client() as c:
        r = c.get("/h")
    assert r.status_code == 200
    assert "x-wasmdesk-plugin" not in r.headers
    assert r.headers["x-order-resp"] == "observer"
    got = upstream.requests[-1]
    assert _hdr(got, "x-wasmdesk") is None
    assert _hdr(got, "x-order") == "observer"
    rec = h.records()[-1]
    add_hop, obs_hop = rec.hops
    # what the log-only plugin would have done is recorded...
    assert (b"x-wasmdesk", b"hello") in add_hop.request_headers_after
    assert add_hop.would == ["mutate_request_headers", "mutate_response_headers"]
    # ...but the observer saw the unmodified request
    assert not any(k == b"x-wasmdesk" for k, _ in obs_hop.request_headers_before)
    st = h.stats()
    assert st["wasm.add.log_only.would_mutate_request_headers"] == 1
    assert st["wasm.add.log_only.would_mutate_response_headers"] == 1


def test_log_only_body_changes_are_not_applied(start_proxy, upstream):
    cfg = make_config(
        wasm_plugin(
            "upper", plugin("body_echo_request"), root_id="body_echo_request", mode="log-only"
        ),
        wasm_plugin(
            "rewrite",
            plugin("body_rewrite"),
            root_id="body_rewrite",
            mode="log-only",
            config={"from": "lower", "to": "LOWER", "content_types": [""]},
        ),
        clusters={"backend": upstream.url},
    )
    h = start_proxy(cfg)
    with h.client() as c:
        r = c.post("/b", content=b"lower case body")
    assert r.status_code == 200
    assert upstream.requests[-1]["body"] == "lower case body"
    assert "LOWER" not in r.text and r.json()["body"] == "lower case body"
    st = h.stats()
    assert st["wasm.upper.log_only.would_mutate_request_body"] == 1
    assert st["wasm.rewrite.log_only.would_mutate_response_body"] == 1


def test_log_only_large_buffered_body_is_not_limited(start_proxy, upstream):
    """A log-only plugin that buffers never holds the real stream, so its buffer limit
    cannot reject traffic."""
    cfg = make_config(
        wasm_plugin(
            "upper", plugin("body_echo_request"), root_id="body_echo_request", mode="log-only"
        ),
        clusters={"backend": upstream.url},
    )
    h = start_proxy(cfg)
    with h.client() as c:
        r = c.post("/big", content=b"q" * (2 * 1024 * 1024))
    assert r.status_code == 200
    assert len(upstream.requests[-1]["body"]) == 2 * 1024 * 1024


def test_log_only_pause_never_pauses_the_real_stream(start_proxy, upstream):
    cfg = make_config(
        wasm_plugin(
            "callout",
            plugin("callout"),
            root_id="callout",
            mode="log-only",
            config={"cluster": "auth", "path": "/slow?ms=500", "timeout_ms": 3000},
        ),
        clusters={"auth": upstream.url},
    )
    h = start_proxy(cfg)
    with h.client() as c:
        t0 = time.monotonic()
        r = c.get("/fast", headers={"authorization": "Bearer x"})
        took = time.monotonic() - t0
    assert r.status_code == 200
    assert took < 0.4
    assert _hdr(r.json(), "x-auth-result") is None
    # the callout itself stays live (it completes after the request did)
    h.wait_for(lambda: h.stats().get("cluster.auth.callout_success") == 1, what="callout")
    st = h.stats()
    assert st["wasm.callout.log_only.would_pause"] == 1
    assert "wasm.callout.paused" not in st
    assert st["wasm.paused_streams"] == 0


def test_log_only_late_local_reply_from_a_callout_is_counted(start_proxy, upstream):
    """The callout answers 403 while the real request is still in flight (its upstream is
    slow): the plugin's local reply is counted as would_reply_403 and not applied."""
    cfg = make_config(
        wasm_plugin(
            "callout",
            plugin("callout"),
            root_id="callout",
            mode="log-only",
            config={"cluster": "auth", "path": "/check", "timeout_ms": 3000},
        ),
        clusters={"auth": upstream.url},
    )
    h = start_proxy(cfg)
    with h.client() as c:
        r = c.get("/slow?ms=500")  # no authorization: /check says 403
    assert r.status_code == 200
    assert r.text == "slow\n"
    st = h.stats()
    assert st["wasm.callout.log_only.would_reply_403"] == 1
    assert "wasm.callout.local_reply_403" not in st


def test_log_only_trap_never_affects_traffic(start_proxy, wasm_file):
    cfg = make_config(
        wasm_plugin(
            "trap-req",
            wasm_file(make_trap_module("proxy_on_request_headers", "unreachable"), "t1"),
            mode="log-only",
            phase="AUTHN",
        ),
        wasm_plugin(
            "trap-resp",
            wasm_file(make_trap_module("proxy_on_response_headers", "div_zero"), "t2"),
            mode="log-only",
            phase="AUTHZ",
        ),
        _add(),
    )
    h = start_proxy(cfg)
    with h.client() as c:
        for _ in range(4):
            r = c.get("/t")
            assert r.status_code == 200
            assert r.json()["headers"]["x-wasmdesk"] == "hello"
            assert r.headers["x-wasmdesk-plugin"] == "add_header"
    assert h.slot("trap-req").state == "failed"
    assert h.slot("trap-resp").state == "failed"
    st = h.stats()
    assert st["wasm.trap-req.traps"] == 1
    assert st["wasm.trap-resp.traps"] == 1
    assert st["http.downstream_rq_2xx"] == 4
    # a failed log-only plugin does not make the proxy unready
    assert h.admin("GET", "/ready").status_code == 200


def test_log_only_body_and_response_traps_never_affect_traffic(start_proxy, wasm_file, upstream):
    cfg = make_config(
        wasm_plugin(
            "trap-body",
            wasm_file(make_trap_module("proxy_on_request_body", "oob"), "b"),
            mode="log-only",
        ),
        wasm_plugin(
            "trap-rbody",
            wasm_file(make_trap_module("proxy_on_response_body", "stack_overflow"), "rb"),
            mode="log-only",
        ),
        clusters={"backend": upstream.url},
    )
    h = start_proxy(cfg)
    with h.client() as c:
        for i in range(3):
            r = c.post("/b", content=b"body %d" % i)
            assert r.status_code == 200
            assert r.json()["body"] == f"body {i}"
    assert h.slot("trap-body").state == "failed"
    assert h.slot("trap-rbody").state == "failed"


def test_set_property_of_a_log_only_plugin_is_not_seen_by_later_plugins(start_proxy, probe):
    cfg = make_config(
        wasm_plugin("setter", probe(set_property=True), mode="log-only", phase="AUTHN"),
        wasm_plugin("reader", probe(get_property=True)),
    )
    h = start_proxy(cfg)
    with h.client() as c:
        r = c.get("/p")
    assert r.status_code == 200
    assert "x-probe-prop" not in r.json()["headers"]


def test_set_property_in_enforce_mode_is_seen_by_later_plugins(start_proxy, probe):
    """Envoy keeps proxy_set_property values in the stream's filter state, readable by the
    other Wasm filters of the same stream (the counterpart of the log-only test above)."""
    cfg = make_config(
        wasm_plugin("setter", probe(set_property=True), phase="AUTHN"),
        wasm_plugin("reader", probe(get_property=True)),
    )
    h = start_proxy(cfg)
    with h.client() as c:
        r = c.get("/p")
    assert r.status_code == 200
    assert r.json()["headers"].get("x-probe-prop") == "set"


# -- canary ------------------------------------------------------------------------------------


def _ran(r) -> bool:
    return r.json()["headers"].get("x-wasmdesk") == "hello"


def test_canary_zero_percent_never_runs(start_proxy):
    h = start_proxy(make_config(_add(canary=0)))
    with h.client() as c:
        assert not any(_ran(c.get(f"/z{i}")) for i in range(20))
    st = h.stats()
    assert st.get("wasm.add.invocations", 0) == 0
    assert st["wasm.add.canary_skipped"] == 20


def test_canary_hundred_percent_always_runs(start_proxy):
    h = start_proxy(make_config(_add(canary=100)))
    with h.client() as c:
        assert all(_ran(c.get(f"/a{i}")) for i in range(20))
    assert h.stats()["wasm.add.invocations"] == 20


def test_canary_random_fifty_percent_runs_about_half(start_proxy):
    h = start_proxy(make_config(_add(canary=50)))
    with h.client() as c:
        n = sum(_ran(c.get("/r")) for _ in range(200))
    assert 50 <= n <= 150, n  # binomial(200, 0.5): +-7 sigma


def test_canary_sticky_by_header_hash(start_proxy):
    h = start_proxy(make_config(_add(canary=50, canary_key="header:x-user")))
    decisions: dict[str, bool] = {}
    with h.client() as c:
        for rnd in range(3):
            for u in range(24):
                ran = _ran(c.get("/s", headers={"x-user": f"user-{u}"}))
                if rnd == 0:
                    decisions[f"user-{u}"] = ran
                else:
                    assert decisions[f"user-{u}"] == ran, f"user-{u} is not sticky"
    share = sum(decisions.values())
    assert 0 < share < 24, decisions  # both sides are used


def test_canary_sticky_by_client_ip(start_proxy):
    h = start_proxy(make_config(_add(canary=50, canary_key="client-ip")))
    with h.client() as c:
        results = {_ran(c.get("/ip")) for _ in range(15)}
    assert len(results) == 1  # every request from 127.0.0.1 gets the same answer


def test_canary_force_header(start_proxy):
    h = start_proxy(
        make_config(
            _add(canary=0),
            wasm_plugin(
                "add2",
                plugin("add_header"),
                root_id="add_header",
                canary=100,
                config={"request_header": {"name": "x-second", "value": "2"}},
            ),
        )
    )
    with h.client() as c:
        for _ in range(5):
            doc = c.get("/f", headers={"x-wasmdesk-canary": "always"}).json()
            assert doc["headers"].get("x-wasmdesk") == "hello"
            assert doc["headers"].get("x-second") == "2"
            doc = c.get("/f", headers={"x-wasmdesk-canary": "never"}).json()
            assert "x-wasmdesk" not in doc["headers"]
            # case does not matter; other values are ignored
            doc = c.get("/f", headers={"x-wasmdesk-canary": "ALWAYS"}).json()
            assert doc["headers"].get("x-wasmdesk") == "hello"
            doc = c.get("/f", headers={"x-wasmdesk-canary": "sometimes"}).json()
            assert "x-wasmdesk" not in doc["headers"]
            assert doc["headers"].get("x-second") == "2"


def test_canary_never_skips_only_the_canaried_plugins(start_proxy):
    """``never`` turns canaried plugins (below 100%) off, as ``always`` turns them on; a
    plugin at 100% is not a canary and keeps running for every request."""
    h = start_proxy(
        make_config(
            _add(canary=99),
            wasm_plugin(
                "full",
                plugin("add_header"),
                root_id="add_header",
                canary=100,
                config={"request_header": {"name": "x-second", "value": "2"}},
            ),
        )
    )
    with h.client() as c:
        for _ in range(5):
            doc = c.get("/n", headers={"x-wasmdesk-canary": "never"}).json()
            assert "x-wasmdesk" not in doc["headers"]
            assert doc["headers"].get("x-second") == "2"
    st = h.stats()
    assert st["wasm.add.canary_skipped"] == 5
    assert st["wasm.full.invocations"] == 5
    assert "wasm.full.canary_skipped" not in st
    hops = {hop.plugin: hop for hop in h.records()[-1].hops}
    assert hops["add"].skipped_reason == "not sampled by canary"
    assert hops["full"].ran


def test_canary_control_header_is_not_forwarded(start_proxy, upstream):
    """x-wasmdesk-canary steers this proxy only: neither the plugins nor the upstream
    see it, with plugins configured or without."""
    h = start_proxy(make_config(_add(canary=0), clusters={"backend": upstream.url}))
    with h.client() as c:
        r = c.get("/h", headers={"x-wasmdesk-canary": "always"})
    assert r.status_code == 200
    got = dict(upstream.requests[-1]["headers"])
    assert got.get("x-wasmdesk") == "hello"  # the header did its job
    assert not any(k.lower() == "x-wasmdesk-canary" for k in got)
    before = dict(h.records()[-1].hops[0].request_headers_before)
    assert b"x-wasmdesk-canary" not in before

    bare = start_proxy(make_config(clusters={"backend": upstream.url}))
    with bare.client() as c:
        assert c.get("/h", headers={"x-wasmdesk-canary": "never"}).status_code == 200
    assert not any(k.lower() == "x-wasmdesk-canary" for k in upstream.requests[-1]["headers"])


def test_canary_and_log_only_compose(start_proxy):
    h = start_proxy(make_config(_auth(mode="log-only", canary=0)))
    with h.client() as c:
        for _ in range(3):
            assert c.get("/p").status_code == 200  # not sampled: not evaluated at all
        for _ in range(2):
            r = c.get("/p", headers={"x-wasmdesk-canary": "always"})
            assert r.status_code == 200  # evaluated, not enforced
    st = h.stats()
    assert st["wasm.auth.canary_skipped"] == 3
    assert st["wasm.auth.log_only.would_reply_403"] == 2
    assert st["auth_token.denied"] == 2


def test_canary_enforced_share_gets_the_local_reply(start_proxy):
    h = start_proxy(make_config(_auth(canary=50, canary_key="header:x-user")))
    with h.client() as c:
        codes = {}
        for u in range(16):
            codes[u] = c.get("/p", headers={"x-user": str(u)}).status_code
            assert c.get("/p", headers={"x-user": str(u)}).status_code == codes[u]
    assert set(codes.values()) == {200, 403}


def test_disabled_mode_skips_the_plugin(start_proxy):
    h = start_proxy(make_config(_add(mode="disabled")))
    with h.client() as c:
        assert not _ran(c.get("/d"))
        assert not _ran(c.get("/d", headers={"x-wasmdesk-canary": "always"}))
    assert h.stats().get("wasm.add.invocations", 0) == 0
    assert h.records()[-1].hops[0].skipped_reason == "disabled"


def test_mode_changes_apply_to_the_next_request(start_proxy):
    h = start_proxy(make_config(_auth()))
    with h.client() as c:
        assert c.get("/m").status_code == 403
        h.sync(h.server.set_plugin_mode, "auth", mode="log-only")
        assert c.get("/m").status_code == 200
        h.sync(h.server.set_plugin_mode, "auth", mode="enforce", canary_percent=0)
        assert c.get("/m").status_code == 200
        h.sync(h.server.set_plugin_mode, "auth", canary_percent=100)
        assert c.get("/m").status_code == 403
