"""The upstream side of the HTTP/1.1 data path: clusters, pooled keep-alive connections
to them, and the response parser that feeds one exchange at a time. HTTP/2 clusters
(``Cluster.protocol`` "h2") get their streams from ``upstream_h2.H2Pool`` instead.

An ``UpstreamProtocol`` is the exchange's ``upstream_api.UpstreamStream`` (it frames
the request with ``framing``) and knows its exchange only as a ``ResponseSink`` (the
parser's events and write congestion, nothing else), so the exchange state machine
and this socket layer meet at a small interface. No plugin and no wasm here.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools

from host.headers import HeaderMap
from host.proxy import framing
from host.proxy.tls import TlsInfo, tls_failure_reason, tls_info_of
from host.proxy.upstream_api import (
    BACKLOG,
    PEER_FULL,
    TRANSPORT_FAILURE,
    ReadGate,
    ResponseSink,
    UpstreamStream,
)
from host.proxy.upstream_h2 import H2Pool
from host.proxy.write_batch import BatchedWriter, WriteBatch

__all__ = [
    "BACKLOG",
    "PEER_FULL",
    "TRANSPORT_FAILURE",
    "Cluster",
    "ResponseSink",
    "UpstreamPool",
    "UpstreamProtocol",
    "UpstreamStream",
]


class _BadMessage(Exception):
    """Raised from a parser callback: llhttp accepted what HTTP does not."""


@dataclass
class Cluster:
    name: str
    host: str
    port: int
    timeout_s: float = 15.0
    connect_timeout_s: float = 5.0
    max_idle: int = 64
    idle: deque[UpstreamProtocol] = field(default_factory=deque)
    # the upstream protocol: "http1", or "h2" (grpc://, grpcs://, protocol: h2) served
    # by upstream_h2's multiplexed connections
    protocol: str = "http1"
    tls: bool = False  # https://, grpcs://: TLS to the upstream (ALPN h2 for "h2")
    ca_file: str | None = None  # TLS: trust these CAs instead of the system store
    # HTTP/1.1 over TLS (https://): the client context (verifies the server against the
    # system store or the caFile; upstream_h2 builds its own with ALPN h2)
    tls_context: ssl.SSLContext | None = None
    # counts the cluster's TLS stats (Envoy's cluster.<name>.ssl.*) by suffix
    count: Callable[[str], None] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_url(
        cls,
        name: str,
        url: str,
        timeout_s: float = 15.0,
        ca_file: str | None = None,
        protocol: str | None = None,
    ) -> Cluster:
        """``http://`` / ``https://`` (HTTP/1.1, or HTTP/2 when ``protocol`` is "h2":
        prior knowledge in clear text, ALPN h2 over TLS), ``grpc://`` (HTTP/2 cleartext)
        or ``grpcs://`` (HTTP/2 over TLS). Raises ValueError (an unreadable ``ca_file``:
        OSError/ssl.SSLError)."""
        u = urlsplit(url)
        scheme = u.scheme.lower()
        if protocol not in (None, "http1", "h2"):
            raise ValueError(f"cluster {name}: protocol must be http1 or h2, got {protocol!r}")
        if scheme in ("grpc", "grpcs"):
            if protocol == "http1":
                raise ValueError(f"cluster {name}: {scheme}:// clusters speak HTTP/2 (h2)")
            protocol = "h2"
        elif scheme not in ("http", "https"):
            raise ValueError(
                f"cluster {name}: the data path forwards to http://, https://, grpc:// and "
                f"grpcs:// upstreams, got {url!r}"
            )
        if not u.hostname:
            raise ValueError(f"cluster {name}: URL has no host: {url!r}")
        tls = scheme in ("grpcs", "https")
        protocol = protocol or "http1"
        context = None
        if tls and protocol == "http1":
            from host.proxy.tls import client_context

            context = client_context(ca_file)
        return cls(
            name,
            u.hostname,
            u.port or (443 if tls else 80),
            timeout_s,
            protocol=protocol,
            tls=tls,
            ca_file=ca_file if tls else None,
            tls_context=context,
        )

    @property
    def sni(self) -> str | None:
        """The server name sent and verified (the URL's host), None for plain HTTP."""
        return self.host if self.tls_context is not None else None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class UpstreamProtocol(ReadGate, BatchedWriter, asyncio.Protocol):
    """One pooled keep-alive connection to a cluster; parses responses for its exchange.
    Writes are held to the end of the loop's tick (``write_batch``); every close of the
    transport goes through ``close_held``, which sends them first."""

    def __init__(self, cluster: Cluster, pool: UpstreamPool) -> None:
        self.cluster = cluster
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.batch: WriteBatch = pool.write_batch
        self._out: list[bytes] = []  # written in this tick, not yet sent
        self.parser = httptools.HttpResponseParser(self)
        # bound once: a compiled call by name looks the method up every time
        self._feed = self.parser.feed_data
        self._keeps_alive = self.parser.should_keep_alive
        self._status_code = self.parser.get_status_code
        self.exchange: ResponseSink | None = None
        self.closed = False
        self.reusable = True
        self._headers: list[tuple[bytes, bytes]] = []
        self._trailers: list[tuple[bytes, bytes]] = []
        self._in_body = False  # headers complete: on_header now means a trailer
        self._expect_body = True
        self._until_eof = False  # the response body ends when the upstream closes
        self._paused = 0  # why reading is paused (PEER_FULL, BACKLOG bits)
        self._bad = ""  # why a parser callback refused the response
        self.tls: TlsInfo | None = None  # https:// clusters: the session's facts
        # the request being written (see send_headers)
        self._head = b""  # a head held until what follows it
        self._chunked = False
        self._declared = -1  # the content-length the head declared (-1: none)
        self._written = 0  # body bytes written
        self._sent = False  # something of the exchange's request went out

    def _gone(self) -> bool:  # pause/resume: ReadGate
        return self.closed

    # the upstream is not reading our request as fast as the client sends it
    def pause_writing(self) -> None:
        ex = self.exchange
        if ex is not None:
            ex.upstream_congested(True)

    def resume_writing(self) -> None:
        ex = self.exchange
        if ex is not None:
            ex.upstream_congested(False)

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.cluster.tls_context is not None:
            self.tls = tls_info_of(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._out.clear()
        try:
            self.cluster.idle.remove(self)
        except ValueError:
            pass
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            if self._until_eof and exc is None:
                # A body delimited by the close (RFC 9112 §6.3, rule 8): a clean EOF
                # ends the message. llhttp cannot be told, so end it here.
                self._until_eof = False
                ex.upstream_complete()
            else:
                ex.upstream_lost(exc)

    def data_received(self, data: bytes) -> None:
        try:
            self._feed(data)
        except httptools.HttpParserError as e:
            self.reusable = False
            ex = self.exchange
            self.exchange = None
            if self.transport is not None:
                self.close_held()
            if ex is not None:
                why = self._bad or str(e)  # httptools wraps what a callback raised
                ex.upstream_error(502, f"upstream sent a malformed response: {why}")

    # parser callbacks
    def on_message_begin(self) -> None:
        self._headers = []
        self._trailers = []
        self._in_body = False
        self._until_eof = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_body:
            self._trailers.append((name.lower(), value))
        else:
            self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._in_body = True
        ex = self.exchange
        if ex is None:
            return
        if not self._keeps_alive():
            self.reusable = False
        status = self._status_code()
        if status > 599:
            # RFC 9110 §15: status codes are 100-599; llhttp accepts any three digits
            self._bad = f"status code {status} out of range"
            raise _BadMessage(self._bad)  # ends the parse: 502
        if self._expect_body and status >= 200 and status not in (204, 304):
            framed = False
            for k, v in self._headers:
                if k == b"content-length" or (
                    k == b"transfer-encoding" and b"chunked" in v.lower()
                ):
                    framed = True
                    break
            if not framed:
                self._until_eof = True
                self.reusable = False
        # (llhttp's fields: verified, see HeaderMap)
        ex.upstream_headers(status, self._headers, self._expect_body, True)
        if not self._expect_body and status >= 200:
            # A HEAD response: no body follows whatever its content-length says, and
            # the parser cannot be told so; end here and do not reuse the connection.
            self.reusable = False
            self.exchange = None
            ex.upstream_complete()
            if self.transport is not None:
                self.close_held()

    def on_body(self, body: bytes) -> None:
        ex = self.exchange
        if ex is not None:
            ex.upstream_body(body)

    def on_message_complete(self) -> None:
        self._until_eof = False
        ex = self.exchange
        self.exchange = None
        if ex is not None:
            ex.upstream_complete(HeaderMap(self._trailers) if self._trailers else None)
        self.pool.release(self)

    # the exchange's request (upstream_api.UpstreamStream): framed here with
    # ``framing``, one write per event (the head waits for what follows it)
    def bind(self, exchange: ResponseSink) -> None:
        """Serve ``exchange``'s request next (the pool hands the connection over)."""
        self.exchange = exchange
        self._expect_body = True
        self._head = b""
        self._sent = False

    def send_headers(self, headers: HeaderMap, end_stream: bool) -> str | None:
        head = framing.request_head(
            headers, self.cluster.address.encode(), None, end_stream, [], False
        )
        if isinstance(head, str):
            return head
        self._expect_body = head.data[:5] != b"HEAD "  # (the request line's method)
        self._chunked = head.chunked
        self._declared = head.declared
        self._written = 0
        if end_stream:
            self._write(head.data)
        else:
            self._head = head.data
        return None

    def send_data(self, data: bytes, end_stream: bool) -> None:
        out = self._head
        self._head = b""
        if data:
            self._written += len(data)
            body = framing.chunk(data) if self._chunked else data
            out = out + body if out else body
        if end_stream:
            if self._chunked:
                out += framing.trailer_block(None)
            elif self._declared >= 0 and self._written != self._declared:
                self.reusable = False  # a plugin changed a streamed body's length
        if out:
            self._write(out)

    def send_trailers(self, trailers: HeaderMap) -> str | None:
        problem = framing.trailer_problem(trailers)
        if problem is not None and self._head:
            self._head = b""  # nothing went out: the exchange answers 503 instead
            return problem
        if not self._chunked or problem is not None:
            self.send_data(b"", True)  # a length-framed body cannot carry trailers
            return None
        self._write(self._head + framing.trailer_block(trailers))
        self._head = b""
        return None

    def _write(self, data: bytes) -> None:
        self._sent = True
        self.hold(data)

    def abandon(self) -> None:
        """The exchange gave up on this connection (client gone, reply sent): close it
        (or, when nothing of its request went out, give it back to the pool)."""
        self.exchange = None
        if not self._sent and not self.closed:
            self.pool.release(self)
            return
        self._paused = 0
        self.reusable = False
        if self.transport is not None:
            self.close_held()


class UpstreamPool:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.write_batch = WriteBatch(loop)  # the HTTP/1.1 connections' writes, per tick
        self.connects = 0
        self.h2 = H2Pool(loop)  # the HTTP/2 clusters' multiplexed connections

    def open_stream(
        self,
        cluster: Cluster,
        sink: ResponseSink,
        done: Callable[[UpstreamStream | None, str], None],
    ) -> None:
        """Call ``done(stream, "")`` with a stream to ``cluster`` serving ``sink``, or
        ``done(None, reason)``."""
        if cluster.protocol == "h2":
            self.h2.acquire(cluster, sink, done)
            return

        def bound(conn: UpstreamProtocol | None, why: str) -> None:
            if conn is not None:
                conn.bind(sink)
            done(conn, why)

        self.acquire(cluster, bound)

    def acquire(
        self, cluster: Cluster, done: Callable[[UpstreamProtocol | None, str], None]
    ) -> None:
        """Call ``done(conn, "")`` with a ready connection, or ``done(None, reason)``."""
        while cluster.idle:
            conn = cluster.idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                done(conn, "")
                return
        self.connects += 1

        async def connect() -> None:
            try:
                _t, proto = await asyncio.wait_for(
                    self.loop.create_connection(
                        lambda: UpstreamProtocol(cluster, self),
                        cluster.host,
                        cluster.port,
                        ssl=cluster.tls_context,
                        server_hostname=cluster.sni,
                    ),
                    cluster.connect_timeout_s,
                )
            except TimeoutError:
                done(None, "connect timeout")
                return
            except ssl.SSLError as e:  # the handshake failed (e.g. the certificate)
                if cluster.count is not None:
                    cluster.count("ssl.connection_error")
                    if isinstance(e, ssl.SSLCertVerificationError):
                        cluster.count("ssl.fail_verify_error")
                done(None, f"connection failure, {TRANSPORT_FAILURE}{tls_failure_reason(e)}")
                return
            except OSError as e:
                done(None, f"connection failure: {e.strerror or e}")
                return
            if cluster.count is not None and proto.tls is not None:
                cluster.count("ssl.handshake")
            done(proto, "")

        self.loop.create_task(connect())

    def release(self, conn: UpstreamProtocol) -> None:
        if conn._paused:
            conn.resume(conn._paused)  # a pooled connection reads (to notice a close)
        if (
            conn.reusable
            and not conn.closed
            and conn.transport is not None
            and not conn.transport.is_closing()
            and len(conn.cluster.idle) < conn.cluster.max_idle
        ):
            conn.cluster.idle.append(conn)
        else:
            conn.close_held()

    def retire(self, clusters: list[Cluster]) -> None:
        """Clusters a reload replaced: their HTTP/2 connections close once idle."""
        self.h2.retire(clusters)

    def close(self, clusters: list[Cluster]) -> None:
        self.h2.close()  # every HTTP/2 connection, also of clusters a reload replaced
        for c in clusters:
            while c.idle:
                c.idle.pop().close_held()
