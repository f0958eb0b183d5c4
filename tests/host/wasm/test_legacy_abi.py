"""Plugins of 2020 and before: callbacks called with the arity their export has,
pre-0.1.0 (marker-less) modules run as 0.1.0, unusable exports reported, and the
root id "" default with its "no context for this root id" warning.

Modules: ``resources/plugins/c/cpp_2020_like`` (C via zig: the C++ SDK of 2020, 0.1.0
marker with 3-parameter headers callbacks, factories by root id) and WAT modules for the
shapes no installable SDK produces (pre-0.1.0, a 2-parameter headers callback under a
0.2.1 marker, an export with an unusable signature).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from host.runner import TryRequest, run_try
from host.wasm import Action, HeaderMap, VmConfig, VmStartError
from host.wasm.module_info import describe
from host.wasm.runtime import Engine
from tests.fixtures.wat_modules import compile_wat

ROOT = Path(__file__).resolve().parents[3]
CPP_2020 = ROOT / "resources/plugins/c/cpp_2020_like.wasm"


@pytest.fixture(scope="module")
def engine() -> Engine:
    e = Engine()
    yield e
    e.close()


def header(pairs: list[tuple[bytes, bytes]], name: str) -> str | None:
    for k, v in pairs:
        if k.decode() == name:
            return v.decode()
    return None


def plugin_lines(result: object) -> list[str]:
    return [str(r["message"]) for r in result.logs if r["source"] == "plugin"]  # type: ignore[attr-defined]


# -- item 2: 0.1.0 marker with the 0.2-style 3-parameter headers callbacks -----------------


def test_cpp_2020_plugin_sees_requests_through_its_three_parameter_callbacks(engine):
    r = run_try(CPP_2020.read_bytes(), TryRequest(configuration=b'{"k":1}'), engine=engine)
    assert r.ok and r.abi == "0.1.0"
    assert header(r.request_headers, "x-cpp-eos") == "1"  # no body: end_of_stream
    assert header(r.response_headers, "x-cpp-response-eos") == "1"
    assert "cpp_2020_like: request headers n=5 end_of_stream=1 (OK)" in plugin_lines(r)
    # 0.1.0's proxy_get_configuration gave it the plugin configuration
    assert "cpp_2020_like: configuration {\"k\":1}" in plugin_lines(r)
    assert r.warnings == []


def test_cpp_2020_plugin_gets_end_of_stream_false_when_a_body_follows(engine):
    req = TryRequest(method="POST", body=b"payload", response_body=b"out")
    r = run_try(CPP_2020.read_bytes(), req, engine=engine)
    assert header(r.request_headers, "x-cpp-eos") == "0"
    assert header(r.response_headers, "x-cpp-response-eos") == "0"


def _headers_module(marker: str, request_params: int, response_params: int) -> bytes:
    """Headers callbacks that log how many arguments they got and the last one's value."""

    def cb(name: str, nparams: int, text_addr: int) -> str:
        params = " ".join(["i32"] * nparams)
        last = f"(local.get {nparams - 1})"
        return f"""
  (func (export "{name}") (param {params}) (result i32)
    (i32.store8 (i32.const {text_addr + 7}) (i32.add (i32.const 48) {last}))
    (drop (call $log (i32.const 2) (i32.const {text_addr}) (i32.const 8)))
    (i32.const 0))"""

    return compile_wat(
        f"""(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "req {request_params}: ?")
  (data (i32.const 1040) "rsp {response_params}: ?")
  (func (export "malloc") (param i32) (result i32) (i32.const 65536))
  (func (export "{marker}"))
  {cb("proxy_on_request_headers", request_params, 1024)}
  {cb("proxy_on_response_headers", response_params, 1040)})""",
        "headers_arity",
    )


@pytest.mark.parametrize(
    "marker, req_params, rsp_params, want",
    [
        # 0.1.0 marker: a 3-parameter export gets end_of_stream, a 2-parameter one does not
        ("proxy_abi_version_0_1_0", 3, 2, ["req 3: 1", "rsp 2: 2"]),
        # 0.2.1 marker with a 2-parameter export: called with (context_id, num_headers)
        ("proxy_abi_version_0_2_1", 2, 3, ["req 2: 4", "rsp 3: 1"]),
    ],
)
def test_each_headers_callback_is_called_with_its_own_arity(
    make_host, marker, req_params, rsp_params, want
):
    host = make_host()
    vm = host.create_vm(host.compile(_headers_module(marker, req_params, rsp_params)), VmConfig())
    root = vm.start_plugin("", b"")
    ctx = vm.new_http_context(root)
    req = HeaderMap([(":method", "GET"), (":path", "/"), (":authority", "a"), ("x", "y")])
    assert ctx.on_request_headers(req, True) == Action.CONTINUE
    assert ctx.on_response_headers(HeaderMap([(":status", "200"), ("a", "b")]), True) == (
        Action.CONTINUE
    )
    # the last argument: end_of_stream (1) for 3 parameters, the header count otherwise
    assert [r.message for r in host.logs if r.source == "plugin"] == want
    assert vm.warnings == [] and vm.cb.mismatched == []


def test_an_export_with_an_unusable_signature_is_reported_everywhere(engine, tmp_path, capsys):
    from host.cli import main

    wasm = compile_wat(
        """(module
  (memory (export "memory") 1)
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_request_headers") (param i32 i64 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_tick") (param i32) (result i32) (i32.const 0)))""",
        "unusable_exports",
    )
    line_headers = (
        "export proxy_on_request_headers has signature (i32, i64, i32) -> (i32); the host "
        "calls it as (i32, i32, i32) -> (i32) or (i32, i32) -> (i32): it is never called"
    )
    line_tick = (
        "export proxy_on_tick has signature (i32) -> (i32); the host calls it as "
        "(i32) -> (): it is never called"
    )
    info = describe(engine.compile(wasm))
    assert [line_headers, line_tick] == [w for w in info.warnings if w.startswith("export ")]
    r = run_try(wasm, TryRequest(), engine=engine)
    assert r.ok and r.request_forwarded  # never called: the request continues
    assert r.warnings[:2] == [line_headers, line_tick]
    path = tmp_path / "unusable.wasm"
    path.write_bytes(wasm)
    assert main(["try", str(path)]) == 0
    assert f"WARNING   {line_headers}" in capsys.readouterr().out


# -- item 3: pre-0.1.0 modules (no marker, imports proxy_get_configuration) ----------------

LEGACY = compile_wat(
    """(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_configuration" (func $get_conf (param i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value"
    (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "x-legacy")
  (data (i32.const 1040) "1.5")
  (global $heap (mut i32) (i32.const 65536))
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.add (local.get $n) (i32.const 8))))
    (local.get $p))
  ;; logs (info) what proxy_get_configuration returns; "x-legacy" at error if it fails
  (func $log_conf
    (if (i32.eqz (call $get_conf (i32.const 256) (i32.const 260)))
      (then (drop (call $log (i32.const 2) (i32.load (i32.const 256)) (i32.load (i32.const 260)))))
      (else (drop (call $log (i32.const 4) (i32.const 1024) (i32.const 8))))))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (call $log_conf) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (call $log_conf) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32) (result i32)
    (drop (call $add (i32.const 0) (i32.const 1024) (i32.const 8) (i32.const 1040) (i32.const 3)))
    (i32.const 0)))""",
    "pre_0_1_0",
)


def test_pre_0_1_0_module_runs_as_0_1_0_with_its_configurations_and_a_warning(engine):
    req = TryRequest(configuration=b'{"plugin":1}', vm_configuration=b'{"vm":1}')
    r = run_try(LEGACY, req, engine=engine)
    assert r.ok and r.abi == "0.1.0"
    # proxy_get_configuration: the VM configuration in on_vm_start, the plugin's in on_configure
    assert plugin_lines(r) == ['{"vm":1}', '{"plugin":1}']
    assert header(r.request_headers, "x-legacy") == "1.5"
    assert len(r.warnings) == 1
    assert "pre-0.1.0 plugin (Istio 1.4/1.5 era), run as ABI 0.1.0" in r.warnings[0]
    assert r.to_json()["warnings"] == r.warnings


def test_pre_0_1_0_module_in_inspect(engine):
    info = describe(engine.compile(LEGACY))
    assert info.abi == "0.1.0"
    assert any("pre-0.1.0 plugin" in w for w in info.warnings)
    assert not any("refuses to load it" in w for w in info.warnings)


def test_a_marker_less_module_of_another_shape_is_still_refused(make_host):
    wasm = compile_wat(
        """(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "malloc") (param i32) (result i32) (i32.const 1024)))""",
        "no_marker_no_legacy",
    )
    host = make_host()
    with pytest.raises(VmStartError) as e:
        host.create_vm(host.compile(wasm), VmConfig())
    assert e.value.failure.kind == "no_abi_marker"
    assert "proxy_get_configuration" in e.value.failure.message


# -- item 1: root id "" by default; "no context for this root id" said next to the result ---


def test_the_cpp_sdk_error_for_a_root_id_without_factory_becomes_a_warning(engine):
    r = run_try(CPP_2020.read_bytes(), TryRequest(root_id="stats_outbound"), engine=engine)
    assert r.ok and header(r.request_headers, "x-cpp-eos") is None  # the SDK default ran
    (w,) = r.warnings
    assert w.startswith("the plugin found no context for root id 'stats_outbound'")
    assert "no context factory for root_id: stats_outbound" in w and "pluginName" in w


def test_a_plugin_that_answers_nothing_gets_the_root_id_hint(engine):
    # a root context that is not the plugin's: every callback answers Continue, silently
    silent = compile_wat(
        """(module
  (memory (export "memory") 1)
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0)))""",
        "silent",
    )
    r = run_try(silent, TryRequest(), engine=engine)
    assert r.ok
    (w,) = r.warnings
    assert 'changed nothing and logged nothing with root id "" (unset)' in w
    assert "--root-id NAME" in w


def test_the_bundled_demo_plugins_answer_under_the_default_root_id(engine):
    wasm = (ROOT / "resources/plugins/add_header.wasm").read_bytes()
    r = run_try(wasm, TryRequest(), engine=engine)  # root_id "" (Envoy/Istio's default)
    assert r.ok and r.warnings == []
    assert header(r.request_headers, "x-wasmdesk") == "hello"
