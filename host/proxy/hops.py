"""One plugin on one request, as the chain keeps it: the hop and its records.

``Hop`` is one plugin on this request (its context, mode and bookkeeping); ``HopSide``
is one direction of it (done or not, the bodies tapped for the inspector, a log-only
plugin's copy of the body); ``Direction`` is what differs between the request's walk
through the chain and the response's, taken by the chain's iterations as a value;
``Walk`` is where a walk stands while a plugin holds it paused. The chain
(``host.proxy.chain.ChainRun``) owns the hops through ``HopOwner``; no I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from host.headers import HeaderMap
from host.proxy.canary import canary_forced
from host.proxy.records import BodyTap, HopRecord, HopSideRecord, frozen_bodies
from host.proxy.stream import LocalReply
from host.wasm.context import HttpContext, LocalResponse, StreamListener
from host.wasm.types import StreamType

if TYPE_CHECKING:
    from host.proxy.slots import PluginInstance, PluginSlot

__all__ = [
    "REQUEST",
    "RESPONSE",
    "TRAPPED",
    "Direction",
    "Hop",
    "HopOwner",
    "HopSide",
    "Walk",
    "reply_headers",
    "reply_of",
    "select_hops",
]

# what the inspector shows for the callback that trapped (its result slot)
TRAPPED = "trap"


class HopOwner(Protocol):
    """What a hop tells the request it belongs to (``ChainRun``)."""

    @property
    def detail(self) -> bool: ...  # record the inspector's per-hop detail

    @property
    def hops(self) -> list[Hop]: ...  # the plugins that run on the request, in order

    @property
    def records(self) -> list[HopRecord]: ...  # the inspector's row of every plugin

    def hop_resumed(self, hop: Hop, stream: StreamType) -> None: ...

    def hop_local_reply(self, hop: Hop) -> None: ...

    def hop_closed(self, hop: Hop) -> None: ...


class HopSide:
    """One plugin in one direction of this request: whether it is done with it, the
    bodies in and out of it (made on first use: most requests have none) and, for a
    log-only plugin, the copy of the body it was given."""

    __slots__ = ("after", "before", "detail", "done", "shadow_in")

    def __init__(self, detail: bool) -> None:
        self.done = False  # this direction finished for this plugin
        self.detail = detail  # tap the bodies (the inspector's detail is on)
        self.shadow_in = bytearray()
        self.before: BodyTap | None = None
        self.after: BodyTap | None = None

    def body_in(self, chunk: bytes) -> None:
        """A body chunk handed to the plugin."""
        if not self.detail:
            return
        if self.before is None:
            self.before = BodyTap()
        self.before.add(chunk)

    def body_out(self, chunk: bytes) -> None:
        """Body bytes the plugin released (or, log-only, would have released)."""
        if not self.detail:
            return
        if self.after is None:
            self.after = BodyTap()
        self.after.add(chunk)

    def record_body(self, rec: HopSideRecord) -> None:
        if self.before is None and self.after is None:
            return  # no body callback ran: the usual case, on the hot path
        rec.body_before, rec.body_after, rec.body_before_size, rec.body_after_size = frozen_bodies(
            self.before, self.after
        )


@dataclass(frozen=True, slots=True)
class Direction:
    """What differs between the request's walk through the chain and the response's: the
    hop order, the stream type, the overflow reply and the names the inspector, the
    interceptor and the log-only counters use. The chain's iterations take it as a value."""

    request: bool
    name: str  # "request" | "response"
    stream: StreamType
    step: int  # +1: in the chain's order (request), -1: in reverse (response)
    overflow: LocalReply  # Envoy: 413 when a buffered request body exceeds the limit, 500
    # for a response

    def side(self, hop: Hop) -> HopSide:
        return hop.req if self.request else hop.resp

    def record(self, rec: HopRecord) -> HopSideRecord:
        return rec.request if self.request else rec.response


REQUEST = Direction(
    True,
    "request",
    StreamType.HTTP_REQUEST,
    1,
    LocalReply(413, b"Payload Too Large\n", details="request_payload_too_large"),
)
RESPONSE = Direction(
    False,
    "response",
    StreamType.HTTP_RESPONSE,
    -1,
    LocalReply(500, b"Internal Server Error\n", details="response_payload_too_large"),
)


class Walk:
    """Where the chain's walk in one direction stands while a plugin holds it paused."""

    __slots__ = ("data", "eos", "index")

    def __init__(self) -> None:
        self.index = 0
        self.data = b""
        self.eos = False


class Hop(StreamListener):
    """One plugin on this request: its context, mode and bookkeeping."""

    __slots__ = (
        "ctx",
        "enforce",
        "inst",
        "rec",
        "req",
        "resp",
        "run",
        "slot",
        "trapped",
        "wait_started",
    )

    def __init__(
        self, run: HopOwner, slot: PluginSlot, inst: PluginInstance, enforce: bool
    ) -> None:
        self.run = run
        self.slot = slot
        self.inst = inst
        self.enforce = enforce
        self.ctx: HttpContext | None = None
        self.rec = HopRecord(slot.name, "enforce" if enforce else "log-only", True)
        self.req = HopSide(run.detail)
        self.resp = HopSide(run.detail)
        self.wait_started = 0.0
        # the callback of this stream that trapped: (name, result, µs) for the record
        self.trapped: tuple[str, int | str | None, float] | None = None

    def record_calls(self, ctx: HttpContext) -> None:
        """Put the callbacks (and the one that trapped) and callouts into the record."""
        callbacks: list[tuple[str, int | str | None, float]] = list(ctx.callbacks)
        if self.trapped is not None:
            callbacks.append(self.trapped)
        self.rec.callbacks = callbacks
        self.rec.callouts = [
            {
                "cluster": c.cluster,
                "status": c.response_status,
                "failure": c.failure,
                "elapsed_ms": round(c.elapsed_ms, 2),
            }
            for c in ctx.callouts or ()
        ]  # this stream's own (the newest MAX_CALLOUT_RECORDS), dropped with it

    def detach(self) -> None:
        """Break the run <-> hop <-> context cycles at the end of the request, so it is
        freed by reference counting instead of waiting for the cyclic GC."""
        ctx = self.ctx
        if ctx is not None:
            ctx.listener = None
            ctx.info_factory = None
        self.ctx = None
        self.run = None  # type: ignore[assignment]

    def record_bodies(self) -> None:
        """Freeze the bodies into the record."""
        self.req.record_body(self.rec.request)
        self.resp.record_body(self.rec.response)

    # StreamListener: things the plugin did outside its own stream callbacks
    def on_resume(self, ctx: HttpContext, stream: StreamType) -> None:
        self.run.hop_resumed(self, stream)

    def on_local_reply(self, ctx: HttpContext) -> None:
        self.run.hop_local_reply(self)

    def on_close(self, ctx: Any, stream: StreamType) -> None:
        self.run.hop_closed(self)


def reply_of(lr: LocalResponse) -> LocalReply:
    """The local reply a plugin sent, as the data path answers it (gRPC status added)."""
    headers = list(lr.headers)
    if lr.grpc_status is not None:
        headers.append((b"grpc-status", str(lr.grpc_status).encode()))
        if lr.body:
            headers.append((b"grpc-message", lr.body))
    return LocalReply(lr.status, lr.body, headers, lr.details)


def reply_headers(reply: LocalReply) -> HeaderMap:
    """The headers a local reply's response path starts from (ABI doc §6.2)."""
    headers = HeaderMap([(b":status", str(reply.status).encode())])
    if reply.body:
        headers.add(b"content-length", str(len(reply.body)).encode())
        if not any(k.lower() == b"content-type" for k, _ in reply.headers):
            headers.add(b"content-type", b"text/plain")
    else:
        headers.add(b"content-length", b"0")
    for k, v in reply.headers:
        headers.add(k.lower(), v)
    return headers


def select_hops(
    run: HopOwner, applied: list[PluginSlot], headers: HeaderMap, client_ip: str
) -> PluginSlot | None:
    """The mode and policy decisions for one request: which of the ``applied`` plugins
    run on it (``run.hops``; every plugin gets its row in ``run.records``: disabled, not
    sampled by canary, skipped by FAIL_OPEN). Returns the failed plugin whose failure
    policy rejects the request (FAIL_CLOSE/FAIL_RELOAD), if one does."""
    forced = canary_forced(headers)
    for slot in applied:  # the plugins whose match selects this listener
        adm = slot.admit(headers, client_ip, forced)
        inst, enforce = adm.inst, adm.enforce
        if inst is None:
            if not adm.rejects:
                run.records.append(HopRecord(slot.name, slot.mode, False, adm.skipped))
                continue
            rec = HopRecord(slot.name, slot.mode, False, f"failed, {adm.policy}: request rejected")
            rec.failure = slot.failure_dict()
            run.records.append(rec)
            return slot
        hop = Hop(run, slot, inst, enforce)
        inst.acquire()
        slot.count("invocations")
        run.hops.append(hop)
        run.records.append(hop.rec)
    return None
