"""Shared set-up for the proxy tests: a ``ProxyServer`` on its own event loop in a
background thread (so the tests are plain blocking clients over real sockets on
127.0.0.1), config builders, an inline WAT "probe" plugin, a scripted raw upstream,
and a small HTTP/1.1 response reader for raw-socket tests.

Every server and upstream started here is stopped at teardown (no leaked threads
or ports).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from host.proxy.config import ProxyConfig, parse_config
from host.proxy.server import ProxyServer
from host.wasm import LogLevel
from tests.fixtures.wat_modules import compile_wat

ROOT = Path(__file__).resolve().parents[3]
PLUGINS = ROOT / "resources" / "plugins"


def plugin(name: str) -> str:
    """Absolute path of a bundled SDK-built plugin (root id = name)."""
    p = PLUGINS / f"{name}.wasm"
    assert p.is_file(), p
    return str(p)


# -- config builders ---------------------------------------------------------------------------


def wasm_plugin(
    name: str,
    url: str,
    *,
    root_id: str | None = None,
    config: dict[str, Any] | None = None,
    phase: str | None = None,
    priority: int | None = None,
    fail: str | None = None,
    mode: str | None = None,
    canary: float | None = None,
    canary_key: str | None = None,
    vm_id: str | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One WasmPlugin document (as a dict) with the knobs the tests need."""
    ann = dict(annotations or {})
    if mode is not None:
        ann["wasmdesk.dev/mode"] = mode
    if canary is not None:
        ann["wasmdesk.dev/canary-percent"] = str(canary)
    if canary_key is not None:
        ann["wasmdesk.dev/canary-key"] = canary_key
    if vm_id is not None:
        ann["wasmdesk.dev/vm-id"] = vm_id
    meta: dict[str, Any] = {"name": name}
    if ann:
        meta["annotations"] = ann
    spec: dict[str, Any] = {"url": url}
    if root_id is not None:
        spec["pluginName"] = root_id
    if config is not None:
        spec["pluginConfig"] = config
    if phase is not None:
        spec["phase"] = phase
    if priority is not None:
        spec["priority"] = priority
    if fail is not None:
        spec["failStrategy"] = fail
    return {
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": meta,
        "spec": spec,
    }


def config_text(
    *plugins: dict[str, Any],
    clusters: dict[str, str | tuple[str, str]] | None = None,
    default_cluster: str | None = None,
) -> str:
    """YAML text: a Proxy document on ephemeral loopback ports, then the plugins.
    ``clusters``: name -> url, or name -> (url, timeout)."""
    spec: dict[str, Any] = {"listen": "127.0.0.1:0", "admin": "127.0.0.1:0"}
    if clusters:
        entries = []
        for name, v in clusters.items():
            if isinstance(v, tuple):
                entries.append({"name": name, "url": v[0], "timeout": v[1]})
            else:
                entries.append({"name": name, "url": v})
        spec["clusters"] = entries
    if default_cluster:
        spec["defaultCluster"] = default_cluster
    docs = [{"apiVersion": "wasmdesk.dev/v1alpha1", "kind": "Proxy", "spec": spec}, *plugins]
    return yaml.safe_dump_all(docs, sort_keys=False)


def make_config(*plugins: dict[str, Any], **kw: Any) -> ProxyConfig:
    return parse_config(config_text(*plugins, **kw), "<test>", str(ROOT))


# -- the server on a background loop -----------------------------------------------------------


class ProxyHarness:
    """A running ``ProxyServer``: its loop runs in a thread; tests talk to it over sockets
    and reach into it with :meth:`sync` / :meth:`call` (which run on the loop thread)."""

    def __init__(self, config: ProxyConfig, **kw: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="proxy-loop", daemon=True)
        self.thread.start()
        kw.setdefault("log_level", LogLevel.INFO)
        # inspect=True (default): the inspector is watched, as when the app's inspector is
        # open, so every request records its per-hop detail; False: nobody watches
        inspect = kw.pop("inspect", True)
        self.server = ProxyServer(config, **kw)
        self.started = False
        try:
            self.call(self.server.start())
        except BaseException:
            self._stop_loop()
            raise
        self.started = True
        if inspect:
            self.sync(self.server.manager.inspector.watch)

    # running things on the loop
    def call(self, coro: Any, timeout: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def sync(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        async def run() -> Any:
            return fn(*args, **kw)

        return self.call(run())

    def apply(self, config: ProxyConfig) -> list[str]:
        return self.call(self.server.apply_config(config))

    # addresses and clients
    @property
    def port(self) -> int:
        return self.server.listen_address[1]

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.server.admin_address[1]}"

    def client(self, **kw: Any) -> httpx.Client:
        kw.setdefault("timeout", 10.0)
        return httpx.Client(base_url=self.url, trust_env=False, **kw)

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        kw.setdefault("timeout", 10.0)
        with httpx.Client(base_url=self.admin_url, trust_env=False) as c:
            return c.request(method, path, **kw)

    def stats(self) -> dict[str, Any]:
        """Counters and gauges from /stats?format=json, by name."""
        r = self.admin("GET", "/stats?format=json")
        assert r.status_code == 200, r.text
        return {s["name"]: s["value"] for s in r.json()["stats"] if "name" in s}

    def slot(self, name: str) -> Any:
        return self.sync(lambda: self.server.manager.slots[name])

    def records(self) -> list[Any]:
        return self.sync(lambda: list(self.server.manager.recent))

    def wait_for(self, cond: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            v = cond()
            if v:
                return v
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what or cond}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.started:
            self.started = False
            with contextlib.suppress(Exception):
                self.call(self.server.stop(), timeout=10)
        self._stop_loop()

    def _stop_loop(self) -> None:
        if not self.loop.is_closed():
            # let close callbacks of transports run, then stop
            async def drain() -> None:
                await asyncio.sleep(0.01)

            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(drain(), self.loop).result(2)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            assert not self.thread.is_alive(), "proxy loop thread did not stop"
            self.loop.close()


@pytest.fixture
def start_proxy() -> Iterator[Callable[..., ProxyHarness]]:
    """``start_proxy(config_or_yaml, strict=True, watch=False, ...)`` -> ProxyHarness,
    stopped at teardown."""
    running: list[ProxyHarness] = []

    def start(config: ProxyConfig | str, **kw: Any) -> ProxyHarness:
        if isinstance(config, str):
            config = parse_config(config, "<test>", str(ROOT))
        h = ProxyHarness(config, **kw)
        running.append(h)
        return h

    yield start
    for h in running:
        h.stop()


# -- the probe plugin (inline WAT) -------------------------------------------------------------

_PROBE = """\
;; probe: appends its plugin name (property plugin_name) to request header x-order and
;; response header x-order-resp; counts proxy_on_delete of stream contexts in counter
;; probe.<name>.deletes (and on_done in probe.<name>.dones).
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $get_prop (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value"
    (func $get_hdr (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value"
    (func $rep_hdr (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $def_metric (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $inc_metric (param i32 i64) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $set_tick (param i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $set_eff (param i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (import "env" "proxy_set_property" (func $set_prop (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 4)

  (data (i32.const 1024) "plugin_name")   ;; 11
  (data (i32.const 1040) "x-order")       ;; 7
  (data (i32.const 1056) "x-order-resp")  ;; 12
  (data (i32.const 1072) ":path")         ;; 5
  (data (i32.const 1088) "TRAP_PATH")
  (data (i32.const 1152) "probe.")        ;; 6
  (data (i32.const 1168) ".deletes")      ;; 8
  (data (i32.const 1184) ".dones")        ;; 6
  (data (i32.const 1200) "x-probe-tag")   ;; 11
  (data (i32.const 1216) "TAG")
  (data (i32.const 1280) "wasmdesk_probe") ;; 14
  (data (i32.const 1296) "x-probe-prop")  ;; 12
  (data (i32.const 1312) "set")           ;; 3

  (global $name_len (mut i32) (i32.const 0))
  (global $m_deletes (mut i32) (i32.const 0))
  (global $m_dones (mut i32) (i32.const 0))
  (global $pending (mut i32) (i32.const 0))

  ;; bump allocator over [65536, 196608), wrapping (buffers are used at once)
  (global $heap (mut i32) (i32.const 65536))
  (func (export "malloc") (param $size i32) (result i32)
    (local $p i32)
    (if (i32.gt_u (local.get $size) (i32.const 131072)) (then (return (i32.const 0))))
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (if (i32.gt_u (i32.add (local.get $p) (local.get $size)) (i32.const 196608))
      (then (local.set $p (i32.const 65536))))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (local.get $p))

  (func $eq (param $a i32) (param $alen i32) (param $b i32) (param $blen i32) (result i32)
    (local $i i32)
    (if (i32.ne (local.get $alen) (local.get $blen)) (then (return (i32.const 0))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $alen)))
        (if (i32.ne (i32.load8_u (i32.add (local.get $a) (local.get $i)))
                    (i32.load8_u (i32.add (local.get $b) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 1))

  ;; map[key] = (map[key] + "," if present) + name
  (func $append (param $map i32) (param $key i32) (param $klen i32)
    (local $len i32)
    (if (i32.eqz (call $get_hdr (local.get $map) (local.get $key) (local.get $klen)
                                (i32.const 256) (i32.const 260)))
      (then
        (local.set $len (i32.load (i32.const 260)))
        (memory.copy (i32.const 8192) (i32.load (i32.const 256)) (local.get $len))
        (i32.store8 (i32.add (i32.const 8192) (local.get $len)) (i32.const 44))
        (local.set $len (i32.add (local.get $len) (i32.const 1)))))
    (memory.copy (i32.add (i32.const 8192) (local.get $len)) (i32.const 2048)
                 (global.get $name_len))
    (local.set $len (i32.add (local.get $len) (global.get $name_len)))
    (drop (call $rep_hdr (local.get $map) (local.get $key) (local.get $klen)
                         (i32.const 8192) (local.get $len))))

  (func $define (param $suffix i32) (param $slen i32) (result i32)
    (memory.copy (i32.const 4096) (i32.const 1152) (i32.const 6))
    (memory.copy (i32.const 4102) (i32.const 2048) (global.get $name_len))
    (memory.copy (i32.add (i32.const 4102) (global.get $name_len)) (local.get $suffix)
                 (local.get $slen))
    (drop (call $def_metric (i32.const 0) (i32.const 4096)
      (i32.add (i32.add (global.get $name_len) (i32.const 6)) (local.get $slen))
      (i32.const 264)))
    (i32.load (i32.const 264)))

  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (if (i32.eqz (call $get_prop (i32.const 1024) (i32.const 11) (i32.const 256) (i32.const 260)))
      (then
        (global.set $name_len (i32.load (i32.const 260)))
        (if (i32.gt_u (global.get $name_len) (i32.const 128))
          (then (global.set $name_len (i32.const 128))))
        (memory.copy (i32.const 2048) (i32.load (i32.const 256)) (global.get $name_len))))
    (global.set $m_deletes (call $define (i32.const 1168) (i32.const 8)))
    (global.set $m_dones (call $define (i32.const 1184) (i32.const 6)))
    TICK_SETUP
    (i32.const 1))

  (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
    TRAP_CHECK
    (call $append (i32.const 0) (i32.const 1040) (i32.const 7))
    TAG_ADD
    PROP_SET
    PROP_GET
    PAUSE
    (i32.const 0))

  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (call $append (i32.const 2) (i32.const 1056) (i32.const 12))
    (i32.const 0))

  (func (export "proxy_on_tick") (param i32)
    TICK_TRAP
    (if (global.get $pending)
      (then
        (drop (call $set_eff (global.get $pending)))
        (global.set $pending (i32.const 0))
        (drop (call $continue (i32.const 0))))))

  (func (export "proxy_on_done") (param $ctx i32) (result i32)
    (drop (call $inc_metric (global.get $m_dones) (i64.const 1)))
    (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param $ctx i32)
    (if (i32.eq (local.get $ctx) (global.get $pending))
      (then (global.set $pending (i32.const 0))))
    (drop (call $inc_metric (global.get $m_deletes) (i64.const 1))))
)
"""

_probe_cache: dict[tuple[Any, ...], bytes] = {}


def probe_wasm(
    *,
    trap_path: str | None = None,
    pause_until_tick_ms: int | None = None,
    tag: str | None = None,
    set_property: bool = False,
    get_property: bool = False,
    trap_on_tick_ms: int | None = None,
) -> bytes:
    """The probe module's bytes.

    ``trap_path``: ``unreachable`` in on_request_headers when ``:path`` equals it.
    ``pause_until_tick_ms``: on_request_headers returns StopIteration and the next tick
    (period given) resumes the request (proxy_set_effective_context + continue_stream).
    ``tag``: also adds request header ``x-probe-tag: <tag>``.
    ``set_property``: calls proxy_set_property("wasmdesk_probe", "set").
    ``get_property``: reads property "wasmdesk_probe" and, if found, sets request header
    ``x-probe-prop`` to it.
    ``trap_on_tick_ms``: sets that tick period and traps (``unreachable``) in on_tick.
    """
    key = (trap_path, pause_until_tick_ms, tag, set_property, get_property, trap_on_tick_ms)
    if key in _probe_cache:
        return _probe_cache[key]
    text = _PROBE
    if trap_path is not None:
        assert len(trap_path) < 60
        text = text.replace('"TRAP_PATH"', '"' + trap_path + '"')
        text = text.replace(
            "TRAP_CHECK",
            "(if (i32.eqz (call $get_hdr (i32.const 0) (i32.const 1072) (i32.const 5)"
            " (i32.const 256) (i32.const 260)))\n"
            "      (then (if (call $eq (i32.load (i32.const 256)) (i32.load (i32.const 260))"
            f" (i32.const 1088) (i32.const {len(trap_path)}))\n"
            "        (then (unreachable)))))",
        )
    else:
        text = text.replace('"TRAP_PATH"', '""').replace("TRAP_CHECK", "")
    if pause_until_tick_ms is not None:
        text = text.replace(
            "TICK_SETUP", f"(drop (call $set_tick (i32.const {pause_until_tick_ms})))"
        )
        text = text.replace(
            "PAUSE", "(global.set $pending (local.get $ctx))\n    (return (i32.const 1))"
        )
    elif trap_on_tick_ms is not None:
        text = text.replace(
            "TICK_SETUP", f"(drop (call $set_tick (i32.const {trap_on_tick_ms})))"
        ).replace("PAUSE", "")
    else:
        text = text.replace("TICK_SETUP", "").replace("PAUSE", "")
    text = text.replace("TICK_TRAP", "(unreachable)" if trap_on_tick_ms is not None else "")
    if tag is not None:
        assert len(tag) < 60
        text = text.replace('"TAG"', '"' + tag + '"')
        text = text.replace(
            "TAG_ADD",
            "(drop (call $rep_hdr (i32.const 0) (i32.const 1200) (i32.const 11)"
            f" (i32.const 1216) (i32.const {len(tag)})))",
        )
    else:
        text = text.replace('"TAG"', '""').replace("TAG_ADD", "")
    if set_property:
        text = text.replace(
            "PROP_SET",
            "(drop (call $set_prop (i32.const 1280) (i32.const 14) (i32.const 1312)"
            " (i32.const 3)))",
        )
    else:
        text = text.replace("PROP_SET", "")
    if get_property:
        text = text.replace(
            "PROP_GET",
            "(if (i32.eqz (call $get_prop (i32.const 1280) (i32.const 14) (i32.const 256)"
            " (i32.const 260)))\n"
            "      (then (drop (call $rep_hdr (i32.const 0) (i32.const 1296) (i32.const 12)"
            " (i32.load (i32.const 256)) (i32.load (i32.const 260))))))",
        )
    else:
        text = text.replace("PROP_GET", "")
    data = compile_wat(text, "probe")
    _probe_cache[key] = data
    return data


@pytest.fixture
def wasm_file(tmp_path: Path) -> Callable[[bytes, str], str]:
    """``wasm_file(data, name)`` writes a module into tmp_path and returns its path."""

    def write(data: bytes, name: str = "m") -> str:
        p = tmp_path / f"{name}.wasm"
        p.write_bytes(data)
        return str(p)

    return write


@pytest.fixture
def probe(wasm_file: Callable[[bytes, str], str]) -> Callable[..., str]:
    """``probe(**options)`` -> path of a probe module file (see :func:`probe_wasm`)."""
    counter = [0]

    def make(**kw: Any) -> str:
        counter[0] += 1
        return wasm_file(probe_wasm(**kw), f"probe{counter[0]}")

    return make


# -- a scripted raw upstream -------------------------------------------------------------------


class ScriptedUpstream:
    """A TCP server on 127.0.0.1:0; ``script(conn, self)`` runs per accepted connection in
    its own thread. ``received`` collects every byte read with :meth:`recv`."""

    def __init__(self, script: Callable[[socket.socket, ScriptedUpstream], None]) -> None:
        self.script = script
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.received = bytearray()
        self.connections = 0
        self.lock = threading.Lock()
        self.events: dict[str, threading.Event] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    def event(self, name: str) -> threading.Event:
        with self.lock:
            return self.events.setdefault(name, threading.Event())

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(10)
            with self.lock:
                self.connections += 1
                self._conns.append(conn)
            t = threading.Thread(target=self._run, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _run(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            self.script(conn, self)

    def recv(self, conn: socket.socket, n: int = 65536) -> bytes:
        data = conn.recv(n)
        with self.lock:
            self.received += data
        return data

    def read_head(self, conn: socket.socket, buf: bytearray) -> bytes | None:
        """Read up to the end of a request head (buf keeps what follows); None on EOF."""
        while b"\r\n\r\n" not in buf:
            data = self.recv(conn)
            if not data:
                return None
            buf += data
        i = buf.index(b"\r\n\r\n") + 4
        head = bytes(buf[:i])
        del buf[:i]
        return head

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        with self.lock:
            for c in self._conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)  # wakes a script blocked in recv
                with contextlib.suppress(OSError):
                    c.close()
        for t in self._threads:
            t.join(5)


@pytest.fixture
def scripted_upstream() -> Iterator[Callable[..., ScriptedUpstream]]:
    made: list[ScriptedUpstream] = []

    def make(script: Callable[[socket.socket, ScriptedUpstream], None]) -> ScriptedUpstream:
        u = ScriptedUpstream(script)
        made.append(u)
        return u

    yield make
    for u in made:
        u.close()


def free_port() -> int:
    """A port nothing listens on (bound then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -- a raw HTTP/1.1 client ---------------------------------------------------------------------


@dataclasses.dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def connect(h: ProxyHarness, timeout: float = 10.0) -> socket.socket:
    s = socket.create_connection(h.addr, timeout=timeout)
    return s


def read_response(f: Any, head: bool = False) -> RawResponse:
    """Read one response from a buffered binary file over a socket (``sock.makefile('rb')``).
    ``head``: the response to a HEAD request (no body whatever its headers say)."""
    line = f.readline()
    if not line:
        raise EOFError("connection closed before a response")
    version, status, *rest = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    assert version.startswith("HTTP/1."), line
    headers: list[tuple[str, str]] = []
    while True:
        ln = f.readline()
        if ln in (b"\r\n", b"\n", b""):
            break
        k, _, v = ln.decode("latin-1").partition(":")
        headers.append((k.strip().lower(), v.strip()))
    code = int(status)
    hd = dict(headers)
    body = b""
    if head or code in (204, 304) or 100 <= code < 200:
        pass
    elif "chunked" in hd.get("transfer-encoding", "").lower():
        chunks = []
        while True:
            size = int(f.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while f.readline() not in (b"\r\n", b"\n", b""):
                    pass
                break
            chunks.append(f.read(size))
            f.readline()
        body = b"".join(chunks)
    elif "content-length" in hd:
        body = f.read(int(hd["content-length"]))
    else:
        body = f.read()
    return RawResponse(code, rest[0] if rest else "", headers, body)


def raw_exchange(h: ProxyHarness, data: bytes, n: int = 1, head: bool = False) -> list[RawResponse]:
    """Send ``data`` on a fresh connection and read ``n`` responses."""
    with connect(h) as s:
        s.sendall(data)
        f = s.makefile("rb")
        return [read_response(f, head=head) for _ in range(n)]


def is_closed(s: socket.socket, timeout: float = 3.0) -> bool:
    """True when the peer closes the connection (EOF or reset) within ``timeout``."""
    s.settimeout(timeout)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Every test stops what it started: no proxy loop or wasm epoch thread survives it."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        leaked = [
            t
            for t in threading.enumerate()
            if t not in before and t.is_alive() and t.name in ("proxy-loop", "wasmdesk-epoch")
        ]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert leaked == [], f"threads left running: {leaked}"
