"""The offline runner behind ``wasmdesk try --tcp``: one TCP connection through one
NETWORK plugin, no proxy, no sockets.

It starts the plugin, runs ``proxy_on_new_connection``, then the data chunks in the order
given (client data through ``proxy_on_downstream_data``, upstream data through
``proxy_on_upstream_data``), then both half-closes (``end_of_stream``; the upstream's also
fires ``proxy_on_upstream_connection_close`` with peer Unknown, as Envoy) and the
connection's close (``proxy_on_downstream_connection_close``: peer 2 remote, or 1 local
when the plugin closed it), then done, log, delete. A plugin that pauses keeps its data
(later chunks of that direction are appended, as the proxy does); while paused, tick
periods fire on a virtual clock (bounded) so a plugin may continue from its tick.
Callouts go out as in ``wasmdesk try`` (between callbacks). Everything it saw comes back
as a ``TcpTryResult``: each step's input, result and released bytes, and what each
direction became.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from host.runner import (
    CalloutClient,
    Driver,
    RunOutcome,
    RunSettings,
    WaitListener,
    fire_ticks,
    offline_host,
    start_plugin,
)
from host.wasm import (
    Action,
    PluginHost,
    StreamInfo,
    VirtualClock,
)
from host.wasm.context import TcpContext
from host.wasm.diagnosis import root_id_warning, sdk_missing_root_line
from host.wasm.plugin_host import GrpcDispatcher
from host.wasm.types import StreamType

__all__ = ["TcpTryRequest", "TcpTryResult", "run_try_tcp"]

DOWNSTREAM = "downstream"  # client -> upstream
UPSTREAM = "upstream"  # upstream -> client
_STREAM = {DOWNSTREAM: StreamType.DOWNSTREAM, UPSTREAM: StreamType.UPSTREAM}
PEER_UNKNOWN, PEER_LOCAL, PEER_REMOTE = 0, 1, 2
NETWORK_CALLBACKS = (
    "proxy_on_new_connection",
    "proxy_on_downstream_data",
    "proxy_on_upstream_data",
    "proxy_on_downstream_connection_close",
    "proxy_on_upstream_connection_close",
)


@dataclass
class TcpTryRequest(RunSettings):
    # (DOWNSTREAM | UPSTREAM, data) in the order given
    chunks: list[tuple[str, bytes]] = field(default_factory=list)
    half_close: bool = True  # end both directions after the chunks
    client: str = "127.0.0.1:50000"


@dataclass
class TcpTryResult(RunOutcome):
    # one per callback the connection ran: direction, callback, input, result, released
    steps: list[dict[str, object]] = field(default_factory=list)
    # what each direction became: the bytes released past the plugin, in order
    to_upstream: bytes = b""
    to_downstream: bytes = b""
    # what the plugin still held paused at the end (it never continued)
    held: dict[str, bytes] = field(default_factory=dict)
    connected: bool = False  # the new connection went on (the upstream would be connected)
    closed_by_plugin: bool = False
    close_peer: int | None = None

    def to_json(self) -> dict[str, object]:
        def text(b: bytes) -> str:
            return b.decode("utf-8", "replace")

        return {
            "abi": self.abi,
            "sdk": self.sdk,
            "connected": self.connected,
            "steps": self.steps,
            "to_upstream": text(self.to_upstream),
            "to_downstream": text(self.to_downstream),
            "held": {k: text(v) for k, v in self.held.items()},
            "closed_by_plugin": self.closed_by_plugin,
            "close_peer": self.close_peer,
            "logs": self.logs,
            "metrics": self.metrics,
            "callouts": self.callouts,
            "failure": self.failure,
            "ticks_fired": self.ticks_fired,
            "ticks_while_paused": self.ticks_while_paused,
            "notes": self.notes,
            "warnings": self.warnings,
        }


class _Connection(Driver):
    """One connection through the plugin, as the proxy's chain drives one hop."""

    result: TcpTryResult

    def __init__(
        self,
        req: TcpTryRequest,
        host: PluginHost,
        callouts: CalloutClient,
        clock: VirtualClock,
        ctx: TcpContext,
        listener: WaitListener,
        result: TcpTryResult,
    ) -> None:
        super().__init__(req, host, callouts, clock, result, listener)
        self.ctx = ctx

    def step(
        self, direction: str, callback: str, data: bytes, action: Action, eos: bool = False
    ) -> Action:
        stream = _STREAM[direction]
        paused = action == Action.PAUSE
        action = self.wait(self.ctx, stream, action)
        released = b""
        if action == Action.CONTINUE and callback != "proxy_on_new_connection":
            released = self.ctx.take_data(stream)
            if direction == DOWNSTREAM:
                self.result.to_upstream += released
            else:
                self.result.to_downstream += released
        self.result.steps.append(
            {
                "direction": direction,
                "callback": callback,
                "input": data.decode("utf-8", "replace"),
                "end_of_stream": eos,
                "result": action.value,
                "paused_first": paused,  # it paused, then (if result continue) continued
                "released": released.decode("utf-8", "replace"),
            }
        )
        if action == Action.CLOSE:
            self.result.closed_by_plugin = True
        return action


def run_try_tcp(
    wasm: bytes,
    req: TcpTryRequest,
    *,
    callouts: CalloutClient | None = None,
    grpc: GrpcDispatcher | None = None,
) -> TcpTryResult:
    """Run one connection's data through the NETWORK plugin in ``wasm``. ``callouts``
    replaces the HTTP client, ``grpc`` the grpc.aio transport (the lab's mocks)."""
    result = TcpTryResult()
    with offline_host(req, result, callouts=callouts, grpc=grpc) as (host, callouts, clock):
        _run(wasm, req, host, callouts, clock, result)
    line = sdk_missing_root_line(host.logs)
    if line is not None:
        result.warnings.append(root_id_warning(req.root_id, line))
    return result


def _run(
    wasm: bytes,
    req: TcpTryRequest,
    host: PluginHost,
    callouts: CalloutClient,
    clock: VirtualClock,
    result: TcpTryResult,
) -> None:
    started = start_plugin(host, wasm, req, result)  # LoadError propagates: bad input
    if started is None:
        return
    vm, root = started
    if not any(getattr(vm.cb, name) is not None for name in NETWORK_CALLBACKS):
        result.warnings.append(
            "the module exports none of the network callbacks ("
            + ", ".join(NETWORK_CALLBACKS)
            + "): it does nothing to a TCP connection; is it an HTTP filter (try without --tcp)?"
        )
    fire_ticks(vm, root, clock, req.ticks, result)
    if vm.failed:
        result.failure = vm.failure.to_dict() if vm.failure else None
        return
    listener = WaitListener()
    si = StreamInfo(source_address=req.client, protocol="", start_time_ns=clock.wall_ns())
    ctx = vm.new_tcp_context(root, si, listener)
    conn = _Connection(req, host, callouts, clock, ctx, listener, result)
    try:
        _drive(conn, ctx, req, result)
    finally:
        if not ctx.deleted and not vm.failed:
            peer = PEER_LOCAL if result.closed_by_plugin else PEER_REMOTE
            result.close_peer = peer
            ctx.on_downstream_close(peer)
        ctx.finish()
        conn.settle()
        if vm.failed and result.failure is None:
            result.failure = vm.failure.to_dict() if vm.failure else None


def _drive(conn: _Connection, ctx: TcpContext, req: TcpTryRequest, result: TcpTryResult) -> None:
    action = conn.step(DOWNSTREAM, "proxy_on_new_connection", b"", ctx.on_new_connection())
    if action == Action.PAUSE:
        result.notes.append(
            "the plugin paused the new connection and never continued it: the upstream "
            "would not be connected and no data would flow"
        )
        return
    if action != Action.CONTINUE:
        return
    result.connected = True
    for direction, data in req.chunks:
        if direction == DOWNSTREAM:
            action = conn.step(
                direction, "proxy_on_downstream_data", data, ctx.on_downstream_data(data, False)
            )
        else:
            action = conn.step(
                direction, "proxy_on_upstream_data", data, ctx.on_upstream_data(data, False)
            )
        if action in (Action.CLOSE, Action.FAILED):
            return
    if req.half_close:
        action = conn.step(
            DOWNSTREAM,
            "proxy_on_downstream_data",
            b"",
            ctx.on_downstream_data(b"", True),
            eos=True,
        )
        if action in (Action.CLOSE, Action.FAILED):
            return
        action = conn.step(
            UPSTREAM, "proxy_on_upstream_data", b"", ctx.on_upstream_data(b"", True), eos=True
        )
        if action in (Action.CLOSE, Action.FAILED):
            return
        ctx.on_upstream_close(PEER_UNKNOWN)
    for direction, stream in _STREAM.items():
        left = ctx.downstream if stream == StreamType.DOWNSTREAM else ctx.upstream
        if stream in ctx.paused and left:
            result.held[direction] = bytes(left)
    if result.held:
        result.notes.append(
            "the plugin still held data paused at the end: it never continued it, so it "
            "would not reach the other side"
        )
