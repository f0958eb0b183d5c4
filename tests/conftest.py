"""Fixtures shared by every test package: a real HTTP upstream on 127.0.0.1; the hooks that
spread the whole suite over the CPUs (tests/parallel.py)."""

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




# how the whole suite runs on every CPU (pytest-xdist): tests/parallel.py
from tests.parallel import (  # noqa: E402, F401
    pytest_collection_modifyitems,
    pytest_configure_node,
    pytest_runtest_protocol,
    pytest_unconfigure,
    pytest_xdist_auto_num_workers,
)
