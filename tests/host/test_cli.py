"""The ``wasmdesk`` command line: inspect, try, demo, exit codes and error messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from host.cli import main
from host.resources import demo_plugin
from tests.fixtures import wat_modules

WASMDESK = Path(sys.executable).parent / "wasmdesk"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def wasm_file(tmp_path: Path):
    def write(data: bytes, name: str = "m.wasm") -> str:
        p = tmp_path / name
        p.write_bytes(data)
        return str(p)

    return write


def test_inspect_json_reports_abi_sdk_callbacks_and_imports(capsys):
    rc, out, _ = run_cli(capsys, "inspect", str(demo_plugin("auth_token")), "--json")
    assert rc == 0
    info = json.loads(out)
    assert info["abi"] == "0.2.0"
    assert info["sdk"].startswith("AssemblyScript")
    assert "proxy_on_request_headers" in info["callbacks"]
    imports = {(i["module"], i["name"]): i["provided"] for i in info["imports"]}
    assert imports[("env", "proxy_send_local_response")] == "yes"
    assert imports[("wasi_unstable", "proc_exit")] == "yes"


def test_inspect_marks_unknown_imports_as_stubbed(capsys, wasm_file):
    path = wasm_file(wat_modules.make_unknown_imports_module())
    rc, out, _ = run_cli(capsys, "inspect", path, "--json")
    assert rc == 0
    imports = {(i["module"], i["name"]): i["provided"] for i in json.loads(out)["imports"]}
    assert imports[("env", "totally_unknown_host_fn")] == "stub"
    assert imports[("some_other_module", "thing")] == "stub"
    assert imports[("wasi_snapshot_preview1", "path_open")] == "yes"


def test_inspect_text_output_names_the_abi_and_every_import(capsys):
    rc, out, _ = run_cli(capsys, "inspect", str(demo_plugin("typical")))
    assert rc == 0
    assert "ABI         0.2.0" in out
    assert "env.proxy_add_header_map_value" in out and "provided" in out


def test_inspect_of_a_module_without_marker_warns(capsys, wasm_file):
    rc, out, _ = run_cli(capsys, "inspect", wasm_file(wat_modules.make_no_marker_module()))
    assert rc == 0
    assert "warning: no Proxy-Wasm ABI marker" in out


def test_try_json_has_the_documented_shape(capsys):
    rc, out, _ = run_cli(
        capsys, "try", str(demo_plugin("add_header")), "--json", "--method", "POST",
        "--path", "/p", "--authority", "svc.local", "-H", "x-in: 1", "--body", "payload",
        "--status", "201", "-R", "x-up: 2", "--response-body", "done",
    )
    assert rc == 0
    d = json.loads(out)
    for key in ("abi", "request", "response", "local_response", "logs", "metrics", "callouts",
                "callbacks", "failure"):
        assert key in d
    req = d["request"]
    assert [":method", "POST"] in req["headers"] and [":authority", "svc.local"] in req["headers"]
    assert ["x-in", "1"] in req["headers"] and ["x-wasmdesk", "hello"] in req["headers"]
    assert req["body"] == "payload"
    resp = d["response"]
    assert resp["status"] == 201 and resp["body"] == "done"
    assert ["x-up", "2"] in resp["headers"] and ["x-wasmdesk-plugin", "add_header"] in resp["headers"]
    assert d["local_response"] is None and d["failure"] is None
    assert all({"level", "message"} <= set(rec) for rec in d["logs"])
    assert {"name": "proxy_on_request_headers", "context_id": 2, "result": 0} in d["callbacks"]


def test_try_config_from_file_and_callout_cluster(capsys, tmp_path, upstream):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"cluster": "authz", "path": "/check"}))
    rc, out, _ = run_cli(
        capsys, "try", str(demo_plugin("callout")), "--config", f"@{cfg}",
        "--cluster", f"authz={upstream.url}", "-H", "authorization: Bearer abc", "--json",
    )
    assert rc == 0
    d = json.loads(out)
    assert d["callouts"][0]["cluster"] == "authz" and d["callouts"][0]["response_status"] == 200
    assert ["x-auth-result", "user-abc"] in d["request"]["headers"]


def test_try_readable_output_shows_a_header_diff(capsys):
    rc, out, _ = run_cli(capsys, "try", str(demo_plugin("add_header")))
    assert rc == 0
    assert "+ x-wasmdesk: hello" in out
    assert "+ x-wasmdesk-plugin: add_header" in out


def test_try_ticks(capsys):
    rc, out, _ = run_cli(capsys, "try", str(demo_plugin("ticker")), "--config",
                         '{"period_ms": 10}', "--ticks", "2", "--json")
    assert rc == 0 and json.loads(out)["ticks_fired"] == 2


def test_try_plugin_that_fails_configure_exits_1_with_the_failure(capsys):
    rc, out, _ = run_cli(capsys, "try", str(demo_plugin("config_parse")), "--json")
    assert rc == 1
    assert json.loads(out)["failure"]["state"] == "CONFIGURE_FAILED"


def test_try_plugin_that_traps_exits_1(capsys, wasm_file):
    path = wasm_file(wat_modules.make_trap_module("proxy_on_request_headers", "unreachable"))
    rc, out, _ = run_cli(capsys, "try", path, "--root-id", "")
    assert rc == 1
    assert "FAILED    RUNTIME_ERROR / unreachable" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["try", "/nonexistent.wasm"], "no such file"),
        (["try", "{plugin}", "--config", "{{not json"], "--config is not valid JSON"),
        (["try", "{plugin}", "-H", "no-colon"], "-H expects 'name: value'"),
        (["try", "{plugin}", "--cluster", "nourl"], "--cluster expects NAME=URL"),
        (["try", "{plugin}", "--status", "42"], "--status must be"),
        (["try", "{plugin}", "--ticks", "-1"], "--ticks must be"),
        (["try", "{plugin}", "--log-level", "loud"], "unknown log level"),
        (["try", "{plugin}", "--config", "@/nonexistent.json"], "no such file"),
        (["inspect", "{text}"], "not a WebAssembly module"),
        (["bogus"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys, tmp_path, args, message):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    argv = [a.format(plugin=demo_plugin("add_header"), text=text) for a in args]
    rc, out, err = run_cli(capsys, *argv)
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wasmdesk: error:") and message in lines[0]


def test_broken_module_exits_2(capsys, wasm_file):
    path = wasm_file(b"\0asm\x01\0\0\0\x99garbage")
    rc, _, err = run_cli(capsys, "try", path)
    assert rc == 2 and "invalid WebAssembly module" in err


def test_console_script_runs_the_headless_demo_subcommand():
    env = dict(os.environ, WASMDESK_CACHE_DIR=os.environ.get("WASMDESK_CACHE_DIR", "/tmp/wasmdesk-test-cache"))
    out = subprocess.run([str(WASMDESK), "demo"], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert "+ x-wasmdesk: hello" in out.stdout
    assert "local reply 403" in out.stdout


# -- root id "" by default, warnings (ABI fidelity) --------------------------------------------

CPP_2020 = str(Path(__file__).resolve().parents[2] / "resources/plugins/c/cpp_2020_like.wasm")


def test_try_uses_root_id_empty_by_default_as_envoy_and_istio(capsys):
    # a C++-SDK-style plugin registers its factories under "": with the file name as root
    # id (the old default) it would silently run the SDK's default contexts
    rc, out, _ = run_cli(capsys, "try", CPP_2020, "--json")
    d = json.loads(out)
    assert rc == 0 and d["warnings"] == []
    assert ["x-cpp-eos", "1"] in d["request"]["headers"]
    assert {rec["plugin"] for rec in d["logs"]} == {"cpp_2020_like"}  # log lines keep a name


def test_try_text_shows_the_root_id_warning_next_to_the_result(capsys):
    rc, out, _ = run_cli(capsys, "try", CPP_2020, "--root-id", "cpp_2020_like")
    assert rc == 0
    lines = out.splitlines()
    assert lines[1].startswith(
        "WARNING   the plugin found no context for root id 'cpp_2020_like' (its SDK logged: "
        "no context factory for root_id: cpp_2020_like)"
    )
    assert "(headers unchanged)" in out


def test_try_json_and_inspect_json_carry_the_pre_0_1_0_warning(capsys, wasm_file):
    from tests.host.wasm.test_legacy_abi import LEGACY

    path = wasm_file(LEGACY, "legacy.wasm")
    rc, out, _ = run_cli(capsys, "try", path, "--json")
    d = json.loads(out)
    assert rc == 0 and d["abi"] == "0.1.0"
    assert any("pre-0.1.0 plugin" in w for w in d["warnings"])
    rc, out, _ = run_cli(capsys, "inspect", path, "--json")
    info = json.loads(out)
    assert rc == 0 and info["abi"] == "0.1.0"
    assert any("pre-0.1.0 plugin" in w for w in info["warnings"])
    assert info["sdk"] == "unknown" and info["sdk_evidence"]


def test_inspect_json_reports_the_evidence_of_its_sdk_guess(capsys):
    rc, out, _ = run_cli(capsys, "inspect", str(demo_plugin("add_header")), "--json")
    info = json.loads(out)
    assert rc == 0
    assert info["sdk_evidence"] == [
        "exports the AssemblyScript runtime (__alloc, __release, __retain)"
    ]
