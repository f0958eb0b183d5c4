"""Benchmark: the local proxy's throughput, latency and CPU per request, with ratios.

Measured in one run on loopback with a bounded load generator (wrk when installed,
else a small asyncio client), against the same upstream:

  upstream direct        the upstream hit without a proxy
  nginx proxy_pass       Debian's nginx, one worker, keep-alive upstream (when installed)
  floor proxy            bench/floor_proxy.py: uvloop + httptools, parse and re-serialise
                         both heads, nothing else (the least a Python proxy can cost)
  wasmdesk, no plugin    `wasmdesk serve` with no WasmPlugin
  wasmdesk, typical      the typical header plugin (read 2 headers, add 1, log; response add 1)
  wasmdesk, 5 plugins    five typical plugins chained
  wasmdesk, HTTP/2       no plugin, clients speaking h2c (prior knowledge) to the listener
                         (h2load when installed, else a bounded httpx http2 client loop)

It prints throughput and p50/p99 latency at 16 connections, median latency at one
connection, the proxy's CPU time per request (utime+stime of its process / requests:
steadier than req/s on a noisy machine), and the ratios the issue sets targets for:
no-plugin ≥ 0.6× nginx throughput and ≤ 2× its CPU per request; the typical plugin
adds ≤ 45 µs CPU per request (≥ 0.5× no-plugin throughput); five plugins ≥ 0.2×;
added median latency at one connection ≤ 100 µs; p99 with one plugin ≤ 2× no-plugin.

Usage: .venv/bin/python bench/bench_proxy.py [--seconds S] [--connections N]
Each load run is bounded by --seconds; everything binds 127.0.0.1 and stops itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "resources" / "plugins" / "typical.wasm"
sys.path.insert(0, str(ROOT))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def cpu_seconds(pgid: int) -> float:
    """utime + stime of every process in a process group (nginx's master and worker)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 of stat: pgrp
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int


def run_wrk(url: str, seconds: float, connections: int) -> Load:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, int(seconds))}s", "--latency", url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    ).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", out, re.M)
        if not m:
            return float("nan")
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{non2xx.group(1)} failed responses from {url}")
    return Load(rps, ms("50"), ms("99"), total)


async def _client_loop(host: str, port: int, path: str, stop_at: float, lat: list[float]) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    req = f"GET {path} HTTP/1.1\r\nhost: {host}:{port}\r\nuser-agent: bench\r\n\r\n".encode()
    n = 0
    while time.monotonic() < stop_at:
        t0 = time.perf_counter()
        writer.write(req)
        head = await reader.readuntil(b"\r\n\r\n")
        m = re.search(rb"content-length: (\d+)", head, re.I)
        await reader.readexactly(int(m.group(1)) if m else 0)
        lat.append((time.perf_counter() - t0) * 1000)
        n += 1
    writer.close()
    return n


def run_python_load(url: str, seconds: float, connections: int) -> Load:
    m = re.match(r"http://([\d.]+):(\d+)(/.*)", url)
    assert m
    host, port, path = m.group(1), int(m.group(2)), m.group(3)
    lat: list[float] = []

    async def main() -> int:
        stop_at = time.monotonic() + seconds
        counts = await asyncio.gather(
            *[_client_loop(host, port, path, stop_at, lat) for _ in range(connections)]
        )
        return sum(counts)

    t0 = time.monotonic()
    n = asyncio.run(main())
    el = time.monotonic() - t0
    lat.sort()
    return Load(n / el, lat[len(lat) // 2], lat[int(len(lat) * 0.99)], n)


def load(url: str, seconds: float, connections: int) -> Load:
    if shutil.which("wrk"):
        return run_wrk(url, seconds, connections)
    return run_python_load(url, seconds, connections)


def run_h2load(url: str, seconds: float, connections: int) -> Load:
    """h2load (nghttp2-client): ``connections`` h2c connections, one stream at a time
    each. It prints no percentiles: p50 is its mean, p99 its max."""
    out = subprocess.run(
        ["h2load", f"-c{connections}", "-m1", f"-D{max(1, int(seconds))}", url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    ).stdout
    m = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded", out)
    t = re.search(r"finished in ([\d.]+)s", out)
    if not m or not t:
        raise RuntimeError(f"h2load said: {out[-1000:]}")
    if m.group(1) != m.group(2):
        raise RuntimeError(f"h2load: {m.group(1)} requests, {m.group(2)} succeeded")
    lat = re.search(
        r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", out
    )

    def ms(v: str, unit: str) -> float:
        return float(v) / 1000 if unit == "us" else float(v) * 1000 if unit == "s" else float(v)

    n = int(m.group(2))
    mean = ms(lat.group(5), lat.group(6)) if lat else float("nan")
    worst = ms(lat.group(3), lat.group(4)) if lat else float("nan")
    return Load(n / float(t.group(1)), mean, worst, n)


def run_httpx_h2_load(url: str, seconds: float, connections: int) -> Load:
    """A bounded httpx (http2=True) loop: ``connections`` clients, one stream each."""
    import httpx

    lat: list[float] = []

    async def one(stop_at: float) -> int:
        n = 0
        async with httpx.AsyncClient(http1=False, http2=True, trust_env=False) as c:
            while time.monotonic() < stop_at:
                t0 = time.perf_counter()
                r = await c.get(url)
                r.raise_for_status()
                lat.append((time.perf_counter() - t0) * 1000)
                n += 1
        return n

    async def main() -> int:
        stop_at = time.monotonic() + seconds
        return sum(await asyncio.gather(*[one(stop_at) for _ in range(connections)]))

    t0 = time.monotonic()
    n = asyncio.run(main())
    el = time.monotonic() - t0
    lat.sort()
    return Load(n / el, lat[len(lat) // 2], lat[int(len(lat) * 0.99)], n)


def measure_http2(
    d: str, up_port: int, seconds: float, connections: int
) -> tuple[str, tuple[Load, Load, float]]:
    """The no-plugin proxy under h2c load: (what generated it, as ``measure`` returns)."""
    h2 = run_h2load if shutil.which("h2load") else run_httpx_h2_load
    gen = "h2load" if h2 is run_h2load else "httpx http2"
    w = wasmdesk(d, up_port, 0)
    try:
        url = f"http://127.0.0.1:{w.port}/bench"
        h2(url, 1.0, connections)  # warm-up
        c0 = w.cpu()
        many = h2(url, seconds, connections)
        c1 = w.cpu()
        one = h2(url, max(1.0, seconds / 2), 1)
    finally:
        w.stop()
    cpu_us = (c1 - c0) / many.requests * 1e6 if many.requests else float("nan")
    return gen, (many, one, cpu_us)


# -- the servers under test ----------------------------------------------------------------


class Proc:
    def __init__(self, args: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self.p = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True
        )
        self.port = port
        try:
            wait_port(port)
        except RuntimeError:
            self.stop()
            err = self.p.stderr.read().decode()[-2000:] if self.p.stderr else ""
            raise RuntimeError(f"{args[0]} did not start: {err}") from None

    def cpu(self) -> float:
        return cpu_seconds(self.p.pid)

    def stop(self) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)


NGINX_UPSTREAM = """
worker_processes 1;
daemon off;
error_log {d}/up-error.log;
pid {d}/up.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  server {{
    listen 127.0.0.1:{port};
    keepalive_requests 1000000;
    location / {{ default_type text/plain; return 200 "ok\\n"; }}
  }}
}}
"""

NGINX_PROXY = """
worker_processes 1;
daemon off;
error_log {d}/px-error.log;
pid {d}/px.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  upstream up {{ server 127.0.0.1:{up}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    keepalive_requests 1000000;
    location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"""


def nginx(conf: str, d: str, name: str, port: int) -> Proc:
    path = Path(d) / f"{name}.conf"
    path.write_text(conf)
    return Proc(["nginx", "-c", str(path), "-p", d, "-e", f"{d}/{name}-startup.log"], port)


def wasmdesk_config(
    d: str,
    port: int,
    admin: int,
    upstream: int,
    plugins: int,
    plugin: Path = PLUGIN,
    root_id: str = "typical",
) -> str:
    docs = [
        f"""apiVersion: wasmdesk.dev/v1alpha1
kind: Proxy
spec:
  listen: 127.0.0.1:{port}
  admin: 127.0.0.1:{admin}
  clusters: [{{name: up, url: "http://127.0.0.1:{upstream}", timeout: 10s}}]
  defaultCluster: up
"""
    ]
    for i in range(plugins):
        docs.append(f"""apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: typical-{i}}}
spec:
  url: {plugin}
  pluginName: "{root_id}"
""")
    path = Path(d) / f"wasmdesk-{plugins}-{plugin.stem}.yaml"
    path.write_text("---\n".join(docs))
    return str(path)


def wasmdesk(
    d: str,
    upstream: int,
    plugins: int,
    plugin: Path = PLUGIN,
    root_id: str = "typical",
    pure: bool = False,
) -> Proc:
    port, admin = free_port(), free_port()
    cfg = wasmdesk_config(d, port, admin, upstream, plugins, plugin, root_id)
    exe = Path(sys.executable).parent / "wasmdesk"
    env = dict(os.environ, WASMDESK_CACHE_DIR=str(Path(d) / "cache"))
    env.pop("WASMDESK_PURE", None)
    if pure:  # the data path's plain-Python modules, even when a mypyc build exists
        env["WASMDESK_PURE"] = "1"
    return Proc(
        [str(exe), "serve", "--config", cfg, "--no-watch", "--log-level", "warn"], port, env
    )


def measure(
    proc: Proc | None, url: str, seconds: float, connections: int
) -> tuple[Load, Load, float]:
    """(load at N connections, load at 1 connection, CPU µs per request of ``proc``)."""
    load(url, 1.0, connections)  # warm-up
    c0 = proc.cpu() if proc else 0.0
    many = load(url, seconds, connections)
    c1 = proc.cpu() if proc else 0.0
    one = load(url, max(1.0, seconds / 2), 1)
    cpu_us = (c1 - c0) / many.requests * 1e6 if proc and many.requests else float("nan")
    return many, one, cpu_us


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
    have_nginx = shutil.which("nginx") is not None
    gen = "wrk" if shutil.which("wrk") else "python asyncio client"
    rows: dict[str, tuple[Load, Load, float]] = {}
    from host import _native

    native = _native.state()
    with tempfile.TemporaryDirectory() as d:
        procs: list[Proc] = []
        try:
            up_port = free_port()
            if have_nginx:
                up = nginx(NGINX_UPSTREAM.format(d=d, port=up_port), d, "upstream", up_port)
            else:
                code = (
                    f"import asyncio, sys; sys.path.insert(0, {str(ROOT)!r})\n"
                    "from host.proxy.demo_upstream import start_echo_server\n"
                    f"async def m():\n    s = await start_echo_server('127.0.0.1', {up_port})\n"
                    "    await asyncio.Event().wait()\nasyncio.run(m())"
                )
                up = Proc(
                    [sys.executable, "-c", code],
                    up_port,
                )
            procs.append(up)
            rows["upstream direct"] = measure(
                None, f"http://127.0.0.1:{up_port}/", args.seconds, args.connections
            )
            if have_nginx:
                px_port = free_port()
                px = nginx(NGINX_PROXY.format(d=d, port=px_port, up=up_port), d, "proxy", px_port)
                procs.append(px)
                rows["nginx proxy_pass"] = measure(
                    px, f"http://127.0.0.1:{px_port}/", args.seconds, args.connections
                )
                px.stop()
            fl_port = free_port()
            fl = Proc(
                [
                    sys.executable,
                    str(ROOT / "bench" / "floor_proxy.py"),
                    str(fl_port),
                    str(up_port),
                ],
                fl_port,
            )
            procs.append(fl)
            rows["floor proxy (uvloop)"] = measure(
                fl, f"http://127.0.0.1:{fl_port}/bench", args.seconds, args.connections
            )
            fl.stop()
            from tests.fixtures.wat_modules import make_hostcall_sequence_module

            wat = Path(d) / "typical_wat.wasm"
            wat.write_bytes(make_hostcall_sequence_module())
            runs = [
                ("wasmdesk, no plugin", 0, PLUGIN, "typical", False),
                ("wasmdesk, typical plugin", 1, wat, "", False),
                ("wasmdesk, 5 plugins", 5, wat, "", False),
                ("wasmdesk, typical (AS SDK)", 1, PLUGIN, "typical", False),
            ]
            if native == "compiled":  # what the mypyc build is worth, in the same run
                runs += [
                    ("no plugin, plain Python", 0, PLUGIN, "typical", True),
                    ("typical, plain Python", 1, wat, "", True),
                ]
            for label, n, plugin, rid, pure in runs:
                w = wasmdesk(d, up_port, n, plugin, rid, pure)
                procs.append(w)
                rows[label] = measure(
                    w, f"http://127.0.0.1:{w.port}/bench", args.seconds, args.connections
                )
                w.stop()
            h2_gen, rows["wasmdesk, HTTP/2"] = measure_http2(
                d, up_port, args.seconds, args.connections
            )
        finally:
            for p in procs:
                p.stop()

    upstream = "nginx returning 3 bytes" if have_nginx else "the demo echo server"
    print(
        f"Local proxy on loopback: {args.connections} connections, {args.seconds:.0f}s per run, "
        f"load by {gen}; upstream: {upstream}"
    )
    from host.wasm.runtime import crossing

    print(
        f"data path: {native}, wasm crossing: {crossing()} "
        "(host/_native.py; packaging/build_native.py builds both)"
    )
    print("typical plugin = the hand-written WAT module with exactly the typical call sequence;")
    print("typical (AS SDK) = the same plugin built with the AssemblyScript SDK (its own overhead)")
    print(f"{'':26} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'p50@1c ms':>10} {'CPU µs/req':>11}")
    for label, (many, one, cpu) in rows.items():
        print(
            f"{label:26} {many.rps:9.0f} {many.p50_ms:8.3f} {many.p99_ms:8.3f} "
            f"{one.p50_ms:10.3f} {cpu:11.1f}"
        )
    base = rows["wasmdesk, no plugin"]
    one_p = rows["wasmdesk, typical plugin"]
    five = rows["wasmdesk, 5 plugins"]
    print("Ratios (targets in brackets)")
    if "nginx proxy_pass" in rows:
        ng = rows["nginx proxy_pass"]
        print(f"  no-plugin / nginx throughput        {base[0].rps / ng[0].rps:6.2f}   [>= 0.6]")
        print(f"  no-plugin / nginx CPU per request   {base[2] / ng[2]:6.2f}   [<= 2.0]")
    fl = rows["floor proxy (uvloop)"]
    if "nginx proxy_pass" in rows:
        print(
            f"  floor proxy / nginx CPU per request {fl[2] / rows['nginx proxy_pass'][2]:6.2f}"
            "   (the least a Python proxy costs)"
        )
    print(f"  no-plugin / floor CPU per request   {base[2] / fl[2]:6.2f}")
    print(f"  typical plugin: added CPU µs/req    {one_p[2] - base[2]:6.1f}   [<= 45]")
    print(f"  typical / no-plugin throughput      {one_p[0].rps / base[0].rps:6.2f}   [>= 0.5]")
    print(f"  5 plugins / no-plugin throughput    {five[0].rps / base[0].rps:6.2f}   [>= 0.2]")
    added_us = (one_p[1].p50_ms - base[1].p50_ms) * 1000
    print(f"  added median latency @1c, µs        {added_us:6.0f}   [<= 100]")
    print(
        f"  p99 typical / p99 no-plugin         {one_p[0].p99_ms / base[0].p99_ms:6.2f}   [<= 2.0]"
    )
    if "no plugin, plain Python" in rows:
        pure0, pure1 = rows["no plugin, plain Python"], rows["typical, plain Python"]
        print("The mypyc build of the data path (a lever: kept if it pays >= 1.3x)")
        print(f"  no-plugin CPU, plain / compiled     {pure0[2] / base[2]:6.2f}")
        print(f"  no-plugin throughput, compiled / plain {base[0].rps / pure0[0].rps:6.2f}")
        print(f"  typical CPU, plain / compiled       {pure1[2] / one_p[2]:6.2f}")
    print_http2(rows, h2_gen)
    return 0


def print_http2(rows: dict[str, tuple[Load, Load, float]], gen: str) -> None:
    """The HTTP/2 line's ratios against the same run's no-plugin HTTP/1.1 figures."""
    h1, h2 = rows["wasmdesk, no plugin"], rows["wasmdesk, HTTP/2"]
    print(f"HTTP/2 (h2c, no plugin; load by {gen}, p50 columns are its mean if h2load)")
    print(f"  HTTP/2 / HTTP/1.1 throughput        {h2[0].rps / h1[0].rps:6.2f}")
    print(f"  HTTP/2 / HTTP/1.1 CPU per request   {h2[2] / h1[2]:6.2f}")


if __name__ == "__main__":
    sys.exit(main())
