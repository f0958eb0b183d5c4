"""The admin API: an Envoy-compatible subset on loopback (default 127.0.0.1:9901).

GET  /ready                      200 LIVE, or 503 naming plugins that fail traffic closed
GET  /stats[?format=json][&filter=RE][&usedonly]   filter: RE2, as Envoy
GET  /stats/prometheus           Istio's tag-encoded plugin metrics as istio_* with labels
GET  /config_dump                the effective configuration (JSON; ``?format=yaml`` for YAML)
GET  /plugins                    per plugin: state, mode, canary, failure, ABI, VM memory
GET  /requests[?limit=N]         the request inspector's recent requests, newest last
GET  /logs[?since=SEQ]           plugin and host log lines
GET  /logging                    current plugin log level
GET  /clusters[?format=json]     upstream clusters in Envoy's shape
GET  /server_info                version, state, uptime, options (Envoy's shape)
GET  /memory                     process RSS and each plugin VM's linear memory
GET  /help                       the endpoints with a line each
POST /logging?level=L            set it (trace, debug, info, warn, error, critical)
POST /plugins/{name}/mode        JSON: mode, canary-percent, canary-key, fail-strategy
POST /plugins/{name}/reload      reload from source (also clears a crash loop)
POST /reset_counters
POST /recording                  JSON {"state": "on"|"off"}: record as HAR, answers the path
POST /quitquitquit               stop the proxy (Envoy's name)

It binds loopback only (the config refuses anything else), and loopback is not enough
on a workstation, where any web page in the browser can send requests to
127.0.0.1:9901. So:

* a request whose ``Host`` is not this admin's own loopback address and port
  (``127.0.0.1:PORT``, ``localhost:PORT``, ``[::1]:PORT``, or the bound address)
  gets 403: a DNS-rebinding page (``Host: evil.example:9901``) cannot read
  ``/requests`` (request headers, tokens) or ``/config_dump``. A request with no
  ``Host`` (HTTP/1.0 tools; never a browser) is served;
* a POST carrying a browser's ``Origin`` other than the admin's own, or
  ``Sec-Fetch-Site`` other than ``same-origin``/``none``, gets 403;
* every POST needs ``Content-Type: application/json`` (415 otherwise) and a JSON
  object body (empty means ``{}``). A cross-site form cannot set that type, and a
  cross-site ``fetch`` with it needs a CORS preflight, which this API never grants.

Mutations need POST, as in Envoy. Slow admin work (rendering stats) runs off the
event loop that carries traffic. Built on asyncio + httptools like the data path.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import httptools

from host import __version__, _native
from host.proxy.http1 import reason
from host.safe_regex import PatternError, compile_pattern
from host.wasm.runtime import crossing as wasm_crossing

if TYPE_CHECKING:
    from host.proxy.config import ProxyConfig
    from host.proxy.errors import PluginError
    from host.proxy.http1 import Cluster
    from host.proxy.plugins import PluginManager
    from host.proxy.stats import StatsSnapshot, StatsStore
    from host.proxy.tls import ListenerTlsRuntime


class AdminServer(Protocol):
    """What the admin API uses of the proxy it serves (``host.proxy.server.ProxyServer``,
    which builds this API: typed here by what is used, so admin does not import it)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def stats(self) -> StatsStore: ...

    @property
    def manager(self) -> PluginManager: ...

    @property
    def clusters(self) -> dict[str, Cluster]: ...

    @property
    def config(self) -> ProxyConfig: ...

    @property
    def config_error(self) -> str: ...

    @property
    def running(self) -> bool: ...

    @property
    def listen_address(self) -> tuple[str, int]: ...

    @property
    def admin_address(self) -> tuple[str, int]: ...

    @property
    def listener_tls(self) -> ListenerTlsRuntime | None: ...

    def failing_closed(self) -> list[str]: ...

    def wasm_calls_keep_gil(self) -> bool: ...

    def stats_snapshot(self) -> StatsSnapshot: ...

    def config_dump(self) -> dict[str, Any]: ...

    def config_yaml(self) -> str: ...

    def plugins_snapshot(self) -> list[dict[str, Any]]: ...

    def recent_requests(self, limit: int) -> list[dict[str, Any]]: ...

    def recent_connections(self, limit: int) -> list[dict[str, Any]]: ...

    def logs_view(self, seq: int, limit: int = 1000) -> dict[str, Any]: ...

    def set_log_level(self, name: str) -> None: ...

    def log_level_name(self) -> str: ...

    def set_plugin_mode(self, name: str, **kw: Any) -> dict[str, Any]: ...

    async def reload_plugin(self, name: str) -> PluginError | None: ...

    def reset_counters(self) -> None: ...

    def request_stop(self) -> None: ...


# the handlers below name the server they serve by what it is
ProxyServer = AdminServer

__all__ = ["ROUTES", "AdminProtocol", "Response"]


class Response:
    __slots__ = ("body", "ctype", "status")

    def __init__(
        self,
        status: int,
        body: bytes | str | dict[str, Any] | list[Any],
        ctype: str = "text/plain; charset=utf-8",
    ) -> None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body, indent=2, default=str)
            ctype = "application/json"
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.ctype = ctype


Handler = Callable[
    ["ProxyServer", str, dict[str, list[str]], bytes, re.Match[str]], Awaitable[Response] | Response
]


def _json_object(body: bytes) -> dict[str, Any]:
    """The body of a POST: a JSON object (empty: ``{}``). The dispatcher has checked
    the content type already. Raises ValueError with a readable message."""
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"body is not JSON: {e}") from None
    if not isinstance(parsed, dict):
        raise ValueError("body must be a JSON object")
    return parsed


def _ready(srv: ProxyServer, *_: Any) -> Response:
    bad = srv.failing_closed()
    if not srv.running:
        return Response(503, "PRE_INITIALIZING\n")
    if bad:
        return Response(503, "DEGRADED: " + ", ".join(bad) + " failed (fail closed)\n")
    return Response(200, "LIVE\n")


async def _stats(srv: ProxyServer, method: str, q: dict[str, list[str]], *_: Any) -> Response:
    return await _render_stats(srv, q, q.get("format", [""])[-1])


async def _prometheus(srv: ProxyServer, method: str, q: dict[str, list[str]], *_: Any) -> Response:
    return await _render_stats(srv, q, "prometheus")


async def _render_stats(srv: ProxyServer, q: dict[str, list[str]], fmt: str) -> Response:
    """Snapshot on the loop (a copy of the tables), filter and render in a worker
    thread: the filter is RE2 (linear time, as Envoy's), and even a large store's
    rendering does not hold up the traffic on this loop."""
    from host.proxy import stats as st

    flt = q.get("filter", [None])[-1]
    used = "usedonly" in q
    try:
        rx = compile_pattern(flt) if flt else None
    except PatternError as e:
        return Response(400, f"invalid filter regex: {e}\n")
    snap = srv.stats_snapshot()
    if fmt == "json":
        return Response(200, await asyncio.to_thread(st.render_json, snap, rx, used))
    if fmt == "prometheus":
        text = await asyncio.to_thread(st.render_prometheus, snap, rx, used)
        return Response(200, text, "text/plain; version=0.0.4")
    return Response(200, await asyncio.to_thread(st.render_text, snap, rx, used))


def _config_dump(srv: ProxyServer, method: str, q: dict[str, list[str]], *_: Any) -> Response:
    if q.get("format", [""])[-1] == "yaml":
        return Response(200, srv.config_yaml(), "application/yaml")
    return Response(200, srv.config_dump())


def _plugins(srv: ProxyServer, *_: Any) -> Response:
    body: dict[str, Any] = {"plugins": srv.plugins_snapshot()}
    if srv.config_error:
        body["config_error"] = srv.config_error  # the last refused config file, and why
    return Response(200, body)


def _requests(srv: ProxyServer, method: str, q: dict[str, list[str]], *_: Any) -> Response:
    try:
        limit = int(q.get("limit", ["50"])[-1])
    except ValueError:
        return Response(400, "limit must be an integer\n")
    return Response(200, {"requests": srv.recent_requests(limit)})


def _connections(srv: ProxyServer, method: str, q: dict[str, list[str]], *_: Any) -> Response:
    try:
        limit = int(q.get("limit", ["50"])[-1])
    except ValueError:
        return Response(400, "limit must be an integer\n")
    return Response(200, {"connections": srv.recent_connections(limit)})


def _logs(srv: ProxyServer, method: str, q: dict[str, list[str]], *_: Any) -> Response:
    try:
        since = int(q.get("since", ["0"])[-1])
    except ValueError:
        return Response(400, "since must be an integer\n")
    return Response(200, srv.logs_view(since))


def _logging(
    srv: ProxyServer, method: str, q: dict[str, list[str]], body: bytes, *_: Any
) -> Response:
    if method == "POST":
        level = q.get("level", [None])[-1]
        if level is None:
            try:
                level = _json_object(body).get("level")
            except ValueError as e:
                return Response(400, f"{e}\n")
        if not level:
            return Response(400, "give ?level=trace|debug|info|warn|error|critical\n")
        try:
            srv.set_log_level(str(level))
        except ValueError as e:
            return Response(400, f"{e}\n")
    return Response(200, {"plugin_log_level": srv.log_level_name()})


def _mode(
    srv: ProxyServer, method: str, q: dict[str, list[str]], body: bytes, m: re.Match[str]
) -> Response:
    name = unquote(m.group(1))
    try:
        data: dict[str, Any] = {k: v[-1] for k, v in q.items()}
        data.update(_json_object(body))
    except ValueError as e:
        return Response(400, f"invalid body: {e}\n")
    try:
        pct = data.get("canary-percent", data.get("canary_percent"))
        slot = srv.set_plugin_mode(
            name,
            mode=data.get("mode"),
            canary_percent=float(pct) if pct is not None else None,
            canary_key=data.get("canary-key", data.get("canary_key")),
            fail_strategy=data.get(
                "fail-strategy", data.get("fail_strategy", data.get("failStrategy"))
            ),
        )
    except KeyError:
        return Response(404, f"no plugin named {name!r}\n")
    except (ValueError, TypeError) as e:
        return Response(400, f"{e}\n")
    return Response(200, slot)


async def _reload(
    srv: ProxyServer, method: str, q: dict[str, list[str]], body: bytes, m: re.Match[str]
) -> Response:
    name = unquote(m.group(1))
    try:
        err = await srv.reload_plugin(name)
    except KeyError:
        return Response(404, f"no plugin named {name!r}\n")
    if err is not None:
        # "error": the one-line text as before; "plugin_error": the same as fields
        return Response(
            409, {"error": err.text, "kept": "the running version", "plugin_error": err.to_dict()}
        )
    return Response(200, {"reloaded": name})


def _reset(srv: ProxyServer, *_: Any) -> Response:
    srv.reset_counters()
    return Response(200, "OK\n")


def _recording(
    srv: ProxyServer, method: str, q: dict[str, list[str]], body: bytes, *_: Any
) -> Response:
    """The debugging lab's recorder: on writes into the data directory, never a path
    the caller names (a web page or script must not pick files to write)."""
    from host.lab.record import new_recording_path, start_recording, stop_recording

    try:
        data: dict[str, Any] = {k: v[-1] for k, v in q.items()}
        data.update(_json_object(body))
    except ValueError as e:
        return Response(400, f"invalid body: {e}\n")
    state = data.get("state")
    if method == "POST" and state == "on":
        rec = start_recording(srv, new_recording_path())
        return Response(200, {"recording": True, "path": str(rec.path)})
    if method == "POST" and state == "off":
        old = stop_recording(srv)
        return Response(
            200,
            {
                "recording": False,
                "path": str(old.path) if old else None,
                "requests": len(old.entries) if old else 0,
            },
        )
    if method == "POST":
        return Response(400, 'give {"state": "on"} or {"state": "off"}\n')
    cur = srv.manager.recorder
    return Response(
        200,
        {
            "recording": cur is not None and cur.active,
            "path": str(cur.path) if cur else None,
            "requests": len(cur.entries) if cur else 0,
            "stopped": cur.stopped if cur else None,
        },
    )


def _quit(srv: ProxyServer, *_: Any) -> Response:
    srv.loop.call_soon(srv.request_stop)
    return Response(200, "OK\n")


def _index(srv: ProxyServer, *_: Any) -> Response:
    return Response(200, (__doc__ or "").split("\n\n")[1] + "\n")


def _help(srv: ProxyServer, *_: Any) -> Response:
    """Envoy's ``/help``: ``admin commands are:`` then ``  /path: what it does``
    (``/path (POST): ...`` for mutations)."""
    lines = ["admin commands are:"]
    for r in ROUTES:
        if r.label:
            post = " (POST)" if r.methods == frozenset({"POST"}) else ""
            lines.append(f"  {r.label}{post}: {r.help}")
    return Response(200, "\n".join(lines) + "\n")


# -- /clusters, /server_info, /memory: Envoy's shapes, Wasmdesk's content -------------------


def _cluster_rows(srv: ProxyServer) -> list[tuple[str, str, int, int]]:
    """``(name, host, port, upstream_rq_error)`` per cluster: the data path's clusters
    and the callout-only ones (``https://``) of the config, in config order."""
    counters = srv.stats.snapshot().counters
    rows: list[tuple[str, str, int, int]] = []
    seen: set[str] = set()
    for name, c in srv.clusters.items():
        rows.append((name, c.host, c.port, counters.get(f"cluster.{name}.upstream_rq_error", 0)))
        seen.add(name)
    for cc in srv.config.clusters:
        if cc.name in seen:
            continue
        u = urlsplit(cc.url)
        port = u.port or (443 if u.scheme == "https" else 80)
        errors = counters.get(f"cluster.{cc.name}.upstream_rq_error", 0)
        rows.append((cc.name, u.hostname or "", port, errors))
    return rows


def _clusters(srv: ProxyServer, method: str, q: dict[str, list[str]], *_: Any) -> Response:
    """Envoy's ``/clusters``: ``cluster::host:port::stat::value`` lines, or
    ``?format=json`` (``cluster_statuses``). We do no health checking or outlier
    detection, so every host is ``healthy``, as in Envoy without them."""
    rows = _cluster_rows(srv)
    if q.get("format", [""])[-1] == "json":
        statuses = []
        for name, host, port, errors in rows:
            statuses.append(
                {
                    "name": name,
                    "observability_name": name,
                    "added_via_api": False,
                    "host_statuses": [
                        {
                            "address": {"socket_address": {"address": host, "port_value": port}},
                            "stats": [{"name": "rq_error", "value": str(errors)}],
                            "health_status": {"eds_health_status": "HEALTHY"},
                            "weight": 1,
                            "hostname": host,
                            "locality": {},
                        }
                    ],
                }
            )
        return Response(200, {"cluster_statuses": statuses})
    out: list[str] = []
    for name, host, port, errors in rows:
        out.append(f"{name}::observability_name::{name}")
        out.append(f"{name}::added_via_api::false")
        hp = f"{name}::{_host_port(host, port)}"
        out.extend(
            [
                f"{hp}::rq_error::{errors}",
                f"{hp}::hostname::{host}",
                f"{hp}::health_flags::healthy",
                f"{hp}::weight::1",
                f"{hp}::region::",
                f"{hp}::zone::",
                f"{hp}::sub_zone::",
                f"{hp}::canary::false",
                f"{hp}::priority::0",
                f"{hp}::success_rate::-1",
                f"{hp}::local_origin_success_rate::-1",
            ]
        )
    return Response(200, "".join(line + "\n" for line in out))


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _process_uptime_s() -> float:
    """Seconds since this process started (Linux: /proc; elsewhere: since this
    module was imported, which ``wasmdesk serve`` does at start-up)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat(5); fields[0] is field 3
        with open("/proc/uptime", "rb") as f:
            boot_uptime = float(f.read().split()[0])
        return max(0.0, boot_uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED_AT


_IMPORTED_AT = time.monotonic()


def _server_info(srv: ProxyServer, *_: Any) -> Response:
    """Envoy's ``/server_info`` (``ServerInfo`` in proto JSON: durations as ``"12s"``).
    One process, no hot restart: both uptimes are the process's."""
    import wasmtime

    up = f"{int(_process_uptime_s())}s"
    cfg = srv.config
    return Response(
        200,
        {
            "version": f"wasmdesk/{__version__}/python-{sys.version.split()[0]}"
            f"/wasmtime-{getattr(wasmtime, '__version__', '?')}",
            "state": "LIVE" if srv.running else "PRE_INITIALIZING",
            "hot_restart_version": "disabled",
            "command_line_options": {
                "config_path": cfg.source,
                "log_level": srv.log_level_name(),
                "concurrency": 1,
                "mode": "Serve",
                "restart_epoch": 0,
                "disable_hot_restart": True,
            },
            "node": {
                "id": f"wasmdesk~{srv.listen_address[0]}~{os.getpid()}",
                "cluster": "wasmdesk",
                "user_agent_name": "wasmdesk",
                "user_agent_version": __version__,
            },
            "uptime_current_epoch": up,
            "uptime_all_epochs": up,
            # ours: the listener's TLS files (spec.tls), the demo CA for curl --cacert
            "listener_tls": srv.listener_tls.describe() if srv.listener_tls else None,
            # ours: "compiled" (the mypyc build of the data path) or "pure: why"
            "data_path": _native.current(),
            # ours: how guest and host calls cross into wasmtime, "C" or "ctypes"
            "wasm_crossing": wasm_crossing(),
            # ours: whether guest calls keep the GIL (Engine.hold_gil: wasmdesk serve)
            "wasm_calls_keep_gil": srv.wasm_calls_keep_gil(),
        },
    )


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return _peak_rss_bytes()


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


def _memory(srv: ProxyServer, *_: Any) -> Response:
    """Envoy's ``/memory`` fields (uint64 as strings, proto JSON). Envoy reports
    tcmalloc's heap; here ``allocated``, ``heap_size`` and ``total_physical_bytes``
    are the process's resident set, and ``wasm`` lists every plugin VM's linear
    memory (Envoy's ``/memory`` does not show Wasm heaps; people ask for it)."""
    vms: dict[int, dict[str, Any]] = {}
    for slot in srv.manager.ordered:
        inst = slot.instance
        if inst is None or inst.closed:
            continue
        entry = vms.setdefault(
            id(inst.vm),
            {"plugins": [], "vm_id": slot.spec.vm_id, "linear_memory_bytes": 0},
        )
        entry["plugins"].append(slot.name)
        entry["linear_memory_bytes"] = inst.vm.memory_bytes()
    rss = _rss_bytes()
    total = sum(v["linear_memory_bytes"] for v in vms.values())
    return Response(
        200,
        {
            "allocated": str(rss),
            "heap_size": str(rss),
            "pageheap_unmapped": "0",
            "pageheap_free": "0",
            "total_thread_cache": "0",
            "total_physical_bytes": str(rss),
            "peak_physical_bytes": str(_peak_rss_bytes()),
            "wasm": {"linear_memory_bytes": total, "vms": list(vms.values())},
        },
    )


class Route(NamedTuple):
    methods: frozenset[str]
    pattern: re.Pattern[str]
    handler: Handler
    label: str = ""  # the path as /help shows it; "" = not listed
    help: str = ""


_GET = frozenset({"GET"})
_POST = frozenset({"POST"})

ROUTES: list[Route] = [
    Route(_GET, re.compile(r"^/$"), _index, "/", "the endpoint index"),
    Route(_GET, re.compile(r"^/help$"), _help, "/help", "print out list of admin commands"),
    Route(_GET, re.compile(r"^/ready$"), _ready, "/ready", "print server state, LIVE or why not"),
    Route(
        _GET,
        re.compile(r"^/stats$"),
        _stats,
        "/stats",
        "print server stats (format=json|prometheus, filter=RE2, usedonly)",
    ),
    Route(
        _GET,
        re.compile(r"^/stats/prometheus$"),
        _prometheus,
        "/stats/prometheus",
        "print server stats in prometheus format",
    ),
    Route(
        _GET,
        re.compile(r"^/config_dump$"),
        _config_dump,
        "/config_dump",
        "dump the effective configuration (format=yaml)",
    ),
    Route(
        _GET,
        re.compile(r"^/plugins$"),
        _plugins,
        "/plugins",
        "per plugin: state, mode, canary, failure, ABI, VM memory, counters",
    ),
    Route(
        _GET,
        re.compile(r"^/requests$"),
        _requests,
        "/requests",
        "recent requests with every plugin hop (limit=N)",
    ),
    Route(
        _GET,
        re.compile(r"^/connections$"),
        _connections,
        "/connections",
        "recent TCP connections with every NETWORK plugin hop (limit=N)",
    ),
    Route(_GET, re.compile(r"^/logs$"), _logs, "/logs", "plugin log lines (since=SEQ)"),
    Route(
        frozenset({"GET", "POST"}),
        re.compile(r"^/logging$"),
        _logging,
        "/logging",
        "query (GET) or change (POST, level=L) the plugin log level",
    ),
    Route(
        _GET,
        re.compile(r"^/clusters$"),
        _clusters,
        "/clusters",
        "upstream cluster status (format=json)",
    ),
    Route(
        _GET,
        re.compile(r"^/server_info$"),
        _server_info,
        "/server_info",
        "print server version/status information",
    ),
    Route(
        _GET,
        re.compile(r"^/memory$"),
        _memory,
        "/memory",
        "print current allocation/heap usage and each plugin VM's linear memory",
    ),
    Route(
        _POST,
        re.compile(r"^/plugins/([^/]+)/mode$"),
        _mode,
        "/plugins/{name}/mode",
        "set mode, canary-percent, canary-key, fail-strategy (JSON body)",
    ),
    Route(
        _POST,
        re.compile(r"^/plugins/([^/]+)/reload$"),
        _reload,
        "/plugins/{name}/reload",
        "reload a plugin from its source (also clears a crash loop)",
    ),
    Route(
        _POST,
        re.compile(r"^/reset_counters$"),
        _reset,
        "/reset_counters",
        "reset all counters to zero",
    ),
    Route(
        frozenset({"GET", "POST"}),
        re.compile(r"^/recording$"),
        _recording,
        "/recording",
        'record traffic as HAR in the data directory (POST {"state": "on"|"off"})',
    ),
    Route(_POST, re.compile(r"^/quitquitquit$"), _quit, "/quitquitquit", "exit the server"),
]


# -- who may call: Host, Origin / Sec-Fetch-Site, content type -----------------------------------

_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_SAFE_FETCH_SITES = frozenset({"same-origin", "none"})


def allowed_hosts(bound_host: str, port: int) -> frozenset[str]:
    """``Host`` values this admin answers: its loopback names with its own port (and
    without a port when that is 80, the HTTP default)."""
    bound = f"[{bound_host}]" if ":" in bound_host else bound_host
    names = {n.lower() for n in (*_LOOPBACK_NAMES, bound) if n}
    out = {f"{n}:{port}" for n in names}
    if port == 80:
        out |= names
    return frozenset(out)


def _refuse(
    srv: ProxyServer, method: str, path: str, headers: dict[str, list[str]]
) -> Response | None:
    """403 / 415 for a request a web page could have forged; None: go ahead."""
    host, port = srv.admin_address
    hosts = allowed_hosts(host, port)
    given = headers.get("host", [])
    if len(given) > 1:
        return Response(400, "more than one Host header\n")
    if given and given[0].strip().lower() not in hosts:
        return Response(
            403,
            f"admin API: Host {given[0].strip()!r} is not this admin's address; call it as "
            f"http://127.0.0.1:{port} (requests for other host names are refused, so a web "
            "page cannot reach it through DNS rebinding)\n",
        )
    if method in ("GET", "HEAD"):
        return None
    origins = headers.get("origin", [])
    if origins:
        origin = origins[-1].strip().lower()
        if origin not in {f"http://{h}" for h in hosts}:
            return Response(
                403,
                f"admin API: refused a {method} from origin {origins[-1].strip()!r}: changes "
                "are accepted only from the admin's own origin or from tools (curl, the app, "
                "the CLI) that send no Origin\n",
            )
    sites = headers.get("sec-fetch-site", [])
    if sites and sites[-1].strip().lower() not in _SAFE_FETCH_SITES:
        return Response(
            403,
            f"admin API: refused a cross-site {method} (Sec-Fetch-Site: {sites[-1].strip()})\n",
        )
    return None


def _needs_json(
    method: str, path: str, port: int, headers: dict[str, list[str]]
) -> Response | None:
    """415 unless a POST says ``Content-Type: application/json``."""
    ctype = (headers.get("content-type") or [""])[-1]
    if ctype.split(";", 1)[0].strip().lower() == "application/json":
        return None
    return Response(
        415,
        f"admin API: {method} {path} needs 'content-type: application/json' and a JSON object "
        f"body (use {{}} when there is nothing to say), e.g.\n"
        f"  curl -X POST -H 'content-type: application/json' -d '{{}}' "
        f"http://127.0.0.1:{port}{path}\n"
        "(a web page cannot send that to another origin without a CORS preflight, which "
        "this API never grants)\n",
    )


class AdminProtocol(asyncio.Protocol):
    MAX_BODY = 1 << 20
    MAX_HEADERS = 100

    def __init__(self, server: ProxyServer) -> None:
        self.srv = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.size = 0
        self.headers: dict[str, list[str]] = {}
        self.nheaders = 0
        # responses go out in request order even when a handler awaits (pipelining)
        self._last: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._send(Response(400, "malformed request\n"), keep=False)

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []
        self.size = 0
        self.headers = {}
        self.nheaders = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.nheaders += 1
        if self.nheaders <= self.MAX_HEADERS:
            key = name.decode("latin-1").lower()
            self.headers.setdefault(key, []).append(value.decode("latin-1"))

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size <= self.MAX_BODY:
            self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        keep = self.parser.should_keep_alive()
        if self.size > self.MAX_BODY:
            self._send(Response(413, "body too large\n"), keep=False)
            return
        if self.nheaders > self.MAX_HEADERS:
            self._send(Response(431, "too many headers\n"), keep=False)
            return
        self._last = asyncio.get_running_loop().create_task(
            self._dispatch(method, self.url, b"".join(self.body), keep, self.headers, self._last)
        )

    async def _dispatch(
        self,
        method: str,
        url: bytes,
        body: bytes,
        keep: bool,
        headers: dict[str, list[str]],
        before: asyncio.Task[None] | None,
    ) -> None:
        resp = await self._respond(method, url, body, headers)
        if before is not None and not before.done():
            try:
                await before
            except BaseException:  # its failure is its own; this response still goes out
                pass
        self._send(resp, keep, head=method == "HEAD")

    async def _respond(
        self, method: str, url: bytes, body: bytes, headers: dict[str, list[str]]
    ) -> Response:
        try:
            u = httptools.parse_url(url)
            path = (u.path or b"/").decode("latin-1")
            query = parse_qs((u.query or b"").decode("latin-1"), keep_blank_values=True)
        except httptools.HttpParserInvalidURLError:
            return Response(400, "malformed URL\n")
        refused = _refuse(self.srv, method, path, headers)
        if refused is not None:
            return refused
        allowed: set[str] = set()
        for route in ROUTES:
            m = route.pattern.match(path)
            if m is None:
                continue
            allowed |= route.methods
            if method not in route.methods and not (method == "HEAD" and "GET" in route.methods):
                continue
            if method == "POST":
                bad = _needs_json(method, path, self.srv.admin_address[1], headers)
                if bad is not None:
                    return bad
            try:
                out = route.handler(self.srv, method, query, body, m)
                return await out if asyncio.iscoroutine(out) else out  # type: ignore[return-value]
            except Exception as e:  # a handler bug answers 500, never kills the admin API
                return Response(500, f"admin error: {type(e).__name__}: {e}\n")
        if allowed:
            return Response(405, f"method {method} not allowed; use {'/'.join(sorted(allowed))}\n")
        return Response(404, f"no admin endpoint {path}\n")

    def _send(self, resp: Response, keep: bool, head: bool = False) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        head_bytes = (
            f"HTTP/1.1 {resp.status} {reason(resp.status)}\r\ncontent-type: {resp.ctype}\r\n"
            f"content-length: {len(resp.body)}\r\ncache-control: no-cache\r\n"
            f"x-content-type-options: nosniff\r\n"
            f"{'' if keep else 'connection: close' + chr(13) + chr(10)}\r\n"
        ).encode()
        t.write(head_bytes + (b"" if head else resp.body))
        if not keep:
            t.close()
