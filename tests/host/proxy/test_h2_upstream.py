"""The HTTP/2 upstream (host/proxy/upstream_h2.py) driven directly with a recording
``ResponseSink``, against real servers on 127.0.0.1: a grpcio server (gRPC over
h2c) and a scripted ``h2`` server (tests/host/proxy/h2_test_server.py) for
resets, GOAWAY, flow control both ways and the concurrent-stream limit."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from host.headers import HeaderMap
from host.proxy.config import parse_config
from host.proxy.upstream import BACKLOG, Cluster
from host.proxy.upstream_api import ResponseSink
from host.proxy.upstream_h2 import (
    STREAM_WINDOW,
    H2Pool,
    H2Stream,
    H2StreamReset,
    request_header_list,
)

from .certs import self_signed
from .conftest import ProxyHarness, config_text, connect
from .grpc_echo_server import EchoServer
from .h2_test_server import ScriptedH2Server, ThreadedH2Server


class Sink(ResponseSink):
    """Records what the upstream reports, as an exchange would receive it."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.ended: asyncio.Future[tuple[Any, ...]] = loop.create_future()
        self.got_headers = asyncio.Event()
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.expect_body: bool | None = None
        self.body = bytearray()
        self.trailers: HeaderMap | None = None
        self.congested: list[bool] = []

    def upstream_headers(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        expect_body: bool,
        verified: bool = False,
    ) -> None:
        self.status, self.headers, self.expect_body = status, dict(headers), expect_body
        self.got_headers.set()

    def upstream_body(self, chunk: bytes) -> None:
        self.body += chunk

    def upstream_complete(self, trailers: HeaderMap | None = None) -> None:
        self.trailers = trailers
        self.ended.set_result(("complete",))

    def upstream_lost(self, exc: Exception | None) -> None:
        self.ended.set_result(("lost", exc))

    def upstream_error(self, status: int, message: str) -> None:
        self.ended.set_result(("error", status, message))

    def upstream_congested(self, congested: bool) -> None:
        self.congested.append(congested)


async def open_stream(pool: H2Pool, cluster: Cluster, sink: Sink) -> H2Stream:
    got: asyncio.Future[H2Stream] = asyncio.get_running_loop().create_future()

    def done(stream: H2Stream | None, why: str) -> None:
        if stream is None:
            got.set_exception(ConnectionError(why))
        else:
            got.set_result(stream)

    pool.acquire(cluster, sink, done)
    return await asyncio.wait_for(got, 5)


async def send(
    pool: H2Pool, cluster: Cluster, headers: HeaderMap, end_stream: bool
) -> tuple[H2Stream, Sink]:
    """A new stream to ``cluster`` with a recording sink, its request headers sent."""
    sink = Sink()
    s = await open_stream(pool, cluster, sink)
    s.send_headers(headers, end_stream)
    return s, sink


def request(path: str, method: str = "GET", **extra: str) -> HeaderMap:
    h = HeaderMap([(":method", method), (":path", path), (":authority", ""), (":scheme", "http")])
    for k, v in extra.items():
        h.add(k.replace("_", "-"), v)
    return h


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 10))


@pytest.fixture(scope="module")
def grpc_echo() -> Iterator[EchoServer]:
    srv = EchoServer()
    yield srv
    srv.stop()


def grpc_frame(msg: bytes) -> bytes:
    return b"\0" + struct.pack(">I", len(msg)) + msg


# -- gRPC against grpcio ------------------------------------------------------------------------


def with_grpc(echo: EchoServer, body: Callable[[H2Pool, Cluster], Awaitable[None]]) -> None:
    """Run ``body`` with a pool and a grpc:// cluster to the echo server."""

    async def main() -> None:
        pool = H2Pool(asyncio.get_running_loop())
        try:
            await body(pool, Cluster.from_url("echo", f"grpc://127.0.0.1:{echo.port}"))
        finally:
            pool.close()

    run(main)


async def grpc_call(
    pool: H2Pool, cluster: Cluster, method: str, **extra: str
) -> tuple[H2Stream, Sink]:
    """A stream calling ``/test.Echo/<method>``, its request headers sent."""
    headers = request(
        f"/test.Echo/{method}", "POST", content_type="application/grpc", te="trailers", **extra
    )
    return await send(pool, cluster, headers, False)


def test_grpc_unary_call_gets_its_message_and_the_status_trailer(grpc_echo: EchoServer) -> None:
    async def body(pool: H2Pool, cluster: Cluster) -> None:
        s, sink = await grpc_call(pool, cluster, "Unary", x_probe="p1", host="echo.local")
        s.send_data(grpc_frame(b"hi"), True)
        assert await sink.ended == ("complete",)
        assert sink.status == 200
        assert sink.headers[b"x-srv"] == b"unary"
        assert sink.headers[b"content-type"] == b"application/grpc"
        assert bytes(sink.body) == grpc_frame(b"echo:hi")
        assert sink.trailers is not None
        assert sink.trailers.get("grpc-status") == b"0"
        assert sink.trailers.get("seen-x-probe") == b"p1"
        # :authority came from host (the exchange's :authority was empty)
        assert grpc_echo.seen_authority[-1] == "echo.local"

    with_grpc(grpc_echo, body)


def test_grpc_error_status_arrives_as_trailers(grpc_echo: EchoServer) -> None:
    async def body(pool: H2Pool, cluster: Cluster) -> None:
        s, sink = await grpc_call(pool, cluster, "Unary")
        s.send_data(grpc_frame(b"fail"), True)
        assert await sink.ended == ("complete",)
        assert sink.status == 200
        # grpcio answers an abort trailers-only: the status is in the headers
        status = (sink.trailers.get("grpc-status") if sink.trailers else None) or sink.headers.get(
            b"grpc-status"
        )
        assert status == b"5"

    with_grpc(grpc_echo, body)


def test_grpc_bidi_stream_messages_flow_both_ways_on_one_stream(grpc_echo: EchoServer) -> None:
    async def body(pool: H2Pool, cluster: Cluster) -> None:
        s, sink = await grpc_call(pool, cluster, "Chat")
        s.send_data(grpc_frame(b"one"), False)
        await asyncio.wait_for(sink.got_headers.wait(), 5)
        for _ in range(100):
            if grpc_frame(b"re:one") in sink.body:
                break
            await asyncio.sleep(0.02)
        assert bytes(sink.body) == grpc_frame(b"re:one")  # before the request ended
        s.send_data(grpc_frame(b"two"), False)
        s.send_trailers(HeaderMap())  # an empty trailer block still ends the request
        assert await sink.ended == ("complete",)
        assert bytes(sink.body) == grpc_frame(b"re:one") + grpc_frame(b"re:two") + grpc_frame(
            b"bye"
        )
        assert sink.trailers is not None
        assert sink.trailers.get("x-count") == b"2"
        assert sink.trailers.get("grpc-status") == b"0"

    with_grpc(grpc_echo, body)


def test_streams_to_one_cluster_share_one_connection(grpc_echo: EchoServer) -> None:
    async def body(pool: H2Pool, cluster: Cluster) -> None:
        sinks = [Sink() for _ in range(5)]
        streams = [await open_stream(pool, cluster, k) for k in sinks]
        for i, s in enumerate(streams):
            s.send_headers(
                # no te: gRPC servers require "te: trailers"; it is added for gRPC
                request("/test.Echo/Unary", "POST", content_type="application/grpc"),
                False,
            )
            s.send_data(grpc_frame(b"m%d" % i), True)
        for i, k in enumerate(sinks):
            assert await k.ended == ("complete",)
            assert bytes(k.body) == grpc_frame(b"echo:m%d" % i)
        assert pool.connects == 1
        assert len(pool.connections(cluster)) == 1

    with_grpc(grpc_echo, body)


# -- the scripted h2 server ---------------------------------------------------------------------


def with_server(
    body: Callable[[ScriptedH2Server, H2Pool, Cluster], Awaitable[None]],
    max_streams: int | None = None,
    **pool_kw: Any,
) -> None:
    async def main() -> None:
        srv = ScriptedH2Server(max_streams)
        port = await srv.start()
        pool = H2Pool(asyncio.get_running_loop(), **pool_kw)
        cluster = Cluster.from_url("h2", f"http://127.0.0.1:{port}", protocol="h2")
        try:
            await body(srv, pool, cluster)
        finally:
            pool.close()
            await srv.stop()

    run(main)


def test_http1_only_fields_are_dropped_te_trailers_kept_and_trailers_both_ways() -> None:
    async def body(srv: ScriptedH2Server, pool: H2Pool, cluster: Cluster) -> None:
        sink = Sink()
        s = await open_stream(pool, cluster, sink)
        h = request("/echo", "POST", te="trailers", connection="keep-alive", keep_alive="5")
        h.add("transfer-encoding", "chunked")
        s.send_headers(h, False)
        s.send_data(b"abc", False)
        s.send_trailers(HeaderMap([("x-sum", "42")]))
        assert await sink.ended == ("complete",)
        assert bytes(sink.body) == b"abc"
        assert sink.headers[b"x-seen-te"] == b"trailers"
        assert sink.headers[b"x-seen-connection-fields"] == b"-"
        assert sink.headers[b"x-seen-scheme"] == b"http"
        # no :authority and no host: the cluster's address
        assert sink.headers[b"x-seen-authority"] == cluster.address.encode()
        assert sink.trailers is not None
        assert sink.trailers.get("x-trailer") == b"yes"
        assert sink.trailers.get("x-req-trailer-x-sum") == b"42"

    with_server(body)


def test_te_other_than_trailers_is_dropped() -> None:
    items = request_header_list(
        HeaderMap([(":method", "GET"), (":path", "/"), ("te", "gzip"), ("upgrade", "h2c")]),
        b"http",
        b"up:80",
    )
    assert items == [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", b"up:80"),
        (b":path", b"/"),
    ]


def test_request_bigger_than_the_peers_window_is_sent_as_it_opens() -> None:
    async def body(srv: ScriptedH2Server, pool: H2Pool, cluster: Cluster) -> None:
        s, sink = await send(pool, cluster, request("/echo", "POST"), False)
        payload = bytes(range(256)) * 4096  # 1 MiB; the server's initial window is 64 KiB
        s.send_data(payload, True)
        # more than CONGESTED_BYTES waits for the peer's window: the exchange is told
        assert sink.congested[:1] == [True]
        assert await sink.ended == ("complete",)
        assert sink.trailers is not None
        assert sink.trailers.get("x-request-bytes") == b"%d" % len(payload)
        assert bytes(sink.body) == payload  # and back, past our own stream window
        assert sink.congested[-1] is False

    with_server(body)


def test_a_paused_stream_stops_the_server_at_its_window_and_resumes() -> None:
    async def body(srv: ScriptedH2Server, pool: H2Pool, cluster: Cluster) -> None:
        sink = Sink()
        s = await open_stream(pool, cluster, sink)
        s.pause(BACKLOG)  # as the exchange does when it holds too much
        size = 4 * STREAM_WINDOW
        s.send_headers(request(f"/big/{size}"), True)
        await asyncio.wait_for(sink.got_headers.wait(), 5)
        await asyncio.sleep(0.3)
        held = len(sink.body)
        assert 0 < held <= STREAM_WINDOW  # no WINDOW_UPDATE while paused
        # another stream on the same connection is not stalled by the paused one
        _s2, other = await send(pool, cluster, request("/big/1000"), True)
        assert await other.ended == ("complete",)
        assert len(other.body) == 1000
        assert not sink.ended.done()
        s.resume(BACKLOG)
        assert await sink.ended == ("complete",)
        assert len(sink.body) == size
        assert pool.connects == 1

    with_server(body)


def test_upstream_reset_before_the_response_is_lost_with_the_code() -> None:
    async def body(srv: ScriptedH2Server, pool: H2Pool, cluster: Cluster) -> None:
        _s, sink = await send(pool, cluster, request("/reset"), True)
        kind, exc = await sink.ended
        assert kind == "lost"
        assert isinstance(exc, H2StreamReset)
        assert "INTERNAL_ERROR" in str(exc)
        assert sink.status == 0
        # the connection is still good for the next stream
        _s2, ok = await send(pool, cluster, request("/echo"), True)
        assert await ok.ended == ("complete",)
        assert pool.connects == 1

    with_server(body)


def test_upstream_reset_mid_response_is_lost_after_the_headers() -> None:
    async def body(srv: ScriptedH2Server, pool: H2Pool, cluster: Cluster) -> None:
        _s, sink = await send(pool, cluster, request("/reset-mid"), True)
        kind, exc = await sink.ended
        assert kind == "lost"
        assert isinstance(exc, H2StreamReset)
        assert sink.status == 200
        assert bytes(sink.body) == b"hello"

    with_server(body)


def test_trailers_only_response_has_no_body_and_carries_the_status() -> None:
    async def body(srv: ScriptedH2Server, pool: H2Pool, cluster: Cluster) -> None:
        _s, sink = await send(
            pool, cluster, request("/trailers-only", "POST", content_type="application/grpc"), True
        )
        assert await sink.ended == ("complete",)
        assert sink.expect_body is False
        assert sink.headers[b"grpc-status"] == b"12"
        assert sink.trailers is None

    with_server(body)


def test_goaway_lets_the_stream_in_flight_finish_and_new_streams_use_a_new_connection() -> None:
    async def body(srv: ScriptedH2Server, pool: H2Pool, cluster: Cluster) -> None:
        _s, first = await send(pool, cluster, request("/goaway"), True)
        await asyncio.sleep(0.05)  # the GOAWAY arrived; the answer comes 100 ms later
        _s2, second = await send(pool, cluster, request("/echo"), True)
        assert await first.ended == ("complete",)
        assert bytes(first.body) == b"done"
        assert await second.ended == ("complete",)
        assert pool.connects == 2
        assert len(srv.conns) == 2
        assert [r.path for r in srv.conns[1].requests.values()] == ["/echo"]
        # the old connection closes once its last stream is done
        await asyncio.wait_for(srv.conns[0].closed, 2)
        assert srv.conns[0].ping_acks == 1  # read with the GOAWAY, still answered

    with_server(body)


def test_abandon_resets_the_stream_with_cancel() -> None:
    async def body(srv: ScriptedH2Server, pool: H2Pool, cluster: Cluster) -> None:
        s, sink = await send(pool, cluster, request("/hold"), True)
        for _ in range(100):
            if srv.requests:
                break
            await asyncio.sleep(0.01)
        s.abandon()
        for _ in range(100):
            if srv.conns[0].resets:
                break
            await asyncio.sleep(0.01)
        assert list(srv.conns[0].resets.values()) == [8]  # CANCEL
        await asyncio.sleep(0.05)
        assert not sink.ended.done()  # the exchange let go: nothing more is reported

    with_server(body)


def test_max_concurrent_streams_queues_past_the_limit_on_one_connection() -> None:
    async def body(srv: ScriptedH2Server, pool: H2Pool, cluster: Cluster) -> None:
        # the server allows 2 streams at once; the pool may open 1 connection
        _s, warm = await send(pool, cluster, request("/echo"), True)
        await warm.ended  # its SETTINGS arrived
        sinks = [Sink() for _ in range(6)]
        got: list[asyncio.Future[H2Stream]] = []
        for k in sinks:
            fut: asyncio.Future[H2Stream] = asyncio.get_running_loop().create_future()
            got.append(fut)

            def done(st: H2Stream | None, why: str, fut: asyncio.Future[H2Stream] = fut) -> None:
                assert st is not None, why
                st.send_headers(request("/big/70000"), True)
                fut.set_result(st)

            pool.acquire(cluster, k, done)
        assert sum(f.done() for f in got) == 2  # the others wait for a slot
        for k in sinks:
            assert await k.ended == ("complete",)
            assert len(k.body) == 70000
        assert pool.connects == 1
        assert srv.conns[0].max_open <= 2

    with_server(body, max_streams=2, max_connections=1)


def test_max_concurrent_streams_opens_another_connection_when_allowed() -> None:
    async def body(srv: ScriptedH2Server, pool: H2Pool, cluster: Cluster) -> None:
        _s, warm = await send(pool, cluster, request("/echo"), True)
        await warm.ended
        sinks = [Sink() for _ in range(4)]
        for k in sinks:
            st = await open_stream(pool, cluster, k)
            st.send_headers(request("/hold"), True)
        assert pool.connects == 2
        assert all(c.max_open <= 2 for c in srv.conns)
        for st in list(pool.connections(cluster)):
            st.close()

    with_server(body, max_streams=2, max_connections=4)


def test_idle_connection_is_closed_with_goaway() -> None:
    async def body(srv: ScriptedH2Server, pool: H2Pool, cluster: Cluster) -> None:
        _s, sink = await send(pool, cluster, request("/echo"), True)
        await sink.ended
        await asyncio.wait_for(srv.conns[0].closed, 2)
        assert srv.conns[0].goaway_received
        assert pool.connections(cluster) == []

    with_server(body, idle_timeout_s=0.2)


def test_connection_refused_fails_the_acquire() -> None:
    async def main() -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        pool = H2Pool(asyncio.get_running_loop())
        cluster = Cluster.from_url("gone", f"grpc://127.0.0.1:{port}")
        with pytest.raises(ConnectionError, match="connection failure"):
            await open_stream(pool, cluster, Sink())

    run(main)


def test_a_server_that_does_not_speak_http2_fails_the_stream_with_502() -> None:
    async def main() -> None:
        async def http1(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(100)
            writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        srv = await asyncio.start_server(http1, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        pool = H2Pool(asyncio.get_running_loop())
        cluster = Cluster.from_url("h1", f"http://127.0.0.1:{port}", protocol="h2")
        _s, sink = await send(pool, cluster, request("/"), True)
        ended = await sink.ended
        assert ended[0] in ("error", "lost")
        if ended[0] == "error":
            assert ended[1] == 502
        srv.close()
        await srv.wait_closed()

    run(main)


def test_cluster_urls_choose_the_protocol() -> None:
    g = Cluster.from_url("g", "grpc://127.0.0.1:50051")
    assert (g.protocol, g.tls, g.port) == ("h2", False, 50051)
    gs = Cluster.from_url("gs", "grpcs://example.test", ca_file="/tmp/ca.pem")
    assert (gs.protocol, gs.tls, gs.port, gs.ca_file) == ("h2", True, 443, "/tmp/ca.pem")
    h = Cluster.from_url("h", "http://127.0.0.1:8080", protocol="h2")
    assert (h.protocol, h.tls) == ("h2", False)
    assert Cluster.from_url("p", "http://127.0.0.1:8080").protocol == "http1"
    with pytest.raises(ValueError, match="protocol must be http1 or h2"):
        Cluster.from_url("x", "http://127.0.0.1:1", protocol="h3")
    with pytest.raises(ValueError, match="speak HTTP/2"):
        Cluster.from_url("x", "grpc://127.0.0.1:1", protocol="http1")


# -- TLS (grpcs://) -----------------------------------------------------------------------------


def _self_signed(tmp: Path) -> tuple[bytes, bytes]:
    key, crt = self_signed(tmp)
    return key.read_bytes(), crt.read_bytes()


def test_grpcs_cluster_speaks_h2_over_tls_verified_with_its_ca_file(tmp_path: Path) -> None:
    key, crt = _self_signed(tmp_path)
    srv = EchoServer(grpc.ssl_server_credentials([(key, crt)]))

    async def main() -> None:
        pool = H2Pool(asyncio.get_running_loop())
        url = f"grpcs://127.0.0.1:{srv.port}"
        cluster = Cluster.from_url("tls", url, ca_file=str(tmp_path / "crt.pem"))
        s, sink = await send(
            pool,
            cluster,
            request("/test.Echo/Unary", "POST", content_type="application/grpc"),
            False,
        )
        s.send_data(grpc_frame(b"secure"), True)
        assert await sink.ended == ("complete",)
        assert bytes(sink.body) == grpc_frame(b"echo:secure")
        assert sink.trailers is not None and sink.trailers.get("grpc-status") == b"0"
        # the system store does not trust the self-signed certificate
        untrusted = Cluster.from_url("untrusted", url)
        with pytest.raises(ConnectionError, match="TLS_error:.*CERTIFICATE_VERIFY_FAILED"):
            await open_stream(pool, untrusted, Sink())
        pool.close()

    try:
        run(main)
    finally:
        srv.stop()


def test_a_header_that_cannot_be_sent_is_refused_before_anything_goes_out() -> None:
    async def body(srv: ScriptedH2Server, pool: H2Pool, cluster: Cluster) -> None:
        s = await open_stream(pool, cluster, Sink())
        problem = s.send_headers(request("/echo", x_bad="a\r\nb"), True)
        assert problem is not None and "CR, LF or NUL" in problem
        assert s.send_headers(request("/echo", **{"bad name": "x"}), True) is not None
        s.abandon()  # the slot goes back: the stream sent nothing
        ok = Sink()
        s2 = await open_stream(pool, cluster, ok)
        assert s2.send_headers(request("/echo", "POST"), False) is None
        s2.send_data(b"x", False)
        # a trailer that cannot be sent after the headers went out is dropped; the
        # request still ends
        assert s2.send_trailers(HeaderMap([("x-t", "a\nb")])) is None
        assert await ok.ended == ("complete",)
        assert ok.trailers is not None and ok.trailers.get("x-request-bytes") == b"1"
        assert [r.path for r in srv.requests] == ["/echo"]
        assert srv.requests[0].trailers == []

    with_server(body)


# -- through the proxy: an HTTP/1.1 client, a `protocol: h2` cluster ----------------------------


@pytest.fixture
def h2_upstream() -> Iterator[ThreadedH2Server]:
    srv = ThreadedH2Server()
    yield srv
    srv.stop()


def h2_proxy(start_proxy: Callable[..., ProxyHarness], srv: ThreadedH2Server) -> ProxyHarness:
    text = config_text(clusters={"h2": srv.url})
    text = text.replace(f"url: {srv.url}", f"url: {srv.url}\n    protocol: h2")
    assert "protocol: h2" in text
    return start_proxy(text)


def test_protocol_h2_cluster_serves_the_data_path(
    start_proxy: Callable[..., ProxyHarness], h2_upstream: ThreadedH2Server
) -> None:
    h = h2_proxy(start_proxy, h2_upstream)
    with h.client() as c:
        r = c.post("/echo", content=b"ping", headers={"te": "trailers", "connection": "keep-alive"})
        assert r.status_code == 200
        assert r.content == b"ping"
        assert r.headers["x-seen-scheme"] == "http"
        assert r.headers["x-seen-authority"] == f"127.0.0.1:{h.port}"  # from the client's host
        assert r.headers["x-seen-connection-fields"] == "-"
        r2 = c.get("/big/300000")
        assert r2.status_code == 200 and len(r2.content) == 300000
    assert h2_upstream.paths_by_connection() == [["/echo", "/big/300000"]]
    stats = h.stats()  # Envoy's cluster counters
    assert stats["cluster.h2.upstream_cx_total"] == 1
    assert stats["cluster.h2.upstream_cx_http2_total"] == 1
    assert stats["cluster.h2.upstream_rq_total"] == 2


def test_upstream_reset_through_the_proxy_is_503_remote_reset(
    start_proxy: Callable[..., ProxyHarness], h2_upstream: ThreadedH2Server
) -> None:
    h = h2_proxy(start_proxy, h2_upstream)
    with h.client() as c:
        r = c.get("/reset")
        assert r.status_code == 503
        assert r.text == (
            "upstream connect error or disconnect/reset before headers. reset reason: "
            "remote reset\n"
        )
        # mid-response: the client connection is cut (nothing sane to send)
        with pytest.raises(httpx.HTTPError):
            c.get("/reset-mid")
        assert c.get("/echo").status_code == 200
    assert h.stats()["cluster.h2.upstream_rq_rx_reset"] == 2


def test_goaway_mid_flight_through_the_proxy(
    start_proxy: Callable[..., ProxyHarness], h2_upstream: ThreadedH2Server
) -> None:
    h = h2_proxy(start_proxy, h2_upstream)
    with h.client() as c:
        r = c.get("/goaway")  # GOAWAY first, the answer 100 ms later on the same stream
        assert r.status_code == 200 and r.text == "done"
        assert c.get("/echo").status_code == 200
    assert h2_upstream.paths_by_connection() == [["/goaway"], ["/echo"]]


def test_request_headers_reach_an_h2_upstream_before_any_body(
    start_proxy: Callable[..., ProxyHarness], h2_upstream: ThreadedH2Server
) -> None:
    # a gRPC client may wait for the server's first message before it sends one
    h = h2_proxy(start_proxy, h2_upstream)
    with connect(h) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        h.wait_for(lambda: h2_upstream.paths_by_connection() == [["/echo"]], what="headers")
        s.sendall(b"3\r\nabc\r\n0\r\n\r\n")
        f = s.makefile("rb")
        assert f.readline().startswith(b"HTTP/1.1 200")


def test_a_reload_that_switches_a_cluster_to_h2_takes_effect(
    start_proxy: Callable[..., ProxyHarness], h2_upstream: ThreadedH2Server
) -> None:
    h = start_proxy(config_text(clusters={"h2": h2_upstream.url}))  # HTTP/1.1 at first
    assert h.sync(lambda: h.server.clusters["h2"].protocol) == "http1"
    text = config_text(clusters={"h2": h2_upstream.url}).replace(
        f"url: {h2_upstream.url}", f"url: {h2_upstream.url}\n    protocol: h2"
    )
    h.apply(parse_config(text, "<test>", "."))
    with h.client() as c:
        r = c.post("/echo", content=b"now h2")
        assert r.status_code == 200 and r.content == b"now h2"


def test_a_failed_extra_connection_is_not_retried_in_a_storm_while_others_are_full() -> None:
    async def body(srv: ScriptedH2Server, pool: H2Pool, cluster: Cluster) -> None:
        s, _held = await send(pool, cluster, request("/hold"), True)
        await asyncio.sleep(0.1)  # the server's SETTINGS (1 stream at once) arrived
        assert srv.server is not None
        srv.server.close()  # no new connection from now on; the open one stays
        got: asyncio.Future[H2Stream | None] = asyncio.get_running_loop().create_future()
        waiter = Sink()
        pool.acquire(cluster, waiter, lambda st, why: got.set_result(st))
        await asyncio.sleep(0.3)
        assert pool.connects == 2  # the first and one refused extra one, not a loop
        assert not got.done()  # it waits for the busy connection's slot
        s.abandon()
        st = await asyncio.wait_for(got, 2)
        assert st is not None
        st.send_headers(request("/echo"), True)
        assert await waiter.ended == ("complete",)

    with_server(body, max_streams=1, max_connections=2)


def test_a_stream_a_goaway_did_not_cover_fails_as_refused() -> None:
    async def body(srv: ScriptedH2Server, pool: H2Pool, cluster: Cluster) -> None:
        _s, sink = await send(pool, cluster, request("/goaway-refuse"), True)
        kind, exc = await sink.ended
        assert kind == "lost"
        assert isinstance(exc, H2StreamReset)
        assert exc.detail == "remote_refused_stream_reset"
        # the next stream goes to a new connection
        _s2, ok = await send(pool, cluster, request("/echo"), True)
        assert await ok.ended == ("complete",)
        assert pool.connects == 2

    with_server(body)


def test_a_lost_connection_fails_every_stream_on_it() -> None:
    async def body(srv: ScriptedH2Server, pool: H2Pool, cluster: Cluster) -> None:
        _s, held = await send(pool, cluster, request("/hold"), True)
        _s2, dropper = await send(pool, cluster, request("/drop"), True)
        for k in (held, dropper):
            kind, _exc = await k.ended
            assert kind == "lost"
        assert pool.connections(cluster) == []

    with_server(body)


def test_client_going_away_resets_the_upstream_stream(
    start_proxy: Callable[..., ProxyHarness], h2_upstream: ThreadedH2Server
) -> None:
    h = h2_proxy(start_proxy, h2_upstream)
    with connect(h) as s:
        s.sendall(b"GET /hold HTTP/1.1\r\nhost: x\r\n\r\n")
        h.wait_for(lambda: h2_upstream.paths_by_connection() == [["/hold"]], what="request")

    async def resets() -> list[int]:
        return [code for c in h2_upstream.srv.conns for code in c.resets.values()]

    def seen() -> list[int]:
        return asyncio.run_coroutine_threadsafe(resets(), h2_upstream.loop).result(5)

    assert h.wait_for(seen, what="RST_STREAM upstream") == [8]  # CANCEL
    assert h.stats()["cluster.h2.upstream_rq_tx_reset"] == 1


def test_a_reload_closes_the_h2_connections_of_a_cluster_it_replaced(
    start_proxy: Callable[..., ProxyHarness], h2_upstream: ThreadedH2Server
) -> None:
    h = h2_proxy(start_proxy, h2_upstream)
    with h.client() as c:
        assert c.get("/echo").status_code == 200
    first = h2_upstream.srv.conns[0]
    # a timeout change keeps the cluster and its connection
    same = config_text(clusters={"h2": (h2_upstream.url, "20s")}).replace(
        f"url: {h2_upstream.url}", f"url: {h2_upstream.url}\n    protocol: h2"
    )
    h.apply(parse_config(same, "<test>", "."))
    with h.client() as c:
        assert c.get("/echo").status_code == 200
    assert len(h2_upstream.srv.conns) == 1 and not first.closed.done()
    # another cluster in its place: the old connection goes
    other = same.replace("name: h2", "name: other")
    h.apply(parse_config(other, "<test>", "."))
    h.wait_for(first.closed.done, what="the replaced cluster's connection closed")
    with h.client() as c:
        assert c.get("/echo").status_code == 200
    assert len(h2_upstream.srv.conns) == 2


def test_garbage_from_an_h2_upstream_is_502_and_the_proxy_keeps_serving(
    start_proxy: Callable[..., ProxyHarness], scripted_upstream: Callable[..., Any]
) -> None:
    def script(conn: socket.socket, up: Any) -> None:
        up.recv(conn)  # our preface and request
        # a SETTINGS frame whose length is not a multiple of 6 (RFC 9113 §6.5)
        conn.sendall(b"\x00\x00\x05\x04\x00\x00\x00\x00\x00" + b"\x00" * 5)
        up.recv(conn)  # our GOAWAY; then we close

    up = scripted_upstream(script)
    text = config_text(clusters={"bad": up.url}).replace(
        f"url: {up.url}", f"url: {up.url}\n    protocol: h2"
    )
    h = start_proxy(text)
    with h.client() as c:
        r = c.get("/")
        assert r.status_code == 502
        assert r.text.startswith("upstream sent a malformed HTTP/2 response")
        assert c.get("/again").status_code == 502  # a new connection, the same answer
    assert h.stats()["cluster.bad.upstream_rq_error"] == 2


def test_many_clients_at_once_share_one_h2_connection(
    start_proxy: Callable[..., ProxyHarness], h2_upstream: ThreadedH2Server
) -> None:
    h = h2_proxy(start_proxy, h2_upstream)

    def one(i: int) -> tuple[int, int]:
        with h.client() as c:
            # each answer 50 ms late: the streams of concurrent clients overlap for sure
            r = c.post("/echo", content=b"%d" % i * 5000, headers={"x-delay-ms": "50"})
            return r.status_code, len(r.content)

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(one, range(40)))
    assert results == [(200, len(b"%d" % i) * 5000) for i in range(40)]
    conns = h2_upstream.paths_by_connection()
    assert len(conns) == 1 and len(conns[0]) == 40
    assert h2_upstream.srv.conns[0].max_open > 1  # streams really were multiplexed


def test_a_malformed_status_fails_that_stream_with_502_not_the_connection() -> None:
    async def body(srv: ScriptedH2Server, pool: H2Pool, cluster: Cluster) -> None:
        _s, bad = await send(pool, cluster, request("/bad-status"), True)
        assert await bad.ended == ("error", 502, "upstream sent a malformed response: bad :status")
        _s2, ok = await send(pool, cluster, request("/echo"), True)
        assert await ok.ended == ("complete",)
        assert pool.connects == 1

    with_server(body)


def test_data_a_paused_exchange_lets_go_of_is_still_acknowledged() -> None:
    # what a stream holds unacknowledged also holds the connection's window: bytes that
    # arrive as the exchange abandons the stream must not stay counted against it
    async def body(srv: ScriptedH2Server, pool: H2Pool, cluster: Cluster) -> None:
        stream: list[H2Stream] = []

        class LetsGo(Sink):
            def upstream_body(self, chunk: bytes) -> None:
                super().upstream_body(chunk)
                stream[0].abandon()  # e.g. a plugin answers locally on the first bytes

        sink = LetsGo()
        s = await open_stream(pool, cluster, sink)
        stream.append(s)
        s.pause(BACKLOG)
        s.send_headers(request("/big/100000"), True)
        await asyncio.wait_for(sink.got_headers.wait(), 5)
        for _ in range(50):
            if sink.body:
                break
            await asyncio.sleep(0.01)
        assert sink.body and s._unacked == 0
        conn = pool.connections(cluster)[0]
        await asyncio.sleep(0.1)
        # every byte the server sent came back as window: another big answer flows
        _s2, ok = await send(pool, cluster, request("/big/300000"), True)
        assert await ok.ended == ("complete",) and len(ok.body) == 300000
        assert conn.h2.inbound_flow_control_window > 0

    with_server(body)


def test_a_response_complete_before_the_request_ends_our_side_with_no_error() -> None:
    async def body(srv: ScriptedH2Server, pool: H2Pool, cluster: Cluster) -> None:
        s, sink = await send(pool, cluster, request("/trailers-only", "POST"), False)
        s.send_data(b"x" * (1024 * 1024), False)  # far past the server's 64 KiB window
        assert await sink.ended == ("complete",)
        assert s._out_bytes == 0  # what the server will never read is not kept
        for _ in range(100):
            if srv.conns[0].resets:
                break
            await asyncio.sleep(0.01)
        assert list(srv.conns[0].resets.values()) == [0]  # RST_STREAM NO_ERROR (§8.1)

    with_server(body)
