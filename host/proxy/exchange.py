"""The exchange state machine: one request and its response through the filter (the
plugin chain) to a cluster and back, one ``HalfStream`` per direction.

Sans-IO: driven by events (the downstream adapter's, and the upstream stream's through
its ``ResponseSink`` interface) and by the filter's verdicts (``stream.Verdict``), it
emits semantic events on both sides: headers, data and trailers to the client's
``Downstream`` and to the cluster's ``upstream_api.UpstreamStream``, plus pause/resume
calls. Protocol adapters (``http1.DownstreamProtocol``, ``upstream.UpstreamProtocol``;
HTTP/2 beside them) do their own framing. It knows no socket, no wire format and no
wasm. The upstream leg (routing, the stream, the route timeout, the response events)
is the ``exchange_upstream.UpstreamLeg`` mixin; the per-direction state and the
body-length rule are ``halfstream``'s.

Framing rule: the headers of each direction are sent when the filter releases the
first body bytes or the end of the stream, so a body a plugin buffered whole gets its
real ``content-length`` (``halfstream.framed_headers``); a streamed one keeps the
length its (possibly modified) headers declare, or none.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from host.headers import HeaderMap
from host.proxy.core_api import Downstream, Limits, ProxyCore
from host.proxy.exchange_upstream import UpstreamLeg
from host.proxy.grpc_reply import grpc_local_reply, grpc_status_of, is_grpc
from host.proxy.halfstream import (
    ENTRY_COST,
    HIGH_WATER,
    LOW_WATER,
    HalfStream,
    framed_headers,
)
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
from host.proxy.upstream import Cluster
from host.proxy.upstream_api import BACKLOG, UpstreamStream

__all__ = [
    "ENTRY_COST",
    "HIGH_WATER",
    "LOW_WATER",
    "Downstream",
    "Exchange",
    "HalfStream",
    "Limits",
    "ProxyCore",
]


_PASS: Final = PassThroughFilter()


# -- one exchange ----------------------------------------------------------------------------

REQUEST: Final = True
RESPONSE: Final = False


class Exchange(UpstreamLeg):
    """One request and its response through the filter to a cluster and back."""

    __slots__ = (
        "core",
        "down",
        "filter",
        "finished",
        "grpc",
        "info",
        "keep_alive",
        "method",
        "parsed",
        "replying",
        "req",
        "resp",
    )

    def __init__(self, down: Downstream, parsed: object = None, keep_alive: bool = True) -> None:
        self.down = down
        self.core = down.core
        self.parsed = parsed  # the adapter's own handle on this request (opaque here)
        self.info = ExchangeInfo(
            down.client, down.local, down.id, start=time.monotonic(), start_wall_ns=time.time_ns()
        )
        self.filter: StreamFilter = _PASS
        self.method = b""
        self.grpc = False  # the request's content-type says gRPC
        self.req = HalfStream(REQUEST)
        self.resp = HalfStream(RESPONSE)
        self.resp.has_body = True
        self.upstream: UpstreamStream | None = None
        self.cluster: Cluster | None = None
        self.response_started = False
        self.replying = False
        self.finished = False
        self.keep_alive = keep_alive
        self.timed = False  # a deadline is watched (UpstreamLeg)
        self._upstream_sent_at = 0.0

    # -- request path --

    def open(self) -> None:
        """Count the exchange as started (before anything can end it: a request the
        adapter cannot parse ends through ``codec_error``, counted as finished)."""
        self.core.exchange_started(self)

    def begin(self, headers: HeaderMap, method: bytes, has_body: bool, length: int = -1) -> None:
        """The request's headers as the adapter built them (pseudo-headers first);
        ``length``: its content-length (-1: none; the adapter then ends the body)."""
        self.method = method
        self.grpc = is_grpc(headers.get(b"content-type"))
        req = self.req
        if has_body:
            req.has_body = True
            req.remaining = length
        req.headers = headers
        self.filter = self.core.new_filter(self.info)
        self._headers_step(req, self.filter.request_headers(headers, not has_body))

    def downstream_body(self, chunk: bytes, end_stream: bool = False) -> None:
        if self.finished or self.replying:
            return
        req = self.req
        self.info.request_bytes += len(chunk)
        eos = end_stream
        if req.remaining >= 0:
            req.remaining -= len(chunk)
            eos = eos or req.remaining <= 0
        if eos:
            req.eos_delivered = True
        if req.waiting or not req.passed:
            self._hold(req, chunk, eos)
            return
        self._data_step(req, self.filter.request_data(chunk, eos), eos)
        if req.queued > HIGH_WATER and not self.finished:
            self.down.pause(BACKLOG)  # released, but no upstream stream to take it yet

    def downstream_complete(self, trailers: list[tuple[bytes, bytes]] | None = None) -> None:
        req = self.req
        req.complete = True
        if self.finished or self.replying:
            return
        if not req.has_body or req.eos_delivered:
            return
        req.eos_delivered = True
        if trailers:
            # Envoy: the last data frame had end_stream=false; the trailers end the stream
            req.trailers = HeaderMap.from_pairs(trailers)
        if req.waiting or not req.passed:
            self._hold(req, b"", True, flow=False)
            return
        self._data_step(req, self._event(req, b"", True), True)

    # -- one implementation for both directions --

    def _headers_step(self, half: HalfStream, step: Verdict) -> None:
        """The filter's verdict on ``half``'s headers."""
        match step:
            case Continue():
                half.passed = True
                if half.request:
                    if not half.has_body:
                        # released whole: sent with the connection, and only the route
                        # timer runs (not the upload's idle timer first)
                        half.end = True
                    self._route_and_connect()
                if not half.has_body:
                    self._flush(half, end=True)
                elif not half.request and _streams_head(self.grpc, half.headers):
                    self._flush_response(end=False, head=True)
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

    def _source(self, half: HalfStream) -> Downstream | UpstreamStream | None:
        """The peer that sends ``half``: reading from it pauses while too much is held."""
        return self.down if half.request else self.upstream

    def _hold(self, half: HalfStream, chunk: bytes, eos: bool, flow: bool = True) -> None:
        """Keep a body event for the filter until it stops waiting."""
        half.pending.append((chunk, eos))
        half.queued += len(chunk) + ENTRY_COST
        if flow and half.queued > HIGH_WATER:
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
            half.queued -= len(chunk) + ENTRY_COST
            self._data_step(half, self._event(half, chunk, eos), eos)
        if half.queued <= LOW_WATER:
            src = self._source(half)
            if src is not None:
                src.resume(BACKLOG)

    def _data_step(self, half: HalfStream, step: Verdict, eos: bool) -> None:
        """The filter's verdict on a body event of ``half``."""
        match step:
            case Continue(data, trailers):
                if data:
                    half.out.append(data)
                    half.queued += len(data) + ENTRY_COST
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

    # -- response path (the request's is the upstream leg's) --

    def _flush_response(self, end: bool, head: bool = False) -> None:
        """Send the released response events to the client: the headers with the first
        body bytes or the end (``head``: now), then the body, then the end (data or
        trailers)."""
        resp = self.resp
        head_request = self.method == b"HEAD"  # its answer has no body (nor trailers)
        if not resp.head_sent:
            if not end and not resp.out and not head:
                return
            h = framed_headers(resp, end, head_request)
            eos = end and (head_request or not (resp.out or resp.trailers))
            status = _status(h)
            if not self.down.send_headers(status, h, eos):
                # Envoy's codec refuses such a response: 502 instead
                self._write_reply(_invalid_response_reply())
                return
            self.info.status = status
            resp.head_sent = True
            resp.end_written = eos
            if eos and self.grpc:
                self._note_grpc(h)  # a trailers-only response
        data = resp.take() if resp.out else b""
        self.info.response_bytes += len(data)
        if head_request:
            data = b""
        if not resp.end_written:
            if end:
                resp.end_written = True
                if resp.trailers:
                    if self.grpc:
                        self._note_grpc(resp.trailers)
                    if data:
                        self.down.send_data(data, False)
                    if not self.down.send_trailers(resp.trailers):
                        resp.head_sent = False
                        self._write_reply(_invalid_response_reply())
                        return
                else:
                    self.down.send_data(data, True)
            elif data:
                self.down.send_data(data, False)
        if end:
            self._finish()

    def _note_grpc(self, m: HeaderMap) -> None:
        got = grpc_status_of(m)
        if got is not None:
            self.info.grpc_status, self.info.grpc_message = got

    # -- local replies and endings --

    def _reply_from_filter(self, reply: LocalReply) -> None:
        """The filter answered locally (its reply already went through the response
        path inside the filter): send it as is."""
        self.info.outcome = "reply"
        self._write_reply(reply)

    def send_local(self, reply: LocalReply) -> None:
        """A reply generated by the proxy (no route, upstream failure, timeout): it
        travels the filter's response path like an upstream response, as in Envoy."""
        if self.finished or self.response_started:
            self._reset(reply.details or "local reply after the response started")
            return
        self.info.response_code_details = reply.details
        if self.grpc:  # Envoy: a trailers-only gRPC error instead
            reply = grpc_local_reply(reply)
            h = HeaderMap.from_pairs([(b":status", b"200"), *reply.headers])
        else:
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
        """Send a whole reply the filter made (or the 502 for an unserializable one)."""
        if self.finished:
            return
        if self.resp.head_sent:
            self._reset("local reply after the response started")
            return
        self.replying = True
        if self.upstream is not None:
            self.upstream.abandon()
            self.upstream = None
        if self.req.has_body and not self.req.complete:
            self.keep_alive = False  # the rest of the request body would be misread
        if self.grpc:  # Envoy: a trailers-only gRPC error instead
            reply = grpc_local_reply(reply)
        head_request = self.method == b"HEAD"
        eos = not reply.body or head_request
        if not self.down.send_headers(reply.status, _reply_headers(reply), eos):
            reply = _invalid_response_reply()
            self.down.send_headers(reply.status, _reply_headers(reply), head_request)
            eos = head_request
        self.info.status = reply.status
        self.info.response_code_details = reply.details
        if self.grpc:
            self._note_grpc(HeaderMap.from_pairs(reply.headers))
        self.resp.head_sent = True
        self.info.response_bytes += len(reply.body)
        if not eos:
            self.down.send_data(reply.body, True)
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

    def downstream_lost(self) -> None:
        """The client went away (or reset the stream): no more I/O, but the filter
        still completes."""
        if self.finished:
            return
        self.info.outcome = "client_disconnect"
        self.keep_alive = False
        if self.upstream is not None:
            self.upstream.abandon()
            self.upstream = None
        self._finish()

    def codec_error(self, status: int, message: str, codec: str = "http1") -> None:
        """The client's request could not be parsed; the adapter already answered
        (``status``) and closes: end the exchange without more I/O."""
        if self.finished:
            return
        self.info.status = status
        self.info.outcome = "reply"
        self.info.response_code_details = f"{codec}.codec_error{{{message}}}"
        self.keep_alive = False
        if self.upstream is not None:
            self.upstream.abandon()
            self.upstream = None
        self._finish()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._stop_timer()
        up = self.upstream
        if up is not None:
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


def _streams_head(grpc: bool, h: HeaderMap | None) -> bool:
    """A gRPC response's headers (its initial metadata) go to the client at once: a
    streaming server may send them and wait for the client's first message. Only a gRPC
    request (``grpc``) gets a gRPC response, so the others skip the look-up."""
    if not grpc or h is None:
        return False
    ct = h.get(b"content-type")
    return ct is not None and ct[:16].lower() == b"application/grpc"


def _status(h: HeaderMap) -> int:
    """The response's ``:status`` (502 when it is not a number, as before)."""
    items = h._items
    if items and items[0][0] == b":status":  # where the data path puts it
        try:
            return int(items[0][1])
        except ValueError:
            return 502
    for k, v in items:
        if k == b":status":
            try:
                return int(v)
            except ValueError:
                return 502
    return 200


def _reply_headers(reply: LocalReply) -> HeaderMap:
    """A whole reply's headers: its own (no pseudo-header, no length) and its length."""
    pairs = [(b":status", b"%d" % reply.status)]
    pairs += [(k, v) for k, v in reply.headers if k[:1] != b":" and k != b"content-length"]
    pairs.append((b"content-length", b"%d" % len(reply.body)))
    return HeaderMap.from_pairs(pairs)


def _invalid_response_reply() -> LocalReply:
    """What the client gets instead of a response whose head cannot be serialized."""
    return LocalReply(
        502,
        b"upstream response or local reply contains an invalid header\n",
        details="response_invalid_header",
    )
