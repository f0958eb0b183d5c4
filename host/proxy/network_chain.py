"""One TCP connection through the NETWORK plugins: plugin callbacks in, connection effects out.

``NetworkChain`` is the network filter chain of one downstream connection, as Envoy's
filter manager runs Wasm network filters in front of ``tcp_proxy``:

* ``proxy_on_new_connection`` runs in the chain's order when the client connects; the
  upstream connection is opened once every plugin continued (a plugin that pauses holds
  the connection until it calls ``proxy_continue_stream(DOWNSTREAM)``);
* client data (``DownstreamData``) goes through the plugins in order
  (``proxy_on_downstream_data``), upstream data (``UpstreamData``) in reverse
  (``proxy_on_upstream_data``: Envoy's write filters), each plugin seeing what the one
  before it released; a half-close is ``end_of_stream``, and the upstream's half-close
  also fires ``proxy_on_upstream_connection_close`` with peer Unknown (0), as Envoy does;
* a plugin that pauses keeps the data in its buffer; later data of that direction is
  appended and the plugin is called again with the grown size, until it continues (from
  its callback or later, e.g. from a tick); while a plugin holds more than the buffer
  limit the proxy stops reading that side (back-pressure, as Envoy's read-disable);
* ``proxy_close_stream`` closes the connection (after flushing what was written); the
  end of the connection fires ``proxy_on_downstream_connection_close`` (peer 2 remote: the
  client closed, or both sides finished; 1 local: the proxy closed the client, for a
  plugin, a failure policy, or an upstream that failed or reset), then done, log, delete.

The operator modes apply per connection: canary (random, or keyed by the client address;
a header key has no header here and draws at random), log-only (the plugin runs on copies,
nothing it does is applied, intent is counted as ``log_only.would_*``) and the failure
policy (FAIL_CLOSE and FAIL_RELOAD close the connection, FAIL_OPEN skips the plugin: what
it held goes on). Each hop is recorded for the connection inspector
(``host.proxy.tcp_records``). No sockets here: the connection's I/O is ``ConnectionIO``
(``host.proxy.tcp``).
"""

from __future__ import annotations

import asyncio
import time
from collections import ChainMap
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from host.headers import HeaderMap
from host.proxy.tcp_records import ConnectionHopRecord, ConnectionRecord, DataSideRecord
from host.wasm.context import Action, StreamInfo, StreamListener, TcpContext
from host.wasm.types import StreamType

if TYPE_CHECKING:
    from host.proxy.slots import PluginInstance, PluginSlot
    from host.wasm.vm import PluginVM

__all__ = [
    "PEER_LOCAL",
    "PEER_REMOTE",
    "PEER_UNKNOWN",
    "ConnectionIO",
    "NetworkChain",
    "NetworkHost",
]

# proxy_peer_type_t (ABI doc §4.6)
PEER_UNKNOWN = 0
PEER_LOCAL = 1
PEER_REMOTE = 2

DOWN = StreamType.DOWNSTREAM
UP = StreamType.UPSTREAM
TRAPPED = "trap"
_EMPTY_HEADERS = HeaderMap()


class ConnectionIO(Protocol):
    """What the chain asks of the connection's I/O (``host.proxy.tcp``)."""

    def connect_upstream(self) -> None: ...  # every plugin let the connection through

    def write_upstream(self, data: bytes) -> None: ...

    def write_downstream(self, data: bytes) -> None: ...

    def end_upstream(self) -> None: ...  # half-close toward the upstream (write EOF)

    def end_downstream(self) -> None: ...  # half-close toward the client

    def close(self) -> None: ...  # close both sides after flushing what was written

    def flow_changed(self) -> None: ...  # held data changed: re-check back-pressure


class NetworkHost(Protocol):
    """What a ``NetworkChain`` uses of the proxy (``host.proxy.tcp.TcpProxy``)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def pause_timeout_s(self) -> float: ...

    def plugin_failed(self, inst: PluginInstance) -> None: ...

    def record_callback_time(self, slot: PluginSlot, us: float) -> None: ...

    def connection_finished(self, rec: ConnectionRecord) -> None: ...

    def log_error(self, message: str) -> None: ...


class _Hop(StreamListener):
    """One plugin on this connection: its context, mode and bookkeeping."""

    def __init__(
        self, chain: NetworkChain, slot: PluginSlot, inst: PluginInstance, enforce: bool
    ) -> None:
        self.chain: NetworkChain | None = chain
        self.slot = slot
        self.inst = inst
        self.enforce = enforce
        self.ctx: TcpContext | None = None
        self.rec = ConnectionHopRecord(slot.name, "enforce" if enforce else "log-only", True)
        self.done = False  # failed open (or log-only trapped): the plugin is out of the way
        self.connecting = False  # paused in proxy_on_new_connection
        self.held_eos = {DOWN: False, UP: False}  # end of stream held with paused data
        self.shadow = {DOWN: bytearray(), UP: bytearray()}  # log-only: what it was given
        self.pause_started: dict[StreamType, float] = {}
        self.trapped: tuple[str, int | str | None, float] | None = None

    def side(self, stream: StreamType) -> DataSideRecord:
        return self.rec.downstream if stream == DOWN else self.rec.upstream

    # StreamListener: what the plugin did outside its own callbacks (a tick, a callout)
    def on_resume(self, ctx: Any, stream: StreamType) -> None:
        if self.chain is not None:
            self.chain._resumed(self, stream)

    def on_close(self, ctx: Any, stream: StreamType) -> None:
        if self.chain is not None:
            self.chain._late_close(self)

    # a VM failure listener (PluginVM.failure_listeners): a trap outside this connection's
    # callbacks (a tick) while it holds the connection paused
    def vm_failed(self, vm: PluginVM) -> None:
        if self.chain is not None:
            self.chain.loop.call_soon(self.chain._paused_vm_failed, self)


class NetworkChain:
    """The NETWORK plugins on one TCP connection."""

    def __init__(
        self,
        host: NetworkHost,
        io: ConnectionIO,
        slots: Sequence[PluginSlot],
        *,
        listener: str,
        cluster: str,
        client: tuple[str, int],
        local: tuple[str, int],
        connection_id: int,
        listener_direction: int = 1,
        buffer_limit: int = 1 << 20,
    ) -> None:
        self.m = host
        self.io = io
        self.loop = host.loop
        self.listener = listener
        self.cluster = cluster
        self.client = client
        self.local = local
        self.connection_id = connection_id
        self.buffer_limit = buffer_limit
        self.hops: list[_Hop] = []
        self.records: list[ConnectionHopRecord] = []
        self.info = StreamInfo(
            source_address=f"{client[0]}:{client[1]}",
            destination_address=f"{local[0]}:{local[1]}",
            connection_id=connection_id,
            protocol="",
            cluster_name=cluster,
            listener_direction=listener_direction,
            start_time_ns=time.time_ns(),
        )
        self.filter_state: dict[bytes, bytes] = {}
        self._slots = slots
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.upstream_requested = False
        self.ended = {DOWN: False, UP: False}  # end of stream delivered to the other side
        self.closing = False
        self.finished = False
        self.outcome = ""
        self.close_peer = PEER_REMOTE
        self.upstream_address = ""
        # bytes: from the client, to the client, to the upstream, from the upstream
        self.rx_bytes = self.tx_bytes = self.upstream_tx = self.upstream_rx = 0
        self._pause_timer: asyncio.TimerHandle | None = None

    # -- setup ------------------------------------------------------------------------------

    def start(self) -> None:
        """The client connected: choose the plugins, run proxy_on_new_connection. A failed
        plugin that fails closed refuses the connection before any plugin runs."""
        chosen: list[tuple[PluginSlot, PluginInstance, bool, int]] = []
        for slot in self._slots:
            adm = slot.admit(_EMPTY_HEADERS, self.client[0])
            inst, enforce = adm.inst, adm.enforce
            if inst is None:
                if not adm.rejects:
                    self.records.append(
                        ConnectionHopRecord(slot.name, slot.mode, False, adm.skipped)
                    )
                    continue
                rec = ConnectionHopRecord(
                    slot.name, slot.mode, False, f"failed, {adm.policy}: connection closed"
                )
                rec.failure = slot.failure_dict()
                self.records.append(rec)
                for earlier, _inst, _enforce, at in chosen:  # none of them runs
                    self.records[at] = ConnectionHopRecord(
                        earlier.name, earlier.mode, False, f"connection refused by {slot.name}"
                    )
                self._close("failed_closed", PEER_LOCAL)
                return
            chosen.append((slot, inst, enforce, len(self.records)))
            self.records.append(ConnectionHopRecord(slot.name, slot.mode, True))  # the hop's, below
        for slot, inst, enforce, at in chosen:
            hop = _Hop(self, slot, inst, enforce)
            self.records[at] = hop.rec
            inst.acquire()
            inst.vm.failure_listeners.append(hop)
            slot.count("invocations")
            ctx = inst.vm.new_tcp_context(inst.root, self.info, hop)
            # Enforcing plugins share the connection's filter state; a log-only plugin
            # writes to its own layer, so later plugins never see its values.
            ctx.filter_state = self.filter_state if enforce else ChainMap({}, self.filter_state)
            hop.ctx = ctx
            self.hops.append(hop)
        self._new_connection_from(0)

    def _new_connection_from(self, start: int) -> None:
        for i in range(start, len(self.hops)):
            hop = self.hops[i]
            if hop.done or hop.ctx is None:
                continue
            action = hop.ctx.on_new_connection()
            if action == Action.CONTINUE:
                continue
            if not self._after_action(hop, action, DOWN, connecting=True):
                return  # paused (waits for continue_stream) or the connection closes
        if not self.closing and not self.upstream_requested:
            self.upstream_requested = True
            self.io.connect_upstream()

    # -- the connection's events (host.proxy.tcp) ------------------------------------------

    def upstream_connected(self, address: str) -> None:
        self.upstream_address = address
        self.info.upstream_address = address

    def downstream_data(self, data: bytes, end_of_stream: bool) -> None:
        """Client data (or its half-close: ``end_of_stream`` with the last bytes)."""
        self.rx_bytes += len(data)
        if self.closing:
            return
        self._iterate(DOWN, 0, data, end_of_stream)

    def upstream_data(self, data: bytes, end_of_stream: bool) -> None:
        self.upstream_rx += len(data)
        if self.closing:
            return
        self._iterate(UP, len(self.hops) - 1, data, end_of_stream)

    def upstream_failed(self) -> None:
        """The upstream connection could not be made: the client is closed (Envoy's
        tcp_proxy closes the downstream connection, a local close)."""
        self._close("upstream_connect_failed", PEER_LOCAL)

    def upstream_lost(self) -> None:
        """The upstream connection ended without (or after) its half-close."""
        if self.finished:
            return
        if self.ended[UP] and self.ended[DOWN]:
            self._close("closed", PEER_REMOTE)
        else:
            self._close("upstream_closed", PEER_LOCAL)

    def downstream_lost(self) -> None:
        """The client connection ended (closed or reset)."""
        if self.finished:
            return
        if self.ended[UP] and self.ended[DOWN]:
            self._close("closed", PEER_REMOTE)
        else:
            self._close("client_closed", PEER_REMOTE)

    def held(self, stream: StreamType) -> int:
        """Bytes the plugins hold paused in ``stream``'s direction (back-pressure)."""
        n = 0
        for hop in self.hops:
            ctx = hop.ctx
            if ctx is not None and stream in ctx.paused:
                n += len(ctx.downstream if stream == DOWN else ctx.upstream)
        return n

    # -- iteration ---------------------------------------------------------------------------

    def _iterate(self, stream: StreamType, start: int, data: bytes, eos: bool) -> None:
        """``data`` (and the end of stream) through the hops from ``start`` in the
        direction's order: downstream data in the chain's order, upstream data in reverse."""
        step = 1 if stream == DOWN else -1
        stop = len(self.hops) if stream == DOWN else -1
        for i in range(start, stop, step):
            hop = self.hops[i]
            ctx = hop.ctx
            if hop.done or ctx is None:
                continue
            side = hop.side(stream)
            side.data_in(data)
            if hop.enforce:
                action = self._data_callback(ctx, stream, data, eos)
                if action == Action.CONTINUE:
                    data = ctx.take_data(stream)
                    side.data_out(data)
                    continue
                if action == Action.PAUSE:
                    hop.held_eos[stream] = hop.held_eos[stream] or eos
                if not self._after_action(hop, action, stream):
                    self.io.flow_changed()
                    return
                # failed open: what it held goes on
                data = ctx.take_data(stream)
                continue
            # log-only: the plugin gets a copy; the real data passes unchanged
            hop.shadow[stream] += data
            action = self._data_callback(ctx, stream, bytes(data), eos)
            if action == Action.CONTINUE:
                released = ctx.take_data(stream)
                side.data_out(released)
                if released != bytes(hop.shadow[stream]):
                    self._would(hop, f"mutate_{_name(stream)}_data")
                hop.shadow[stream].clear()
            elif action == Action.PAUSE:
                self._would(hop, "pause")
                ctx.paused.discard(stream)  # never holds the real data
                if len(ctx.downstream if stream == DOWN else ctx.upstream) > self.buffer_limit:
                    ctx.take_data(stream)
                    hop.shadow[stream].clear()
            else:  # close or trap: intent (or failure) recorded; what it was given goes
                ctx.take_data(stream)
                hop.shadow[stream].clear()
                self._after_action(hop, action, stream)
        self._deliver(stream, data, eos)

    def _data_callback(self, ctx: TcpContext, stream: StreamType, data: bytes, eos: bool) -> Action:
        if stream == DOWN:
            return ctx.on_downstream_data(data, eos)
        action = ctx.on_upstream_data(data, eos)
        if eos and not ctx.deleted:
            # Envoy's Wasm network filter fires this when it sees the upstream's end of
            # stream (not on an upstream connection event), with peer Unknown.
            ctx.on_upstream_close(PEER_UNKNOWN)
            if ctx.vm.failed and action != Action.FAILED:
                action = Action.FAILED
        return action

    def _deliver(self, stream: StreamType, data: bytes, eos: bool) -> None:
        if stream == DOWN:
            if data:
                self.upstream_tx += len(data)
                self.io.write_upstream(data)
            if eos and not self.ended[DOWN]:
                self.ended[DOWN] = True
                self.io.end_upstream()
        else:
            if data:
                self.tx_bytes += len(data)
                self.io.write_downstream(data)
            if eos and not self.ended[UP]:
                self.ended[UP] = True
                self.io.end_downstream()
        self.io.flow_changed()
        if self.ended[DOWN] and self.ended[UP]:
            self._close("closed", PEER_REMOTE)

    def _after_action(
        self, hop: _Hop, action: Action, stream: StreamType, connecting: bool = False
    ) -> bool:
        """What a callback's result means: True to go on to the next plugin (the hop failed
        open, or a log-only intent), False when the iteration stops (paused, closing)."""
        slot = hop.slot
        if action == Action.FAILED:
            held = self._hop_failed(hop)
            if hop.enforce and slot.effective_policy() != "FAIL_OPEN":
                self._close("plugin_failed", PEER_LOCAL)
                return False
            for other in held:
                if other != stream:  # what it held in the other direction goes on too
                    self.loop.call_soon(self._release, hop, other)
            return True
        if action == Action.CLOSE:
            if not hop.enforce:
                self._would(hop, "close")
                return True
            hop.rec.closed = True
            slot.count("closed_connection")
            self._close("plugin_closed", PEER_LOCAL)
            return False
        if action == Action.PAUSE:
            if not hop.enforce:
                self._would(hop, "pause")
                if hop.ctx is not None:
                    hop.ctx.paused.discard(stream)  # log-only never holds the connection
                return True
            if connecting:
                hop.connecting = True
            if stream not in hop.pause_started:
                slot.count("paused")
                hop.pause_started[stream] = time.monotonic()
            self._arm_pause_timer()
            return False
        return True

    def _would(self, hop: _Hop, what: str) -> None:
        if not hop.rec.would:
            hop.slot.count("log_only.requests_would_act")
        hop.rec.would.append(what)
        hop.slot.count(f"log_only.would_{what}")

    # -- later events (after a root callback: a tick, a callout response) ---------------------

    def _resumed(self, hop: _Hop, stream: StreamType) -> None:
        """The plugin continued its paused direction: go on from the next plugin, on the
        next loop turn (never from inside the VM's delivery)."""
        self.loop.call_soon(self._resume, hop, stream)

    def _resume(self, hop: _Hop, stream: StreamType) -> None:
        if self.closing or hop.done or hop.ctx is None or not hop.enforce:
            return
        self._end_pause(hop, stream)
        i = self.hops.index(hop)
        if hop.connecting and stream == DOWN:
            hop.connecting = False
            self._new_connection_from(i + 1)
            return
        data = hop.ctx.take_data(stream)
        hop.side(stream).data_out(data)
        eos, hop.held_eos[stream] = hop.held_eos[stream], False
        self._iterate(stream, i + (1 if stream == DOWN else -1), data, eos)

    def _end_pause(self, hop: _Hop, stream: StreamType) -> None:
        t = hop.pause_started.pop(stream, None)
        if t is not None:
            hop.rec.paused_ms += (time.monotonic() - t) * 1000
        if not any(h.pause_started for h in self.hops) and self._pause_timer is not None:
            self._pause_timer.cancel()
            self._pause_timer = None

    def _late_close(self, hop: _Hop) -> None:
        """The plugin closed the connection from a root callback."""
        if self.closing:
            return
        if not hop.enforce:
            self._would(hop, "close")
            return
        hop.rec.closed = True
        hop.slot.count("closed_connection")
        self.loop.call_soon(self._close, "plugin_closed", PEER_LOCAL)

    def _paused_vm_failed(self, hop: _Hop) -> None:
        """The VM of a plugin failed outside this connection's callbacks: if it holds the
        connection paused, its failure policy applies now (FAIL_OPEN: what it held goes
        on, as if it were absent from here on)."""
        if self.closing or hop.done or not hop.pause_started:
            return
        held = self._hop_failed(hop)
        if hop.enforce and hop.slot.effective_policy() != "FAIL_OPEN":
            self._close("plugin_failed", PEER_LOCAL)
            return
        for stream in held:
            self._release(hop, stream)

    def _release(self, hop: _Hop, stream: StreamType) -> None:
        """A plugin that failed open held ``stream``'s data (or the new connection): it
        goes on from the next plugin, as if the failed one were absent."""
        if self.closing or hop.ctx is None:
            return
        i = self.hops.index(hop)
        if hop.connecting and stream == DOWN:
            hop.connecting = False
            self._new_connection_from(i + 1)
            return
        eos, hop.held_eos[stream] = hop.held_eos[stream], False
        data = hop.ctx.take_data(stream)
        self._iterate(stream, i + (1 if stream == DOWN else -1), data, eos)

    def _hop_failed(self, hop: _Hop) -> list[StreamType]:
        """The plugin's VM is failed: record it, let the manager apply the policy. Returns
        the directions the plugin held paused."""
        hop.done = True
        held = list(hop.pause_started)
        for stream in held:
            self._end_pause(hop, stream)
        vm = hop.inst.vm
        f = vm.failure
        ctx = hop.ctx
        if f is not None and ctx is not None and f.context_id == ctx.id and hop.trapped is None:
            hop.trapped = (f.callback, TRAPPED, vm.last_call_ns / 1000.0)
        self.m.plugin_failed(hop.inst)
        hop.rec.failure = f.to_dict() if f is not None else hop.slot.failure_dict()
        return held

    def _arm_pause_timer(self) -> None:
        if self._pause_timer is None:
            self._pause_timer = self.loop.call_later(self.m.pause_timeout_s, self._pause_expired)

    def _pause_expired(self) -> None:
        """A plugin kept the connection paused too long (the HTTP chain's 504): close it."""
        self._pause_timer = None
        if self.closing:
            return
        for hop in self.hops:
            if hop.pause_started:
                hop.slot.count("pause_timeout")
        self._close("pause_timeout", PEER_LOCAL)

    # -- the end -------------------------------------------------------------------------------

    def _close(self, outcome: str, peer: int) -> None:
        """Close the connection (once): the I/O closes both sides after flushing, the
        plugins hear of it and the record is made."""
        if self.closing:
            return
        self.closing = True
        self.outcome = outcome
        self.close_peer = peer
        self.io.close()
        self._finish()

    def stop(self) -> None:
        """The proxy is stopping: close the connection."""
        self._close("proxy_stopped", PEER_LOCAL)

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self._pause_timer is not None:
            self._pause_timer.cancel()
            self._pause_timer = None
        for hop in self.hops:
            ctx = hop.ctx
            for stream in list(hop.pause_started):
                self._end_pause(hop, stream)
            with _suppress_listener(hop):
                if ctx is not None:
                    if not hop.done and ctx.created:
                        ctx.on_downstream_close(self.close_peer)
                    ctx.finish()  # done, log, delete (skipped on a failed VM)
                    f = hop.inst.vm.failure
                    if f is not None and f.context_id == ctx.id and hop.rec.failure is None:
                        self._hop_failed(hop)  # it trapped closing (or in done/log/delete)
                    callbacks: list[tuple[str, int | str | None, float]] = list(ctx.callbacks)
                    if hop.trapped is not None:
                        callbacks.append(hop.trapped)
                    hop.rec.callbacks = callbacks
                    self.m.record_callback_time(hop.slot, sum(us for _n, _r, us in ctx.callbacks))
            hop.rec.downstream.freeze()
            hop.rec.upstream.freeze()
            hop.inst.release()
            if ctx is not None:
                ctx.listener = None
            hop.ctx = None
            hop.chain = None
        self.m.connection_finished(self.record())
        self.hops = []

    def record(self) -> ConnectionRecord:
        return ConnectionRecord(
            id=0,  # numbered by the ring
            listener=self.listener,
            cluster=self.cluster,
            client=f"{self.client[0]}:{self.client[1]}",
            upstream_address=self.upstream_address,
            started=self.started_wall,
            duration_ms=(time.monotonic() - self.started) * 1000,
            outcome=self.outcome,
            close_peer=self.close_peer,
            rx_bytes=self.rx_bytes,
            tx_bytes=self.tx_bytes,
            upstream_tx_bytes=self.upstream_tx,
            upstream_rx_bytes=self.upstream_rx,
            hops=self.records,
        )


class _suppress_listener:
    """While the connection finishes, the hop stops listening to its VM's failures."""

    def __init__(self, hop: _Hop) -> None:
        self.hop = hop

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        listeners = self.hop.inst.vm.failure_listeners
        if self.hop in listeners:
            listeners.remove(self.hop)


def _name(stream: StreamType) -> str:
    return "downstream" if stream == DOWN else "upstream"
