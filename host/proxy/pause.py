"""A plugin holding one request's stream paused: the wait, and every way it ends.

``Pause`` is made when a plugin of a request answers StopIteration (and the stream
must wait for ``proxy_continue_stream``). It resolves the data path's ``Wait`` verdict
when the plugin resumes, sends a local reply or closes the stream from a root callback
(a callout response, a tick), when its VM fails meanwhile (the failure policy:
FAIL_CLOSE answers, FAIL_OPEN goes on past the plugin in the paused direction), or
when the pause timeout expires (504 naming the plugin). Resolutions run on the next
loop turn, never from inside the VM's delivery. The request (``chain.ChainRun``) is
reached through ``PauseOwner``; no I/O here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from host.headers import HeaderMap
from host.proxy.hops import Direction, Hop, Walk, reply_of
from host.proxy.stages import Stage
from host.proxy.stream import RESET, LocalReply, Reply, Verdict, Wait
from host.wasm.types import StreamType

if TYPE_CHECKING:
    from host.proxy.slots import PluginSlot
    from host.wasm.vm import PluginVM

__all__ = ["Pause", "PauseHost", "PauseOwner"]


class PauseHost(Protocol):
    """What a pause uses of the plugin manager (``plugins.PluginManager``)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def pause_timeout_s(self) -> float: ...

    def failure_reply(self, slot: PluginSlot) -> LocalReply: ...

    def log_error(self, message: str) -> None: ...

    def run_paused(self, run: Any) -> None: ...

    def run_unpaused(self, run: Any) -> None: ...


class PauseOwner(Protocol):
    """What a pause uses of the request it holds (``chain.ChainRun``)."""

    @property
    def completed(self) -> bool: ...

    @property
    def detail(self) -> bool: ...

    @property
    def headers(self) -> HeaderMap | None: ...

    def _walk(self, d: Direction) -> Walk: ...

    def _iterate_headers(self, d: Direction, start: int) -> Verdict: ...

    def _iterate_data(
        self, d: Direction, start: int, data: bytes, eos: bool, stop: int | None = None
    ) -> Verdict: ...

    def _iterate_trailers(self, d: Direction, start: int, data: bytes) -> Verdict: ...

    def _reply_step(self, reply: LocalReply, index: int, request: bool = True) -> Verdict: ...

    def _plugin_failed(self, hop: Hop) -> None: ...

    def _would(self, hop: Hop, what: str) -> None: ...


class Pause:
    """One pause of one request's stream (at most one at a time: the walk stops there)."""

    __slots__ = ("direction", "future", "hop", "host", "run", "stage", "timer")

    def __init__(self, run: PauseOwner, host: PauseHost) -> None:
        self.run = run
        self.host = host
        self.future: asyncio.Future[Verdict] | None = None
        self.hop: Hop | None = None
        self.stage = Stage.REQUEST_HEADERS  # read only while a hop waits
        self.direction: Direction | None = None
        self.timer: asyncio.TimerHandle | None = None

    def wait(self, hop: Hop, d: Direction, stage: Stage, index: int, data: bytes) -> Verdict:
        """``hop``'s plugin paused the walk in ``d`` at ``index``: the verdict to wait on."""
        host = self.host
        fut: asyncio.Future[Verdict] = host.loop.create_future()
        self.future = fut
        self.hop = hop
        self.stage = stage
        self.direction = d
        hop.wait_started = time.monotonic()
        # A plugin that never resumes must not hold the request forever (Envoy's
        # stream timeouts); the request gets a 504 naming it.
        self.timer = host.loop.call_later(host.pause_timeout_s, self._expired, fut, hop)
        walk = self.run._walk(d)
        walk.index = index
        if not stage.headers:
            walk.data = data
        host.run_paused(self.run)
        return Wait(fut)

    def _where(self) -> tuple[Direction, Walk]:
        d = self.direction
        assert d is not None
        return d, self.run._walk(d)

    def _expired(self, fut: asyncio.Future[Verdict], hop: Hop) -> None:
        if self.future is not fut or fut.done():
            return
        hop.slot.count("pause_timeout")
        body = (
            f"wasm plugin {hop.slot.name} kept the stream paused for "
            f"{self.host.pause_timeout_s:g}s without resuming it\n"
        ).encode()
        reply = LocalReply(504, body, details="wasm_pause_timeout")
        d, walk = self._where()
        i = walk.index
        self.settle(lambda: self.run._reply_step(reply, i, request=d.request))

    def settle(self, compute: Callable[[], Verdict]) -> None:
        """End the pause with the verdict ``compute`` gives (once: a later call is a no-op)."""
        self.cancel_timer()
        fut, self.future = self.future, None
        hop, self.hop = self.hop, None
        if fut is None:
            return  # already settled (a resume and a failure both scheduled one)
        if hop is not None:
            hop.rec.paused_ms += (time.monotonic() - hop.wait_started) * 1000
        self.host.run_unpaused(self.run)
        if fut.done():
            return
        try:
            step = compute()
        except Exception as e:  # never strand a request on a host bug
            self.host.log_error(f"chain error while resuming: {type(e).__name__}: {e}")
            step = Reply(
                LocalReply(500, b"wasmdesk: internal error\n", details="wasmdesk_internal_error")
            )
        fut.set_result(step)

    def cancel_timer(self) -> None:
        timer = self.timer
        if timer is not None:
            timer.cancel()
            self.timer = None

    def end(self) -> None:
        """The request finished: counted as paused until now, whether or not the data
        path gave up on it."""
        if self.future is not None:
            if not self.future.done():
                self.future.cancel()
            self.future = None
            self.host.run_unpaused(self.run)
        self.cancel_timer()

    def resumed(self, hop: Hop, stream: StreamType) -> None:
        """A plugin continued its paused stream (after the callback that did it)."""
        run = self.run
        if hop is not self.hop or run.completed:
            return
        stage = self.stage
        d, walk = self._where()
        i = walk.index
        ctx = hop.ctx
        assert ctx is not None

        def compute() -> Verdict:
            if stage.headers:
                if d.request and run.detail:
                    h = run.headers
                    hop.rec.request.headers_after = h.items() if h else None
                return run._iterate_headers(d, i + d.step)
            if stage.trailers:
                data = walk.data + ctx.take_body(d.stream)
                return run._iterate_trailers(d, i + d.step, data)
            data = ctx.take_body(d.stream)
            d.side(hop).body_out(data)
            return run._iterate_data(d, i + d.step, data, walk.eos)

        # Resolve on the next loop turn: never from inside the VM's delivery.
        self.host.loop.call_soon(self.settle, compute)

    def on_vm(self, vm: PluginVM) -> bool:
        """Whether a plugin of ``vm`` holds the stream paused."""
        hop = self.hop
        return hop is not None and hop.inst.vm is vm

    def vm_failed(self) -> None:
        """The VM holding the stream paused failed outside the stream's own callbacks
        (a tick, a callout response, a queue delivery): apply the plugin's failure policy
        now instead of leaving it to the pause timeout. FAIL_CLOSE: the failure reply;
        FAIL_OPEN: the stream continues past the failed plugin in the paused direction."""
        run = self.run
        hop, fut = self.hop, self.future
        if hop is None or fut is None or fut.done() or run.completed:
            return
        run._plugin_failed(hop)
        hop.req.done = hop.resp.done = True
        slot = hop.slot
        stage = self.stage
        d, walk = self._where()
        i = walk.index
        ctx = hop.ctx
        assert ctx is not None
        if hop.enforce and slot.effective_policy() != "FAIL_OPEN":
            reply = self.host.failure_reply(slot)

            def compute() -> Verdict:
                return run._reply_step(reply, i, request=d.request)
        else:

            def compute() -> Verdict:
                # what the plugin held so far goes on in the direction it was paused in,
                # as if the plugin were absent from here on
                if stage.headers:
                    return run._iterate_headers(d, i + d.step)
                if stage.trailers:
                    return run._iterate_trailers(d, i + d.step, walk.data + ctx.take_body(d.stream))
                return run._iterate_data(d, i + d.step, ctx.take_body(d.stream), walk.eos)

        def settle() -> None:
            if self.future is fut:  # not settled by a resume in the meantime
                self.settle(compute)

        self.host.loop.call_soon(settle)

    def local_reply(self, hop: Hop) -> None:
        """A plugin sent a local reply from a root callback (e.g. a callout response)."""
        run = self.run
        ctx = hop.ctx
        if ctx is None or ctx.local_response is None or run.completed:
            return
        lr = ctx.local_response
        hop.rec.local_reply = lr.to_dict()
        if not hop.enforce:
            run._would(hop, f"reply_{lr.status}")
            return
        if hop is not self.hop:
            return
        d, walk = self._where()
        i = walk.index
        hop.req.done = True
        hop.slot.count(f"local_reply_{lr.status}")
        self.host.loop.call_soon(
            self.settle, lambda: run._reply_step(reply_of(lr), i, request=d.request)
        )

    def closed(self, hop: Hop) -> None:
        """A plugin closed the stream from a root callback."""
        if hop is self.hop and not self.run.completed:
            self.host.loop.call_soon(self.settle, lambda: RESET)
