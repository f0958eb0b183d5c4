"""The inspector ring: the last finished requests, with their plugin hops.

Every finished ``ChainRun`` becomes one ``RequestRecord`` (numbered in finishing
order) in a bounded ring that the admin API's ``/requests`` and the GUI's
inspector read; listeners (the lab's crash keeper) get each record as it lands.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from host.proxy.chain import ChainRun, RequestRecord

__all__ = ["InspectorRing"]


class InspectorRing:
    """The newest ``size`` request records, oldest first, and who hears of new ones."""

    def __init__(self, size: int) -> None:
        self.recent: deque[RequestRecord] = deque(maxlen=size)
        self.listeners: list[Callable[[RequestRecord], None]] = []
        self._seq = 0

    def record(self, run: ChainRun) -> RequestRecord:
        """Put a finished request in the ring and tell the listeners; returns its record."""
        info = run.info
        h = run.headers
        self._seq += 1
        rec = RequestRecord(
            id=self._seq,
            request_id=info.request_id,
            method=(h.get(b":method") or b"").decode("latin-1") if h else "",
            path=(h.get(b":path") or b"").decode("latin-1") if h else "",
            authority=(h.get(b":authority") or b"").decode("latin-1") if h else "",
            client=f"{info.client[0]}:{info.client[1]}",
            status=info.status,
            outcome=info.outcome,
            duration_ms=(time.monotonic() - info.start) * 1000,
            started=info.start_wall_ns / 1e9,
            hops=run.records,
            response_code_details=info.response_code_details,
            protocol=info.protocol,
            grpc_status=info.grpc_status,
            grpc_message=info.grpc_message,
        )
        self.recent.append(rec)
        for fn in self.listeners:
            fn(rec)
        return rec
