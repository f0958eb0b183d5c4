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

Every plugin hop is recorded for the request inspector (local replies, what a
log-only plugin would have changed, the failure when the plugin trapped on this
request; while someone watches the inspector also headers and body before and after,
callouts and time per callback, see ``host.proxy.inspector``). A body is recorded whole
as the plugin saw it (all the chunks it was given, all it released), up to
``HopRecord.BODY_CAP`` bytes with the full size beside it. No sockets here: the
verdicts are ``stream.Verdict`` values.

The chain's jobs live in modules of their own: ``canary`` (the canary decision),
``hops`` (the per-plugin hop, its records and the per-request mode/policy selection),
``pause`` (a plugin holding the stream paused, and every way that ends),
``stream_attrs`` (the stream's Proxy-Wasm attributes); this module is the iteration
per event kind with the direction as a value, and what each plugin action means.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import ChainMap
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from host.headers import HeaderMap
from host.proxy.canary import CANARY_HEADER, NoPluginsFilter, canary_forced, canary_sampled
from host.proxy.hops import (
    REQUEST,
    RESPONSE,
    TRAPPED,
    Direction,
    Hop,
    Walk,
    reply_headers,
    reply_of,
    select_hops,
)
from host.proxy.pause import Pause
from host.proxy.records import HopRecord, HopSideRecord, RequestRecord
from host.proxy.stages import Stage
from host.proxy.stream import (
    CONTINUE,
    HOLD,
    RESET,
    Continue,
    ExchangeInfo,
    Hold,
    LocalReply,
    Reply,
    StreamFilter,
    Verdict,
)
from host.proxy.stream_attrs import new_stream_info, refresh_stream_info
from host.wasm.context import Action, HttpContext, StreamInfo
from host.wasm.types import StreamType

if TYPE_CHECKING:
    from host.proxy.slots import PluginInstance, PluginSlot
    from host.wasm.vm import PluginVM

__all__ = [
    "CANARY_HEADER",
    "REQUEST",
    "RESPONSE",
    "ChainHost",
    "ChainRun",
    "HopRecord",
    "HopSideRecord",
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


_run_seq = itertools.count(1)  # ChainRun.seq: one sequence per process


class ChainRun(StreamFilter):
    """The plugin chain for one request (a ``StreamFilter`` for ``http1.Exchange``)."""

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
        self.seq = next(_run_seq)
        self.hops: list[Hop] = []
        self.records: list[HopRecord] = []
        self.headers: HeaderMap | None = None
        self.resp_headers: HeaderMap | None = None
        self.req_trailers: HeaderMap | None = None
        self.resp_trailers: HeaderMap | None = None
        # where a pending iteration stands
        self._req = Walk()
        self._resp = Walk()
        self.pause: Pause | None = None  # made when a plugin first pauses the stream
        self._req_body = self._resp_body = False  # set when the plugins are chosen
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
        rejecting = select_hops(self, self.m.applied, headers, self.info.client[0])
        return self.m.failure_reply(rejecting) if rejecting is not None else None

    def _stream_info(self) -> StreamInfo:
        """The stream's attributes for proxy_get_property, made once, on first use."""
        if self.stream_info is None:
            listener = self.m.listener
            self.stream_info = new_stream_info(
                self.info, listener is not None and listener[1] == "CLIENT", self._refresh_info
            )
        return self.stream_info

    def _refresh_info(self, si: StreamInfo) -> None:
        refresh_stream_info(si, self.info, self.resp_headers is not None, self.completed)

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

    def _ctx(self, hop: Hop) -> HttpContext:
        if hop.ctx is None:
            ctx = hop.inst.vm.new_http_context(hop.inst.root, None, hop)
            ctx.info_factory = self._stream_info
            ctx.known_request_id = self.info.request_id  # log lines: no StreamInfo needed
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
        # whether any plugin of this request has a body callback, per direction: without
        # one, the body passes untouched and its chunks skip the iteration
        hops = self.hops
        self._req_body = any(h.inst.has_request_body for h in hops)
        self._resp_body = any(h.inst.has_response_body for h in hops)
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
        if not self._req_body and self.m.intercept is None:
            return Continue(data)
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
        if self.reply is not None or not self._resp_body:
            return Continue(data)
        return self._iterate_data(RESPONSE, len(self.hops) - 1, data, end_stream)

    def response_trailers(self, trailers: HeaderMap) -> Verdict:
        if self.reply is not None:
            return CONTINUE
        self.resp_trailers = trailers
        self._resp.eos = True
        return self._iterate_trailers(RESPONSE, len(self.hops) - 1, b"")

    # -- one iteration per event kind, the direction a value ---------------------------------

    def _walk(self, d: Direction) -> Walk:
        return self._req if d.request else self._resp

    def _trailers(self, d: Direction) -> HeaderMap | None:
        return self.req_trailers if d.request else self.resp_trailers

    def _iterate_headers(self, d: Direction, start: int) -> Verdict:
        """The headers through the plugins from ``start``, in ``d``'s order."""
        headers = self.headers if d.request else self.resp_headers
        assert headers is not None
        eos = self._walk(d).eos
        stage = Stage.REQUEST_HEADERS if d.request else Stage.RESPONSE_HEADERS
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
        stage = Stage.REQUEST_DATA if d.request else Stage.RESPONSE_DATA
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
        stage = Stage.REQUEST_TRAILERS if d.request else Stage.RESPONSE_TRAILERS
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
            if self.detail:
                d.record(hop.rec).trailers_before = trailers.items()
            if d.request:
                action = ctx.on_request_trailers(target)
            else:
                action = ctx.on_response_trailers(target)
            if self.detail:
                d.record(hop.rec).trailers_after = target.items()
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
        self, hop: Hop, action: Action, d: Direction, stage: Stage, index: int, data: bytes = b""
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
            return self._reply_step(reply_of(lr), index, request=d.request)
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

    def _plugin_failed(self, hop: Hop) -> None:
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

    def _would(self, hop: Hop, what: str) -> None:
        if not hop.rec.would:  # the graphs' "would act" counts requests, not intents
            hop.slot.count("log_only.requests_would_act")
        hop.rec.would.append(what)
        hop.slot.count(f"log_only.would_{what}")

    # -- pauses (host.proxy.pause) -----------------------------------------------------------

    def _pause(self) -> Pause:
        if self.pause is None:
            self.pause = Pause(self, self.m)
        return self.pause

    def _wait(self, hop: Hop, d: Direction, stage: Stage, index: int, data: bytes) -> Verdict:
        return self._pause().wait(hop, d, stage, index, data)

    def paused_on_vm(self, vm: PluginVM) -> bool:
        """Whether a plugin of ``vm`` holds this stream paused."""
        return self.pause is not None and self.pause.on_vm(vm)

    def paused_vm_failed(self) -> None:
        """The VM holding this stream paused failed outside the stream's callbacks
        (``Pause.vm_failed``: the failure policy applies now)."""
        if self.pause is not None:
            self.pause.vm_failed()

    # StreamListener events of a hop (things a plugin did from a root callback)
    def hop_resumed(self, hop: Hop, stream: StreamType) -> None:
        if self.pause is not None:
            self.pause.resumed(hop, stream)

    def hop_local_reply(self, hop: Hop) -> None:
        self._pause().local_reply(hop)

    def hop_closed(self, hop: Hop) -> None:
        if self.pause is not None:
            self.pause.closed(hop)

    def _buffer_overflow(self, hop: Hop, d: Direction) -> Verdict:
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
        headers = reply_headers(reply)
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
        if self.pause is not None:
            self.pause.end()
        for hop in self.hops:
            ctx = hop.ctx
            if ctx is not None:
                ctx.finish()  # done, log, delete (skipped on a failed VM)
                f = hop.inst.vm.failure
                if f is not None and f.context_id == ctx.id and hop.rec.failure is None:
                    self._plugin_failed(hop)  # it trapped in on_done, on_log or on_delete
                if self.detail or hop.rec.failure is not None:
                    hop.record_calls(ctx)
                self.m.record_callback_time(hop.slot, ctx)
                if self.m.recorder is not None:  # the debugging lab's recorder
                    self.m.recorder.hop_finished(self, hop.slot.name, hop.inst.vm, ctx)
            hop.record_bodies()
            hop.inst.release()
            hop.detach()
        self.m.request_finished(self)
        self.hops = []


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
