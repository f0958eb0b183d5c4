"""The HTTP/1.1 socket adapter, downstream side: one ``DownstreamProtocol`` per client
connection parses requests (httptools/llhttp), answers them strictly in order (HTTP/1.1
pipelining queues later requests) and runs one ``exchange.Exchange`` at a time, the
state machine that drives the filter and the upstream (``upstream.py``). The wire
format is ``framing.py``'s; the verdicts and the filter contract are ``stream.py``'s.
No task per request, and nothing of wasm. Another protocol's adapter (HTTP/2 streams,
TCP) can sit beside this one on the same exchange core.

This module also re-exports the data path's names its callers always imported from it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Final

import httptools

from host.headers import HeaderMap
from host.proxy import framing
from host.proxy.core_api import ExchangeState
from host.proxy.downstream import admit, endpoints, next_connection_id, stop_timer
from host.proxy.edge import add_edge_headers
from host.proxy.exchange import (
    ENTRY_COST,
    HIGH_WATER,
    Exchange,
    HalfStream,
    Limits,
    ProxyCore,
)
from host.proxy.framing import (
    SPECIAL_REQUEST_HEADERS,
    field_problem,
    reason,
    request_line_problem,
)
from host.proxy.stream import (
    CONTINUE,
    HOLD,
    ExchangeInfo,
    LocalReply,
    PassThroughFilter,
    StreamFilter,
    Verdict,
)
from host.proxy.tls import TlsInfo
from host.proxy.upstream import (
    BACKLOG,
    PEER_FULL,
    Cluster,
    UpstreamPool,
)
from host.proxy.upstream_api import ReadGate
from host.proxy.write_batch import BatchedWriter, WriteBatch

__all__ = [
    "CONTINUE",
    "HOLD",
    "MAX_HEADER_BYTES",
    "Cluster",
    "DownstreamProtocol",
    "Exchange",
    "ExchangeInfo",
    "HalfStream",
    "Limits",
    "LocalReply",
    "ParsedRequest",
    "PassThroughFilter",
    "ProxyCore",
    "StreamFilter",
    "UpstreamPool",
    "Verdict",
    "field_problem",
    "reason",
    "request_line_problem",
]

MAX_HEADER_BYTES: Final = 64 * 1024
MAX_QUEUED_REQUESTS: Final = 16  # pipelined requests parsed ahead of the one in flight
# why reading from a peer is paused (bits)
_QUEUE: Final = 4  # too many pipelined requests waiting
_OWN_FULL: Final = 8  # our socket write buffer to this same peer is over its high-water mark


# -- downstream ------------------------------------------------------------------------------


class ParsedRequest:
    """One request as the parser delivered it (head, queued body, trailers)."""

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


class _Request:
    """A parsed request's headers as the exchange takes them."""

    def __init__(
        self,
        headers: HeaderMap,
        has_body: bool,
        length: int,
        expect_continue: bool,
        request_id: bytes,
    ) -> None:
        self.headers: Final = headers
        self.has_body: Final = has_body
        self.length: Final = length  # content-length (-1: none, or chunked)
        self.expect_continue: Final = expect_continue
        self.request_id: Final = request_id


def request_headers(p: ParsedRequest, client_ip: bytes, scheme: bytes = b"http") -> _Request | str:
    """The exchange's view of an HTTP/1.1 request (pseudo-headers first, hop-by-hop
    headers out, Host as ``:authority``, the edge headers added), or why it is
    malformed (answered 400)."""
    target = p.target
    authority = b""
    if target[:1] != b"/" and target != b"*":
        # absolute-form (a client configured to use us as an HTTP proxy)
        try:
            u = httptools.parse_url(target)
            authority = u.host + (b":" + str(u.port).encode() if u.port else b"")
            target = (u.path or b"/") + (b"?" + u.query if u.query else b"")
        except httptools.HttpParserInvalidURLError:
            return "malformed request target"
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
                    expect_continue = True  # answered here, not forwarded
                else:
                    rest.append((k, v))
            elif k == b"content-length":
                try:
                    cl = int(v)
                except ValueError:
                    return "malformed content-length"
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
        return "more than one host header"
    items = [
        (b":method", p.method),
        (b":path", target),
        (b":authority", authority or host),
        (b":scheme", scheme),  # https behind the listener's TLS, as Envoy sets it
    ]
    items += rest
    rid = add_edge_headers(items, xff, rid, client_ip, scheme)
    if cl >= 0 and not te_chunked:
        items.append((b"content-length", b"%d" % cl))
    # every field is llhttp's (strict: token names, no CR/LF/NUL in values) or our own
    h = HeaderMap.wrap(items, verified=True)
    has_body = cl > 0 or te_chunked
    return _Request(h, has_body, cl if not te_chunked else -1, expect_continue, rid)


class DownstreamProtocol(ReadGate, BatchedWriter, asyncio.Protocol):
    """One client connection. Requests are answered strictly in order (HTTP/1.1
    pipelining is honoured by queueing later requests until the current one ends).

    Bounded: reading pauses while the upstream's socket (or the exchange) holds too
    much of this client's data, or too many pipelined requests wait; a request's
    headers must arrive within ``limits.request_headers_timeout_s`` of its first byte;
    a connection with no request for ``limits.idle_timeout_s`` is closed.

    Writes are held to the end of the loop's tick (``write_batch``); every close of the
    transport goes through ``close_held``, which sends them first."""

    def __init__(self, core: ProxyCore) -> None:
        self.core = core
        self.transport: asyncio.Transport | None = None
        self.batch: WriteBatch = core.write_batch
        self._out: list[bytes] = []  # written in this tick, not yet sent
        self.parser = httptools.HttpRequestParser(self)
        self._bind_parser()
        self.client = ("", 0)
        self.client_ip = b""
        self.local = ("", 0)
        self.tls: TlsInfo | None = None
        self.id = next_connection_id()
        self.current: Exchange | None = None
        self.queued: deque[ParsedRequest] = deque()
        self._parsing: ParsedRequest | None = None
        self._header_bytes = 0
        self._headers_too_large = False
        self._url = b""
        self.closing = False
        self._paused = 0  # why reading is paused (PEER_FULL, BACKLOG, _QUEUE bits)
        self.write_paused = False
        self._accepted = False
        self._head_started: float | None = None  # a request's first byte, until its headers
        self._idle_since: float | None = None  # no request in flight since then
        self._watchdog: asyncio.TimerHandle | None = None
        self._last: ParsedRequest | None = None  # the request whose headers came last
        self._in_body = False  # the message's headers are complete
        # the response being written (see send_headers)
        self._head = b""  # a head held until what follows it
        self._chunked = False
        self._declared = -1  # the content-length the head declared (-1: none)
        self._written = 0  # body bytes written
        self._head_request = False
        self._close_after = False  # the response's body broke its declared length

    def _bind_parser(self) -> None:
        """The parser's methods this calls per request, bound once (a compiled call by
        name looks the method up every time)."""
        p = self.parser
        self._feed = p.feed_data
        self._get_method = p.get_method
        self._get_version = p.get_http_version
        self._keeps_alive = p.should_keep_alive

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        core = self.core
        if not admit(core, transport):  # over the cap: closed at once
            self.closing = True
            return
        self._accepted = True
        self.client, self.local, self.tls = endpoints(transport)
        self.client_ip = self.client[0].encode()
        self._idle_since = time.monotonic()
        self._arm(min(core.limits.request_headers_timeout_s, core.limits.idle_timeout_s))

    def hand_over(self) -> None:
        """The connection turned out to speak another protocol (the listener hands it
        over before any request): stop the timers; the new protocol counts its close."""
        self.closing = True
        self._accepted = False
        stop_timer(self._watchdog)
        self._watchdog = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._out.clear()
        stop_timer(self._watchdog)
        self._watchdog = None
        if not self._accepted:
            return
        ex = self.current
        self.current = None
        if ex is not None:
            ex.downstream_lost()
        self.queued.clear()
        self.core.connection_closed()

    # flow control: the client's side (pause/resume: ReadGate)
    def _gone(self) -> bool:
        return self.closing

    # the client is not reading our response as fast as the upstream sends it
    # (and a client that pipelines requests without reading the answers gets no more read)
    def pause_writing(self) -> None:
        self.write_paused = True
        self.pause(_OWN_FULL)
        ex = self.current
        if ex is not None and ex.upstream is not None:
            ex.upstream.pause(PEER_FULL)

    def resume_writing(self) -> None:
        self.write_paused = False
        self.resume(_OWN_FULL)
        ex = self.current
        if ex is not None and ex.upstream is not None:
            ex.upstream.resume(PEER_FULL)

    # timeouts: one timer per connection, re-armed at the nearest deadline
    def _arm(self, delay: float) -> None:
        self._watchdog = self.core.loop.call_later(max(delay, 0.001), self._check_timeouts)

    def _check_timeouts(self) -> None:
        self._watchdog = None
        if self.closing or self.transport is None:
            return
        limits = self.core.limits
        now = time.monotonic()
        step = min(limits.request_headers_timeout_s, limits.idle_timeout_s)
        if self._head_started is not None and self.current is None:
            # (a pipelined head behind a request in flight is timed once that one ends)
            left = self._head_started + limits.request_headers_timeout_s - now
            if left <= 0:
                # Envoy closes the connection (downstream_rq_header_timeout); we say why first
                self.fatal(408, "request headers not received in time")
                return
            step = min(step, left)
        elif self._idle_since is not None and self.current is None:
            left = self._idle_since + limits.idle_timeout_s - now
            if left <= 0:
                self.closing = True
                self.close_held()  # Envoy's idle_timeout: close the idle connection
                return
            step = min(step, left)
        self._arm(step)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self._feed(data)
        except httptools.HttpParserUpgrade as e:
            self._upgrade(data, e)
        except httptools.HttpParserError as e:
            # httptools wraps what a callback raises (HttpParserCallbackError), so the
            # header-size verdict travels in a flag, not in the exception type.
            if self._headers_too_large:
                self.fatal(431, "request header block exceeds 64 KiB")
            else:
                self.fatal(400, f"malformed HTTP request: {e}")

    def _upgrade(self, data: bytes, e: httptools.HttpParserUpgrade) -> None:
        """llhttp stopped after a request asking for a protocol upgrade. ``h2c`` is
        ignored and the request served over HTTP/1.1, as Envoy's codec does (the Upgrade,
        Connection and HTTP2-Settings headers are not forwarded); anything else (CONNECT,
        websocket, ...) is not supported: 501 and close."""
        p = self._last
        h2c = p is not None and any(
            k == b"upgrade" and v.strip().lower() == b"h2c" for k, v in p.headers
        )
        if not h2c or p is None or p.method == b"CONNECT":
            self.fatal(501, "protocol upgrades are not supported")
            return
        offset = e.args[0] if e.args and isinstance(e.args[0], int) else len(data)
        self.parser = httptools.HttpRequestParser(self)
        self._bind_parser()
        if offset < len(data):
            self.data_received(data[offset:])

    def fatal(self, status: int, message: str) -> None:
        """A request we cannot parse: answer it (if nothing is in flight) and close."""
        self.closing = True
        ex = self.current
        if ex is None or not ex.response_started:
            # Write before the exchange ends: its end closes the transport, and asyncio
            # drops writes made after close() (it still flushes the ones made before).
            if self.transport is not None:
                self.hold(framing.error_message(status, message))
            if ex is not None:
                self.current = None
                ex.codec_error(status, message)
        self.close_held()

    # parser callbacks
    def on_message_begin(self) -> None:
        self._parsing = ParsedRequest()
        self._header_bytes = 0
        self._url = b""
        self._head_started = time.monotonic()
        self._idle_since = None
        self._in_body = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._headers_too_large = True
            raise _HeadersTooLarge()

    def on_header(self, name: bytes, value: bytes) -> None:
        p = self._parsing
        assert p is not None
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > MAX_HEADER_BYTES:
            self._headers_too_large = True
            raise _HeadersTooLarge()
        if self._in_body:  # after the headers: a trailer field
            if p.trailers is None:
                p.trailers = []
            p.trailers.append((name.lower(), value))
        else:
            p.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        p = self._parsing
        assert p is not None
        self._head_started = None
        self._last = p
        self._in_body = True
        p.method = self._get_method()
        p.target = self._url
        p.version = self._get_version()
        p.keep_alive = self._keeps_alive()
        if self.closing:
            return  # answered with an error already: later requests are not served
        if self.current is None:
            self._start(p)
        else:
            self.queued.append(p)
            if len(self.queued) >= MAX_QUEUED_REQUESTS:
                self.pause(_QUEUE)

    def on_body(self, body: bytes) -> None:
        p = self._parsing
        assert p is not None
        ex = self.current
        if ex is not None and ex.parsed is p:
            ex.downstream_body(body)
        else:
            p.body.append(body)
            p.body_bytes += len(body) + ENTRY_COST
            if p.body_bytes > HIGH_WATER:
                self.pause(_QUEUE)  # a queued request's body waits in memory

    def on_message_complete(self) -> None:
        p = self._parsing
        assert p is not None
        p.complete = True
        self._parsing = None
        ex = self.current
        if ex is not None and ex.parsed is p:
            ex.downstream_complete(p.trailers)

    # exchange management
    def _start(self, p: ParsedRequest) -> None:
        ex = Exchange(self, p, p.keep_alive)
        ex.info.tls = self.tls
        self.current = ex
        if p.version == "1.0":
            ex.info.protocol = "HTTP/1.0"
        ex.open()
        r = request_headers(p, self.client_ip, b"https" if self.tls is not None else b"http")
        if isinstance(r, str):
            self.fatal(400, r)
            return
        ex.info.request_id = r.request_id.decode("latin-1")
        if r.expect_continue and r.has_body and p.version == "1.1" and not p.complete:
            # Envoy (proxy_100_continue off): answer 100 Continue at once, drop Expect
            self.write(framing.CONTINUE_100)
        ex.begin(r.headers, p.method, r.has_body, r.length)
        # Replay what the parser already delivered for a queued request.
        for chunk in p.body:
            ex.downstream_body(chunk)
        p.body = []
        if p.complete and ex.parsed is p:
            ex.downstream_complete(p.trailers)

    def exchange_done(self, ex: ExchangeState, keep_alive: bool) -> None:
        if self.current is ex:
            self.current = None
        if self._paused:
            self.resume(BACKLOG | PEER_FULL)
        if not keep_alive or self.closing or self._close_after:
            self.closing = True
            self.close_held()
            return
        if self.queued:
            self._start(self.queued.popleft())
        if self._paused and len(self.queued) < MAX_QUEUED_REQUESTS // 2:
            self.resume(_QUEUE)
        if self.current is None:
            if self._parsing is None:
                self._idle_since = time.monotonic()
            elif self._head_started is not None:
                self._head_started = time.monotonic()  # its headers' time starts now

    # the response, as the exchange sends it (exchange.Downstream): framed here with
    # ``framing``, one write per event (the head waits for what follows it)
    def send_headers(self, status: int, headers: HeaderMap, end_stream: bool) -> bool:
        ex = self.current
        head_request = ex is not None and ex.method == b"HEAD"
        close = ex is None or not ex.keep_alive or self.closing
        head = framing.response_head(headers, None, end_stream, [], head_request, close)
        if head is None:
            return False
        self._chunked = head.chunked
        self._declared = head.declared
        self._written = 0
        self._head_request = head_request
        if end_stream:
            self.write(head.data)
        else:
            self._head = head.data
        return True

    def send_data(self, data: bytes, end_stream: bool) -> None:
        out = self._head
        self._head = b""
        if data and not self._head_request:
            self._written += len(data)
            body = framing.chunk(data) if self._chunked else data
            out = out + body if out else body
        if end_stream:
            if self._chunked:
                out += framing.trailer_block(None)
            elif self._declared >= 0 and self._written != self._declared and not self._head_request:
                self._close_after = True  # a plugin changed a streamed body's length
        if out:
            self.write(out)

    def send_trailers(self, trailers: HeaderMap) -> bool:
        bad = framing.trailer_problem(trailers) is not None
        if bad and self._head:
            self._head = b""  # nothing went out: the exchange answers 502 instead
            return False
        if not self._chunked or bad:
            self.send_data(b"", True)  # a length-framed body cannot carry trailers
            return True
        self.write(self._head + framing.trailer_block(trailers))
        self._head = b""
        return True

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closing:
            self.hold(data)

    def drop(self, abort: bool) -> None:
        """End the connection now: abort it (a reset) when no response byte went out,
        else close it after what was written."""
        if self.transport is not None:
            if abort:
                self._out.clear()
                self.transport.abort()
            else:
                self.close_held()


class _HeadersTooLarge(Exception):
    pass
