"""The inspector ring: the last finished requests, with their plugin hops.

Every finished ``ChainRun`` becomes one ``RequestRecord`` (numbered in finishing
order) in a bounded ring that the admin API's ``/requests`` and the GUI's
inspector read; listeners get each record as it lands, failure listeners (the lab's
crash keeper) each record of a request on which a plugin failed.

Detail costs: the per-hop header snapshots, body taps and callback lists are most of
a plugin's bookkeeping per request. So they are recorded only while someone reads
them (``detailed``): while a holder keeps the ring watched (the app's inspector,
``watch``/``unwatch``) or for ``WATCH_S`` seconds after a read of the ring
(``touch``: the admin API's ``/requests``, the app's poll). The summary (method,
path, status, outcome, timing, each hop's mode, skip reason, local reply, log-only
intents, pause time) is recorded always, and so is everything about a hop whose
plugin failed on the request; the first hop's request headers as the client sent
them are kept too, so the lab's crash session can replay the requests before a trap.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from host.proxy.chain import ChainRun, RequestRecord

__all__ = ["InspectorRing"]


class InspectorRing:
    """The newest ``size`` request records, oldest first, and who hears of new ones."""

    # how long a read of the ring keeps the per-hop detail on
    WATCH_S = 60.0

    def __init__(self, size: int) -> None:
        self.recent: deque[RequestRecord] = deque(maxlen=size)
        self.listeners: list[Callable[[RequestRecord], None]] = []
        # only the records of requests on which a plugin failed (the lab's crash keeper;
        # it then needs no interpreted call per request)
        self.failure_listeners: list[Callable[[RequestRecord], None]] = []
        self._seq = 0
        self._holders = 0
        self._read_until = 0.0  # time.monotonic() until which a read keeps detail on

    # -- who watches ---------------------------------------------------------------------

    def watch(self) -> None:
        """Keep per-hop detail on until ``unwatch`` (an inspector view is open)."""
        self._holders += 1

    def unwatch(self) -> None:
        self._holders = max(0, self._holders - 1)

    def touch(self) -> None:
        """Someone read the ring: keep per-hop detail on for ``WATCH_S`` seconds."""
        self._read_until = time.monotonic() + self.WATCH_S

    def detailed(self) -> bool:
        """Whether requests starting now record their per-hop detail."""
        return self._holders > 0 or (self._read_until > 0.0 and time.monotonic() < self._read_until)

    # -- records -------------------------------------------------------------------------

    def record(self, run: ChainRun, now: float | None = None) -> RequestRecord:
        """Put a finished request in the ring and tell the listeners; returns its record.
        ``now``: the caller's ``time.monotonic()`` reading, if it has one."""
        info = run.info
        h = run.headers
        self._seq += 1
        if h is not None:
            method = h.get(b":method")
            path = h.get(b":path")
            authority = h.get(b":authority")
        else:
            method = path = authority = None
        rec = RequestRecord(
            id=self._seq,
            request_id=info.request_id,
            method=method.decode("latin-1") if method else "",
            path=path.decode("latin-1") if path else "",
            authority=authority.decode("latin-1") if authority else "",
            client=f"{info.client[0]}:{info.client[1]}",
            status=info.status,
            outcome=info.outcome,
            duration_ms=((time.monotonic() if now is None else now) - info.start) * 1000,
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
        if self.failure_listeners:
            for hop in rec.hops:
                if hop.ran and hop.failure is not None:
                    for fn in self.failure_listeners:
                        fn(rec)
                    break
        return rec
