"""A small HTTP/1.1 client for the desktop app's request composer and demo load.

Runs on the engine thread's asyncio loop (it is driven by ``gui.engine_service``), talks
to the local proxy on loopback only, and parses responses with httptools (the parser
the proxy itself uses). Load is bounded twice: by request count (rps x seconds, both
capped) and by wall time. No Qt here: results go back through plain callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httptools

__all__ = [
    "DEMO_MIX",
    "KEEP_UP_SHARE",
    "MAX_LOAD_RPS",
    "MAX_LOAD_SECONDS",
    "HttpResponse",
    "LoadResult",
    "check_load_input",
    "fetch",
    "load_status",
    "run_load",
]

MAX_LOAD_RPS = 2000
MAX_LOAD_SECONDS = 120.0
_LOOPBACK = ("127.0.0.1", "localhost", "::1")

# The "Generate traffic" mix: public and private paths, with and without the demo token,
# a few upstream errors, so every graph (classes, log-only intent, canary) has something.
DEMO_MIX: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("GET", "/", ()),
    ("GET", "/api/items", (("authorization", "Bearer demo-token"),)),
    ("GET", "/public/hello", ()),
    ("POST", "/api/echo", (("content-type", "text/plain"),)),
    ("GET", "/health", ()),
    ("GET", "/api/items", ()),
    ("GET", "/status/404", ()),
    ("GET", "/api/orders", (("authorization", "Bearer demo-token"),)),
    ("GET", "/public/hello", ()),
    ("GET", "/status/503", ()),
)


@dataclass
class HttpResponse:
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    elapsed_ms: float = 0.0
    error: str = ""
    keep_alive: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "headers": [list(h) for h in self.headers],
            "body": self.body.decode("utf-8", "replace"),
            "body_size": len(self.body),
            "elapsed_ms": round(self.elapsed_ms, 3),
            "error": self.error,
        }


class _Parser:
    def __init__(self, resp: HttpResponse) -> None:
        self.resp = resp
        self.body: list[bytes] = []
        self.done = False
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.resp.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


def _request_bytes(
    method: str, path: str, host: str, port: int, headers: Sequence[tuple[str, str]], body: bytes
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}:{port}"]
    names = set()
    for k, v in headers:
        names.add(k.lower())
        lines.append(f"{k}: {v}")
    if body or method in ("POST", "PUT", "PATCH"):
        if "content-length" not in names:
            lines.append(f"content-length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    data: bytes,
    head_only: bool,
) -> HttpResponse:
    resp = HttpResponse()
    p = _Parser(resp)
    writer.write(data)
    await writer.drain()
    while not p.done:
        chunk = await reader.read(65536)
        if not chunk:
            if resp.status == 0 and not p.body:
                raise ConnectionError("connection closed before a response")
            break  # close-delimited body
        p.parser.feed_data(chunk)
        if resp.status == 0:
            with contextlib.suppress(Exception):
                resp.status = p.parser.get_status_code()
        if head_only and resp.status and not p.done:
            # a HEAD response has no body whatever its content-length says
            break
    resp.status = p.parser.get_status_code() or resp.status
    resp.body = b"".join(p.body)
    resp.keep_alive = p.done and p.parser.should_keep_alive()
    return resp


def _check_target(host: str) -> None:
    if host not in _LOOPBACK and not host.startswith("127."):
        raise ValueError(f"the composer only talks to loopback, not {host!r}")


async def fetch(
    host: str,
    port: int,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    timeout_s: float = 10.0,
    tls: ssl.SSLContext | None = None,
) -> HttpResponse:
    """One request on a fresh connection (``connection: close``); over TLS with ``tls``
    (a verifying client context: ``gui.tls_client``)."""
    _check_target(host)
    t0 = time.perf_counter()
    data = _request_bytes(method, path, host, port, [*headers, ("connection", "close")], body)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port, ssl=tls)
            resp = await _exchange(reader, writer, data, method == "HEAD")
    except TimeoutError:
        resp = HttpResponse(error=f"timed out after {timeout_s:g} s")
    except (OSError, ConnectionError, httptools.HttpParserError) as e:
        resp = HttpResponse(error=f"{type(e).__name__}: {e}")
    finally:
        if writer is not None:
            writer.close()
    resp.elapsed_ms = (time.perf_counter() - t0) * 1000
    return resp


# below this share of the planned rate, the generator "cannot keep up"
KEEP_UP_SHARE = 0.9


def check_load_input(rps: float, seconds: float) -> str:
    """Empty when a rate and a duration are within the generator's bounds, else the
    message for the user (the input is refused, never clamped)."""
    if not (1 <= rps <= MAX_LOAD_RPS):
        return f"rate {rps:g} req/s is out of range: use 1 to {MAX_LOAD_RPS} req/s"
    if not (0.5 <= seconds <= MAX_LOAD_SECONDS):
        return f"duration {seconds:g} s is out of range: use 0.5 to {MAX_LOAD_SECONDS:g} s"
    return ""


def load_status(
    sent: int, planned: int, rps: float, elapsed_s: float, result: dict[str, Any] | None = None
) -> tuple[str, bool]:
    """(text, behind) for the header while load runs (``result`` None) and after it:
    sent vs planned, achieved vs planned rate, and whether the generator fell behind
    its schedule (fewer than KEEP_UP_SHARE of the requests due by now were sent)."""
    if result is not None:
        sent = int(result.get("sent") or 0)
        planned = int(result.get("planned") or planned)
        elapsed_s = float(result.get("elapsed_s") or elapsed_s)
    achieved = sent / elapsed_s if elapsed_s > 0 else 0.0
    due = min(planned, rps * elapsed_s)
    behind = elapsed_s >= 1.0 and sent < KEEP_UP_SHARE * due
    if result is None:
        text = f"traffic {sent}/{planned} · {achieved:.0f} of {rps:g} req/s"
        if behind:
            text += " · cannot keep up"
        return text, behind
    stopped = bool(result.get("cancelled"))
    behind = behind and not stopped
    text = f"traffic {'stopped' if stopped else 'done'}: {sent}/{planned} sent"
    text += f" · {achieved:.0f} of {rps:g} req/s"
    if not stopped and sent < planned:
        behind = True
        text += " · could not keep up (the proxy or this machine is too slow)"
    elif behind:
        text += " · fell behind the planned rate"
    if result.get("errors"):
        text += f" · {result['errors']} errors"
    return text, behind


@dataclass
class LoadResult:
    planned: int
    sent: int = 0
    ok: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    cancelled: bool = False
    last_error: str = ""
    rps: float = 0.0  # the planned rate

    def to_dict(self) -> dict[str, Any]:
        return {
            "planned": self.planned,
            "rps": self.rps,
            "achieved_rps": round(self.sent / self.elapsed_s, 1) if self.elapsed_s > 0 else 0.0,
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "elapsed_s": round(self.elapsed_s, 3),
            "cancelled": self.cancelled,
            "last_error": self.last_error,
        }


async def run_load(
    host: str,
    port: int,
    rps: float,
    seconds: float,
    mix: Sequence[tuple[str, str, Sequence[tuple[str, str]]]] = DEMO_MIX,
    on_progress: Callable[[int, int], None] | None = None,
    progress_interval_s: float = 0.1,
    tls: ssl.SSLContext | None = None,
) -> LoadResult:
    """Send ``rps`` requests per second for ``seconds`` over keep-alive connections
    (TLS ones with ``tls``), cycling through ``mix``. Bounded: at most MAX_LOAD_RPS x
    MAX_LOAD_SECONDS requests and ``seconds + 10`` s of wall time. Cancelling the task
    stops it early."""
    _check_target(host)
    if not (0 < rps <= MAX_LOAD_RPS):
        raise ValueError(f"requests per second must be within 1..{MAX_LOAD_RPS}, got {rps:g}")
    if not (0 < seconds <= MAX_LOAD_SECONDS):
        raise ValueError(f"duration must be within 0..{MAX_LOAD_SECONDS:g} s, got {seconds:g}")
    if not mix:
        raise ValueError("the request mix is empty")
    total = max(1, int(rps * seconds))
    result = LoadResult(planned=total, rps=rps)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    deadline = t0 + seconds + 10.0
    next_index = 0
    workers = max(2, min(64, int(rps // 25) + 2))
    encoded = [
        (m, _request_bytes(m, p, host, port, h, b"hello wasmdesk" if m == "POST" else b""))
        for m, p, h in mix
    ]

    async def worker() -> None:
        nonlocal next_index
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while next_index < total and loop.time() < deadline:
                i = next_index
                next_index += 1
                due = t0 + i / rps
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                method, data = encoded[i % len(encoded)]
                try:
                    if conn is None:
                        conn = await asyncio.open_connection(host, port, ssl=tls)
                    async with asyncio.timeout(max(0.1, deadline - loop.time())):
                        resp = await _exchange(conn[0], conn[1], data, method == "HEAD")
                    result.sent += 1
                    result.ok += 1
                    result.statuses[resp.status] = result.statuses.get(resp.status, 0) + 1
                    if not resp.keep_alive:
                        conn[1].close()
                        conn = None
                except (OSError, ConnectionError, TimeoutError, httptools.HttpParserError) as e:
                    result.sent += 1
                    result.errors += 1
                    result.last_error = f"{type(e).__name__}: {e}"
                    if conn is not None:
                        conn[1].close()
                        conn = None
        finally:
            if conn is not None:
                conn[1].close()

    async def progress() -> None:
        while True:
            await asyncio.sleep(progress_interval_s)
            if on_progress is not None:
                on_progress(result.sent, total)

    ticker = loop.create_task(progress())
    tasks = [loop.create_task(worker()) for _ in range(workers)]
    try:
        await asyncio.gather(*tasks)
    except asyncio.CancelledError:
        result.cancelled = True
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    result.elapsed_s = loop.time() - t0
    if on_progress is not None:
        on_progress(result.sent, total)
    return result
