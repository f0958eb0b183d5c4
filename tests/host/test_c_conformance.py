"""Conformance: plugins that behave like the SDKs we cannot build here, through the real host.

``resources/plugins/c/`` holds C plugins compiled with zig's clang (``ziglang`` from PyPI) that
emulate, at the ABI level, what a Rust-SDK plugin (``rust_strict``) and a TinyGo/Go-SDK plugin
(``tinygo_like``) do: export set, WASI model, allocator, start-up, and above all how each SDK
reacts to host statuses and callback arguments (the Rust SDK panics on any status outside the
set it accepts, ABI doc §2.3; the Go SDK panics on callout/queue/tick callbacks that do not
carry a root context id, §3.4). Behaviour, scenarios and log lines: resources/plugins/c/README.md.

(a) MANIFEST.json matches the sources and the committed modules (always);
(b) ``build.py --check`` rebuilds them byte for byte when ``ziglang`` is importable;
(c) both plugins run through ``run_try`` / ``PluginHost``: a trap here means the host answered
    something the real SDK would crash on -- a host bug (mark it xfail(strict=True, "BUG: ..."),
    do not weaken the assertion).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import socket
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import wasmtime

from host.runner import TryRequest, TryResult, run_try
from host.wasm import (
    Action,
    Engine,
    HeaderMap,
    LogLevel,
    PluginHost,
    Status,
    VirtualClock,
    VmConfig,
)
from host.wasm.context import HttpContext, StreamInfo, StreamListener
from host.wasm.plugin_host import LogRecord
from host.wasm.types import StreamType
from tests import build_check_cache

C_DIR = Path(__file__).resolve().parents[2] / "resources" / "plugins" / "c"
BUILD_SCRIPT = C_DIR / "build.py"
PLUGINS = ("cpp_2020_like", "grpc_client", "rust_strict", "tcp_filter", "tinygo_like")
WASI = "wasi_snapshot_preview1"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((C_DIR / "MANIFEST.json").read_text(encoding="utf-8"))
    return data


def build_module() -> ModuleType:
    """build.py imported as a module (stdlib only; nothing runs at import)."""
    spec = importlib.util.spec_from_file_location("c_plugins_build", BUILD_SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses need the module registered
    spec.loader.exec_module(mod)
    return mod


def wasm(name: str) -> bytes:
    return (C_DIR / f"{name}.wasm").read_bytes()


# -- (a) the committed modules are what the sources build to --------------------------------


def test_every_c_plugin_has_a_wasm_and_a_manifest_entry() -> None:
    build = build_module()
    assert sorted(build.PLUGINS) == list(PLUGINS)
    assert sorted(p.stem for p in C_DIR.glob("*.c")) == list(PLUGINS)
    assert sorted(p.stem for p in C_DIR.glob("*.wasm")) == list(PLUGINS)
    assert sorted(manifest()["plugins"]) == list(PLUGINS)


@pytest.mark.parametrize("name", PLUGINS)
def test_manifest_source_hashes_match_the_current_sources(name: str) -> None:
    recorded: dict[str, str] = manifest()["plugins"][name]["sources"]
    build = build_module()
    assert sorted(recorded) == sorted(p.name for p in build.sources_of(name))
    assert {f"{name}.c", "proxy_abi.h"} <= set(recorded)
    stale = [f for f, digest in recorded.items() if sha256(C_DIR / f) != digest]
    assert not stale, (
        f"{name}: {stale} changed since {name}.wasm was built; run "
        "`python resources/plugins/c/build.py` and commit the .wasm files and MANIFEST.json"
    )


@pytest.mark.parametrize("name", PLUGINS)
def test_manifest_wasm_hash_and_flags_match(name: str) -> None:
    entry = manifest()["plugins"][name]
    assert entry["wasm"]["file"] == f"{name}.wasm"
    path = C_DIR / entry["wasm"]["file"]
    assert sha256(path) == entry["wasm"]["sha256"], (
        f"{path.name} is not the module MANIFEST.json records"
    )
    assert path.stat().st_size == entry["wasm"]["size"]
    build = build_module()
    assert entry["flags"] == build.flags_for(name), "build.py flags changed: rebuild"
    assert manifest()["toolchain"]["ziglang"] == build.ZIG_VERSION == "0.17.1"


def _ziglang_skip_reason() -> str | None:
    try:
        import ziglang  # noqa: F401
    except ImportError:
        return ("ziglang is not installed: `pip install ziglang==0.17.1` to rebuild the C "
                "conformance plugins and compare them byte for byte")
    from importlib.metadata import version

    v = version("ziglang")
    if v != "0.17.1":
        return f"ziglang {v} installed; the committed modules are built with 0.17.1"
    return None


# -- (b) rebuild and compare -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)  # a cold zig cache compiles libc for wasm32-wasi first (~30 s)
@pytest.mark.skipif(_ziglang_skip_reason() is not None, reason=str(_ziglang_skip_reason()))
def test_build_check_rebuilds_byte_identical_modules() -> None:
    # A pass is cached under ~/.cache/wasmdesk/build-check, keyed on the sources, build.py and
    # the zig version (tests/build_check_cache.py); a hit still checks the committed .wasm
    # files and MANIFEST.json against the digests recorded when the rebuild matched.
    inputs = build_check_cache.c_inputs(C_DIR)
    result = build_check_cache.run_check(BUILD_SCRIPT, C_DIR, inputs, timeout=580)
    assert result.ok, result.output
    assert result.cached or "byte-identical" in result.output


# -- (c) through the real host ------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    e = Engine(cache_dir=False)
    yield e
    e.close()


@pytest.fixture
def make_host(engine: Engine) -> Iterator[Any]:
    hosts: list[PluginHost] = []

    def make(**kw: Any) -> PluginHost:
        kw.setdefault("log_level", LogLevel.TRACE)
        kw.setdefault("clock", VirtualClock())
        h = PluginHost(engine, **kw)
        hosts.append(h)
        return h

    yield make
    for h in hosts:
        h.close()


def run(name: str, engine: Engine, **kw: Any) -> TryResult:
    kw.setdefault("root_id", name)
    kw.setdefault("log_level", LogLevel.TRACE)
    if isinstance(kw.get("configuration"), dict):
        kw["configuration"] = json.dumps(kw["configuration"]).encode()
    return run_try(wasm(name), TryRequest(**kw), engine=engine)


def header(pairs: list[tuple[bytes, bytes]], name: str) -> str | None:
    for k, v in pairs:
        if k == name.encode():
            return v.decode()
    return None


def plugin_lines(r: TryResult, level: str = "info") -> list[str]:
    return [str(x["message"]) for x in r.logs if x["source"] == "plugin" and x["level"] == level]


def record_lines(logs: Any, source: str = "plugin") -> list[str]:
    return [rec.message for rec in logs if isinstance(rec, LogRecord) and rec.source == source]


def no_panics(r: TryResult) -> None:
    assert r.ok, f"the plugin trapped: {r.failure}\n" + "\n".join(plugin_lines(r, "critical"))
    assert plugin_lines(r, "critical") == []


def exports_of(data: bytes) -> set[str]:
    return {e.name for e in wasmtime.Module(wasmtime.Engine(), data).exports}


def imports_of(data: bytes) -> set[tuple[str, str]]:
    return {(i.module, i.name) for i in wasmtime.Module(wasmtime.Engine(), data).imports}


def refused_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


# -- rust_strict ---------------------------------------------------------------------------------


def test_rust_strict_has_the_rust_sdk_module_shape(engine: Engine) -> None:
    ex = exports_of(wasm("rust_strict"))
    assert {"proxy_abi_version_0_2_1", "_initialize", "proxy_on_memory_allocate", "memory"} <= ex
    assert "malloc" not in ex and "_start" not in ex  # wasm32-wasip1 reactor, own allocator
    assert all(m in (WASI, "env") for m, _ in imports_of(wasm("rust_strict")))


def test_rust_strict_default_scenario_runs_without_a_trap(engine: Engine) -> None:
    """Every host call of a typical Rust plugin answers a status the Rust SDK accepts."""
    path = "/items?id=7"
    cfg = json.dumps({"scenario": "default"}).encode()
    body = b"hello body"
    new_body = b"rust_strict replaced 10 bytes: hello body"
    r = run(
        "rust_strict", engine, method="POST", path=path, body=body, configuration=cfg,
        vm_configuration=b"vm-config-1", env=[("RUST_STRICT_ENV", "from-test")],
        headers=[("x-rust-replaced", "old"), ("x-rust-remove", "bye"), ("user-agent", "conf/1")],
    )
    no_panics(r)
    assert r.abi == "0.2.1"
    # zig-built C in the Rust SDK's shape carries no rustc evidence (producers, symbols):
    # `inspect` says "unknown" rather than guess (the shape fits Go 1.24 as well)
    assert r.sdk == "unknown"
    compressed = len(zlib.compress(b"hello hello hello hello"))
    assert plugin_lines(r) == [
        "rust_strict: vm_start root=1 vm_configuration='vm-config-1' (size 11)",
        f"rust_strict: configure root=1 read {len(cfg)} of {len(cfg)} bytes, scenario=default",
        "rust_strict: configure property plugin_root_id=rust_strict",
        "rust_strict: request headers: 9 pairs (callback said 9)",
        f"rust_strict: :path={path}",
        "rust_strict: x-missing: NOT_FOUND",
        "rust_strict: headers mutated (added x-rust-added, replaced x-rust-replaced, "
        "removed x-rust-remove)",
        f"rust_strict: property request.path={path}",
        "rust_strict: property request.method=POST",
        "rust_strict: property request.protocol=HTTP/1.1",
        f"rust_strict: property source.address={StreamInfo().source_address}",
        "rust_strict: property plugin_root_id=rust_strict",
        "rust_strict: property no.such.property: NOT_FOUND",
        "rust_strict: log level=0",
        "rust_strict: current time nonzero: yes",
        "rust_strict: shared rust_strict.requests=1 (cas changed: yes)",
        "rust_strict: counter rust_strict.requests_total=1",
        "rust_strict: gauge rust_strict.inflight=40",
        f"rust_strict: histogram rust_strict.path_len recorded {len(path)}, "
        "get_metric: BAD_ARGUMENT",
        "rust_strict: queue registered, resolve: OK, same token: yes",
        "rust_strict: resolve rust_strict.no_such_queue: NOT_FOUND",
        f"rust_strict: enqueued '{path}': OK",
        "rust_strict: env RUST_STRICT_ENV=from-test",
        f"rust_strict: foreign compress: OK, {compressed} bytes",
        "rust_strict: foreign no_such_function: NOT_FOUND",
        "rust_strict: property rust_strict.note=hello-from-rust",
        f"rust_strict: request body 10 bytes (callback said 10) replaced with "
        f"{len(new_body)} bytes",
        "rust_strict: response :status=200",
        f"rust_strict: on_log :path={path} :status=200 request headers=9",
        "rust_strict: on_log property response.code=200",
        f"rust_strict: dequeued '{path}'",
        "rust_strict: queue empty",
    ]
    # println! → WASI fd_write(1) → one host log line at info, attributed to the stream
    stdout = [x for x in r.logs if x["source"] == "stdout"]
    assert [(x["level"], x["message"], x["context_id"]) for x in stdout] == [
        ("info", f"rust_strict stdout: request {path}", 2)
    ]
    # header mutations reached the forwarded request; the response got its header
    assert header(r.request_headers, "x-rust-added") == "1"
    assert [v for k, v in r.request_headers if k == b"x-rust-replaced"] == [b"new"]
    assert header(r.request_headers, "x-rust-remove") is None
    assert header(r.response_headers, "x-rust-response") == "1"
    # body read with max_size = 0xFFFFFFFF and replaced
    assert r.request_forwarded and r.request_body == new_body
    # metrics, shared data
    assert r.metrics["rust_strict.requests_total"] == 1
    assert r.metrics["rust_strict.inflight"] == 40
    hist = r.metrics["rust_strict.path_len"]
    assert isinstance(hist, dict) and hist["count"] == 1 and hist["sum"] == len(path)
    assert r.shared_data[""]["rust_strict.requests"][0] == "1"
    # the queue item was delivered to the root, after the enqueuing callback returned
    calls = [(c["name"], c["context_id"]) for c in r.callbacks]
    assert ("proxy_on_queue_ready", 1) in calls
    assert calls.index(("proxy_on_queue_ready", 1)) > calls.index(("proxy_on_request_headers", 2))
    assert calls[:4] == [
        ("proxy_on_context_create", 1), ("proxy_on_vm_start", 1), ("proxy_on_configure", 1),
        ("proxy_on_context_create", 2),
    ]


def test_rust_strict_http_call_resumes_the_request_with_the_call_status(
    engine: Engine, upstream: Any
) -> None:
    r = run("rust_strict", engine, configuration={"scenario": "http_call"},
            clusters={"upstream": upstream.url}, headers=[("authorization", "Bearer abc")])
    no_panics(r)
    assert r.request_forwarded
    assert header(r.request_headers, "x-call-status") == "200"
    assert header(r.request_headers, "x-call-body") == "user-abc"
    assert plugin_lines(r)[-4:] == [
        "rust_strict: http_call to upstream dispatched, pausing",
        "rust_strict: http_call response status=200 body='user-abc'",
        "rust_strict: request resumed",
        "rust_strict: response :status=200",
    ]
    assert upstream.requests[0]["path"] == "/check"
    assert upstream.requests[0]["headers"]["authorization"] == "Bearer abc"
    calls = [(c["name"], c["context_id"], c["result"]) for c in r.callbacks]
    assert ("proxy_on_request_headers", 2, 1) in calls  # Pause
    assert ("proxy_on_http_call_response", 1, None) in calls  # on the root


def test_rust_strict_http_call_reports_a_403_answer(engine: Engine, upstream: Any) -> None:
    r = run("rust_strict", engine, configuration={"scenario": "http_call"},
            clusters={"upstream": upstream.url})
    no_panics(r)
    assert r.request_forwarded
    assert header(r.request_headers, "x-call-status") == "403"
    assert header(r.request_headers, "x-call-body") == "no token"


def test_rust_strict_http_call_failure_reads_get_status(engine: Engine) -> None:
    r = run("rust_strict", engine, configuration={"scenario": "http_call"},
            clusters={"upstream": f"http://127.0.0.1:{refused_port()}"})
    no_panics(r)
    assert header(r.request_headers, "x-call-status") == "failed"
    assert "rust_strict: http_call failed: status 11 'connect_failure'" in plugin_lines(r)


def test_rust_strict_http_auth_sends_a_local_403_from_the_call_response(
    engine: Engine, upstream: Any
) -> None:
    r = run("rust_strict", engine, configuration={"scenario": "http_auth"},
            clusters={"upstream": upstream.url})
    no_panics(r)
    assert not r.request_forwarded
    assert r.local_response is not None and r.local_response["status"] == 403
    assert r.local_response["body"] == "Access forbidden.\n"
    assert r.response_status == 403
    assert header(r.response_headers, "powered-by") == "rust_strict"
    assert "rust_strict: access denied (call status 403), sent local 403" in plugin_lines(r)
    ok = run("rust_strict", engine, configuration={"scenario": "http_auth"},
             clusters={"upstream": upstream.url}, headers=[("authorization", "Bearer t")])
    no_panics(ok)
    assert ok.request_forwarded and header(ok.request_headers, "x-call-status") == "200"


def test_rust_strict_tick_scenario_counts_three_ticks(engine: Engine) -> None:
    r = run("rust_strict", engine, configuration={"scenario": "tick"}, ticks=3)
    no_panics(r)
    assert r.ticks_fired == 3
    assert r.metrics["rust_strict.ticks"] == 3
    assert [m for m in plugin_lines(r) if m.startswith("rust_strict: tick")] == [
        "rust_strict: tick period set to 10 ms", "rust_strict: tick 1", "rust_strict: tick 2",
        "rust_strict: tick 3",
    ]
    assert header(r.request_headers, "x-ticks") == "3"
    assert [c["context_id"] for c in r.callbacks if c["name"] == "proxy_on_tick"] == [1, 1, 1]


def test_rust_strict_survives_many_requests_two_vms_and_shutdown(make_host: Any) -> None:
    host = make_host()
    module = host.compile(wasm("rust_strict"))
    vms = [host.create_vm(module, VmConfig(vm_id="shared", name="rust_strict")) for _ in range(2)]
    roots = [vm.start_plugin("rust_strict", b"") for vm in vms]
    for i in range(6):
        vm, root = vms[i % 2], roots[i % 2]
        ctx = vm.new_http_context(root)
        assert ctx.on_request_headers(HeaderMap([(":path", f"/p{i}"), (":method", "GET")]), True) \
            == Action.CONTINUE
        assert ctx.on_response_headers(HeaderMap([(":status", "204")]), True) == Action.CONTINUE
        ctx.finish()
        host.run_pending()
    for vm in vms:
        vm.close()  # on_done(root) → on_delete(root): the dispatcher must know the root
    assert [vm.failure for vm in vms] == [None, None]
    shared = [m for m in record_lines(host.logs) if m.startswith("rust_strict: shared ")]
    assert shared == [
        f"rust_strict: shared rust_strict.requests={n} (cas changed: yes)" for n in range(1, 7)
    ]
    assert sorted(m for m in record_lines(host.logs) if "dequeued" in m) == sorted(
        f"rust_strict: dequeued '/p{i}'" for i in range(6)
    )
    assert not [r for r in host.logs if r.level == LogLevel.CRITICAL]


def test_rust_strict_checker_really_panics_on_a_rejected_status(make_host: Any) -> None:
    """Self-test of the emulation: a status outside the Rust SDK's set must trap."""
    host = make_host()
    host.foreign_functions["compress"] = lambda args: (Status.UNIMPLEMENTED, b"")
    vm = host.create_vm(host.compile(wasm("rust_strict")), VmConfig(name="rust_strict"))
    root = vm.start_plugin("rust_strict", b"")
    ctx = vm.new_http_context(root)
    get = HeaderMap([(":path", "/"), (":method", "GET")])
    assert ctx.on_request_headers(get, True) == Action.FAILED
    assert vm.failure is not None and vm.failure.kind == "unreachable"
    assert vm.failure.callback == "proxy_on_request_headers"
    critical = [
        r.message for r in host.logs if r.level == LogLevel.CRITICAL and r.source == "plugin"
    ]
    assert critical == [
        "rust_strict panicked at 'unexpected status: 12' (UNIMPLEMENTED) calling "
        "proxy_call_foreign_function"
    ]


def test_rust_strict_rejects_an_unknown_scenario_at_configure(engine: Engine) -> None:
    r = run("rust_strict", engine, configuration={"scenario": "nope"})
    assert r.failure is not None and r.failure["state"] == "CONFIGURE_FAILED"
    assert "rust_strict: configure root=1 rejected unknown scenario 'nope'" in plugin_lines(r)


# -- tinygo_like ---------------------------------------------------------------------------------


def test_tinygo_like_has_the_tinygo_module_shape() -> None:
    ex = exports_of(wasm("tinygo_like"))
    assert {"proxy_abi_version_0_2_0", "_start", "malloc", "proxy_on_memory_allocate"} <= ex
    assert "_initialize" not in ex and "proxy_abi_version_0_2_1" not in ex
    imports = imports_of(wasm("tinygo_like"))
    used = {"clock_time_get", "random_get", "fd_write", "environ_get", "environ_sizes_get",
            "args_get", "args_sizes_get", "proc_exit"}
    never_called = {"fd_prestat_get", "path_open", "fd_read", "fd_seek", "fd_close"}
    assert {(WASI, n) for n in used | never_called} <= imports


def test_tinygo_like_loads_despite_unused_wasi_imports_and_runs_start_first(make_host: Any) -> None:
    host = make_host()
    config = VmConfig(name="tinygo_like", trace_calls=True)
    vm = host.create_vm(host.compile(wasm("tinygo_like")), config)
    assert vm.stubbed_imports == []  # every import has a real implementation
    root = vm.start_plugin("tinygo_like", b"")
    assert vm.failure is None
    # _start (WASI command) ran first, on the VM context; no _initialize exists
    assert vm.trace[0] == ("_start", 0, None)
    assert [t[0] for t in vm.trace[1:4]] == [
        "proxy_on_context_create", "proxy_on_vm_start", "proxy_on_configure",
    ]
    first = host.logs[0]
    assert first.message == "tinygo_like: main ran (argc=0, clock ok, random ok): vm context set"
    assert first.context_id == 0
    ctx = vm.new_http_context(root)
    get = HeaderMap([(":path", "/"), (":method", "GET")])
    assert ctx.on_request_headers(get, True) == Action.CONTINUE
    ctx.finish()
    assert vm.failure is None


def test_tinygo_like_default_request_uses_proxy_on_memory_allocate(engine: Engine) -> None:
    r = run("tinygo_like", engine, method="POST", path="/tg", body=b"payload",
            env=[("TINYGO_ENV", "go-env")], vm_configuration=b"vmc")
    no_panics(r)
    assert r.abi == "0.2.0"
    assert "TinyGo" in r.sdk
    # the host's default ("spec") order: proxy_on_memory_allocate, never malloc
    assert header(r.request_headers, "x-alloc") == "spec"
    assert header(r.request_headers, "x-alloc-first") == "spec"
    assert header(r.request_headers, "x-alloc-malloc-count") == "0"
    assert header(r.request_headers, "x-tinygo") == "1"
    assert header(r.response_headers, "x-tinygo-response") == "1"
    assert r.request_body == b"<go-replaced>"
    nf = "error status returned by host: not found"
    assert plugin_lines(r) == [
        "tinygo_like: main ran (argc=0, clock ok, random ok): vm context set",
        "tinygo_like: first allocation through proxy_on_memory_allocate",
        "tinygo_like: vm_start plugin=1 vm_configuration='vmc'",
        "tinygo_like: configure plugin=1 scenario=default",
        "tinygo_like: request headers: 6 pairs (callback said 6), err=<nil>",
        "tinygo_like: :path=/tg err=<nil>",
        f"tinygo_like: x-missing: err={nf}",
        "tinygo_like: env TINYGO_ENV=go-env",
        "tinygo_like: time.Now via clock_time_get: ok",
        "tinygo_like: random_get: ok",
        "tinygo_like: enqueue '/tg': <nil>",
        "tinygo_like: allocator used: spec (first: spec), add header err=<nil>",
        "tinygo_like: request body 'payload' (7 bytes): replace <nil>, append <nil>, prepend <nil>",
        "tinygo_like: dequeued '/tg' on plugin context 1",
        "tinygo_like: dequeue on plugin context 1: error status returned by host: empty",
    ]
    stdout = [x["message"] for x in r.logs if x["source"] == "stdout"]
    assert stdout == ["tinygo_like stdout: request /tg"]
    assert "tinygo_like: first allocation through malloc" not in plugin_lines(r)


def test_tinygo_like_uses_malloc_with_the_envoy_allocator_order(make_host: Any) -> None:
    host = make_host()
    config = VmConfig(name="tinygo_like", allocator="envoy")  # malloc first, as cpp-host
    vm = host.create_vm(host.compile(wasm("tinygo_like")), config)
    root = vm.start_plugin("tinygo_like", b"")
    ctx = vm.new_http_context(root)
    headers = HeaderMap([(":path", "/e"), (":method", "GET")])
    assert ctx.on_request_headers(headers, True) == Action.CONTINUE
    ctx.finish()
    assert headers.get("x-alloc") == b"malloc"
    assert headers.get("x-alloc-first") == b"malloc"
    assert headers.get("x-alloc-spec-count") == b"0"
    lines = record_lines(host.logs)
    assert "tinygo_like: first allocation through malloc" in lines
    assert "tinygo_like: first allocation through proxy_on_memory_allocate" not in lines
    assert vm.failure is None


def test_tinygo_like_http_call_response_gets_the_root_id(engine: Engine, upstream: Any) -> None:
    r = run("tinygo_like", engine, configuration={"scenario": "http_call"},
            clusters={"upstream": upstream.url}, headers=[("authorization", "Bearer go")])
    no_panics(r)  # the Go SDK panics when the first argument is not a root context id
    assert r.request_forwarded
    assert header(r.request_headers, "x-call-status") == "200"
    assert header(r.request_headers, "x-call-root") == "1"
    resp = [c for c in r.callbacks if c["name"] == "proxy_on_http_call_response"]
    assert [c["context_id"] for c in resp] == [1]
    assert plugin_lines(r)[-4:] == [
        "tinygo_like: http call dispatched to upstream, pausing",
        "tinygo_like: http call response delivered to plugin context 1 (a root)",
        "tinygo_like: http call response status=200 body='user-go'",
        "tinygo_like: resume request: <nil>",
    ]


def test_tinygo_like_tick_and_queue_callbacks_get_the_root_id(engine: Engine) -> None:
    r = run("tinygo_like", engine, configuration={"scenario": "tick"}, ticks=2, path="/q")
    no_panics(r)
    assert r.ticks_fired == 2
    assert header(r.request_headers, "x-ticks") == "2"
    lines = plugin_lines(r)
    assert "tinygo_like: tick 1 on plugin context 1" in lines
    assert "tinygo_like: tick 2 on plugin context 1" in lines
    assert "tinygo_like: dequeued '/q' on plugin context 1" in lines


class _Resumes(StreamListener):
    def __init__(self) -> None:
        self.resumed: list[tuple[int, StreamType]] = []

    def on_resume(self, ctx: HttpContext, stream: StreamType) -> None:
        self.resumed.append((ctx.id, stream))


def test_tinygo_like_postponed_request_resumes_from_on_tick_on_the_host(make_host: Any) -> None:
    """The Go SDK's postpone_requests pattern, driven through PluginHost: Pause in
    on_request_headers, then on_tick → set_effective_context(stream) → continue_stream."""
    clock = VirtualClock()
    host = make_host(clock=clock)
    vm = host.create_vm(host.compile(wasm("tinygo_like")), VmConfig(name="tinygo_like"))
    root = vm.start_plugin("tinygo_like", json.dumps({"scenario": "postpone"}).encode())
    assert root.tick_period_ms == 10
    listener = _Resumes()
    ctx = vm.new_http_context(root, None, listener)
    headers = HeaderMap([(":path", "/later"), (":method", "GET")])
    assert ctx.on_request_headers(headers, True) == Action.PAUSE
    clock.advance(root.tick_period_ms)
    assert vm.due_ticks(clock.now_ms()) == [root]
    assert vm.tick(root)
    assert listener.resumed == [(ctx.id, StreamType.HTTP_REQUEST)]
    assert headers.get("x-postponed") == b"resumed-on-tick"
    resumed = f"tinygo_like: resume postponed request {ctx.id} on tick 1: <nil>"
    assert resumed in record_lines(host.logs)
    ctx.finish()
    assert vm.failure is None


def test_tinygo_like_postponed_request_resumes_from_on_tick_in_run_try(engine: Engine) -> None:
    """The runner keeps ticking while a request waits, as Envoy does (it used not to: ticks
    fired only before the request, and this plugin was reported as "stayed paused")."""
    r = run("tinygo_like", engine, configuration={"scenario": "postpone"}, path="/later")
    no_panics(r)
    assert r.request_forwarded, r.notes
    assert header(r.request_headers, "x-postponed") == "resumed-on-tick"
    assert r.ticks_while_paused >= 1
    lines = plugin_lines(r)
    assert "tinygo_like: postponed request 2 until the next tick" in lines
    assert "tinygo_like: resume postponed request 2 on tick 1: <nil>" in lines


def test_tinygo_like_traps_when_a_callback_runs_before_start() -> None:
    """Self-test of the emulation (plain wasmtime, no host): skipping _start must trap,
    so the host tests above really prove _start ran first."""
    eng = wasmtime.Engine()
    module = wasmtime.Module(eng, wasm("tinygo_like"))
    store = wasmtime.Store(eng)
    linker = wasmtime.Linker(eng)
    for imp in module.imports:
        ft = imp.type
        assert isinstance(ft, wasmtime.FuncType)
        nres = len(ft.results)
        linker.define_func(imp.module, imp.name, ft, lambda *a, _n=nres: 0 if _n else None)
    inst = linker.instantiate(store, module)
    on_context_create = inst.exports(store)["proxy_on_context_create"]
    assert isinstance(on_context_create, wasmtime.Func)
    with pytest.raises(wasmtime.Trap):
        on_context_create(store, 1, 0)
