"""The admin API against what a web page in the user's browser can send (issue 13 §2),
and against one slow admin request freezing the proxy (§3). Real sockets on 127.0.0.1.

A page can make the browser POST a form to ``http://127.0.0.1:9901/quitquitquit``
(no CORS needed for a "simple" request), and DNS rebinding lets a page read
responses under its own host name. So: Host must be the admin's own loopback
address, a POST with a foreign ``Origin``/``Sec-Fetch-Site`` is refused, and every
POST needs ``Content-Type: application/json``, which a form cannot send.
"""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from .conftest import make_config, plugin, read_response, wasm_plugin


@pytest.fixture
def proxy(start_proxy):
    return start_proxy(
        make_config(
            wasm_plugin(
                "auth",
                plugin("auth_token"),
                root_id="auth_token",
                mode="log-only",
                config={"token": "t", "allow_paths": []},
            ),
            wasm_plugin("add", plugin("add_header"), root_id="add_header"),
        )
    )


def _raw(h, head: str, body: bytes = b""):
    """One request over a fresh socket to the admin; ``head`` without the final CRLF."""
    port = h.server.admin_address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        data = head.replace("PORT", str(port)).encode() + b"\r\n"
        if body:
            data += b"content-length: %d\r\n" % len(body)
        s.sendall(data + b"\r\n" + body)
        return read_response(s.makefile("rb"))


# -- Host: DNS rebinding ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["evil.example:PORT", "evil.example", "127.0.0.1:1", "localhost", "10.0.0.1:PORT"]
)
def test_a_foreign_host_cannot_read_the_inspector_or_the_config(proxy, host):
    with proxy.client() as c:
        assert c.get("/secret", headers={"authorization": "Bearer tok-123"}).status_code == 200
    for path in ("/requests", "/config_dump", "/stats", "/ready"):
        r = _raw(proxy, f"GET {path} HTTP/1.1\r\nhost: {host}")
        assert r.status == 403, (path, r.status)
        assert b"tok-123" not in r.body
        assert b"DNS rebinding" in r.body and b"http://127.0.0.1:" in r.body


@pytest.mark.parametrize(
    "host", ["127.0.0.1:PORT", "localhost:PORT", "LOCALHOST:PORT", "[::1]:PORT"]
)
def test_the_admins_own_loopback_names_are_accepted(proxy, host):
    r = _raw(proxy, f"GET /ready HTTP/1.1\r\nhost: {host}")
    assert (r.status, r.body) == (200, b"LIVE\n")


def test_two_host_headers_are_refused(proxy):
    r = _raw(proxy, "GET /ready HTTP/1.1\r\nhost: 127.0.0.1:PORT\r\nhost: evil.example")
    assert r.status == 400


# -- cross-site POSTs -----------------------------------------------------------------------------


def test_a_cross_site_form_cannot_quit_the_proxy(proxy):
    # exactly what <form method=post action=http://127.0.0.1:9901/quitquitquit> sends
    r = _raw(
        proxy,
        "POST /quitquitquit HTTP/1.1\r\nhost: 127.0.0.1:PORT\r\n"
        "content-type: application/x-www-form-urlencoded\r\n"
        "origin: https://evil.example\r\nsec-fetch-site: cross-site",
        b"a=1",
    )
    assert r.status == 403 and b"origin" in r.body
    # the same form without the browser headers (an old browser): no JSON type, 415
    r = _raw(
        proxy,
        "POST /quitquitquit HTTP/1.1\r\nhost: 127.0.0.1:PORT\r\n"
        "content-type: application/x-www-form-urlencoded",
        b"a=1",
    )
    assert r.status == 415
    # text/plain is what a no-cors fetch() can send: refused too
    r = _raw(
        proxy,
        "POST /quitquitquit HTTP/1.1\r\nhost: 127.0.0.1:PORT\r\ncontent-type: text/plain",
        b"{}",
    )
    assert r.status == 415
    time.sleep(0.1)
    assert proxy.server.running
    assert proxy.admin("GET", "/ready").status_code == 200
    with proxy.client() as c:
        assert c.get("/still-here").status_code == 200


def test_a_cross_site_page_cannot_change_a_plugins_mode(proxy):
    for extra in (
        "origin: http://evil.example",
        "origin: null",
        "origin: http://127.0.0.1:1",  # another local web app
        "sec-fetch-site: same-site",
        "sec-fetch-site: cross-site",
    ):
        r = _raw(
            proxy,
            "POST /plugins/auth/mode HTTP/1.1\r\nhost: 127.0.0.1:PORT\r\n"
            f"content-type: application/json\r\n{extra}",
            b'{"mode": "enforce"}',
        )
        assert r.status == 403, extra
    assert proxy.slot("auth").mode == "log-only"
    with proxy.client() as c:
        assert c.get("/private").status_code == 200  # still log-only: not denied


def test_the_admins_own_origin_and_tools_may_post_json(proxy):
    r = _raw(
        proxy,
        "POST /plugins/auth/mode HTTP/1.1\r\nhost: localhost:PORT\r\n"
        "content-type: application/json; charset=utf-8\r\n"
        "origin: http://localhost:PORT\r\nsec-fetch-site: same-origin",
        b'{"mode": "enforce"}',
    )
    assert r.status == 200, r.body
    assert proxy.slot("auth").mode == "enforce"
    # a tool (curl, the CLI, httpx) sends no Origin: JSON is enough; {} or no body for
    # the endpoints without parameters
    assert proxy.admin("POST", "/reset_counters", json={}).status_code == 200
    r = _raw(
        proxy,
        "POST /reset_counters HTTP/1.1\r\nhost: 127.0.0.1:PORT\r\ncontent-type: application/json",
    )
    assert r.status == 200


def test_415_says_how_to_call_it(proxy):
    r = proxy.admin("POST", "/reset_counters")
    assert r.status_code == 415
    port = proxy.server.admin_address[1]
    assert (
        f"curl -X POST -H 'content-type: application/json' -d '{{}}' "
        f"http://127.0.0.1:{port}/reset_counters" in r.text
    )


def test_a_cors_preflight_is_never_granted(proxy):
    r = _raw(
        proxy,
        "OPTIONS /quitquitquit HTTP/1.1\r\nhost: 127.0.0.1:PORT\r\n"
        "origin: http://evil.example\r\naccess-control-request-method: POST",
    )
    assert r.status == 403
    assert r.header("access-control-allow-origin") is None


# -- one slow admin request must not freeze the data path -----------------------------------


def test_a_catastrophic_stats_filter_neither_hangs_nor_blocks_traffic(proxy):
    """``^(\\w+\\.?)+!`` backtracks for minutes in Python's re on names like
    ``wasm.auth.log_only.would_reply_403``; before RE2, 10 of 10 data-path requests
    during it timed out."""
    with proxy.client() as c:
        for _ in range(3):
            c.get("/warm")
    out: dict[str, object] = {}

    def admin() -> None:
        t0 = time.monotonic()
        try:
            r = proxy.admin("GET", "/stats", params={"filter": r"^(\w+\.?)+!"}, timeout=10)
            out["status"] = r.status_code
        except httpx.HTTPError as e:
            out["status"] = repr(e)
        out["took"] = time.monotonic() - t0

    t = threading.Thread(target=admin)
    t.start()
    codes = []
    with proxy.client(timeout=2.0) as c:
        for i in range(10):
            try:
                codes.append(c.get(f"/during/{i}").status_code)
            except httpx.HTTPError as e:
                codes.append(repr(e))
    t.join(15)
    assert codes == [200] * 10
    assert out["status"] == 200
    assert out["took"] < 2.0  # type: ignore[operator]


def test_an_invalid_or_non_re2_filter_is_400_with_the_reason(proxy):
    r = proxy.admin("GET", "/stats", params={"filter": "("})
    assert r.status_code == 400 and "missing )" in r.text
    r = proxy.admin("GET", "/stats/prometheus", params={"filter": r"(a)\1"})
    assert r.status_code == 400 and "invalid filter regex" in r.text


def test_pipelined_responses_keep_request_order(proxy):
    port = proxy.server.admin_address[1]
    host = f"host: 127.0.0.1:{port}\r\n"
    reqs = (
        f"GET /stats HTTP/1.1\r\n{host}\r\n"  # rendered in a worker thread
        f"GET /ready HTTP/1.1\r\n{host}\r\n"
        f"GET /stats?format=json HTTP/1.1\r\n{host}\r\n"
        f"GET /logging HTTP/1.1\r\n{host}\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(reqs.encode())
        f = s.makefile("rb")
        got = [read_response(f) for _ in range(4)]
    assert b"http.downstream_rq_total: " in got[0].body
    assert got[1].body == b"LIVE\n"
    assert got[2].header("content-type") == "application/json"
    assert b"plugin_log_level" in got[3].body


def test_a_request_without_host_is_served(proxy):
    # HTTP/1.0 tools may omit Host; a browser never does, so rebinding is not possible
    r = _raw(proxy, "GET /ready HTTP/1.0")
    assert (r.status, r.body) == (200, b"LIVE\n")
