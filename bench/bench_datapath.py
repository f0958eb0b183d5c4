"""Benchmark: the HTTP/1.1 data path's own Python CPU per request, without sockets.

A real ``ProxyServer`` (no plugin, or with ``--plugin PATH`` one WasmPlugin, root id
``--root-id``, as ``bench_proxy.py`` configures it) serves requests fed straight into a
``DownstreamProtocol`` whose pooled ``UpstreamProtocol`` is answered with an nginx-like
response; both sides write into recording transports, so no syscall, no wrk and no
other process is measured: only the parse -> exchange -> framing path, which makes A/B
comparisons of data-path changes far less noisy than ``bench_proxy.py`` on a shared
machine (run both trees interleaved, e.g. ``PYTHONPATH=<tree> python bench/bench_datapath.py``).
``--plugin typical`` is the AssemblyScript build ``resources/plugins/typical.wasm`` (root id
``typical``); ``--plugin wat`` is the hand-written WAT module with exactly the typical call
sequence that ``bench_proxy.py``'s "typical plugin" row runs (root id ``""``).
Prints the minimum and median of ``--rounds`` rounds of ``--requests`` requests.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from host.proxy.config import parse_config
from host.proxy.http1 import DownstreamProtocol
from host.proxy.server import ProxyServer
from host.proxy.upstream import UpstreamProtocol

ROOT = Path(__file__).resolve().parents[1]
TYPICAL = ROOT / "resources" / "plugins" / "typical.wasm"
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


def plugin_file(name: str, scratch: str) -> tuple[Path, str | None]:
    """(the .wasm to load, its default root id) for ``--plugin``: ``typical``, ``wat`` or a path."""
    if name == "typical":
        return TYPICAL, "typical"
    if name == "wat":
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from tests.fixtures.wat_modules import make_hostcall_sequence_module

        path = Path(scratch) / "typical_wat.wasm"
        path.write_bytes(make_hostcall_sequence_module())
        return path, ""
    return Path(name).resolve(), None


async def run(
    rounds: int,
    requests: int,
    plugin: Path | None = None,
    root_id: str = "typical",
    ticker: bool = True,
) -> list[float]:
    config = f"""apiVersion: wasmdesk.dev/v1alpha1
kind: Proxy
spec:
  listen: 127.0.0.1:{free_port()}
  admin: 127.0.0.1:{free_port()}
  clusters: [{{name: up, url: "http://127.0.0.1:{free_port()}", timeout: 10s}}]
  defaultCluster: up
"""
    if plugin is not None:
        config += f"""---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: typical-0}}
spec:
  url: {plugin}
  pluginName: "{root_id}"
"""
    # as ``wasmdesk serve`` runs it: guest calls keep the GIL
    server = ProxyServer(parse_config(config, "<bench>", tempfile.gettempdir()), hold_gil=True)
    await server.start()
    if not ticker:
        # Engine.close only stops the epoch ticker: a thread waking every 5 ms of wall
        # time, which under callgrind (slowed, and as slow as the machine is loaded)
        # adds instructions per request that depend on the load, not on the code. The
        # plugin host's engine: server.engine is only set when a caller passes one in.
        server.host.engine.close()
    try:
        cluster = server.clusters["up"]
        down, down_t = DownstreamProtocol(server), RecordingTransport()
        down.connection_made(down_t)  # type: ignore[arg-type]
        up, up_t = UpstreamProtocol(cluster, server.pool), RecordingTransport()
        up.connection_made(up_t)  # type: ignore[arg-type]
        cluster.idle.append(up)

        # the typical plugin's two headers, when it is the one loaded
        typical = plugin is not None and plugin.name in (TYPICAL.name, "typical_wat.wasm")
        expect = (b"x-typical: 1\r\n", b"x-typical-response: 1\r\n") if typical else None

        # the end of a loop tick: the writes held in it go out (write_batch.py)
        flush = server.write_batch.flush

        def serve(n: int) -> None:
            for _ in range(n):
                down.data_received(REQUEST)
                flush()
                up.data_received(RESPONSE)
                flush()
            if len(up_t.out) != n or len(down_t.out) != n or not down_t.out[-1].endswith(b"ok\n"):
                raise RuntimeError("the data path did not answer every request")
            if expect and not (expect[0] in up_t.out[-1] and expect[1] in down_t.out[-1]):
                raise RuntimeError(f"the plugin did not run: no {expect} in the last exchange")
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
    ap.add_argument(
        "--plugin",
        help="one WasmPlugin on the path: typical (resources/plugins/typical.wasm), "
        "wat (the WAT typical module of bench_proxy.py) or a .wasm path",
    )
    ap.add_argument("--root-id", help="its pluginName (default: typical; wat: empty)")
    ap.add_argument(
        "--no-ticker",
        action="store_true",
        help="stop the wasm engine's epoch ticker (instructions.py: counts that do not "
        "depend on wall time)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        plugin, root_id = None, "typical"
        label = "no-plugin"
        if args.plugin:
            plugin, default_root = plugin_file(args.plugin, scratch)
            root_id = (
                args.root_id
                if args.root_id is not None
                else (default_root if default_root is not None else "typical")
            )
            label = f"{plugin.name} (root id {root_id!r})"
        job = run(args.rounds, args.requests, plugin, root_id, not args.no_ticker)
        try:
            import uvloop

            times = uvloop.run(job)
        except ImportError:
            times = asyncio.run(job)
    print(
        f"{label} data path, Python CPU per request: min {min(times):.2f} µs, "
        f"median {statistics.median(times):.2f} µs ({args.rounds} x {args.requests} requests)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
