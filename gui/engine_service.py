"""The desktop app's one door to the engine.

``EngineService`` owns the engine thread: a daemon thread running one asyncio loop
(uvloop when importable) with a ``host.proxy.server.ProxyServer`` on it. That thread
owns every wasmtime Store; nothing here lets the GUI thread call into wasm.

Commands go in as methods (thread-safe: each is scheduled on the engine loop);
changes come out as Qt signals (emitted on the engine thread, delivered queued to the
receivers' thread). Live data is *pulled*: every ``publish_interval_s`` the engine
thread builds an immutable ``_Published`` record (stats snapshot, plugin snapshot,
effective config) and stores it in one attribute, and appends new log lines and new
inspector summaries to bounded deques; ``snapshot()`` (the GUI's 10 Hz timer) reads the
attribute and drains the deques: no lock is taken, no engine object leaves the engine
thread, no per-request signal is sent.

This module must not touch widgets, and must not hand engine objects (slots, records,
the server) to callers: only frozen dataclasses, plain dicts and tuples.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from PySide6.QtCore import QObject, Signal

from gui import composer_send, traffic
from gui.tls_client import ListenerTls, trust_anchor
from host.lab import app_api as lab_api  # the lab's offline helpers, in plain values
from host.proxy.config import ProxyConfig
from host.proxy.errors import PluginError
from host.proxy.intercept import Interceptor, InterceptRule
from host.proxy.records import RequestRecord
from host.proxy.request_views import RequestGone, RequestSummary, RequestView
from host.proxy.server import ProxyServer, StartupError, StartupKind
from host.proxy.snapshots import PluginSnapshot
from host.proxy.stats import StatsSnapshot
from host.wasm import LogLevel

# ``lab_api``: what the app's Lab, Mocks, composer and inspector ask of the debugging lab
# (replays on the caller's worker thread with their own engine; plain values in and out)
__all__ = ["EngineService", "EngineSnapshot", "lab_api"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# fields of a plugin snapshot that change as traffic flows: not a "plugins changed" event
_VOLATILE = (
    "counters",
    "vm_memory_bytes",
    "reload_at",
    "reload_in_s",
    "contexts",
    "inflight_callouts",
    # an average over the newest requests: it moves with every request, and counted as a
    # change it made the chain panel rebuild 10 times a second under load
    "time_per_request_us",
)
# most taken per publish: log lines, inspector records (more than the engine's ring holds)
_LOGS_PER_PUBLISH = 2000
_RECORDS_PER_PUBLISH = 1000


@dataclass(frozen=True)
class _Published:
    seq: int
    time: float
    stats: StatsSnapshot
    plugins: tuple[PluginSnapshot, ...]
    config: ProxyConfig


@dataclass(frozen=True)
class EngineSnapshot:
    """What the GUI timer pulls: the latest published state plus what is new since the
    previous pull (log lines and inspector summaries, oldest first)."""

    seq: int
    time: float
    stats: StatsSnapshot
    plugins: tuple[PluginSnapshot, ...]
    config: ProxyConfig
    logs: tuple[Mapping[str, Any], ...]
    requests: tuple[RequestSummary, ...]
    dropped_logs: int = 0


def _loopback(host: str) -> str:
    return host if host in _LOOPBACK_HOSTS or host.startswith("127.") else "127.0.0.1"


def _listener_tls(server: ProxyServer) -> ListenerTls | None:
    """What a client of this server's listener trusts (``gui.tls_client``); None: plain."""
    rt = server.listener_tls
    if rt is None:
        return None
    return ListenerTls(trust_anchor(rt.cert, rt.demo_ca), rt.client_ca is not None)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency of the proxy
        return asyncio.new_event_loop()


def _plugin_key(p: PluginSnapshot) -> tuple[Any, ...]:
    return tuple(
        (f.name, repr(getattr(p, f.name))) for f in dataclasses.fields(p) if f.name not in _VOLATILE
    )


class EngineService(QObject):
    """Runs the proxy on its own thread; see the module docstring for the contract."""

    started = Signal()
    start_failed = Signal(str)
    stopped = Signal()
    plugins_changed = Signal(list)  # host.proxy.snapshots.PluginSnapshot values
    # host.proxy.errors.PluginError values: [] when every plugin took the new config
    config_applied = Signal(list)
    config_refused = Signal(list)  # a new plugin failed its checks: nothing was changed
    command_failed = Signal(str)
    plugin_reloaded = Signal(str, object)  # name, PluginError (None on success)
    response_received = Signal(dict)
    # host.proxy.request_views.RequestView, or RequestGone when it has left the ring
    request_details_received = Signal(object)
    traffic_progress = Signal(int, int)  # sent, planned
    traffic_finished = Signal(dict)
    # held requests changed (one caught or released): the held ones, a tuple of
    # host.proxy.request_views.HeldView; rare, user-armed, so a signal rather than a poll
    intercepts_changed = Signal(object)
    recording_changed = Signal(bool, str)  # on, the session file (the lab's Record)

    def __init__(
        self,
        config: ProxyConfig,
        *,
        listen: tuple[str, int] | None = None,
        admin: tuple[str, int] | None = None,
        log_level: LogLevel = LogLevel.INFO,
        publish_interval_s: float = 0.1,
        record_capacity: int = 500,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        lh, lp = listen if listen is not None else (config.listen_host, config.listen_port)
        ah, ap = admin if admin is not None else (config.admin_host, config.admin_port)
        self._config = config
        self._listen_req = (_loopback(lh), lp)
        self._admin_req = (_loopback(ah), ap)
        self._log_level = log_level
        self._interval = publish_interval_s
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ProxyServer | None = None
        self._stop_event: asyncio.Event | None = None
        self._latest: _Published | None = None
        self._logs: deque[dict[str, Any]] = deque(maxlen=5000)
        self._requests: deque[RequestSummary] = deque(maxlen=1000)
        # the full records behind the summaries handed out (engine thread only): what
        # fetch_request reads, so a listed request stays inspectable after the proxy's
        # own ring has moved on; frozen while capture is off
        self._records: deque[RequestRecord] = deque(maxlen=record_capacity)
        self.capture = True
        self._last_log_seq = 0
        self._last_record_id = 0
        self._plugin_keys: tuple[tuple[Any, ...], ...] = ()
        self._traffic_task: asyncio.Task[Any] | None = None
        self._interceptor: Interceptor | None = None
        self.intercept_timeout_s = 60.0
        self._tasks: set[asyncio.Future[Any]] = set()
        self.listen_address: tuple[str, int] = ("", 0)
        self.admin_address: tuple[str, int] = ("", 0)
        self.notes: list[str] = []  # start-up notes (a port fallback...)
        # the listener speaks TLS (spec.tls): what the app's own requests trust; None: plain
        self.listener_tls: ListenerTls | None = None
        self.running = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the engine thread; ``started`` or ``start_failed`` follows."""
        if self._thread is not None:
            raise RuntimeError("the engine was already started")
        self._thread = threading.Thread(
            target=self._thread_main, name="wasmdesk-engine", daemon=True
        )
        self._thread.start()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def stop(self) -> None:
        """Ask the engine to stop (non-blocking); ``stopped`` follows."""
        loop, ev = self._loop, self._stop_event
        if loop is not None and ev is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(ev.set)

    def close(self, timeout_s: float = 5.0) -> bool:
        """Stop the proxy and join the engine thread. True if the thread ended in time."""
        self.stop()
        t = self._thread
        if t is None:
            return True
        t.join(timeout_s)
        return not t.is_alive()

    def __enter__(self) -> EngineService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _thread_main(self) -> None:
        loop = _new_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main(loop))
        except Exception as e:  # never let the thread die silently
            _log.exception("engine thread failed")
            self.start_failed.emit(f"{type(e).__name__}: {e}")
        finally:
            self.running = False
            with contextlib.suppress(Exception):
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for t in pending:
                    t.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            self._loop = None
            loop.close()
            self.stopped.emit()

    async def _start_server(self) -> ProxyServer | str:
        """Start with the requested ports; a port that is taken falls back to an
        ephemeral one (the bound address is what the window shows)."""
        listen, admin = self._listen_req, self._admin_req
        for _attempt in range(3):
            cfg = dataclasses.replace(
                self._config,
                listen_host=listen[0],
                listen_port=listen[1],
                admin_host=admin[0],
                admin_port=admin[1],
            )
            server = ProxyServer(cfg, strict=False, log_level=self._log_level)
            try:
                await server.start()
                # keep the workspace's own listen/admin values in the config we publish
                server.config = dataclasses.replace(
                    server.config,
                    listen_host=self._config.listen_host,
                    listen_port=self._config.listen_port,
                    admin_host=self._config.admin_host,
                    admin_port=self._config.admin_port,
                )
                return server
            except StartupError as e:  # start() has closed what it opened
                if e.kind is StartupKind.ADMIN and admin[1] != 0:
                    self.notes.append(f"admin port {admin[1]} is taken; using a free port")
                    admin = (admin[0], 0)
                elif e.kind is StartupKind.LISTEN and listen[1] != 0:
                    self.notes.append(f"proxy port {listen[1]} is taken; using a free port")
                    listen = (listen[0], 0)
                else:
                    return str(e)
        return "could not find free ports"

    async def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        self._stop_event = asyncio.Event()
        self._loop = loop
        result = await self._start_server()
        if isinstance(result, str):
            self.start_failed.emit(result)
            return
        server = self._server = result
        # the app's inspector reads every request: keep the per-hop detail on
        server.manager.inspector.watch()
        self.listen_address = server.listen_address
        self.admin_address = server.admin_address
        self.listener_tls = _listener_tls(server)
        if self.listener_tls is not None and self.listener_tls.client_certificate_required:
            self.notes.append(
                "the listener requires client certificates (spec.tls.clientCa): the "
                "composer and the load generator have none, their requests will fail"
            )
        self.running = True
        self._publish()
        self.started.emit()
        publisher = loop.create_task(self._publish_loop())
        try:
            await self._stop_event.wait()
        finally:
            self.running = False
            publisher.cancel()
            if self._traffic_task is not None:
                self._traffic_task.cancel()
            if self._interceptor is not None:
                self._interceptor.disarm()
                self._interceptor.release_all()
            for t in list(self._tasks):
                t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
            await server.stop()
            self._server = None

    # -- publishing (engine thread) --------------------------------------------------------

    async def _publish_loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                self._publish()
            except Exception:  # a snapshot bug must not stop the proxy
                _log.exception("publishing a snapshot failed")

    def _publish(self) -> None:
        server = self._server
        if server is None:
            return
        stats = server.stats_snapshot()
        plugins = tuple(server.plugin_snapshots())
        prev = self._latest
        self._latest = _Published(
            seq=(prev.seq + 1) if prev else 1,
            time=time.monotonic(),
            stats=stats,
            plugins=plugins,
            config=server.current_config(),
        )
        # new log lines (a poller that fell behind skips to the newest ones)
        lines = server.logs_since(self._last_log_seq, _LOGS_PER_PUBLISH)
        if lines:
            self._last_log_seq = lines[-1][0]
            self._logs.extend(dict(r.to_dict(), seq=seq, time=r.time) for seq, r in lines)
        recs = server.requests_since(self._last_record_id, _RECORDS_PER_PUBLISH)
        if recs:
            self._last_record_id = recs[-1].id
            if self.capture:
                self._records.extend(recs)
                self._requests.extend(RequestSummary.of(r) for r in recs)
        keys = tuple(_plugin_key(p) for p in plugins)
        if keys != self._plugin_keys:
            self._plugin_keys = keys
            self.plugins_changed.emit(list(plugins))

    # -- pulls (any thread) ------------------------------------------------------------------

    def snapshot(self) -> EngineSnapshot | None:
        """The latest published state and everything new since the last call; None until
        the engine has started. Never blocks on the engine."""
        latest = self._latest
        if latest is None:
            return None
        logs = _drain(self._logs)
        reqs = _drain(self._requests)
        return EngineSnapshot(
            seq=latest.seq,
            time=latest.time,
            stats=latest.stats,
            plugins=latest.plugins,
            config=latest.config,
            logs=logs,
            requests=reqs,
        )

    @property
    def config(self) -> ProxyConfig:
        """The engine's effective config as last published (the initial one before start)."""
        latest = self._latest
        return latest.config if latest is not None else self._config

    # -- commands (any thread) ---------------------------------------------------------------

    def _submit(self, what: str, fn: Callable[[ProxyServer], Awaitable[None]]) -> bool:
        loop = self._loop
        if loop is None or not self.running:
            self.command_failed.emit(f"{what}: the engine is not running")
            return False

        async def run() -> None:
            server = self._server
            if server is None:
                self.command_failed.emit(f"{what}: the engine is not running")
                return
            try:
                await fn(server)
            except (KeyError, ValueError, TypeError) as e:
                text = str(e) if not isinstance(e, KeyError) else f"no plugin named {e.args[0]!r}"
                self.command_failed.emit(f"{what}: {text}")
            except Exception as e:
                _log.exception("%s failed", what)
                self.command_failed.emit(f"{what}: {type(e).__name__}: {e}")

        def schedule() -> None:
            task = loop.create_task(run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        try:
            loop.call_soon_threadsafe(schedule)
        except RuntimeError:  # the loop closed meanwhile
            self.command_failed.emit(f"{what}: the engine is not running")
            return False
        return True

    def apply_config(self, config: ProxyConfig, *, check_new: bool = False) -> bool:
        """Swap in a new config live; ``config_applied(errors)`` follows. A plugin whose
        new version fails keeps its running version (the engine's rule).

        ``check_new``: first fetch, compile, start and configure every plugin that is not
        running yet in a scratch VM; if one fails, nothing is applied and
        ``config_refused(errors)`` follows instead. (The engine itself would add such a
        plugin in the failed state, where FAIL_CLOSE answers 503 to every request: not
        what loading a broken file from the GUI should do.)"""

        async def do(server: ProxyServer) -> None:
            if check_new:
                errors = await self._check_new_plugins(server, config)
                if errors:
                    self.config_refused.emit(errors)
                    return
            errors = await server.apply_config(config)
            self._publish()
            self.config_applied.emit(list(errors))

        return self._submit("apply config", do)

    async def _check_new_plugins(
        self, server: ProxyServer, config: ProxyConfig
    ) -> list[PluginError]:
        # the engine's own check (fetch + sha256, compile, start, configure) in a scratch
        # VM, for the plugins the engine does not have yet
        have = {p.name for p in server.current_config().plugins}
        errors: list[PluginError] = []
        for spec in config.plugins:
            if spec.name in have:
                continue
            err = await server.check_plugin(spec)
            if err is not None:
                errors.append(err)
        return errors

    def set_plugin_mode(
        self,
        name: str,
        *,
        mode: str | None = None,
        canary_percent: float | None = None,
        canary_key: str | None = None,
        fail_strategy: str | None = None,
    ) -> bool:
        async def do(server: ProxyServer) -> None:
            server.set_plugin_mode(
                name,
                mode=mode,
                canary_percent=canary_percent,
                canary_key=canary_key,
                fail_strategy=fail_strategy,
            )
            self._publish()

        return self._submit(f"plugin {name}", do)

    def reload_plugin(self, name: str) -> bool:
        async def do(server: ProxyServer) -> None:
            err = await server.reload_plugin(name)
            self._publish()
            self.plugin_reloaded.emit(name, err)

        return self._submit(f"reload {name}", do)

    def set_capture(self, on: bool) -> None:
        """Pause (False) or resume taking new requests into the inspector feed; while
        paused, the requests already handed out stay fetchable."""
        self.capture = bool(on)

    def set_recording(self, on: bool) -> bool:
        """Record live traffic as a HAR session in the data directory (or stop);
        ``recording_changed`` answers with the file's path."""

        async def do(server: ProxyServer) -> None:
            from host.lab.record import new_recording_path, start_recording, stop_recording

            if on:
                rec = start_recording(server, new_recording_path())
                self.recording_changed.emit(True, str(rec.path))
            else:
                old = stop_recording(server)
                self.recording_changed.emit(False, str(old.path) if old else "")

        return self._submit("recording", do)

    def set_mocks(self, rules: list[dict[str, Any]]) -> bool:
        """Answer callouts matching these mock rules in place of the clusters ([]: off)."""
        rules = [dict(r) for r in rules]

        async def do(server: ProxyServer) -> None:
            from host.lab.mocks import install_mocks

            server.lab_mocks = rules
            install_mocks(server, server.config.mocks)

        return self._submit("mocks", do)

    def reset_counters(self) -> bool:
        async def do(server: ProxyServer) -> None:
            server.reset_counters()

        return self._submit("reset counters", do)

    def fetch_request(self, record_id: int) -> bool:
        """Ask for one inspector record in full (every hop); ``request_details_received``
        follows with its ``RequestView`` (built here, on the engine thread), or a
        ``RequestGone`` when it has left the inspector's ring."""

        async def do(server: ProxyServer) -> None:
            # ids only grow: the record, if still in the engine's ring, comes first
            newer = server.requests_since(record_id - 1, _RECORDS_PER_PUBLISH)
            for ring in (self._records, newer[:1]):
                for rec in reversed(ring):
                    if rec.id == record_id:
                        self.request_details_received.emit(RequestView.of(rec))
                        return
            self.request_details_received.emit(RequestGone(record_id))

        return self._submit("inspect request", do)

    def send_request(
        self,
        method: str,
        url_path: str,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        *,
        protocol: str = "HTTP/1.1",
        target: tuple[str, int] | None = None,
    ) -> bool:
        """Send one request through the proxy, in HTTP/1.1 or HTTP/2 (prior knowledge);
        ``response_received(dict)`` follows (with ``error`` set when there was no
        response, ``protocol`` what was spoken). ``target``: another loopback address
        instead of the proxy's."""
        if not url_path.startswith("/"):
            self.command_failed.emit(f"send request: the path must start with '/': {url_path!r}")
            return False
        if protocol not in ("HTTP/1.1", "HTTP/2"):
            self.command_failed.emit(f"send request: unknown protocol {protocol!r}")
            return False
        if not self._loopback_target(target):
            return False

        sent = list(headers)
        rid = next((v for k, v in sent if k.lower() == "x-request-id"), "")
        if not rid:  # our own id, kept by the proxy: the response finds its record
            rid = str(uuid.uuid4())
            sent.append(("x-request-id", rid))

        async def do(server: ProxyServer) -> None:
            host, port = target or server.listen_address
            tls = self.listener_tls if target is None else None
            if protocol == "HTTP/2":
                ctx = tls.context(("h2",)) if tls is not None else None
                d = await composer_send.fetch_h2(host, port, method, url_path, sent, body, tls=ctx)
            else:
                ctx = tls.context() if tls is not None else None
                r = await traffic.fetch(host, port, method, url_path, sent, body, tls=ctx)
                d = dict(r.to_dict())
                d["protocol"] = "HTTP/1.1"
            d.update(method=method, path=url_path, request_id=rid)
            self.response_received.emit(d)

        return self._submit("send request", do)

    def send_grpc(
        self,
        method: str,
        message: bytes,
        metadata: Sequence[tuple[str, str | bytes]] = (),
        deadline_s: float = 10.0,
        *,
        target: tuple[str, int] | None = None,
    ) -> bool:
        """One unary gRPC call through the proxy (``gui.composer_send.grpc_unary``: raw
        message bytes, no protobuf encoding); ``response_received(dict)`` follows with
        ``grpc_status``, ``grpc_message``, both metadata and the reply."""
        try:
            path = composer_send.check_grpc_method(method)
        except ValueError as e:
            self.command_failed.emit(f"send gRPC: {e}")
            return False
        if not (0 < deadline_s <= composer_send.MAX_DEADLINE_S):
            self.command_failed.emit(
                f"send gRPC: the deadline is 0..{composer_send.MAX_DEADLINE_S:g} s"
            )
            return False
        if not self._loopback_target(target):
            return False
        md = list(metadata)
        rid = next((str(v) for k, v in md if k == "x-request-id"), "")
        if not rid:
            rid = str(uuid.uuid4())
            md.append(("x-request-id", rid))

        async def do(server: ProxyServer) -> None:
            host, port = target or server.listen_address
            tls = self.listener_tls if target is None else None
            d = await composer_send.grpc_unary(
                host,
                port,
                path,
                message,
                md,
                deadline_s,
                tls=tls is not None,
                ca_file=tls.ca_file if tls is not None else None,
            )
            d.update(method="POST", path=path, request_id=rid)
            self.response_received.emit(d)

        return self._submit("send gRPC", do)

    def _loopback_target(self, target: tuple[str, int] | None) -> bool:
        if target is not None and _loopback(target[0]) != target[0]:
            self.command_failed.emit(f"send: {target[0]} is not a loopback address")
            return False
        return True

    def generate_traffic(self, rps: float = 200.0, seconds: float = 10.0) -> bool:
        """Bounded demo load through the proxy (see ``gui.traffic.run_load``);
        ``traffic_progress`` ~10 times a second, then ``traffic_finished``. A second call
        while one runs replaces it."""
        if not (0 < rps <= traffic.MAX_LOAD_RPS) or not (0 < seconds <= traffic.MAX_LOAD_SECONDS):
            self.command_failed.emit(
                f"generate traffic: rate must be 1..{traffic.MAX_LOAD_RPS} req/s and duration "
                f"0..{traffic.MAX_LOAD_SECONDS:g} s"
            )
            return False

        async def do(server: ProxyServer) -> None:
            if self._traffic_task is not None:
                self._traffic_task.cancel()
            host, port = server.listen_address
            task = asyncio.current_task()
            self._traffic_task = task
            try:
                tls = self.listener_tls
                result = await traffic.run_load(
                    host,
                    port,
                    rps,
                    seconds,
                    on_progress=self.traffic_progress.emit,
                    tls=tls.context() if tls is not None else None,
                )
            finally:
                if self._traffic_task is task:
                    self._traffic_task = None
            self.traffic_finished.emit(result.to_dict())

        return self._submit("generate traffic", do)

    def stop_traffic(self) -> bool:
        async def do(server: ProxyServer) -> None:
            if self._traffic_task is not None:
                self._traffic_task.cancel()

        return self._submit("stop traffic", do)

    # -- intercept ----------------------------------------------------------------------------

    def arm_intercept(self, plugin: str, stage: str = "request_headers", path: str = "") -> bool:
        """Hold the next request matching at ``plugin``'s hop before its ``stage``
        callback (``host.proxy.intercept``); ``intercepts_changed`` follows when one is
        caught. Bad input is refused through ``command_failed``."""
        try:
            rule = InterceptRule(plugin, stage, path_contains=path)
        except ValueError as e:
            self.command_failed.emit(str(e))
            return False

        async def do(server: ProxyServer) -> None:
            if not any(p.name == plugin for p in server.current_config().plugins):
                raise ValueError(f"intercept: no plugin named {plugin!r}")
            ic = self._interceptor
            if ic is None or server.manager.intercept is not ic:
                ic = self._interceptor = Interceptor(
                    asyncio.get_running_loop(),
                    timeout_s=self.intercept_timeout_s,
                    on_change=lambda: self._intercept_changed(server),
                )
            ic.arm(rule)
            server.manager.intercept = ic

        return self._submit("intercept", do)

    def disarm_intercept(self) -> bool:
        """Drop the rules and let every held request go on unchanged."""

        async def do(server: ProxyServer) -> None:
            ic = self._interceptor
            if ic is not None:
                ic.disarm()
                ic.release_all()
                self._intercept_changed(server)

        return self._submit("intercept", do)

    def resume_intercept(
        self, held_id: int, headers: Sequence[Sequence[str]] | None = None, body: str | None = None
    ) -> bool:
        """Let a held request go on, edited (headers as [name, value] pairs including the
        pseudo-headers, body at the request_body stage) or unchanged (None)."""

        async def do(server: ProxyServer) -> None:
            ic = self._interceptor
            if ic is None or not ic.resume(held_id, headers, body):
                raise ValueError(f"intercept: request #{held_id} is no longer held")

        return self._submit("intercept", do)

    def _intercept_changed(self, server: ProxyServer) -> None:
        ic = self._interceptor
        if ic is None:
            return
        if not ic.armed and not ic.held and server.manager.intercept is ic:
            server.manager.intercept = None  # back to the one attribute check
        self.intercepts_changed.emit(ic.held_views())

    def set_log_level(self, name: str) -> bool:
        """The least severe level plugins log at (``trace`` … ``critical``), as the
        admin API's ``/logging`` sets it; kept across engine restarts."""
        self._log_level = LogLevel.parse(name)  # ValueError on a bad name

        async def do(server: ProxyServer) -> None:
            server.set_log_level(name)

        return self._submit(f"log level {name}", do)

    @property
    def log_level(self) -> str:
        return self._log_level.name.lower()


def _drain(d: deque[_T]) -> tuple[_T, ...]:
    out: list[_T] = []
    pop = d.popleft
    with contextlib.suppress(IndexError):
        for _ in range(len(d)):
            out.append(pop())
    return tuple(out)
