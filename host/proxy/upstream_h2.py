"""The HTTP/2 upstream side of the data path: one multiplexed connection per cluster
(``grpc://``, ``grpcs://`` and ``protocol: h2`` clusters) with the ``h2`` library
(sans-IO) over an asyncio protocol, each request one ``H2Stream``.

An ``H2Stream`` is the exchange's ``upstream_api.UpstreamStream`` (``send_headers`` /
``send_data`` / ``send_trailers`` / ``abandon``, ``pause`` / ``resume``) and it
reports to the exchange's ``ResponseSink`` exactly as the HTTP/1.1 connection does:
``upstream_headers``, ``upstream_body``, ``upstream_complete`` (with the response
trailers: ``grpc-status`` is one), ``upstream_lost`` (a reset or a lost connection),
``upstream_error`` (a malformed response, or no connection: 503), and
``upstream_congested`` (the peer's flow-control window or the socket is full).

Connections (``H2Pool``): cleartext with prior knowledge, or TLS with ALPN ``h2``.
A stream takes a slot on a ready connection below the peer's
``SETTINGS_MAX_CONCURRENT_STREAMS`` (100 assumed until its SETTINGS arrive); when
every connection is full another one is opened (up to ``max_connections`` per
cluster), past that the stream waits for a slot. A GOAWAY stops new streams on that
connection (they go to a new one); streams at or below its last_stream_id finish,
the others fail; the connection closes once its last stream ends. A connection
with no stream for ``idle_timeout_s`` is closed (GOAWAY NO_ERROR). The pool counts
Envoy's ``cluster.<name>.upstream_cx_total``, ``upstream_cx_http2_total``,
``upstream_cx_connect_fail``, ``upstream_rq_total``, ``upstream_rq_rx_reset`` and
``upstream_rq_tx_reset`` through its ``count`` hook.

Flow control: received DATA is acknowledged (WINDOW_UPDATE) as the exchange takes
it, except while the stream is paused (the exchange holds too much, or the client
does not read): then the stream's window is not reopened and the server stops.
The connection window is larger than a stream's so one paused stream does not stall
the others. Sending honours the peer's windows; what does not fit waits here and
congests the exchange past ``CONGESTED_BYTES``.

Headers: pseudo-headers first (``:authority`` from ``host`` when missing;
``:scheme`` follows the connection, ``https`` over TLS); HTTP/1.1-only fields
(``connection``, ``keep-alive``, ``proxy-connection``, ``transfer-encoding``,
``upgrade``, ``host``, and ``te`` unless it is ``trailers``) are dropped, as RFC 9113
§8.2.2 requires; a gRPC request (``content-type: application/grpc...``) gets
``te: trailers`` if it lacks it (an HTTP/1.1 client's request: gRPC servers refuse a
call without it). No plugin and no wasm here.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from h2.events import Event
from hyperframe.frame import Frame, GoAwayFrame

from host.headers import HeaderMap
from host.proxy import framing
from host.proxy.tls import client_context, tls_failure_reason, tls_info_of
from host.proxy.upstream_api import TRANSPORT_FAILURE, ResponseSink
from host.tls_info import TlsInfo


class Cluster(Protocol):
    """What this module reads of ``upstream.Cluster`` (declared here, not imported:
    ``upstream`` imports this module for its HTTP/2 clusters)."""

    name: str
    host: str
    port: int
    tls: bool
    ca_file: str | None
    connect_timeout_s: float

    @property
    def address(self) -> str: ...


__all__ = [
    "CONGESTED_BYTES",
    "CONNECTION_WINDOW",
    "STREAM_WINDOW",
    "H2Pool",
    "H2Stream",
    "H2StreamReset",
    "H2UpstreamConnection",
    "client_ssl_context",
    "headers_problem",
    "request_header_list",
]

STREAM_WINDOW = 256 * 1024  # our receive window per stream (SETTINGS_INITIAL_WINDOW_SIZE)
CONNECTION_WINDOW = 8 * 1024 * 1024  # our receive window for the whole connection
CONGESTED_BYTES = 256 * 1024  # request bytes held here (peer window shut) that congest
_RETRY_S = 1.0  # no new connection this soon after one failed while others are full
_ASSUMED_MAX_STREAMS = 100  # until the peer's SETTINGS say (RFC 9113 §6.5.2 suggests >= 100)

# Fields that mean something only on an HTTP/1.1 connection (RFC 9113 §8.2.2)
_CONNECTION_SPECIFIC = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"http2-settings",
    )
)
_PSEUDO_ORDER = (b":method", b":scheme", b":authority", b":path")


class H2StreamReset(Exception):
    """The upstream reset the stream (RST_STREAM), or refused it with a GOAWAY.
    ``reason``/``detail``: Envoy's words for it (the 503 body's "reset reason" and the
    ``response_code_details`` key)."""

    def __init__(self, code: int, why: str, refused: bool = False) -> None:
        super().__init__(why)
        self.code = code
        refused = refused or code == ErrorCodes.REFUSED_STREAM
        self.reason = "remote refused stream reset" if refused else "remote reset"
        self.detail = "remote_refused_stream_reset" if refused else "remote_reset"


def client_ssl_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A verifying TLS client context offering ALPN ``h2`` (system trust store, or
    ``ca_file``'s CAs): ``host.proxy.tls``'s upstream context."""
    return client_context(ca_file, ("h2",))


def headers_problem(headers: HeaderMap) -> str | None:
    """Why ``headers`` cannot make a request (the same rules as HTTP/1.1's, RFC 9110
    §5.1, §5.5: field names are tokens, no CR/LF/NUL in values, a token method and an
    origin-form path), or None. The HTTP/2 codec would refuse (or mangle) them."""
    method = headers.get(b":method") or b""
    path = headers.get(b":path") or b""
    problem = framing.request_line_problem(method, path)
    if problem is not None:
        return problem
    for k, v in headers.items():
        if k[:1] != b":":
            problem = framing.field_problem(k, v)
            if problem is not None:
                return problem
    return None


def request_header_list(
    headers: HeaderMap, scheme: bytes, default_authority: bytes
) -> list[tuple[bytes, bytes]]:
    """``headers`` (the exchange's request headers, pseudo-headers included) as an
    HTTP/2 header list: pseudo-headers first, connection-specific fields dropped."""
    pseudo: dict[bytes, bytes] = {}
    rest: list[tuple[bytes, bytes]] = []
    host = b""
    has_te = grpc = False
    for k, v in headers.items():
        k = k.lower()
        if k[:1] == b":":
            if k in (b":method", b":path", b":authority"):
                pseudo.setdefault(k, v)
            continue  # :scheme follows this connection; others do not exist in a request
        if k in _CONNECTION_SPECIFIC:
            if k == b"host" and not host:
                host = v
            continue
        if k == b"te":
            if v.strip().lower() == b"trailers" and not has_te:
                has_te = True
                rest.append((k, b"trailers"))
            continue
        if k == b"content-type" and v[:16].lower() == b"application/grpc":
            grpc = True
        rest.append((k, v))
    if not has_te and grpc:
        rest.append((b"te", b"trailers"))  # gRPC over HTTP/2 requires it; servers refuse without
    pseudo[b":scheme"] = scheme
    if not pseudo.get(b":authority"):
        pseudo[b":authority"] = host or default_authority
    method = pseudo.get(b":method", b"GET")
    out: list[tuple[bytes, bytes]] = []
    for k in _PSEUDO_ORDER:
        if k == b":path" and method == b"CONNECT":
            continue
        out.append((k, pseudo.get(k, b"/" if k == b":path" else method)))
    out += rest
    return out


class _H2Client(h2.connection.H2Connection):
    """h2's connection, except that a GOAWAY does not end the streams the peer still
    serves: h2 moves to CLOSED at once (then refuses their frames) and drops what it had
    queued to send (a SETTINGS or PING ack read in the same packet); RFC 9113 §6.8 lets
    the streams up to last_stream_id finish. The caller opens no new stream."""

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> tuple[list[Frame], list[Event]]:
        ev = h2.events.ConnectionTerminated()
        try:
            ev.error_code = ErrorCodes(frame.error_code)
        except ValueError:
            ev.error_code = frame.error_code
        ev.last_stream_id = frame.last_stream_id
        ev.additional_data = frame.additional_data or None
        return [], [ev]


class H2Stream:
    """One request and its response on an HTTP/2 upstream connection (the exchange's
    ``UpstreamStream``). What the exchange sends before the stream has a connection
    slot (or while the peer's window is shut) waits here."""

    __slots__ = (
        "_congested",
        "_done",
        "_end",
        "_head",
        "_head_end",
        "_method",
        "_out",
        "_out_bytes",
        "_paused",
        "_trailers",
        "_unacked",
        "cluster",
        "conn",
        "exchange",
        "local_closed",
        "remote_closed",
        "response_started",
        "sid",
    )

    def __init__(self, cluster: Cluster, sink: ResponseSink | None) -> None:
        self.cluster = cluster
        self.exchange = sink  # whom we report to; None once the exchange let go
        self.conn: H2UpstreamConnection | None = None
        self.sid = 0  # the HTTP/2 stream id (0: headers not sent yet)
        self._done: Callable[[H2Stream | None, str], None] | None = None
        self._head: HeaderMap | None = None
        self._head_end = False
        self._method = b"GET"
        self._out: deque[bytes] = deque()
        self._out_bytes = 0
        self._end = False  # the exchange ended the request (data end or trailers)
        self._trailers: HeaderMap | None = None
        self._paused = 0
        self._unacked = 0  # received bytes not yet acknowledged (stream paused)
        self._congested = False
        self.local_closed = False
        self.remote_closed = False
        self.response_started = False

    # -- the UpstreamStream side (called by the exchange) --

    @property
    def tls(self) -> TlsInfo | None:
        """The connection's TLS session (grpcs://, https:// with protocol h2), else None."""
        return self.conn.tls if self.conn is not None else None

    def send_headers(self, headers: HeaderMap, end_stream: bool) -> str | None:
        """Send the request headers; returns why they cannot be (nothing is sent then:
        the exchange answers 503, as for HTTP/1.1), or None."""
        if self.exchange is None or self._head is not None:
            return None
        problem = headers_problem(headers)
        if problem is not None:
            return problem
        self._head = headers
        self._head_end = end_stream
        self._method = headers.get(b":method") or b"GET"
        if end_stream:
            self._end = True
        conn = self.conn
        if conn is not None:
            conn.start(self)
        return None

    def send_data(self, data: bytes, end_stream: bool) -> None:
        if self.exchange is None or self._end:
            return
        if data:
            self._out.append(data)
            self._out_bytes += len(data)
        if end_stream:
            self._end = True
        if self.sid and self.conn is not None:
            self.conn.flush_stream(self)

    def send_trailers(self, trailers: HeaderMap) -> str | None:
        """End the request with ``trailers``. The headers went out already, so a trailer
        that cannot be sent is dropped (the request still ends), as for HTTP/1.1."""
        if self.exchange is None or self._end:
            return None
        if framing.trailer_problem(trailers) is None:
            self._trailers = trailers
        self._end = True
        if self.sid and self.conn is not None:
            self.conn.flush_stream(self)
        return None

    def abandon(self) -> None:
        """The exchange gave up on the stream (client gone, local reply): RST_STREAM
        (CANCEL) unless it already ended both ways."""
        self.exchange = None
        self._out.clear()
        self._out_bytes = 0
        conn = self.conn
        if conn is not None:
            conn.cancel(self, ErrorCodes.CANCEL)

    def pause(self, why: int) -> None:
        self._paused |= why

    def resume(self, why: int) -> None:
        if not self._paused & why:
            return
        self._paused &= ~why
        if not self._paused and self._unacked and self.conn is not None:
            n, self._unacked = self._unacked, 0
            self.conn.acknowledge(self, n)

    # -- for the connection --

    def _set_congested(self, congested: bool) -> None:
        if congested != self._congested:
            self._congested = congested
            sink = self.exchange
            if sink is not None:
                sink.upstream_congested(congested)

    def _fail(self, exc: Exception | None, status: int = 0, message: str = "") -> None:
        """The stream is over without a complete response: tell the exchange once."""
        sink = self.exchange
        self.exchange = None
        if sink is None:
            return
        if status:
            sink.upstream_error(status, message)
        else:
            sink.upstream_lost(exc)


class H2UpstreamConnection(asyncio.Protocol):
    """One HTTP/2 connection to a cluster, multiplexing its streams."""

    def __init__(self, pool: H2Pool, cluster: Cluster, tls: bool) -> None:
        self.pool = pool
        self.cluster = cluster
        self.scheme = b"https" if tls else b"http"
        self.tls: TlsInfo | None = None  # the TLS session's facts (upstream.* attributes)
        self.h2 = _H2Client(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 64 * 1024,
            },
        )
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, H2Stream] = {}
        self.reserved = 0  # slots promised to streams that have not sent headers yet
        self.ready = False  # the preface went out: streams may start
        self.goaway = False  # no new streams (GOAWAY received or sent)
        self.closed = False
        self.settings_seen = False
        self.write_paused = False
        self._idle: asyncio.TimerHandle | None = None

    # -- capacity --

    @property
    def usable(self) -> bool:
        return self.ready and not self.goaway and not self.closed

    def free_slots(self) -> int:
        limit = self.h2.remote_settings.max_concurrent_streams
        if not self.settings_seen:
            limit = min(limit, _ASSUMED_MAX_STREAMS)
        return limit - len(self.streams) - self.reserved

    # -- asyncio callbacks --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.tls = tls_info_of(transport)
        if self.tls is not None:
            self.pool.count(self.cluster, "ssl.handshake")
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self._write()
        self.ready = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.ready = False
        self._cancel_idle()
        streams = list(self.streams.values())
        self.streams.clear()
        self.pool.connection_gone(self)
        for s in streams:
            s.conn = None
            s._fail(exc or ConnectionResetError("upstream connection closed"))

    def pause_writing(self) -> None:
        self.write_paused = True
        for s in list(self.streams.values()):
            s._set_congested(True)

    def resume_writing(self) -> None:
        self.write_paused = False
        for s in list(self.streams.values()):
            if s._out_bytes <= CONGESTED_BYTES:
                s._set_congested(False)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            self._protocol_error(f"upstream sent a malformed HTTP/2 response: {e}")
            return
        for ev in events:
            if self.closed:
                break
            self._event(ev)
        self._write()

    # -- events --

    def _event(self, ev: Event) -> None:
        if isinstance(ev, h2.events.DataReceived):
            s = self.streams.get(ev.stream_id or 0)
            n = ev.flow_controlled_length or 0
            if s is None or s.exchange is None:
                if n:
                    self.h2.acknowledge_received_data(n, ev.stream_id or 0)
                return
            if ev.data:
                s.exchange.upstream_body(ev.data)
            if n:
                if s._paused and s.exchange is not None:  # (not let go meanwhile)
                    s._unacked += n
                else:
                    self.h2.acknowledge_received_data(n, s.sid)
        elif isinstance(ev, h2.events.ResponseReceived):
            s = self.streams.get(ev.stream_id or 0)
            if s is None or s.exchange is None:
                return
            status = 0
            fields: list[tuple[bytes, bytes]] = []
            for k, v in ev.headers or ():
                kb, vb = _b(k), _b(v)
                if kb == b":status":
                    status = int(vb) if vb.isdigit() and len(vb) == 3 else -1
                elif kb[:1] != b":":
                    fields.append((kb, vb))
            if not 100 <= status <= 599:
                # RFC 9113 §8.3.2 / RFC 9110 §15: a malformed response (Envoy: 502)
                self.streams.pop(s.sid, None)
                s.local_closed = s.remote_closed = True
                self._reset(s, ErrorCodes.PROTOCOL_ERROR)
                s._fail(None, 502, "upstream sent a malformed response: bad :status")
                self._stream_gone(s)
                return
            s.response_started = True
            ended = ev.stream_ended is not None
            s.exchange.upstream_headers(status, fields, not ended and s._method != b"HEAD")
            if ended and not s.remote_closed:
                # headers with END_STREAM (a trailers-only gRPC answer): complete now,
                # so the exchange never resets a stream that is already over
                self._remote_end(s, None)
        elif isinstance(ev, h2.events.TrailersReceived):
            s = self.streams.get(ev.stream_id or 0)
            if s is not None:
                trailers = HeaderMap.from_pairs([(_b(k), _b(v)) for k, v in ev.headers or ()])
                self._remote_end(s, trailers)
        elif isinstance(ev, h2.events.StreamEnded):
            s = self.streams.get(ev.stream_id or 0)
            if s is not None and not s.remote_closed:
                self._remote_end(s, None)
        elif isinstance(ev, h2.events.StreamReset):
            s = self.streams.pop(ev.stream_id or 0, None)
            if s is not None:
                code = int(ev.error_code or 0)
                s.remote_closed = s.local_closed = True
                self.pool.count(self.cluster, "upstream_rq_rx_reset")
                s._fail(H2StreamReset(code, f"upstream reset the stream ({_code_name(code)})"))
                self._stream_gone(s)
        elif isinstance(ev, h2.events.WindowUpdated):
            targets = (
                list(self.streams.values())
                if not ev.stream_id
                else [s for s in (self.streams.get(ev.stream_id),) if s is not None]
            )
            for s in targets:
                if s._out or (s._end and not s.local_closed):
                    self.flush_stream(s, write=False)
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            self.settings_seen = True
            self.pool.dispatch(self.cluster)
            for s in list(self.streams.values()):  # a larger initial window
                if s._out:
                    self.flush_stream(s, write=False)
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self._goaway(int(ev.last_stream_id or 0), int(ev.error_code or 0))

    def _remote_end(self, s: H2Stream, trailers: HeaderMap | None) -> None:
        s.remote_closed = True
        if s._unacked:
            # the connection's share of the window must come back even for a done stream
            self.h2.acknowledge_received_data(s._unacked, s.sid)
            s._unacked = 0
        sink = s.exchange
        s.exchange = None
        if not s.local_closed:
            # the response is complete before the request: end our side without
            # pretending the request was complete (RFC 9113 §8.1)
            s.local_closed = True
            s._out.clear()
            s._out_bytes = 0
            self._reset(s, ErrorCodes.NO_ERROR)
        self.streams.pop(s.sid, None)
        self._stream_gone(s)
        if sink is not None:
            sink.upstream_complete(trailers)

    def _goaway(self, last_stream_id: int, code: int) -> None:
        self.goaway = True
        self.pool.connection_unusable(self)
        for sid in [sid for sid in self.streams if sid > last_stream_id]:
            s = self.streams.pop(sid)
            s.local_closed = s.remote_closed = True
            s.conn = None
            if s._unacked:
                self.h2.acknowledge_received_data(s._unacked, sid)
                s._unacked = 0
            s._fail(
                H2StreamReset(
                    code, f"upstream refused the stream (GOAWAY {_code_name(code)})", True
                )
            )
        self._maybe_close()

    def _protocol_error(self, message: str) -> None:
        self.goaway = True
        self._write()  # h2 queued its GOAWAY
        streams = list(self.streams.values())
        self.streams.clear()
        self.pool.connection_unusable(self)
        for s in streams:
            s.conn = None
            if s.response_started:
                s._fail(ConnectionError(message))
            else:
                s._fail(None, 502, message)
        if self.transport is not None:
            self.transport.close()

    # -- streams --

    def reserve(self, s: H2Stream) -> None:
        self.reserved += 1
        s.conn = self
        self._cancel_idle()

    def start(self, s: H2Stream) -> None:
        """Send ``s``'s headers (and what it already queued): it takes a stream id."""
        if s.sid or s._head is None:
            return
        self.reserved -= 1
        if not self.usable:
            s.conn = None
            self.pool.rebind(s)
            return
        headers = request_header_list(s._head, self.scheme, self.cluster.address.encode())
        sid = self.h2.get_next_available_stream_id()
        end = s._head_end
        try:
            self.h2.send_headers(sid, headers, end_stream=end)
        except (h2.exceptions.ProtocolError, ValueError) as e:
            s.conn = None
            s._fail(None, 503, f"upstream request contains an invalid header: {e}")
            self.pool.dispatch(self.cluster)
            self._maybe_idle()
            return
        s.sid = sid
        self.streams[sid] = s
        self.pool.count(self.cluster, "upstream_rq_total")
        if end:
            s.local_closed = True
        self.flush_stream(s, write=False)
        self._write()

    def flush_stream(self, s: H2Stream, write: bool = True) -> None:
        """Send what ``s`` queued, as far as the peer's windows allow."""
        if s.local_closed or not s.sid:
            if write:
                self._write()
            return
        h = self.h2
        sid = s.sid
        try:
            while s._out:
                window = min(h.local_flow_control_window(sid), h.max_outbound_frame_size)
                if window <= 0:
                    break
                chunk = s._out[0]
                if len(chunk) <= window:
                    s._out.popleft()
                    last = not s._out and s._end and s._trailers is None
                    h.send_data(sid, chunk, end_stream=last)
                    s._out_bytes -= len(chunk)
                    if last:
                        s.local_closed = True
                else:
                    s._out[0] = chunk[window:]
                    h.send_data(sid, chunk[:window])
                    s._out_bytes -= window
            if not s._out and s._end and not s.local_closed:
                s.local_closed = True
                trailers = _trailer_list(s._trailers) if s._trailers is not None else []
                if trailers:
                    h.send_headers(sid, trailers, end_stream=True)
                else:  # no trailer left (h2 cannot encode an empty block): END_STREAM
                    h.end_stream(sid)
        except h2.exceptions.StreamClosedError:
            s.local_closed = True
            s._out.clear()
            s._out_bytes = 0
        except h2.exceptions.ProtocolError as e:
            s.local_closed = True
            s._out.clear()
            s._out_bytes = 0
            self._reset(s, ErrorCodes.INTERNAL_ERROR)
            self.streams.pop(sid, None)
            s._fail(H2StreamReset(ErrorCodes.INTERNAL_ERROR, f"cannot send upstream: {e}"))
            self._stream_gone(s)
        s._set_congested(self.write_paused or s._out_bytes > CONGESTED_BYTES)
        if write:
            self._write()

    def acknowledge(self, s: H2Stream, n: int) -> None:
        if self.closed or not s.sid:
            return
        try:
            self.h2.acknowledge_received_data(n, s.sid)
        except h2.exceptions.ProtocolError:
            return
        self._write()

    def cancel(self, s: H2Stream, code: ErrorCodes) -> None:
        """The exchange let go of ``s``."""
        if not s.sid:
            if s.conn is self:
                self.reserved -= 1
            s.conn = None
            self.pool.dispatch(self.cluster)
            self._maybe_idle()
            return
        if self.streams.pop(s.sid, None) is None:
            return  # already over
        if s._unacked:
            self.h2.acknowledge_received_data(s._unacked, s.sid)
            s._unacked = 0
        if not (s.local_closed and s.remote_closed):
            s.local_closed = s.remote_closed = True
            self._reset(s, code)
            self.pool.count(self.cluster, "upstream_rq_tx_reset")
        self._stream_gone(s)
        self._write()

    def _reset(self, s: H2Stream, code: ErrorCodes) -> None:
        if self.closed:
            return
        try:
            self.h2.reset_stream(s.sid, code)
        except h2.exceptions.ProtocolError:
            pass  # already closed in h2's view

    def _stream_gone(self, s: H2Stream) -> None:
        s.conn = None
        if self.goaway:
            self._maybe_close()
        else:
            self.pool.dispatch(self.cluster)
            self._maybe_idle()

    # -- connection life --

    def _write(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def _maybe_close(self) -> None:
        if not self.streams and not self.reserved and self.transport is not None:
            self._write()
            self.transport.close()

    def _maybe_idle(self) -> None:
        if self.streams or self.reserved or self.closed or self._idle is not None:
            return
        self._idle = self.pool.loop.call_later(self.pool.idle_timeout_s, self._idle_expired)

    def _cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _idle_expired(self) -> None:
        self._idle = None
        if self.streams or self.reserved or self.closed:
            return
        self.close(ErrorCodes.NO_ERROR)

    def close(self, code: ErrorCodes = ErrorCodes.NO_ERROR) -> None:
        """GOAWAY and close (streams still open fail as the connection goes)."""
        if self.closed:
            return
        self.goaway = True
        self.pool.connection_unusable(self)
        try:
            self.h2.close_connection(code)
        except h2.exceptions.ProtocolError:
            pass
        self._write()
        if self.transport is not None:
            self.transport.close()


class _ClusterConnections:
    """The pool's state for one cluster: its connections and the streams waiting."""

    __slots__ = ("cluster", "connecting", "conns", "failed_at", "waiting")

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.conns: list[H2UpstreamConnection] = []
        self.connecting = 0
        self.waiting: deque[H2Stream] = deque()
        self.failed_at = -1e9  # loop time of the last failed connect


class H2Pool:
    """HTTP/2 connections to the h2 clusters; hands out stream slots."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        ssl_context: Callable[[Cluster], ssl.SSLContext | None] | None = None,
        *,
        max_connections: int = 8,
        idle_timeout_s: float = 300.0,
        count: Callable[[Cluster, str], None] | None = None,
    ) -> None:
        self.loop = loop
        # counts Envoy's cluster.<name>.<suffix> counters (upstream_cx_total, ...)
        self.count: Callable[[Cluster, str], None] = count or _no_count
        # the TLS client context of a grpcs:// cluster (None: cleartext, prior knowledge)
        self.ssl_context = ssl_context or _default_ssl_context
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.connects = 0
        self._clusters: dict[int, _ClusterConnections] = {}

    def _state(self, cluster: Cluster) -> _ClusterConnections:
        st = self._clusters.get(id(cluster))
        if st is None or st.cluster is not cluster:
            st = self._clusters[id(cluster)] = _ClusterConnections(cluster)
        return st

    def connections(self, cluster: Cluster) -> list[H2UpstreamConnection]:
        """The cluster's open connections (for tests and the admin view)."""
        return list(self._state(cluster).conns)

    def acquire(
        self,
        cluster: Cluster,
        sink: ResponseSink,
        done: Callable[[H2Stream | None, str], None],
    ) -> None:
        """Call ``done(stream, "")`` once a connection has a slot for a new stream, or
        ``done(None, reason)`` when no connection could be made."""
        s = H2Stream(cluster, sink)
        s._done = done
        st = self._state(cluster)
        st.waiting.append(s)
        self.dispatch(cluster)

    def rebind(self, s: H2Stream) -> None:
        """A stream whose connection went away before it started: another slot."""
        st = self._state(s.cluster)
        st.waiting.appendleft(s)
        self.dispatch(s.cluster)

    def dispatch(self, cluster: Cluster) -> None:
        """Give waiting streams slots; connect when every connection is full."""
        st = self._state(cluster)
        while st.waiting:
            s = st.waiting[0]
            if s.exchange is None:  # given up while waiting
                st.waiting.popleft()
                continue
            conn = next((c for c in st.conns if c.usable and c.free_slots() > 0), None)
            if conn is None:
                if (
                    st.connecting == 0
                    and len(st.conns) < self.max_connections
                    # another connection failed a moment ago while these are full: the
                    # waiters take their slots as streams end, no connect storm
                    and (not st.conns or self.loop.time() - st.failed_at >= _RETRY_S)
                ):
                    self._connect(st)
                return
            st.waiting.popleft()
            conn.reserve(s)
            done, s._done = s._done, None
            if done is not None:
                done(s, "")
            elif s._head is not None:
                conn.start(s)  # a rebound stream: its headers go out now

    def _connect(self, st: _ClusterConnections) -> None:
        cluster = st.cluster
        st.connecting += 1
        self.connects += 1
        try:
            ctx = self.ssl_context(cluster)
        except (OSError, ssl.SSLError, ValueError) as e:
            st.connecting -= 1
            self._fail_waiting(st, f"TLS setup failed: {e}")
            return

        async def connect() -> None:
            try:
                _t, conn = await asyncio.wait_for(
                    self.loop.create_connection(
                        lambda: H2UpstreamConnection(self, cluster, ctx is not None),
                        cluster.host,
                        cluster.port,
                        ssl=ctx,
                        server_hostname=cluster.host if ctx is not None else None,
                    ),
                    cluster.connect_timeout_s,
                )
            except TimeoutError:
                st.connecting -= 1
                self._fail_waiting(st, "connect timeout")
                return
            except ssl.SSLError as e:  # the handshake failed (e.g. the certificate)
                st.connecting -= 1
                self.count(cluster, "ssl.connection_error")
                if isinstance(e, ssl.SSLCertVerificationError):
                    self.count(cluster, "ssl.fail_verify_error")
                self._fail_waiting(
                    st, f"connection failure, {TRANSPORT_FAILURE}{tls_failure_reason(e)}"
                )
                return
            except OSError as e:
                st.connecting -= 1
                self._fail_waiting(st, f"connection failure: {e.strerror or e}")
                return
            st.connecting -= 1
            if ctx is not None:
                sslobj = conn.transport.get_extra_info("ssl_object") if conn.transport else None
                alpn = sslobj.selected_alpn_protocol() if sslobj is not None else None
                if alpn != "h2":
                    conn.close()
                    self._fail_waiting(
                        st, f"connection failure: upstream did not negotiate h2 (ALPN {alpn!r})"
                    )
                    return
            if conn.closed:
                self.dispatch(cluster)
                return
            st.conns.append(conn)
            self.count(cluster, "upstream_cx_total")
            self.count(cluster, "upstream_cx_http2_total")
            self.dispatch(cluster)
            conn._maybe_idle()

        self.loop.create_task(connect())

    def _fail_waiting(self, st: _ClusterConnections, why: str) -> None:
        st.failed_at = self.loop.time()
        self.count(st.cluster, "upstream_cx_connect_fail")
        if any(c.usable for c in st.conns) or st.connecting:
            self.dispatch(st.cluster)  # others may still serve them
            return
        waiting = list(st.waiting)
        st.waiting.clear()
        for s in waiting:
            done, s._done = s._done, None
            if s.exchange is None:
                continue
            if done is not None:
                done(None, why)
            else:
                s._fail(
                    None,
                    503,
                    "upstream connect error or disconnect/reset before headers. "
                    f"reset reason: {why}",
                )

    def connection_unusable(self, conn: H2UpstreamConnection) -> None:
        """No new stream on ``conn`` (GOAWAY, error, closing)."""
        st = self._clusters.get(id(conn.cluster))
        if st is not None and conn in st.conns:
            st.conns.remove(conn)
            if st.waiting:
                self.dispatch(conn.cluster)

    def connection_gone(self, conn: H2UpstreamConnection) -> None:
        self.connection_unusable(conn)

    def retire(self, clusters: Sequence[Cluster]) -> None:
        """``clusters`` went away (a config reload): no new stream on their connections,
        which close once the streams in flight there finished."""
        for cluster in clusters:
            st = self._clusters.pop(id(cluster), None)
            if st is None or st.cluster is not cluster:
                continue
            for conn in list(st.conns):
                conn.goaway = True
                conn._maybe_close()
            st.conns.clear()

    def close(self, clusters: Sequence[Cluster] | None = None) -> None:
        """Close the connections of ``clusters`` (all when None)."""
        ids = None if clusters is None else {id(c) for c in clusters}
        for key, st in list(self._clusters.items()):
            if ids is not None and key not in ids:
                continue
            for conn in list(st.conns):
                conn.close()
            del self._clusters[key]


def _no_count(cluster: Cluster, suffix: str) -> None:
    pass


def _default_ssl_context(cluster: Cluster) -> ssl.SSLContext | None:
    return client_ssl_context(cluster.ca_file) if cluster.tls else None


def _trailer_list(trailers: HeaderMap) -> list[tuple[bytes, bytes]]:
    return [
        (k.lower(), v)
        for k, v in trailers.items()
        if k[:1] != b":" and k.lower() not in _CONNECTION_SPECIFIC and k.lower() != b"te"
    ]


def _b(x: Any) -> bytes:
    return x if isinstance(x, bytes) else str(x).encode("latin-1")


def _code_name(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return f"error {code}"
