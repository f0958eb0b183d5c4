"""The listener's protocol choice: per client connection, HTTP/1.1
(``http1.DownstreamProtocol``) or HTTP/2 (``h2_downstream.H2Connection``).

HTTP/2 is chosen by ALPN "h2" on a TLS connection, or by the HTTP/2 connection
preface as the first bytes (h2c with prior knowledge). The preface is sniffed without
costing HTTP/1.1 anything past its first read: the HTTP/1.1 protocol is made at once
(its connection cap, counters and idle timer run from the start), bytes that could
still be the preface are held until they are not, then the transport is handed to
the chosen protocol (``transport.set_protocol``) with what was read. HTTP/1.1's
``Upgrade: h2c`` is not supported (served as HTTP/1.1, as Envoy's default).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from host.proxy.downstream import next_connection_id
from host.proxy.exchange import ProxyCore
from host.proxy.h2_downstream import PREFACE, H2Connection
from host.proxy.http1 import DownstreamProtocol

__all__ = ["ProtocolSniffer", "protocol_factory"]


def protocol_factory(core: ProxyCore) -> Callable[[], asyncio.Protocol]:
    """What the server passes to ``loop.create_server`` for its data listener."""
    return lambda: ProtocolSniffer(core)


class ProtocolSniffer(asyncio.Protocol):
    """A connection's protocol until its first bytes (or its ALPN) decide."""

    __slots__ = ("buf", "core", "h1", "transport")

    def __init__(self, core: ProxyCore) -> None:
        self.core = core
        self.transport: asyncio.Transport | None = None
        self.h1: DownstreamProtocol | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            self._switch(H2Connection(self.core, next_connection_id()), b"")
            return
        h1 = DownstreamProtocol(self.core)
        self.h1 = h1
        h1.connection_made(transport)
        if h1.closing:  # over the connection cap: already aborted
            transport.set_protocol(h1)

    def data_received(self, data: bytes) -> None:
        h1 = self.h1
        assert h1 is not None and self.transport is not None
        buf = self.buf + data if self.buf else data
        n = min(len(buf), len(PREFACE))
        if buf[:n] == PREFACE[:n]:
            if n < len(PREFACE):
                self.buf = buf  # maybe the preface: wait for more
                return
            h1.hand_over()  # h2c with prior knowledge (the connection is counted)
            self._switch(H2Connection(self.core, h1.id, counted=True), buf)
            return
        self.buf = b""
        self.transport.set_protocol(h1)
        h1.data_received(buf)

    def _switch(self, proto: asyncio.Protocol, data: bytes) -> None:
        assert self.transport is not None
        self.transport.set_protocol(proto)
        proto.connection_made(self.transport)
        if data:
            proto.data_received(data)

    def eof_received(self) -> bool | None:
        return None  # close

    def connection_lost(self, exc: Exception | None) -> None:
        if self.h1 is not None:
            self.h1.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.h1 is not None:
            self.h1.pause_writing()

    def resume_writing(self) -> None:
        if self.h1 is not None:
            self.h1.resume_writing()
