"""The HTTP/2 socket adapter, downstream side: one ``H2Connection`` per client
connection drives the ``h2`` library (the sans-IO HTTP/2 state machine) and runs one
``exchange.Exchange`` per stream, on the same core as HTTP/1.1.

What it does that HTTP/1.1 does not:

* flow control both ways: request data is acknowledged (WINDOW_UPDATE) as the
  exchange takes it, and not while the exchange pauses the stream (its upstream is
  full, or too much is held); response data waits for the client's window;
* RST_STREAM both ways: a plugin's reset (or a failure mid-response) resets the
  stream; a client's reset ends its exchange as a lost client;
* GOAWAY when the connection closes (idle timeout, a protocol error, shutdown);
* limits: SETTINGS_MAX_CONCURRENT_STREAMS, and a header block over 64 KiB answered 431
  on its stream (HTTP/1.1's limit).

Headers reach the exchange as Envoy's HTTP/2 codec hands them to filters: the
pseudo-headers as the client sent them, ``cookie`` crumbs joined with "; " (RFC 9113
§8.2.3), plus the edge headers (``edge.py``). No wasm here, and no HTTP/1.1 framing.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from host.headers import HeaderMap
from host.proxy.core_api import ExchangeState
from host.proxy.downstream import admit, endpoints, stop_timer
from host.proxy.edge import add_edge_headers
from host.proxy.exchange import Exchange, ProxyCore
from host.proxy.framing import HOP_BY_HOP, field_problem
from host.proxy.tls import TlsInfo
from host.proxy.upstream_api import PEER_FULL

__all__ = ["PREFACE", "H2Connection"]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_CONCURRENT_STREAMS = 100
MAX_HEADER_BYTES = 64 * 1024  # as HTTP/1.1's: a bigger header block is answered 431
_DECODER_LIMIT = 256 * 1024  # past this hpack refuses the block: a connection error
STREAM_WINDOW = 256 * 1024  # SETTINGS_INITIAL_WINDOW_SIZE we advertise
CONNECTION_WINDOW = 1024 * 1024
_OUT_HIGH = 256 * 1024  # response bytes queued on a stream before its upstream pauses
_OWN_FULL = 8  # (bit) our socket write buffer to the client is over its high-water mark
# response headers HTTP/2 forbids (RFC 9113 §8.2.2) besides the hop-by-hop ones
_NOT_IN_H2 = HOP_BY_HOP | {b"host"}


class H2Stream:
    """One stream: the ``exchange.Downstream`` its exchange answers."""

    __slots__ = (
        "conn",
        "dirty",
        "done",
        "done_at",
        "end_sent",
        "ex",
        "out",
        "out_bytes",
        "out_end",
        "out_trailers",
        "paused",
        "received_end",
        "sid",
        "unacked",
    )

    def __init__(self, conn: H2Connection, sid: int) -> None:
        self.conn = conn
        self.sid = sid
        self.ex: Exchange | None = None
        self.paused = 0  # why acknowledging its data is paused (BACKLOG, PEER_FULL bits)
        self.unacked = 0  # flow-controlled bytes received and not acknowledged yet
        self.out: deque[bytes] = deque()  # response data waiting for the client's window
        self.out_bytes = 0
        self.out_end = False  # the end of the response is queued behind ``out``
        self.out_trailers: HeaderMap | None = None
        self.end_sent = False
        self.dirty = False  # queued output to frame at the connection's next flush
        self.received_end = False  # the client ended its side
        self.done = False  # the exchange finished
        self.done_at = 0.0  # (its response may still wait for the client's window)

    # what the exchange reads
    @property
    def core(self) -> ProxyCore:
        return self.conn.core

    @property
    def client(self) -> tuple[str, int]:
        return self.conn.client

    @property
    def client_ip(self) -> bytes:
        return self.conn.client_ip

    @property
    def local(self) -> tuple[str, int]:
        return self.conn.local

    @property
    def id(self) -> int:
        return self.conn.id

    @property
    def closing(self) -> bool:
        return self.conn.closing

    @property
    def write_paused(self) -> bool:
        return self.conn.write_paused

    # the response (exchange.Downstream)
    def send_headers(self, status: int, headers: HeaderMap, end_stream: bool) -> bool:
        pairs = [(b":status", b"%d" % status)]
        for k, v in headers:
            if k[:1] == b":" or k in _NOT_IN_H2:
                continue
            if field_problem(k, v) is not None:
                return False
            if k == b"content-length" and status in (204, 304):
                continue
            pairs.append((k, v))
        if self.conn.closing or self.end_sent:
            return True
        try:
            self.conn.h2.send_headers(self.sid, pairs, end_stream=end_stream)
        except (h2.exceptions.ProtocolError, ValueError):
            return False
        if end_stream:
            self.end_sent = True
        self.conn.flush()
        self._maybe_close()
        return True

    def send_data(self, data: bytes, end_stream: bool) -> None:
        if data:
            self.out.append(data)
            self.out_bytes += len(data)
        if end_stream:
            self.out_end = True
        self._schedule()
        if self.out_bytes > _OUT_HIGH:
            self._upstream_pause(True)

    def send_trailers(self, trailers: HeaderMap) -> bool:
        good = [
            (k, v)
            for k, v in trailers
            if k[:1] != b":" and k not in _NOT_IN_H2 and field_problem(k, v) is None
        ]
        self.out_trailers = HeaderMap.from_pairs(good)
        self.out_end = True
        self._schedule()
        return True

    def _schedule(self) -> None:
        """Frame the queued output at the connection's next flush (so the body and the
        end that one upstream read released go out as one DATA frame with END_STREAM)."""
        if not self.dirty:
            self.dirty = True
            self.conn.dirty.append(self)
            self.conn.flush()

    def pump(self) -> None:
        """Send queued response data as the client's windows allow, then the end."""
        conn = self.conn.h2
        if self.end_sent or self.conn.closing:
            return
        try:
            while self.out:
                window = min(conn.local_flow_control_window(self.sid), conn.max_outbound_frame_size)
                if window <= 0:
                    return
                chunk = self.out.popleft()
                if len(chunk) > window:
                    self.out.appendleft(chunk[window:])
                    chunk = chunk[:window]
                self.out_bytes -= len(chunk)
                last = not self.out and self.out_end and self.out_trailers is None
                conn.send_data(self.sid, chunk, end_stream=last)
                if last:
                    self.end_sent = True
            if self.out_end and not self.end_sent:
                if self.out_trailers:
                    conn.send_headers(self.sid, list(self.out_trailers), end_stream=True)
                else:
                    conn.send_data(self.sid, b"", end_stream=True)
                self.end_sent = True
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.end_sent = True  # the client reset it meanwhile
        if self.out_bytes <= _OUT_HIGH // 4 and not self.conn.write_paused:
            self._upstream_pause(False)
        self._maybe_close()

    def _upstream_pause(self, pause: bool) -> None:
        ex = self.ex
        if ex is not None and ex.upstream is not None:
            if pause:
                ex.upstream.pause(PEER_FULL)
            else:
                ex.upstream.resume(PEER_FULL)

    # flow control on the request side
    def pause(self, why: int) -> None:
        self.paused |= why

    def resume(self, why: int) -> None:
        if not self.paused & why:
            return
        self.paused &= ~why
        if not self.paused and self.unacked:
            self.conn.ack(self.sid, self.unacked)
            self.unacked = 0
            self.conn.flush()

    def drop(self, abort: bool) -> None:
        """A reset: RST_STREAM (the other streams go on)."""
        self.out.clear()
        self.out_bytes = 0
        self.conn.reset(self.sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
        self.end_sent = True

    def exchange_done(self, ex: ExchangeState, keep_alive: bool) -> None:
        self.done = True
        self.done_at = time.monotonic()
        self._maybe_close()

    def _maybe_close(self) -> None:
        """Forget the stream once its exchange is done and its response is out; a request
        still being sent is then cut short (RST_STREAM NO_ERROR, RFC 9113 §8.1)."""
        if not (self.done and self.end_sent):
            return
        if not self.received_end and self.sid in self.conn.streams:
            self.conn.reset(self.sid, h2.errors.ErrorCodes.NO_ERROR)
        self.conn.forget(self.sid)


class H2Connection(asyncio.Protocol):
    """One HTTP/2 client connection (after ALPN "h2", or the h2c preface)."""

    def __init__(self, core: ProxyCore, conn_id: int, counted: bool = False) -> None:
        self.core = core
        # Outbound header validation is ours (send_headers: names are lower-case tokens,
        # values without CR/LF/NUL, no connection-specific field, :status first): h2's
        # would cost a third of a response's HEADERS frame again.
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=True,
            validate_outbound_headers=False,
        )
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.decoder.max_header_list_size = _DECODER_LIMIT
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, H2Stream] = {}
        self.dirty: list[H2Stream] = []  # streams with output to frame at the next flush
        self.client = ("", 0)
        self.client_ip = b""
        self.local = ("", 0)
        self.scheme = b"http"  # x-forwarded-proto: https behind TLS (ALPN h2)
        self.tls: TlsInfo | None = None  # the listener's TLS session (connection.* attributes)
        self.id = conn_id  # connection.id (one sequence with HTTP/1.1's)
        self.closing = False
        self.write_paused = False
        self._counted = counted  # the listener counted the connection already
        self._accepted = False
        self._in_receive = False
        self._flush_soon = False
        self._idle_since: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        core = self.core
        if not self._counted and not admit(core, transport):  # over the cap: closed at once
            self.closing = True
            return
        self._accepted = True
        self.client, self.local, self.tls = endpoints(transport)
        self.client_ip = self.client[0].encode()
        self.scheme = b"https" if self.tls is not None else b"http"
        self.h2.initiate_connection()
        self.h2.update_settings(
            {
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_BYTES,
            }
        )
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self._flush_now()
        self._idle_since = time.monotonic()
        self._arm(core.limits.idle_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        stop_timer(self._watchdog)
        self._watchdog = None
        if not self._accepted:
            return
        streams = list(self.streams.values())
        self.streams.clear()
        for s in streams:
            if s.ex is not None:
                s.ex.downstream_lost()
        self.core.connection_closed()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.transport is not None and not self.closing:
            self.transport.pause_reading()
        for s in self.streams.values():
            s._upstream_pause(True)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()
        for s in list(self.streams.values()):
            if s.out_bytes <= _OUT_HIGH:
                s._upstream_pause(False)

    # the idle timeout: a connection with no stream for limits.idle_timeout_s
    def _arm(self, delay: float) -> None:
        self._watchdog = self.core.loop.call_later(max(delay, 0.001), self._check_idle)

    def _check_idle(self) -> None:
        self._watchdog = None
        if self.closing or self.transport is None:
            return
        limit = self.core.limits.idle_timeout_s
        now = time.monotonic()
        step = limit
        for st in list(self.streams.values()):
            if st.done and not st.end_sent:
                # a response the client's window has kept waiting for the idle timeout
                # (Envoy: stream_idle_timeout): reset it, its memory goes
                left = st.done_at + limit - now
                if left <= 0:
                    self.reset(st.sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
                else:
                    step = min(step, left)
        if self.streams or self._idle_since is None:
            self._arm(step)
            return
        left = self._idle_since + limit - now
        if left <= 0:
            self.close()  # Envoy's idle_timeout: GOAWAY, then close
            return
        self._arm(left)

    def close(self, error: int = 0) -> None:
        """GOAWAY (the last stream we took), then close after what is written."""
        if self.closing:
            return
        try:
            self.h2.close_connection(error_code=error)
        except h2.exceptions.ProtocolError:
            pass
        self._flush_now()
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    # output
    def flush(self) -> None:
        """Write what h2 has queued: once per loop iteration (the frames one upstream
        read produced, e.g. HEADERS and DATA, go out in one write), and at the end of
        each read from the client."""
        if self._in_receive or self._flush_soon:
            return
        self._flush_soon = True
        self.core.loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        if self.dirty:
            streams, self.dirty = self.dirty, []
            for st in streams:
                st.dirty = False
                st.pump()
        self._flush_soon = False
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def ack(self, sid: int, n: int) -> None:
        try:
            self.h2.acknowledge_received_data(n, sid)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass

    def reset(self, sid: int, code: int) -> None:
        try:
            self.h2.reset_stream(sid, code)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass
        self.flush()
        self.forget(sid)

    def forget(self, sid: int) -> None:
        if self.streams.pop(sid, None) is not None and not self.streams:
            self._idle_since = time.monotonic()

    # input
    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self._in_receive = True
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            self._in_receive = False
            code = getattr(e, "error_code", None) or h2.errors.ErrorCodes.PROTOCOL_ERROR
            self._fail_all()
            self.close(int(code))
            return
        try:
            for ev in events:
                self._event(ev)
        finally:
            self._in_receive = False
        self._flush_now()

    def _fail_all(self) -> None:
        streams = list(self.streams.values())
        self.streams.clear()
        for s in streams:
            if s.ex is not None:
                s.ex.downstream_lost()

    def _event(self, ev: h2.events.Event) -> None:
        match ev:
            case h2.events.RequestReceived():
                self._request(ev)
            case h2.events.DataReceived():
                s = self.streams.get(ev.stream_id or 0)
                n = ev.flow_controlled_length or 0
                if s is None or s.ex is None:
                    if n:
                        self.ack(ev.stream_id or 0, n)  # not ours any more: keep the window open
                    return
                if ev.stream_ended is not None:
                    s.received_end = True
                if s.paused:
                    s.unacked += n
                elif n:
                    self.ack(s.sid, n)
                s.ex.downstream_body(ev.data or b"", ev.stream_ended is not None)
                if ev.stream_ended is not None and s.ex is not None:
                    s.ex.downstream_complete()
            case h2.events.TrailersReceived():
                s = self.streams.get(ev.stream_id or 0)
                if s is not None and s.ex is not None:
                    s.received_end = True
                    s.ex.downstream_complete(list(ev.headers or []))
            case h2.events.StreamEnded():
                s = self.streams.get(ev.stream_id or 0)
                if s is not None and s.ex is not None and not s.received_end:
                    s.received_end = True
                    s.ex.downstream_complete()
                elif s is not None:
                    s.received_end = True
            case h2.events.StreamReset():
                s = self.streams.pop(ev.stream_id or 0, None)
                if s is not None:
                    s.end_sent = True
                    if s.ex is not None:
                        s.ex.downstream_lost()  # the client reset the stream
                if not self.streams:
                    self._idle_since = time.monotonic()
            case h2.events.WindowUpdated():
                if ev.stream_id:
                    s = self.streams.get(ev.stream_id)
                    if s is not None:
                        s.pump()
                else:
                    for s in list(self.streams.values()):
                        s.pump()
            case h2.events.ConnectionTerminated():
                # The client sent GOAWAY. h2's state machine is closed from here on (it
                # refuses to send even on streams below last_stream_id): close now.
                self._fail_all()
                self.close()
            case _:
                pass  # settings, pings, priority: h2 answers what needs an answer

    def _request(self, ev: h2.events.RequestReceived) -> None:
        sid = ev.stream_id or 0
        s = H2Stream(self, sid)
        self.streams[sid] = s
        self._idle_since = None
        ex = Exchange(s)
        ex.info.protocol = "HTTP/2"
        ex.info.tls = self.tls
        s.ex = ex
        ex.open()
        raw = list(ev.headers or [])
        ended = ev.stream_ended is not None
        s.received_end = ended
        size = sum(len(k) + len(v) + 32 for k, v in raw)  # (RFC 9113 §6.5.2's count)
        if size > MAX_HEADER_BYTES:
            self._answer(s, 431, "request header block exceeds 64 KiB")
            return
        items: list[tuple[bytes, bytes]] = []
        rest: list[tuple[bytes, bytes]] = []
        xff: list[bytes] = []
        rid = None
        method = b""
        authority = host = b""
        for k, v in raw:
            k = bytes(k)
            v = bytes(v)
            if k[:1] == b":":
                if k == b":method":
                    method = v
                elif k == b":authority":
                    authority = v
                items.append((k, v))
            elif k == b"x-forwarded-for":
                xff.append(v)
            elif k == b"host":
                host = v
            else:
                if k == b"x-request-id":
                    rid = v
                rest.append((k, v))
        if method == b"CONNECT":
            self._answer(s, 501, "CONNECT is not supported")
            return
        if not authority and host:
            items.append((b":authority", host))
        items += rest
        rid = add_edge_headers(items, xff, rid, self.client_ip, self.scheme)
        ex.info.request_id = rid.decode("latin-1")
        h = HeaderMap()
        h._items = items
        ex.begin(h, method, not ended)

    def _answer(self, s: H2Stream, status: int, message: str) -> None:
        """A request the codec refuses: answer on its stream, end the exchange."""
        body = (message + "\n").encode()
        s.send_headers(
            status,
            HeaderMap([(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]),
            False,
        )
        s.send_data(body, True)
        ex = s.ex
        if ex is not None:
            ex.codec_error(status, message, "http2")
