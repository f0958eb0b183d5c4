"""Buffer host functions: proxy_get/set_buffer_bytes, proxy_get_buffer_status and 0.1.0's
proxy_get_configuration (ABI doc §2.2 "Buffers", §4.4, §6.3)."""

from __future__ import annotations

import pytest

from host.wasm.abi import buffers
from host.wasm.context import HttpCallout
from host.wasm.pairs import HeaderMap
from host.wasm.types import BufferType, Status
from tests.fixtures import wat_modules
from tests.host.wasm.conftest import AbiHarness

SENTINEL = 0xAAAAAAAA
U32_MAX = 0xFFFFFFFF
REQ_BODY, RESP_BODY, DOWN, UP, CALL_BODY, GRPC_MSG, VM_CONF, PLUGIN_CONF, CALL_DATA = range(9)


def _slots(abi):
    return abi.put(SENTINEL.to_bytes(4, "little")), abi.put(SENTINEL.to_bytes(4, "little"))


def get(abi, btype, start=0, max_size=U32_MAX):
    rp, rs = _slots(abi)
    st = buffers.proxy_get_buffer_bytes(abi.vm, btype, start, max_size, rp, rs)
    if (abi.u32(rp), abi.u32(rs)) == (SENTINEL, SENTINEL):
        return st, None
    return st, abi.returned(rp, rs)


def set_(abi, btype, start, size, data: bytes):
    p = abi.put(data)
    return buffers.proxy_set_buffer_bytes(abi.vm, btype, start, size, p, len(data))


def status(abi, btype):
    rl, rf = _slots(abi)
    st = buffers.proxy_get_buffer_status(abi.vm, btype, rl, rf)
    return st, abi.u32(rl), abi.u32(rf)


@pytest.fixture
def conf_abi(start_vm):
    """A harness whose VM has a VM configuration of b"0123456789"."""
    host, vm, root = start_vm(
        wat_modules.make_missing_callbacks_module(), configuration=b"plugin-conf",
        vm_configuration=b"0123456789",
    )
    return AbiHarness(host, vm, root)


# -- get_buffer_bytes clamping (cpp-host, ABI doc §2.2 [DISAGREE] #8) -------------------


@pytest.mark.parametrize(
    ("start", "max_size", "expected"),
    [
        pytest.param(0, U32_MAX, b"0123456789", id="whole_with_u32_max"),
        pytest.param(0, 10, b"0123456789", id="exact_length"),
        pytest.param(3, 4, b"3456", id="inner_slice"),
        pytest.param(8, 10, b"89", id="start_plus_max_past_end"),
        pytest.param(9, U32_MAX, b"9", id="last_byte_u32_max"),
        pytest.param(10, 5, b"", id="start_at_end"),
        pytest.param(20, 5, b"", id="start_past_end"),
        pytest.param(U32_MAX, U32_MAX, b"", id="both_u32_max"),
        pytest.param(0, 0, b"", id="max_zero"),
    ],
)
def test_get_buffer_bytes_clamps_instead_of_failing(conf_abi, start, max_size, expected):
    with conf_abi.on(conf_abi.root):
        assert get(conf_abi, VM_CONF, start, max_size) == (Status.OK, expected)


def test_zero_length_result_writes_null_pointer_and_does_not_allocate(conf_abi):
    rp, rs = _slots(conf_abi)
    allocated = conf_abi.vm.guest_allocations  # the guest allocator's calls so far
    with conf_abi.on(conf_abi.root):
        st = buffers.proxy_get_buffer_bytes(conf_abi.vm, VM_CONF, 20, 5, rp, rs)
    assert st == Status.OK
    assert (conf_abi.u32(rp), conf_abi.u32(rs)) == (0, 0)
    assert conf_abi.vm.guest_allocations == allocated
    with conf_abi.on(conf_abi.root):
        st = buffers.proxy_get_buffer_bytes(conf_abi.vm, VM_CONF, 0, 3, rp, rs)
    assert (st, conf_abi.returned(rp, rs)) == (Status.OK, b"012")
    assert conf_abi.vm.guest_allocations == allocated + 1  # the 3 bytes returned


# -- configurations --------------------------------------------------------------------


def test_vm_configuration_is_readable_from_every_context(conf_abi):
    stream = conf_abi.http_context()
    for ctx in (conf_abi.root, stream, conf_abi.vm.vm_context):
        with conf_abi.on(ctx):
            assert get(conf_abi, VM_CONF) == (Status.OK, b"0123456789")


def test_empty_vm_configuration_is_ok_and_empty(abi):
    with abi.on(abi.root):
        assert get(abi, VM_CONF) == (Status.OK, b"")


def test_plugin_configuration_is_readable_only_while_configuring(conf_abi):
    root = conf_abi.root
    with conf_abi.on(root):
        assert get(conf_abi, PLUGIN_CONF) == (Status.NOT_FOUND, None)
        assert status(conf_abi, PLUGIN_CONF) == (Status.NOT_FOUND, SENTINEL, SENTINEL)
        root.configuring = b"{\"k\": 1}"
        try:
            assert get(conf_abi, PLUGIN_CONF) == (Status.OK, b"{\"k\": 1}")
            assert get(conf_abi, PLUGIN_CONF, 2, 1) == (Status.OK, b"k")
            assert status(conf_abi, PLUGIN_CONF) == (Status.OK, 8, 0)
        finally:
            root.configuring = None
        assert get(conf_abi, PLUGIN_CONF) == (Status.NOT_FOUND, None)


# A module that reads PLUGIN_CONFIGURATION in on_configure (and logs it) and again in
# on_tick (logging whether it was NOT_FOUND), and replaces the request body.
_BUFFER_PROBE_WAT = r"""
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "REPLACED")
  (data (i32.const 1088) "tick: not found")
  (data (i32.const 1152) "tick: other")
  (data (i32.const 1216) "configure: failed")
  (global $heap (mut i32) (i32.const 65536))
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap
      (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (if (i32.eqz (call $get (i32.const 7) (i32.const 0) (i32.const -1)
                        (i32.const 256) (i32.const 260)))
      (then (drop (call $log (i32.const 2) (i32.load (i32.const 256)) (i32.load (i32.const 260)))))
      (else (drop (call $log (i32.const 4) (i32.const 1216) (i32.const 17)))))
    (i32.const 1))
  (func (export "proxy_on_tick") (param $root i32)
    (if (i32.eq (call $get (i32.const 7) (i32.const 0) (i32.const -1)
                        (i32.const 256) (i32.const 260))
                (i32.const 1))
      (then (drop (call $log (i32.const 2) (i32.const 1088) (i32.const 15))))
      (else (drop (call $log (i32.const 2) (i32.const 1152) (i32.const 11))))))
  (func (export "proxy_on_request_body")
    (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (drop (call $set (i32.const 0) (i32.const 0) (i32.const -1) (i32.const 1024) (i32.const 8)))
    (i32.const 0))
)
"""


def test_plugin_reads_its_configuration_in_on_configure_but_not_in_on_tick(start_vm):
    wasm = wat_modules.compile_wat(_BUFFER_PROBE_WAT, "buffer_probe")
    host, vm, root = start_vm(wasm, configuration=b"cfg-bytes")
    vm.tick(root)
    lines = [r.message for r in host.logs if r.source == "plugin"]
    assert lines == ["cfg-bytes", "tick: not found"]


def test_plugin_replaces_the_request_body_chunk_end_to_end(start_vm):
    wasm = wat_modules.compile_wat(_BUFFER_PROBE_WAT, "buffer_probe")
    host, vm, root = start_vm(wasm)
    ctx = vm.new_http_context(root)
    ctx.on_request_headers(HeaderMap([(":path", "/")]), False)
    ctx.on_request_body(b"original body", True)
    assert ctx.take_body(0) == b"REPLACED"


def test_0_1_0_get_configuration_returns_plugin_config_while_configuring_else_vm_config(
    conf_abi,
):
    root = conf_abi.root
    rp, rs = _slots(conf_abi)
    with conf_abi.on(root):
        assert buffers.proxy_get_configuration(conf_abi.vm, rp, rs) == Status.OK
        assert conf_abi.returned(rp, rs) == b"0123456789"
        root.configuring = b"plugin"
        try:
            assert buffers.proxy_get_configuration(conf_abi.vm, rp, rs) == Status.OK
            assert conf_abi.returned(rp, rs) == b"plugin"
        finally:
            root.configuring = None


def test_0_1_0_module_reads_its_plugin_configuration_end_to_end(start_vm):
    host, vm, root = start_vm(wat_modules.make_abi_0_1_0_module(), configuration=b"{\"a\":1}")
    lines = [r.message for r in host.logs if r.source == "plugin"]
    assert lines == ["config: {\"a\":1}"]


# -- HTTP bodies ------------------------------------------------------------------------


@pytest.mark.parametrize("btype", [REQ_BODY, RESP_BODY], ids=["request", "response"])
def test_body_buffer_is_the_current_chunk_inside_a_body_callback(abi, btype):
    ctx = abi.http_context()
    d = ctx.request if btype == REQ_BODY else ctx.response
    d.body += b"hello world"
    d.body_active = True
    with abi.on(ctx):
        assert get(abi, btype) == (Status.OK, b"hello world")
        assert get(abi, btype, 6, 5) == (Status.OK, b"world")
        assert status(abi, btype) == (Status.OK, 11, 0)


@pytest.mark.parametrize("btype", [REQ_BODY, RESP_BODY], ids=["request", "response"])
def test_body_buffer_is_empty_ok_when_no_body_is_current(abi, btype):
    ctx = abi.http_context()
    with abi.on(ctx):
        rp, rs = _slots(abi)
        assert buffers.proxy_get_buffer_bytes(abi.vm, btype, 0, U32_MAX, rp, rs) == Status.OK
        assert (abi.u32(rp), abi.u32(rs)) == (0, 0)
        assert status(abi, btype) == (Status.OK, 0, 0)


@pytest.mark.parametrize("btype", [REQ_BODY, RESP_BODY], ids=["request", "response"])
def test_setting_a_body_when_none_is_current_is_not_found_and_changes_nothing(abi, btype):
    ctx = abi.http_context()
    d = ctx.request if btype == REQ_BODY else ctx.response
    d.body += b"old"  # e.g. left over after a callback; not current
    with abi.on(ctx):
        assert set_(abi, btype, 0, U32_MAX, b"new") == Status.NOT_FOUND
    assert bytes(d.body) == b"old"


@pytest.mark.parametrize("flag", ["buffering", "paused"])
def test_held_body_is_readable_and_writable_outside_its_callback(abi, flag):
    ctx = abi.http_context()
    ctx.request.body += b"held"
    setattr(ctx.request, flag, True)
    with abi.on(ctx):
        assert get(abi, REQ_BODY) == (Status.OK, b"held")
        assert set_(abi, REQ_BODY, 4, 0, b"!") == Status.OK
    assert bytes(ctx.request.body) == b"held!"


def test_body_buffers_on_the_root_context_are_not_found(abi):
    with abi.on(abi.root):
        assert get(abi, REQ_BODY) == (Status.NOT_FOUND, None)
        assert get(abi, RESP_BODY) == (Status.NOT_FOUND, None)


@pytest.mark.parametrize(
    ("start", "size", "data", "expected"),
    [
        pytest.param(0, 0, b">>", b">>0123456789", id="prepend"),
        pytest.param(10, 0, b"<<", b"0123456789<<", id="append_at_length"),
        pytest.param(0x7FFFFFFF, 0, b"<<", b"0123456789<<", id="append_0x7fffffff"),
        pytest.param(U32_MAX, 0, b"<<", b"0123456789<<", id="append_u32_max"),
        pytest.param(0, 10, b"new", b"new", id="replace_all_exact"),
        pytest.param(0, 0x7FFFFFFF, b"new", b"new", id="replace_all_0x7fffffff"),
        pytest.param(0, U32_MAX, b"new", b"new", id="replace_all_u32_max"),
        pytest.param(0, 3, b"ab", b"ab3456789", id="replace_first_k"),
        pytest.param(2, 3, b"XY", b"01XY56789", id="mid_splice"),
        pytest.param(5, 0, b"--", b"01234--56789", id="mid_insert"),
        pytest.param(8, 100, b"Z", b"01234567Z", id="tail_replace_clamped"),
        pytest.param(0, U32_MAX, b"", b"", id="clear"),
    ],
)
def test_set_buffer_bytes_splices_the_current_body(abi, start, size, data, expected):
    ctx = abi.http_context()
    ctx.response.body += b"0123456789"
    ctx.response.body_active = True
    with abi.on(ctx):
        if data:
            st = set_(abi, RESP_BODY, start, size, data)
        else:
            st = buffers.proxy_set_buffer_bytes(abi.vm, RESP_BODY, start, size, 0, 0)
        assert st == Status.OK
        assert get(abi, RESP_BODY) == (Status.OK, expected)
    assert bytes(ctx.response.body) == expected


# -- immutable and unavailable buffers ---------------------------------------------------


def test_immutable_buffers_reject_set_and_keep_their_bytes(conf_abi):
    root = conf_abi.root
    call = HttpCallout(4, "c", [], b"", [], 0, root.id, response_body=b"call-body")
    root.configuring = b"plugin-bytes"
    root.callout_response = call
    root.grpc_message = b"grpc-bytes"
    root.call_data = b"args"
    try:
        with conf_abi.on(root):
            for btype in (VM_CONF, PLUGIN_CONF, CALL_BODY, GRPC_MSG, CALL_DATA):
                assert set_(conf_abi, btype, 0, 0, b"x") == Status.BAD_ARGUMENT, btype
            assert get(conf_abi, VM_CONF) == (Status.OK, b"0123456789")
            assert get(conf_abi, PLUGIN_CONF) == (Status.OK, b"plugin-bytes")
            assert get(conf_abi, CALL_BODY) == (Status.OK, b"call-body")
            assert get(conf_abi, GRPC_MSG) == (Status.OK, b"grpc-bytes")
            assert get(conf_abi, CALL_DATA) == (Status.OK, b"args")
    finally:
        root.configuring = root.callout_response = root.grpc_message = root.call_data = None
    assert call.response_body == b"call-body"


@pytest.mark.parametrize("btype", [9, 100, 0x80000000, U32_MAX])
def test_buffer_type_above_8_is_bad_argument(conf_abi, btype):
    with conf_abi.on(conf_abi.root):
        assert get(conf_abi, btype) == (Status.BAD_ARGUMENT, None)
        assert set_(conf_abi, btype, 0, 0, b"x") == Status.BAD_ARGUMENT
        assert status(conf_abi, btype) == (Status.BAD_ARGUMENT, SENTINEL, SENTINEL)


def test_http_call_response_body_is_readable_only_inside_the_callout_callback(abi):
    root = abi.root
    with abi.on(root):
        assert get(abi, CALL_BODY) == (Status.NOT_FOUND, None)
        root.callout_response = HttpCallout(4, "c", [], b"", [], 0, root.id, response_body=b"{}")
        try:
            assert get(abi, CALL_BODY) == (Status.OK, b"{}")
            assert status(abi, CALL_BODY) == (Status.OK, 2, 0)
        finally:
            root.callout_response = None
        assert get(abi, CALL_BODY) == (Status.NOT_FOUND, None)


def test_failed_callout_body_is_ok_and_empty(abi):
    root = abi.root
    root.callout_response = HttpCallout(4, "c", [], b"", [], 0, root.id, failure="reset")
    try:
        with abi.on(root):
            rp, rs = _slots(abi)
            assert buffers.proxy_get_buffer_bytes(abi.vm, CALL_BODY, 0, U32_MAX, rp, rs) == 0
            assert (abi.u32(rp), abi.u32(rs)) == (0, 0)
    finally:
        root.callout_response = None


def test_grpc_message_and_call_data_exist_only_inside_their_callbacks(abi):
    root = abi.root
    with abi.on(root):
        assert get(abi, GRPC_MSG) == (Status.NOT_FOUND, None)
        assert get(abi, CALL_DATA) == (Status.NOT_FOUND, None)
        root.grpc_message, root.call_data = b"\x00\x01", b"ffargs"
        try:
            assert get(abi, GRPC_MSG) == (Status.OK, b"\x00\x01")
            assert get(abi, CALL_DATA, 2) == (Status.OK, b"args")
        finally:
            root.grpc_message = root.call_data = None


# -- TCP data ---------------------------------------------------------------------------


def test_tcp_downstream_and_upstream_data_are_readable_and_writable(abi):
    ctx = abi.vm.new_tcp_context(abi.root)
    ctx.created = True
    ctx.downstream += b"ping"
    ctx.upstream += b"pong"
    with abi.on(ctx):
        assert get(abi, DOWN) == (Status.OK, b"ping")
        assert get(abi, UP) == (Status.OK, b"pong")
        assert status(abi, UP) == (Status.OK, 4, 0)
        assert set_(abi, DOWN, 0, 0, b">") == Status.OK
        assert set_(abi, UP, U32_MAX, 0, b"!") == Status.OK
        assert get(abi, REQ_BODY) == (Status.NOT_FOUND, None)
    assert bytes(ctx.downstream) == b">ping"
    assert bytes(ctx.upstream) == b"pong!"


def test_tcp_buffers_on_an_http_context_are_not_found(abi):
    ctx = abi.http_context()
    with abi.on(ctx):
        assert get(abi, DOWN) == (Status.NOT_FOUND, None)
        assert set_(abi, UP, 0, 0, b"x") == Status.NOT_FOUND


def test_buffer_type_enum_matches_the_abi_numbers():
    assert [b.value for b in BufferType] == list(range(9))
