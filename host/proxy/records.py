"""The request inspector's records: what each plugin did to one request (``HopRecord``,
one ``HopSideRecord`` per direction) and the finished request (``RequestRecord``), plus
the capped body taps they are filled from.

Plain values for the inspector ring, the admin API (``to_dict``), the app and the lab's
recorder; no plugin calls and no I/O here (``chain.py`` fills them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from mypy_extensions import mypyc_attr

__all__ = [
    "BodyTap",
    "HopRecord",
    "HopSideRecord",
    "PluginHopRecord",
    "RequestRecord",
    "frozen_bodies",
]


class HopSideRecord:
    """What one plugin saw and did in one direction (request or response) of a request."""

    __slots__ = (
        "body_after",
        "body_after_size",
        "body_before",
        "body_before_size",
        "headers_after",
        "headers_before",
        "trailers_after",
        "trailers_before",
    )

    def __init__(self) -> None:
        self.headers_before: list[tuple[bytes, bytes]] | None = None
        self.headers_after: list[tuple[bytes, bytes]] | None = None
        # the trailers the plugin's trailers callback was given and left (None: the
        # stream ended without trailers, or the plugin was not called for them)
        self.trailers_before: list[tuple[bytes, bytes]] | None = None
        self.trailers_after: list[tuple[bytes, bytes]] | None = None
        self.body_before: bytes | None = None
        self.body_after: bytes | None = None
        self.body_before_size: int | None = None
        self.body_after_size: int | None = None


@mypyc_attr(allow_interpreted_subclasses=True)  # (tcp_records.ConnectionHopRecord)
class PluginHopRecord:
    """What any plugin's row in an inspector has, HTTP (``HopRecord``) or TCP
    (``tcp_records.ConnectionHopRecord``): which plugin in which mode, whether it ran and
    why not, its log-only intents, the time it held the stream paused, its callbacks and
    its failure."""

    __slots__ = (
        "callbacks",
        "failure",
        "mode",
        "paused_ms",
        "plugin",
        "ran",
        "skipped_reason",
        "would",
    )

    def __init__(self, plugin: str, mode: str, ran: bool, skipped_reason: str = "") -> None:
        self.plugin = plugin
        self.mode = mode
        self.ran = ran
        self.skipped_reason = skipped_reason
        self.would: list[str] = []  # log-only intents
        self.paused_ms = 0.0
        # (callback, result, µs); the result of the callback that trapped is TRAPPED
        self.callbacks: list[tuple[str, int | str | None, float]] = []
        self.failure: dict[str, Any] | None = None

    def callbacks_json(self) -> list[dict[str, Any]]:
        return [{"name": n, "result": r, "us": round(us, 1)} for n, r, us in self.callbacks]


class HopRecord(PluginHopRecord):
    """What one plugin did to one request (the inspector's row). Slotted: one per
    plugin per request on the hot path.

    ``request`` and ``response`` hold each direction's headers and bodies (the flat
    ``request_headers_before`` ... names read them). Bodies: ``body_before`` is what the
    plugin was given, ``body_after`` what it released (for a log-only plugin: what it
    would have released), each the first ``BODY_CAP`` bytes; ``*_size`` is the whole
    length. None: the plugin has no body callback for that side, or no body passed it."""

    # Bodies are buffered up to the 1 MiB limit; the inspector ring (and the app's
    # copy of it, 500 records) keeps hundreds of records, so each keeps at most this
    # much: 16 KiB shows a body diff, and 500 records of 4 hops with every body large
    # and mutated stay under 130 MiB (an unchanged body is stored once).
    BODY_CAP: Final = 16 * 1024

    __slots__ = ("callouts", "local_reply", "request", "response")

    def __init__(self, plugin: str, mode: str, ran: bool, skipped_reason: str = "") -> None:
        super().__init__(plugin, mode, ran, skipped_reason)
        self.request = HopSideRecord()
        self.response = HopSideRecord()
        self.local_reply: dict[str, Any] | None = None
        self.callouts: list[dict[str, Any]] = []

    # the flat names the inspector, the lab's recorder and the app read
    @property
    def request_headers_before(self) -> list[tuple[bytes, bytes]] | None:
        return self.request.headers_before

    @property
    def request_headers_after(self) -> list[tuple[bytes, bytes]] | None:
        return self.request.headers_after

    @property
    def request_body_before(self) -> bytes | None:
        return self.request.body_before

    @property
    def request_body_after(self) -> bytes | None:
        return self.request.body_after

    @property
    def request_body_before_size(self) -> int | None:
        return self.request.body_before_size

    @property
    def request_body_after_size(self) -> int | None:
        return self.request.body_after_size

    @property
    def response_headers_before(self) -> list[tuple[bytes, bytes]] | None:
        return self.response.headers_before

    @property
    def response_headers_after(self) -> list[tuple[bytes, bytes]] | None:
        return self.response.headers_after

    @property
    def response_body_before(self) -> bytes | None:
        return self.response.body_before

    @property
    def response_body_after(self) -> bytes | None:
        return self.response.body_after

    @property
    def response_body_before_size(self) -> int | None:
        return self.response.body_before_size

    @property
    def response_body_after_size(self) -> int | None:
        return self.response.body_after_size

    def to_dict(self) -> dict[str, Any]:
        def pairs(p: list[tuple[bytes, bytes]] | None) -> list[list[str]] | None:
            if p is None:
                return None
            return [[k.decode("latin-1"), v.decode("utf-8", "replace")] for k, v in p]

        def body(b: bytes | None) -> str | None:
            return None if b is None else b.decode("utf-8", "replace")

        req, resp = self.request, self.response
        return {
            "plugin": self.plugin,
            "mode": self.mode,
            "ran": self.ran,
            "skipped_reason": self.skipped_reason,
            "request_headers_before": pairs(req.headers_before),
            "request_headers_after": pairs(req.headers_after),
            "request_body_before": body(req.body_before),
            "request_body_after": body(req.body_after),
            "request_body_before_size": req.body_before_size,
            "request_body_after_size": req.body_after_size,
            "response_headers_before": pairs(resp.headers_before),
            "response_headers_after": pairs(resp.headers_after),
            "response_body_before": body(resp.body_before),
            "response_body_after": body(resp.body_after),
            "response_body_before_size": resp.body_before_size,
            "response_body_after_size": resp.body_after_size,
            "request_trailers_before": pairs(req.trailers_before),
            "request_trailers_after": pairs(req.trailers_after),
            "response_trailers_before": pairs(resp.trailers_before),
            "response_trailers_after": pairs(resp.trailers_after),
            "local_reply": self.local_reply,
            "would": list(self.would),
            "paused_ms": round(self.paused_ms, 3),
            "callbacks": self.callbacks_json(),
            "callouts": self.callouts,
            "failure": self.failure,
        }


@dataclass(slots=True, init=False)  # eq and repr generated; the __init__ compiled below
class RequestRecord:
    """One finished request for the inspector ring."""

    id: int
    request_id: str
    method: str
    path: str
    authority: str
    client: str
    status: int
    outcome: str
    duration_ms: float
    started: float  # wall clock seconds
    hops: list[HopRecord]
    response_code_details: str
    protocol: str  # ExchangeInfo.protocol
    grpc_status: int | None  # None: not a gRPC exchange
    grpc_message: str

    # Written out (not the dataclass's generated one, which mypyc leaves interpreted):
    # one per request with a plugin.
    def __init__(
        self,
        id: int,
        request_id: str,
        method: str,
        path: str,
        authority: str,
        client: str,
        status: int,
        outcome: str,
        duration_ms: float,
        started: float,
        hops: list[HopRecord],
        response_code_details: str = "",
        protocol: str = "HTTP/1.1",
        grpc_status: int | None = None,
        grpc_message: str = "",
    ) -> None:
        self.id = id
        self.request_id = request_id
        self.method = method
        self.path = path
        self.authority = authority
        self.client = client
        self.status = status
        self.outcome = outcome
        self.duration_ms = duration_ms
        self.started = started
        self.hops = hops
        self.response_code_details = response_code_details
        self.protocol = protocol
        self.grpc_status = grpc_status
        self.grpc_message = grpc_message

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "protocol": self.protocol,
            "grpc_status": self.grpc_status,
            "grpc_message": self.grpc_message,
            "request_id": self.request_id,
            "method": self.method,
            "path": self.path,
            "authority": self.authority,
            "client": self.client,
            "status": self.status,
            "outcome": self.outcome,
            "duration_ms": round(self.duration_ms, 3),
            "started": self.started,
            "response_code_details": self.response_code_details,
            "hops": [h.to_dict() for h in self.hops],
        }


class BodyTap:
    """One body as one plugin saw it: the first ``HopRecord.BODY_CAP`` bytes of the
    chunks in order, and their total length."""

    __slots__ = ("data", "size")

    def __init__(self) -> None:
        self.data = bytearray()
        self.size = 0

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        room = HopRecord.BODY_CAP - len(self.data)
        if room > 0 and chunk:
            self.data += chunk[:room] if len(chunk) > room else chunk


def frozen_bodies(
    before: BodyTap | None, after: BodyTap | None
) -> tuple[bytes | None, bytes | None, int | None, int | None]:
    """(before, after, before size, after size) for a record; an unchanged body is
    kept once (the ring holds hundreds of records)."""
    b = bytes(before.data) if before is not None else None
    a = bytes(after.data) if after is not None else None
    if a is not None and a == b:
        a = b
    return (
        b,
        a,
        before.size if before is not None else None,
        after.size if after is not None else None,
    )
