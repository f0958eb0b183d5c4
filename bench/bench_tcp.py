"""Benchmark: the TCP proxy (a ``spec.tcp`` listener) with NETWORK plugins, with ratios.

Measured in one run on loopback against the same echo upstream (its own process):

  upstream direct        the echo server hit without a proxy
  wasmdesk, no plugin    `wasmdesk serve` with a TCP listener and no NETWORK plugin
  wasmdesk, tcp_filter   one NETWORK plugin (resources/plugins/c/tcp_filter.wasm, counting
                         bytes and upper-casing the client's data)
  wasmdesk, 3 plugins    three of them chained

For each: round trips per second with --connections connections each sending --size
bytes and reading the echo back (ping-pong), the proxy's CPU time per round trip
(utime+stime of its process / round trips), and bulk throughput (MB/s echoed through one
connection writing and reading at once). Ratios are against the same run's no-plugin
figure (and no-plugin against direct).

Usage: .venv/bin/python bench/bench_tcp.py [--seconds S] [--connections N] [--size B]
Each load run is bounded by --seconds; everything binds 127.0.0.1 and stops itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench_proxy import free_port, wait_port  # this folder is sys.path[0]

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "resources" / "plugins" / "c" / "tcp_filter.wasm"
CLK_TCK = os.sysconf("SC_CLK_TCK")

ECHO = """
import asyncio, sys
class Echo(asyncio.Protocol):
    def connection_made(self, t): self.t = t
    def data_received(self, d): self.t.write(d)
    def eof_received(self): return False
async def main():
    srv = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", int(sys.argv[1]))
    await srv.serve_forever()
asyncio.run(main())
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Result:
    name: str
    rtt_per_s: float
    cpu_us: float | None
    mb_per_s: float


async def ping_pong(port: int, connections: int, size: int, seconds: float) -> int:
    payload = b"x" * size
    stop = time.monotonic() + seconds
    count = 0

    async def one() -> None:
        nonlocal count
        r, w = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < stop:
                w.write(payload)
                await r.readexactly(size)
                count += 1
        finally:
            w.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return count


async def bulk(port: int, seconds: float, chunk: int = 65536) -> int:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    data = b"y" * chunk
    stop = time.monotonic() + seconds
    received = 0

    async def reader() -> None:
        nonlocal received
        while True:
            got = await r.read(1 << 20)
            if not got:
                return
            received += len(got)

    task = asyncio.create_task(reader())
    while time.monotonic() < stop:
        w.write(data)
        await w.drain()
    w.write_eof()
    try:
        await asyncio.wait_for(task, 10)
    finally:
        w.close()
    return received


def measure(name: str, port: int, pid: int | None, args: argparse.Namespace) -> Result:
    asyncio.run(ping_pong(port, 2, args.size, 0.5))  # warm-up
    c0 = cpu_seconds(pid) if pid else 0.0
    n = asyncio.run(ping_pong(port, args.connections, args.size, args.seconds))
    cpu = (cpu_seconds(pid) - c0) / n * 1e6 if pid and n else None
    nbytes = asyncio.run(bulk(port, args.seconds))
    return Result(name, n / args.seconds, cpu, nbytes / args.seconds / 1e6)


def config(echo_port: int, listen: int, plugins: int) -> str:
    docs = [
        "apiVersion: wasmdesk.dev/v1alpha1\nkind: Proxy\nspec:\n"
        f"  listen: 127.0.0.1:{free_port()}\n  admin: 127.0.0.1:{free_port()}\n"
        f"  clusters:\n  - {{name: echo, url: 'tcp://127.0.0.1:{echo_port}'}}\n"
        f"  tcp:\n  - {{name: bench, listen: '127.0.0.1:{listen}', cluster: echo}}\n"
    ]
    for i in range(plugins):
        docs.append(
            "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\n"
            f"metadata: {{name: f{i}}}\n"
            f"spec: {{url: '{PLUGIN}', type: NETWORK, pluginConfig: {{upper: downstream}}}}\n"
        )
    return "---\n".join(docs)


def run_proxy(
    echo_port: int, plugins: int, name: str, args: argparse.Namespace, tmp: Path
) -> Result:
    listen = free_port()
    cfg = tmp / f"{plugins}.yaml"
    cfg.write_text(config(echo_port, listen, plugins))
    proc = subprocess.Popen(
        [sys.executable, "-m", "host.cli", "serve", "--config", str(cfg), "--no-watch"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(listen, 20.0)
        return measure(name, listen, proc.pid, args)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--size", type=int, default=1024)
    args = ap.parse_args()
    echo_port = free_port()
    echo = subprocess.Popen([sys.executable, "-c", ECHO, str(echo_port)])
    results: list[Result] = []
    try:
        wait_port(echo_port, 20.0)
        results.append(measure("upstream direct", echo_port, None, args))
        with tempfile.TemporaryDirectory(prefix="wasmdesk-bench-tcp-") as tmp:
            for plugins, name in ((0, "no plugin"), (1, "tcp_filter"), (3, "3 plugins")):
                results.append(run_proxy(echo_port, plugins, f"wasmdesk, {name}", args, Path(tmp)))
    finally:
        echo.terminate()
        echo.wait(5)
    base = results[1]
    print(f"{args.connections} connections, {args.size} B ping-pong, {args.seconds:g} s each")
    print(f"{'':22} {'round trips/s':>14} {'CPU µs/rt':>10} {'bulk MB/s':>10}  ratios")
    for r in results:
        cpu = f"{r.cpu_us:.1f}" if r.cpu_us is not None else "-"
        ref = results[0] if r is base else base
        ratio = (
            f"{r.rtt_per_s / ref.rtt_per_s:.2f}x rt/s, {r.mb_per_s / ref.mb_per_s:.2f}x bulk"
            f" vs {ref.name}"
            if r is not results[0]
            else ""
        )
        print(f"{r.name:22} {r.rtt_per_s:14.0f} {cpu:>10} {r.mb_per_s:10.1f}  {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
