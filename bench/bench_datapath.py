"""Benchmark: the no-plugin HTTP/1.1 data path's own Python CPU per request, without sockets.

A real ``ProxyServer`` (no plugin) serves requests fed straight into a
``DownstreamProtocol`` whose pooled ``UpstreamProtocol`` is answered with an nginx-like
response; both sides write into recording transports, so no syscall, no wrk and no
other process is measured: only the parse -> exchange -> framing path, which makes A/B
comparisons of data-path changes far less noisy than ``bench_proxy.py`` on a shared
machine (run both trees interleaved, e.g. ``PYTHONPATH=<tree> python bench/bench_datapath.py``).
Prints the minimum and median of ``--rounds`` rounds of ``--requests`` requests.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import tempfile
import time
from typing import Any

from host.proxy.config import parse_config
from host.proxy.http1 import DownstreamProtocol
from host.proxy.server import ProxyServer
from host.proxy.upstream import UpstreamProtocol

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 04 Dec 2026 19:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n"
)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


class RecordingTransport:
    """Keeps what is written; reading is never paused for real."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


async def run(rounds: int, requests: int) -> list[float]:
    config = f"""apiVersion: wasmdesk.dev/v1alpha1
kind: Proxy
spec:
  listen: 127.0.0.1:{free_port()}
  admin: 127.0.0.1:{free_port()}
  clusters: [{{name: up, url: "http://127.0.0.1:{free_port()}", timeout: 10s}}]
  defaultCluster: up
"""
    server = ProxyServer(parse_config(config, "<bench>", tempfile.gettempdir()))
    await server.start()
    try:
        cluster = server.clusters["up"]
        down, down_t = DownstreamProtocol(server), RecordingTransport()
        down.connection_made(down_t)  # type: ignore[arg-type]
        up, up_t = UpstreamProtocol(cluster, server.pool), RecordingTransport()
        up.connection_made(up_t)  # type: ignore[arg-type]
        cluster.idle.append(up)

        def serve(n: int) -> None:
            for _ in range(n):
                down.data_received(REQUEST)
                up.data_received(RESPONSE)
            if len(up_t.out) != n or len(down_t.out) != n or not down_t.out[-1].endswith(b"ok\n"):
                raise RuntimeError("the data path did not answer every request")
            up_t.out.clear()
            down_t.out.clear()

        serve(min(requests, 2000))  # warm-up
        per_request = []
        for _ in range(rounds):
            t0 = time.process_time()
            serve(requests)
            per_request.append((time.process_time() - t0) / requests * 1e6)
            await asyncio.sleep(0)  # let the loop run its timers
        return per_request
    finally:
        await server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--requests", type=int, default=20000)
    args = ap.parse_args()
    try:
        import uvloop

        times = uvloop.run(run(args.rounds, args.requests))
    except ImportError:
        times = asyncio.run(run(args.rounds, args.requests))
    print(
        f"no-plugin data path, Python CPU per request: min {min(times):.2f} µs, "
        f"median {statistics.median(times):.2f} µs ({args.rounds} x {args.requests} requests)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
