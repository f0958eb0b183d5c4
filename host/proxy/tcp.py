"""The TCP proxy: ``spec.tcp`` listeners whose connections go to a ``tcp://`` cluster through
the NETWORK plugins (Envoy's network filters in front of ``tcp_proxy``).

``TcpProxy`` opens one listener per ``spec.tcp`` entry and keeps them in step with the
configuration; per accepted connection a ``_Downstream`` protocol opens the upstream
connection when the plugin chain lets it (``network_chain.NetworkChain`` decides, this
module only moves bytes): both sides' bytes, half-closes (EOF is kept open, so each
direction ends on its own, as Envoy's tcp_proxy does), closes and flow control (a side
stops being read while the other side's socket buffer is full or while the plugins hold
more than the buffer limit of its data). Stats: ``tcp.downstream_cx_total``,
``tcp.downstream_cx_active``, ``tcp.downstream_cx_rx_bytes_total``,
``tcp.downstream_cx_tx_bytes_total``, each also per listener as ``tcp.<listener>.<name>``,
and ``cluster.<name>.upstream_cx_connect_fail``. Finished connections land in the
connection ring (``tcp_records.ConnectionRing``, the admin API's ``/connections``).
Everything runs on the proxy's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from host.proxy.downstream import next_connection_id
from host.proxy.network_chain import DOWN, UP, NetworkChain
from host.proxy.routes import plugin_match_verdict
from host.proxy.tcp_records import ConnectionRecord, ConnectionRing

if TYPE_CHECKING:
    from host.proxy.config import ProxyConfig, TcpListenerConfig
    from host.proxy.plugins import PluginManager
    from host.proxy.slots import PluginInstance, PluginSlot
    from host.proxy.stats import Counter, Gauge, StatsStore

__all__ = ["TcpListenError", "TcpListener", "TcpProxy"]

DEFAULT_CONNECT_TIMEOUT_S = 5.0  # Envoy's cluster connect_timeout default
_STAT_NAMES = (
    "downstream_cx_total",
    "downstream_cx_rx_bytes_total",
    "downstream_cx_tx_bytes_total",
)


class TcpListenError(Exception):
    """A ``spec.tcp`` listener could not be bound."""

    def __init__(self, message: str, address: tuple[str, int]) -> None:
        super().__init__(message)
        self.address = address


@dataclass
class _Upstream:
    """Where a listener's connections go (its tcp:// cluster)."""

    cluster: str
    host: str
    port: int
    connect_timeout_s: float

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class _ListenerStats:
    """A listener's counters: the proxy-wide ``tcp.*`` and its own ``tcp.<name>.*``."""

    def __init__(self, stats: StatsStore | None, name: str) -> None:
        self.counters: dict[str, list[Counter]] = {}
        self.active: list[Gauge] = []
        if stats is None:
            return
        for what in _STAT_NAMES:
            self.counters[what] = [
                stats.counter(f"tcp.{what}"),
                stats.counter(f"tcp.{name}.{what}"),
            ]
        self.active = [
            stats.gauge("tcp.downstream_cx_active"),
            stats.gauge(f"tcp.{name}.downstream_cx_active"),
        ]

    def inc(self, what: str, n: int = 1) -> None:
        for c in self.counters.get(what, ()):
            c.inc(n)

    def active_changed(self, delta: int) -> None:
        for g in self.active:
            if delta > 0:
                g.inc(delta)
            else:
                g.dec(-delta)


class TcpListener:
    """One ``spec.tcp`` listener: its socket, cluster, plugins and connections."""

    def __init__(self, proxy: TcpProxy, config: TcpListenerConfig, upstream: _Upstream) -> None:
        self.proxy = proxy
        self.config = config
        self.name = config.name
        self.upstream = upstream
        self.server: asyncio.base_events.Server | None = None
        self.address = (config.listen_host, config.listen_port)
        self.stats = _ListenerStats(proxy.stats, config.name)
        self.connections: set[_Downstream] = set()

    @property
    def port(self) -> int:
        return self.address[1]

    async def open(self) -> None:
        loop = self.proxy.loop
        try:
            self.server = await loop.create_server(
                lambda: _Downstream(self),
                self.config.listen_host,
                self.config.listen_port,
                reuse_address=True,
            )
        except OSError as e:
            raise TcpListenError(
                f"cannot listen on {self.config.listen} (spec.tcp {self.name}): {e.strerror or e}",
                (self.config.listen_host, self.config.listen_port),
            ) from None
        sock = self.server.sockets[0].getsockname()
        self.address = (str(sock[0]), int(sock[1]))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2.0)
            self.server = None

    def stop_connections(self) -> None:
        for conn in list(self.connections):
            conn.chain.stop()

    def slots(self) -> list[PluginSlot]:
        """The NETWORK plugins whose ``match`` selects this listener, in chain order."""
        direction = self.proxy.direction
        return [
            s
            for s in self.proxy.manager.network_ordered
            if plugin_match_verdict(s.spec.match, self.port, direction) is None
        ]

    def snapshot(self) -> dict[str, Any]:
        direction = self.proxy.direction
        plugins = []
        for s in self.proxy.manager.network_ordered:
            why = plugin_match_verdict(s.spec.match, self.port, direction)
            plugins.append({"name": s.name, "applied": why is None, "not_applied": why})
        return {
            "name": self.name,
            "listen": f"{self.address[0]}:{self.address[1]}",
            "cluster": self.upstream.cluster,
            "upstream": self.upstream.address,
            "plugins": plugins,
            "active_connections": len(self.connections),
        }


class TcpProxy:
    """The ``spec.tcp`` listeners of one proxy (a ``network_chain.NetworkHost``)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        manager: PluginManager,
        stats: StatsStore | None = None,
        *,
        ring_size: int = 200,
    ) -> None:
        self.loop = loop
        self.manager = manager
        self.stats = stats
        self.ring = ConnectionRing(ring_size)
        self.listeners: dict[str, TcpListener] = {}
        # listeners a reload removed: closed, their open connections still finishing
        self._draining: list[TcpListener] = []
        self.direction = "SERVER"
        self.on_connection_done: list[Callable[[ConnectionRecord], None]] = self.ring.listeners

    # -- network_chain.NetworkHost --------------------------------------------------------

    @property
    def pause_timeout_s(self) -> float:
        return self.manager.pause_timeout_s

    def plugin_failed(self, inst: PluginInstance) -> None:
        self.manager.plugin_failed(inst, None)

    def record_callback_time(self, slot: PluginSlot, us: float) -> None:
        slot.callback_us.append(us)
        if self.stats is not None:
            self.stats.histogram(f"wasm.{slot.name}.callback_time_us").record(us)

    def connection_finished(self, rec: ConnectionRecord) -> None:
        rec.id = self.ring.next_id()
        self.ring.add(rec)

    def log_error(self, message: str) -> None:
        self.manager.log_error(message)

    # -- configuration ------------------------------------------------------------------------

    async def apply(self, config: ProxyConfig) -> list[str]:
        """Bring the listeners to ``config.tcp``: a listener whose name and address are
        unchanged keeps its socket and connections (its cluster follows the config); new
        ones open, removed ones close (their connections finish). Raises TcpListenError
        when a new listener cannot be bound; returns nothing else to report (kept for
        symmetry with the plugin manager)."""
        self.direction = str(config.direction)
        wanted: dict[str, TcpListener] = {}
        for lc in config.tcp:
            upstream = _upstream_of(config, lc.cluster)
            old = self.listeners.get(lc.name)
            if old is not None and (
                old.config.listen_host,
                old.config.listen_port,
            ) == (lc.listen_host, lc.listen_port):
                old.config = lc
                old.upstream = upstream
                wanted[lc.name] = old
                continue
            listener = TcpListener(self, lc, upstream)
            try:
                await listener.open()
            except TcpListenError:
                for new in wanted.values():
                    if new not in self.listeners.values():
                        await new.close()
                raise
            wanted[lc.name] = listener
        for name, old in self.listeners.items():
            if wanted.get(name) is not old:
                await old.close()
                self._draining.append(old)
        self._draining = [lst for lst in self._draining if lst.connections]
        self.listeners = wanted
        return []

    def applied(self) -> list[PluginSlot]:
        """The NETWORK plugins some listener runs (in order)."""
        on = {s.name for lst in self.listeners.values() for s in lst.slots()}
        return [s for s in self.manager.network_ordered if s.name in on]

    def snapshot(self) -> list[dict[str, Any]]:
        """Per listener: address, cluster, the NETWORK plugins (applied or why not), open
        connections. The app's chain panel reads it (``ProxyServer.tcp_snapshot``)."""
        return [lst.snapshot() for lst in self.listeners.values()]

    async def aclose(self) -> None:
        for lst in self.listeners.values():
            await lst.close()
        for lst in (*self.listeners.values(), *self._draining):
            lst.stop_connections()
        self.listeners = {}
        self._draining = []


def _upstream_of(config: ProxyConfig, cluster: str) -> _Upstream:
    c = config.cluster(cluster)
    if c is None:  # the config parser refuses this: a listener names a defined cluster
        raise ValueError(f"spec.tcp: no cluster {cluster!r}")
    u = urlsplit(c.url)
    return _Upstream(
        cluster,
        u.hostname or "127.0.0.1",
        u.port or 0,
        c.connect_timeout_s or DEFAULT_CONNECT_TIMEOUT_S,
    )


class _Downstream(asyncio.Protocol):
    """One client connection of a TCP listener (and its upstream connection): the
    ``ConnectionIO`` of its ``NetworkChain``."""

    def __init__(self, listener: TcpListener) -> None:
        self.listener = listener
        self.proxy = listener.proxy
        self.loop = listener.proxy.loop
        self.transport: asyncio.Transport | None = None
        self.upstream: _UpstreamSide | None = None
        self.chain: NetworkChain = None  # type: ignore[assignment]  # set when connected
        self._connect_task: asyncio.Task[None] | None = None
        self.connected = False  # the upstream connection is up
        self.closed = False
        # client bytes read before the upstream connection was up (uvloop may deliver
        # some before pause_reading takes effect): given to the chain once it is
        self._early = bytearray()
        self._early_eof = False
        self.write_paused = {DOWN: False, UP: False}  # that side's socket buffer is full
        self.limit = self.proxy.manager.buffer_limit

    # -- asyncio.Protocol (the client's side) ---------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a read-write transport (uvloop's are not asyncio.Transport subclasses)
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.pause_reading()  # until every plugin let the connection through
        lst = self.listener
        lst.connections.add(self)
        lst.stats.inc("downstream_cx_total")
        lst.stats.active_changed(1)
        peer = transport.get_extra_info("peername") or ("", 0)
        local = transport.get_extra_info("sockname") or ("", 0)
        self.chain = NetworkChain(
            self.proxy,
            self,
            lst.slots(),
            listener=lst.name,
            cluster=lst.upstream.cluster,
            client=(str(peer[0]), int(peer[1])),
            local=(str(local[0]), int(local[1])),
            connection_id=next_connection_id(),
            listener_direction=2 if self.proxy.direction == "CLIENT" else 1,
            buffer_limit=self.limit,
        )
        try:
            self.chain.start()
        except Exception as e:  # a host bug must not leave the client hanging
            self.proxy.log_error(f"tcp {lst.name}: connection setup failed: {e!r}")
            self.close()

    def data_received(self, data: bytes) -> None:
        self.listener.stats.inc("downstream_cx_rx_bytes_total", len(data))
        if not self.connected:
            self._early += data
            self.flow_changed()
            return
        self.chain.downstream_data(data, False)

    def eof_received(self) -> bool:
        if not self.connected:
            self._early_eof = True
        else:
            self.chain.downstream_data(b"", True)
        return True  # keep the other direction open (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        lst = self.listener
        if self in lst.connections:
            lst.connections.discard(self)
            lst.stats.active_changed(-1)
        self.chain.downstream_lost()
        self.close()

    def pause_writing(self) -> None:
        self.write_paused[DOWN] = True
        self.flow_changed()

    def resume_writing(self) -> None:
        self.write_paused[DOWN] = False
        self.flow_changed()

    # -- network_chain.ConnectionIO ---------------------------------------------------------

    def connect_upstream(self) -> None:
        self._connect_task = self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        up = self.listener.upstream
        try:
            _t, proto = await asyncio.wait_for(
                self.loop.create_connection(lambda: _UpstreamSide(self), up.host, up.port),
                up.connect_timeout_s,
            )
        except (OSError, TimeoutError):
            if self.proxy.stats is not None:
                self.proxy.stats.counter(f"cluster.{up.cluster}.upstream_cx_connect_fail").inc()
            self.chain.upstream_failed()
            return
        if self.closed:
            proto.close()
            return
        self.upstream = proto
        self.connected = True
        self.chain.upstream_connected(up.address)
        early, self._early = bytes(self._early), bytearray()
        if early or self._early_eof:
            self.chain.downstream_data(early, self._early_eof)
        self.flow_changed()

    def write_upstream(self, data: bytes) -> None:
        up = self.upstream
        if up is not None and up.transport is not None and not up.transport.is_closing():
            up.transport.write(data)

    def write_downstream(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            self.listener.stats.inc("downstream_cx_tx_bytes_total", len(data))
            t.write(data)

    def end_upstream(self) -> None:
        up = self.upstream
        if up is not None and up.transport is not None and not up.transport.is_closing():
            if up.transport.can_write_eof():
                up.transport.write_eof()

    def end_downstream(self) -> None:
        t = self.transport
        if t is not None and not t.is_closing() and t.can_write_eof():
            t.write_eof()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
        if self.transport is not None:
            self.transport.close()  # flushes what is buffered, then closes
        if self.upstream is not None:
            self.upstream.close()

    def flow_changed(self) -> None:
        """Read a side only while its data can go somewhere: the upstream is up, the
        other side's socket takes writes, the plugins hold less than the limit."""
        if self.closed:
            return
        chain = self.chain
        want_down = (
            self.connected
            and not self.write_paused[UP]
            and chain.held(DOWN) < self.limit
            and not chain.ended[DOWN]
        )
        want_up = not self.write_paused[DOWN] and chain.held(UP) < self.limit
        self._set_reading(self.transport, want_down)
        up = self.upstream
        if up is not None:
            self._set_reading(up.transport, want_up)

    @staticmethod
    def _set_reading(t: asyncio.Transport | None, on: bool) -> None:
        if t is None or t.is_closing() or t.is_reading() == on:
            return
        if on:
            t.resume_reading()
        else:
            t.pause_reading()


class _UpstreamSide(asyncio.Protocol):
    """The upstream connection of one client connection."""

    def __init__(self, down: _Downstream) -> None:
        self.down = down
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's: not a subclass

    def data_received(self, data: bytes) -> None:
        self.down.chain.upstream_data(data, False)

    def eof_received(self) -> bool:
        self.down.chain.upstream_data(b"", True)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.down.chain.upstream_lost()
        self.down.close()

    def pause_writing(self) -> None:
        self.down.write_paused[UP] = True
        self.down.flow_changed()

    def resume_writing(self) -> None:
        self.down.write_paused[UP] = False
        self.down.flow_changed()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
