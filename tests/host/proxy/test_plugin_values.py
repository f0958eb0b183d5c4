"""Plugin errors and snapshots as values (issue 8, contracts as types).

Every stage a plugin can fail at gives a ``PluginError`` of its own kind, made by the
real engine from real modules; the admin API's JSON is the snapshot's ``to_dict()`` with
the keys it always had; the strict start's message names the failing plugin's document
by the error's ``plugin`` field, not by reading it back out of the text."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.proxy.config import load_config
from host.proxy.errors import ErrorKind, PluginError
from host.proxy.server import StartupError
from host.proxy.snapshots import PluginSnapshot, PluginState
from host.proxy.stages import Stage
from tests.fixtures.wat_modules import (
    make_configure_fails_module,
    make_no_marker_module,
    make_start_fails_module,
    make_trap_module,
)

from .conftest import config_text, make_config, plugin, wasm_plugin

# /plugins' keys before these types existed: every one is still there
_ADMIN_KEYS = {
    "name",
    "state",
    "not_applied",
    "mode",
    "canary_percent",
    "canary_key",
    "fail_strategy",
    "failure",
    "crash_loop",
    "reload_at",
    "reload_in_s",
    "abi",
    "sha256",
    "root_id",
    "phase",
    "priority",
    "vm_memory_bytes",
    "counters",
    "sdk",
    "time_per_request_us",
    "last_error",
    "warnings",
    "contexts",
    "inflight_callouts",
}


def _check(h, doc: dict, **spec_fields: str) -> PluginError | None:
    doc["spec"].update(spec_fields)
    (spec,) = make_config(doc).plugins
    return h.call(h.server.check_plugin(spec))


def test_each_stage_a_plugin_fails_at_is_an_error_of_its_own_kind(start_proxy, tmp_path):
    h = start_proxy(make_config())
    add = plugin("add_header")
    wrong_sha = "0" * 64

    def module(name: str, data: bytes) -> str:
        p = tmp_path / f"{name}.wasm"
        p.write_bytes(data)
        return str(p)

    cases = [
        (wasm_plugin("gone", str(tmp_path / "none.wasm")), {}, ErrorKind.FETCH, ""),
        (
            wasm_plugin("add", add, root_id="add_header"),
            {"sha256": wrong_sha},
            ErrorKind.VERIFY,
            "",
        ),
        (
            wasm_plugin("junk", module("junk", b"\0asm\x01\0\0\0\xff\xff")),
            {},
            ErrorKind.COMPILE,
            "",
        ),
        (
            wasm_plugin("bare", module("bare", make_no_marker_module())),
            {},
            ErrorKind.LOAD,
            "UNABLE_TO_CREATE_VM",
        ),
        (
            wasm_plugin("nostart", module("nostart", make_start_fails_module())),
            {},
            ErrorKind.START,
            "START_FAILED",
        ),
        (
            wasm_plugin("nocfg", module("nocfg", make_configure_fails_module())),
            {},
            ErrorKind.CONFIGURE,
            "CONFIGURE_FAILED",
        ),
    ]
    got = []
    for doc, fields, _kind, _state in cases:
        err = _check(h, doc, **fields)
        assert err is not None, doc["metadata"]["name"]
        assert err.plugin == doc["metadata"]["name"] and err.message and err.at > 0
        got.append((err.kind, err.state))
    assert got == [(kind, state) for _d, _f, kind, state in cases]


def test_a_configure_error_carries_the_plugins_own_log_lines(start_proxy):
    h = start_proxy(make_config())
    conf = {"name": "x", "limit": "ten"}
    err = _check(h, wasm_plugin("cp", plugin("config_parse"), root_id="config_parse", config=conf))
    assert err is not None and err.kind is ErrorKind.CONFIGURE
    assert err.log and all(isinstance(line, str) for line in err.log)
    assert any("limit" in line for line in err.log)
    # the host's own line about the failure is the error itself, not the plugin's log
    assert not any(line.startswith("plugin VM failed") for line in err.log)
    assert err.to_dict()["log"] == list(err.log) and err.to_dict()["kind"] == "configure"


@pytest.mark.parametrize(
    ("misbehaviour", "kind"), [("unreachable", ErrorKind.TRAP), ("loop", ErrorKind.TIMEOUT)]
)
def test_a_runtime_failure_is_a_trap_or_a_timeout(start_proxy, wasm_file, misbehaviour, kind):
    path = wasm_file(make_trap_module("proxy_on_request_headers", misbehaviour), "t")
    h = start_proxy(make_config(wasm_plugin("t", path)))
    with h.client() as c:
        assert c.get("/x").status_code == 503
    failure = h.slot("t").failure
    err = PluginError.from_failure("t", failure)
    assert (err.kind, err.state, err.reason) == (kind, "RUNTIME_ERROR", failure.kind)
    snap: PluginSnapshot = h.sync(lambda: h.server.plugin_snapshots()[0])
    assert snap.state is PluginState.FAILED and snap.failure is not None
    assert (snap.failure.state, snap.failure.kind) == ("RUNTIME_ERROR", failure.kind)


def test_admin_plugins_json_is_the_snapshot_with_its_old_keys(start_proxy, wasm_file):
    good = wasm_plugin("add", plugin("add_header"), root_id="add_header", mode="log-only")
    bad = wasm_plugin("bad", wasm_file(make_configure_fails_module(), "bad"))
    h = start_proxy(make_config(good, bad), strict=False)
    body = h.admin("GET", "/plugins").json()["plugins"]
    snaps: list[PluginSnapshot] = h.sync(h.server.plugin_snapshots)
    assert [p.name for p in snaps] == [p["name"] for p in body] == ["add", "bad"]
    for d in body:
        assert set(d) == _ADMIN_KEYS | {"error", "type"}
    add, failed = snaps
    assert add.state is PluginState.LOG_ONLY and add.error is None
    assert body[0]["state"] == "log-only" and body[0]["error"] is None
    assert failed.state is PluginState.FAILED
    assert failed.error is not None and failed.error.kind is ErrorKind.CONFIGURE
    assert body[1]["error"] == failed.error.to_dict()
    assert body[1]["last_error"] == failed.last_error == failed.error.text
    assert body[1]["failure"] == failed.failure.to_dict()  # type: ignore[union-attr]
    assert failed.to_dict()["failure"]["kind"] == "load_failed"


def test_strict_start_names_the_failing_plugins_document(start_proxy, tmp_path: Path):
    mod = tmp_path / "bad.wasm"
    mod.write_bytes(make_configure_fails_module())
    cfg = tmp_path / "proxy.yaml"
    text = config_text(
        wasm_plugin("add", plugin("add_header"), root_id="add_header"),
        wasm_plugin("bad", str(mod)),
    )
    cfg.write_text(text)
    config = load_config(str(cfg))
    (doc_line,) = [p.line for p in config.plugins if p.name == "bad"]
    assert doc_line > 1
    with pytest.raises(StartupError) as ei:
        start_proxy(config)
    # only the failing plugin, located at its own document (the good one is not named)
    assert str(ei.value).startswith(f"{cfg}:{doc_line}: plugin bad: CONFIGURE_FAILED: ")
    assert "plugin add" not in str(ei.value)


def test_a_stage_knows_its_direction_and_part() -> None:
    """The chain asks a paused stage these instead of reading its spelling."""
    got = {s.value: (s.request, s.headers, s.trailers) for s in Stage}
    assert got == {
        "request_headers": (True, True, False),
        "request_data": (True, False, False),
        "request_trailers": (True, False, True),
        "response_headers": (False, True, False),
        "response_data": (False, False, False),
        "response_trailers": (False, False, True),
    }
