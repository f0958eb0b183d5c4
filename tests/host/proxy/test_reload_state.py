"""Config reloads that keep state (issue 13 §5, §9, §11): touching or rewriting the config
file reloads only the plugins whose document or module changed, keeps the operator's
runtime changes and failure states, keeps the last refusal visible; the watcher never
loses a write made during a reload; a VM failing outside a request applies its failure
policy to the streams it holds paused at once; FAIL_RELOAD set on a failed plugin
reloads it; ``reload_at`` is a wall-clock time."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from host.proxy.config import load_config
from host.proxy.plugins import ReloadPolicy
from tests.fixtures.wat_modules import compile_wat

from .conftest import config_text, make_config, plugin, wasm_plugin

# Pauses every request in on_request_headers; its tick (every 100 ms) traps, but only
# while a request is paused, so the failure always happens outside a stream callback
# with a stream held.
_PAUSE_THEN_TICK_TRAP = """\
(module
  (import "env" "proxy_set_tick_period_milliseconds" (func $set_tick (param i32) (result i32)))
  (memory (export "memory") 4)
  (global $heap (mut i32) (i32.const 65536))
  (global $pending (mut i32) (i32.const 0))
  (func (export "malloc") (param $size i32) (result i32)
    (local $p i32)
    (if (i32.gt_u (local.get $size) (i32.const 131072)) (then (return (i32.const 0))))
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (if (i32.gt_u (i32.add (local.get $p) (local.get $size)) (i32.const 262144))
      (then (local.set $p (i32.const 65536))))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $set_tick (i32.const 100)))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (global.set $pending (i32.const 1))
    (i32.const 1))
  (func (export "proxy_on_tick") (param i32)
    (if (global.get $pending) (then (unreachable))))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32)))
"""

# Pauses every request after an http callout to the demo upstream; traps when the
# callout's response arrives (proxy_on_http_call_response: outside any stream callback).
_CALLOUT_THEN_TRAP = """\
(module
  (import "env" "proxy_http_call" (func $http_call
    (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 4)
  (data (i32.const 1024) "wasmdesk-demo-upstream")  ;; 22
  ;; serialized map: 3 pairs (:method GET, :path /, :authority x)
  (data (i32.const 1100) "\\03\\00\\00\\00\\07\\00\\00\\00\\03\\00\\00\\00"
    "\\05\\00\\00\\00\\01\\00\\00\\00"
    "\\0a\\00\\00\\00\\01\\00\\00\\00:method\\00GET\\00:path\\00/\\00:authority\\00x\\00")  ;; 61
  (global $heap (mut i32) (i32.const 65536))
  (func (export "malloc") (param $size i32) (result i32)
    (local $p i32)
    (if (i32.gt_u (local.get $size) (i32.const 131072)) (then (return (i32.const 0))))
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (if (i32.gt_u (i32.add (local.get $p) (local.get $size)) (i32.const 262144))
      (then (local.set $p (i32.const 65536))))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (call $http_call (i32.const 1024) (i32.const 22) (i32.const 1100) (i32.const 61)
                         (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                         (i32.const 5000) (i32.const 256))
      (then (unreachable)))  ;; the call itself must be accepted
    (i32.const 1))
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32)
    (unreachable))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32)))
"""


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _touch_and_look(h: Any) -> None:
    """Touch the config file (content unchanged) and run one watcher pass on the loop."""
    src = Path(h.server.config.source)
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    h.call(h.server._watch_once())


def _file_config(tmp_path: Path, *docs: dict[str, Any]) -> Path:
    cfg = tmp_path / "wasmdesk.yaml"
    cfg.write_text(config_text(*docs))
    return cfg


def _copy(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / f"{name}.wasm"
    shutil.copyfile(plugin(name), dst)
    return dst


# -- §5: a touch reloads nothing -------------------------------------------------------------


def test_touching_the_config_file_keeps_instances_modes_and_records_the_module_sha(
    start_proxy, tmp_path: Path
):
    mod = _copy(tmp_path, "add_header")
    cfg = _file_config(
        tmp_path,
        wasm_plugin("add", "./add_header.wasm", root_id="add_header"),
        wasm_plugin("other", "./add_header.wasm", root_id="add_header"),
    )
    h = start_proxy(load_config(cfg))
    before = {n: h.slot(n).instance for n in ("add", "other")}
    snap = {p["name"]: p for p in h.admin("GET", "/plugins").json()["plugins"]}
    assert snap["add"]["sha256"] == _sha(mod)
    assert h.slot("add").sha256 == _sha(mod)  # the running slot, not a scratch one
    r = h.admin("POST", "/plugins/add/mode", json={"mode": "log-only", "canary-percent": 40})
    assert r.status_code == 200, r.text
    for _ in range(2):
        _touch_and_look(h)
    assert {n: h.slot(n).instance for n in ("add", "other")} == before
    assert not any("module changed on disk" in r.message for _s, r in h.server.logs)
    snap = {p["name"]: p for p in h.admin("GET", "/plugins").json()["plugins"]}
    assert snap["add"]["mode"] == "log-only"  # the operator's change survives a touch
    assert snap["add"]["canary_percent"] == 40.0
    # the export still says what runs
    assert "log-only" in h.server.config_yaml()


def test_a_change_to_one_document_reloads_that_plugin_only_and_the_file_wins_for_it(
    start_proxy, tmp_path: Path
):
    _copy(tmp_path, "add_header")

    def docs(value: str, other_mode: str | None = None) -> list[dict[str, Any]]:
        return [
            wasm_plugin(
                "add",
                "./add_header.wasm",
                root_id="add_header",
                config={"request_header": {"name": "x-wasmdesk", "value": value}},
            ),
            wasm_plugin(
                "other",
                "./add_header.wasm",
                root_id="add_header",
                config={"request_header": {"name": "x-other", "value": "o"}},
                mode=other_mode,
            ),
        ]

    cfg = _file_config(tmp_path, *docs("one"))
    h = start_proxy(load_config(cfg))
    other = h.slot("other").instance
    h.admin("POST", "/plugins/add/mode", json={"mode": "log-only"})
    h.admin("POST", "/plugins/other/mode", json={"canary-percent": 10})
    cfg.write_text(config_text(*docs("two")))
    h.call(h.server._watch_once())
    assert h.slot("other").instance is other  # its document did not change
    assert h.slot("other").canary_percent == 10.0
    # "add" changed: new VM, and the file's mode (enforce) replaces the runtime change
    assert h.slot("add").mode == "enforce"
    with h.client() as c:
        assert c.get("/x").json()["headers"]["x-wasmdesk"] == "two"
    # a knob changed in the file applies in place and wins over the runtime change
    cfg.write_text(config_text(*docs("two", other_mode="disabled")))
    h.call(h.server._watch_once())
    assert h.slot("other").instance is other
    assert h.slot("other").mode == "disabled"


def test_failed_and_crash_looped_plugins_stay_failed_across_touches(
    start_proxy, tmp_path: Path, probe
):
    trapper = probe(trap_path="/boom")
    shutil.copyfile(trapper, tmp_path / "trapper.wasm")
    cfg = _file_config(
        tmp_path,
        wasm_plugin("closed", "./trapper.wasm"),
        wasm_plugin("looping", "./trapper.wasm", fail="FAIL_RELOAD"),
    )
    h = start_proxy(load_config(cfg))
    h.server.manager.reload_policy = ReloadPolicy(
        base_s=0.01, max_s=0.02, loop_window_s=60, loop_max_reloads=0
    )
    with h.client() as c:
        assert c.get("/boom").status_code == 503
        h.sync(h.server.manager.set_mode, "closed", mode="disabled")
        assert c.get("/boom").status_code == 503
    assert h.slot("closed").state == "failed"
    assert h.slot("looping").crash_loop is True
    for _ in range(2):
        _touch_and_look(h)
    time.sleep(0.1)
    assert h.slot("closed").state == "failed"
    assert h.slot("looping").state == "failed" and h.slot("looping").crash_loop is True
    with h.client() as c:
        r = c.get("/ok")
    assert r.status_code == 503 and "crash loop" in r.text


def test_the_last_refusal_stays_visible_until_a_good_config_replaces_it(
    start_proxy, tmp_path: Path
):
    _copy(tmp_path, "add_header")
    good = wasm_plugin("add", "./add_header.wasm", root_id="add_header")
    bad = wasm_plugin("add", "./missing.wasm", root_id="add_header")
    cfg = _file_config(tmp_path, good)
    h = start_proxy(load_config(cfg))
    running = h.slot("add").instance
    # a plugin version that fails validation: the old one keeps serving, the reason shows
    cfg.write_text(config_text(bad))
    h.call(h.server._watch_once())
    assert h.slot("add").instance is running
    for _ in range(2):
        _touch_and_look(h)
        (snap,) = h.admin("GET", "/plugins").json()["plugins"]
        assert "missing.wasm" in snap["last_error"]
        assert snap["state"] == "running"
    # a refused config file: shown in /plugins, through touches, until a good one loads
    cfg.write_text("apiVersion: [unclosed\n")
    for _ in range(2):
        _touch_and_look(h)
        body = h.admin("GET", "/plugins").json()
        assert "config reload refused" in body["config_error"]
        assert "wasmdesk.yaml:" in body["config_error"]
        assert "missing.wasm" in body["plugins"][0]["last_error"]
    cfg.write_text(config_text(good))
    h.call(h.server._watch_once())
    body = h.admin("GET", "/plugins").json()
    assert "config_error" not in body
    assert body["plugins"][0]["last_error"] == ""


# -- §9: no write is lost --------------------------------------------------------------------


def test_a_write_during_a_slow_reload_is_applied_at_the_next_look(start_proxy, tmp_path: Path):
    _copy(tmp_path, "add_header")

    def doc(value: str) -> dict[str, Any]:
        return wasm_plugin(
            "add",
            "./add_header.wasm",
            root_id="add_header",
            config={"request_header": {"name": "x-wasmdesk", "value": value}},
        )

    cfg = _file_config(tmp_path, doc("v1"))
    h = start_proxy(load_config(cfg))
    server = h.server
    real_apply = server.manager.apply
    writes = iter(["v3"])

    async def slow_apply(config: Any) -> list[str]:
        # the operator saves again while the reload of the previous save runs (the plugins'
        # part of the server's apply_config)
        value = next(writes, None)
        if value is not None:
            cfg.write_text(config_text(doc(value)))
            st = cfg.stat()
            os.utime(cfg, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
        return await real_apply(config)

    server.manager.apply = slow_apply  # type: ignore[method-assign]
    cfg.write_text(config_text(doc("v2")))
    st = cfg.stat()
    os.utime(cfg, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    h.call(server._watch_once())  # applies v2 (v3 lands meanwhile)
    h.call(server._watch_once())  # must see v3 as a change
    with h.client() as c:
        assert c.get("/w").json()["headers"]["x-wasmdesk"] == "v3"


# -- §9: a VM failing outside a request releases the streams it holds -----------------------


@pytest.fixture
def pause_then_trap(wasm_file) -> str:
    return wasm_file(compile_wat(_PAUSE_THEN_TICK_TRAP, "pause_then_tick_trap"), "pause_trap")


def _request_in_thread(h: Any, path: str) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        t0 = time.monotonic()
        with h.client(timeout=40) as c:
            r = c.get(path)
        out.update(status=r.status_code, text=r.text, seconds=time.monotonic() - t0)

    t = threading.Thread(target=run)
    t.start()
    return t, out


@pytest.mark.parametrize(("policy", "status"), [("FAIL_CLOSE", 503), ("FAIL_OPEN", 200)])
def test_a_vm_failing_in_a_tick_applies_its_policy_to_the_paused_stream_at_once(
    start_proxy, pause_then_trap: str, policy: str, status: int
):
    h = start_proxy(make_config(wasm_plugin("pauser", pause_then_trap, fail=policy)))
    t, out = _request_in_thread(h, "/held")
    t.join(10)
    assert not t.is_alive()
    assert out["status"] == status, out
    assert out["seconds"] < 5  # not the 30 s pause timeout
    if status == 503:
        assert "wasm plugin pauser failed (FAIL_CLOSE)" in out["text"]
        assert "proxy_on_tick" in out["text"]
    else:
        assert "/held" in out["text"]  # the echo upstream answered
    st = h.stats()
    assert st["wasm.paused_streams"] == 0
    assert st.get("wasm.pauser.pause_timeout", 0) == 0
    assert h.slot("pauser").failure.callback == "proxy_on_tick"


def test_a_retired_instance_failing_releases_the_stream_it_holds(start_proxy, pause_then_trap):
    """The stream is held by an instance a reload swapped out; that VM then fails."""
    h = start_proxy(make_config(wasm_plugin("pauser", pause_then_trap, config={"v": 1})))
    manager = h.server.manager
    # hold the old VM's tick back until the swap happened
    old = h.slot("pauser").instance
    h.sync(lambda: setattr(old.root, "next_tick_ms", None))
    t, out = _request_in_thread(h, "/held")
    h.wait_for(lambda: h.stats().get("wasm.paused_streams") == 1, what="the pause")
    assert h.apply(make_config(wasm_plugin("pauser", pause_then_trap, config={"v": 2}))) == []
    assert h.slot("pauser").instance is not old and old.retired and not old.closed

    def fail_old() -> None:
        old.root.next_tick_ms = h.server.host.clock.now_ms()
        manager._schedule_ticks()

    h.sync(fail_old)
    t.join(10)
    assert out["status"] == 503, out
    assert out["seconds"] < 5
    assert h.stats()["wasm.paused_streams"] == 0
    h.wait_for(lambda: old.closed, what="the old instance closed")


# -- §11: FAIL_RELOAD on a failed plugin, reload_at -----------------------------------------


def test_switching_a_failed_plugin_to_fail_reload_schedules_a_reload(start_proxy, probe):
    h = start_proxy(make_config(wasm_plugin("trapper", probe(trap_path="/boom"))))
    h.server.manager.reload_policy = ReloadPolicy(base_s=0.4, max_s=1.0)
    with h.client() as c:
        assert c.get("/boom").status_code == 503
        assert h.slot("trapper").state == "failed"
        r = h.admin("POST", "/plugins/trapper/mode", json={"fail-strategy": "FAIL_RELOAD"})
        assert r.status_code == 200, r.text
        snap = r.json()
        assert snap["state"] == "reloading"
        at = datetime.fromisoformat(snap["reload_at"])
        assert at.tzinfo is not None
        assert 0 < snap["reload_in_s"] <= 0.4
        delta = at.timestamp() - time.time()
        assert -0.5 < delta <= 0.5  # a wall-clock time, not a monotonic reading
        h.wait_for(lambda: h.slot("trapper").state == "running", timeout=3, what="reload")
        assert c.get("/ok").status_code == 200
    (snap,) = h.admin("GET", "/plugins").json()["plugins"]
    assert snap["reload_at"] is None and snap["reload_in_s"] is None
    assert h.stats()["wasm.trapper.vm_reload_success"] == 1


def test_snapshot_counts_contexts_and_inflight_callouts(start_proxy, pause_then_trap):
    h = start_proxy(make_config(wasm_plugin("add", plugin("add_header"), root_id="add_header")))
    (snap,) = h.admin("GET", "/plugins").json()["plugins"]
    assert snap["contexts"] == 1  # the root context
    assert snap["inflight_callouts"] == 0
    with h.client() as c:
        for _ in range(5):
            assert c.get("/").status_code == 200
    (snap,) = h.admin("GET", "/plugins").json()["plugins"]
    assert snap["contexts"] == 1  # stream contexts are gone after their requests


def test_a_plugin_that_never_loaded_loads_once_its_module_appears(start_proxy, tmp_path: Path):
    cfg = _file_config(tmp_path, wasm_plugin("add", "./add_header.wasm", root_id="add_header"))
    h = start_proxy(load_config(cfg), strict=False)
    assert h.slot("add").state == "failed" and h.slot("add").instance is None
    (tmp_path / "add_header.wasm").write_bytes(b"\0asm broken")
    h.call(h.server._watch_once())
    assert h.slot("add").state == "failed"
    assert sum("still not loading" in r.message for _s, r in h.server.logs) == 1
    _touch_and_look(h)  # the same broken bytes are not tried again
    assert sum("still not loading" in r.message for _s, r in h.server.logs) == 1
    shutil.copyfile(plugin("add_header"), tmp_path / "add_header.wasm")
    h.call(h.server._watch_once())
    assert h.slot("add").state == "running"
    with h.client() as c:
        assert c.get("/n").json()["headers"]["x-wasmdesk"] == "hello"


def test_a_client_leaving_a_paused_request_leaves_no_paused_stream_behind(start_proxy, probe):
    h = start_proxy(make_config(wasm_plugin("p", probe(pause_until_tick_ms=4000))))
    s = socket.create_connection(h.addr, timeout=5)
    try:
        s.sendall(b"GET /held HTTP/1.1\r\nhost: x\r\n\r\n")
        h.wait_for(lambda: h.stats().get("wasm.paused_streams") == 1, what="the pause")
    finally:
        s.close()
    # long before the tick (4 s) would resume it
    h.wait_for(lambda: h.stats().get("wasm.paused_streams") == 0, timeout=2, what="no pause")
    assert h.server.manager.paused_runs == set()


@pytest.mark.parametrize(("policy", "status"), [("FAIL_CLOSE", 503), ("FAIL_OPEN", 200)])
def test_a_vm_failing_in_its_callout_response_applies_its_policy_at_once(
    start_proxy, wasm_file, policy: str, status: int
):
    """The issue's case: the trap is in proxy_on_http_call_response, the request it
    paused got a 504 after 30 s under either policy."""
    path = wasm_file(compile_wat(_CALLOUT_THEN_TRAP, "callout_then_trap"), "callout_trap")
    h = start_proxy(make_config(wasm_plugin("caller", path, fail=policy)))
    t, out = _request_in_thread(h, "/asked")
    t.join(10)
    assert not t.is_alive()
    assert out["status"] == status, out
    assert out["seconds"] < 5
    if status == 503:
        assert "wasm plugin caller failed (FAIL_CLOSE)" in out["text"]
        assert "proxy_on_http_call_response" in out["text"]
    assert h.stats()["wasm.paused_streams"] == 0
    assert h.slot("caller").failure.callback == "proxy_on_http_call_response"
