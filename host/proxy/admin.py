"""The admin API: an Envoy-compatible subset on loopback (default 127.0.0.1:9901).

GET  /ready                      200 LIVE, or 503 naming plugins that fail traffic closed
GET  /stats[?format=json][&filter=RE][&usedonly]
GET  /stats/prometheus
GET  /config_dump                the effective configuration (JSON; ``?format=yaml`` for YAML)
GET  /plugins                    per plugin: state, mode, canary, failure, ABI, VM memory
GET  /requests[?limit=N]         the request inspector's recent requests, newest last
GET  /logs[?since=SEQ]           plugin and host log lines
GET  /logging                    current plugin log level
POST /logging?level=L            set it (trace, debug, info, warn, error, critical)
POST /plugins/{name}/mode        JSON or form: mode, canary-percent, canary-key, fail-strategy
POST /plugins/{name}/reload      reload from source (also clears a crash loop)
POST /reset_counters
POST /quitquitquit               stop the proxy (Envoy's name)

Mutations need POST, as in Envoy. It binds loopback only; the config refuses
anything else. Built on asyncio + httptools like the data path.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

import httptools

from host.proxy.http1 import reason

if TYPE_CHECKING:
    from host.proxy.server import ProxyServer

__all__ = ["AdminProtocol", "Response"]


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


def _json_or_form(body: bytes, query: dict[str, list[str]]) -> dict[str, Any]:
    data: dict[str, Any] = {k: v[-1] for k, v in query.items()}
    text = body.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        parsed = json.loads(text)
        if not isinstance(parsed, dict):
            raise ValueError("body must be a JSON object")
        data.update(parsed)
    elif text:
        data.update({k: v[-1] for k, v in parse_qs(text).items()})
    return data


def _ready(srv: ProxyServer, *_: Any) -> Response:
    bad = srv.failing_closed()
    if not srv.running:
        return Response(503, "PRE_INITIALIZING\n")
    if bad:
        return Response(503, "DEGRADED: " + ", ".join(bad) + " failed (fail closed)\n")
    return Response(200, "LIVE\n")


def _stats(srv: ProxyServer, method: str, q: dict[str, list[str]], *_: Any) -> Response:
    from host.proxy import stats as st

    flt = q.get("filter", [None])[-1]
    used = "usedonly" in q
    try:
        if flt:
            re.compile(flt)
    except re.error as e:
        return Response(400, f"invalid filter regex: {e}\n")
    snap = srv.stats_snapshot()
    if q.get("format", [""])[-1] == "json":
        return Response(200, st.render_json(snap, filter=flt, used_only=used))
    if q.get("format", [""])[-1] == "prometheus":
        return Response(
            200, st.render_prometheus(snap, filter=flt, used_only=used), "text/plain; version=0.0.4"
        )
    return Response(200, st.render_text(snap, filter=flt, used_only=used))


def _prometheus(srv: ProxyServer, method: str, q: dict[str, list[str]], *_: Any) -> Response:
    from host.proxy import stats as st

    flt = q.get("filter", [None])[-1]
    return Response(
        200,
        st.render_prometheus(srv.stats_snapshot(), filter=flt, used_only="usedonly" in q),
        "text/plain; version=0.0.4",
    )


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
                level = _json_or_form(body, {}).get("level")
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
        data = _json_or_form(body, q)
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
    if err:
        return Response(409, {"error": err, "kept": "the running version"})
    return Response(200, {"reloaded": name})


def _reset(srv: ProxyServer, *_: Any) -> Response:
    srv.reset_counters()
    return Response(200, "OK\n")


def _quit(srv: ProxyServer, *_: Any) -> Response:
    srv.loop.call_soon(srv.request_stop)
    return Response(200, "OK\n")


def _index(srv: ProxyServer, *_: Any) -> Response:
    return Response(200, (__doc__ or "").split("\n\n")[1] + "\n")


# (method set, pattern, handler)
ROUTES: list[tuple[frozenset[str], re.Pattern[str], Handler]] = [
    (frozenset({"GET"}), re.compile(r"^/$"), _index),
    (frozenset({"GET"}), re.compile(r"^/ready$"), _ready),
    (frozenset({"GET"}), re.compile(r"^/stats$"), _stats),
    (frozenset({"GET"}), re.compile(r"^/stats/prometheus$"), _prometheus),
    (frozenset({"GET"}), re.compile(r"^/config_dump$"), _config_dump),
    (frozenset({"GET"}), re.compile(r"^/plugins$"), _plugins),
    (frozenset({"GET"}), re.compile(r"^/requests$"), _requests),
    (frozenset({"GET"}), re.compile(r"^/logs$"), _logs),
    (frozenset({"GET", "POST"}), re.compile(r"^/logging$"), _logging),
    (frozenset({"POST"}), re.compile(r"^/plugins/([^/]+)/mode$"), _mode),
    (frozenset({"POST"}), re.compile(r"^/plugins/([^/]+)/reload$"), _reload),
    (frozenset({"POST"}), re.compile(r"^/reset_counters$"), _reset),
    (frozenset({"POST"}), re.compile(r"^/quitquitquit$"), _quit),
]


class AdminProtocol(asyncio.Protocol):
    MAX_BODY = 1 << 20

    def __init__(self, server: ProxyServer) -> None:
        self.srv = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.size = 0

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

    def on_url(self, url: bytes) -> None:
        self.url += url

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
        asyncio.get_running_loop().create_task(
            self._dispatch(method, self.url, b"".join(self.body), keep)
        )

    async def _dispatch(self, method: str, url: bytes, body: bytes, keep: bool) -> None:
        try:
            u = httptools.parse_url(url)
            path = (u.path or b"/").decode("latin-1")
            query = parse_qs((u.query or b"").decode("latin-1"), keep_blank_values=True)
        except httptools.HttpParserInvalidURLError:
            self._send(Response(400, "malformed URL\n"), keep)
            return
        resp: Response | None = None
        allowed: set[str] = set()
        for methods, pattern, handler in ROUTES:
            m = pattern.match(path)
            if m is None:
                continue
            allowed |= methods
            if method not in methods and not (method == "HEAD" and "GET" in methods):
                continue
            try:
                out = handler(self.srv, method, query, body, m)
                resp = await out if asyncio.iscoroutine(out) else out  # type: ignore[assignment]
            except Exception as e:  # a handler bug answers 500, never kills the admin API
                resp = Response(500, f"admin error: {type(e).__name__}: {e}\n")
            break
        if resp is None:
            if allowed:
                resp = Response(
                    405, f"method {method} not allowed; use {'/'.join(sorted(allowed))}\n"
                )
            else:
                resp = Response(404, f"no admin endpoint {path}\n")
        self._send(resp, keep, head=method == "HEAD")

    def _send(self, resp: Response, keep: bool, head: bool = False) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        head_bytes = (
            f"HTTP/1.1 {resp.status} {reason(resp.status)}\r\ncontent-type: {resp.ctype}\r\n"
            f"content-length: {len(resp.body)}\r\ncache-control: no-cache\r\n"
            f"{'' if keep else 'connection: close' + chr(13) + chr(10)}\r\n"
        ).encode()
        t.write(head_bytes + (b"" if head else resp.body))
        if not keep:
            t.close()
