"""Issue 13 item 7: plugin headers cannot split a response or smuggle a request.

Every header-setting host function refuses CR, LF and NUL in values and non-token
names (BAD_ARGUMENT); pseudo-headers are allowed names. Called on a real VM
(``abi`` harness), then once end to end through the proxy.
"""

from __future__ import annotations

import json

import pytest

from host.wasm.abi import callouts as co
from host.wasm.abi import stream_control as sc
from host.wasm.pairs import HeaderMap, encode_pairs
from host.wasm.types import Status
from tests.host.proxy.conftest import make_config, raw_exchange, wasm_plugin
from tests.host.security.hostile_wat import hostile_module
from tests.host.wasm.test_header_maps import activate, add, replace, set_pairs

REQ, RESP = 0, 2
BAD_VALUES = [b"1\r\nx-injected: 1", b"1\nx", b"1\rx", b"a\0b"]
BAD_NAMES = [b"x a", b"x:y", b"", b"x\r\ny", b":foo", b"x(y)", b"\xffx"]
PSEUDO = [b":path", b":method", b":authority", b":scheme", b":status"]


@pytest.mark.parametrize("value", BAD_VALUES)
@pytest.mark.parametrize("fn", [add, replace])
def test_add_and_replace_refuse_cr_lf_nul_values(abi, fn, value):
    ctx = abi.http_context()
    m = activate(ctx, REQ, [(b"x-a", b"0")])
    with abi.on(ctx):
        assert fn(abi, REQ, b"x-a", value) == Status.BAD_ARGUMENT
        assert fn(abi, REQ, b":path", b"/p" + value) == Status.BAD_ARGUMENT
    assert m.get(b"x-a") == b"0" and m.get(b"x-injected") is None


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("fn", [add, replace])
def test_add_and_replace_refuse_non_token_names(abi, fn, name):
    ctx = abi.http_context()
    m = activate(ctx, RESP, [(b":status", b"200")])
    with abi.on(ctx):
        assert fn(abi, RESP, name, b"v") == Status.BAD_ARGUMENT
    assert encode_pairs(m) == encode_pairs(HeaderMap([(b":status", b"200")]))


@pytest.mark.parametrize("name", PSEUDO)
def test_pseudo_headers_are_allowed_names(abi, name):
    ctx = abi.http_context()
    m = activate(ctx, REQ, [])
    with abi.on(ctx):
        assert replace(abi, REQ, name, b"/ok") == Status.OK
    assert m.get(name) == b"/ok"


def test_set_pairs_is_all_or_nothing(abi):
    ctx = abi.http_context()
    m = activate(ctx, REQ, [(b"x-a", b"0")])
    with abi.on(ctx):
        bad = encode_pairs([(b"x-ok", b"1"), (b"x-b", b"2\r\nx-injected: 1")])
        assert set_pairs(abi, REQ, bad) == Status.BAD_ARGUMENT
        assert set_pairs(abi, REQ, encode_pairs([(b"bad name", b"1")])) == Status.BAD_ARGUMENT
        assert set_pairs(abi, REQ, encode_pairs([(b"x-ok", b"\xff\x01")])) == Status.OK
    assert m.get(b"x-ok") == b"\xff\x01" and m.get(b"x-a") is None


def _local_reply(abi, headers: bytes) -> int:
    d, b, hp = abi.put(b"d"), abi.put(b"body"), abi.put(headers)
    return sc.proxy_send_local_response(abi.vm, 403, d, 1, b, 4, hp, len(headers), 0xFFFFFFFF)


def test_send_local_response_refuses_split_headers(abi):
    ctx = abi.http_context()
    with abi.on(ctx):
        bad = encode_pairs([(b"x-a", b"1\r\n\r\nHTTP/1.1 200 OK")])
        assert _local_reply(abi, bad) == Status.BAD_ARGUMENT
        assert _local_reply(abi, encode_pairs([(b"x a", b"1")])) == Status.BAD_ARGUMENT
        assert ctx.local_response is None
        assert _local_reply(abi, encode_pairs([(b"x-a", b"1")])) == Status.OK
    assert ctx.local_response is not None


class _Dispatcher:
    def __init__(self) -> None:
        self.calls: list[object] = []

    def has_cluster(self, name: str) -> bool:
        return True

    def dispatch(self, call, done) -> None:
        self.calls.append(call)

    def cancel(self, call) -> None:
        pass


def _http_call(abi, headers: list[tuple[bytes, bytes]], trailers=()) -> int:
    c, h, t = abi.put(b"c"), abi.put(encode_pairs(headers)), abi.put(encode_pairs(trailers))
    hl, tl = len(encode_pairs(headers)), len(encode_pairs(trailers))
    return co.proxy_http_call(abi.vm, c, 1, h, hl, 0, 0, t, tl, 100, abi.slot(4))


GOOD = [(b":method", b"GET"), (b":path", b"/x"), (b":authority", b"a")]


@pytest.mark.parametrize(
    "headers,trailers",
    [
        ([*GOOD, (b"x-a", b"1\r\nx-injected: 1")], []),
        ([(b":method", b"GET"), (b":path", b"/x\r\nx-injected: 1"), (b":authority", b"a")], []),
        ([(b":method", b"GET"), (b":path", b"/x"), (b":authority", b"a\r\nb")], []),
        ([*GOOD, (b"bad name", b"1")], []),
        (GOOD, [(b"x-t", b"1\n2")]),
    ],
)
def test_http_call_refuses_bad_headers_and_trailers(abi, headers, trailers):
    d = _Dispatcher()
    abi.host.http = d
    with abi.on(abi.root):
        assert _http_call(abi, headers, trailers) == Status.BAD_ARGUMENT
        assert d.calls == []
        assert _http_call(abi, GOOD) == Status.OK
    assert len(d.calls) == 1


def test_grpc_initial_metadata_and_names_are_checked(abi):
    def call(md: list[tuple[bytes, bytes]], service: bytes = b"svc") -> int:
        u, s, m = abi.put(b"c"), abi.put(service), abi.put(b"M")
        raw = encode_pairs(md)
        p = abi.put(raw)
        return co.proxy_grpc_stream(abi.vm, u, 1, s, len(service), m, 1, p, len(raw), abi.slot(4))

    with abi.on(abi.root):
        assert call([(b"x-a", b"1\r\nx: y")]) == Status.BAD_ARGUMENT
        assert call([(b"x a", b"1")]) == Status.BAD_ARGUMENT
        assert call([], service=b"svc/../admin") == Status.BAD_ARGUMENT
        # valid input reaches the dispatcher (none ships yet: INTERNAL_FAILURE)
        assert call([(b"x-a", b"1")]) == Status.INTERNAL_FAILURE


def test_a_split_header_never_reaches_the_wire(start_proxy, wasm_file):
    # The plugin tries a response split on the request and on the response.
    mod = hostile_module(
        data={1024: b"x-a", 1040: b"1\r\nx-injected: 1", 1100: b":path", 1120: b"/\r\nx-sm: 1"},
        request_headers="""
    (call $set_num (i32.const 1024) (i32.const 3)
      (call $add_hdr (i32.const 0) (i32.const 1024) (i32.const 3)
                     (i32.const 1040) (i32.const 16)))
    (drop (call $rep_hdr (i32.const 0) (i32.const 1100) (i32.const 5)
                         (i32.const 1120) (i32.const 10)))
    (i32.const 0)""",
    )
    h = start_proxy(make_config(wasm_plugin("hostile", wasm_file(mod, "hostile"))))
    (r,) = raw_exchange(h, b"GET /p HTTP/1.1\r\nhost: x\r\n\r\n")
    assert r.status == 200
    echoed = json.loads(r.body)
    assert echoed["headers"]["x-a"] == str(int(Status.BAD_ARGUMENT))  # the add was refused
    assert echoed["path"] == "/p"
    assert b"x-injected" not in r.body and b"x-sm" not in r.body
    assert r.header("x-injected") is None
