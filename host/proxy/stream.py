"""The contract between a protocol's stream state machine and the filter it drives.

The exchange core (``exchange.Exchange``, driven by a protocol adapter: HTTP/1.1, an
HTTP/2 stream, a TCP connection later) hands each event of a stream to a
``StreamFilter`` (the plugin chain, ``chain.ChainRun``) and gets a ``Verdict`` back:
plain data, no I/O. The verdict is a
tagged union handled with ``match``:

* ``Continue(data, trailers)`` forwards ``data`` (the bytes released now; may be
  empty); one that ends the stream may carry ``trailers`` a plugin added (they end
  the message instead);
* ``Hold()`` forwards nothing yet (the filter is buffering);
* ``Reply(reply)`` answers with a local reply instead;
* ``Wait(future)`` resolves later: the future's result is another verdict;
* ``Reset()`` drops the stream.

This module knows no socket, no wire format and no wasm.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import ClassVar, Final

from mypy_extensions import mypyc_attr

from host.headers import HeaderMap
from host.tls_info import TlsInfo

__all__ = [
    "CONTINUE",
    "HOLD",
    "RESET",
    "Continue",
    "ExchangeInfo",
    "Hold",
    "LocalReply",
    "PassThroughFilter",
    "Reply",
    "Reset",
    "StreamFilter",
    "Verdict",
    "Wait",
]


@dataclass
class LocalReply:
    status: int
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    details: str = ""


# -- verdicts ------------------------------------------------------------------------------


class Continue:
    """Forward ``data``; at the end of the stream, ``trailers`` a plugin added.

    A compiled class, not a dataclass: a dataclass's ``__init__`` is generated Python that
    mypyc does not compile, and a Continue is made for every body event."""

    __match_args__: ClassVar = ("data", "trailers")

    def __init__(self, data: bytes = b"", trailers: HeaderMap | None = None) -> None:
        self.data: Final = data
        self.trailers: Final = trailers

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Continue)
            and self.data == other.data
            and self.trailers == other.trailers
        )

    def __repr__(self) -> str:
        return f"Continue(data={self.data!r}, trailers={self.trailers!r})"


@dataclass(frozen=True, slots=True)
class Hold:
    """Forward nothing yet: the filter is buffering."""


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer with ``reply`` (already through the filter's response path)."""

    reply: LocalReply


@dataclass(frozen=True, slots=True)
class Wait:
    """The verdict comes later: ``future``'s result."""

    future: asyncio.Future[Verdict]


@dataclass(frozen=True, slots=True)
class Reset:
    """Drop the stream."""


Verdict = Continue | Hold | Reply | Wait | Reset

CONTINUE: Final = Continue()
HOLD: Final = Hold()
RESET: Final = Reset()


# -- what a stream is, for filters and stats ------------------------------------------------


class ExchangeInfo:
    """What the data path knows about a request, for filters and stats (a compiled class
    with its own ``__init__``: one is made per request)."""

    def __init__(
        self,
        client: tuple[str, int],
        local: tuple[str, int],
        connection_id: int,
        request_id: str = "",
        start: float = 0.0,
        start_wall_ns: int = 0,
    ) -> None:
        self.client = client
        self.local = local
        self.connection_id = connection_id
        self.request_id = request_id
        self.start = start  # time.monotonic()
        self.start_wall_ns = start_wall_ns
        self.cluster = ""
        # the cached route; None: not selected yet (or cleared)
        self.route_name: str | None = None
        self.status = 0
        self.request_bytes = 0
        self.response_bytes = 0
        self.upstream_address = ""
        self.upstream_ms = 0.0
        self.response_code_details = ""
        self.outcome = ""  # "", "reply", "reset", "client_disconnect", "upstream_error"
        # Envoy's request.protocol values: "HTTP/1.0", "HTTP/1.1", "HTTP/2" (set by the adapter)
        self.protocol = "HTTP/1.1"
        # the response's grpc-status (trailer, or header of a trailers-only reply); None: not
        # gRPC
        self.grpc_status: int | None = None
        self.grpc_message = ""
        # TLS: the client connection's (None: plain TCP), the upstream connection's, and why
        # the upstream handshake failed (Envoy's transport failure reason; "" when it did not)
        self.tls: TlsInfo | None = None
        self.upstream_tls: TlsInfo | None = None
        self.upstream_transport_failure_reason = ""

    def __repr__(self) -> str:
        return (
            f"ExchangeInfo(client={self.client!r}, connection_id={self.connection_id}, "
            f"request_id={self.request_id!r}, cluster={self.cluster!r}, status={self.status})"
        )


@mypyc_attr(allow_interpreted_subclasses=True)  # (the tests' probes)
class StreamFilter:
    """What the exchange drives for one stream (the plugin chain, ``chain.ChainRun``).

    A base class rather than a Protocol: compiled code calls a native base class's
    methods through its vtable, a protocol's through Python's method lookup (about 20x
    the cost, several times per request)."""

    __slots__ = ()

    def request_headers(self, headers: HeaderMap, end_stream: bool) -> Verdict:
        raise NotImplementedError

    def request_data(self, data: bytes, end_stream: bool) -> Verdict:
        raise NotImplementedError

    def response_headers(self, headers: HeaderMap, end_stream: bool) -> Verdict:
        raise NotImplementedError

    def response_data(self, data: bytes, end_stream: bool) -> Verdict:
        raise NotImplementedError

    def request_trailers(self, trailers: HeaderMap) -> Verdict:
        raise NotImplementedError

    def response_trailers(self, trailers: HeaderMap) -> Verdict:
        raise NotImplementedError

    def complete(self) -> None:
        raise NotImplementedError


@mypyc_attr(allow_interpreted_subclasses=True)  # (canary.NoPluginsFilter)
class PassThroughFilter(StreamFilter):
    """No plugins: every event continues with its own data."""

    __slots__ = ()

    def request_headers(self, headers: HeaderMap, end_stream: bool) -> Verdict:
        return CONTINUE

    def request_data(self, data: bytes, end_stream: bool) -> Verdict:
        return Continue(data)

    def response_headers(self, headers: HeaderMap, end_stream: bool) -> Verdict:
        return CONTINUE

    def response_data(self, data: bytes, end_stream: bool) -> Verdict:
        return Continue(data)

    def request_trailers(self, trailers: HeaderMap) -> Verdict:
        return CONTINUE

    def response_trailers(self, trailers: HeaderMap) -> Verdict:
        return CONTINUE

    def complete(self) -> None:
        pass
