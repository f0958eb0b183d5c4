"""The exchange core emits semantic events (issue 8 "shape"; issue 9 builds on it): the
HTTP/1.1 adapters frame them. Regressions of that move: trailers a plugin makes
unserializable after the head went out are dropped at framing, never written raw (the
old core wrote them with ``framing.trailer_block`` unchecked, a request/response
splitting hole); and a streamed message's framing stays in step."""

from __future__ import annotations

import socket
import time

from host.headers import HeaderMap
from host.proxy.core_api import ProxyCore
from host.proxy.stream import CONTINUE, PassThroughFilter, Verdict

from .conftest import ScriptedUpstream, connect, make_config

EVIL = (b"x-evil", b"a\r\nx-smuggled: 1")


class _BadTrailers(PassThroughFilter):
    """Sets a trailer with CR LF in its value on the request and the response."""

    def request_trailers(self, trailers: HeaderMap) -> Verdict:
        trailers.replace(*EVIL)
        return CONTINUE

    def response_trailers(self, trailers: HeaderMap) -> Verdict:
        trailers.replace(*EVIL)
        return CONTINUE


def _read_all_chunked(f) -> tuple[bytes, bytes]:  # type: ignore[no-untyped-def]
    head = b""
    while (ln := f.readline()) not in (b"\r\n", b""):
        head += ln
    rest = b""
    while True:
        size = int(f.readline().strip(), 16)
        if size == 0:
            break
        rest += f.read(size)
        f.readline()
    tail = b""
    while (ln := f.readline()) not in (b"\r\n", b""):
        tail += ln
    return head + b"\r\n" + rest, tail


def test_bad_trailers_after_a_streamed_head_are_dropped_both_ways(
    start_proxy, scripted_upstream
) -> None:
    got_request = bytearray()

    def script(conn: socket.socket, up: ScriptedUpstream) -> None:
        buf = bytearray()
        while not buf.endswith(b"\r\n\r\n") or b"\r\n0\r\n" not in buf:
            data = up.recv(conn)
            if not data:
                return
            buf += data
        got_request.extend(buf)
        conn.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        time.sleep(0.2)  # the head and the first chunk are out before the trailers come
        conn.sendall(b"0\r\nx-rt: 2\r\n\r\n")

    up = scripted_upstream(script)
    h = start_proxy(make_config(clusters={"backend": up.url}))
    h.sync(setattr, h.server, "filter_factory", lambda info: _BadTrailers())
    with connect(h) as s:
        s.sendall(b"POST /t HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
        time.sleep(0.2)  # the request head went upstream before its trailers
        s.sendall(b"0\r\nx-t: 1\r\n\r\n")
        message, trailers = _read_all_chunked(s.makefile("rb"))
    assert message.startswith(b"HTTP/1.1 200 OK") and message.endswith(b"hello")
    assert b"x-smuggled" not in trailers and b"x-evil" not in trailers
    assert b"x-smuggled" not in got_request and b"abc\r\n0\r\n\r\n" in got_request


# -- the core alone: what it emits, with recording protocol objects (no I/O at all) ---------


class _Up:
    """An ``UpstreamStream`` that records the events the exchange sends it."""

    tls = None  # a plain-text cluster

    def __init__(self, sink) -> None:  # type: ignore[no-untyped-def]
        self.sink = sink
        self.events: list[tuple] = []  # type: ignore[type-arg]

    def send_headers(self, headers: HeaderMap, end_stream: bool) -> str | None:
        self.events.append(("headers", headers.items(), end_stream))
        return None

    def send_data(self, data: bytes, end_stream: bool) -> None:
        self.events.append(("data", data, end_stream))

    def send_trailers(self, trailers: HeaderMap) -> str | None:
        self.events.append(("trailers", trailers.items()))
        return None

    def pause(self, why: int) -> None: ...

    def resume(self, why: int) -> None: ...

    def abandon(self) -> None:
        self.events.append(("abandon",))


class _Core(ProxyCore):
    def __init__(self, loop, flt) -> None:  # type: ignore[no-untyped-def]
        from host.proxy.exchange import Limits

        from host.proxy.deadlines import Deadlines
        from host.proxy.write_batch import WriteBatch

        self.loop, self.filter, self.limits = loop, flt, Limits()
        self.pool, self.open_connections, self.up = self, 0, None
        self.deadlines, self.write_batch = Deadlines(loop), WriteBatch(loop)

    def route(self, headers, info):  # type: ignore[no-untyped-def]
        from host.proxy.upstream import Cluster

        return Cluster("c", "127.0.0.1", 9)

    def new_filter(self, info):  # type: ignore[no-untyped-def]
        return self.filter

    def open_stream(self, cluster, sink, done) -> None:  # type: ignore[no-untyped-def]
        self.up = _Up(sink)
        done(self.up, "")

    def exchange_started(self, ex) -> None: ...  # type: ignore[no-untyped-def]

    def exchange_finished(self, ex) -> None: ...  # type: ignore[no-untyped-def]


class _Down:
    """A ``Downstream`` that records the response events."""

    client, client_ip, local, id = ("127.0.0.1", 1), b"127.0.0.1", ("127.0.0.1", 2), 7
    write_paused = closing = False

    def __init__(self, core) -> None:  # type: ignore[no-untyped-def]
        self.core = core
        self.events: list[tuple] = []  # type: ignore[type-arg]

    def send_headers(self, status: int, headers: HeaderMap, end_stream: bool) -> bool:
        self.events.append(("headers", status, end_stream))
        return True

    def send_data(self, data: bytes, end_stream: bool) -> None:
        self.events.append(("data", data, end_stream))

    def send_trailers(self, trailers: HeaderMap) -> bool:
        self.events.append(("trailers", trailers.items()))
        return True

    def pause(self, why: int) -> None: ...

    def resume(self, why: int) -> None: ...

    def drop(self, abort: bool) -> None:
        self.events.append(("drop", abort))

    def exchange_done(self, ex, keep_alive: bool) -> None:  # type: ignore[no-untyped-def]
        self.events.append(("done", keep_alive))


class _Buffering(PassThroughFilter):
    """Holds the request body and releases it changed at the end (as a plugin that
    returns StopIterationAndBuffer, then rewrites the body)."""

    def __init__(self) -> None:
        self.buf = b""

    def request_data(self, data: bytes, end_stream: bool) -> Verdict:
        from host.proxy.stream import HOLD, Continue

        self.buf += data
        return Continue(self.buf.upper() + b"!") if end_stream else HOLD


def _run(flt, headers, chunks, trailers=None):  # type: ignore[no-untyped-def]
    import asyncio

    from host.proxy.exchange import Exchange

    loop = asyncio.new_event_loop()
    try:
        core = _Core(loop, flt)
        down = _Down(core)
        ex = Exchange(down)
        ex.open()
        h = HeaderMap([(b":method", b"POST"), (b":path", b"/"), (b":authority", b"a"), *headers])
        ex.begin(h, b"POST", True)
        for i, c in enumerate(chunks):
            ex.downstream_body(c, end_stream=trailers is None and i == len(chunks) - 1)
        ex.downstream_complete(trailers)  # the client's side ends (with trailers, or not)
        up = core.up
        ex.upstream_headers(200, [(b"content-length", b"2")], True)
        ex.upstream_body(b"ok")
        ex.upstream_complete()
        return up.events, down.events
    finally:
        loop.close()


def test_the_core_sends_semantic_events_a_buffered_body_gets_its_real_length() -> None:
    up, down = _run(_Buffering(), [(b"content-length", b"6")], [b"abc", b"def"])
    (kind, headers, end), data = up
    assert kind == "headers" and not end
    assert (b"content-length", b"7") in headers  # ABCDEF! : the body the filter released
    assert data == ("data", b"ABCDEF!", True)
    assert down == [
        ("headers", 200, False),
        ("data", b"ok", False),
        ("data", b"", True),
        ("done", True),
    ]


def test_the_core_streams_a_body_without_a_length_then_its_trailers() -> None:
    up, _ = _run(PassThroughFilter(), [], [b"abc"], trailers=[(b"x-t", b"1")])
    assert [e[0] for e in up] == ["headers", "data", "trailers"]
    assert up[0][2] is False and all(k != b"content-length" for k, _ in up[0][1])
    assert up[1] == ("data", b"abc", False) and up[2] == ("trailers", [(b"x-t", b"1")])


def test_the_http1_adapter_sets_the_request_protocol(start_proxy) -> None:
    from .conftest import plugin, raw_exchange, wasm_plugin

    h = start_proxy(make_config(wasm_plugin("add", plugin("add_header"), root_id="add_header")))
    (r10,) = raw_exchange(h, b"GET /v10 HTTP/1.0\r\nhost: x\r\n\r\n")
    (r11,) = raw_exchange(h, b"GET /v11 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    assert r10.status == r11.status == 200
    recs = h.wait_for(
        lambda: {x.path: x.protocol for x in h.records()} if len(h.records()) == 2 else None
    )
    assert recs == {"/v10": "HTTP/1.0", "/v11": "HTTP/1.1"}
    stats = h.stats()
    assert (stats["http.downstream_rq_http1_total"], stats["http.downstream_rq_http2_total"]) == (
        2,
        0,
    )


def test_a_codec_error_of_either_protocol_flags_a_downstream_protocol_error() -> None:
    from host.proxy.stream_attrs import DOWNSTREAM_PROTOCOL_ERROR, response_flags

    for codec in ("http1", "http2"):
        details = f"{codec}.codec_error{{request header block exceeds 64 KiB}}"
        assert response_flags("reply", details) == DOWNSTREAM_PROTOCOL_ERROR
