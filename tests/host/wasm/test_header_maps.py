"""Header, trailer and metadata map host functions (ABI doc §2.2 "Header / trailer /
metadata maps", §4.3, §5.1, §6.1.4), called as the guest would on a real VM."""

from __future__ import annotations

import pytest

from host.wasm.abi import header_maps as hm
from host.wasm.context import HttpCallout, MapState
from host.wasm.pairs import HeaderMap, encode_pairs
from host.wasm.types import MapType, Status
from tests.fixtures import wat_modules

SENTINEL = 0xAAAAAAAA
REQ, REQ_T, RESP, RESP_T = 0, 1, 2, 3
GRPC_INITIAL, GRPC_TRAILING, CALL_HEADERS, CALL_TRAILERS = 4, 5, 6, 7


# -- helpers: call the host functions with guest-memory arguments ----------------------


def _slots(abi):
    """Two out-slots pre-filled with a sentinel, so "not written" is observable."""
    return abi.put(SENTINEL.to_bytes(4, "little")), abi.put(SENTINEL.to_bytes(4, "little"))


def get_value(abi, mtype, key: bytes):
    k = abi.put(key)
    rp, rs = _slots(abi)
    st = hm.proxy_get_header_map_value(abi.vm, mtype, k, len(key), rp, rs)
    if abi.u32(rp) == SENTINEL and abi.u32(rs) == SENTINEL:
        return st, None
    return st, abi.returned(rp, rs)


def get_pairs(abi, mtype):
    rp, rs = _slots(abi)
    st = hm.proxy_get_header_map_pairs(abi.vm, mtype, rp, rs)
    return st, (abi.u32(rp), abi.u32(rs)), abi.returned(rp, rs) if abi.u32(rs) != SENTINEL else None


def set_pairs(abi, mtype, raw: bytes):
    p = abi.put(raw)
    return hm.proxy_set_header_map_pairs(abi.vm, mtype, p, len(raw))


def add(abi, mtype, key: bytes, value: bytes):
    k, v = abi.put(key), abi.put(value)
    return hm.proxy_add_header_map_value(abi.vm, mtype, k, len(key), v, len(value))


def replace(abi, mtype, key: bytes, value: bytes):
    k, v = abi.put(key), abi.put(value)
    return hm.proxy_replace_header_map_value(abi.vm, mtype, k, len(key), v, len(value))


def remove(abi, mtype, key: bytes):
    k = abi.put(key)
    return hm.proxy_remove_header_map_value(abi.vm, mtype, k, len(key))


def size(abi, mtype):
    r = abi.put(SENTINEL.to_bytes(4, "little"))
    st = hm.proxy_get_header_map_size(abi.vm, mtype, r)
    return st, abi.u32(r)


def activate(ctx, mtype, items):
    """Put ``ctx`` in the state of the callback that owns map ``mtype``."""
    m = HeaderMap(items)
    d = ctx.request if mtype in (REQ, REQ_T) else ctx.response
    if mtype in (REQ, RESP):
        d.headers = m
        d.headers_state = MapState.ACTIVE
    else:
        d.trailers = m
        d.trailers_writable = True  # inside on_*_trailers
    return m


STREAM_MAPS = [
    pytest.param(REQ, id="request_headers"),
    pytest.param(REQ_T, id="request_trailers"),
    pytest.param(RESP, id="response_headers"),
    pytest.param(RESP_T, id="response_trailers"),
]

ITEMS = [(":path", "/a?b=1"), ("X-Dup", "1"), ("x-dup", "2"), ("x-empty", "")]


# -- reading ---------------------------------------------------------------------------


@pytest.mark.parametrize("mtype", STREAM_MAPS)
def test_get_pairs_returns_the_serialized_map_in_insertion_order(abi, mtype):
    ctx = abi.http_context()
    activate(ctx, mtype, ITEMS)
    with abi.on(ctx):
        st, (ptr, n), data = get_pairs(abi, mtype)
    assert st == Status.OK
    assert ptr != 0
    assert data == encode_pairs(
        [(b":path", b"/a?b=1"), (b"x-dup", b"1"), (b"x-dup", b"2"), (b"x-empty", b"")]
    )
    assert n == len(data)


@pytest.mark.parametrize("mtype", STREAM_MAPS)
def test_get_value_is_case_insensitive_and_returns_the_first_duplicate(abi, mtype):
    ctx = abi.http_context()
    activate(ctx, mtype, ITEMS)
    with abi.on(ctx):
        assert get_value(abi, mtype, b"X-DUP") == (Status.OK, b"1")
        assert get_value(abi, mtype, b":path") == (Status.OK, b"/a?b=1")


def test_empty_header_value_is_ok_with_null_pointer_and_no_allocation(abi):
    ctx = abi.http_context()
    activate(ctx, REQ, ITEMS)
    k = abi.put(b"x-empty")
    rp, rs = _slots(abi)
    allocated = abi.vm.guest_allocations  # the guest allocator's calls so far
    with abi.on(ctx):
        st = hm.proxy_get_header_map_value(abi.vm, REQ, k, 7, rp, rs)
    assert st == Status.OK
    assert (abi.u32(rp), abi.u32(rs)) == (0, 0)
    assert abi.vm.guest_allocations == allocated


def test_empty_map_pairs_are_ok_with_null_pointer_and_zero_size(abi):
    ctx = abi.http_context()
    activate(ctx, REQ, [])
    with abi.on(ctx):
        st, (ptr, n), _ = get_pairs(abi, REQ)
    assert (st, ptr, n) == (Status.OK, 0, 0)


def test_non_utf8_values_round_trip_unchanged(abi):
    ctx = abi.http_context()
    activate(ctx, REQ, [])
    raw = b"\xff\x01\xfe"  # NUL is refused (issue 13: CR, LF, NUL); other bytes pass
    with abi.on(ctx):
        assert add(abi, REQ, b"x-bin", raw) == Status.OK
        assert get_value(abi, REQ, b"x-bin") == (Status.OK, raw)


# -- missing keys: 0.2.x vs 0.1.0 -----------------------------------------------------


def test_missing_header_is_not_found_in_0_2_x_and_out_slots_are_untouched(abi):
    ctx = abi.http_context()
    activate(ctx, REQ, ITEMS)
    assert abi.vm.abi == "0.2.1"
    with abi.on(ctx):
        assert get_value(abi, REQ, b"x-nope") == (Status.NOT_FOUND, None)


def test_missing_header_is_ok_and_empty_in_0_1_0(abi, monkeypatch):
    monkeypatch.setattr(abi.vm, "abi", "0.1.0")
    ctx = abi.http_context()
    activate(ctx, REQ, ITEMS)
    with abi.on(ctx):
        assert get_value(abi, REQ, b"x-nope") == (Status.OK, b"")


def test_0_1_0_module_sees_ok_and_empty_for_a_missing_header_end_to_end(start_vm):
    host, vm, root = start_vm(wat_modules.make_abi_0_1_0_module(), configuration=b"cfg")
    assert vm.abi == "0.1.0"
    ctx = vm.new_http_context(root)
    headers = HeaderMap([(":path", "/")])
    ctx.on_request_headers(headers, True)
    lines = [r.message for r in host.logs if r.source == "plugin"]
    assert "missing: status=0 size=0" in lines
    assert headers.get("x-abi") == b"0.1.0"


# -- mutation --------------------------------------------------------------------------


@pytest.mark.parametrize("mtype", STREAM_MAPS)
def test_add_appends_a_lower_cased_entry_and_never_replaces(abi, mtype):
    ctx = abi.http_context()
    m = activate(ctx, mtype, [("a", "1")])
    with abi.on(ctx):
        assert add(abi, mtype, b"A", b"2") == Status.OK
        assert add(abi, mtype, b"New-Key", b"v") == Status.OK
    assert m.items() == [(b"a", b"1"), (b"a", b"2"), (b"new-key", b"v")]


@pytest.mark.parametrize("mtype", STREAM_MAPS)
def test_replace_leaves_exactly_one_value_and_adds_when_absent(abi, mtype):
    ctx = abi.http_context()
    m = activate(ctx, mtype, [("a", "1"), ("b", "x"), ("A", "2")])
    with abi.on(ctx):
        assert replace(abi, mtype, b"a", b"9") == Status.OK
        assert replace(abi, mtype, b"C", b"3") == Status.OK
    assert m.items() == [(b"a", b"9"), (b"b", b"x"), (b"c", b"3")]


@pytest.mark.parametrize("mtype", STREAM_MAPS)
def test_remove_drops_all_values_and_is_ok_when_absent(abi, mtype):
    ctx = abi.http_context()
    m = activate(ctx, mtype, [("a", "1"), ("b", "x"), ("A", "2")])
    with abi.on(ctx):
        assert remove(abi, mtype, b"A") == Status.OK
        assert remove(abi, mtype, b"never") == Status.OK
    assert m.items() == [(b"b", b"x")]


@pytest.mark.parametrize("mtype", STREAM_MAPS)
def test_set_pairs_replaces_the_whole_map_lower_casing_keys(abi, mtype):
    ctx = abi.http_context()
    m = activate(ctx, mtype, [("old", "gone")])
    raw = encode_pairs([(b"X-One", b"1"), (b"x-one", b"2"), (b":status", b"201")])
    with abi.on(ctx):
        assert set_pairs(abi, mtype, raw) == Status.OK
        st, _, data = get_pairs(abi, mtype)
    assert m.items() == [(b"x-one", b"1"), (b"x-one", b"2"), (b":status", b"201")]
    assert st == Status.OK
    assert data == encode_pairs(m.items())


@pytest.mark.parametrize("raw", [b"", b"\0", b"\0\0\0\0"], ids=["empty", "nul", "count0"])
def test_set_pairs_with_an_empty_buffer_clears_the_map(abi, raw):
    ctx = abi.http_context()
    m = activate(ctx, REQ, [("a", "1")])
    with abi.on(ctx):
        p = abi.put(raw or b"\0")
        assert hm.proxy_set_header_map_pairs(abi.vm, REQ, p, len(raw)) == Status.OK
    assert len(m) == 0


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"\x01\x00\x00\x00", id="truncated_size_table"),
        pytest.param(encode_pairs([(b"a", b"1")])[:-1], id="missing_final_nul"),
        pytest.param(encode_pairs([(b"a", b"1")]) + b"x", id="trailing_bytes"),
        pytest.param(b"\x01\x04\x00\x00" + b"\0" * 16, id="more_than_1024_pairs"),
    ],
)
def test_malformed_pairs_are_bad_argument_and_leave_the_map_alone(abi, raw):
    ctx = abi.http_context()
    m = activate(ctx, REQ, [("keep", "me")])
    with abi.on(ctx):
        assert set_pairs(abi, REQ, raw) == Status.BAD_ARGUMENT
    assert m.items() == [(b"keep", b"me")]
    assert ctx.route_cache_dirty is False


def test_mutating_request_headers_leaves_the_route_cache_alone(abi):
    # Current Envoy re-routes only when the plugin calls clear_route_cache (the foreign
    # function; 0.1.0's proxy_clear_route_cache), not on every header change.
    ctx = abi.http_context()
    activate(ctx, REQ, [])
    activate(ctx, RESP, [])
    with abi.on(ctx):
        assert add(abi, RESP, b"a", b"1") == Status.OK
        assert add(abi, REQ, b"a", b"1") == Status.OK
    assert ctx.route_cache_dirty is False


# -- size ------------------------------------------------------------------------------


@pytest.mark.parametrize("mtype", STREAM_MAPS)
def test_size_is_the_serialized_pairs_length(abi, mtype):
    ctx = abi.http_context()
    m = activate(ctx, mtype, ITEMS)
    with abi.on(ctx):
        assert size(abi, mtype) == (Status.OK, len(encode_pairs(m)))
        assert size(abi, mtype)[1] == 4 + 4 * 10 + len(b":path/a?b=1x-dup1x-dup2x-empty")


def test_size_of_an_empty_map_is_zero(abi):
    ctx = abi.http_context()
    activate(ctx, RESP, [])
    with abi.on(ctx):
        assert size(abi, RESP) == (Status.OK, 0)


# -- enum validation -------------------------------------------------------------------


@pytest.mark.parametrize("mtype", [8, 9, 0x7FFFFFFF, 0xFFFFFFFF])
def test_map_type_above_7_is_bad_argument_for_every_function(abi, mtype):
    ctx = abi.http_context()
    m = activate(ctx, REQ, [("a", "1")])
    with abi.on(ctx):
        st, (ptr, n), _ = get_pairs(abi, mtype)
        assert st == Status.BAD_ARGUMENT
        assert (ptr, n) == (SENTINEL, SENTINEL)
        assert get_value(abi, mtype, b"a") == (Status.BAD_ARGUMENT, None)
        assert set_pairs(abi, mtype, encode_pairs([(b"x", b"y")])) == Status.BAD_ARGUMENT
        assert add(abi, mtype, b"x", b"y") == Status.BAD_ARGUMENT
        assert replace(abi, mtype, b"a", b"y") == Status.BAD_ARGUMENT
        assert remove(abi, mtype, b"a") == Status.BAD_ARGUMENT
        assert size(abi, mtype) == (Status.BAD_ARGUMENT, SENTINEL)
    assert m.items() == [(b"a", b"1")]


# -- the Envoy availability model (§6.1.4) --------------------------------------------


@pytest.mark.parametrize("state", [MapState.RELEASED, MapState.ABSENT])
@pytest.mark.parametrize("mtype", [REQ, RESP], ids=["request", "response"])
def test_unavailable_headers_reject_reads_and_writes_but_pairs_are_empty_ok(abi, mtype, state):
    ctx = abi.http_context()
    m = activate(ctx, mtype, [("a", "1")])
    (ctx.request if mtype == REQ else ctx.response).headers_state = state
    with abi.on(ctx):
        assert get_value(abi, mtype, b"a") == (Status.BAD_ARGUMENT, None)
        assert add(abi, mtype, b"b", b"2") == Status.BAD_ARGUMENT
        assert replace(abi, mtype, b"a", b"2") == Status.BAD_ARGUMENT
        assert remove(abi, mtype, b"a") == Status.BAD_ARGUMENT
        assert set_pairs(abi, mtype, encode_pairs([(b"z", b"z")])) == Status.BAD_ARGUMENT
        assert size(abi, mtype)[0] == Status.BAD_ARGUMENT
        st, (ptr, n), _ = get_pairs(abi, mtype)
    assert (st, ptr, n) == (Status.OK, 0, 0)
    assert m.items() == [(b"a", b"1")]


def test_request_headers_are_released_after_on_request_headers_continues(start_vm):
    # hostcall_sequence reads and adds request headers, then returns Continue.
    host, vm, root = start_vm(wat_modules.make_hostcall_sequence_module())
    ctx = vm.new_http_context(root)
    headers = HeaderMap([(":path", "/p"), ("user-agent", "t")])
    ctx.on_request_headers(headers, True)
    assert headers.get("x-typical") == b"1"
    assert ctx.request.headers_state == MapState.RELEASED
    vm.current, vm.effective = ctx, None
    try:
        assert hm.proxy_remove_header_map_value(vm, REQ, 1024, 5) == Status.BAD_ARGUMENT
    finally:
        vm.current = vm.vm_context
    assert headers.get(":path") == b"/p"


def test_access_log_phase_reads_released_headers_but_cannot_write(abi):
    ctx = abi.http_context()
    m = activate(ctx, REQ, [(":path", "/x"), ("a", "1")])
    ctx.request.headers_state = MapState.RELEASED
    ctx.access_log_phase = True
    with abi.on(ctx):
        assert get_value(abi, REQ, b"a") == (Status.OK, b"1")
        assert get_value(abi, REQ, b"missing") == (Status.NOT_FOUND, None)
        st, _, data = get_pairs(abi, REQ)
        assert (st, data) == (Status.OK, encode_pairs(m.items()))
        assert size(abi, REQ) == (Status.OK, len(encode_pairs(m)))
        assert add(abi, REQ, b"b", b"2") == Status.BAD_ARGUMENT
        assert replace(abi, REQ, b"a", b"2") == Status.BAD_ARGUMENT
        assert remove(abi, REQ, b"a") == Status.BAD_ARGUMENT
        assert set_pairs(abi, REQ, b"\0\0\0\0") == Status.BAD_ARGUMENT
    assert m.items() == [(b":path", b"/x"), (b"a", b"1")]


def test_access_log_phase_is_not_writable_even_for_active_headers(abi):
    ctx = abi.http_context()
    m = activate(ctx, RESP, [("a", "1")])
    ctx.access_log_phase = True
    with abi.on(ctx):
        assert add(abi, RESP, b"b", b"2") == Status.BAD_ARGUMENT
        assert get_value(abi, RESP, b"a") == (Status.OK, b"1")
    assert m.items() == [(b"a", b"1")]


def test_access_log_phase_missing_map_behaves_like_a_missing_key(abi, monkeypatch):
    # Envoy getHeaderMapValue: a null map in the access-log phase is NOT_FOUND (0.2.x)
    # or OK + empty (0.1.0), not BAD_ARGUMENT (ABI doc §2.2). A stream reset before
    # any response has no response headers in on_log; Rust plugins reading :status
    # there must not panic.
    ctx = abi.http_context()
    ctx.access_log_phase = True
    assert ctx.response.headers is None
    with abi.on(ctx):
        assert get_value(abi, RESP, b":status") == (Status.NOT_FOUND, None)
        st, (ptr, n), _ = get_pairs(abi, RESP)
        assert (st, ptr, n) == (Status.OK, 0, 0)
        monkeypatch.setattr(abi.vm, "abi", "0.1.0")
        assert get_value(abi, RESP, b":status") == (Status.OK, b"")


def test_paused_headers_stay_readable_and_writable(abi):
    ctx = abi.http_context()
    m = activate(ctx, REQ, [("a", "1")])
    ctx.request.paused = True
    with abi.on(ctx):
        assert replace(abi, REQ, b"a", b"2") == Status.OK
        assert get_value(abi, REQ, b"a") == (Status.OK, b"2")
    assert m.items() == [(b"a", b"2")]


def test_deleted_context_maps_are_unavailable(abi):
    ctx = abi.http_context()
    activate(ctx, REQ, [("a", "1")])
    ctx.deleted = True
    with abi.on(ctx):
        assert get_value(abi, REQ, b"a") == (Status.BAD_ARGUMENT, None)
        st, (ptr, n), _ = get_pairs(abi, REQ)
    assert (st, ptr, n) == (Status.OK, 0, 0)


def test_stream_maps_on_the_root_context_are_empty_pairs_and_bad_argument_values(abi):
    with abi.on(abi.root):
        for mtype in (REQ, REQ_T, RESP, RESP_T):
            st, (ptr, n), _ = get_pairs(abi, mtype)
            assert (st, ptr, n) == (Status.OK, 0, 0)
            assert get_value(abi, mtype, b":path") == (Status.BAD_ARGUMENT, None)
            assert add(abi, mtype, b"a", b"1") == Status.BAD_ARGUMENT


# -- trailers --------------------------------------------------------------------------


@pytest.mark.parametrize("mtype", [REQ_T, RESP_T], ids=["request", "response"])
def test_trailers_can_be_added_from_the_last_body_chunk(abi, mtype):
    ctx = abi.http_context()
    d = ctx.request if mtype == REQ_T else ctx.response
    assert d.trailers is None
    d.body_active = True
    d.trailers_writable = True  # what PluginVM.http_body sets for end_of_stream=1
    with abi.on(ctx):
        st, (ptr, n), _ = get_pairs(abi, mtype)
        assert (st, ptr, n) == (Status.OK, 0, 0)
        assert add(abi, mtype, b"X-Checksum", b"abc") == Status.OK
        assert get_value(abi, mtype, b"x-checksum") == (Status.OK, b"abc")
    assert d.trailers is not None
    assert d.trailers.items() == [(b"x-checksum", b"abc")]


@pytest.mark.parametrize("mtype", [REQ_T, RESP_T], ids=["request", "response"])
def test_trailers_are_not_addable_from_a_chunk_that_is_not_the_last(abi, mtype):
    ctx = abi.http_context()
    d = ctx.request if mtype == REQ_T else ctx.response
    d.body_active = True
    with abi.on(ctx):
        assert add(abi, mtype, b"x", b"1") == Status.BAD_ARGUMENT
    assert d.trailers is None


def test_trailers_are_read_only_in_the_access_log_phase(abi):
    ctx = abi.http_context()
    ctx.request.trailers = HeaderMap([("grpc-status", "0")])
    ctx.access_log_phase = True
    with abi.on(ctx):
        assert get_value(abi, REQ_T, b"grpc-status") == (Status.OK, b"0")
        assert add(abi, REQ_T, b"x", b"1") == Status.BAD_ARGUMENT
    assert ctx.request.trailers.items() == [(b"grpc-status", b"0")]


def test_trailers_after_their_callback_are_unavailable(abi):
    ctx = abi.http_context()
    ctx.response.trailers = HeaderMap([("a", "1")])
    ctx.response.trailers_writable = False
    with abi.on(ctx):
        assert get_value(abi, RESP_T, b"a") == (Status.BAD_ARGUMENT, None)
        assert add(abi, RESP_T, b"b", b"2") == Status.BAD_ARGUMENT


# -- callout and gRPC maps (6, 7, 4, 5) ------------------------------------------------


def _callout():
    return HttpCallout(
        token=4, cluster="c", headers=[], body=b"", trailers=[], timeout_ms=0, context_id=1,
        response_headers=[(b":status", b"200"), (b"X-From", b"up")],
        response_trailers=[(b"grpc-status", b"0")],
    )


def test_http_call_response_maps_are_readable_only_inside_the_callout_callback(abi):
    call = _callout()
    with abi.on(abi.root):
        assert get_value(abi, CALL_HEADERS, b":status") == (Status.BAD_ARGUMENT, None)
        st, (ptr, n), _ = get_pairs(abi, CALL_HEADERS)
        assert (st, ptr, n) == (Status.OK, 0, 0)
        abi.root.callout_response = call
        try:
            assert get_value(abi, CALL_HEADERS, b":status") == (Status.OK, b"200")
            assert get_value(abi, CALL_HEADERS, b"x-from") == (Status.OK, b"up")
            assert get_value(abi, CALL_TRAILERS, b"grpc-status") == (Status.OK, b"0")
            st, _, data = get_pairs(abi, CALL_HEADERS)
            expected = encode_pairs([(b":status", b"200"), (b"x-from", b"up")])
            assert (st, data) == (Status.OK, expected)
            assert size(abi, CALL_TRAILERS) == (Status.OK, 4 + 10 + len(b"grpc-status0"))
        finally:
            abi.root.callout_response = None
        assert get_value(abi, CALL_TRAILERS, b"grpc-status") == (Status.BAD_ARGUMENT, None)


@pytest.mark.parametrize("mtype", [CALL_HEADERS, CALL_TRAILERS])
def test_http_call_response_maps_are_read_only(abi, mtype):
    call = _callout()
    abi.root.callout_response = call
    try:
        with abi.on(abi.root):
            assert add(abi, mtype, b"x", b"1") == Status.BAD_ARGUMENT
            assert replace(abi, mtype, b":status", b"500") == Status.BAD_ARGUMENT
            assert remove(abi, mtype, b":status") == Status.BAD_ARGUMENT
            assert set_pairs(abi, mtype, b"\0\0\0\0") == Status.BAD_ARGUMENT
    finally:
        abi.root.callout_response = None
    assert call.response_headers == [(b":status", b"200"), (b"X-From", b"up")]
    assert call.response_trailers == [(b"grpc-status", b"0")]


def test_http_call_response_maps_are_reachable_from_the_effective_stream_context(abi):
    # SDKs call proxy_set_effective_context(stream) before running user code.
    ctx = abi.http_context()
    abi.root.callout_response = _callout()
    try:
        with abi.on(abi.root):
            abi.vm.effective = ctx
            assert get_value(abi, CALL_HEADERS, b":status") == (Status.OK, b"200")
    finally:
        abi.root.callout_response = None


@pytest.mark.parametrize(
    ("mtype", "attr"),
    [(GRPC_INITIAL, "grpc_initial_metadata"), (GRPC_TRAILING, "grpc_trailing_metadata")],
    ids=["initial", "trailing"],
)
def test_grpc_metadata_maps_are_readable_only_in_their_callback_and_read_only(abi, mtype, attr):
    with abi.on(abi.root):
        assert get_value(abi, mtype, b"k") == (Status.BAD_ARGUMENT, None)
        setattr(abi.root, attr, [(b"K", b"v"), (b"k", b"w")])
        try:
            assert get_value(abi, mtype, b"k") == (Status.OK, b"v")
            st, _, data = get_pairs(abi, mtype)
            assert (st, data) == (Status.OK, encode_pairs([(b"k", b"v"), (b"k", b"w")]))
            assert add(abi, mtype, b"x", b"1") == Status.BAD_ARGUMENT
            assert remove(abi, mtype, b"k") == Status.BAD_ARGUMENT
        finally:
            setattr(abi.root, attr, None)
        st, (ptr, n), _ = get_pairs(abi, mtype)
        assert (st, ptr, n) == (Status.OK, 0, 0)


def test_map_type_enum_matches_the_abi_numbers():
    assert [m.value for m in MapType] == list(range(8))
