"""Fixtures shared by every test package: a real HTTP upstream on 127.0.0.1. Also how the
whole suite is spread over CPUs (pytest-xdist, ``-n auto --dist loadfile`` in pyproject):
see the two hooks at the end."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Upstream:
    url: str
    requests: list[dict[str, object]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    """``/check``: 200 + "user-<token>" when an authorization header is present, else 403.
    ``/slow?ms=N``: answers after N ms. ``/status/N``: status N. Anything else echoes JSON."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def _body(self) -> bytes:
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        body = self._body()
        self.server.record.requests.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers.items()),
             "body": body.decode("utf-8", "replace")}
        )
        path = self.path
        if path.startswith("/check"):
            auth = self.headers.get("authorization")
            if auth:
                self._send(200, f"user-{auth.split()[-1]}\n".encode())
            else:
                self._send(403, b"no token\n")
        elif path.startswith("/slow"):
            ms = int(path.split("ms=")[-1]) if "ms=" in path else 500
            time.sleep(ms / 1000)
            self._send(200, b"slow\n")
        elif path.startswith("/status/"):
            self._send(int(path.rsplit("/", 1)[-1]), b"status\n")
        else:
            echo = {"method": self.command, "path": path, "headers": dict(self.headers.items()),
                    "body": body.decode("utf-8", "replace")}
            self._send(200, json.dumps(echo).encode(), "application/json")

    do_GET = do_POST = do_PUT = do_DELETE = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    record: Upstream


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.record = Upstream(f"http://127.0.0.1:{srv.server_address[1]}")
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield srv.record
    finally:
        srv.shutdown()
        srv.server_close()



# -- running the suite in parallel (pytest-xdist) ----------------------------------------------


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: one worker per CPU (xdist's own count, or PYTEST_XDIST_AUTO_NUM_WORKERS)
    for the whole suite, the README's ``pytest -q``; none (in-process, as before) when the
    command line names tests: starting workers costs more than a few files take."""
    if config.args_source is not pytest.Config.ArgsSource.TESTPATHS:
        return 0
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On xdist workers, modules marked ``early`` come first. ``--dist loadfile
    --no-loadscope-reorder`` hands out whole files in collection order, so such a module
    (the PyInstaller bundle, a ~40 s module-scoped build) is built once, at the start, while
    the other workers run the rest, instead of being the suite's tail. The sort is stable
    and the same on every worker (xdist checks that they all collected alike); an
    in-process run keeps the plain collection order."""
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: item.get_closest_marker("early") is None)
