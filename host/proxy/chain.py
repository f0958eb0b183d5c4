"""One request through the plugin chain: plugin callbacks in, data-path verdicts out.

``ChainRun`` is the ``StreamFilter`` the data path drives for one request. It walks
the request through the plugins in effective order (Istio's phase, then priority)
and the response back in reverse, as Envoy does, and applies the operator modes:

* enforce: what the plugin asks for happens (mutations, pauses, local replies);
* log-only: the plugin runs on a copy of the real stream; nothing it asks for is
  applied, later plugins see the unmodified stream, intent is counted apart from
  effect (would-reply by status, would-mutate, would-pause), a trap never affects
  traffic (operator-reference §2.2);
* canary: only the sampled share of requests runs the plugin (random, or a sticky
  hash of a header or the client address); ``x-wasmdesk-canary: always|never``
  forces the canaried plugins (below 100%) on or off, plugins at 100% run either
  way; the header is a control header, removed before plugins and upstream see it;
  canary and log-only compose;
* failure policy of a failed plugin (Istio ``failStrategy``): FAIL_CLOSE answers
  503 naming the plugin and the failure; FAIL_OPEN skips it; FAIL_RELOAD gets a
  fresh instance (with backoff), answering 503 meanwhile.

Every plugin hop is recorded for the request inspector (headers and body before
and after, local replies, what a log-only plugin would have changed, callouts,
time per callback, and the failure when the plugin trapped on this request). A body
is recorded whole as the plugin saw it (all the chunks it was given, all it released),
up to ``HopRecord.BODY_CAP`` bytes with the full size beside it. No sockets here: the
verdicts are ``stream.Verdict`` values.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import ChainMap
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from host.headers import HeaderMap
from host.proxy.records import (
    BodyTap,
    HopRecord,
    HopSideRecord,
    RequestRecord,
    frozen_bodies,
)
from host.proxy.stream import (
    CONTINUE,
    HOLD,
    RESET,
    Continue,
    ExchangeInfo,
    Hold,
    LocalReply,
    PassThroughFilter,
    Reply,
    Verdict,
    Wait,
)
from host.wasm.context import Action, HttpContext, LocalResponse, StreamInfo, StreamListener
from host.wasm.types import StreamType

if TYPE_CHECKING:
    from host.proxy.slots import PluginInstance, PluginSlot
    from host.wasm.vm import PluginVM

__all__ = [
    "CANARY_HEADER",
    "ChainHost",
    "ChainRun",
    "HopRecord",
    "NoPluginsFilter",
    "RequestRecord",
    "StreamInterceptor",
    "canary_forced",
    "canary_sampled",
    "request_facts",
]


class StreamInterceptor(Protocol):
    """Holds requests before a plugin's callback (``host.proxy.intercept.Interceptor``)."""

    def check(self, run: ChainRun, index: int, stage: str, data: bytes = b"") -> Verdict | None: ...


class ChainHost(Protocol):
    """What a ``ChainRun`` uses of the plugins it runs (``plugins.PluginManager``)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def applied(self) -> list[PluginSlot]: ...  # the plugins requests run, in order

    @property
    def listener(self) -> tuple[int, str] | None: ...  # (bound port, SERVER | CLIENT)

    @property
    def intercept(self) -> StreamInterceptor | None: ...

    @property
    def recorder(self) -> Any: ...  # the lab's recorder (host.lab.record), or None

    @property
    def pause_timeout_s(self) -> float: ...

    def failure_reply(self, slot: PluginSlot) -> LocalReply: ...

    def over_buffer_limit(self, size: int) -> bool: ...

    def plugin_failed(self, inst: PluginInstance, run: ChainRun | None) -> None: ...

    def run_paused(self, run: ChainRun) -> None: ...

    def run_unpaused(self, run: ChainRun) -> None: ...

    def record_callback_time(self, slot: PluginSlot, ctx: HttpContext) -> None: ...

    def request_finished(self, run: ChainRun) -> None: ...

    def record_detail(self) -> bool: ...  # record per-hop detail (someone is watching)

    def log_error(self, message: str) -> None: ...

    def count(self, what: str) -> None: ...


CANARY_HEADER = b"x-wasmdesk-canary"
# what the inspector shows for the callback that trapped (its result slot)
TRAPPED = "trap"


def canary_forced(headers: HeaderMap) -> bool | None:
    """``x-wasmdesk-canary: always`` → True, ``never`` → False, else None."""
    forced = headers.get(CANARY_HEADER)
    if forced is not None:
        f = forced.strip().lower()
        if f == b"always":
            return True
        if f == b"never":
            return False
    return None


def canary_sampled(
    percent: float, key: str, headers: HeaderMap, client_ip: str, forced: bool | None = None
) -> bool:
    """Whether this request runs a plugin at ``percent``% with canary key ``key``
    (``forced``: the request's x-wasmdesk-canary verdict, see ``canary_forced``).

    The header forces canaried plugins only: a plugin at 100% is not a canary and
    runs whatever it says (Kong's ``canary_by_header_name`` likewise only moves
    requests between the canary and the rest)."""
    if percent >= 100:
        return True
    if forced is not None:
        return forced
    if percent <= 0:
        return False
    if key == "random":
        return random.random() * 100 < percent
    if key == "client-ip":
        material = client_ip.encode()
    elif key.startswith("header:"):
        v = headers.get(key[7:])
        if v is None:
            # No key to hash: fall back to a random draw rather than always one side.
            return random.random() * 100 < percent
        material = v
    else:
        return random.random() * 100 < percent
    bucket = int.from_bytes(hashlib.blake2b(material, digest_size=8).digest(), "big") % 10_000
    return bucket < percent * 100


class NoPluginsFilter(PassThroughFilter):
    """The filter when no plugin is configured: everything passes, but the canary
    control header is still not forwarded upstream."""

    __slots__ = ()

    def request_headers(self, headers: HeaderMap, end_stream: bool) -> Verdict:
        if headers.get(CANARY_HEADER) is not None:
            headers.remove(CANARY_HEADER)
        return CONTINUE


class _HopSide:
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

    def side(self, hop: _Hop) -> _HopSide:
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


class _Walk:
    """Where the chain's walk in one direction stands while a plugin holds it paused."""

    __slots__ = ("data", "eos", "index")

    def __init__(self) -> None:
        self.index = 0
        self.data = b""
        self.eos = False


class _Hop(StreamListener):
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
        self, run: ChainRun, slot: PluginSlot, inst: PluginInstance, enforce: bool
    ) -> None:
        self.run = run
        self.slot = slot
        self.inst = inst
        self.enforce = enforce
        self.ctx: HttpContext | None = None
        self.rec = HopRecord(slot.name, "enforce" if enforce else "log-only", True)
        self.req = _HopSide(run.detail)
        self.resp = _HopSide(run.detail)
        self.wait_started = 0.0
        # the callback of this stream that trapped: (name, result, µs) for the record
        self.trapped: tuple[str, int | str | None, float] | None = None

    def record_bodies(self) -> None:
        """Freeze the bodies into the record."""
        self.req.record_body(self.rec.request)
        self.resp.record_body(self.rec.response)

    # StreamListener: things the plugin did outside its own stream callbacks
    def on_resume(self, ctx: HttpContext, stream: StreamType) -> None:
        self.run._resumed(self, stream)

    def on_local_reply(self, ctx: HttpContext) -> None:
        self.run._late_local_reply(self)

    def on_close(self, ctx: Any, stream: StreamType) -> None:
        self.run._late_close(self)


class ChainRun:
    """The plugin chain for one request (a ``StreamFilter`` for ``http1.Exchange``)."""

    _seq = 0

    def __init__(
        self,
        manager: ChainHost,
        info: ExchangeInfo,
        route: Callable[[HeaderMap, ExchangeInfo], object] | None = None,
    ) -> None:
        self.m = manager
        self.info = info
        # selects (and caches in info) the request's route: called when the headers
        # arrive, so plugins read xds.route_name / xds.cluster_name (Envoy's route cache)
        self._route = route
        self.loop = manager.loop
        ChainRun._seq += 1
        self.seq = ChainRun._seq
        self.hops: list[_Hop] = []
        self.records: list[HopRecord] = []
        self.headers: HeaderMap | None = None
        self.resp_headers: HeaderMap | None = None
        self.req_trailers: HeaderMap | None = None
        self.resp_trailers: HeaderMap | None = None
        # where a pending iteration stands
        self._req = _Walk()
        self._resp = _Walk()
        self._waiting: asyncio.Future[Verdict] | None = None
        self._waiting_hop: _Hop | None = None
        self._waiting_stage = ""
        self._waiting_dir = REQUEST
        self._wait_timer: asyncio.TimerHandle | None = None
        self.reply: LocalReply | None = None
        self.completed = False
        self.stream_info: StreamInfo | None = None
        # proxy_set_property values: Envoy keeps them in the stream's filter state
        # ("wasm.<name>"), which every Wasm filter of the stream reads and writes.
        self.filter_state: dict[bytes, bytes] = {}
        # per-hop detail for the inspector (headers, bodies, callbacks): only while
        # someone watches (inspector.InspectorRing.detailed) or the lab records
        self.detail = manager.record_detail()

    # -- setup --------------------------------------------------------------------------

    def _select(self, headers: HeaderMap) -> LocalReply | None:
        """Choose which plugins run on this request; the reply if a failed one must answer."""
        client_ip = self.info.client[0]
        forced = canary_forced(headers)
        for slot in self.m.applied:  # the plugins whose match selects this listener
            mode = slot.mode
            if mode == "disabled":
                self.records.append(HopRecord(slot.name, mode, False, "disabled"))
                continue
            if not canary_sampled(slot.canary_percent, slot.canary_key, headers, client_ip, forced):
                slot.count("canary_skipped")
                self.records.append(HopRecord(slot.name, mode, False, "not sampled by canary"))
                continue
            enforce = mode != "log-only"
            inst = slot.instance_for_request()
            if inst is None:
                # Failed (or still starting) plugin: its failure policy decides.
                policy = slot.effective_policy()
                if not enforce or policy == "FAIL_OPEN":
                    slot.count("fail_open_skipped")
                    self.records.append(
                        HopRecord(slot.name, mode, False, f"failed, {policy}: skipped")
                    )
                    continue
                slot.count("fail_closed_rejected")
                rec = HopRecord(slot.name, mode, False, f"failed, {policy}: request rejected")
                rec.failure = slot.failure_dict()
                self.records.append(rec)
                return self.m.failure_reply(slot)
            hop = _Hop(self, slot, inst, enforce)
            inst.acquire()
            slot.count("invocations")
            self.hops.append(hop)
            self.records.append(hop.rec)
        return None

    def _stream_info(self) -> StreamInfo:
        """The stream's attributes for proxy_get_property, made once, on first use."""
        if self.stream_info is None:
            i = self.info
            self.stream_info = StreamInfo(
                source_address=f"{i.client[0]}:{i.client[1]}",
                destination_address=f"{i.local[0]}:{i.local[1]}",
                connection_id=i.connection_id,
                request_id=i.request_id,
                start_time_ns=i.start_wall_ns,
                # Envoy's TrafficDirection: INBOUND 1 (SERVER), OUTBOUND 2 (CLIENT)
                listener_direction=2 if self.m.listener and self.m.listener[1] == "CLIENT" else 1,
                refresh=self._refresh_stream_info,
            )
        return self.stream_info

    def _refresh_stream_info(self, si: StreamInfo) -> None:
        """Copy in what the data path learnt since (called before an attribute is read):
        bytes counted, the cluster and upstream, the response's code and details."""
        i = self.info
        # the route selected when the headers arrived, or again after clear_route_cache
        si.cluster_name = i.cluster
        si.route_name = i.route_name if i.cluster else None  # None: no route matched
        si.request_size = i.request_bytes
        si.response_size = i.response_bytes
        si.upstream_address = i.upstream_address
        if i.upstream_address:
            si.attempt_count = 1
        si.response_code = i.status
        details = i.response_code_details
        if not details and self.resp_headers is not None:
            details = "via_upstream"
        si.response_code_details = details
        si.response_flags = response_flags(i.outcome, details)
        if i.upstream_ms:
            si.backend_latency_ns = int(i.upstream_ms * 1e6)
        if self.completed:
            si.request_complete = True
            si.duration_ns = max(0, time.monotonic_ns() - int(i.start * 1e9))

    def _take_route_cache_clears(self) -> None:
        """A clear_route_cache from an enforcing plugin empties the stream's route cache,
        so the data path selects the route again from the headers as they are now
        (Envoy: only then, not on every header change). Log-only: counted, not applied."""
        for hop in self.hops:
            ctx = hop.ctx
            if ctx is None or not ctx.route_cache_dirty:
                continue
            ctx.route_cache_dirty = False
            if hop.enforce:
                self.info.route_name = None
            else:
                self._would(hop, "clear_route_cache")

    def _ctx(self, hop: _Hop) -> HttpContext:
        if hop.ctx is None:
            ctx = hop.inst.vm.new_http_context(hop.inst.root, None, hop)
            ctx.info_factory = self._stream_info
            # Enforcing plugins share the stream's filter state; a log-only plugin reads
            # it but writes to its own layer, so later plugins never see its values.
            ctx.filter_state = self.filter_state if hop.enforce else ChainMap({}, self.filter_state)
            hop.ctx = ctx
        return hop.ctx

    # -- the filter's events ----------------------------------------------------------------

    def request_headers(self, headers: HeaderMap, end_stream: bool) -> Verdict:
        self.headers = headers
        self._req.eos = end_stream
        early = self._select(headers)
        if headers.get(CANARY_HEADER) is not None:
            # read by _select; a control header for this proxy, not for plugins or upstream
            headers.remove(CANARY_HEADER)
        if self._route is not None:
            self._route(headers, self.info)
        if early is not None:
            return self._reply_step(early, len(self.hops))
        if not self.hops:
            return CONTINUE
        if not self.detail:
            # the request as the client sent it, kept always (the lab's crash sessions)
            self.hops[0].rec.request.headers_before = headers.items()
        return self._iterate_headers(REQUEST, 0)

    def request_data(self, data: bytes, end_stream: bool) -> Verdict:
        self._req.eos = end_stream
        return self._iterate_data(REQUEST, 0, data, end_stream)

    def request_trailers(self, trailers: HeaderMap) -> Verdict:
        self.req_trailers = trailers
        self._req.eos = True
        return self._iterate_trailers(REQUEST, 0, b"")

    def response_headers(self, headers: HeaderMap, end_stream: bool) -> Verdict:
        self.resp_headers = headers
        self._resp.eos = end_stream
        if self.reply is not None:
            return CONTINUE  # our own reply, already through the response path
        return self._iterate_headers(RESPONSE, len(self.hops) - 1)

    def response_data(self, data: bytes, end_stream: bool) -> Verdict:
        if self.reply is not None:
            return Continue(data)
        return self._iterate_data(RESPONSE, len(self.hops) - 1, data, end_stream)

    def response_trailers(self, trailers: HeaderMap) -> Verdict:
        if self.reply is not None:
            return CONTINUE
        self.resp_trailers = trailers
        self._resp.eos = True
        return self._iterate_trailers(RESPONSE, len(self.hops) - 1, b"")

    # -- one iteration per event kind, the direction a value ---------------------------------

    def _walk(self, d: Direction) -> _Walk:
        return self._req if d.request else self._resp

    def _trailers(self, d: Direction) -> HeaderMap | None:
        return self.req_trailers if d.request else self.resp_trailers

    def _iterate_headers(self, d: Direction, start: int) -> Verdict:
        """The headers through the plugins from ``start``, in ``d``'s order."""
        headers = self.headers if d.request else self.resp_headers
        assert headers is not None
        eos = self._walk(d).eos
        stage = "request_headers" if d.request else "response_headers"
        detail = self.detail
        for i in range(start, len(self.hops) if d.request else -1, d.step):
            hop = self.hops[i]
            if d.side(hop).done:
                continue
            if self.m.intercept is not None and (held := self.m.intercept.check(self, i, stage)):
                return held
            ctx = self._ctx(hop)
            if detail:
                d.record(hop.rec).headers_before = headers.items()
            target = headers if hop.enforce else headers.copy()
            if d.request:
                action = ctx.on_request_headers(target, eos)
            else:
                action = ctx.on_response_headers(target, eos)
            if detail:
                d.record(hop.rec).headers_after = target.items()
            if not hop.enforce and target != headers:
                self._would(hop, f"mutate_{d.name}_headers")
            verdict = self._after_action(hop, action, d, stage, i)
            if verdict is not None:
                return verdict
        if d.request:
            self._take_route_cache_clears()
        return CONTINUE

    def _iterate_data(
        self, d: Direction, start: int, data: bytes, eos: bool, stop: int | None = None
    ) -> Verdict:
        """A body chunk through the plugins from ``start`` (to ``stop``), in ``d``'s order."""
        if stop is None:
            stop = len(self.hops) if d.request else -1
        stream = d.stream
        stage = "request_data" if d.request else "response_data"
        for i in range(start, stop, d.step):
            hop = self.hops[i]
            side = d.side(hop)
            if side.done or hop.ctx is None:
                continue  # replied, or never saw the headers (it failed open)
            ctx = hop.ctx
            if (
                d.request
                and eos
                and self.m.intercept is not None
                and (held := self.m.intercept.check(self, i, "request_body", data))
            ):
                return held
            if not (hop.inst.has_request_body if d.request else hop.inst.has_response_body):
                continue  # no proxy_on_*_body: the data passes untouched
            side.body_in(data)
            buf = ctx.request if d.request else ctx.response
            if hop.enforce:
                was_buffering = buf.buffering
                if d.request:
                    action = ctx.on_request_body(data, eos)
                else:
                    action = ctx.on_response_body(data, eos)
                # Envoy answers 413 (500 for a response) as soon as the buffered body grows
                # past the limit, whichever chunk does it: the last one too (end of stream),
                # and whether the plugin then continues or keeps the stream stopped.
                if (
                    action == Action.PAUSE or (action == Action.CONTINUE and was_buffering)
                ) and self.m.over_buffer_limit(len(buf.body)):
                    return self._buffer_overflow(hop, d)
                if action == Action.CONTINUE:
                    data = ctx.take_body(stream)
                    side.body_out(data)
                    if eos and buf.trailers is not None and self._trailers(d) is None:
                        # trailers added from the last data (Envoy's addDecodedTrailers): the
                        # plugins after it get the data without end of stream, then them
                        if d.request:
                            self.req_trailers = buf.trailers
                        else:
                            self.resp_trailers = buf.trailers
                        return self._iterate_trailers(d, i + d.step, data)
                    continue
                if action == Action.PAUSE and not eos:
                    return HOLD  # buffering: called again with the next chunk
            else:
                side.shadow_in += data
                if d.request:
                    action = ctx.on_request_body(bytes(data), eos)
                else:
                    action = ctx.on_response_body(bytes(data), eos)
                if action == Action.CONTINUE:
                    released = ctx.take_body(stream)
                    side.body_out(released)
                    if released != bytes(side.shadow_in):
                        self._would(hop, f"mutate_{d.name}_body")
                    side.shadow_in.clear()
                    continue
                if action == Action.PAUSE and not eos:
                    if self.m.over_buffer_limit(len(buf.body)):
                        ctx.take_body(stream)
                        side.shadow_in.clear()
                    continue  # log-only never holds the real stream
            verdict = self._after_action(hop, action, d, stage, i, data)
            if verdict is not None:
                return verdict
        return Continue(data)

    def _iterate_trailers(self, d: Direction, start: int, data: bytes) -> Verdict:
        """Trailers end the stream (the last data had end_stream false), as in Envoy: each
        plugin first gets the body bytes the plugins before it released at their trailers
        (a plugin that buffered releases its body when its trailers callback continues),
        then its own trailers callback, which may change them."""
        trailers = self._trailers(d)
        assert trailers is not None
        stream = d.stream
        stage = "request_trailers" if d.request else "response_trailers"
        for i in range(start, len(self.hops) if d.request else -1, d.step):
            hop = self.hops[i]
            side = d.side(hop)
            if side.done or hop.ctx is None:
                continue
            if data:
                step = self._iterate_data(d, i, data, False, stop=i + d.step)
                match step:
                    case Continue():
                        data = step.data
                    case Hold():
                        data = b""  # this plugin buffers it; its trailers callback releases it
                    case _:
                        return step
            ctx = hop.ctx
            target = trailers if hop.enforce else trailers.copy()
            if d.request:
                action = ctx.on_request_trailers(target)
            else:
                action = ctx.on_response_trailers(target)
            if hop.enforce:
                if action == Action.CONTINUE:
                    released = ctx.take_body(stream)
                    if released:
                        side.body_out(released)
                    data += released
                    continue
            else:
                ctx.take_body(stream)  # a log-only plugin's buffer never reaches the wire
                if target != trailers:
                    self._would(hop, f"mutate_{d.name}_trailers")
                if action == Action.CONTINUE:
                    continue
            verdict = self._after_action(hop, action, d, stage, i, data)
            if verdict is not None:
                return verdict
        return Continue(data, trailers)

    # -- what an action means ---------------------------------------------------------------

    def _after_action(
        self, hop: _Hop, action: Action, d: Direction, stage: str, index: int, data: bytes = b""
    ) -> Verdict | None:
        """None to go on to the next plugin, or the verdict that stops the iteration."""
        if action == Action.CONTINUE:
            return None
        ctx = hop.ctx
        assert ctx is not None
        slot = hop.slot
        if action == Action.FAILED:
            self._plugin_failed(hop)
            hop.req.done = hop.resp.done = True
            if not hop.enforce or slot.effective_policy() == "FAIL_OPEN":
                return None  # the stream goes on as if the plugin were absent
            return self._reply_step(self.m.failure_reply(slot), index, request=d.request)
        if action == Action.LOCAL_REPLY:
            lr = ctx.local_response
            assert lr is not None
            hop.rec.local_reply = lr.to_dict()
            if not hop.enforce:
                self._would(hop, f"reply_{lr.status}")
                hop.req.done = True
                return None
            hop.req.done = True
            slot.count(f"local_reply_{lr.status}")
            return self._reply_step(_reply_of(lr), index, request=d.request)
        if action == Action.CLOSE:
            if not hop.enforce:
                self._would(hop, "reset")
                return None
            return RESET
        # PAUSE: wait for proxy_continue_stream (or a reply/close from a callout)
        if not hop.enforce:
            self._would(hop, "pause")
            return None
        slot.count("paused")
        return self._wait(hop, d, stage, index, data)

    def _plugin_failed(self, hop: _Hop) -> None:
        """The plugin's VM is failed (a callback just trapped, or it had failed before):
        put the failure on the hop's record, then let the manager apply the policy."""
        inst = hop.inst
        vm = inst.vm
        f = vm.failure
        ctx = hop.ctx
        own = f is not None and ctx is not None and f.context_id == ctx.id
        if own and f is not None and hop.trapped is None:
            # the trapping call never returns a result, so the VM did not list it
            hop.trapped = (f.callback, TRAPPED, vm.last_call_ns / 1000.0)
        self.m.plugin_failed(inst, self)
        if f is None:  # no trap (a closed instance): whatever the slot knows
            hop.rec.failure = hop.slot.failure_dict()
            return
        d: dict[str, Any] = f.to_dict()
        if own:
            d["request"] = request_facts(self)
        elif hop.slot.failure is f and hop.slot.failure_request is not None:
            d["request"] = hop.slot.failure_request  # another request made it fail
        hop.rec.failure = d

    def _would(self, hop: _Hop, what: str) -> None:
        if not hop.rec.would:  # the graphs' "would act" counts requests, not intents
            hop.slot.count("log_only.requests_would_act")
        hop.rec.would.append(what)
        hop.slot.count(f"log_only.would_{what}")

    def _wait(self, hop: _Hop, d: Direction, stage: str, index: int, data: bytes) -> Verdict:
        fut: asyncio.Future[Verdict] = self.loop.create_future()
        self._waiting = fut
        self._waiting_hop = hop
        self._waiting_stage = stage
        self._waiting_dir = d
        hop.wait_started = time.monotonic()
        # A plugin that never resumes must not hold the request forever (Envoy's
        # stream timeouts); the request gets a 504 naming it.
        self._wait_timer = self.loop.call_later(
            self.m.pause_timeout_s, self._pause_expired, fut, hop
        )
        walk = self._walk(d)
        walk.index = index
        if not stage.endswith("headers"):
            walk.data = data
        self.m.run_paused(self)
        return Wait(fut)

    def _pause_expired(self, fut: asyncio.Future[Verdict], hop: _Hop) -> None:
        if self._waiting is not fut or fut.done():
            return
        hop.slot.count("pause_timeout")
        body = (
            f"wasm plugin {hop.slot.name} kept the stream paused for "
            f"{self.m.pause_timeout_s:g}s without resuming it\n"
        ).encode()
        reply = LocalReply(504, body, details="wasm_pause_timeout")
        d = self._waiting_dir
        i = self._walk(d).index
        self._settle_wait(lambda: self._reply_step(reply, i, request=d.request))

    def _settle_wait(self, compute: Any) -> None:
        timer = self._wait_timer
        if timer is not None:
            timer.cancel()
            self._wait_timer = None
        fut, self._waiting = self._waiting, None
        hop, self._waiting_hop = self._waiting_hop, None
        if fut is None:
            return  # already settled (a resume and a failure both scheduled one)
        if hop is not None:
            hop.rec.paused_ms += (time.monotonic() - hop.wait_started) * 1000
        self.m.run_unpaused(self)
        if fut.done():
            return
        try:
            step = compute()
        except Exception as e:  # never strand a request on a host bug
            self.m.log_error(f"chain error while resuming: {type(e).__name__}: {e}")
            step = Reply(
                LocalReply(500, b"wasmdesk: internal error\n", details="wasmdesk_internal_error")
            )
        fut.set_result(step)

    def _resumed(self, hop: _Hop, stream: StreamType) -> None:
        """A plugin continued its paused stream (after the callback that did it)."""
        if hop is not self._waiting_hop or self.completed:
            return
        stage = self._waiting_stage
        d = self._waiting_dir
        walk = self._walk(d)
        i = walk.index
        ctx = hop.ctx
        assert ctx is not None

        def compute() -> Verdict:
            if stage.endswith("headers"):
                if d.request and self.detail:
                    hop.rec.request.headers_after = self.headers.items() if self.headers else None
                return self._iterate_headers(d, i + d.step)
            if stage.endswith("trailers"):
                data = walk.data + ctx.take_body(d.stream)
                return self._iterate_trailers(d, i + d.step, data)
            data = ctx.take_body(d.stream)
            d.side(hop).body_out(data)
            return self._iterate_data(d, i + d.step, data, walk.eos)

        # Resolve on the next loop turn: never from inside the VM's delivery.
        self.loop.call_soon(self._settle_wait, compute)

    def paused_on_vm(self, vm: PluginVM) -> bool:
        """Whether a plugin of ``vm`` holds this stream paused."""
        hop = self._waiting_hop
        return hop is not None and hop.inst.vm is vm

    def paused_vm_failed(self) -> None:
        """The VM holding this stream paused failed outside the stream's own callbacks
        (a tick, a callout response, a queue delivery): apply the plugin's failure policy
        to the stream now instead of leaving it to the pause timeout. FAIL_CLOSE: the
        failure reply; FAIL_OPEN: the stream continues past the failed plugin."""
        hop, fut = self._waiting_hop, self._waiting
        if hop is None or fut is None or fut.done() or self.completed:
            return
        self._plugin_failed(hop)
        hop.req.done = hop.resp.done = True
        slot = hop.slot
        stage = self._waiting_stage
        d = self._waiting_dir
        walk = self._walk(d)
        i = walk.index
        ctx = hop.ctx
        assert ctx is not None
        if hop.enforce and slot.effective_policy() != "FAIL_OPEN":
            reply = self.m.failure_reply(slot)

            def compute() -> Verdict:
                return self._reply_step(reply, i, request=d.request)
        else:

            def compute() -> Verdict:
                # what the plugin held so far goes on in the direction it was paused in,
                # as if the plugin were absent from here on
                if stage.endswith("headers"):
                    return self._iterate_headers(d, i + d.step)
                if stage.endswith("trailers"):
                    return self._iterate_trailers(
                        d, i + d.step, walk.data + ctx.take_body(d.stream)
                    )
                return self._iterate_data(d, i + d.step, ctx.take_body(d.stream), walk.eos)

        def settle() -> None:
            if self._waiting is fut:  # not settled by a resume in the meantime
                self._settle_wait(compute)

        self.loop.call_soon(settle)

    def _late_local_reply(self, hop: _Hop) -> None:
        """A plugin sent a local reply from a root callback (e.g. a callout response)."""
        ctx = hop.ctx
        if ctx is None or ctx.local_response is None or self.completed:
            return
        lr = ctx.local_response
        hop.rec.local_reply = lr.to_dict()
        if not hop.enforce:
            self._would(hop, f"reply_{lr.status}")
            return
        if hop is not self._waiting_hop:
            return
        d = self._waiting_dir
        i = self._walk(d).index
        hop.req.done = True
        hop.slot.count(f"local_reply_{lr.status}")
        self.loop.call_soon(
            self._settle_wait, lambda: self._reply_step(_reply_of(lr), i, request=d.request)
        )

    def _late_close(self, hop: _Hop) -> None:
        if hop is self._waiting_hop and not self.completed:
            self.loop.call_soon(self._settle_wait, lambda: RESET)

    def _buffer_overflow(self, hop: _Hop, d: Direction) -> Verdict:
        self.m.count("buffer_overflow")
        o = d.overflow
        reply = LocalReply(o.status, o.body, details=o.details)
        idx = self.hops.index(hop)
        return self._reply_step(reply, idx, request=d.request)

    # -- local replies ----------------------------------------------------------------------

    def _reply_step(self, reply: LocalReply, index: int, request: bool = True) -> Verdict:
        """Run a local reply through the response path of the plugins that saw the
        request (sender included, as Envoy and Kong do), then answer with it."""
        self.reply = reply
        # Envoy sets the details before the reply's headers go through the filters
        self.info.response_code_details = reply.details
        headers = HeaderMap([(b":status", str(reply.status).encode())])
        if reply.body:
            headers.add(b"content-length", str(len(reply.body)).encode())
            if not any(k.lower() == b"content-type" for k, _ in reply.headers):
                headers.add(b"content-type", b"text/plain")
        else:
            headers.add(b"content-length", b"0")
        for k, v in reply.headers:
            headers.add(k.lower(), v)
        body = reply.body
        last = min(index, len(self.hops) - 1) if request else index - 1
        for i in range(last, -1, -1):
            hop = self.hops[i]
            if hop.resp.done or hop.ctx is None:
                continue
            ctx = hop.ctx
            target = headers if hop.enforce else headers.copy()
            if self.detail:
                hop.rec.response.headers_before = headers.items()
            action = ctx.on_response_headers(target, not body)
            if self.detail:
                hop.rec.response.headers_after = target.items()
            if action == Action.FAILED:
                self._plugin_failed(hop)
                hop.resp.done = True
                continue
            if body and action == Action.CONTINUE:
                tap = hop.inst.has_response_body
                if tap:
                    hop.resp.body_in(body)
                b_action = ctx.on_response_body(body, True)
                if b_action == Action.CONTINUE:
                    out = ctx.take_body(StreamType.HTTP_RESPONSE)
                    if tap:
                        hop.resp.body_out(out)
                    if hop.enforce:
                        body = out
                elif b_action == Action.FAILED:
                    self._plugin_failed(hop)
            hop.resp.done = True
        status = headers.get(b":status")
        final = LocalReply(
            int(status) if status and status.isdigit() else reply.status,
            body,
            [(k, v) for k, v in headers if not k.startswith(b":")],
            reply.details,
        )
        self.info.response_code_details = reply.details
        return Reply(final)

    # -- end ------------------------------------------------------------------------------

    def complete(self) -> None:
        if self.completed:
            return
        self.completed = True
        if self._waiting is not None:
            # counted as paused until now, whether or not the exchange gave up on it
            if not self._waiting.done():
                self._waiting.cancel()
            self._waiting = None
            self.m.run_unpaused(self)
        if self._wait_timer is not None:
            self._wait_timer.cancel()
            self._wait_timer = None
        for hop in self.hops:
            ctx = hop.ctx
            if ctx is not None:
                ctx.finish()  # done, log, delete (skipped on a failed VM)
                f = hop.inst.vm.failure
                if f is not None and f.context_id == ctx.id and hop.rec.failure is None:
                    self._plugin_failed(hop)  # it trapped in on_done, on_log or on_delete
                if self.detail or hop.rec.failure is not None:
                    callbacks: list[tuple[str, int | str | None, float]] = list(ctx.callbacks)
                    if hop.trapped is not None:
                        callbacks.append(hop.trapped)
                    hop.rec.callbacks = callbacks
                    hop.rec.callouts = [
                        {
                            "cluster": c.cluster,
                            "status": c.response_status,
                            "failure": c.failure,
                            "elapsed_ms": round(c.elapsed_ms, 2),
                        }
                        for c in ctx.callouts or ()
                    ]  # this stream's own (the newest MAX_CALLOUT_RECORDS), dropped with it
                self.m.record_callback_time(hop.slot, ctx)
                if self.m.recorder is not None:  # the debugging lab's recorder
                    self.m.recorder.hop_finished(self, hop.slot.name, hop.inst.vm, ctx)
            hop.record_bodies()
            hop.inst.release()
            # Break the run <-> hop <-> context cycles now, so a finished request is
            # freed by reference counting instead of waiting for the cyclic GC.
            if ctx is not None:
                ctx.listener = None
                ctx.info_factory = None
            hop.ctx = None
            hop.run = None  # type: ignore[assignment]
        self.m.request_finished(self)
        self.hops = []


# Envoy's response flag bits (StreamInfo::CoreResponseFlag, the legacy bitmask that
# response.flags gives).
UPSTREAM_REQUEST_TIMEOUT = 0x4  # UT
LOCAL_RESET = 0x8  # LR
UPSTREAM_CONNECTION_FAILURE = 0x20  # UF
UPSTREAM_CONNECTION_TERMINATION = 0x40  # UC
NO_ROUTE_FOUND = 0x100  # NR
DOWNSTREAM_CONNECTION_TERMINATION = 0x4000  # DC
DOWNSTREAM_PROTOCOL_ERROR = 0x40000  # DPE
UPSTREAM_PROTOCOL_ERROR = 0x800000  # UPE


def response_flags(outcome: str, details: str) -> int:
    """``response.flags`` for what happened to a request (its outcome and code details)."""
    if not details and not outcome:
        return 0
    if details.startswith("upstream_reset_before_response_started{connection_failure"):
        return UPSTREAM_CONNECTION_FAILURE
    if details.startswith("upstream_reset_before_response_started{connection_termination"):
        return UPSTREAM_CONNECTION_TERMINATION
    if details == "upstream_response_timeout":
        return UPSTREAM_REQUEST_TIMEOUT
    if details == "route_not_found":
        return NO_ROUTE_FOUND
    if details == "upstream_protocol_error":
        return UPSTREAM_PROTOCOL_ERROR
    if details.startswith("http1.codec_error"):
        return DOWNSTREAM_PROTOCOL_ERROR
    if outcome == "client_disconnect":
        return DOWNSTREAM_CONNECTION_TERMINATION
    if outcome == "reset":
        return LOCAL_RESET
    return 0


def request_facts(run: ChainRun) -> dict[str, Any]:
    """The request a plugin failed on, as failure records name it: method, path and
    authority spelled out, the request id, the client and every header."""
    h = run.headers
    info = run.info

    def value(name: bytes) -> str:
        v = h.get(name) if h is not None else None
        return v.decode("latin-1") if v is not None else ""

    return {
        "request_id": info.request_id,
        "method": value(b":method"),
        "path": value(b":path"),
        "authority": value(b":authority"),
        "client": f"{info.client[0]}:{info.client[1]}",
        "headers": [[k.decode("latin-1"), v.decode("utf-8", "replace")] for k, v in h]
        if h is not None
        else [],
    }


def _reply_of(lr: LocalResponse) -> LocalReply:
    headers = list(lr.headers)
    if lr.grpc_status is not None:
        headers.append((b"grpc-status", str(lr.grpc_status).encode()))
        if lr.body:
            headers.append((b"grpc-message", lr.body))
    return LocalReply(lr.status, lr.body, headers, lr.details)
