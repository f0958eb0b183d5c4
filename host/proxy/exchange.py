"""The exchange state machine: one request and its response through the filter (the
plugin chain) to a cluster and back, one ``HalfStream`` per direction.

Driven by events (the downstream parser's, the upstream connection's through its
``ResponseSink`` interface) and by the filter's verdicts (``stream.Verdict``); it
turns them into writes and flow-control calls on the protocol objects
(``Downstream``, ``upstream.UpstreamProtocol``), never on a transport, and asks
``framing`` for the bytes. The HTTP/1.1 socket adapter (``http1.DownstreamProtocol``)
feeds it; it knows nothing of wasm.

Why it is one ~800-line module: the exchange's handlers share its state (the two
half-streams, the upstream connection, the timers) and its endings (reply, reset,
finish); splitting them would spread one state machine over several files.

Framing rule: the upstream request head (and the downstream response head) is
written when the filter releases the first body bytes or the end of the stream.
If a plugin buffered the whole body, the real length is known then and
``content-length`` is set from it; otherwise the message streams with the
framing in its (possibly modified) headers, or chunked without one. A streamed
body whose length ends up different from its declared content-length closes
the connection after the message instead of desynchronising it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import httptools

from host.headers import HeaderMap
from host.proxy import framing
from host.proxy.framing import HOP_BY_HOP, SPECIAL_REQUEST_HEADERS
from host.proxy.stream import (
    Continue,
    ExchangeInfo,
    Hold,
    LocalReply,
    PassThroughFilter,
    Reply,
    Reset,
    StreamFilter,
    Verdict,
    Wait,
)
from host.proxy.upstream import (
    BACKLOG,
    PEER_FULL,
    TRANSPORT_FAILURE,
    Cluster,
    UpstreamPool,
    UpstreamProtocol,
)

__all__ = [
    "ENTRY_COST",
    "HIGH_WATER",
    "LOW_WATER",
    "Downstream",
    "Exchange",
    "HalfStream",
    "Limits",
    "ParsedRequest",
    "ProxyCore",
]

# Flow control: past the high-water mark of bytes held for the other side, reading
# from the sending side pauses; it resumes below the low-water mark.
HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024
ENTRY_COST = 64  # what one held chunk costs besides its bytes (so 1-byte chunks count too)
_HIGH_WATER, _LOW_WATER, _ENTRY_COST = HIGH_WATER, LOW_WATER, ENTRY_COST


@dataclass(frozen=True)
class Limits:
    """The listener's limits (``spec.timeouts`` and ``spec.maxConnections``)."""

    # first byte of a request to the end of its headers (Envoy: request_headers_timeout)
    request_headers_timeout_s: float = 10.0
    # a connection with no request in flight (Envoy: idle_timeout, 1 h there)
    idle_timeout_s: float = 300.0
    # open client connections; more are closed at once (Envoy: downstream_cx_overflow)
    max_connections: int = 1024


_PASS = PassThroughFilter()


# -- the proxy core (what every connection shares) -----------------------------------------


class ProxyCore(Protocol):
    """What the data path needs from the server that owns it."""

    loop: asyncio.AbstractEventLoop
    pool: UpstreamPool
    limits: Limits
    open_connections: int

    def route(self, headers: HeaderMap, info: ExchangeInfo) -> Cluster | None:
        """The request's cluster: its cached route (``info.route_name`` set), else the
        route selected now from ``headers`` (and cached in ``info``); None: no route."""
        ...

    def new_filter(self, info: ExchangeInfo) -> StreamFilter: ...

    def exchange_started(self, ex: Exchange) -> None: ...

    def exchange_finished(self, ex: Exchange) -> None: ...

    def connection_opened(self) -> None: ...

    def connection_closed(self) -> None: ...

    def connection_rejected(self) -> None: ...


class Downstream(Protocol):
    """What an exchange needs from the client connection it answers (the HTTP/1.1
    adapter's ``DownstreamProtocol``; another protocol's stream later)."""

    core: ProxyCore
    client: tuple[str, int]
    client_ip: bytes
    local: tuple[str, int]
    id: int
    closing: bool
    write_paused: bool

    def write(self, data: bytes) -> None: ...

    def pause(self, why: int) -> None: ...

    def resume(self, why: int) -> None: ...

    def drop(self, abort: bool) -> None: ...

    def fatal(self, status: int, message: str) -> None:
        """A request that cannot be served as parsed: answer ``status`` and close."""
        ...

    def exchange_done(self, ex: Exchange, keep_alive: bool) -> None: ...


class ParsedRequest:
    """One request as the downstream parser delivered it (head, queued body, trailers)."""

    __slots__ = (
        "body",
        "body_bytes",
        "complete",
        "headers",
        "keep_alive",
        "method",
        "target",
        "trailers",
        "version",
    )

    def __init__(self) -> None:
        self.method = b""
        self.target = b""
        self.version = "1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = True
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.complete = False
        self.trailers: list[tuple[bytes, bytes]] | None = None


# -- one exchange ----------------------------------------------------------------------------

REQUEST = True
RESPONSE = False


class HalfStream:
    """One direction of an exchange (the request, or the response): what the filter holds
    back, what it released and what the wire got. The exchange's step handlers take a
    half-stream, so the request and the response share one implementation."""

    __slots__ = (
        "chunked",
        "complete",
        "declared",
        "end",
        "end_written",
        "eos_delivered",
        "has_body",
        "head_sent",
        "headers",
        "out",
        "passed",
        "pending",
        "queued",
        "remaining",
        "request",
        "trailers",
        "waiting",
        "written",
    )

    def __init__(self, request: bool) -> None:
        self.request = request
        self.headers: HeaderMap | None = None
        self.trailers: HeaderMap | None = None
        self.has_body = False
        self.passed = False  # the filter let the headers through
        self.pending: deque[tuple[bytes, bool]] = deque()  # held while the filter waits
        self.waiting = False  # the filter answered Wait (or Hold on the headers)
        self.out: list[bytes] = []  # released bytes not yet written
        self.queued = 0  # bytes in pending and out (flow control)
        self.head_sent = False
        self.chunked = False
        self.declared = -1  # the content-length the head declared (-1: none)
        self.written = 0  # body bytes written
        self.end = False  # the filter released the end of the stream
        self.end_written = False
        # what the peer sends (the request side: the client's parser events)
        self.remaining = -1  # content-length bytes still to come (-1: chunked / none)
        self.complete = False  # the peer finished sending
        self.eos_delivered = False



class Exchange:
    """One request and its response through the filter to a cluster and back."""

    __slots__ = (
        "_upstream_sent_at",
        "cluster",
        "core",
        "down",
        "filter",
        "finished",
        "info",
        "keep_alive",
        "method",
        "parsed",
        "replying",
        "req",
        "resp",
        "response_started",
        "timer",
        "upstream",
    )

    def __init__(self, down: Downstream, parsed: ParsedRequest) -> None:
        self.down = down
        self.core = down.core
        self.parsed = parsed
        self.info = ExchangeInfo(
            down.client, down.local, down.id, start=time.monotonic(), start_wall_ns=time.time_ns()
        )
        self.filter: StreamFilter = _PASS
        self.method = parsed.method
        self.req = HalfStream(REQUEST)
        self.resp = HalfStream(RESPONSE)
        self.resp.has_body = True
        self.upstream: UpstreamProtocol | None = None
        self.cluster: Cluster | None = None
        self.response_started = False
        self.replying = False
        self.finished = False
        self.keep_alive = parsed.keep_alive
        self.timer: asyncio.TimerHandle | None = None
        self._upstream_sent_at = 0.0

    # -- request path --

    def begin(self) -> None:
        # Counted as started before anything can end it (a bad target or length ends
        # it through _finish, which counts it as finished).
        self.core.exchange_started(self)
        p = self.parsed
        h = HeaderMap()
        target = p.target
        authority = b""
        if target[:1] != b"/" and target != b"*":
            # absolute-form (a client configured to use us as an HTTP proxy)
            try:
                u = httptools.parse_url(target)
                authority = u.host + (b":" + str(u.port).encode() if u.port else b"")
                target = (u.path or b"/") + (b"?" + u.query if u.query else b"")
            except httptools.HttpParserInvalidURLError:
                self.down.fatal(400, "malformed request target")
                return
        host = b""
        hosts = 0
        cl = -1
        te_chunked = False
        expect_continue = False
        xff: list[bytes] = []
        rid = None
        rest = []
        for k, v in p.headers:
            if k in SPECIAL_REQUEST_HEADERS:
                if k == b"host":
                    host = v
                    hosts += 1
                elif k == b"expect":
                    if v.strip().lower() == b"100-continue":
                        expect_continue = True  # answered here, not forwarded (below)
                    else:
                        rest.append((k, v))
                elif k == b"content-length":
                    try:
                        cl = int(v)
                    except ValueError:
                        self.down.fatal(400, "malformed content-length")
                        return
                elif k == b"transfer-encoding":
                    te_chunked = b"chunked" in v.lower()
                elif k == b"x-forwarded-for":
                    xff.append(v)  # several lines coalesce into one list, as Envoy does
                elif k == b"x-request-id":
                    rid = v
                    rest.append((k, v))
                continue  # hop-by-hop headers are not forwarded
            rest.append((k, v))
        if hosts > 1:
            # RFC 9112 §3.2: a request with more than one Host line is answered 400
            self.down.fatal(400, "more than one host header")
            return
        scheme = b"https" if self.info.tls is not None else b"http"  # as Envoy sets it
        items = [
            (b":method", p.method),
            (b":path", target),
            (b":authority", authority or host),
            (b":scheme", scheme),
        ]
        items += rest
        client_ip = self.down.client_ip
        xff.append(client_ip)
        items.append((b"x-forwarded-for", b", ".join(xff) if len(xff) > 1 else client_ip))
        items.append((b"x-forwarded-proto", scheme))
        if rid is None:
            rid = framing.request_id()
            items.append((b"x-request-id", rid))
        h._items = items
        self.info.request_id = rid.decode("latin-1")
        if cl > 0 or te_chunked:
            self.req.has_body = True
            self.req.remaining = cl if not te_chunked else -1
        if cl >= 0 and not te_chunked:
            items.append((b"content-length", b"%d" % cl))
        if expect_continue and self.req.has_body and p.version == "1.1" and not p.complete:
            # Envoy (proxy_100_continue off): answer 100 Continue at once, drop Expect
            self.down.write(framing.CONTINUE_100)
        self.req.headers = h
        self.filter = self.core.new_filter(self.info)
        self._headers_step(self.req, self.filter.request_headers(h, not self.req.has_body))

    # -- one implementation for both directions --

    def _source(self, half: HalfStream) -> Downstream | UpstreamProtocol | None:
        """The peer that sends ``half``: reading from it pauses while too much is held."""
        return self.down if half.request else self.upstream

    def _headers_step(self, half: HalfStream, step: Verdict) -> None:
        """The filter's verdict on ``half``'s headers."""
        match step:
            case Continue():
                half.passed = True
                if half.request:
                    self._route_and_connect()
                if not half.has_body:
                    self._flush(half, end=True)
                self._drain(half)
            case Wait(future):
                half.waiting = True

                def resumed(fut: asyncio.Future[Verdict]) -> None:
                    half.waiting = False
                    if self.finished or fut.cancelled():
                        return
                    self._headers_step(half, fut.result())

                future.add_done_callback(resumed)
            case Reply(reply):
                self._reply_from_filter(reply)
            case Reset():
                self._reset("reset by a plugin")
            case Hold():  # on headers: wait for continue (the chain answers Wait instead)
                half.waiting = True

    def _hold(self, half: HalfStream, chunk: bytes, eos: bool, flow: bool = True) -> None:
        """Keep a body event for the filter until it stops waiting."""
        half.pending.append((chunk, eos))
        half.queued += len(chunk) + _ENTRY_COST
        if flow and half.queued > _HIGH_WATER:
            src = self._source(half)
            if src is not None:
                src.pause(BACKLOG)

    def _event(self, half: HalfStream, chunk: bytes, eos: bool) -> Verdict:
        """Hand a body event to the filter: the trailers when they end the stream."""
        f = self.filter
        if half.request:
            if eos and not chunk and half.trailers is not None:
                return f.request_trailers(half.trailers)
            return f.request_data(chunk, eos)
        if eos and not chunk and half.trailers is not None:
            return f.response_trailers(half.trailers)
        return f.response_data(chunk, eos)

    def _drain(self, half: HalfStream) -> None:
        """Hand the held body events to the filter while it does not wait."""
        while half.pending and not half.waiting and not self.finished and not self.replying:
            chunk, eos = half.pending.popleft()
            half.queued -= len(chunk) + _ENTRY_COST
            self._data_step(half, self._event(half, chunk, eos), eos)
        if half.queued <= _LOW_WATER:
            src = self._source(half)
            if src is not None:
                src.resume(BACKLOG)

    def _data_step(self, half: HalfStream, step: Verdict, eos: bool) -> None:
        """The filter's verdict on a body event of ``half``."""
        match step:
            case Continue(data, trailers):
                if data:
                    half.out.append(data)
                    half.queued += len(data) + _ENTRY_COST
                if eos and trailers is not None and half.trailers is None:
                    half.trailers = trailers  # added by a plugin from the last data
                self._flush(half, end=eos)
            case Hold():
                pass
            case Wait(future):
                half.waiting = True

                def resumed(fut: asyncio.Future[Verdict]) -> None:
                    half.waiting = False
                    if self.finished or fut.cancelled():
                        return
                    self._data_step(half, fut.result(), eos)
                    self._drain(half)

                future.add_done_callback(resumed)
            case Reply(reply):
                self._reply_from_filter(reply)
            case Reset():
                self._reset("reset by a plugin")

    def _flush(self, half: HalfStream, end: bool) -> None:
        if half.request:
            self._flush_request(end)
        else:
            self._flush_response(end)

    @staticmethod
    def _release(half: HalfStream, out: list[bytes], send_body: bool = True) -> int:
        """Move ``half``'s released bytes into ``out`` as the head framed them (chunked, or
        as is; nothing when ``send_body`` is false); the byte count."""
        data = b"".join(half.out) if len(half.out) > 1 else half.out[0]
        half.queued -= len(data) + len(half.out) * _ENTRY_COST
        half.out = []
        half.written += len(data)
        if half.chunked:
            out.append(framing.chunk(data))
        elif send_body:
            out.append(data)
        return len(data)

    # -- request path --

    def downstream_body(self, chunk: bytes) -> None:
        if self.finished or self.replying:
            return
        self.info.request_bytes += len(chunk)
        eos = False
        if self.req.remaining >= 0:
            self.req.remaining -= len(chunk)
            eos = self.req.remaining <= 0
        if eos:
            self.req.eos_delivered = True
        if self.req.waiting or not self.req.passed:
            self._hold(self.req, chunk, eos)
            return
        self._data_step(self.req, self.filter.request_data(chunk, eos), eos)
        if self.req.queued > _HIGH_WATER and not self.finished:
            self.down.pause(BACKLOG)  # released, but no upstream connection to take it yet

    def downstream_complete(self, trailers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.req.complete = True
        if self.finished or self.replying:
            return
        if not self.req.has_body or self.req.eos_delivered:
            return
        self.req.eos_delivered = True
        if trailers:
            # Envoy: the last data frame had end_stream=false; the trailers end the stream
            self.req.trailers = HeaderMap.from_pairs(trailers)
        if self.req.waiting or not self.req.passed:
            self._hold(self.req, b"", True, flow=False)
            return
        self._data_step(self.req, self._event(self.req, b"", True), True)

    # -- upstream --

    def _route_and_connect(self) -> None:
        assert self.req.headers is not None
        cluster = self.core.route(self.req.headers, self.info)
        if cluster is None:
            self.send_local(
                LocalReply(404, b"no route to any cluster\n", details="route_not_found")
            )
            return
        self.cluster = cluster
        self.info.cluster = cluster.name
        self.info.upstream_address = cluster.address
        self.core.pool.acquire(cluster, self._connected)

    def _connected(self, conn: UpstreamProtocol | None, why: str) -> None:
        if self.finished or self.replying:
            if conn is not None:
                self.core.pool.release(conn)
            return
        if conn is None:
            self.info.outcome = "upstream_error"
            # a failed TLS handshake: Envoy names its transport failure reason in both
            tls_error = why.partition(TRANSPORT_FAILURE)[2]
            self.info.upstream_transport_failure_reason = tls_error
            self.send_local(
                LocalReply(
                    503,
                    b"upstream connect error or disconnect/reset before headers. reset reason: "
                    + why.encode()
                    + b"\n",
                    details="upstream_reset_before_response_started{connection_failure"
                    + ("|" + tls_error.replace(" ", "_") if tls_error else "")
                    + "}",
                )
            )
            return
        self.upstream = conn
        self.info.upstream_tls = conn.tls
        assert self.cluster is not None
        if self.down.write_paused:
            conn.pause(PEER_FULL)  # the client is not reading what we already sent it
        # Only what the filter released so far: the end of the request counts once the
        # filter passed it (req.end), not when the client sent it. A body still queued
        # in req.pending (headers were paused) follows through _drain.
        self._flush_request(end=self.req.end)
        if self.timer is None and not self.finished and self.upstream is conn:
            # The route timeout runs from the moment the whole request went upstream
            # (as Envoy's); until then only a stalled upload is bounded, by the idle
            # timeout.
            self.timer = self.core.loop.call_later(
                self.core.limits.idle_timeout_s, self._timeout
            )

    def _start_route_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        assert self.cluster is not None
        self.timer = self.core.loop.call_later(self.cluster.timeout_s, self._timeout)

    def _timeout(self) -> None:
        self.timer = None
        if self.finished or self.response_started:
            if not self.finished and self.upstream is not None:
                # mid-body: nothing sane to send; drop both sides
                self._reset("upstream timeout during the response body")
            return
        self.info.outcome = "upstream_error"
        if self.upstream is not None:
            self.upstream.abandon()
            self.upstream = None
        self.send_local(
            LocalReply(504, b"upstream request timeout\n", details="upstream_response_timeout")
        )

    def _flush_request(self, end: bool) -> None:
        """Write released request bytes upstream in one write (the head first, once)."""
        if end:
            self.req.end = True
        conn = self.upstream
        if conn is None:
            return  # written when the connection is ready
        end = self.req.end
        out: list[bytes] = []
        if not self.req.head_sent:
            if not end and not self.req.out:
                return  # nothing released yet: keep the head until we know more
            head = self._request_head(end)
            if head is None:
                return
            out.append(head)
        if self.req.out:
            self._release(self.req, out)
        if end and not self.req.end_written:
            self.req.end_written = True
            if self.req.chunked:
                out.append(framing.trailer_block(self.req.trailers))
            elif self.req.declared >= 0 and self.req.written != self.req.declared:
                conn.reusable = False  # a plugin changed a streamed body's length
            self._start_route_timer()
        if out:
            conn.send(self, out[0] if len(out) == 1 else b"".join(out), self.method != b"HEAD")
        if self.req.queued <= _LOW_WATER:
            self.down.resume(BACKLOG)

    def _request_head(self, end: bool) -> bytes | None:
        """The upstream request head, or None (after answering locally) when the headers
        cannot be serialized (see ``framing.request_head``). Envoy's codec refuses such a
        request and the router answers 503 before the response started; so do we, and
        nothing reaches the upstream."""
        assert self.req.headers is not None and self.upstream is not None
        head = framing.request_head(
            self.req.headers,
            self.upstream.cluster.address.encode(),
            self.req.trailers,
            end,
            self.req.out,
            self.req.has_body,
        )
        if isinstance(head, str):
            self._refuse_request(head)
            return None
        self.req.chunked = head.chunked
        if head.declared >= 0:
            self.req.declared = head.declared
        self.req.head_sent = True
        self._upstream_sent_at = time.monotonic()
        return head.data

    def _refuse_request(self, problem: str) -> None:
        self.info.outcome = "upstream_error"
        if self.upstream is not None:
            self.upstream.abandon()
            self.upstream = None
        self.send_local(
            LocalReply(
                503,
                b"upstream request contains an invalid header: " + problem.encode() + b"\n",
                details="upstream_request_invalid_header",
            )
        )

    # -- response path --

    def upstream_headers(
        self, status: int, headers: list[tuple[bytes, bytes]], expect_body: bool
    ) -> None:
        if self.finished or self.replying:
            return
        if 100 <= status < 200:
            return  # interim responses are not forwarded
        self.info.upstream_ms = (
            time.monotonic() - (self._upstream_sent_at or self.info.start)
        ) * 1000
        h = HeaderMap()
        items = h._items
        items.append((b":status", str(status).encode()))
        cl = -1
        for k, v in headers:
            if k == b"content-length":
                try:
                    cl = int(v)
                except ValueError:
                    cl = -1
            elif k == b"transfer-encoding":
                continue  # the response is re-framed downstream
            if k in HOP_BY_HOP:
                continue
            items.append((k, v))
        has_body = expect_body and status not in (204, 304) and (cl != 0)
        self.resp.has_body = has_body
        self.resp.headers = h
        self.response_started = True
        self._headers_step(self.resp, self.filter.response_headers(h, not has_body))

    def upstream_body(self, chunk: bytes) -> None:
        if self.finished or self.replying:
            return
        if self.resp.waiting or not self.resp.passed:
            self._hold(self.resp, chunk, False)
            return
        self._data_step(self.resp, self.filter.response_data(chunk, False), False)

    def upstream_complete(self, trailers: HeaderMap | None = None) -> None:
        if trailers is not None:
            self.resp.trailers = trailers
        self.upstream = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.finished or self.replying:
            return
        if not self.resp.has_body:
            return
        if self.resp.waiting or not self.resp.passed:
            self._hold(self.resp, b"", True, flow=False)
            return
        self._data_step(self.resp, self._event(self.resp, b"", True), True)

    def _flush_response(self, end: bool) -> None:
        """Write released response bytes downstream in one write (head first, once)."""
        out: list[bytes] = []
        if not self.resp.head_sent:
            if not end and not self.resp.out:
                return
            head = self._response_head(end)
            if head is None:
                self._write_reply(_invalid_response_reply())
                return
            out.append(head)
        if self.resp.out:
            self.info.response_bytes += self._release(self.resp, out, self.method != b"HEAD")
        if end:
            if self.resp.chunked:
                out.append(framing.trailer_block(self.resp.trailers))
            elif (
                self.resp.declared >= 0
                and self.resp.written != self.resp.declared
                and self.method != b"HEAD"
            ):
                self.keep_alive = False  # a plugin changed a streamed body's length
        if out:
            self.down.write(out[0] if len(out) == 1 else b"".join(out))
        if end:
            self._finish()

    def _response_head(self, end: bool) -> bytes | None:
        """The response head for the client, or None when a header cannot be serialized
        (the caller answers 502 instead, as Envoy's codec refuses such a response)."""
        assert self.resp.headers is not None
        head = framing.response_head(
            self.resp.headers,
            self.resp.trailers,
            end,
            self.resp.out,
            self.method == b"HEAD",
            not self.keep_alive or self.down.closing,
        )
        if head is None:
            return None
        self.info.status = head.status
        self.resp.chunked = head.chunked
        if head.declared >= 0:
            self.resp.declared = head.declared
        self.resp.head_sent = True
        return head.data

    # -- local replies and endings --

    def _reply_from_filter(self, reply: LocalReply) -> None:
        """The filter answered locally (its reply already went through the response
        path inside the filter): write it as is."""
        self.info.outcome = "reply"
        self._write_reply(reply)

    def send_local(self, reply: LocalReply) -> None:
        """A reply generated by the proxy (no route, upstream failure, timeout): it
        travels the filter's response path like an upstream response, as in Envoy."""
        if self.finished or self.response_started:
            self._reset(reply.details or "local reply after the response started")
            return
        self.info.response_code_details = reply.details
        h = HeaderMap(
            [
                (b":status", str(reply.status).encode()),
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(reply.body)).encode()),
            ]
        )
        for k, v in reply.headers:
            h.add(k, v)
        self.resp.headers = h
        self.response_started = True
        self.resp.has_body = bool(reply.body)
        self._headers_step(self.resp, self.filter.response_headers(h, not reply.body))
        if reply.body and not self.finished and not self.replying:
            self.upstream_body_local(reply.body)

    def upstream_body_local(self, body: bytes) -> None:
        if self.resp.waiting or not self.resp.passed:
            self._hold(self.resp, body, True, flow=False)
            return
        self._data_step(self.resp, self.filter.response_data(body, True), True)

    def _write_reply(self, reply: LocalReply) -> None:
        if self.finished:
            return
        if self.resp.head_sent:
            self._reset("local reply after the response started")
            return
        if framing.reply_problem(reply.headers):
            reply = _invalid_response_reply()
        self.replying = True
        if self.upstream is not None:
            self.upstream.abandon()
            self.upstream = None
        if self.req.has_body and not self.req.complete:
            self.keep_alive = False  # the rest of the request body would be misread
        self.info.status = reply.status
        self.info.response_code_details = reply.details
        self.resp.head_sent = True
        self.info.response_bytes += len(reply.body)
        self.down.write(
            framing.reply_message(
                reply.status,
                reply.headers,
                reply.body,
                not self.keep_alive,
                self.method == b"HEAD",
            )
        )
        self._finish()

    def _reset(self, why: str) -> None:
        if self.finished:
            return
        self.info.outcome = "reset"
        self.info.response_code_details = why
        self.keep_alive = False
        if self.upstream is not None:
            self.upstream.abandon()
            self.upstream = None
        self.down.drop(abort=not self.resp.head_sent)
        self._finish()

    def upstream_lost(self, exc: Exception | None) -> None:
        if self.finished:
            return
        self.upstream = None
        if self.response_started:
            self._reset("upstream connection lost mid-response")
            return
        self.info.outcome = "upstream_error"
        self.send_local(
            LocalReply(
                503,
                b"upstream connect error or disconnect/reset before headers. reset reason: "
                b"connection termination\n",
                details="upstream_reset_before_response_started{connection_termination}",
            )
        )

    def upstream_error(self, status: int, message: str) -> None:
        if self.finished:
            return
        self.upstream = None
        self.info.outcome = "upstream_error"
        if self.response_started:
            self._reset(message)
        else:
            self.send_local(
                LocalReply(status, (message + "\n").encode(), details="upstream_protocol_error")
            )

    def upstream_congested(self, congested: bool) -> None:
        # the upstream is not reading our request as fast as the client sends it
        if congested:
            self.down.pause(PEER_FULL)
        else:
            self.down.resume(PEER_FULL)

    def downstream_lost(self) -> None:
        """The client went away: no more I/O, but the filter still completes."""
        if self.finished:
            return
        self.info.outcome = "client_disconnect"
        self.keep_alive = False
        if self.upstream is not None:
            self.upstream.abandon()
            self.upstream = None
        self._finish()

    def codec_error(self, status: int, message: str) -> None:
        """The client's request could not be parsed; the connection already wrote the
        error response (``status``) and closes: end the exchange without more I/O."""
        if self.finished:
            return
        self.info.status = status
        self.info.outcome = "reply"
        self.info.response_code_details = f"http1.codec_error{{{message}}}"
        self.keep_alive = False
        if self.upstream is not None:
            self.upstream.abandon()
            self.upstream = None
        self._finish()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        up = self.upstream
        if up is not None and up.exchange is self:
            if (
                self.resp.headers is not None
                and not self.resp.has_body
                and not self.replying
                and self.info.outcome == ""
            ):
                pass  # its empty message completes in this same parse; the pool takes it back
            else:
                up.abandon()
            self.upstream = None
        try:
            self.filter.complete()
        finally:
            self.core.exchange_finished(self)
            # Keep-alive only once the client finished sending this request.
            keep = self.keep_alive and (self.req.complete or not self.req.has_body)
            self.down.exchange_done(self, keep)


def _invalid_response_reply() -> LocalReply:
    """What the client gets instead of a response whose head cannot be serialized."""
    return LocalReply(
        502,
        b"upstream response or local reply contains an invalid header\n",
        details="response_invalid_header",
    )
