"""A scripted HTTP/2 server on 127.0.0.1 for the HTTP/2 upstream tests: the ``h2``
library over an asyncio server on the test's own loop (cleartext, prior knowledge).

What a request gets depends on its ``:path``:

* ``/echo``: once the request ended (and ``x-delay-ms`` later, when the request has that
  header), 200 with the request body back (honouring the
  client's flow-control window), ``x-seen-*`` headers telling what arrived
  (``te``, ``:authority``, ``:scheme``, connection-specific fields) and trailers
  ``x-trailer: yes`` and ``x-request-bytes``; request trailers come back as
  ``x-req-trailer-<name>`` trailers.
* ``/big/N``: 200 with N bytes of body, then the end (flow-controlled).
* ``/reset``: RST_STREAM(INTERNAL_ERROR) as soon as the headers arrive.
* ``/reset-mid``: 200 and 5 bytes of body, then RST_STREAM(INTERNAL_ERROR).
* ``/goaway``: a PING and a GOAWAY (last_stream_id = this stream) in one packet at once
  (``ping_acks`` counts the client's answers), then after 100 ms the
  response 200 ``done``; a stream opened later on that connection is not served.
* ``/trailers-only``: a gRPC trailers-only answer (headers with ``grpc-status: 12``
  and END_STREAM).
* ``/hold``: answers nothing until the client resets the stream.
* ``/goaway-refuse``: a GOAWAY whose last_stream_id is below this stream (refused).
* ``/drop``: closes the connection (every stream on it is lost).
* ``/bad-status``: a response with ``:status 999`` (a malformed response).

Each accepted connection is recorded (``conns``), with the requests it saw,
the streams the client reset (and the code), the highest number of streams open at
once, and whether a GOAWAY arrived from the client.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
from h2.errors import ErrorCodes
from hpack import NeverIndexedHeaderTuple
from hyperframe.frame import GoAwayFrame, HeadersFrame, PingFrame


@dataclass
class SeenRequest:
    path: str
    headers: list[tuple[bytes, bytes]]
    body: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    ended: bool = False


class _ServerConn(asyncio.Protocol):
    def __init__(self, server: ScriptedH2Server) -> None:
        self.server = server
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.transport: asyncio.Transport | None = None
        self.requests: dict[int, SeenRequest] = {}
        self.pending: dict[int, tuple[bytearray, list[tuple[bytes, bytes]] | None]] = {}
        self.resets: dict[int, int] = {}  # stream id -> error code the client sent
        self.max_open = 0
        self.goaway_received = False
        self.ping_acks = 0
        self.closed = asyncio.get_running_loop().create_future()
        self.refuse_after: int | None = None  # GOAWAY sent: streams above are ignored

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.conns.append(self)
        settings = {}
        if self.server.max_streams is not None:
            settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = self.server.max_streams
        self.h2.initiate_connection()
        if settings:
            self.h2.update_settings(settings)
        self._write()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def _write(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except Exception:  # a client error: drop the connection
            assert self.transport is not None
            self.transport.close()
            return
        for ev in events:
            self._event(ev)
        self.max_open = max(self.max_open, self.h2.open_inbound_streams)
        self._write()

    def _event(self, ev: h2.events.Event) -> None:
        if isinstance(ev, h2.events.RequestReceived):
            sid = ev.stream_id or 0
            if self.refuse_after is not None and sid > self.refuse_after:
                return
            hdrs = [(bytes(k), bytes(v)) for k, v in ev.headers or ()]
            path = dict(hdrs).get(b":path", b"").decode()
            req = SeenRequest(path, hdrs)
            self.requests[sid] = req
            self.server.requests.append(req)
            if path == "/reset":
                self.h2.reset_stream(sid, ErrorCodes.INTERNAL_ERROR)
            elif path == "/reset-mid":
                self.h2.send_headers(sid, [(b":status", b"200")])
                self.h2.send_data(sid, b"hello")
                self.h2.reset_stream(sid, ErrorCodes.INTERNAL_ERROR)
            elif path == "/trailers-only":
                self.h2.send_headers(
                    sid,
                    [
                        (b":status", b"200"),
                        (b"content-type", b"application/grpc"),
                        (b"grpc-status", b"12"),
                        (b"grpc-message", b"no such method"),
                    ],
                    end_stream=True,
                )
            elif path == "/goaway-refuse":
                # GOAWAY that does not cover this stream: it was never processed
                self.refuse_after = max(0, sid - 2)
                self._write()
                assert self.transport is not None
                self.transport.write(GoAwayFrame(0, last_stream_id=self.refuse_after).serialize())
            elif path == "/bad-status":
                # written behind h2's back (it would not send it): :status 999, not
                # indexed so the connection's HPACK tables stay in step
                self._write()
                block = hpack.Encoder().encode([NeverIndexedHeaderTuple(":status", "999")])
                frame = HeadersFrame(sid, block, flags=["END_HEADERS", "END_STREAM"])
                assert self.transport is not None
                self.transport.write(frame.serialize())
            elif path == "/drop":
                assert self.transport is not None
                self.transport.close()  # the connection goes, streams in flight with it
            elif path == "/goaway":
                # h2 itself would refuse to send on any stream after its own GOAWAY:
                # write the frame behind its back (a graceful shutdown, RFC 9113 §6.8)
                # a PING in the same packet: its ack must not be lost to the GOAWAY
                self.refuse_after = sid
                self._write()
                assert self.transport is not None
                self.transport.write(
                    PingFrame(0, opaque_data=b"goaway!!").serialize()
                    + GoAwayFrame(0, last_stream_id=sid).serialize()
                )
                asyncio.get_running_loop().call_later(0.1, self._answer_late, sid)
            if ev.stream_ended is not None:
                self._request_ended(sid)
        elif isinstance(ev, h2.events.DataReceived):
            sid = ev.stream_id or 0
            req = self.requests.get(sid)
            if req is not None:
                req.body += ev.data or b""
            self.h2.acknowledge_received_data(ev.flow_controlled_length or 0, sid)
        elif isinstance(ev, h2.events.TrailersReceived):
            req = self.requests.get(ev.stream_id or 0)
            if req is not None:
                req.trailers = [(bytes(k), bytes(v)) for k, v in ev.headers or ()]
        elif isinstance(ev, h2.events.StreamEnded):
            self._request_ended(ev.stream_id or 0)
        elif isinstance(ev, h2.events.StreamReset):
            self.resets[ev.stream_id or 0] = int(ev.error_code or 0)
            self.pending.pop(ev.stream_id or 0, None)
        elif isinstance(ev, h2.events.WindowUpdated):
            for sid in list(self.pending):
                self._pump(sid)
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway_received = True
        elif isinstance(ev, h2.events.PingAckReceived):
            self.ping_acks += 1

    def _request_ended(self, sid: int) -> None:
        req = self.requests.get(sid)
        if req is None or req.ended:
            return
        req.ended = True
        delay = dict(req.headers).get(b"x-delay-ms")
        if req.path == "/echo" and delay:  # answered that much later (streams overlap)
            asyncio.get_running_loop().call_later(int(delay) / 1000, self._echo_late, sid)
            return
        if req.path == "/echo":
            self._echo(sid)
        elif req.path.startswith("/big/"):
            n = int(req.path.rsplit("/", 1)[1])
            self.h2.send_headers(sid, [(b":status", b"200")])
            self._send(sid, b"x" * n, None)

    def _echo_late(self, sid: int) -> None:
        if sid not in self.resets:
            self._echo(sid)
            self._write()

    def _echo(self, sid: int) -> None:
        req = self.requests[sid]
        seen = dict(req.headers)
        names = {k for k, _ in req.headers}
        self.h2.send_headers(
            sid,
            [
                (b":status", b"200"),
                (b"x-seen-te", seen.get(b"te", b"-")),
                (b"x-seen-authority", seen.get(b":authority", b"-")),
                (b"x-seen-scheme", seen.get(b":scheme", b"-")),
                (
                    b"x-seen-connection-fields",
                    b",".join(
                        sorted(
                            n
                            for n in names
                            if n
                            in (b"connection", b"keep-alive", b"transfer-encoding", b"host")
                        )
                    )
                    or b"-",
                ),
            ],
        )
        trailers = [(b"x-trailer", b"yes"), (b"x-request-bytes", b"%d" % len(req.body))]
        trailers += [(b"x-req-trailer-" + k, v) for k, v in req.trailers]
        self._send(sid, bytes(req.body), trailers)

    def _answer_late(self, sid: int) -> None:
        if sid in self.resets:
            return
        self.h2.send_headers(sid, [(b":status", b"200")])
        self.h2.send_data(sid, b"done", end_stream=True)
        self._write()

    def _send(self, sid: int, body: bytes, trailers: list[tuple[bytes, bytes]] | None) -> None:
        self.pending[sid] = (bytearray(body), trailers)
        self._pump(sid)

    def _pump(self, sid: int) -> None:
        body, trailers = self.pending[sid]
        while body:
            n = min(
                len(body), self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size
            )
            if n <= 0:
                return
            self.h2.send_data(sid, bytes(body[:n]))
            del body[:n]
        del self.pending[sid]
        if trailers:
            self.h2.send_headers(sid, trailers, end_stream=True)
        else:
            self.h2.end_stream(sid)


class ScriptedH2Server:
    def __init__(self, max_streams: int | None = None) -> None:
        self.max_streams = max_streams
        self.conns: list[_ServerConn] = []
        self.requests: list[SeenRequest] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _ServerConn(self), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for c in self.conns:
                if c.transport is not None:
                    c.transport.close()
            await self.server.wait_closed()


class ThreadedH2Server:
    """A ``ScriptedH2Server`` on its own loop in a thread, for blocking tests (the proxy
    harness runs its own loop); ``stop()`` ends both."""

    def __init__(self, max_streams: int | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="h2-upstream")
        self.thread.start()
        self.srv = ScriptedH2Server(max_streams)
        self.port = asyncio.run_coroutine_threadsafe(self.srv.start(), self.loop).result(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def paths_by_connection(self) -> list[list[str]]:
        async def read() -> list[list[str]]:
            return [[r.path for r in c.requests.values()] for c in self.srv.conns]

        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(5)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.srv.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
