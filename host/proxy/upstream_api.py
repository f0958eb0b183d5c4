"""The contract between the exchange and the upstream side, whatever its protocol.

The exchange (``exchange.Exchange``) asks the pool (``upstream.UpstreamPool.open_stream``)
for one ``UpstreamStream`` to its cluster and talks only to it, in semantic events:
headers, data, trailers (no wire format). The stream reports back through the
exchange's ``ResponseSink``. HTTP/1.1 (``upstream.UpstreamProtocol``, which frames with
``framing``) implements it today; an HTTP/2 stream can sit beside it.

Nothing here knows a socket, a wire format or wasm.
"""

from __future__ import annotations

import asyncio
from typing import Final, Protocol

from mypy_extensions import mypyc_attr

from host.headers import HeaderMap
from host.tls_info import TlsInfo

__all__ = [
    "BACKLOG",
    "PEER_FULL",
    "TRANSPORT_FAILURE",
    "ReadGate",
    "ResponseSink",
    "UpstreamStream",
]

# what follows it in a connect failure's reason is Envoy's transport failure reason
TRANSPORT_FAILURE: Final = "transport failure reason: "

# why reading from a peer is paused (bits; an adapter may add its own above these)
PEER_FULL: Final = 1  # the other side's socket write buffer is over its high-water mark
BACKLOG: Final = 2  # too many bytes held in the exchange


class ReadGate:
    """Reading from one socket, stopped for any of several reasons (the bits above, and
    an adapter's own): the transport pauses with the first reason and resumes when the
    last one goes. A mixin of the HTTP/1.1 client and upstream protocols; ``_gone()``
    says when their transport must not be touched any more."""

    transport: asyncio.Transport | None
    _paused: int  # why reading is paused (bits)

    def _gone(self) -> bool:
        raise NotImplementedError

    def pause(self, why: int) -> None:
        if not self._paused and self.transport is not None and not self._gone():
            self.transport.pause_reading()
        self._paused |= why

    def resume(self, why: int) -> None:
        if not self._paused & why:
            return
        self._paused &= ~why
        if not self._paused and self.transport is not None and not self._gone():
            self.transport.resume_reading()


@mypyc_attr(allow_interpreted_subclasses=True)  # (the tests' sinks)
class ResponseSink:
    """What an upstream stream reports to the exchange it serves (``exchange.Exchange``).
    A base class, not a Protocol, for the same reason as ``stream.StreamFilter``."""

    def upstream_headers(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        expect_body: bool,
        verified: bool = False,
    ) -> None:
        """``verified``: the fields are as a strict HTTP/1.1 parser delivered them
        (``HeaderMap.verified``)."""
        raise NotImplementedError

    def upstream_body(self, chunk: bytes) -> None:
        raise NotImplementedError

    def upstream_complete(self, trailers: HeaderMap | None = None) -> None:
        raise NotImplementedError

    def upstream_lost(self, exc: Exception | None) -> None:
        raise NotImplementedError

    def upstream_error(self, status: int, message: str) -> None:
        raise NotImplementedError

    def upstream_congested(self, congested: bool) -> None:
        """The upstream stopped (True) or resumed (False) reading what we write to it."""
        raise NotImplementedError


class UpstreamStream(Protocol):
    """One request to a cluster, as the exchange drives it.

    The exchange sends the headers only together with what follows them at that moment
    (the first body bytes, the trailers, or the end): a stream may hold the head until
    the next ``send_data``/``send_trailers`` to write both at once. The exchange has
    already applied the body-length rule to the headers (a buffered body's real
    ``content-length``; none when trailers follow)."""

    @property
    def tls(self) -> TlsInfo | None:
        """The TLS session's facts for an https:// (or grpcs://) cluster's connection."""
        ...

    def send_headers(self, headers: HeaderMap, end_stream: bool) -> str | None:
        """Send the request headers (pseudo-headers ``:method``, ``:path``,
        ``:authority``, ``:scheme`` first); returns why they cannot be sent (nothing was
        sent then, and the exchange answers 503), or None."""
        ...

    def send_data(self, data: bytes, end_stream: bool) -> None: ...

    def send_trailers(self, trailers: HeaderMap) -> str | None:
        """End the request with trailers (dropped where the framing cannot carry them);
        returns why they cannot be sent when nothing of the request went out yet (the
        exchange answers 503), else None (bad trailers after body bytes are dropped)."""
        ...

    def pause(self, why: int) -> None:
        """Stop reading the response (``why``: a ``PEER_FULL``/``BACKLOG`` bit)."""
        ...

    def resume(self, why: int) -> None: ...

    def abandon(self) -> None:
        """The exchange gives up on this stream (reply sent, client gone, timeout): no
        more events reach the sink. A stream that sent nothing yet may be reused."""
        ...
