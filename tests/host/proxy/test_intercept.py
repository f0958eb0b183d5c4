"""Intercept (issue 12 item 6): a request held at a chosen plugin hop, edited, resumed,
over real sockets with real plugins; bounded by a timeout; no cost when unarmed."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from host.proxy.intercept import Interceptor, InterceptRule

from .conftest import make_config, plugin, wasm_plugin


def _arm(h: Any, rule: InterceptRule, timeout_s: float = 10.0) -> Interceptor:
    def setup() -> Interceptor:
        ic = Interceptor(h.loop, timeout_s=timeout_s)
        ic.arm(rule)
        h.server.manager.intercept = ic
        return ic

    return h.sync(setup)


def _send(h: Any, method: str, path: str, **kw: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def go() -> None:
        with h.client() as c:
            out.append(c.request(method, path, **kw))

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, out


def _held(h: Any, ic: Interceptor) -> list[dict[str, Any]]:
    return h.wait_for(lambda: h.sync(ic.held_dicts), what="a held request")


def test_unarmed_manager_has_no_interceptor(start_proxy, probe):
    h = start_proxy(make_config(wasm_plugin("a", probe())))
    assert h.sync(lambda: h.server.manager.intercept) is None
    with h.client() as c:
        assert c.get("/x").status_code == 200


def test_request_held_before_a_plugin_is_edited_and_that_plugin_sees_the_edit(start_proxy, probe):
    p = probe()
    h = start_proxy(make_config(wasm_plugin("a", p, priority=10), wasm_plugin("b", p)))
    ic = _arm(h, InterceptRule("b", "request_headers"))
    t, out = _send(h, "GET", "/held?q=1", headers={"x-keep": "1"})
    held = _held(h, ic)[0]
    assert held["plugin"] == "b" and held["stage"] == "request_headers"
    assert held["path"] == "/held?q=1" and held["method"] == "GET"
    hdrs = dict(held["headers"])
    assert hdrs["x-order"] == "a"  # a ran before the hold, b not yet
    assert not out  # the client is still waiting
    edited = [[k, v] for k, v in held["headers"] if k != "x-keep"] + [["x-edited", "yes"]]
    edited = [[k, ("a-edited" if k == "x-order" else v)] for k, v in edited]
    assert h.sync(ic.resume, held["id"], edited)
    t.join(10)
    r = out[0]
    assert r.status_code == 200
    seen = r.json()["headers"]
    assert seen["x-edited"] == "yes" and "x-keep" not in seen
    assert seen["x-order"] == "a-edited,b"  # b ran on the edited request
    # once=True: the rule is gone, the next request passes straight through
    assert h.sync(lambda: ic.rules) == []
    with h.client() as c:
        assert c.get("/again").json()["headers"]["x-order"] == "a,b"
    rec = next(r for r in h.records() if r.path == "/held?q=1")
    b = next(x for x in rec.hops if x.plugin == "b")
    assert (b"x-edited", b"yes") in b.request_headers_before


def test_a_held_request_resumes_unchanged_after_the_timeout(start_proxy, probe):
    h = start_proxy(make_config(wasm_plugin("a", probe())))
    ic = _arm(h, InterceptRule("a", "request_headers"), timeout_s=0.3)
    t, out = _send(h, "GET", "/slow")
    t.join(10)
    assert out and out[0].status_code == 200
    assert out[0].json()["headers"]["x-order"] == "a"
    assert h.sync(lambda: (ic.caught, ic.timed_out, len(ic.held))) == (1, 1, 0)


def test_response_headers_edited_at_a_hop_reach_the_client(start_proxy, probe):
    h = start_proxy(make_config(wasm_plugin("a", probe())))
    ic = _arm(h, InterceptRule("a", "response_headers"))
    t, out = _send(h, "GET", "/resp")
    held = _held(h, ic)[0]
    assert held["stage"] == "response_headers"
    assert dict(held["headers"])[":status"] == "200"
    h.sync(ic.resume, held["id"], [*held["headers"], ["x-from-intercept", "1"]])
    t.join(10)
    assert out[0].headers["x-from-intercept"] == "1"
    assert out[0].headers["x-order-resp"] == "a"  # a's response callback ran after


def test_request_body_edited_before_a_body_plugin(start_proxy):
    h = start_proxy(
        make_config(
            wasm_plugin(
                "rw",
                plugin("body_rewrite"),
                root_id="body_rewrite",
                config={"from": "tok1", "to": "tok2", "content_types": [""]},
            )
        )
    )
    ic = _arm(h, InterceptRule("rw", "request_body"))
    t, out = _send(h, "POST", "/b", content=b"abcd")
    held = _held(h, ic)[0]
    assert held["body"] == "abcd"
    h.sync(ic.resume, held["id"], None, "tok1 and more")  # longer; the plugin rewrites it
    t.join(10)
    assert out[0].status_code == 200
    assert out[0].json()["body"] == "tok2 and more"


def test_a_malformed_edit_is_refused_and_the_request_stays_held(start_proxy, probe):
    h = start_proxy(make_config(wasm_plugin("a", probe())))
    ic = _arm(h, InterceptRule("a", "request_headers"))
    t, out = _send(h, "GET", "/bad")
    held = _held(h, ic)[0]
    with pytest.raises(ValueError, match="bad header name"):
        h.sync(ic.resume, held["id"], [["bad name", "x"]])
    with pytest.raises(ValueError, match="control character"):
        h.sync(ic.resume, held["id"], [["x-a", "1\r\nx-b: 2"]])
    assert len(h.sync(ic.held_dicts)) == 1
    assert h.sync(ic.resume, held["id"])  # unchanged
    t.join(10)
    assert out[0].status_code == 200
    assert not h.sync(ic.resume, held["id"])  # not held any more


def test_a_client_that_leaves_while_held_does_not_break_the_proxy(start_proxy, probe):
    h = start_proxy(make_config(wasm_plugin("a", probe())))
    ic = _arm(h, InterceptRule("a", "request_headers"))
    with pytest.raises(httpx.ReadTimeout), h.client(timeout=0.5) as c:
        c.get("/gone")
    held = _held(h, ic)[0]
    assert h.sync(ic.resume, held["id"])
    with h.client() as c:
        assert c.get("/after").status_code == 200


def test_rules_are_checked(start_proxy):
    with pytest.raises(ValueError, match="stage must be one of"):
        InterceptRule("a", "response_body")
    with pytest.raises(ValueError, match="choose a plugin"):
        InterceptRule("")


def test_request_body_edited_at_a_plugin_without_a_body_callback(start_proxy, probe):
    h = start_proxy(make_config(wasm_plugin("a", probe())))
    ic = _arm(h, InterceptRule("a", "request_body"))
    t, out = _send(h, "POST", "/nb", content=b"one")
    held = _held(h, ic)[0]
    assert held["body"] == "one" and held["plugin"] == "a"
    h.sync(ic.resume, held["id"], None, "two, edited")
    t.join(10)
    assert out[0].json()["body"] == "two, edited"
