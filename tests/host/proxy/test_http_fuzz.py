"""Property-based fuzzing of the HTTP/1.1 data path with Hypothesis (issue 13 §12b).

Listener side: request lines, methods, targets, versions, header names, values and
sizes, Content-Length / Transfer-Encoding conflicts and smuggling shapes, chunk sizes,
pipelining and clients that send in small pieces. Upstream side: garbage, broken
framing, a close mid-response, no answer at all.

Properties, for every example: what the proxy writes parses as HTTP/1.1 (httptools),
every final status is 200-599, it answers or closes within a bounded time, a request
hidden in a body never reaches the upstream, the proxy keeps serving, and when the
examples are done no connection or request is left open (bounded memory).

Example counts are bounded (``max_examples``) and printed, so the run stays well under
a minute; the short timeouts in the Proxy document keep incomplete requests quick.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import httptools
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host.proxy.stream import PassThroughFilter

from .conftest import ScriptedUpstream

_FAST_TIMEOUTS = {"requestHeaders": "300ms", "idle": "500ms"}
_SETTINGS: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    "database": None,
}


def _config(upstream_url: str, timeout: str = "2s") -> str:
    spec = {
        "listen": "127.0.0.1:0",
        "admin": "127.0.0.1:0",
        "clusters": [{"name": "backend", "url": upstream_url, "timeout": timeout}],
        "defaultCluster": "backend",
        "timeouts": _FAST_TIMEOUTS,
    }
    return yaml.safe_dump({"apiVersion": "wasmdesk.dev/v1alpha1", "kind": "Proxy", "spec": spec})


class _Responses:
    """Parses what the proxy wrote; raises if it is not valid HTTP/1.1."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.statuses: list[int] = []

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status >= 200:
            self.statuses.append(status)

    def feed(self, data: bytes) -> None:
        self.parser.feed_data(data)


def _talk(
    addr: tuple[str, int], pieces: list[bytes], expected: int, pause: float = 0.0
) -> tuple[_Responses, bool]:
    """Send ``pieces`` one by one (``pause`` seconds apart: a slow client), then read
    until ``expected`` final responses arrived or the proxy closed. Returns the parsed
    responses and whether it closed."""
    out = _Responses()
    with socket.create_connection(addr, timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for i, p in enumerate(pieces):
                if i and pause:
                    time.sleep(pause)
                s.sendall(p)
        except OSError:
            pass  # the proxy may close as soon as it saw a bad request
        deadline = time.monotonic() + 8.0
        while len(out.statuses) < expected:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = s.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return out, True
            except TimeoutError:
                raise AssertionError(
                    f"no answer and no close within 8 s to {b''.join(pieces)[:300]!r}"
                ) from None
            if not data:
                return out, True
            out.feed(data)
    return out, False


# -- request strategies ------------------------------------------------------------------------

_METHODS = st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"PATCH"])
_BAD_METHODS = st.sampled_from([b"G\x00T", b"GET /", b"", b"\xff", b"CONNECT", b"PRI"])
_TARGETS = st.sampled_from(
    [b"/", b"/a?b=c", b"*", b"http://h/x", b"/%00", b"/a b", b"/\xff", b"", b"//x", b"/" * 300]
)
_VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.9", b"HTP/1.1"])
_NAMES = st.one_of(
    st.sampled_from(
        [
            b"content-length",
            b"transfer-encoding",
            b"host",
            b"connection",
            b"expect",
            b"upgrade",
            b"x-a",
            b"te",
            b"trailer",
        ]
    ),
    st.binary(min_size=0, max_size=12),
)
_VALUES = st.one_of(
    st.sampled_from(
        [b"chunked", b"gzip, chunked", b"chunked, gzip", b"0", b"5", b"-1", b"1e3", b"close"]
    ),
    st.sampled_from([b"100-continue", b"h2c", b" chunked", b"\tchunked", b"18446744073709551616"]),
    st.binary(min_size=0, max_size=40),
)


@st.composite
def _body(draw: Any) -> bytes:
    """A body in one of several framings, valid or not, maybe hiding a request."""
    kind = draw(st.sampled_from(["none", "raw", "chunks", "bad_chunks", "smuggle"]))
    if kind == "none":
        return b""
    if kind == "raw":
        return draw(st.binary(max_size=200))
    if kind == "smuggle":
        return b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n"
    sizes = draw(st.lists(st.integers(0, 40), max_size=4))
    parts = [b"%x\r\n%s\r\n" % (n, b"z" * n) for n in sizes if n]
    if kind == "bad_chunks":
        parts.append(draw(st.sampled_from([b"g\r\n", b"ffffffffffffffffff\r\nx\r\n", b"3\r\nab"])))
    parts.append(b"0\r\n" + draw(st.sampled_from([b"", b"x-t: 1\r\n", b"bad trailer\r\n"])))
    return b"".join(parts) + b"\r\n"


@st.composite
def _request(draw: Any) -> bytes:
    method = draw(st.one_of(_METHODS, _BAD_METHODS)) if draw(st.booleans()) else b"GET"
    target = draw(_TARGETS)
    version = draw(_VERSIONS) if draw(st.integers(0, 4)) == 0 else b"HTTP/1.1"
    headers = [(b"host", b"x")] if draw(st.integers(0, 5)) else []
    headers += draw(st.lists(st.tuples(_NAMES, _VALUES), max_size=5))
    if draw(st.integers(0, 9)) == 0:
        headers.append((b"x-big", b"b" * draw(st.integers(1000, 70000))))
    sep = draw(st.sampled_from([b"\r\n"] * 6 + [b"\n", b"\r"]))
    head = method + b" " + target + b" " + version + sep
    head += b"".join(k + b": " + v + sep for k, v in headers)
    return head + sep + draw(_body())


@st.composite
def _conversation(draw: Any) -> tuple[list[bytes], int, float]:
    """One or more pipelined requests, sent in arbitrary pieces, sometimes slowly."""
    reqs = draw(st.lists(_request(), min_size=1, max_size=3))
    if draw(st.booleans()):
        reqs.append(b"GET /last HTTP/1.1\r\nhost: x\r\n\r\n")
    data = b"".join(reqs)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    pieces, last = [], 0
    for c in [*cuts, len(data)]:
        if c > last:
            pieces.append(data[last:c])
            last = c
    return pieces, len(reqs), draw(st.sampled_from([0.0, 0.0, 0.0, 0.0, 0.02]))


def _track_parsed_paths(h: Any) -> list[bytes]:
    """The request targets the proxy itself parsed from clients, in order (taken by the
    stream filter every exchange runs when its headers arrive: before any byte goes
    upstream)."""
    paths: list[bytes] = []

    class Tracking(PassThroughFilter):
        def request_headers(self, headers: Any, end_stream: bool) -> Any:
            paths.append(headers.get(b":path") or b"")
            return super().request_headers(headers, end_stream)

    h.sync(setattr, h.server, "filter_factory", lambda info: Tracking())
    return paths


def _assert_not_smuggled(
    parsed: list[bytes], reached: list[dict[str, Any]], pieces: list[bytes]
) -> None:
    """Every ``/smuggled`` request the upstream got is one the proxy itself parsed from the
    client as a request (after a chunked body's last chunk, or a content-length body, it is a
    legitimate pipelined request, forwarded when the proxy gets to it before the client
    hangs up). Smuggling is the upstream seeing a request the proxy took for body bytes."""
    smuggled = sum("/smuggled" in str(r["path"]) for r in reached)
    assert smuggled <= parsed.count(b"/smuggled"), pieces


def test_a_request_after_a_chunked_body_is_pipelined_not_smuggled(start_proxy, upstream):
    """The fuzz's smuggling check tells a legitimate pipelined request (the proxy parsed it
    too) from smuggling: after a chunked body's last chunk the next bytes are a request."""
    h = start_proxy(_config(upstream.url))
    parsed = _track_parsed_paths(h)
    data = (
        b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n"
    )
    seen_upstream = len(upstream.requests)
    responses, _ = _talk(h.addr, [data], 2)
    assert len(responses.statuses) == 2
    reached = upstream.requests[seen_upstream:]
    assert [str(r["path"]) for r in reached] == ["/", "/smuggled"]
    _assert_not_smuggled(parsed, reached, [data])
    parsed.clear()
    with pytest.raises(AssertionError):  # the same upstream view without the proxy's parse
        _assert_not_smuggled(parsed, reached, [data])


def test_fuzz_the_listener(start_proxy, upstream):
    h = start_proxy(_config(upstream.url))
    parsed = _track_parsed_paths(h)
    counts = {"examples": 0, "closed": 0, "answered": 0}

    @settings(max_examples=200, **_SETTINGS)
    @given(_conversation())
    def check(conv: tuple[list[bytes], int, float]) -> None:
        pieces, n, pause = conv
        counts["examples"] += 1
        seen_upstream, seen_parsed = len(upstream.requests), len(parsed)
        responses, closed = _talk(h.addr, pieces, n, pause)
        counts["closed"] += closed
        counts["answered"] += len(responses.statuses)
        assert all(200 <= s <= 599 for s in responses.statuses), responses.statuses
        assert len(responses.statuses) <= n
        _assert_not_smuggled(parsed[seen_parsed:], upstream.requests[seen_upstream:], pieces)

    check()
    print(
        f"\nlistener fuzz: {counts['examples']} examples, {counts['answered']} responses, "
        f"{counts['closed']} closed by the proxy"
    )
    with h.client() as c:
        assert c.get("/still-serving").status_code == 200
    h.wait_for(
        lambda: (st_ := h.stats())["http.downstream_cx_active"] == 0
        and st_["http.downstream_rq_active"] == 0,
        what="no connection or request left open",
    )


# -- upstream side -------------------------------------------------------------------------------


@st.composite
def _upstream_answer(draw: Any) -> tuple[bytes, str]:
    """Bytes the upstream sends, and what it does next: close, or hang (no answer)."""
    kind = draw(st.sampled_from(["garbage", "framing", "truncated", "silent", "valid"]))
    after = draw(st.sampled_from(["close", "hang"]))
    if kind == "silent":
        return b"", after
    if kind == "garbage":
        return draw(st.binary(min_size=1, max_size=300)), after
    status = draw(st.sampled_from([b"200", b"204", b"304", b"418", b"999", b"1000", b"abc", b"-1"]))
    head = b"HTTP/1.1 " + status + b" X\r\n"
    head += b"".join(
        k + b": " + v + b"\r\n" for k, v in draw(st.lists(st.tuples(_NAMES, _VALUES), max_size=4))
    )
    body = draw(_body())
    data = head + b"\r\n" + body
    if kind == "truncated" and data:
        data = data[: draw(st.integers(1, len(data)))]
    if kind == "valid":
        data = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    return data, after


def test_fuzz_the_upstream_side(start_proxy, scripted_upstream):
    current: dict[str, Any] = {"answer": (b"", "close")}
    release = threading.Event()

    def script(conn: socket.socket, up: ScriptedUpstream) -> None:
        buf = bytearray()
        if up.read_head(conn, buf) is None:
            return
        data, after = current["answer"]
        if data:
            conn.sendall(data)
        if after == "hang":
            release.wait(1.0)  # the proxy's route timeout (300 ms) ends it first

    up = scripted_upstream(script)
    h = start_proxy(_config(up.url, timeout="300ms"))
    counts = {"examples": 0}
    seen: dict[int, int] = {}

    @settings(max_examples=60, **_SETTINGS)
    @given(_upstream_answer())
    def check(answer: tuple[bytes, str]) -> None:
        counts["examples"] += 1
        current["answer"] = answer
        # connection: close keeps the pooled upstream out of the next example
        req = b"GET /u HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        responses, _closed = _talk(h.addr, [req], 1)
        for s in responses.statuses:
            assert 200 <= s <= 599, s
            seen[s] = seen.get(s, 0) + 1

    check()
    release.set()
    print(f"\nupstream fuzz: {counts['examples']} examples, statuses {sorted(seen.items())}")
    current["answer"] = (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", "close")
    with h.client() as c:
        r = c.get("/after")
    assert r.status_code == 200 and r.content == b"ok"
    h.wait_for(
        lambda: (st_ := h.stats())["http.downstream_cx_active"] == 0
        and st_["http.downstream_rq_active"] == 0,
        what="no connection or request left open",
    )
