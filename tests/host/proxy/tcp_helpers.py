"""Helpers for the TCP proxy tests: a raw TCP echo server on 127.0.0.1 (threads, real
sockets), config text with ``spec.tcp`` listeners and NETWORK plugins, and a client
that reads until the proxy closes its side."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
TCP_FILTER = str(ROOT / "resources" / "plugins" / "c" / "tcp_filter.wasm")


class EchoServer:
    """Echoes every byte; on the client's half-close it sends ``goodbye`` (if any),
    half-closes too, and records what it received per connection."""

    def __init__(self, goodbye: bytes = b"", reset: bool = False) -> None:
        self.goodbye = goodbye
        self.reset = reset  # reset the connection (RST) on the first data instead
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.eof_seen = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._stop = False
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            t = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _handle(self, conn: socket.socket) -> None:
        got: bytearray | None = bytearray()
        conn.settimeout(10)
        with conn:
            try:
                while True:
                    data = conn.recv(65536)
                    if not data:
                        break
                    got += data
                    if self.reset:
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                        break
                    conn.sendall(data)
                if self.reset:
                    return  # closing with SO_LINGER 0 sends a reset
                with self._lock:
                    self.eof_seen += 1
                    # recorded before the half-close: a client that saw the end may look at once
                    self.received.append(bytes(got))
                    got = None
                if self.goodbye:
                    conn.sendall(self.goodbye)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if got is not None:
            with self._lock:
                self.received.append(bytes(got))

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self.sock.close()
        for t in self._threads:
            t.join(2)


@contextlib.contextmanager
def echo_server(**kw: Any) -> Iterator[EchoServer]:
    srv = EchoServer(**kw)
    try:
        yield srv
    finally:
        srv.close()


def network_plugin(name: str, config: dict[str, str] | None = None, **kw: Any) -> dict[str, Any]:
    """A type NETWORK WasmPlugin document running tcp_filter (or ``url``)."""
    ann: dict[str, str] = {}
    if kw.get("mode"):
        ann["wasmdesk.dev/mode"] = kw["mode"]
    if kw.get("canary") is not None:
        ann["wasmdesk.dev/canary-percent"] = str(kw["canary"])
    if kw.get("canary_key"):
        ann["wasmdesk.dev/canary-key"] = kw["canary_key"]
    meta: dict[str, Any] = {"name": name}
    if ann:
        meta["annotations"] = ann
    spec: dict[str, Any] = {"url": kw.get("url", TCP_FILTER), "type": "NETWORK"}
    if config:
        spec["pluginConfig"] = config
    for key, field in (("fail", "failStrategy"), ("priority", "priority"), ("match", "match")):
        if kw.get(key) is not None:
            spec[field] = kw[key]
    return {
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": meta,
        "spec": spec,
    }


def tcp_config(
    upstream_url: str,
    *plugins: dict[str, Any],
    listeners: int = 1,
    clusters: dict[str, str] | None = None,
) -> str:
    """A Proxy document with ``listeners`` TCP listeners t1, t2 ... to the cluster ``echo``
    (``clusters``: more, name -> URL, e.g. for callouts), then the plugins."""
    spec: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "admin": "127.0.0.1:0",
        "clusters": [
            {"name": "echo", "url": upstream_url, "connectTimeout": "2s"},
            *({"name": k, "url": v} for k, v in (clusters or {}).items()),
        ],
        "tcp": [
            {"name": f"t{i}", "listen": "127.0.0.1:0", "cluster": "echo"}
            for i in range(1, listeners + 1)
        ],
    }
    docs = [{"apiVersion": "wasmdesk.dev/v1alpha1", "kind": "Proxy", "spec": spec}, *plugins]
    return yaml.safe_dump_all(docs, sort_keys=False)


def tcp_port(h: Any, name: str = "t1") -> int:
    return int(h.sync(lambda: h.server.tcp.listeners[name].address[1]))


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.settimeout(5)
    return s


def read_until_eof(s: socket.socket, limit: int = 1 << 22) -> bytes:
    out = bytearray()
    while len(out) < limit:
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        out += data
    return bytes(out)


def read_exactly(s: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        data = s.recv(n - len(out))
        if not data:
            break
        out += data
    return bytes(out)


# -- WAT network plugins for the edge cases (traps, a plugin that never continues) -----------

_NET_BASE = """
  (memory (export "memory") 2)
  (global $bump (mut i32) (i32.const 0x8000))
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    global.get $bump local.set $p
    global.get $bump local.get $n i32.add i32.const 7 i32.add i32.const -8 i32.and global.set $bump
    local.get $p)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_new_connection") (param i32) (result i32) i32.const 0)
  (func (export "proxy_on_upstream_data") (param i32 i32 i32) (result i32) i32.const 0)
  (func (export "proxy_on_done") (param i32) (result i32) i32.const 1)
"""
_NET_COMMON = (
    _NET_BASE
    + """
  (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1)
"""
)

# traps (unreachable) on any downstream data
NET_TRAP_WAT = f"""
(module {_NET_COMMON}
  (func (export "proxy_on_downstream_data") (param $id i32) (param $size i32) (param $eos i32)
    (result i32)
    (if (i32.gt_u (local.get $size) (i32.const 0)) (then unreachable))
    i32.const 0))
"""

# pauses downstream data forever (the host buffers it): back-pressure
NET_HOLD_WAT = f"""
(module {_NET_COMMON}
  (func (export "proxy_on_downstream_data") (param i32 i32 i32) (result i32) i32.const 1))
"""


# pauses downstream data; its tick (every 20 ms) traps: a failure outside the connection's
# own callbacks while it holds the connection paused
NET_TICK_TRAP_WAT = f"""
(module
  (import "env" "proxy_set_tick_period_milliseconds" (func $tick (param i32) (result i32)))
  {_NET_BASE}
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $tick (i32.const 20))) i32.const 1)
  (func (export "proxy_on_downstream_data") (param i32 i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_tick") (param i32) unreachable))
"""


def wat_file(tmp: Path, name: str, text: str) -> str:
    import wasmtime

    path = tmp / f"{name}.wasm"
    path.write_bytes(bytes(wasmtime.wat2wasm(text)))
    return str(path)


# logs the properties a network filter reads (ABI doc §5.4): each on its own line as
# "<path>=<value>" (or "<path>!<status>"), from its first downstream data
_PROPS = ("source.address", "destination.address", "upstream.address", "xds.cluster_name")


def _prop_calls() -> str:
    out = []
    for i, path in enumerate(_PROPS):
        seg = path.replace(".", "\\00")
        out.append(
            f'(data (i32.const {0x1000 + 0x40 * i}) "{seg}")\n'
            f"(func $p{i} (call $prop (i32.const {0x1000 + 0x40 * i}) (i32.const {len(path)})))"
        )
    return "\n".join(out)


NET_PROPS_WAT = f"""
(module
  (import "env" "proxy_get_property" (func $get_prop (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  {_NET_COMMON}
  (func $prop (param $path i32) (param $len i32)
    (local $st i32) (local $n i32)
    (local.set $st (call $get_prop (local.get $path) (local.get $len) (i32.const 0x300)
                                   (i32.const 0x304)))
    ;; line: path bytes (NULs shown as '.'), '=' value, or '!' and the status digit
    (memory.copy (i32.const 0x2000) (local.get $path) (local.get $len))
    (local.set $n (i32.const 0))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $n) (local.get $len)))
      (if (i32.eqz (i32.load8_u (i32.add (i32.const 0x2000) (local.get $n))))
        (then (i32.store8 (i32.add (i32.const 0x2000) (local.get $n)) (i32.const 46))))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $next)))
    (if (i32.eqz (local.get $st))
      (then
        (i32.store8 (i32.add (i32.const 0x2000) (local.get $len)) (i32.const 61))
        (memory.copy (i32.add (i32.const 0x2001) (local.get $len))
                     (i32.load (i32.const 0x300)) (i32.load (i32.const 0x304)))
        (drop (call $log (i32.const 2) (i32.const 0x2000)
          (i32.add (i32.add (local.get $len) (i32.const 1)) (i32.load (i32.const 0x304))))))
      (else
        (i32.store8 (i32.add (i32.const 0x2000) (local.get $len)) (i32.const 33))
        (i32.store8 (i32.add (i32.const 0x2001) (local.get $len))
                    (i32.add (i32.const 48) (local.get $st)))
        (drop (call $log (i32.const 2) (i32.const 0x2000)
                         (i32.add (local.get $len) (i32.const 2)))))))
  {_prop_calls()}
  (func (export "proxy_on_downstream_data") (param i32 i32 i32) (result i32)
    {" ".join(f"(call $p{i})" for i in range(len(_PROPS)))}
    i32.const 0))
"""
