"""What the data path writes on the wire is always well-formed HTTP/1.1 (issue 13 §7,
serialization side; issue 7 §11): a header set that still holds a CR, LF or NUL in a
value, a name that is not a token, a bad ``:method`` or ``:path`` never reaches the
upstream (503) or the client (502); two Host lines get 400; ``Expect: 100-continue`` is
answered; ``Upgrade: h2c`` is ignored; reason phrases come from ``http.HTTPStatus``.

The bad headers come from a real ``StreamFilter`` put in place of the plugin chain: the
host functions refuse such values already (BAD_ARGUMENT), so this checks the last line
of defence, whatever path the bytes took.
"""

from __future__ import annotations

import socket
import time

import pytest

from host.proxy.http1 import reason
from host.proxy.stream import CONTINUE, LocalReply, PassThroughFilter, Reply, Verdict
from host.wasm.pairs import HeaderMap

from .conftest import ScriptedUpstream, connect, make_config, raw_exchange, read_response


class _Inject(PassThroughFilter):
    """Sets request (``req``) or response (``resp``) headers, or answers ``reply``."""

    def __init__(
        self,
        req: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
        resp: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
        reply: LocalReply | None = None,
    ) -> None:
        self.req = list(req)
        self.resp = list(resp)
        self.reply = reply

    def request_headers(self, headers: HeaderMap, end_stream: bool) -> Verdict:
        if self.reply is not None:
            return Reply(self.reply)
        for k, v in self.req:
            headers.replace(k, v)
        return CONTINUE

    def response_headers(self, headers: HeaderMap, end_stream: bool) -> Verdict:
        for k, v in self.resp:
            headers.replace(k, v)
        return CONTINUE


def _with_filter(h, make) -> None:
    h.sync(setattr, h.server, "filter_factory", lambda info: make())


@pytest.mark.parametrize(
    "name,value",
    [
        (b"x-evil", b"a\r\nx-smuggled: 1"),
        (b"x-evil", b"a\nb"),
        (b"x-evil", b"nul\x00byte"),
        (b"bad name", b"v"),
        (b"x-evil:", b"v"),
        (b":path", b"/a HTTP/1.1\r\nx-smuggled: 1\r\n\r\nGET /b"),
        (b":path", b"http://elsewhere/"),
        (b":method", b"GET /x"),
        (b":authority", b"h\r\nx-smuggled: 1"),
    ],
)
def test_invalid_request_header_never_reaches_the_upstream(
    start_proxy, scripted_upstream, name, value
):
    def script(conn: socket.socket, up: ScriptedUpstream) -> None:
        buf = bytearray()
        if up.read_head(conn, buf) is not None:
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    up = scripted_upstream(script)
    h = start_proxy(make_config(clusters={"backend": up.url}))
    _with_filter(h, lambda: _Inject(req=[(name, value)]))
    (r,) = raw_exchange(h, b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n")
    assert r.status == 503
    assert b"invalid header" in r.body
    time.sleep(0.05)
    assert b"x-smuggled" not in up.received
    assert b"GET /b" not in up.received
    # the connection and the proxy keep serving
    _with_filter(h, _Inject)
    (ok,) = raw_exchange(h, b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n")
    assert ok.status == 200 and ok.body == b"ok"


@pytest.mark.parametrize(
    "name,value",
    [
        (b"x-evil", b"a\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0"),
        (b"set-cookie", b"a\rb"),
        (b"x-evil", b"\x00"),
        (b"bad\x7fname", b"v"),
    ],
)
def test_invalid_response_header_gets_502_not_a_split_response(start_proxy, name, value):
    h = start_proxy(make_config())
    _with_filter(h, lambda: _Inject(resp=[(name, value)]))
    with connect(h) as s:
        s.sendall(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n")
        f = s.makefile("rb")
        first = read_response(f)
        second = read_response(f)
    assert first.status == 502 and b"invalid header" in first.body
    assert second.status == 502
    assert all(k != "x-evil" for k, _ in first.headers + second.headers)


def test_local_reply_with_an_invalid_header_gets_502(start_proxy):
    h = start_proxy(make_config())
    bad = LocalReply(403, b"no\n", [(b"x-evil", b"a\r\nx-injected: 1")])
    _with_filter(h, lambda: _Inject(reply=bad))
    with connect(h) as s:
        s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        data = b""
        s.settimeout(5)
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
    assert data.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert b"x-injected" not in data


def test_two_host_headers_get_400(start_proxy, upstream):
    h = start_proxy(make_config(clusters={"backend": upstream.url}))
    (r,) = raw_exchange(h, b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n")
    assert r.status == 400 and b"host" in r.body
    assert upstream.requests == []


def test_expect_100_continue_is_answered_and_not_forwarded(start_proxy, upstream):
    h = start_proxy(make_config(clusters={"backend": upstream.url}))
    with connect(h) as s:
        s.sendall(
            b"POST /up HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n"
        )
        f = s.makefile("rb")
        assert f.readline() == b"HTTP/1.1 100 Continue\r\n"  # before any body byte was sent
        assert f.readline() == b"\r\n"
        s.sendall(b"hello")
        r = read_response(f)
    assert r.status == 200
    rec = upstream.requests[-1]
    assert rec["body"] == "hello"
    assert not any(k.lower() == "expect" for k in rec["headers"])


def test_h2c_upgrade_is_ignored_and_served_over_http_1_1(start_proxy, upstream):
    h = start_proxy(make_config(clusters={"backend": upstream.url}))
    req = (
        b"GET /h2c HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings\r\n"
        b"upgrade: h2c\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    )
    # twice on one connection: the connection stays usable after the ignored upgrade
    r1, r2 = raw_exchange(h, req + b"GET /next HTTP/1.1\r\nhost: x\r\n\r\n", n=2)
    assert r1.status == 200 and r2.status == 200
    first = upstream.requests[0]["headers"]
    assert not any(k.lower() in ("upgrade", "http2-settings") for k in first)
    assert [q["path"] for q in upstream.requests] == ["/h2c", "/next"]


def test_websocket_upgrade_is_still_refused(start_proxy):
    h = start_proxy(make_config())
    (r,) = raw_exchange(
        h, b"GET / HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
    )
    assert r.status == 501


@pytest.mark.parametrize(
    "status,phrase", [(418, "I'm a Teapot"), (501, "Not Implemented"), (299, "Unknown")]
)
def test_reason_phrases_come_from_http_status(start_proxy, status, phrase):
    assert reason(status) == phrase
    h = start_proxy(make_config())
    _with_filter(h, lambda: _Inject(reply=LocalReply(status, b"x\n")))
    (r,) = raw_exchange(h, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    assert (r.status, r.reason) == (status, phrase)


def test_upstream_status_reason_comes_from_http_status(start_proxy, upstream):
    h = start_proxy(make_config(clusters={"backend": upstream.url}))
    (r,) = raw_exchange(h, b"GET /status/418 HTTP/1.1\r\nhost: x\r\n\r\n")
    assert (r.status, r.reason) == (418, "I'm a Teapot")


def _answering(scripted_upstream, answer: bytes):
    def script(conn: socket.socket, up: ScriptedUpstream) -> None:
        buf = bytearray()
        while up.read_head(conn, buf) is not None:
            conn.sendall(answer)

    return scripted_upstream(script)


def test_response_with_no_header_at_all_keeps_the_connection_in_step(
    start_proxy, scripted_upstream
):
    """A 204 with no header line: the head is the status line and one CRLF, nothing more
    (an extra CRLF would be read as the start of the next response)."""
    up = _answering(scripted_upstream, b"HTTP/1.1 204 No Content\r\n\r\n")
    h = start_proxy(make_config(clusters={"backend": up.url}))
    with connect(h) as s:
        s.sendall(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n")
        f = s.makefile("rb")
        assert f.readline() == b"HTTP/1.1 204 No Content\r\n"
        assert f.readline() == b"\r\n"
        s.sendall(b"GET /b HTTP/1.1\r\nhost: x\r\n\r\n")
        assert f.readline() == b"HTTP/1.1 204 No Content\r\n"


@pytest.mark.parametrize("status", [b"600", b"999"])
def test_upstream_status_above_599_is_a_malformed_response(start_proxy, scripted_upstream, status):
    up = _answering(scripted_upstream, b"HTTP/1.1 " + status + b" X\r\ncontent-length: 0\r\n\r\n")
    h = start_proxy(make_config(clusters={"backend": up.url}))
    (r,) = raw_exchange(h, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    assert r.status == 502 and b"out of range" in r.body
