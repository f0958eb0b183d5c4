"""The exchange's upstream leg: route, open a stream to the cluster, send the request
as the filter releases it, the route timeout, and the response events coming back
(the ``upstream_api.ResponseSink`` side).

A mixin of ``exchange.Exchange`` (it shares the exchange's state and endings); it
speaks to the upstream only through ``upstream_api.UpstreamStream`` (headers, data,
trailers), never in a wire format.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Final
from urllib.parse import unquote

from host.headers import HeaderMap
from host.proxy.core_api import Downstream, ProxyCore
from host.proxy.framing import HOP_BY_HOP
from host.proxy.halfstream import LOW_WATER, HalfStream, framed_headers
from host.proxy.stream import ExchangeInfo, LocalReply, StreamFilter, Verdict
from host.proxy.upstream import TRANSPORT_FAILURE, Cluster
from host.proxy.upstream_api import BACKLOG, PEER_FULL, ResponseSink, UpstreamStream
from host.proxy.upstream_h2 import H2StreamReset

__all__ = ["UpstreamLeg"]

_RESPONSE_SPECIAL: Final = HOP_BY_HOP | {b"content-length"}
_BEFORE_HEADERS: Final = (
    b"upstream connect error or disconnect/reset before headers. reset reason: "
)


class UpstreamLeg(ResponseSink):
    """The upstream half of ``exchange.Exchange`` (a mixin: the state it writes lives in
    its slots, the rest is the exchange's)."""

    __slots__ = ("_upstream_sent_at", "cluster", "response_started", "timed", "upstream")

    core: ProxyCore
    down: Downstream
    info: ExchangeInfo
    filter: StreamFilter
    req: HalfStream
    resp: HalfStream
    method: bytes
    upstream: UpstreamStream | None
    cluster: Cluster | None
    timed: bool  # a deadline is watched (core.deadlines): the route or upload timeout
    finished: bool
    replying: bool
    response_started: bool
    _upstream_sent_at: float

    # -- what the exchange provides (it overrides these) --

    def send_local(self, reply: LocalReply) -> None:
        raise NotImplementedError  # the exchange's

    def _reset(self, why: str) -> None:
        raise NotImplementedError  # the exchange's

    def _headers_step(self, half: HalfStream, step: Verdict) -> None:
        raise NotImplementedError  # the exchange's

    def _hold(self, half: HalfStream, chunk: bytes, eos: bool, flow: bool = True) -> None:
        raise NotImplementedError  # the exchange's

    def _data_step(self, half: HalfStream, step: Verdict, eos: bool) -> None:
        raise NotImplementedError  # the exchange's

    def _event(self, half: HalfStream, chunk: bytes, eos: bool) -> Verdict:
        raise NotImplementedError  # the exchange's

    # -- the request, upstream --

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
        self.core.open_stream(cluster, self, self._connected)

    def _connected(self, stream: UpstreamStream | None, why: str) -> None:
        if self.finished or self.replying:
            if stream is not None:
                stream.abandon()  # nothing sent: the connection goes back to the pool
            return
        if stream is None:
            self.info.outcome = "upstream_error"
            # a failed TLS handshake: Envoy names its transport failure reason in both
            tls_error = why.partition(TRANSPORT_FAILURE)[2]
            self.info.upstream_transport_failure_reason = tls_error
            self.send_local(
                LocalReply(
                    503,
                    _BEFORE_HEADERS + why.encode() + b"\n",
                    details="upstream_reset_before_response_started{connection_failure"
                    + ("|" + tls_error.replace(" ", "_") if tls_error else "")
                    + "}",
                )
            )
            return
        self.upstream = stream
        self.info.upstream_tls = stream.tls
        if self.down.write_paused:
            stream.pause(PEER_FULL)  # the client is not reading what we already sent it
        # Only what the filter released so far: the end of the request counts once the
        # filter passed it (req.end), not when the client sent it. A body still queued
        # in req.pending (headers were paused) follows through _drain.
        self._flush_request(end=self.req.end)
        if not self.timed and not self.finished and self.upstream is stream:
            # The route timeout runs from the moment the whole request went upstream
            # (as Envoy's); until then only a stalled upload is bounded, by the idle
            # timeout.
            self.timed = True
            self.core.deadlines.watch(self, self.core.limits.idle_timeout_s)

    def _start_route_timer(self) -> None:
        assert self.cluster is not None
        self.timed = True
        self.core.deadlines.watch(self, self.cluster.timeout_s)  # replaces an earlier one

    def _stop_timer(self) -> None:
        if self.timed:
            self.timed = False
            self.core.deadlines.unwatch(self)

    def deadline_passed(self) -> None:
        self._timeout()

    def _timeout(self) -> None:
        self.timed = False
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
        """Send the released request events upstream: the headers with the first body
        bytes or the end (so the body-length rule knows what it can), then the body,
        then the end (data or trailers)."""
        req = self.req
        if end:
            req.end = True
        up = self.upstream
        if up is None:
            return  # sent when the stream is ready
        end = req.end
        if not req.end_written:
            if not req.head_sent:
                if not end and not req.out and not self._eager_head():
                    return  # nothing released yet: keep the head until we know more
                eos = end and not req.out and not req.trailers
                problem = up.send_headers(framed_headers(req, end), eos)
                if problem is not None:
                    self._refuse_request(problem)
                    return
                req.head_sent = True
                self._upstream_sent_at = time.monotonic()
                if eos:
                    req.end_written = True
                    self._start_route_timer()
            data = req.take() if req.out else b""
            if end and not req.end_written:
                req.end_written = True
                if req.trailers:
                    if data:
                        up.send_data(data, False)
                    problem = up.send_trailers(req.trailers)
                    if problem is not None:
                        self._refuse_request(problem)
                        return
                else:
                    up.send_data(data, True)
                self._start_route_timer()
            elif data:
                up.send_data(data, False)
        if req.queued <= LOW_WATER:
            self.down.resume(BACKLOG)

    def _eager_head(self) -> bool:
        """HTTP/2 has no framing to decide: the head goes upstream as soon as the filter
        passed it (a gRPC call whose client waits for the server's first message must
        reach the server before any body)."""
        return self.req.has_body and self.cluster is not None and self.cluster.protocol == "h2"

    def _refuse_request(self, problem: str) -> None:
        """The request's headers (or trailers) cannot be serialized upstream. Envoy's
        codec refuses such a request and the router answers 503 before the response
        started; so do we, and nothing more reaches the upstream."""
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

    # -- the response, from upstream (ResponseSink) --

    def upstream_headers(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        expect_body: bool,
        verified: bool = False,
    ) -> None:
        if self.finished or self.replying:
            return
        if 100 <= status < 200:
            return  # interim responses are not forwarded
        self.info.upstream_ms = (
            time.monotonic() - (self._upstream_sent_at or self.info.start)
        ) * 1000
        items = [(b":status", b"%d" % status)]
        cl = -1
        for k, v in headers:
            if k in _RESPONSE_SPECIAL:  # the length, or hop-by-hop (re-framed downstream)
                if k == b"content-length":
                    try:
                        cl = int(v)
                    except ValueError:
                        cl = -1
                    items.append((k, v))
                continue
            items.append((k, v))
        h = HeaderMap.wrap(items, verified)
        has_body = expect_body and status not in (204, 304) and (cl != 0)
        if not has_body:
            _note_grpc(self.info, headers)  # a trailers-only gRPC answer
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
            _note_grpc(self.info, trailers)
        self.upstream = None
        self._stop_timer()
        if self.finished or self.replying:
            return
        if not self.resp.has_body:
            return
        if self.resp.waiting or not self.resp.passed:
            self._hold(self.resp, b"", True, flow=False)
            return
        self._data_step(self.resp, self._event(self.resp, b"", True), True)

    def upstream_lost(self, exc: Exception | None) -> None:
        if self.finished:
            return
        self.upstream = None
        if self.response_started:
            self._reset("upstream connection lost mid-response")
            return
        self.info.outcome = "upstream_error"
        # an HTTP/2 stream reset says why (Envoy's reset reasons), a lost connection not
        reason, detail = (
            (exc.reason, exc.detail)
            if isinstance(exc, H2StreamReset)
            else ("connection termination", "connection_termination")
        )
        self.send_local(
            LocalReply(
                503,
                _BEFORE_HEADERS + reason.encode() + b"\n",
                details=f"upstream_reset_before_response_started{{{detail}}}",
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


def _note_grpc(info: ExchangeInfo, fields: Iterable[tuple[bytes, bytes]]) -> None:
    """``info.grpc_status``/``grpc_message`` from the upstream's ``grpc-status`` and
    ``grpc-message`` (trailers, or the headers of a trailers-only answer)."""
    for k, v in fields:
        if k == b"grpc-status":
            try:
                info.grpc_status = int(v)
            except ValueError:
                continue
        elif k == b"grpc-message":
            info.grpc_message = unquote(v.decode("latin-1"))  # percent-encoded (gRPC spec)
