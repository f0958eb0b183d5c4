"""What the app is handed about requests (``host.proxy.request_views``): the inspector's
summary and the frozen view of a real request's record, built from the ``RequestRecord``
of requests sent through a real proxy with real plugins (the bundled SDK-built demo
plugins, and the WAT probe for a trap); and a request held by intercept as a value."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest

from host.proxy.intercept import Interceptor, InterceptRule
from host.proxy.request_views import (
    CallbackView,
    HeldView,
    HopView,
    LocalReplyView,
    RequestGone,
    RequestSummary,
    RequestView,
)
from host.proxy.snapshots import FailureView

from .conftest import make_config, plugin, wasm_plugin


def _chain() -> list[dict[str, Any]]:
    """The demo chain: a log-only auth that would deny (403), a header adder, a body
    rewriter."""
    return [
        wasm_plugin(
            "auth",
            plugin("auth_token"),
            root_id="auth_token",
            config={"token": "t"},
            phase="AUTHN",
            mode="log-only",
        ),
        wasm_plugin(
            "add-header",
            plugin("add_header"),
            root_id="add_header",
            priority=10,
            config={
                "request_header": {"name": "x-wasmdesk", "value": "hello"},
                "response_header": {"name": "x-wasmdesk-plugin", "value": "add_header"},
            },
        ),
        wasm_plugin(
            "rewrite",
            plugin("body_rewrite"),
            root_id="body_rewrite",
            config={"from": "hello", "to": "HELLO"},
        ),
    ]


def _record(h: Any, path: str) -> Any:
    return h.wait_for(
        lambda: [r for r in h.records() if r.path == path], what=f"the record of {path}"
    )[-1]


def test_summary_and_view_of_a_real_request_say_who_ran_changed_and_would_have(
    start_proxy,
) -> None:
    h = start_proxy(make_config(*_chain()))
    with h.client() as c:
        r = c.post("/api/echo", content=b"say hello", headers={"x-client": "1"})
    assert r.status_code == 200 and r.headers["x-wasmdesk-plugin"] == "add_header"
    rec = _record(h, "/api/echo")

    s = h.sync(RequestSummary.of, rec)
    assert (s.id, s.method, s.path, s.status, s.protocol) == (
        rec.id,
        "POST",
        "/api/echo",
        200,
        "HTTP/1.1",
    )
    assert s.request_id == rec.request_id and s.grpc_status is None
    assert s.plugins == ("auth", "add-header", "rewrite")
    # the log-only auth would have denied (an intent, not a reply): not a change
    assert s.changed_by == ("add-header", "rewrite")
    assert s.local_reply == "" and s.would >= 1 and s.failed == ""

    v = h.sync(RequestView.of, rec)
    assert [hop.plugin for hop in v.hops] == ["auth", "add-header", "rewrite"]
    auth, add, rewrite = v.hops
    assert auth.mode == "log-only" and isinstance(auth.local_reply, LocalReplyView)
    assert auth.local_reply.status == 403 and "reply_403" in auth.would
    assert auth.local_reply.details == "auth_token_denied"
    assert add.request_headers_before is not None and add.request_headers_after is not None
    assert ("x-client", "1") in add.request_headers_before
    assert ("x-wasmdesk", "hello") in add.request_headers_after
    assert ("x-wasmdesk", "hello") not in add.request_headers_before
    assert rewrite.response_body_before is not None and rewrite.response_body_after is not None
    assert "hello" in rewrite.response_body_before and "HELLO" in rewrite.response_body_after
    assert rewrite.response_body_after_size == len(r.content)
    assert all(isinstance(cb, CallbackView) for cb in add.callbacks)
    assert "proxy_on_request_headers" in [cb.name for cb in add.callbacks]
    # the same JSON as the record's (the admin API's /requests), and back again
    assert v.to_dict() == rec.to_dict()
    assert RequestView.from_dict(rec.to_dict()) == v


def test_views_are_frozen_copies_the_engine_cannot_change_under_the_app(start_proxy) -> None:
    h = start_proxy(make_config(*_chain()))
    with h.client() as c:
        assert c.get("/frozen").status_code == 200
    rec = _record(h, "/frozen")
    v, s = h.sync(lambda: (RequestView.of(rec), RequestSummary.of(rec)))
    before = v.to_dict()
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.status = 500  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.hops[1].plugin = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.plugins = ()  # type: ignore[misc]
    assert isinstance(v.hops, tuple) and isinstance(s.plugins, tuple)
    assert isinstance(s.changed_by, tuple)
    pairs = v.hops[1].request_headers_after
    assert isinstance(pairs, tuple) and all(isinstance(p, tuple) for p in pairs)

    def scribble() -> None:  # what the proxy thread could still do to its own record
        hop = rec.hops[1]
        hop.would.append("late")
        hop.callbacks.append(("proxy_on_late", 0, 1.0))
        assert hop.request.headers_after is not None
        hop.request.headers_after.append((b"x-late", b"1"))
        rec.hops.append(rec.hops[0])
        rec.status = 599

    h.sync(scribble)
    assert v.to_dict() == before and v.status == 200 and len(v.hops) == 3
    assert s.status == 200 and len(s.plugins) == 3


def test_a_plugin_that_trapped_is_named_and_its_failure_is_a_failure_view(
    start_proxy, probe
) -> None:
    h = start_proxy(make_config(wasm_plugin("t", probe(trap_path="/boom"), fail="FAIL_OPEN")))
    with h.client() as c:
        assert c.get("/boom").status_code == 200  # FAIL_OPEN: on without the plugin
    rec = _record(h, "/boom")
    s, v = h.sync(lambda: (RequestSummary.of(rec), RequestView.of(rec)))
    assert s.failed == "t" and s.changed_by == ()
    f = v.hops[0].failure
    assert isinstance(f, FailureView) and f.kind == "unreachable"
    assert f.state == "RUNTIME_ERROR" and f.callback == "proxy_on_request_headers"
    assert f.request is not None and f.request["path"] == "/boom"
    assert v.hops[0].callbacks[-1].result == "trap"
    assert v.to_dict() == rec.to_dict()


def test_a_request_gone_from_the_ring_says_so() -> None:
    gone = RequestGone(42)
    assert gone.id == 42 and "left the inspector's ring" in gone.error


def test_hop_view_reads_older_json_without_the_newer_keys() -> None:
    hop = HopView.from_dict({"plugin": "p", "mode": "enforce", "ran": True})
    assert hop.request_trailers_before is None and hop.callbacks == () and hop.failure is None


def test_a_held_request_is_handed_out_as_a_frozen_view(start_proxy, probe) -> None:
    h = start_proxy(make_config(wasm_plugin("a", probe())))

    def arm() -> Interceptor:
        ic = Interceptor(h.loop, timeout_s=10.0)
        ic.arm(InterceptRule("a", "request_headers"))
        h.server.manager.intercept = ic
        return ic

    ic = h.sync(arm)
    out: list[int] = []

    def send() -> None:
        with h.client() as c:
            out.append(c.get("/held", headers={"x-keep": "1"}).status_code)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    views = h.wait_for(lambda: h.sync(ic.held_views), what="a held request")
    (held,) = views
    assert isinstance(held, HeldView)
    assert (held.plugin, held.stage, held.method, held.path) == (
        "a",
        "request_headers",
        "GET",
        "/held",
    )
    assert ("x-keep", "1") in held.headers and held.body is None
    assert held.to_dict() == h.sync(ic.held_dicts)[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        held.path = "/other"  # type: ignore[misc]
    assert h.sync(ic.resume, held.id)
    t.join(10)
    assert out == [200]
