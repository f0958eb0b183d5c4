"""ProxyServer as a library: a start that fails part-way leaves nothing running and can
be retried; the polling API (logs_since, requests_since) for consumers such as the app."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from host.proxy import server as server_module
from host.proxy.demo_upstream import EchoServer, start_echo_server
from host.proxy.errors import ErrorKind
from host.proxy.plugins import PluginInstance, PluginManager
from host.proxy.server import ProxyServer, StartupError
from host.wasm import LogLevel
from tests.fixtures.wat_modules import make_configure_fails_module

from .conftest import free_port, make_config, plugin, wasm_plugin


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    t = threading.Thread(target=lp.run_forever, name="proxy-loop", daemon=True)
    t.start()
    yield lp
    lp.call_soon_threadsafe(lp.stop)
    t.join(5)
    lp.close()


def _run(loop: asyncio.AbstractEventLoop, coro, timeout: float = 15.0):
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)


@contextlib.contextmanager
def _taken_port() -> Iterator[int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize("taken", ["listen", "admin"])
def test_failed_start_cleans_up_and_can_be_retried(loop, monkeypatch, taken):
    """A taken port fails start() after the demo upstream, the plugins and (for the
    admin port) the proxy listener were started: all of them are closed again, and
    the same object starts once it is given free ports."""
    started: list[PluginInstance] = []
    real_start_instance = PluginManager._start_instance

    def spy_instance(self, slot, spec, module, **kw):
        inst = real_start_instance(self, slot, spec, module, **kw)
        started.append(inst)
        return inst

    demos: list[EchoServer] = []

    async def spy_echo(host: str, port: int) -> EchoServer:
        demo = await start_echo_server(host, port)
        demos.append(demo)
        return demo

    monkeypatch.setattr(PluginManager, "_start_instance", spy_instance)
    monkeypatch.setattr(server_module, "start_echo_server", spy_echo)
    cfg = make_config(wasm_plugin("add", plugin("add_header"), root_id="add_header"))
    listen_port = free_port()
    with _taken_port() as port:
        ports = {"listen_port": listen_port, "admin_port": 0}
        ports[f"{taken}_port"] = port
        server = ProxyServer(dataclasses.replace(cfg, **ports), log_level=LogLevel.INFO)
        with pytest.raises(StartupError, match="cannot listen on"):
            _run(loop, server.start())
        assert started and all(i.closed for i in started)  # the plugin VMs are gone
        assert server.host is None
        assert server.demo is None
        assert not server.running
        assert server._servers == []
        assert len(demos) == 1 and _refused(demos[0].port)
        if taken == "admin":
            assert _refused(listen_port)  # the proxy listener that did open is closed

    # the same object starts with free ports
    server.config = dataclasses.replace(cfg, listen_port=0, admin_port=0)
    _run(loop, server.start())
    try:
        assert server.running
        with httpx.Client(trust_env=False, timeout=5) as c:
            r = c.get(f"http://127.0.0.1:{server.listen_address[1]}/again")
            assert r.status_code == 200
            assert r.json()["headers"]["x-wasmdesk"] == "hello"
            r = c.get(f"http://127.0.0.1:{server.admin_address[1]}/ready")
            assert r.status_code == 200
    finally:
        _run(loop, server.stop())


def test_failed_start_on_a_plugin_error_closes_everything(loop):
    cfg = make_config(wasm_plugin("broken", "/nonexistent/plugin.wasm"))
    server = ProxyServer(cfg, strict=True)
    with pytest.raises(StartupError, match="broken"):
        _run(loop, server.start())
    assert server.host is None
    assert server.demo is None
    assert server._servers == []


# -- the polling API ----------------------------------------------------------------------------


def test_logs_since_returns_the_records_after_a_seq_oldest_first(start_proxy):
    h = start_proxy(make_config())
    srv = h.server

    def log(n: int) -> None:
        for i in range(n):
            srv.manager.log_info(f"line {i}")

    h.sync(log, 10)
    everything = h.sync(srv.logs_since, 0)
    seqs = [s for s, _r in everything]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert [r.message for _s, r in everything][-10:] == [f"line {i}" for i in range(10)]
    last = seqs[-1]
    assert h.sync(srv.logs_since, last) == []
    # continue from a seq in the middle
    mid = seqs[-4]
    tail = h.sync(srv.logs_since, mid)
    assert [r.message for _s, r in tail] == ["line 7", "line 8", "line 9"]
    # a limit keeps the newest, still oldest first
    two = h.sync(srv.logs_since, 0, 2)
    assert [r.message for _s, r in two] == ["line 8", "line 9"]
    assert h.sync(srv.logs_since, 0, 0) == []
    # the admin endpoint is unchanged
    doc = h.admin("GET", f"/logs?since={mid}").json()
    assert [x["message"] for x in doc["logs"]] == ["line 7", "line 8", "line 9"]
    assert doc["next"] == last


def test_logs_since_across_the_ring_trim(start_proxy):
    h = start_proxy(make_config())
    srv = h.server
    h.sync(lambda: [srv.manager.log_info(f"n{i}") for i in range(6000)])
    first_kept = h.sync(lambda: srv.logs[0][0])
    assert first_kept > 1  # the ring dropped the oldest lines
    got = h.sync(srv.logs_since, 0, 100_000)
    assert got[0][0] == first_kept
    assert len(got) == h.sync(lambda: len(srv.logs))


def test_requests_since_returns_records_after_an_id_oldest_first(start_proxy):
    h = start_proxy(make_config(wasm_plugin("add", plugin("add_header"), root_id="add_header")))
    srv = h.server
    with h.client() as c:
        for i in range(5):
            assert c.get(f"/r{i}").status_code == 200
    h.wait_for(lambda: len(h.records()) == 5, what="5 records")
    recs = h.sync(srv.requests_since, 0)
    assert [r.path for r in recs] == [f"/r{i}" for i in range(5)]
    ids = [r.id for r in recs]
    assert ids == sorted(ids)
    assert [r.path for r in h.sync(srv.requests_since, ids[2])] == ["/r3", "/r4"]
    assert h.sync(srv.requests_since, ids[-1]) == []
    assert [r.path for r in h.sync(srv.requests_since, 0, 2)] == ["/r3", "/r4"]
    assert h.sync(srv.requests_since, 0, 0) == []
    # records are the inspector's own objects, with every hop
    assert recs[0].hops[0].plugin == "add"


# -- check_plugin: validate a spec without changing anything ------------------------------------


def _spec(doc: dict, **spec_fields: str):
    doc["spec"].update(spec_fields)
    (spec,) = make_config(doc).plugins
    return spec


def _engine_state(srv: ProxyServer) -> tuple:
    m = srv.manager
    return (
        {n: (s.instance, s.state) for n, s in m.slots.items()},
        [s.name for s in m.ordered],
        set(m._instances),
        dict(m._shared_vms),
    )


def test_check_plugin_accepts_a_good_module_and_changes_nothing(start_proxy, tmp_path):
    h = start_proxy(make_config(wasm_plugin("add", plugin("add_header"), root_id="add_header")))
    srv = h.server
    before = h.sync(_engine_state, srv)
    path = plugin("add_header")
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    # a new plugin, and one named like the running plugin (with another configuration)
    new = _spec(wasm_plugin("other", path, root_id="add_header"), sha256=digest)
    same_name = _spec(
        wasm_plugin(
            "add",
            path,
            root_id="add_header",
            config={"request_header": {"name": "x-checked", "value": "1"}},
        )
    )
    assert h.call(srv.check_plugin(new)) is None
    assert h.call(srv.check_plugin(same_name)) is None
    assert h.sync(_engine_state, srv) == before
    assert [p.name for p in h.sync(srv.current_config).plugins] == ["add"]
    with h.client() as c:
        r = c.get("/after-check")
    assert r.json()["headers"]["x-wasmdesk"] == "hello"
    assert "x-checked" not in r.json()["headers"]


def test_check_plugin_runs_in_a_scratch_vm_even_for_a_shared_vm_id(start_proxy, probe):
    """The probe keeps its plugin name in a VM global set by on_configure: checking a
    second plugin with the same vm_id must not configure it inside the running VM."""
    path = probe()
    h = start_proxy(make_config(wasm_plugin("a", path, root_id="a", vm_id="shared")))
    srv = h.server
    before = h.sync(_engine_state, srv)
    (vm,) = before[3].values()
    candidate = _spec(wasm_plugin("b", path, root_id="b", vm_id="shared"))
    assert h.call(srv.check_plugin(candidate)) is None
    assert h.sync(_engine_state, srv) == before
    assert list(vm.roots) == ["a"] and not vm.closed and not vm.failed
    with h.client() as c:
        assert c.get("/x").json()["headers"]["x-order"] == "a"


def test_check_plugin_reports_a_broken_module(start_proxy, tmp_path):
    h = start_proxy(make_config())
    bad = tmp_path / "broken.wasm"
    bad.write_bytes(b"\0asm\x01\0\0\0" + b"\xff" * 40)
    before = h.sync(_engine_state, h.server)
    err = h.call(h.server.check_plugin(_spec(wasm_plugin("broken", str(bad)))))
    assert err is not None and err.kind is ErrorKind.COMPILE and err.plugin == "broken"
    assert "invalid WebAssembly module" in err.message
    assert h.sync(_engine_state, h.server) == before


def test_check_plugin_reports_a_sha256_mismatch(start_proxy):
    h = start_proxy(make_config())
    spec = _spec(wasm_plugin("add", plugin("add_header"), root_id="add_header"), sha256="0" * 64)
    err = h.call(h.server.check_plugin(spec))
    assert err is not None and err.kind is ErrorKind.VERIFY
    assert "sha256 mismatch" in err.message and "0" * 64 in err.message


def test_check_plugin_reports_a_failing_configure_with_the_plugins_log(start_proxy, tmp_path):
    h = start_proxy(make_config())
    path = tmp_path / "cfg.wasm"
    path.write_bytes(make_configure_fails_module())
    before = h.sync(_engine_state, h.server)
    err = h.call(h.server.check_plugin(_spec(wasm_plugin("cfg", str(path)))))
    assert err is not None and err.kind is ErrorKind.CONFIGURE
    assert err.state == "CONFIGURE_FAILED" and err.log == ("bad config",)
    assert str(err).startswith("plugin cfg: CONFIGURE_FAILED: ")
    assert str(err).endswith(" (plugin log: bad config)")  # the CLI's one line, as before
    assert h.sync(_engine_state, h.server) == before


def test_check_plugin_reports_a_missing_file(start_proxy, tmp_path):
    h = start_proxy(make_config())
    err = h.call(h.server.check_plugin(_spec(wasm_plugin("gone", str(tmp_path / "no.wasm")))))
    assert err is not None and err.kind is ErrorKind.FETCH and "cannot read" in err.message


# -- process tuning once running ----------------------------------------------------------------


def test_a_running_server_collects_the_young_generation_less_often(start_proxy):
    import gc

    before = gc.get_threshold()
    try:
        gc.set_threshold(700, before[1], before[2])
        start_proxy(make_config())
        assert gc.get_threshold() == (
            server_module.YOUNG_GC_THRESHOLD, before[1], before[2]
        )
        # a higher threshold, or a collector switched off (0), is left as it is
        gc.set_threshold(50_000, 3, 4)
        start_proxy(make_config())
        assert gc.get_threshold() == (50_000, 3, 4)
        gc.set_threshold(0, 3, 4)
        start_proxy(make_config())
        assert gc.get_threshold() == (0, 3, 4)
    finally:
        gc.set_threshold(*before)
