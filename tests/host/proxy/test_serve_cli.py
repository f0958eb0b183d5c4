"""``wasmdesk serve`` as a subprocess: the embedded default config, a request through it,
a clean exit on SIGTERM / SIGINT / POST /quitquitquit, and its exit codes for an invalid
config (2, with file:line) and a plugin that fails to start (1 unless --lenient)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.wat_modules import make_configure_fails_module

from .conftest import config_text, wasm_plugin

WASMDESK = Path(sys.executable).parent / "wasmdesk"
BANNER = re.compile(r"proxy on http://127\.0\.0\.1:(\d+)\s+admin on http://127\.0\.0\.1:(\d+)")


class Serve:
    """A running ``wasmdesk serve``; stderr is collected by a thread."""

    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        env = dict(os.environ)
        env.pop("http_proxy", None)
        env.pop("HTTP_PROXY", None)
        self.proc = subprocess.Popen(
            [str(WASMDESK), "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=env,
        )
        self.lines: list[str] = []
        self.banner = threading.Event()
        self.port = self.admin_port = 0
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            m = BANNER.search(line)
            if m:
                self.port, self.admin_port = int(m.group(1)), int(m.group(2))
                self.banner.set()

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.banner.is_set():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("serve did not start:\n" + self.stderr())
            self.banner.wait(0.05)

    def wait(self, timeout: float = 15.0) -> int:
        rc = self.proc.wait(timeout)
        self._t.join(5)
        return rc

    def stderr(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._t.join(5)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


@pytest.fixture
def serve():
    running: list[Serve] = []

    def start(*args: str, **kw) -> Serve:
        s = Serve(*args, **kw)
        running.append(s)
        return s

    yield start
    for s in running:
        s.kill()


EPHEMERAL = ("--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0")


def test_serve_default_config_and_sigterm(serve):
    s = serve(*EPHEMERAL)
    s.wait_ready()
    with httpx.Client(base_url=f"http://127.0.0.1:{s.port}", trust_env=False, timeout=10) as c:
        r = c.get("/demo")
        assert r.status_code == 200
        assert r.headers["x-wasmdesk-plugin"] == "add_header"
        doc = r.json()
        # body-rewrite (canary 50%) may have upper-cased every "hello" in the echo
        assert doc["headers"]["x-wasmdesk"] in ("hello", "HELLO")
        assert doc["message"].lower() == "hello from the wasmdesk demo upstream"
        # auth-token is log-only in the default config: no token still passes
        assert c.get("/private").status_code == 200
    a = httpx.get(f"http://127.0.0.1:{s.admin_port}/ready", trust_env=False, timeout=10)
    assert a.status_code == 200
    # the effective order is printed at start-up
    assert "auth-token" in s.stderr() and "add-header" in s.stderr()
    # headless, guest calls keep the GIL when the native ticker runs (C crossing)
    info = httpx.get(
        f"http://127.0.0.1:{s.admin_port}/server_info", trust_env=False, timeout=10
    ).json()
    assert info["wasm_calls_keep_gil"] is (info["wasm_crossing"] == "C")
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait() == 0, s.stderr()


def test_serve_sigint_exits_cleanly(serve):
    s = serve(*EPHEMERAL, "--no-watch")
    s.wait_ready()
    s.proc.send_signal(signal.SIGINT)
    assert s.wait() == 0, s.stderr()


def test_serve_quitquitquit(serve):
    s = serve(*EPHEMERAL, "--no-watch")
    s.wait_ready()
    url = f"http://127.0.0.1:{s.admin_port}/quitquitquit"
    # a bare POST (what a cross-site form can send) is refused and the proxy keeps running
    r = httpx.post(url, trust_env=False, timeout=10)
    assert r.status_code == 415 and "content-type: application/json" in r.text
    assert s.proc.poll() is None
    r = httpx.post(url, json={}, trust_env=False, timeout=10)
    assert r.status_code == 200
    assert s.wait() == 0, s.stderr()


def test_serve_invalid_config_exits_2_with_file_and_line(serve, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("apiVersion: wasmdesk.dev/v1alpha1\nkind: Proxy\nspec:\n  listen: nowhere\n")
    s = serve("--config", str(cfg), *EPHEMERAL)
    assert s.wait() == 2
    err = s.stderr()
    assert "invalid configuration" in err
    assert f"{cfg}:4" in err
    assert "spec.listen" in err


def test_serve_plugin_failing_to_start_exits_1_unless_lenient(serve, tmp_path):
    mod = tmp_path / "bad.wasm"
    mod.write_bytes(make_configure_fails_module())
    cfg = tmp_path / "wasmdesk.yaml"
    cfg.write_text(config_text(wasm_plugin("bad", "./bad.wasm")))
    s = serve("--config", str(cfg), "--no-watch")
    assert s.wait() == 1
    assert "did not start" in s.stderr()
    assert "bad" in s.stderr()
    s = serve("--config", str(cfg), "--no-watch", "--lenient")
    s.wait_ready()
    r = httpx.get(f"http://127.0.0.1:{s.port}/x", trust_env=False, timeout=10)
    assert r.status_code == 503
    assert "wasm plugin bad failed" in r.text
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait() == 0


def test_serve_bad_traffic_does_not_stop_it(serve):
    import socket

    s = serve(*EPHEMERAL, "--no-watch")
    s.wait_ready()
    for payload in (
        b"garbage\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: x\r\ncontent-length: 99\r\n\r\nab",
    ):
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
            sock.sendall(payload)
    r = httpx.get(f"http://127.0.0.1:{s.port}/ok", trust_env=False, timeout=10)
    assert r.status_code == 200
    assert s.proc.poll() is None
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait() == 0
