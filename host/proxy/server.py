"""The proxy server: the data path, the plugin chain, the admin API and the demo
upstream wired onto one asyncio loop (uvloop when available).

``ProxyServer`` is what ``wasmdesk serve`` runs in the main thread and what the
desktop app runs on its engine thread. Everything here happens on the loop's
thread: it owns every wasmtime Store.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import os
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, cast

from host.proxy import stats as st
from host.proxy.admin import AdminProtocol
from host.proxy.chain import ChainRun, NoPluginsFilter, RequestRecord
from host.proxy.config import (
    ClusterConfig,
    ConfigError,
    PluginSpec,
    ProxyConfig,
    dump_config,
    effective_order,
    explain_order,
    load_config,
)
from host.proxy.core_api import ExchangeState, ProxyCore
from host.proxy.deadlines import Deadlines
from host.proxy.demo_cert import ensure_demo_cert
from host.proxy.demo_upstream import EchoServer, start_echo_server
from host.proxy.errors import ErrorKind, PluginError
from host.proxy.grpc_callouts import GrpcCluster
from host.proxy.http1 import (
    Cluster,
    ExchangeInfo,
    Limits,
    StreamFilter,
    UpstreamPool,
)
from host.proxy.listener import protocol_factory
from host.proxy.plugins import PluginManager, PluginSlot
from host.proxy.routes import Route, RouteTable
from host.proxy.snapshots import PluginSnapshot
from host.proxy.tcp import TcpListenError, TcpProxy
from host.proxy.tcp_records import ConnectionRecord
from host.proxy.tls import (
    ALPN_H2,
    ListenerTlsRuntime,
    listener_stat_prefix,
    server_context,
)
from host.proxy.upstream_api import ResponseSink, UpstreamStream
from host.proxy.upstream_h2 import Cluster as H2Cluster
from host.proxy.write_batch import WriteBatch
from host.wasm import Engine, HeaderMap, LogLevel, PluginHost
from host.wasm.plugin_host import LogRecord
from host.wasm.runtime import user_cache_root

__all__ = ["DEMO_CLUSTER", "ProxyServer", "StartupError", "StartupKind"]

DEMO_CLUSTER: Final = "wasmdesk-demo-upstream"
#: the cyclic GC's young-generation threshold once a server runs (CPython's is 700)
YOUNG_GC_THRESHOLD: Final = 10_000
_NO_PLUGINS: Final = NoPluginsFilter()


class StartupKind(StrEnum):
    """Why the proxy refused to start: what a caller decides on (never the message text)."""

    PLUGINS = "plugins"  # a plugin failed to load, configure or start (strict start)
    CLUSTER = "cluster"  # a cluster cannot serve as configured
    LISTEN = "listen"  # the proxy's listener address could not be bound
    TLS = "tls"  # the listener's certificate could not be made or loaded
    ADMIN = "admin"  # the admin API's address could not be bound


class StartupError(Exception):
    """The proxy refused to start (a plugin failed to load, a port is taken...). ``kind``
    says which; ``address`` is the (host, port) that could not be bound (LISTEN, ADMIN)."""

    def __init__(
        self,
        message: str,
        kind: StartupKind = StartupKind.PLUGINS,
        address: tuple[str, int] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.address = address


class ProxyServer(ProxyCore):
    def __init__(
        self,
        config: ProxyConfig,
        *,
        engine: Engine | None = None,
        strict: bool = True,
        log_level: LogLevel = LogLevel.INFO,
        on_log: Callable[[LogRecord], None] | None = None,
        watch: bool = False,
        hold_gil: bool = False,
    ) -> None:
        self.config = config
        # guest calls keep the GIL (Engine.hold_gil): for a process with no other Python
        # thread to keep responsive, as ``wasmdesk serve``; not the app (its GUI thread)
        self.hold_gil = hold_gil
        self.strict = strict
        self.engine = engine
        self.log_level = log_level
        self.on_log = on_log
        self.watch = watch
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.stats = st.StatsStore()
        self.host: PluginHost | None = None
        self.manager: PluginManager = None  # type: ignore[assignment]
        self.pool: UpstreamPool = None  # type: ignore[assignment]
        self.write_batch: WriteBatch = None  # type: ignore[assignment]
        self.deadlines: Deadlines = None  # type: ignore[assignment]
        self.clusters: dict[str, Cluster] = {}
        self.default_cluster: Cluster | None = None
        self.routes = RouteTable((), None)
        self.demo: EchoServer | None = None
        self.tcp: TcpProxy | None = None  # the spec.tcp listeners (NETWORK plugins)
        self._servers: list[asyncio.base_events.Server] = []
        self.listen_address = ("", 0)
        self.admin_address = ("", 0)
        self.listener_tls: ListenerTlsRuntime | None = None  # spec.tls, read at start
        self.running = False
        self._stop_event: asyncio.Event | None = None
        self.log_seq = 0
        self.logs: list[tuple[int, LogRecord]] = []
        self._watch_task: asyncio.Task[None] | None = None
        # what the watcher last saw of each watched file: (mtime_ns, size, inode)
        self._mtimes: dict[str, tuple[int, int, int]] = {}
        # why the config file was last refused ("" since it last loaded): /plugins shows it
        self.config_error = ""
        # plugins that never loaded: the module version last tried, by name
        self._never_loaded_sha: dict[str, str] = {}
        self.active_requests = 0
        self.requests_total = 0
        self.open_connections = 0
        self.limits = _limits(config)
        self.on_request_done: list[Callable[[ExchangeState], None]] = []
        # when set, every new HTTP stream runs this filter instead of the plugin chain (an
        # embedding's own filter; the tests' probes of the exchange core)
        self.filter_factory: Callable[[ExchangeInfo], StreamFilter] | None = None
        # the lab's mock rules given on the command line or in the app (host.lab.mocks
        # answers callouts from them before the config's spec.mocks)
        self.lab_mocks: list[Any] = []
        # hot-path stats objects, resolved once
        s = self.stats
        self._rq_total = s.counter("http.downstream_rq_total")
        self._rq_class = {c: s.counter(f"http.downstream_rq_{c}xx") for c in range(1, 6)}
        self._rq_time = s.histogram("http.downstream_rq_time")
        self._cx_active = s.gauge("http.downstream_cx_active")
        self._cx_total = s.counter("http.downstream_cx_total")
        self._rq_active = s.gauge("http.downstream_rq_active")
        self._rq_http1 = s.counter("http.downstream_rq_http1_total")
        self._rq_http2 = s.counter("http.downstream_rq_http2_total")
        self._rq_grpc = s.counter("http.downstream_rq_grpc_total")

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the plugins and open the listeners. On failure (StartupError, or any
        other error) whatever was started is closed again, so the caller may retry,
        on this object too (e.g. after changing the ports in ``config``)."""
        try:
            await self._start()
        except BaseException:
            await self._undo_start()
            raise

    async def _start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        # first, so a certificate problem does not wait for the plugins to load
        self.listener_tls = self._listener_tls(self.config)
        self.host = PluginHost(self.engine, log_level=self.log_level, log_sink=self._log_sink)
        if self.hold_gil:
            self.host.engine.hold_gil = True
        self.host.node = self.config.node  # fixed at start, as Envoy's bootstrap node
        self.pool = UpstreamPool(self.loop)
        # one batch of held writes per loop: the clients' responses and the upstream
        # requests of a tick go out together (write_batch.py)
        self.write_batch = self.pool.write_batch
        self.deadlines = Deadlines(self.loop)  # the exchanges' timeouts on one timer
        self.pool.h2.count = self._count_cluster  # Envoy's cluster.<name>.upstream_* counters
        cache = user_cache_root() / "downloads"
        self.manager = PluginManager(self.loop, self.host, self.stats, cache_dir=cache)
        from host.lab.crash import CrashKeeper

        self.manager.failure_listeners.append(CrashKeeper(self.manager).on_request)
        self.stats.include_plugin_metrics(self.host.metrics)
        await self._apply_clusters(self.config)
        errors = await self.manager.apply(self.config)
        if errors and self.strict:
            raise StartupError("; ".join(_located(errors, self.config)))
        cfg = self.config
        tls = self.listener_tls
        try:
            srv = await self.loop.create_server(
                protocol_factory(self),
                cfg.listen_host,
                cfg.listen_port,
                reuse_address=True,
                backlog=1024,
                ssl=tls.context if tls is not None else None,
                ssl_handshake_timeout=tls.handshake_timeout_s if tls is not None else None,
            )
        except OSError as e:
            raise StartupError(
                f"cannot listen on {cfg.listen_host}:{cfg.listen_port}: {e.strerror or e}",
                StartupKind.LISTEN,
                (cfg.listen_host, cfg.listen_port),
            ) from None
        self._servers.append(srv)
        self.listen_address = _sockname(srv)
        if tls is not None:
            tls.stat_prefix = listener_stat_prefix(*self.listen_address)
        self.manager.set_listener(self.listen_address[1], cfg.direction)
        try:
            adm = await self.loop.create_server(
                lambda: AdminProtocol(self),
                cfg.admin_host,
                cfg.admin_port,
                reuse_address=True,
            )
        except OSError as e:
            raise StartupError(
                f"cannot listen on admin {cfg.admin_host}:{cfg.admin_port}: {e.strerror or e}",
                StartupKind.ADMIN,
                (cfg.admin_host, cfg.admin_port),
            ) from None
        self._servers.append(adm)
        self.admin_address = _sockname(adm)
        self.tcp = TcpProxy(self.loop, self.manager, self.stats)
        try:
            await self.tcp.apply(cfg)
        except TcpListenError as e:
            raise StartupError(str(e), StartupKind.LISTEN, e.address) from None
        self.running = True
        # Start-up objects (modules, VMs, config) live as long as the server: keep the
        # cyclic GC from rescanning them on every collection (tail latency).
        gc.collect()
        gc.freeze()
        # A young collection traverses the objects of the exchanges in flight, which
        # is about the same set however often it runs: collect every YOUNG_GC_THRESHOLD
        # allocations rather than CPython's 700 (a plugin's request: -5.7k instructions).
        first, second, third = gc.get_threshold()
        if 0 < first < YOUNG_GC_THRESHOLD:
            gc.set_threshold(YOUNG_GC_THRESHOLD, second, third)
        if self.watch:
            self._remember_mtimes()
            self._watch_task = self.loop.create_task(self._watch_loop())

    def _listener_tls(self, cfg: ProxyConfig) -> ListenerTlsRuntime | None:
        """The listener's TLS (``spec.tls``): the demo certificate made or reused, the
        context loaded. Read at start; a change needs a restart, as ``listen``."""
        if cfg.tls is None:
            return None
        demo_ca = None
        cert, key, client_ca = cfg.tls.cert, cfg.tls.key, cfg.tls.client_ca
        try:
            if cfg.tls.demo:
                demo = ensure_demo_cert()
                cert, key, demo_ca = demo.cert, demo.key, demo.ca
            context = server_context(cert, key, client_ca, ALPN_H2)
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            raise StartupError(
                f"listener TLS: cannot use {'the demo certificate' if cfg.tls.demo else cert}: "
                f"{getattr(e, 'strerror', None) or e}",
                StartupKind.TLS,
            ) from None
        return ListenerTlsRuntime(
            context,
            cert,
            key,
            client_ca,
            demo_ca,
            self.stats,
            handshake_timeout_s=min(10.0, cfg.request_headers_timeout_s),
        )

    async def _undo_start(self) -> None:
        """Close what a failed start() opened: listeners, the demo upstream, plugins."""
        self.running = False
        await self._close_listeners()
        await self._close_tcp()
        self.listen_address = self.admin_address = ("", 0)
        self.listener_tls = None
        if self.pool is not None:
            self.pool.close(list(self.clusters.values()))
        if self.demo is not None:
            self.demo.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.demo.server.wait_closed(), 2.0)
            self.demo = None
        self.clusters = {}
        self.default_cluster = None
        self.routes = RouteTable((), None)
        if self.host is not None:
            self.stats.remove_plugin_metrics(self.host.metrics)
        await self._close_plugins()

    async def _apply_clusters(self, config: ProxyConfig) -> None:
        clusters: dict[str, Cluster] = {}
        for c in config.clusters:
            old = self.clusters.get(c.name)
            if not c.forwards:
                # tcp:// clusters serve the spec.tcp listeners only
                if config.default_cluster == c.name:
                    raise StartupError(
                        f"cluster {c.name}: the proxy forwards to http://, https://, grpc:// "
                        f"and grpcs:// upstreams; {c.url} cannot be the default cluster",
                        StartupKind.CLUSTER,
                    )
                continue
            try:
                new = Cluster.from_url(c.name, c.url, c.timeout_s, c.ca_file, c.protocol)
            except (OSError, ValueError) as e:  # an unreadable caFile (ssl.SSLError too)
                why = f"cannot use caFile {c.ca_file}: {e}" if c.ca_file else str(e)
                raise StartupError(f"cluster {c.name}: {why}", StartupKind.CLUSTER) from None
            if old is not None and _same_upstream(old, new):
                old.timeout_s = new.timeout_s
                new = old  # keep its pooled connections (and TLS context)
            elif new.tls:
                prefix = f"cluster.{c.name}."
                new.count = lambda suffix, p=prefix: self.stats.counter(p + suffix).inc()
            clusters[c.name] = new
        default: Cluster | None
        if config.default_cluster:
            default = clusters[config.default_cluster]
        elif config.routes:
            default = None  # routes without a defaultCluster: no match is a 404, as Envoy
        elif (
            len(clusters) == 1
            and len(config.clusters) - _tcp_clusters(config) == 1
            and not any(c.url.lower().startswith(("grpc://", "grpcs://")) for c in config.clusters)
        ):
            # the only cluster is the default; a lone grpc:// or grpcs:// one is not (it
            # is there for callouts; defaultCluster or a route forwards to it)
            default = next(iter(clusters.values()))
        else:
            if self.demo is None:
                self.demo = await start_echo_server("127.0.0.1", 0)
            default = self.clusters.get(DEMO_CLUSTER) or Cluster(
                DEMO_CLUSTER, self.demo.host, self.demo.port
            )
            clusters[DEMO_CLUSTER] = default
        if self.pool is not None:
            self.pool.retire([c for n, c in self.clusters.items() if clusters.get(n) is not c])
        self.clusters = clusters
        self.default_cluster = default
        self.routes = RouteTable(config.routes, default.name if default is not None else None)
        self.manager.cluster_urls.update({c.name: (c.url, c.timeout_s) for c in config.clusters})
        self.manager.callouts.ca_files = {
            c.name: c.ca_file
            for c in config.clusters
            if c.ca_file and c.url.lower().startswith("https://")
        }
        self.manager.grpc_callouts.set_clusters(
            {c.name: GrpcCluster(_grpc_url(c), c.timeout_s, c.ca_file) for c in config.clusters}
        )
        if self.demo is not None:
            # built in: for http_call too, and kept when manager.apply() replaces the
            # configured clusters
            self.manager.builtin_cluster_urls[DEMO_CLUSTER] = (self.demo.url, 5.0)
            self.manager.cluster_urls[DEMO_CLUSTER] = (self.demo.url, 5.0)
        from host.lab.mocks import install_mocks

        install_mocks(self, config.mocks)  # spec.mocks (and --mocks): callouts answered here

    async def run_until_stopped(self) -> None:
        assert self._stop_event is not None
        await self._stop_event.wait()

    def request_stop(self) -> None:
        if self._stop_event is not None:
            self._stop_event.set()

    async def stop(self) -> None:
        self.running = False
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch_task
        await self._close_listeners()
        await self._close_tcp()
        self.pool.close(list(self.clusters.values()))
        if self.demo is not None:
            self.demo.close()
        await self._close_plugins()

    async def _close_listeners(self) -> None:
        for s in self._servers:
            s.close()
        for s in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.wait_closed(), 2.0)
        self._servers.clear()

    async def _close_tcp(self) -> None:
        if self.tcp is not None:
            await self.tcp.aclose()
            self.tcp = None

    async def _close_plugins(self) -> None:
        if self.manager is not None:
            await self.manager.aclose()
        if self.host is not None:
            self.host.close()
            self.host = None

    # -- ProxyCore (what the data path calls) ----------------------------------------------

    def route(self, headers: HeaderMap, info: ExchangeInfo) -> Cluster | None:
        """The request's cluster. The route is selected once, when the headers arrive
        (before the plugins, so they can read xds.route_name), and cached in ``info``;
        only a plugin's clear_route_cache makes the data path select it again from the
        headers as they are then (Envoy's route cache). None: no route (404)."""
        if info.route_name is not None:
            cached = self.clusters.get(info.cluster) if info.cluster else None
            if cached is not None or not info.cluster:
                return cached
            # the cluster went away in a config reload since: select again
        r = self.routes.select(headers)
        if r is None:
            info.route_name, info.cluster = "", ""
            return None
        info.route_name, info.cluster = r.name, r.cluster
        return self.clusters.get(r.cluster)

    def open_stream(
        self,
        cluster: Cluster,
        sink: ResponseSink,
        done: Callable[[UpstreamStream | None, str], None],
    ) -> None:
        self.pool.open_stream(cluster, sink, done)

    def new_filter(self, info: ExchangeInfo) -> StreamFilter:
        if self.filter_factory is not None:
            return self.filter_factory(info)
        if not self.manager.applied:
            return _NO_PLUGINS
        return ChainRun(self.manager, info, self.route)

    def exchange_started(self, ex: ExchangeState) -> None:
        (self._rq_http2 if ex.info.protocol == "HTTP/2" else self._rq_http1).inc()
        self.active_requests += 1
        self._rq_active.set(self.active_requests)

    def exchange_finished(self, ex: ExchangeState) -> None:
        self.active_requests -= 1
        self._rq_active.set(self.active_requests)
        self.requests_total += 1
        self._rq_total.inc()
        status = ex.info.status
        c = status // 100
        if 1 <= c <= 5:
            self._rq_class[c].inc()
        self._rq_time.record((time.monotonic() - ex.info.start) * 1000)
        if ex.grpc:
            self._rq_grpc.inc()
        if ex.info.outcome == "upstream_error":
            self.stats.counter(f"cluster.{ex.info.cluster or 'none'}.upstream_rq_error").inc()
        for fn in self.on_request_done:
            fn(ex)

    def _count_cluster(self, cluster: H2Cluster, suffix: str) -> None:
        self.stats.counter(f"cluster.{cluster.name}.{suffix}").inc()

    def connection_opened(self) -> None:
        self.open_connections += 1
        self._cx_total.inc()
        self._cx_active.inc()

    def connection_closed(self) -> None:
        self.open_connections -= 1
        self._cx_active.dec()

    def connection_rejected(self) -> None:
        self.stats.counter("listener.downstream_cx_overflow").inc()

    # -- logs -----------------------------------------------------------------------------

    def _log_sink(self, record: LogRecord) -> None:
        self.log_seq += 1
        self.logs.append((self.log_seq, record))
        if len(self.logs) > 5000:
            del self.logs[:1000]
        if self.on_log is not None:
            self.on_log(record)

    def logs_since(self, seq: int, limit: int = 2000) -> list[tuple[int, LogRecord]]:
        """Log records numbered after ``seq``, oldest first: at most the newest
        ``limit`` of them (a poller that fell behind skips to the recent lines, as
        the ring drops old ones anyway). Pass the last seq received to continue."""
        logs = self.logs
        if limit <= 0 or not logs or logs[-1][0] <= seq:
            return []
        # seq numbers only grow: walk back from the end, no scan of the whole ring
        start = len(logs)
        stop = max(0, len(logs) - limit)
        while start > stop and logs[start - 1][0] > seq:
            start -= 1
        return logs[start:]

    def logs_view(self, seq: int, limit: int = 1000) -> dict[str, Any]:
        """``GET /logs?since=SEQ``: the lines after ``seq`` as JSON and the next seq."""
        out = [dict(r.to_dict(), seq=s, time=r.time) for s, r in self.logs_since(seq, limit)]
        return {"next": self.log_seq, "logs": out}

    def requests_since(self, record_id: int, limit: int = 500) -> list[RequestRecord]:
        """Inspector records with an id after ``record_id``, oldest first: at most the
        newest ``limit`` still in the ring. Pass the last id received to continue.
        A read keeps the inspector's per-hop detail on for a while (``InspectorRing``)."""
        if self.manager is not None:
            self.manager.inspector.touch()
        recent = self.manager.recent if self.manager is not None else ()
        out: list[RequestRecord] = []
        if limit <= 0:
            return out
        for rec in reversed(recent):
            if rec.id <= record_id or len(out) >= limit:
                break
            out.append(rec)
        out.reverse()
        return out

    def set_log_level(self, name: str) -> None:
        level = LogLevel.parse(name)
        self.log_level = level
        if self.host is not None:
            self.host.log_level = level

    def log_level_name(self) -> str:
        return self.log_level.name.lower()

    # -- admin views ------------------------------------------------------------------------

    def stats_snapshot(self) -> st.StatsSnapshot:
        for slot in self.manager.slots.values():
            inst = slot.instance
            mem = inst.vm.memory_bytes() if inst is not None and not inst.closed else 0
            self.stats.gauge(f"wasm.{slot.name}.vm_memory_size").set(mem)
            self.stats.gauge(f"wasm.{slot.name}.failed").set(
                1 if slot.state in ("failed", "reloading") else 0
            )
        self.stats.gauge("wasm.paused_streams").set(self.manager.paused_streams)
        return self.stats.snapshot()

    def plugin_snapshots(self) -> list[PluginSnapshot]:
        """The plugins as values (what the app reads): the HTTP chain in its order, then the
        NETWORK (TCP) plugins in theirs; each snapshot says its ``type``."""
        return [s.snapshot() for s in (*self.manager.ordered, *self.manager.network_ordered)]

    def plugins_snapshot(self) -> list[dict[str, Any]]:
        """``plugin_snapshots`` as the admin API's JSON objects."""
        return [p.to_dict() for p in self.plugin_snapshots()]

    def wasm_calls_keep_gil(self) -> bool:
        """Whether guest calls keep the GIL now (``hold_gil`` and the native ticker)."""
        return self.host is not None and self.host.engine.calls_keep_gil

    def failing_closed(self) -> list[str]:
        network = self.tcp.applied() if self.tcp is not None else []
        return [
            s.name
            for s in (*self.manager.applied, *network)
            if s.state in ("failed", "reloading")
            and s.mode == "enforce"
            and s.effective_policy() != "FAIL_OPEN"
        ]

    def recent_requests(self, limit: int) -> list[dict[str, Any]]:
        self.manager.inspector.touch()  # a reader: record per-hop detail for a while
        recs = list(self.manager.recent)[-max(0, limit) :]
        return [r.to_dict() for r in recs]

    def tcp_snapshot(self) -> list[dict[str, Any]]:
        """The spec.tcp listeners: name, bound address, cluster, the NETWORK plugins each
        runs (or why not), open connections."""
        return self.tcp.snapshot() if self.tcp is not None else []

    def connections_since(self, record_id: int, limit: int = 500) -> list[ConnectionRecord]:
        """Connection inspector records with an id after ``record_id``, oldest first."""
        return self.tcp.ring.since(record_id, limit) if self.tcp is not None else []

    def recent_connections(self, limit: int) -> list[dict[str, Any]]:
        if self.tcp is None:
            return []
        recs = list(self.tcp.ring.recent)[-max(0, limit) :]
        return [r.to_dict() for r in recs]

    def config_dump(self) -> dict[str, Any]:
        cfg = self.current_config()
        return {
            "listen": f"{self.listen_address[0]}:{self.listen_address[1]}",
            "admin": f"{self.admin_address[0]}:{self.admin_address[1]}",
            "clusters": [
                {
                    "name": c.name,
                    "address": c.address,
                    "timeout_s": c.timeout_s,
                    "protocol": "HTTP/2" if c.protocol == "h2" else "HTTP/1.1",
                    "tls": c.tls,
                }
                for c in self.clusters.values()
            ],
            "default_cluster": self.default_cluster.name if self.default_cluster else None,
            "routes": [
                {"name": r.name, "match": _route_match_text(r), "cluster": r.cluster}
                for r in self.routes.routes
            ],
            "direction": cfg.direction,
            "tls": self.listener_tls.describe() if self.listener_tls is not None else None,
            "tcp": self.tcp_snapshot(),
            "plugins": self.plugins_snapshot(),
            "order": self._order_lines(cfg),
            "source": cfg.source,
            "yaml": dump_config(cfg),
        }

    def _order_lines(self, cfg: ProxyConfig) -> list[str]:
        """explain_order, with the plugins whose match leaves out this listener marked."""
        ordered = effective_order(list(cfg.plugins))
        lines = explain_order(ordered)
        for k, p in enumerate(ordered):
            slot = self.manager.slots.get(p.name) if self.manager is not None else None
            if slot is not None and slot.not_applied is not None:
                lines[k] += f"; not applied ({slot.not_applied})"
            if p.type == "NETWORK":  # its own chain, on the spec.tcp listeners
                lines[k] += "; NETWORK: runs on the TCP listeners"
        return lines

    def current_config(self) -> ProxyConfig:
        import dataclasses

        specs = tuple(
            self.manager.slots[p.name].spec if p.name in self.manager.slots else p
            for p in self.config.plugins
        )
        return dataclasses.replace(self.config, plugins=specs)

    def config_yaml(self) -> str:
        return dump_config(self.current_config())

    def set_plugin_mode(self, name: str, **kw: Any) -> dict[str, Any]:
        slot: PluginSlot = self.manager.set_mode(name, **kw)
        return slot.snapshot().to_dict()

    async def reload_plugin(self, name: str) -> PluginError | None:
        return await self.manager.reload(name)

    async def check_plugin(self, spec: PluginSpec) -> PluginError | None:
        """Check a plugin without adding it: fetch (and verify its sha256), compile,
        start and configure it in a scratch VM, then close that VM. Nothing running
        changes (a plugin of the same name or vm_id is not touched). None when it would
        load, else why not (the error ``apply_config`` would report)."""
        return await self.manager.check(spec)

    def reset_counters(self) -> None:
        self.stats.reset_counters()
        if self.host is not None:
            self.host.metrics.reset()
        for slot in self.manager.slots.values():
            slot.counters.clear()

    # -- live reconfiguration -----------------------------------------------------------------

    async def apply_config(self, config: ProxyConfig) -> list[PluginError]:
        """Swap in a new configuration while traffic flows. Listener addresses are
        kept (a change needs a restart); clusters, routes, the listener's direction and
        plugins follow the new config."""
        await self._apply_clusters(config)
        if self.manager.listener is not None:
            self.manager.listener = (self.manager.listener[0], config.direction)
        errors = await self.manager.apply(config)
        if config.tls != self.config.tls:
            self.manager.log_info("spec.tls changed: the listener's TLS changes at a restart")
        if self.tcp is not None:
            try:
                await self.tcp.apply(config)
            except TcpListenError as e:
                errors.append(PluginError(ErrorKind.LISTEN, "", str(e)))
                self.manager.log_error(str(e))
        self.config = config
        self.limits = _limits(config)  # new connections and timers use the new limits
        return errors

    async def reload_config_file(self) -> list[str]:
        """Apply the config file again (the watcher's change): the errors, as text."""
        path = self.config.source
        try:
            config = load_config(path)
        except ConfigError as e:
            msg = f"config reload refused, keeping the running config:\n{e}"
            self.config_error = msg
            self.manager.log_error(msg)
            return [msg]
        self.config_error = ""
        errors = await self.apply_config(config)
        self.manager.log_info(
            f"config reloaded from {path}" + (f" with {len(errors)} error(s)" if errors else "")
        )
        return [str(e) for e in errors]

    def _watched_files(self) -> list[str]:
        files = []
        if self.config.source and os.path.isfile(self.config.source):
            files.append(self.config.source)
        for p in self.config.plugins:
            if p.location_kind == "file":
                files.append(p.location)
        return files

    def _remember_mtimes(self) -> None:
        self._mtimes = {}
        for f in self._watched_files():
            sig = _file_signature(f)
            if sig is not None:
                self._mtimes[f] = sig

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self._watch_once()

    async def _watch_once(self) -> None:
        """One look at the watched files: apply what changed since the last look.

        What the files looked like is taken *before* the reload reads them and
        remembered after it: a write that lands while a (slow) reload runs shows up
        as a change at the next look instead of being marked as seen."""
        seen: dict[str, tuple[int, int, int]] = {}
        for f in self._watched_files():
            sig = _file_signature(f)
            if sig is not None:
                seen[f] = sig
        changed = [f for f, sig in seen.items() if self._mtimes.get(f) != sig]
        if not changed:
            return
        try:
            source = self.config.source
            if source and source in changed and os.path.isfile(source):
                await self.reload_config_file()
            # Plugin modules that changed on disk restart too, whether the config
            # came from a file (its text unchanged) or not (the app, parse_config).
            await self._reload_changed_modules()
        except Exception as e:  # watching must never stop the proxy
            self.manager.log_error(f"config watch error: {type(e).__name__}: {e}")
        # files the new config added were not looked at before: take them as they are
        for f in self._watched_files():
            if f not in seen:
                sig = _file_signature(f)
                if sig is not None:
                    seen[f] = sig
        self._mtimes = seen

    async def _reload_changed_modules(self) -> None:
        """Reload the plugins whose module file no longer matches (sha256): the running
        ones, and those that never loaded once their module changed (each version tried
        once)."""
        for name in list(self.manager.slots):
            slot = self.manager.slots.get(name)
            if slot is None or slot.spec.location_kind != "file":
                continue
            try:
                data = Path(slot.spec.location).read_bytes()
            except OSError:
                continue
            digest = hashlib.sha256(data).hexdigest()
            if slot.instance is None:
                if self._never_loaded_sha.get(name) == digest:
                    continue
                self._never_loaded_sha[name] = digest
                err = await self.manager.reload(name)
                self.manager.log_info(
                    f"plugin {name}: module changed on disk: "
                    + ("loaded" if err is None else f"still not loading: {err.text}")
                )
                continue
            if digest == slot.sha256:
                continue
            err = await self.manager.reload(name)
            self.manager.log_info(
                f"plugin {name}: module changed on disk: "
                + ("reloaded" if err is None else f"kept the old version: {err.text}")
            )


def _tcp_clusters(config: ProxyConfig) -> int:
    return sum(1 for c in config.clusters if c.url.lower().startswith("tcp://"))


def _route_match_text(r: Route) -> str:
    parts = []
    if r.prefix is not None:
        parts.append(f"prefix {r.prefix.decode()}")
    if r.path is not None:
        parts.append(f"path {r.path.decode()}")
    if r.authority is not None:
        parts.append(f"authority {r.authority.decode()}")
    parts += [f"header {k.decode()}: {v.decode()}" for k, v in r.headers]
    return ", ".join(parts) or "any request"


def _located(errors: list[PluginError], config: ProxyConfig) -> list[str]:
    """The errors as text, prefixed with ``file:line`` of their plugin's document (when
    the config came from a file), as config errors are."""
    where = {
        p.name: f"{p.source or config.source}:{p.line}"
        for p in config.plugins
        if (p.source or config.source)
        and not (p.source or config.source).startswith("<")
        and p.line > 0
    }
    return [f"{where[e.plugin]}: {e}" if e.plugin in where else str(e) for e in errors]


def _file_signature(path: str) -> tuple[int, int, int] | None:
    """(mtime_ns, size, inode) of a file, None when it cannot be read: a rewrite within
    the file system's timestamp granularity still changes the size or, when replaced
    atomically, the inode."""
    try:
        st_ = os.stat(path)
    except OSError:
        return None
    return (st_.st_mtime_ns, st_.st_size, st_.st_ino)


def _grpc_url(c: ClusterConfig) -> str:
    """The cluster's URL for gRPC callouts: an HTTP/2 cluster written as http:// (or
    https://) with ``protocol: h2`` serves them too, as grpc:// (grpcs://)."""
    if c.protocol == "h2":
        scheme, sep, rest = c.url.partition("://")
        if sep and scheme.lower() in ("http", "https"):
            return ("grpcs" if scheme.lower() == "https" else "grpc") + "://" + rest
    return c.url


def _same_upstream(old: Cluster, new: Cluster) -> bool:
    """Whether ``old``'s pooled connections can serve ``new`` (same peer, same protocol)."""
    return (old.host, old.port, old.protocol, old.tls, old.ca_file) == (
        new.host,
        new.port,
        new.protocol,
        new.tls,
        new.ca_file,
    )


def _limits(config: ProxyConfig) -> Limits:
    return Limits(config.request_headers_timeout_s, config.idle_timeout_s, config.max_connections)


def _sockname(server: asyncio.base_events.Server) -> tuple[str, int]:
    # (uvloop's ``sockets`` is a list, typeshed says tuple: read it untyped)
    sock = cast(Any, server).sockets[0].getsockname()
    return str(sock[0]), int(sock[1])
