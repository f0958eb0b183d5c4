"""What the exchange core needs from the rest of the proxy: the server that owns the data
path (``ProxyCore``), the client side an exchange answers (``Downstream``) and the
listener's ``Limits``. Declared apart from ``exchange`` so that its upstream leg
(``exchange_upstream``) and the protocol adapters can name them without a cycle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mypy_extensions import mypyc_attr

from host.headers import HeaderMap
from host.proxy.deadlines import Deadlines
from host.proxy.stream import ExchangeInfo, StreamFilter
from host.proxy.upstream import Cluster
from host.proxy.upstream_api import ResponseSink, UpstreamStream
from host.proxy.write_batch import WriteBatch

__all__ = ["Downstream", "ExchangeState", "Limits", "ProxyCore"]


class ExchangeState(Protocol):
    """What the server and the adapters read of an exchange they are told about
    (``exchange.Exchange``; named here so that this module does not import it)."""

    @property
    def info(self) -> ExchangeInfo: ...

    @property
    def grpc(self) -> bool:
        """The request's content-type says gRPC."""
        ...


@dataclass(frozen=True)
class Limits:
    """The listener's limits (``spec.timeouts`` and ``spec.maxConnections``)."""

    # first byte of a request to the end of its headers (Envoy: request_headers_timeout)
    request_headers_timeout_s: float = 10.0
    # a connection with no request in flight (Envoy: idle_timeout, 1 h there)
    idle_timeout_s: float = 300.0
    # open client connections; more are closed at once (Envoy: downstream_cx_overflow)
    max_connections: int = 1024


# -- the proxy core (what every connection shares) -----------------------------------------


@mypyc_attr(allow_interpreted_subclasses=True)  # (the tests' cores)
class ProxyCore:
    """What the data path needs from the server that owns it (``server.ProxyServer``).

    A base class rather than a Protocol, as ``stream.StreamFilter``: the exchange calls
    it several times per request, and a compiled call through a protocol goes through
    Python's method lookup."""

    loop: asyncio.AbstractEventLoop
    limits: Limits
    open_connections: int
    write_batch: WriteBatch  # the loop's held writes (write_batch.py), set with the loop
    deadlines: Deadlines  # the exchanges' route and upload timeouts, one timer for all

    def open_stream(
        self,
        cluster: Cluster,
        sink: ResponseSink,
        done: Callable[[UpstreamStream | None, str], None],
    ) -> None:
        """Call ``done(stream, "")`` with a stream to ``cluster`` serving ``sink`` (from
        the upstream connection pool), or ``done(None, reason)``."""
        raise NotImplementedError

    def route(self, headers: HeaderMap, info: ExchangeInfo) -> Cluster | None:
        """The request's cluster: its cached route (``info.route_name`` set), else the
        route selected now from ``headers`` (and cached in ``info``); None: no route."""
        raise NotImplementedError

    def new_filter(self, info: ExchangeInfo) -> StreamFilter:
        raise NotImplementedError

    def exchange_started(self, ex: ExchangeState) -> None:
        raise NotImplementedError

    def exchange_finished(self, ex: ExchangeState) -> None:
        raise NotImplementedError

    def connection_opened(self) -> None:
        raise NotImplementedError

    def connection_closed(self) -> None:
        raise NotImplementedError

    def connection_rejected(self) -> None:
        raise NotImplementedError


class Downstream(Protocol):
    """What an exchange needs from the client side it answers (the HTTP/1.1
    connection, or one HTTP/2 stream): the response as semantic events, flow control
    and the ending. The exchange sends the headers only together with what follows
    them at that moment (the first body bytes, the trailers, or the end), so an
    adapter may hold the head to write both at once."""

    @property
    def core(self) -> ProxyCore: ...

    @property
    def client(self) -> tuple[str, int]: ...

    @property
    def client_ip(self) -> bytes: ...

    @property
    def local(self) -> tuple[str, int]: ...

    @property
    def id(self) -> int:
        """The connection's id (``connection.id``)."""
        ...

    @property
    def write_paused(self) -> bool:
        """The client is not reading what we already sent it."""
        ...

    def send_headers(self, status: int, headers: HeaderMap, end_stream: bool) -> bool:
        """Send the response headers (``:status`` first); False when they cannot be
        serialized (nothing was sent; the exchange answers 502 instead)."""
        ...

    def send_data(self, data: bytes, end_stream: bool) -> None: ...

    def send_trailers(self, trailers: HeaderMap) -> bool:
        """End the response with trailers. False when they cannot be serialized and
        nothing of the response went out yet (the exchange answers 502 instead); bad
        trailers after body bytes are dropped."""
        ...

    def pause(self, why: int) -> None: ...

    def resume(self, why: int) -> None: ...

    def drop(self, abort: bool) -> None:
        """Reset the stream: ``abort`` when no response byte went out."""
        ...

    def exchange_done(self, ex: ExchangeState, keep_alive: bool) -> None: ...
