"""What the app reads about requests, as frozen values: a finished request's summary for
the inspector's list (``RequestSummary``), the whole request with every plugin hop for
its details (``RequestView``, ``HopView`` and their parts), the answer for a request that
has left the ring (``RequestGone``), and a request held by intercept (``HeldView``).

Each is built once, on the engine thread, from the engine's mutable records
(``records.RequestRecord``/``HopRecord``, ``intercept.HeldRequest``), so what crosses to
the GUI thread shares no list the proxy could still write. Headers and bodies are text
(names latin-1, values and bodies UTF-8 with replacement), as the admin API's JSON has
them; ``to_dict()`` is that JSON (the same keys, in the same order, as
``RequestRecord.to_dict()`` and ``HeldRequest.to_dict()``), and ``from_dict`` reads it
back (keys an older file lacks take their defaults).

A value module: the GUI may import it (pyproject's import-linter contract). No I/O, no
plugin calls, nothing that holds an engine object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from host.proxy.records import HopRecord, RequestRecord
from host.proxy.snapshots import FailureView

__all__ = [
    "CallbackView",
    "CalloutView",
    "HeaderPairs",
    "HeldView",
    "HopView",
    "LocalReplyView",
    "RequestGone",
    "RequestSummary",
    "RequestView",
    "hop_changed",
]

# (name, value) pairs in order, as text
HeaderPairs = tuple[tuple[str, str], ...]


def _pairs(p: Sequence[tuple[bytes, bytes]] | None) -> HeaderPairs | None:
    if p is None:
        return None
    return tuple((k.decode("latin-1"), v.decode("utf-8", "replace")) for k, v in p)


def _text(b: bytes | None) -> str | None:
    return None if b is None else b.decode("utf-8", "replace")


def _pairs_of(v: Any) -> HeaderPairs | None:
    """JSON's [[name, value], ...] (or null) as pairs."""
    if v is None:
        return None
    return tuple((str(k), str(val)) for k, val in v)


def _json(v: Any) -> Any:
    """A field's JSON: values by their ``to_dict``, tuples as lists."""
    if isinstance(v, tuple):
        return [_json(x) for x in v]
    to_dict = getattr(v, "to_dict", None)
    return to_dict() if callable(to_dict) else v


def _fields_json(value: Any) -> dict[str, Any]:
    return {f.name: _json(getattr(value, f.name)) for f in fields(value)}


def _failure_of(d: Mapping[str, Any] | None) -> FailureView | None:
    """A hop's failure object (``Failure.to_dict()`` with the request and the lab's
    session when known) as a ``FailureView``."""
    if d is None:
        return None
    return FailureView(
        state=str(d.get("state", "")),
        kind=str(d.get("kind", "")),
        message=str(d.get("message", "")),
        callback=str(d.get("callback", "")),
        context_id=int(d.get("context_id") or 0),
        backtrace=tuple(str(b) for b in d.get("backtrace") or ()),
        request=d.get("request"),
        session=d.get("session"),
    )


@dataclass(frozen=True, slots=True)
class CallbackView:
    """One callback a plugin ran on the request: its name, its result (None: returns
    nothing; ``"trap"``: it trapped) and its time in µs."""

    name: str
    result: int | str | None
    us: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "result": self.result, "us": self.us}


@dataclass(frozen=True, slots=True)
class CalloutView:
    """One HTTP callout the plugin made for the request: the cluster, the response's
    status (None: no response) or the failure, and how long it took."""

    cluster: str
    status: int | None = None
    failure: str | None = None
    elapsed_ms: float = 0.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CalloutView:
        return cls(
            str(d.get("cluster") or ""),
            d.get("status"),
            d.get("failure"),
            float(d.get("elapsed_ms") or 0.0),
        )

    def to_dict(self) -> dict[str, Any]:
        return _fields_json(self)


@dataclass(frozen=True, slots=True)
class LocalReplyView:
    """A plugin's local reply (``proxy_send_local_response``): for a log-only plugin,
    the reply it would have sent."""

    status: int
    details: str = ""
    headers: HeaderPairs = ()
    body: str = ""
    grpc_status: int | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LocalReplyView:
        return cls(
            int(d.get("status") or 0),
            str(d.get("details") or ""),
            _pairs_of(d.get("headers")) or (),
            str(d.get("body") or ""),
            d.get("grpc_status"),
        )

    def to_dict(self) -> dict[str, Any]:
        return _fields_json(self)


@dataclass(frozen=True, slots=True)
class HopView:
    """What one plugin did to one request (``records.HopRecord``, frozen): whether it
    ran and why not, each direction's headers, bodies and trailers before and after it
    (None: the plugin was not given that part), its local reply, log-only intents,
    pause time, callbacks, callouts and failure. Bodies are the recorded start
    (``HopRecord.BODY_CAP`` bytes); ``*_size`` is the whole length."""

    plugin: str
    mode: str = "enforce"
    ran: bool = True
    skipped_reason: str = ""
    request_headers_before: HeaderPairs | None = None
    request_headers_after: HeaderPairs | None = None
    request_body_before: str | None = None
    request_body_after: str | None = None
    request_body_before_size: int | None = None
    request_body_after_size: int | None = None
    response_headers_before: HeaderPairs | None = None
    response_headers_after: HeaderPairs | None = None
    response_body_before: str | None = None
    response_body_after: str | None = None
    response_body_before_size: int | None = None
    response_body_after_size: int | None = None
    request_trailers_before: HeaderPairs | None = None
    request_trailers_after: HeaderPairs | None = None
    response_trailers_before: HeaderPairs | None = None
    response_trailers_after: HeaderPairs | None = None
    local_reply: LocalReplyView | None = None
    would: tuple[str, ...] = ()
    paused_ms: float = 0.0
    callbacks: tuple[CallbackView, ...] = ()
    callouts: tuple[CalloutView, ...] = ()
    failure: FailureView | None = None

    @classmethod
    def of(cls, h: HopRecord) -> HopView:
        req, resp = h.request, h.response
        return cls(
            plugin=h.plugin,
            mode=h.mode,
            ran=h.ran,
            skipped_reason=h.skipped_reason,
            request_headers_before=_pairs(req.headers_before),
            request_headers_after=_pairs(req.headers_after),
            request_body_before=_text(req.body_before),
            request_body_after=_text(req.body_after),
            request_body_before_size=req.body_before_size,
            request_body_after_size=req.body_after_size,
            response_headers_before=_pairs(resp.headers_before),
            response_headers_after=_pairs(resp.headers_after),
            response_body_before=_text(resp.body_before),
            response_body_after=_text(resp.body_after),
            response_body_before_size=resp.body_before_size,
            response_body_after_size=resp.body_after_size,
            request_trailers_before=_pairs(req.trailers_before),
            request_trailers_after=_pairs(req.trailers_after),
            response_trailers_before=_pairs(resp.trailers_before),
            response_trailers_after=_pairs(resp.trailers_after),
            local_reply=(
                LocalReplyView.from_dict(h.local_reply) if h.local_reply is not None else None
            ),
            would=tuple(h.would),
            paused_ms=round(h.paused_ms, 3),
            callbacks=tuple(CallbackView(n, r, round(us, 1)) for n, r, us in h.callbacks),
            callouts=tuple(CalloutView.from_dict(c) for c in h.callouts),
            failure=_failure_of(h.failure),
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HopView:
        """A hop object of the admin API's ``/requests`` (or a HAR entry's ``_hops``)."""

        def size(key: str) -> int | None:
            v = d.get(key)
            return None if v is None else int(v)

        def text(key: str) -> str | None:
            v = d.get(key)
            return None if v is None else str(v)

        lr = d.get("local_reply")
        return cls(
            plugin=str(d.get("plugin") or ""),
            mode=str(d.get("mode") or "enforce"),
            ran=bool(d.get("ran", True)),
            skipped_reason=str(d.get("skipped_reason") or ""),
            request_headers_before=_pairs_of(d.get("request_headers_before")),
            request_headers_after=_pairs_of(d.get("request_headers_after")),
            request_body_before=text("request_body_before"),
            request_body_after=text("request_body_after"),
            request_body_before_size=size("request_body_before_size"),
            request_body_after_size=size("request_body_after_size"),
            response_headers_before=_pairs_of(d.get("response_headers_before")),
            response_headers_after=_pairs_of(d.get("response_headers_after")),
            response_body_before=text("response_body_before"),
            response_body_after=text("response_body_after"),
            response_body_before_size=size("response_body_before_size"),
            response_body_after_size=size("response_body_after_size"),
            request_trailers_before=_pairs_of(d.get("request_trailers_before")),
            request_trailers_after=_pairs_of(d.get("request_trailers_after")),
            response_trailers_before=_pairs_of(d.get("response_trailers_before")),
            response_trailers_after=_pairs_of(d.get("response_trailers_after")),
            local_reply=LocalReplyView.from_dict(lr) if lr is not None else None,
            would=tuple(str(w) for w in d.get("would") or ()),
            paused_ms=float(d.get("paused_ms") or 0.0),
            callbacks=tuple(
                CallbackView(str(c.get("name") or ""), c.get("result"), float(c.get("us") or 0))
                for c in d.get("callbacks") or ()
            ),
            callouts=tuple(CalloutView.from_dict(c) for c in d.get("callouts") or ()),
            failure=_failure_of(d.get("failure")),
        )

    def to_dict(self) -> dict[str, Any]:
        """``HopRecord.to_dict()``'s JSON object."""
        return _fields_json(self)


@dataclass(frozen=True, slots=True)
class RequestView:
    """One finished request with every plugin hop, in request order (the inspector's
    details; ``records.RequestRecord``, frozen)."""

    id: int
    protocol: str = "HTTP/1.1"
    grpc_status: int | None = None  # None: not a gRPC exchange
    grpc_message: str = ""
    request_id: str = ""
    method: str = ""
    path: str = ""
    authority: str = ""
    client: str = ""
    status: int = 0
    outcome: str = ""
    duration_ms: float = 0.0
    started: float = 0.0  # wall clock seconds
    response_code_details: str = ""
    hops: tuple[HopView, ...] = ()

    @classmethod
    def of(cls, rec: RequestRecord) -> RequestView:
        return cls(
            id=rec.id,
            protocol=rec.protocol,
            grpc_status=rec.grpc_status,
            grpc_message=rec.grpc_message,
            request_id=rec.request_id,
            method=rec.method,
            path=rec.path,
            authority=rec.authority,
            client=rec.client,
            status=rec.status,
            outcome=rec.outcome,
            duration_ms=round(rec.duration_ms, 3),
            started=rec.started,
            response_code_details=rec.response_code_details,
            hops=tuple(HopView.of(h) for h in rec.hops),
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RequestView:
        """A request object of the admin API's ``/requests``."""
        grpc = d.get("grpc_status")
        return cls(
            id=int(d.get("id") or 0),
            protocol=str(d.get("protocol") or "HTTP/1.1"),
            grpc_status=None if grpc is None else int(grpc),
            grpc_message=str(d.get("grpc_message") or ""),
            request_id=str(d.get("request_id") or ""),
            method=str(d.get("method") or ""),
            path=str(d.get("path") or ""),
            authority=str(d.get("authority") or ""),
            client=str(d.get("client") or ""),
            status=int(d.get("status") or 0),
            outcome=str(d.get("outcome") or ""),
            duration_ms=float(d.get("duration_ms") or 0.0),
            started=float(d.get("started") or 0.0),
            response_code_details=str(d.get("response_code_details") or ""),
            hops=tuple(HopView.from_dict(h) for h in d.get("hops") or ()),
        )

    def to_dict(self) -> dict[str, Any]:
        """``RequestRecord.to_dict()``'s JSON object."""
        return _fields_json(self)


@dataclass(frozen=True, slots=True)
class RequestGone:
    """The answer for a request asked for after it left the inspector's ring."""

    id: int
    error: str = "this request has left the inspector's ring"


def hop_changed(h: HopRecord) -> bool:
    """Did this hop change the request or the response (or reply)? Log-only hops never
    do: what they would have changed was not applied."""
    if not h.ran or h.mode == "log-only":
        return False
    req, resp = h.request, h.response
    return bool(
        h.local_reply
        or req.headers_before != req.headers_after
        or resp.headers_before != resp.headers_after
        or req.body_before != req.body_after
        or resp.body_before != resp.body_after
    )


@dataclass(frozen=True, slots=True)
class RequestSummary:
    """One finished request as the inspector's list shows and filters it: who ran on
    it (``plugins``), who changed it (``changed_by``), whose reply answered it
    (``local_reply``), how many log-only intents it had (``would``) and which plugin
    failed on it (``failed``; "" for none)."""

    id: int
    request_id: str = ""
    method: str = ""
    path: str = ""
    status: int = 0
    protocol: str = "HTTP/1.1"
    grpc_status: int | None = None  # None: not a gRPC exchange
    grpc_message: str = ""
    outcome: str = ""
    duration_ms: float = 0.0
    started: float = 0.0  # wall clock seconds
    plugins: tuple[str, ...] = ()
    local_reply: str = ""
    would: int = 0
    failed: str = ""
    changed_by: tuple[str, ...] = ()

    @classmethod
    def of(cls, rec: RequestRecord) -> RequestSummary:
        hops = rec.hops
        return cls(
            id=rec.id,
            request_id=rec.request_id,
            method=rec.method,
            path=rec.path,
            status=rec.status,
            protocol=rec.protocol,
            grpc_status=rec.grpc_status,
            grpc_message=rec.grpc_message,
            outcome=rec.outcome,
            duration_ms=round(rec.duration_ms, 3),
            started=rec.started,
            plugins=tuple(h.plugin for h in hops if h.ran),
            # a log-only plugin's reply is an intent (counted in ``would``), not a reply
            local_reply=next(
                (h.plugin for h in hops if h.local_reply and h.mode != "log-only"), ""
            ),
            would=sum(len(h.would) for h in hops),
            failed=next((h.plugin for h in hops if h.failure), ""),
            changed_by=tuple(h.plugin for h in hops if hop_changed(h)),
        )


@dataclass(frozen=True, slots=True)
class HeldView:
    """One request held by intercept (``intercept.HeldRequest`` without its future):
    where it waits (plugin, stage), what it is, its headers (pseudo-headers included)
    and, at the ``request_body`` stage, its body; it resumes unchanged by itself
    ``timeout_s`` after ``held_at`` (wall clock)."""

    id: int
    plugin: str
    stage: str
    method: str = ""
    path: str = ""
    request_id: str = ""
    headers: HeaderPairs = ()
    body: str | None = None
    held_at: float = 0.0
    timeout_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """``HeldRequest.to_dict()``'s JSON object."""
        return _fields_json(self)
