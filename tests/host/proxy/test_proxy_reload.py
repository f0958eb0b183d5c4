"""Live reconfiguration while traffic flows (issue §4): validated in a scratch VM, swapped
atomically, in-flight requests finish on the old instance, a failed validation keeps the
old one; triggered by apply_config, the config file, the .wasm on disk, the admin API."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from host.proxy.config import load_config
from host.proxy.errors import ErrorKind

from .conftest import config_text, make_config, plugin, probe_wasm, wasm_plugin


def _add(value: str, **kw):
    return wasm_plugin(
        "add",
        plugin("add_header"),
        root_id="add_header",
        config={"request_header": {"name": "x-wasmdesk", "value": value}},
        **kw,
    )


def test_reload_under_traffic_fails_no_request(start_proxy):
    h = start_proxy(make_config(_add("v0")))
    seen: list[str] = []
    failures: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client(n_max: int) -> None:
        with h.client() as c:
            for _ in range(n_max):
                if stop.is_set():
                    return
                try:
                    r = c.get("/traffic")
                    if r.status_code != 200:
                        failures.append(f"{r.status_code}: {r.text[:200]}")
                        continue
                    v = r.json()["headers"].get("x-wasmdesk")
                    with lock:
                        seen.append(v)
                except Exception as e:  # any transport error is a failed request
                    failures.append(repr(e))

    threads = [threading.Thread(target=client, args=(400,)) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        h.wait_for(lambda: len(seen) >= 10, what="traffic to start")
        for i in range(1, 6):
            errors = h.apply(make_config(_add(f"v{i}")))
            assert errors == []
            time.sleep(0.05)
        # the last value shows up while traffic still flows
        n = len(seen)
        h.wait_for(lambda: "v5" in seen[n:], timeout=5, what="the new value")
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    assert failures == []
    assert set(seen) <= {f"v{i}" for i in range(6)}
    assert seen[-1] == "v5"
    assert len(seen) >= 20
    # every swapped-out instance was closed once its requests finished
    assert h.sync(lambda: len(h.server.host.vms)) == 1
    st = h.stats()
    assert st["http.downstream_rq_5xx"] == 0


def test_admin_reloads_and_body_buffering_plugin_swaps_under_traffic(start_proxy, upstream):
    """POSTs through a body-buffering plugin while it is reloaded through the admin API
    and re-configured: every request succeeds and every body arrives intact."""

    def cfg(max_paths: int):
        return make_config(
            wasm_plugin(
                "counter",
                plugin("path_counter"),
                root_id="path_counter",
                config={"max_paths": max_paths},
            ),
            _add("x"),
            clusters={"backend": upstream.url},
        )

    h = start_proxy(cfg(10))
    failures: list[str] = []
    done = [0]
    stop = threading.Event()

    def client() -> None:
        with h.client() as c:
            for i in range(300):
                if stop.is_set():
                    return
                body = b"body-%d" % i
                try:
                    r = c.post(f"/p{i % 3}", content=body)
                    if r.status_code != 200 or r.json()["body"] != body.decode():
                        failures.append(f"{r.status_code}: {r.text[:200]}")
                except Exception as e:
                    failures.append(repr(e))
                done[0] += 1

    threads = [threading.Thread(target=client) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        h.wait_for(lambda: done[0] >= 10, what="traffic")
        for i in range(3):
            assert h.admin("POST", "/plugins/counter/reload", json={}).status_code == 200
            assert h.admin("POST", "/plugins/add/reload", json={}).status_code == 200
            assert h.apply(cfg(20 + i)) == []
            time.sleep(0.03)
        n = done[0]
        h.wait_for(lambda: done[0] >= n + 10, what="traffic after the swaps")
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    assert failures == []
    assert h.stats()["path_counter.total"] == done[0]


def test_in_flight_requests_finish_on_the_old_instance(start_proxy, upstream):
    def cfg(path: str):
        return make_config(
            wasm_plugin(
                "callout",
                plugin("callout"),
                root_id="callout",
                config={"cluster": "auth", "path": path, "timeout_ms": 5000},
            ),
            clusters={"auth": upstream.url},
        )

    h = start_proxy(cfg("/slow?ms=600"))
    old = h.slot("callout").instance
    result: dict[str, object] = {}

    def in_flight() -> None:
        with h.client() as c:
            r = c.get("/first", headers={"authorization": "Bearer t"})
            result["status"] = r.status_code
            result["auth"] = r.json()["headers"].get("x-auth-result")

    t = threading.Thread(target=in_flight)
    t.start()
    h.wait_for(lambda: h.stats().get("wasm.paused_streams") == 1, what="the pause")
    assert h.apply(cfg("/check")) == []
    new = h.slot("callout").instance
    assert new is not old
    assert old.retired and not old.closed  # still serving the paused request
    with h.client() as c:
        r = c.get("/second", headers={"authorization": "Bearer t"})
        assert r.json()["headers"]["x-auth-result"] == "user-t"  # the new config
    t.join(10)
    assert result == {"status": 200, "auth": "slow"}  # finished on the old config
    h.wait_for(lambda: old.closed, what="the old instance to close")
    assert not new.closed


def test_failed_validation_keeps_the_old_instance_and_says_why(start_proxy):
    def cp(conf):
        return wasm_plugin("cp", plugin("config_parse"), root_id="config_parse", config=conf)

    h = start_proxy(make_config(cp({"name": "good", "limit": 7})))
    before = h.slot("cp").instance
    errors = h.apply(make_config(cp({"name": "bad", "limit": 1.5})))
    (err,) = errors
    assert (err.plugin, err.kind, err.state) == ("cp", ErrorKind.CONFIGURE, "CONFIGURE_FAILED")
    # the plugin said why in its log: the error carries those lines, and prints them
    assert any('field "limit" must be an integer (got 1.5)' in line for line in err.log)
    assert 'field "limit" must be an integer (got 1.5)' in str(err)
    assert h.slot("cp").instance is before
    assert h.slot("cp").state == "running"
    with h.client() as c:
        doc = c.get("/v").json()["headers"]
    assert doc["x-config-name"] == "good"
    assert doc["x-config-limit"] == "7"
    (snap,) = h.admin("GET", "/plugins").json()["plugins"]
    assert "limit" in snap["last_error"]
    assert snap["state"] == "running"
    assert h.admin("GET", "/ready").status_code == 200
    # a later valid change still applies
    assert h.apply(make_config(cp({"name": "better"}))) == []
    with h.client() as c:
        assert c.get("/v").json()["headers"]["x-config-name"] == "better"


def test_plugins_added_and_removed_live(start_proxy, probe):
    p = probe()
    h = start_proxy(make_config(wasm_plugin("a", p)))
    with h.client() as c:
        assert c.get("/").json()["headers"]["x-order"] == "a"
        assert h.apply(make_config(wasm_plugin("a", p), wasm_plugin("b", p, phase="AUTHN"))) == []
        assert c.get("/").json()["headers"]["x-order"] == "b,a"
        old_a = h.slot("a").instance
        assert h.apply(make_config(wasm_plugin("b", p, phase="AUTHN"))) == []
        assert c.get("/").json()["headers"]["x-order"] == "b"
        assert old_a.closed
        # operator knobs (phase) change in place, without a new VM
        inst_b = h.slot("b").instance
        assert h.apply(make_config(wasm_plugin("b", p, phase="STATS", priority=3))) == []
        assert h.slot("b").instance is inst_b


def test_module_changed_on_disk_is_reloaded(start_proxy, tmp_path: Path):
    mod = tmp_path / "plug.wasm"
    shutil.copyfile(plugin("add_header"), mod)
    cfg_file = tmp_path / "wasmdesk.yaml"
    cfg_file.write_text(config_text(wasm_plugin("plug", "./plug.wasm", root_id="add_header")))
    h = start_proxy(load_config(cfg_file), watch=True)
    with h.client() as c:
        doc = c.get("/m").json()["headers"]
        assert doc["x-wasmdesk"] == "hello"
        mod.write_bytes(probe_wasm(tag="v2"))
        h.wait_for(
            lambda: c.get("/m").json()["headers"].get("x-probe-tag") == "v2",
            timeout=5,
            what="the new module",
        )
        doc = c.get("/m").json()["headers"]
    assert "x-wasmdesk" not in doc
    assert any("module changed on disk: reloaded" in r.message for _s, r in h.server.logs)


def test_broken_module_on_disk_keeps_the_old_version(start_proxy, tmp_path: Path):
    mod = tmp_path / "plug.wasm"
    shutil.copyfile(plugin("add_header"), mod)
    cfg_file = tmp_path / "wasmdesk.yaml"
    cfg_file.write_text(config_text(wasm_plugin("plug", str(mod), root_id="add_header")))
    h = start_proxy(load_config(cfg_file), watch=True)
    mod.write_bytes(b"\0asm garbage")
    h.wait_for(
        lambda: any("kept the old version" in r.message for _s, r in h.server.logs),
        timeout=5,
        what="the refused module",
    )
    with h.client() as c:
        assert c.get("/m").json()["headers"]["x-wasmdesk"] == "hello"
    assert h.slot("plug").state == "running"


def test_config_file_change_is_applied(start_proxy, tmp_path: Path):
    cfg_file = tmp_path / "wasmdesk.yaml"
    cfg_file.write_text(config_text(_add("one")))
    h = start_proxy(load_config(cfg_file), watch=True)
    with h.client() as c:
        assert c.get("/c").json()["headers"]["x-wasmdesk"] == "one"
        time.sleep(0.05)
        cfg_file.write_text(config_text(_add("two")))
        h.wait_for(
            lambda: c.get("/c").json()["headers"]["x-wasmdesk"] == "two",
            timeout=5,
            what="the new config",
        )
        # an invalid config file is refused and the running config kept
        cfg_file.write_text("apiVersion: [unclosed\n")
        h.wait_for(
            lambda: any("config reload refused" in r.message for _s, r in h.server.logs),
            timeout=5,
            what="the refusal",
        )
        assert c.get("/c").json()["headers"]["x-wasmdesk"] == "two"


def test_admin_reload_with_a_broken_module_is_refused(start_proxy, tmp_path: Path):
    mod = tmp_path / "plug.wasm"
    shutil.copyfile(plugin("add_header"), mod)
    h = start_proxy(make_config(wasm_plugin("plug", str(mod), root_id="add_header")))
    before = h.slot("plug").instance
    mod.write_bytes(b"not wasm at all")
    r = h.admin("POST", "/plugins/plug/reload", json={})
    assert r.status_code == 409
    body = r.json()
    assert body["kept"] == "the running version"
    # the one-line text as before, and the same error as fields (added, nothing removed)
    pe = body["plugin_error"]
    assert (pe["kind"], pe["plugin"], pe["state"]) == ("compile", "plug", "")
    assert body["error"] == pe["text"] == pe["message"] and pe["log"] == []
    assert h.slot("plug").instance is before
    # /plugins shows it as last_error (text) and error (fields) until a reload succeeds
    (snap,) = h.admin("GET", "/plugins").json()["plugins"]
    assert snap["last_error"] == body["error"] and snap["error"] == pe
    # a good module reloads through the same endpoint
    mod.write_bytes(probe_wasm(tag="admin"))
    r = h.admin("POST", "/plugins/plug/reload", json={})
    assert r.status_code == 200
    assert r.json() == {"reloaded": "plug"}
    (snap,) = h.admin("GET", "/plugins").json()["plugins"]
    assert snap["last_error"] == "" and snap["error"] is None
    with h.client() as c:
        assert c.get("/").json()["headers"]["x-probe-tag"] == "admin"
    assert before.closed


def test_module_changed_on_disk_is_reloaded_without_a_config_file(start_proxy, tmp_path: Path):
    mod = tmp_path / "plug.wasm"
    shutil.copyfile(plugin("add_header"), mod)
    h = start_proxy(make_config(wasm_plugin("plug", str(mod), root_id="add_header")), watch=True)
    with h.client() as c:
        assert c.get("/m").json()["headers"]["x-wasmdesk"] == "hello"
        mod.write_bytes(probe_wasm(tag="v2"))
        h.wait_for(
            lambda: c.get("/m").json()["headers"].get("x-probe-tag") == "v2",
            timeout=2.5,
            what="the new module",
        )


def test_in_flight_request_waiting_for_a_tick_finishes_on_the_old_instance(start_proxy, probe):
    # a 1 s tick: the pause must be seen by a poller that a loaded machine slows down
    path = probe(pause_until_tick_ms=1000)
    h = start_proxy(make_config(wasm_plugin("p", path, config={"v": 1})))
    h.server.manager.pause_timeout_s = 4.0
    result: dict[str, object] = {}

    def in_flight() -> None:
        with h.client() as c:
            r = c.get("/inflight")
            result["status"] = r.status_code

    t = threading.Thread(target=in_flight)
    t.start()
    try:
        h.wait_for(lambda: h.stats().get("wasm.paused_streams") == 1, what="the pause")
        assert h.apply(make_config(wasm_plugin("p", path, config={"v": 2}))) == []
    finally:
        t.join(8)
    assert result == {"status": 200}
