"""The connection inspector's records: what each NETWORK plugin did to one TCP connection
(``ConnectionHopRecord``) and the finished connection (``ConnectionRecord``), and the ring
of the last ones (``ConnectionRing``), a sibling of the request inspector's ring.

Plain values for the admin API (``/connections``), the app and ``wasmdesk try --tcp``;
no plugin calls and no I/O here (``host.proxy.network_chain`` fills them). Data is recorded
as the request inspector records bodies: the first ``HopRecord.BODY_CAP`` bytes of what a
plugin was given and of what it released, each with its whole length.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from host.proxy.records import BodyTap, PluginHopRecord, frozen_bodies

__all__ = ["ConnectionHopRecord", "ConnectionRecord", "ConnectionRing", "DataSideRecord"]


class DataSideRecord:
    """One direction of a connection as one plugin saw it: the data it was given
    (``before``) and the data it released (``after``; for a log-only plugin what it would
    have released), each capped, with the whole sizes."""

    __slots__ = ("_after_tap", "_before_tap", "after", "after_size", "before", "before_size")

    def __init__(self) -> None:
        self._before_tap: BodyTap | None = None
        self._after_tap: BodyTap | None = None
        self.before: bytes | None = None
        self.after: bytes | None = None
        self.before_size: int | None = None
        self.after_size: int | None = None

    def data_in(self, chunk: bytes) -> None:
        if self._before_tap is None:
            self._before_tap = BodyTap()
        self._before_tap.add(chunk)

    def data_out(self, chunk: bytes) -> None:
        if self._after_tap is None:
            self._after_tap = BodyTap()
        self._after_tap.add(chunk)

    def freeze(self) -> None:
        """Copy the taps into the record's values (once the connection ended)."""
        self.before, self.after, self.before_size, self.after_size = frozen_bodies(
            self._before_tap, self._after_tap
        )
        self._before_tap = self._after_tap = None

    def to_dict(self) -> dict[str, Any]:
        def text(b: bytes | None) -> str | None:
            return None if b is None else b.decode("utf-8", "replace")

        return {
            "before": text(self.before),
            "after": text(self.after),
            "before_size": self.before_size,
            "after_size": self.after_size,
        }


class ConnectionHopRecord(PluginHopRecord):
    """What one NETWORK plugin did to one connection (the connection inspector's row)."""

    __slots__ = ("closed", "downstream", "upstream")

    def __init__(self, plugin: str, mode: str, ran: bool, skipped_reason: str = "") -> None:
        super().__init__(plugin, mode, ran, skipped_reason)
        self.downstream = DataSideRecord()  # client -> upstream
        self.upstream = DataSideRecord()  # upstream -> client
        self.closed = False  # the plugin closed the connection (proxy_close_stream)

    def to_dict(self) -> dict[str, Any]:
        return {
            "plugin": self.plugin,
            "mode": self.mode,
            "ran": self.ran,
            "skipped_reason": self.skipped_reason,
            "downstream": self.downstream.to_dict(),
            "upstream": self.upstream.to_dict(),
            "would": list(self.would),
            "paused_ms": round(self.paused_ms, 3),
            "closed": self.closed,
            "callbacks": self.callbacks_json(),
            "failure": self.failure,
        }


@dataclass(slots=True)
class ConnectionRecord:
    """One finished TCP connection for the connection ring.

    ``outcome``: ``closed`` (both sides ended), ``client_closed``, ``upstream_closed``,
    ``upstream_connect_failed``, ``plugin_closed`` (proxy_close_stream), ``plugin_failed``
    (a trap, FAIL_CLOSE / FAIL_RELOAD), ``failed_closed`` (refused: a failed plugin fails
    closed), ``pause_timeout``, ``proxy_stopped``. ``close_peer`` is what
    ``proxy_on_downstream_connection_close`` was told: 1 local, 2 remote."""

    id: int
    listener: str
    cluster: str
    client: str
    upstream_address: str
    started: float  # wall clock seconds
    duration_ms: float
    outcome: str
    close_peer: int
    rx_bytes: int  # from the client
    tx_bytes: int  # to the client
    upstream_tx_bytes: int  # to the upstream
    upstream_rx_bytes: int  # from the upstream
    hops: list[ConnectionHopRecord] = field(default_factory=list)
    protocol: str = "tcp"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "protocol": self.protocol,
            "listener": self.listener,
            "cluster": self.cluster,
            "client": self.client,
            "upstream_address": self.upstream_address,
            "started": self.started,
            "duration_ms": round(self.duration_ms, 3),
            "outcome": self.outcome,
            "close_peer": self.close_peer,
            "rx_bytes": self.rx_bytes,
            "tx_bytes": self.tx_bytes,
            "upstream_tx_bytes": self.upstream_tx_bytes,
            "upstream_rx_bytes": self.upstream_rx_bytes,
            "hops": [h.to_dict() for h in self.hops],
        }


class ConnectionRing:
    """The newest ``size`` connection records, oldest first, and who hears of new ones."""

    def __init__(self, size: int) -> None:
        self.recent: deque[ConnectionRecord] = deque(maxlen=size)
        self.listeners: list[Callable[[ConnectionRecord], None]] = []
        self._seq = 0

    def next_id(self) -> int:
        self._seq += 1
        return self._seq

    def add(self, rec: ConnectionRecord) -> None:
        self.recent.append(rec)
        for fn in self.listeners:
            fn(rec)

    def since(self, record_id: int, limit: int = 500) -> list[ConnectionRecord]:
        """Records with an id after ``record_id``, oldest first: at most the newest
        ``limit``. Pass the last id received to continue."""
        out: list[ConnectionRecord] = []
        if limit <= 0:
            return out
        for rec in reversed(self.recent):
            if rec.id <= record_id or len(out) >= limit:
                break
            out.append(rec)
        out.reverse()
        return out
