"""Soak: N minutes of bounded load through the demo chain with callouts and hot reloads,
watching for leaks.

It starts ``wasmdesk serve`` on free loopback ports with the demo plugins (auth-token
log-only, path-counter, add-header, body-rewrite canary 50%) plus the ``callout`` plugin,
which asks an auth service over ``proxy_http_call`` on every request. A small upstream
in this process serves both the data path (cluster ``backend``) and the callouts
(cluster ``auth``). While a paced client sends GETs and POSTs, the config file is
touched (nothing must reload) and edited (one plugin reloads) in turn every
``--reload-every`` seconds. Every ``--sample-every`` seconds (30) it samples the proxy
process's RSS and open fds, the plugins' live contexts and in-flight callouts (from
``GET /plugins``) and ``wasm.paused_streams`` (from ``GET /stats``), and at the end
prints each series with its least-squares slope per minute and whether that slope is
within the noise (the residuals' spread), plus every non-2xx response. Target: slopes
within noise, 0 non-2xx (no plugin in this chain asks for one: auth-token is log-only
and the auth service allows every request).

Usage: .venv/bin/python bench/soak.py [--minutes 10] [--rps 100] [--connections 8]
Everything binds 127.0.0.1; the load is paced (--rps) and bounded by --minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench_proxy import free_port  # this folder is sys.path[0]

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "resources" / "plugins"
WASMDESK = Path(sys.executable).parent / "wasmdesk"
BANNER = re.compile(r"proxy on http://127\.0\.0\.1:(\d+)\s+admin on http://127\.0\.0\.1:(\d+)")


# -- the upstream and the auth service -----------------------------------------------------


class _Upstream(BaseHTTPRequestHandler):
    """``/check`` (the callout): 200 "allow"; anything else: 200 with the path and the
    request body's size."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        out = b"allow" if self.path == "/check" else f"{self.path} {len(body)}\n".encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


def start_upstream() -> tuple[ThreadingHTTPServer, int]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, name="soak-upstream", daemon=True).start()
    return srv, int(srv.server_address[1])


# -- the config ----------------------------------------------------------------------------


def config_text(upstream_port: int, value: str, callout_timeout_ms: int) -> str:
    url = f"http://127.0.0.1:{upstream_port}"
    return f"""\
apiVersion: wasmdesk.dev/v1alpha1
kind: Proxy
spec:
  listen: 127.0.0.1:0
  admin: 127.0.0.1:0
  clusters:
  - {{name: backend, url: "{url}", timeout: 5s}}
  - {{name: auth, url: "{url}", timeout: 2s}}
  defaultCluster: backend
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: auth-token
  annotations: {{wasmdesk.dev/mode: log-only}}
spec:
  url: {PLUGINS / "auth_token.wasm"}
  pluginName: auth_token
  phase: AUTHN
  pluginConfig: {{token: demo-token, allow_paths: ["/public", "/health"]}}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: callout
spec:
  url: {PLUGINS / "callout.wasm"}
  pluginName: callout
  phase: AUTHZ
  pluginConfig:
    {{cluster: auth, path: /check, authority: auth.local, timeout_ms: {callout_timeout_ms}}}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: path-counter
spec:
  url: {PLUGINS / "path_counter.wasm"}
  pluginName: path_counter
  phase: STATS
  pluginConfig: {{max_paths: 50}}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: add-header
spec:
  url: {PLUGINS / "add_header.wasm"}
  pluginName: add_header
  priority: 10
  pluginConfig:
    request_header: {{name: x-wasmdesk, value: "{value}"}}
    response_header: {{name: x-wasmdesk-plugin, value: add_header}}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: body-rewrite
  annotations: {{wasmdesk.dev/canary-percent: "50"}}
spec:
  url: {PLUGINS / "body_rewrite.wasm"}
  pluginName: body_rewrite
  failStrategy: FAIL_OPEN
  pluginConfig: {{from: hello, to: HELLO}}
"""


# -- the proxy process -----------------------------------------------------------------------


class Serve:
    def __init__(self, config: Path) -> None:
        self.listen, self.admin = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy",)}
        self.proc = subprocess.Popen(
            [
                str(WASMDESK),
                "serve",
                "--config",
                str(config),
                "--listen",
                f"127.0.0.1:{self.listen}",
                "--admin",
                f"127.0.0.1:{self.admin}",
                "--log-level",
                "warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: collections.deque[str] = collections.deque(maxlen=2000)
        self.started = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.started.wait(30):
            self.stop()
            raise SystemExit("soak: wasmdesk serve did not start:\n" + "\n".join(self.lines))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())
            if BANNER.search(line):
                self.started.set()

    def admin_json(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}{path}", timeout=10) as r:
            return json.loads(r.read())

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# -- the load ----------------------------------------------------------------------------------


class Load:
    """Paced keep-alive HTTP/1.1 clients: ``rps`` requests per second over ``connections``
    connections until ``stop`` is set. Every 4th request is a POST whose body contains
    "hello" (body-rewrite's canary rewrites it)."""

    def __init__(self, port: int, rps: float, connections: int) -> None:
        self.port = port
        self.interval = connections / rps
        self.connections = connections
        self.statuses: collections.Counter[int] = collections.Counter()
        self.unexpected: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.sent = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        await asyncio.gather(*(self._client(i) for i in range(self.connections)))

    async def _client(self, n: int) -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        i = n
        next_at = time.monotonic() + n * self.interval / self.connections
        while not self.stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(self.stop.wait(), delay)
                    break
                except TimeoutError:
                    pass
            next_at += self.interval
            i += self.connections
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                assert reader is not None
                status, head = await asyncio.wait_for(self._one(reader, writer, i), 10)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as e:
                self.errors[type(e).__name__] += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            self.sent += 1
            self.statuses[status] += 1
            if not 200 <= status < 300:
                failed = re.search(rb"x-wasmdesk-failed-plugin: *([^\r\n]*)", head, re.I)
                who = failed.group(1).decode() if failed else "-"
                self.unexpected[f"{status} (failed plugin: {who})"] += 1
        if writer is not None:
            writer.close()

    async def _one(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, i: int
    ) -> tuple[int, bytes]:
        path = f"/soak/{i % 40}"
        auth = b"authorization: Bearer demo-token\r\n"
        if i % 4 == 0:
            body = b"hello soak %d" % i
            req = b"POST %s HTTP/1.1\r\nhost: soak\r\n%scontent-length: %d\r\n\r\n%s" % (
                path.encode(),
                auth,
                len(body),
                body,
            )
        else:
            req = b"GET %s HTTP/1.1\r\nhost: soak\r\n%s\r\n" % (path.encode(), auth)
        writer.write(req)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        m = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
        if m is None:
            raise ValueError("response without content-length")
        await reader.readexactly(int(m.group(1)))
        return status, head


# -- the numbers -----------------------------------------------------------------------------


def slope(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares slope of ys over xs, and the residuals' standard deviation."""
    n = len(xs)
    if n < 2:
        return 0.0, 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    res = [y - (my + b * (x - mx)) for x, y in zip(xs, ys, strict=True)]
    sd = math.sqrt(sum(r * r for r in res) / max(1, n - 2))
    return b, sd


def sample(serve: Serve, load: Load, t0: float) -> dict[str, float]:
    plugins = serve.admin_json("/plugins")["plugins"]
    stats = serve.admin_json("/stats?format=json")
    flat: dict[str, Any] = {}
    for s in stats.get("stats", []):
        if "name" in s and "value" in s:
            flat[s["name"]] = s["value"]
    return {
        "t_min": (time.monotonic() - t0) / 60,
        "requests": float(load.sent),
        "rss_mib": serve.rss_kib() / 1024,
        "fds": float(serve.fds()),
        "contexts": float(sum(p.get("contexts", 0) for p in plugins)),
        "inflight_callouts": float(sum(p.get("inflight_callouts", 0) for p in plugins)),
        "paused_streams": float(flat.get("wasm.paused_streams", 0)),
    }


async def soak(args: argparse.Namespace) -> int:
    upstream, up_port = start_upstream()
    tmp = Path(tempfile.mkdtemp(prefix="wasmdesk-soak-"))
    cfg = tmp / "wasmdesk.yaml"
    cfg.write_text(config_text(up_port, "v0", 1000))
    serve = Serve(cfg)
    print(
        f"soak: {args.minutes:g} min, {args.rps:g} req/s over {args.connections} connections, "
        f"proxy pid {serve.proc.pid} on 127.0.0.1:{serve.listen}; config {cfg}",
        flush=True,
    )
    load = Load(serve.listen, args.rps, args.connections)
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    samples: list[dict[str, float]] = []
    reloads = {"touch": 0, "edit": 0}
    load_task = asyncio.create_task(load.run())
    next_sample = t0 + 5  # a first sample once warm, then every --sample-every
    next_reload = t0 + args.reload_every
    try:
        while time.monotonic() < end and serve.proc.poll() is None:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            if now >= next_reload:
                next_reload += args.reload_every
                if reloads["touch"] <= reloads["edit"]:
                    os.utime(cfg)  # nothing may reload
                    reloads["touch"] += 1
                else:
                    n = reloads["edit"] + 1
                    cfg.write_text(config_text(up_port, f"v{n}", 1000 + n % 2))
                    reloads["edit"] += 1
            if now >= next_sample:
                next_sample += args.sample_every
                s = await asyncio.to_thread(sample, serve, load, t0)
                samples.append(s)
                print(
                    "  t={t_min:5.2f} min  requests={requests:7.0f}  rss={rss_mib:6.1f} MiB  "
                    "fds={fds:3.0f}  contexts={contexts:3.0f}  callouts={inflight_callouts:2.0f}"
                    "  paused={paused_streams:2.0f}".format(**s),
                    flush=True,
                )
        if serve.proc.poll() is None:
            samples.append(await asyncio.to_thread(sample, serve, load, t0))  # still under load
    finally:
        load.stop.set()
        await load_task
        alive = serve.proc.poll() is None
        serve.stop()
        upstream.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    took = time.monotonic() - t0
    print(
        f"\n{load.sent} requests in {took / 60:.2f} min ({load.sent / took:.0f}/s); "
        f"statuses {dict(sorted(load.statuses.items()))}; transport errors {dict(load.errors)}; "
        f"config touched {reloads['touch']}x, edited {reloads['edit']}x"
    )
    print(f"\n{'series':<18} {'first':>9} {'last':>9} {'slope/min':>10} {'noise':>8}  verdict")
    print("(noise: the residuals' standard deviation around the fitted line)")
    ok = True
    # the first minute is warm-up (caches, the inspector's and the log's rings filling):
    # left out of the slopes when enough samples remain
    steady = [s for s in samples if s["t_min"] >= 1.0]
    if len(steady) < 3:
        steady = samples
        print("(too short to leave out the first minute: its warm-up growth counts)")
    print(f"(slopes over {len(steady)} samples from t={steady[0]['t_min']:.2f} min)")
    xs = [s["t_min"] for s in steady]
    for key in ("rss_mib", "fds", "contexts", "inflight_callouts", "paused_streams"):
        ys = [s[key] for s in steady]
        b, sd = slope(xs, ys)
        # Only growth is a leak. The counts move with the requests in flight at the
        # sampling instant (at most one per connection); RSS with allocator noise. So the
        # growth over the run must stay within the residuals' spread and that allowance.
        drift = b * (xs[-1] - xs[0] if len(xs) > 1 else 0)
        allowance = 2.0 if key == "rss_mib" else float(args.connections)
        within = drift <= max(2 * sd, allowance)
        ok &= within
        print(
            f"{key:<18} {ys[0]:>9.1f} {ys[-1]:>9.1f} {b:>+10.3f} {sd:>8.2f}  "
            + ("within noise" if within else "GROWING")
        )
    bad = sum(load.unexpected.values())
    print(f"\nnon-2xx responses: {bad}" + (f" {dict(load.unexpected)}" if bad else ""))
    if not alive:
        print("the proxy exited during the run:\n" + "\n".join(list(serve.lines)[-20:]))
    errs = [ln for ln in serve.lines if "error" in ln.lower()]
    if errs:
        print(f"proxy error lines: {len(errs)}, the last ones:\n  " + "\n  ".join(errs[-5:]))
    ok &= bad == 0 and alive and not load.errors
    print("\nresult: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rps", type=float, default=100.0, help="requests per second (paced)")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--sample-every", type=float, default=30.0, help="seconds between samples")
    ap.add_argument("--reload-every", type=float, default=10.0, help="seconds between reloads")
    args = ap.parse_args()
    if args.minutes <= 0 or args.rps <= 0 or args.connections <= 0:
        ap.error("--minutes, --rps and --connections must be positive")
    return asyncio.run(soak(args))


if __name__ == "__main__":
    sys.exit(main())
