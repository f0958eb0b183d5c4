"""What the HTTP/1.1 and the HTTP/2 downstream adapters do alike with a new client
connection: its ``connection.id`` (one sequence with the TCP listeners'), the listener's
connection cap, the peer and local addresses with the TLS facts, and stopping the
per-connection timer."""

from __future__ import annotations

import asyncio
import itertools
from typing import Final, NamedTuple

from host.proxy.core_api import ProxyCore
from host.proxy.tls import TlsInfo, tls_info_of

__all__ = ["Endpoints", "admit", "endpoints", "next_connection_id", "stop_timer"]

_connection_ids: Final = itertools.count(1)


def next_connection_id() -> int:
    """A new ``connection.id``: one sequence for every downstream connection of the
    process, HTTP/1.1, HTTP/2 or TCP, as Envoy's ids are unique across listeners."""
    return next(_connection_ids)


class Endpoints(NamedTuple):
    client: tuple[str, int]  # the peer's address
    local: tuple[str, int]  # the listener's address it reached
    tls: TlsInfo | None  # the handshake's facts; None for plain TCP


def admit(core: ProxyCore, transport: asyncio.BaseTransport) -> bool:
    """Count a new connection open, or, over ``limits.max_connections``, close it at
    once as Envoy's listener does (``downstream_cx_overflow``) and say False."""
    if core.open_connections >= core.limits.max_connections:
        core.connection_rejected()
        transport.abort()  # type: ignore[attr-defined]
        return False
    core.connection_opened()
    return True


def endpoints(transport: asyncio.BaseTransport) -> Endpoints:
    """The connection's addresses (``("", 0)`` where the transport has none) and TLS."""
    peer = transport.get_extra_info("peername") or ("", 0)
    sock = transport.get_extra_info("sockname") or ("", 0)
    return Endpoints(
        (str(peer[0]), int(peer[1])), (str(sock[0]), int(sock[1])), tls_info_of(transport)
    )


def stop_timer(timer: asyncio.TimerHandle | None) -> None:
    """Cancel a connection's watchdog if it is armed (the caller forgets it: None)."""
    if timer is not None:
        timer.cancel()
