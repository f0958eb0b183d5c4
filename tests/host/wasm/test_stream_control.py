"""Stream control: continue/close stream, 0.1.0's continue_request/response and
clear_route_cache, send_local_response (ABI doc §2.2 "Stream control", §6.1, §6.2)."""

from __future__ import annotations

import pytest

from host.wasm.abi import stream_control as sc
from host.wasm.context import Action, LocalResponse, MapState, StreamListener
from host.wasm.pairs import HeaderMap, encode_pairs
from host.wasm.types import Status, StreamType
from tests.fixtures import wat_modules

NO_GRPC = 0xFFFFFFFF  # -1 as the guest passes it


@pytest.fixture(autouse=True)
def _drain_actions(abi):
    yield
    abi.vm._actions.clear()


def actions(abi):
    return [(k, c, s) for k, c, s in abi.vm._actions]


def local_reply(abi, status=403, details=b"", body=b"", headers=b"", grpc=NO_GRPC):
    d = abi.put(details or b"\0")
    b = abi.put(body or b"\0")
    h = abi.put(headers or b"\0")
    return sc.proxy_send_local_response(
        abi.vm, status, d, len(details), b, len(body), h, len(headers), grpc
    )


# -- continue_stream / close_stream ----------------------------------------------------


@pytest.mark.parametrize("stream", [StreamType.HTTP_REQUEST, StreamType.HTTP_RESPONSE])
def test_continue_stream_on_http_records_a_deferred_continue(abi, stream):
    ctx = abi.http_context()
    d = ctx.direction(stream)
    d.paused = True
    with abi.on(ctx):
        assert sc.proxy_continue_stream(abi.vm, int(stream)) == Status.OK
    assert actions(abi) == [("continue", ctx, stream)]
    assert d.paused is True  # applied only after the guest call returns (§6.0)


@pytest.mark.parametrize("stream", [StreamType.DOWNSTREAM, StreamType.UPSTREAM])
def test_continue_stream_on_tcp_records_a_deferred_continue(abi, stream):
    ctx = abi.vm.new_tcp_context(abi.root)
    ctx.created = True
    with abi.on(ctx):
        assert sc.proxy_continue_stream(abi.vm, int(stream)) == Status.OK
    assert actions(abi) == [("continue", ctx, stream)]


def test_deferred_continue_resumes_a_paused_request_when_applied(abi):
    resumed = []

    class Listener(StreamListener):
        def on_resume(self, ctx, stream):
            resumed.append((ctx.id, stream))

    ctx = abi.vm.new_http_context(abi.root, listener=Listener())
    ctx.created = True
    ctx.request.paused = True
    with abi.on(ctx):
        sc.proxy_continue_stream(abi.vm, 0)
    assert resumed == []
    abi.vm._apply_actions(abi.vm._take_actions())
    assert resumed == [(ctx.id, StreamType.HTTP_REQUEST)]
    assert ctx.request.paused is False


@pytest.mark.parametrize("fn", [sc.proxy_continue_stream, sc.proxy_close_stream])
@pytest.mark.parametrize("stream_type", [4, 5, 0x7FFFFFFF, 0xFFFFFFFF])
def test_stream_type_above_3_is_bad_argument(abi, fn, stream_type):
    ctx = abi.http_context()
    with abi.on(ctx):
        assert fn(abi.vm, stream_type) == Status.BAD_ARGUMENT
    assert actions(abi) == []


@pytest.mark.parametrize("fn", [sc.proxy_continue_stream, sc.proxy_close_stream])
@pytest.mark.parametrize("stream_type", [0, 1, 2, 3])
def test_stream_control_on_the_root_context_is_bad_argument(abi, fn, stream_type):
    with abi.on(abi.root):
        assert fn(abi.vm, stream_type) == Status.BAD_ARGUMENT
    assert actions(abi) == []


def test_continue_of_a_tcp_direction_on_an_http_stream_is_bad_argument(abi):
    http = abi.http_context()
    tcp = abi.vm.new_tcp_context(abi.root)
    with abi.on(http):
        assert sc.proxy_continue_stream(abi.vm, int(StreamType.DOWNSTREAM)) == Status.BAD_ARGUMENT
    with abi.on(tcp):
        assert sc.proxy_continue_stream(abi.vm, int(StreamType.HTTP_REQUEST)) == Status.BAD_ARGUMENT
    assert actions(abi) == []


@pytest.mark.parametrize("stream", [StreamType.HTTP_REQUEST, StreamType.HTTP_RESPONSE])
def test_close_stream_records_a_deferred_close(abi, stream):
    ctx = abi.http_context()
    with abi.on(ctx):
        assert sc.proxy_close_stream(abi.vm, int(stream)) == Status.OK
    assert actions(abi) == [("close", ctx, stream)]


@pytest.mark.parametrize("stream", [StreamType.DOWNSTREAM, StreamType.UPSTREAM])
def test_close_stream_with_a_tcp_type_on_an_http_stream_is_ignored(abi, stream):
    ctx = abi.http_context()
    with abi.on(ctx):
        assert sc.proxy_close_stream(abi.vm, int(stream)) == Status.OK
    assert actions(abi) == []


# -- 0.1.0 ----------------------------------------------------------------------------


def test_0_1_0_continue_request_and_response_record_continues(abi):
    ctx = abi.http_context()
    with abi.on(ctx):
        assert sc.proxy_continue_request(abi.vm) == Status.OK
        assert sc.proxy_continue_response(abi.vm) == Status.OK
    assert actions(abi) == [
        ("continue", ctx, StreamType.HTTP_REQUEST),
        ("continue", ctx, StreamType.HTTP_RESPONSE),
    ]


def test_0_1_0_clear_route_cache_marks_the_stream_and_is_ok_anywhere(abi):
    ctx = abi.http_context()
    with abi.on(ctx):
        assert sc.proxy_clear_route_cache(abi.vm) == Status.OK
    assert ctx.route_cache_dirty is True
    with abi.on(abi.root):
        assert sc.proxy_clear_route_cache(abi.vm) == Status.OK
    assert actions(abi) == []


def test_0_1_0_module_gets_ok_from_its_version_specific_calls_end_to_end(start_vm):
    host, vm, root = start_vm(wat_modules.make_abi_0_1_0_module())
    ctx = vm.new_http_context(root)
    headers = HeaderMap([(f"h{i}", "v") for i in range(99)])
    assert ctx.on_request_headers(headers, True) == Action.CONTINUE
    lines = [r.message for r in host.logs if r.source == "plugin"]
    assert "0.1.0 calls: continue_request=0 continue_response=0 clear_route_cache=0" in lines
    assert ctx.route_cache_dirty is True


# -- send_local_response ------------------------------------------------------------------


def test_local_response_is_recorded_with_every_field(abi):
    ctx = abi.http_context()
    headers = encode_pairs([(b"X-Reason", b"Denied"), (b"Set-Cookie", b"a=1")])
    with abi.on(ctx):
        st = local_reply(abi, 403, b"blocked by plugin", b"no entry", headers, NO_GRPC)
    assert st == Status.OK
    assert ctx.local_response == LocalResponse(
        status=403,
        details="blocked_by_plugin",
        body=b"no entry",
        headers=[(b"x-reason", b"Denied"), (b"set-cookie", b"a=1")],
        grpc_status=None,
    )
    assert actions(abi) == [("local_reply", ctx, None)]


def test_local_response_details_replace_each_whitespace_character(abi):
    # Envoy's StringUtil::replaceAllEmptySpace: one "_" per whitespace character.
    ctx = abi.http_context()
    with abi.on(ctx):
        assert local_reply(abi, 400, b" a  b\tc\r\nd ") == Status.OK
    assert ctx.local_response.details == "_a__b_c__d_"


@pytest.mark.parametrize(
    ("grpc", "expected"),
    [(NO_GRPC, None), (0, 0), (14, 14), (16, 16), (17, None), (0xFFFFFFFE, None)],
)
def test_local_response_grpc_status_is_read_as_signed(abi, grpc, expected):
    ctx = abi.http_context()
    with abi.on(ctx):
        assert local_reply(abi, 200, grpc=grpc) == Status.OK
    assert ctx.local_response.grpc_status == expected


def test_local_response_with_empty_details_body_and_headers(abi):
    ctx = abi.http_context()
    with abi.on(ctx):
        assert sc.proxy_send_local_response(abi.vm, 204, 0, 0, 0, 0, 0, 0, NO_GRPC) == Status.OK
    assert ctx.local_response == LocalResponse(204, "", b"", [], None)


def test_a_second_local_response_is_bad_argument_and_keeps_the_first(abi):
    ctx = abi.http_context()
    with abi.on(ctx):
        assert local_reply(abi, 403, body=b"first") == Status.OK
        assert local_reply(abi, 500, body=b"second") == Status.BAD_ARGUMENT
    assert (ctx.local_response.status, ctx.local_response.body) == (403, b"first")
    assert actions(abi) == [("local_reply", ctx, None)]


@pytest.mark.parametrize("status", [0, 99, 1000, 0xFFFFFFFF])
def test_nonsensical_status_codes_are_bad_argument(abi, status):
    ctx = abi.http_context()
    with abi.on(ctx):
        assert local_reply(abi, status) == Status.BAD_ARGUMENT
    assert ctx.local_response is None
    assert actions(abi) == []


@pytest.mark.parametrize("status", [100, 999])
def test_status_code_range_bounds_are_accepted(abi, status):
    ctx = abi.http_context()
    with abi.on(ctx):
        assert local_reply(abi, status) == Status.OK
    assert ctx.local_response.status == status


def test_malformed_local_response_headers_are_bad_argument(abi):
    ctx = abi.http_context()
    bad = encode_pairs([(b"a", b"1")]) + b"junk"
    with abi.on(ctx):
        assert local_reply(abi, 403, headers=bad) == Status.BAD_ARGUMENT
    assert ctx.local_response is None
    assert actions(abi) == []


def test_local_response_after_response_headers_were_released_is_bad_argument(abi):
    ctx = abi.http_context()
    ctx.response.headers = HeaderMap([(":status", "200")])
    ctx.response.headers_state = MapState.RELEASED
    with abi.on(ctx):
        assert local_reply(abi, 500) == Status.BAD_ARGUMENT
    assert ctx.local_response is None


def test_local_response_while_response_headers_are_active_is_allowed(abi):
    ctx = abi.http_context()
    ctx.response.headers = HeaderMap([(":status", "200")])
    ctx.response.headers_state = MapState.ACTIVE
    with abi.on(ctx):
        assert local_reply(abi, 502) == Status.OK
    assert ctx.local_response.status == 502


def test_local_response_on_a_root_or_finished_context_is_bad_argument(abi):
    with abi.on(abi.root):
        assert local_reply(abi, 403) == Status.BAD_ARGUMENT
    ctx = abi.http_context()
    ctx.done = True
    with abi.on(ctx):
        assert local_reply(abi, 403) == Status.BAD_ARGUMENT
    assert ctx.local_response is None
    assert actions(abi) == []


# -- LocalResponse.response_headers (what the response path sees, §6.2) -------------------


def test_response_headers_of_a_plain_reply_with_a_body():
    lr = LocalResponse(403, "d", b"denied", [(b"x-a", b"1")], None)
    assert lr.response_headers().items() == [
        (b":status", b"403"),
        (b"content-length", b"6"),
        (b"content-type", b"text/plain"),
        (b"x-a", b"1"),
    ]


def test_response_headers_keep_the_plugins_content_type():
    lr = LocalResponse(200, "", b"{}", [(b"content-type", b"application/json")], None)
    assert lr.response_headers().items() == [
        (b":status", b"200"),
        (b"content-length", b"2"),
        (b"content-type", b"application/json"),
    ]


def test_response_headers_of_an_empty_reply_have_zero_content_length():
    lr = LocalResponse(204, "", b"", [], None)
    assert lr.response_headers().items() == [(b":status", b"204"), (b"content-length", b"0")]


def test_response_headers_of_a_grpc_reply_carry_status_and_message():
    lr = LocalResponse(200, "", b"unavailable", [], 14)
    m = lr.response_headers()
    assert m.get("grpc-status") == b"14"
    assert m.get("grpc-message") == b"unavailable"
    assert m.get(":status") == b"200"
