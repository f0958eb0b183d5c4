"""Issue 13 item 1: a plugin names a cluster, never an address.

``:path`` "@127.0.0.1:PORT/..." used to be appended to the cluster URL, turning the
cluster into userinfo: a plugin reached any loopback port, the admin API's
``/quitquitquit`` included. Real proxy, real sockets, WAT plugins.
"""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from host.callout_request import build_callout_request
from host.runner import TryRequest, run_try
from host.wasm.context import HttpCallout
from host.wasm.types import Status
from tests.host.proxy.conftest import ScriptedUpstream, make_config, wasm_plugin
from tests.host.security.hostile_wat import callout_headers, callout_module

DEMO = "wasmdesk-demo-upstream"


def _victim(scripted_upstream) -> ScriptedUpstream:
    """A loopback listener no cluster names: answers 200 and counts connections."""

    def script(conn: socket.socket, u: ScriptedUpstream) -> None:
        buf = bytearray()
        if u.read_head(conn, buf) is not None:
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nleaked")

    return scripted_upstream(script)


def _sent_headers(resp) -> dict[str, str]:
    return {k.lower(): v for k, v in resp.json()["headers"].items()}


@pytest.mark.parametrize(
    "path",
    [
        "@127.0.0.1:{port}/quitquitquit",
        "//127.0.0.1:{port}/x",
        "http://127.0.0.1:{port}/x",
        "/ok\r\nx-smuggled: 1",
        "",
    ],
)
def test_callout_path_that_is_not_origin_form_is_bad_argument(
    start_proxy, wasm_file, scripted_upstream, path
):
    victim = _victim(scripted_upstream)
    p = path.format(port=victim.port).encode()
    mod = callout_module(DEMO, callout_headers(p, b"POST"))
    h = start_proxy(make_config(wasm_plugin("hostile", wasm_file(mod, "hostile"))))
    with h.client() as c:
        r = c.get("/x")
        assert r.status_code == 200, r.text
        assert _sent_headers(r)["x-call-status"] == str(int(Status.BAD_ARGUMENT))
        assert _sent_headers(r)["x-calls-ok"] == "0"
    assert victim.connections == 0
    assert h.slot("hostile").state == "running"


def test_a_plugin_cannot_quit_the_proxy_through_the_admin_port(start_proxy, wasm_file):
    # The proxy's own admin port: before the fix one request made `serve` exit.
    h = start_proxy(make_config())
    path = f"@127.0.0.1:{h.server.admin_address[1]}/quitquitquit".encode()
    mod = callout_module(DEMO, callout_headers(path, b"POST"))
    assert h.apply(make_config(wasm_plugin("hostile", wasm_file(mod, "hostile")))) is not None
    with h.client() as c:
        r = c.get("/1")
        assert r.status_code == 200
        assert _sent_headers(r)["x-call-status"] == str(int(Status.BAD_ARGUMENT))
        assert c.get("/still-there").status_code == 200
    assert h.admin("GET", "/ready").status_code == 200


def test_a_good_callout_goes_to_the_cluster_with_the_authority_as_host(
    start_proxy, wasm_file, scripted_upstream
):
    # An '@' later in the path is only a path byte: the start of :path decides.
    target = _victim(scripted_upstream)  # here: the cluster, which records what arrives
    mod = callout_module("target", callout_headers(b"/echo@x?q=1", authority=b"auth.local"))
    h = start_proxy(
        make_config(
            wasm_plugin("hostile", wasm_file(mod, "hostile")), clusters={"target": target.url}
        )
    )
    with h.client() as c:
        assert c.get("/x").status_code == 200
    h.wait_for(lambda: h.stats().get("cluster.target.callout_success") == 1)
    got = bytes(target.received).lower()
    assert b"get /echo@x?q=1 http/1.1\r\n" in got
    assert b"host: auth.local\r\n" in got
    assert b"x-call-status: 0\r\n" in got  # the plugin's own request, forwarded


def test_the_dispatcher_refuses_a_crafted_call_that_skipped_the_abi_check(
    start_proxy, scripted_upstream
):
    # Defence in depth: even an HttpCallout built without proxy_http_call's checks
    # cannot leave the cluster.
    victim = _victim(scripted_upstream)
    h = start_proxy(make_config())
    bad = f"@127.0.0.1:{victim.port}/quitquitquit".encode()
    call = HttpCallout(
        4, DEMO, [(b":method", b"POST"), (b":path", bad), (b":authority", b"x")], b"", [], 1000, 0
    )
    finished = threading.Event()

    async def go() -> None:
        h.server.manager.callouts.dispatch(call, lambda _c: finished.set())
        await asyncio.sleep(0)

    h.call(go())
    assert finished.wait(5)
    assert call.failure is not None and call.failure.startswith("reset")
    assert call.response_status is None
    assert victim.connections == 0


def test_build_callout_request_keeps_the_cluster_address_and_prefix():
    call = HttpCallout(
        4,
        "c",
        [
            (b":method", b"PUT"),
            (b":path", b"/a@b:1/c?x=@y"),
            (b":authority", b"auth.local"),
            (b"x-k", b"v"),
        ],
        b"",
        [],
        0,
        0,
    )
    req = build_callout_request("http://127.0.0.1:8080/prefix/", call)
    assert (req.url.scheme, req.url.host, req.url.port) == ("http", "127.0.0.1", 8080)
    assert req.url.raw_path == b"/prefix/a@b:1/c?x=@y"
    assert req.method == "PUT"
    assert ("host", "auth.local") in req.headers and ("x-k", "v") in req.headers
    for bad in (b"@127.0.0.1:9901/quitquitquit", b"//evil/x", b"x", b"/a\r\nb: c", b"/a#f"):
        call.headers[1] = (b":path", bad)
        with pytest.raises(ValueError):
            build_callout_request("http://127.0.0.1:8080", call)


def test_try_with_a_cluster_refuses_the_userinfo_trick(scripted_upstream):
    victim = _victim(scripted_upstream)
    other = _victim(scripted_upstream)
    path = f"@127.0.0.1:{victim.port}/quitquitquit".encode()
    mod = callout_module("target", callout_headers(path, b"POST"))
    r = run_try(mod, TryRequest(clusters={"target": other.url}, root_id="hostile"))
    assert r.failure is None
    assert (b"x-call-status", b"2") in r.request_headers
    assert r.callouts == []
    assert victim.connections == 0 and other.connections == 0
    # the same plugin with a real path reaches the named cluster, and only it
    mod = callout_module("target", callout_headers(b"/check"))
    r = run_try(mod, TryRequest(clusters={"target": other.url}, root_id="hostile"))
    assert (b"x-call-status", b"0") in r.request_headers
    assert r.callouts[0]["response_status"] == 200
    assert victim.connections == 0 and other.connections == 1
