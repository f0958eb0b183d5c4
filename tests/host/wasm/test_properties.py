"""proxy_get_property / proxy_set_property and Envoy's attribute catalogue (ABI doc §2.2
"Properties", §5.2-5.4)."""

from __future__ import annotations

import struct

import pytest

from host.tls_info import CertFacts, TlsInfo
from host.wasm.abi import properties
from host.wasm.context import MapState, StreamInfo
from host.wasm.node import Node
from host.wasm.pairs import HeaderMap, encode_pairs
from host.wasm.types import Status
from tests.fixtures import wat_modules
from tests.host.wasm.conftest import AbiHarness

SENTINEL = 0xAAAAAAAA
START_NS = 1_700_000_000_123_456_789


def i64(v: int) -> bytes:
    return struct.pack("<q", v)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def get(abi, path: bytes):
    p = abi.put(path)
    rp = abi.put(SENTINEL.to_bytes(4, "little"))
    rs = abi.put(SENTINEL.to_bytes(4, "little"))
    st = properties.proxy_get_property(abi.vm, p, len(path), rp, rs)
    if (abi.u32(rp), abi.u32(rs)) == (SENTINEL, SENTINEL):
        return st, None
    return st, abi.returned(rp, rs)


def set_(abi, path: bytes, value: bytes):
    p, v = abi.put(path), abi.put(value)
    return properties.proxy_set_property(abi.vm, p, len(path), v, len(value))


def path(*segments: str) -> bytes:
    return b"\0".join(s.encode() for s in segments)


@pytest.fixture
def pabi(start_vm):
    host, vm, root = start_vm(
        wat_modules.make_missing_callbacks_module(), root_id="my-root", vm_id="vm-7"
    )
    return AbiHarness(host, vm, root)


@pytest.fixture
def stream(pabi):
    info = StreamInfo(
        source_address="10.0.0.5:43210",
        destination_address="127.0.0.1:10000",
        connection_id=0x1_0000_0002,
        protocol="HTTP/2",
        start_time_ns=START_NS,
        request_id="rid-from-info",
        cluster_name="backend",
        route_name="r1",
        node=Node(id="node-a", cluster="cl-a"),
    )
    ctx = pabi.http_context(info)
    ctx.request.headers = HeaderMap(
        [
            (":method", "POST"),
            (":path", "/api/v1?x=1&y=2"),
            (":authority", "example.com"),
            (":scheme", "https"),
            ("Accept", "a"),
            ("accept", "b"),
            ("user-agent", "ua/1"),
            ("x-request-id", "rid-hdr"),
        ]
    )
    ctx.request.headers_state = MapState.ACTIVE
    return ctx


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        (("request", "path"), b"/api/v1?x=1&y=2"),
        (("request", "url_path"), b"/api/v1"),
        (("request", "query"), b"x=1&y=2"),
        (("request", "method"), b"POST"),
        (("request", "host"), b"example.com"),
        (("request", "scheme"), b"https"),
        (("request", "useragent"), b"ua/1"),
        (("request", "protocol"), b"HTTP/2"),
        (("request", "id"), b"rid-hdr"),
        (("request", "time"), i64(START_NS)),
        (("request", "headers", "accept"), b"a,b"),
        (("request", "headers", "User-Agent"), b"ua/1"),
        (("source", "address"), b"10.0.0.5:43210"),
        (("source", "port"), i64(43210)),
        (("destination", "address"), b"127.0.0.1:10000"),
        (("destination", "port"), i64(10000)),
        (("connection", "id"), u64(0x1_0000_0002)),
        (("connection_id",), u64(0x1_0000_0002)),
        (("connection", "mtls"), b"\x00"),
        (("plugin_name",), b"my-root"),
        (("plugin_root_id",), b"my-root"),
        (("plugin_vm_id",), b"vm-7"),
        (("xds", "node", "id"), b"node-a"),
        (("node", "id"), b"node-a"),
        (("xds", "cluster_name"), b"backend"),
        (("cluster_name",), b"backend"),
        (("xds", "route_name"), b"r1"),
        (("route_name",), b"r1"),
    ],
    ids=lambda v: ".".join(v) if isinstance(v, tuple) else None,
)
def test_attribute_has_envoys_encoding(pabi, stream, segments, expected):
    with pabi.on(stream):
        assert get(pabi, path(*segments)) == (Status.OK, expected)


def test_request_headers_map_is_pairs_encoded_with_duplicates_comma_joined(pabi, stream):
    with pabi.on(stream):
        st, data = get(pabi, path("request", "headers"))
    assert st == Status.OK
    assert data == encode_pairs(
        [
            (b":method", b"POST"),
            (b":path", b"/api/v1?x=1&y=2"),
            (b":authority", b"example.com"),
            (b":scheme", b"https"),
            (b"accept", b"a,b"),
            (b"user-agent", b"ua/1"),
            (b"x-request-id", b"rid-hdr"),
        ]
    )


def test_request_id_falls_back_to_the_stream_info(pabi, stream):
    stream.request.headers.remove("x-request-id")
    with pabi.on(stream):
        assert get(pabi, path("request", "id")) == (Status.OK, b"rid-from-info")


def test_request_host_falls_back_to_the_host_header(pabi, stream):
    stream.request.headers.remove(":authority")
    stream.request.headers.add("Host", "h.example")
    with pabi.on(stream):
        assert get(pabi, path("request", "host")) == (Status.OK, b"h.example")


def test_request_query_without_a_query_string_is_ok_and_empty(pabi, stream):
    stream.request.headers.replace(":path", "/plain")
    with pabi.on(stream):
        assert get(pabi, path("request", "query")) == (Status.OK, b"")
        assert get(pabi, path("request", "url_path")) == (Status.OK, b"/plain")


def test_request_attributes_stay_readable_after_headers_were_forwarded(pabi, stream):
    stream.request.headers_state = MapState.RELEASED
    with pabi.on(stream):
        assert get(pabi, path("request", "path")) == (Status.OK, b"/api/v1?x=1&y=2")


def test_response_code_is_not_found_before_and_an_int_after_response_headers(pabi, stream):
    with pabi.on(stream):
        assert get(pabi, path("response", "code")) == (Status.NOT_FOUND, None)
        stream.response.headers = HeaderMap([(":status", "503"), ("grpc-status", "14")])
        stream.response.headers_state = MapState.ACTIVE
        assert get(pabi, path("response", "code")) == (Status.OK, i64(503))
        assert get(pabi, path("response", "grpc_status")) == (Status.OK, i64(14))
        assert get(pabi, path("response", "headers", "grpc-status")) == (Status.OK, b"14")


def test_xds_node_without_a_field_is_a_protobuf_message(pabi, stream):
    with pabi.on(stream):
        st, data = get(pabi, path("xds", "node"))
    # envoy.config.core.v3.Node: id (field 1), cluster (field 2), user_agent_name (6),
    # length-delimited.
    assert (st, data) == (Status.OK, b"\x0a\x06node-a\x12\x04cl-a\x32\x08wasmdesk")


_LOCAL = CertFacts("CN=proxy", ("proxy.local", "alt.local"), ("spiffe://td/ns/a/sa/proxy",))
_PEER = CertFacts("CN=client,O=Acme", (), ("spiffe://td/ns/b/sa/c",), "ab" * 32, "-----BEGIN%20X")


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        (("connection", "mtls"), b"\x01"),
        (("connection", "requested_server_name"), b"api.example"),
        (("connection", "tls_version"), b"TLSv1.3"),
        (("connection", "subject_local_certificate"), b"CN=proxy"),
        (("connection", "subject_peer_certificate"), b"CN=client,O=Acme"),
        (("connection", "dns_san_local_certificate"), b"proxy.local"),  # the first
        (("connection", "dns_san_peer_certificate"), None),  # none: absent, as Envoy
        (("connection", "uri_san_local_certificate"), b"spiffe://td/ns/a/sa/proxy"),
        (("connection", "uri_san_peer_certificate"), b"spiffe://td/ns/b/sa/c"),
        (("connection", "sha256_peer_certificate_digest"), b"ab" * 32),
        (("connection", "peer_certificate"), b"-----BEGIN%20X"),
        (("upstream", "tls_version"), b"TLSv1.2"),
        (("upstream", "subject_local_certificate"), b""),  # no certificate of ours
        (("upstream", "subject_peer_certificate"), b"CN=proxy"),
        (("upstream", "sha256_peer_certificate_digest"), None),
    ],
    ids=lambda v: ".".join(v) if isinstance(v, tuple) else None,
)
def test_tls_attributes_read_the_connections_tls_facts(pabi, stream, segments, expected):
    stream.info.tls = TlsInfo("TLSv1.3", "api.example", "http/1.1", local=_LOCAL, peer=_PEER)
    stream.info.upstream_tls = TlsInfo("TLSv1.2", "backend", peer=CertFacts("CN=proxy"))
    with pabi.on(stream):
        if expected is None:
            assert get(pabi, path(*segments)) == (Status.NOT_FOUND, None)
        else:
            assert get(pabi, path(*segments)) == (Status.OK, expected)


def test_plain_tcp_has_only_mtls_and_the_server_name_of_the_tls_fields(pabi, stream):
    with pabi.on(stream):
        assert get(pabi, path("connection", "mtls")) == (Status.OK, b"\x00")
        assert get(pabi, path("connection", "requested_server_name")) == (Status.OK, b"")
        for field in ("tls_version", "subject_local_certificate", "subject_peer_certificate"):
            assert get(pabi, path("connection", field)) == (Status.NOT_FOUND, None)
            assert get(pabi, path("upstream", field)) == (Status.NOT_FOUND, None)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"nope", id="unknown_top_level"),
        pytest.param(path("request", "nope"), id="unknown_request_field"),
        pytest.param(path("connection", "tls_version"), id="absent_tls_field"),
        pytest.param(path("request", "headers", "x-absent"), id="absent_header"),
        pytest.param(b"request.path", id="dotted_name_is_one_segment"),
        pytest.param(b"\0", id="lone_nul"),
    ],
)
def test_unknown_or_absent_property_is_not_found(pabi, stream, raw):
    with pabi.on(stream):
        assert get(pabi, raw) == (Status.NOT_FOUND, None)


@pytest.mark.parametrize("top", ["request", "response", "source", "xds", "filter_state"])
def test_a_wrapper_attribute_without_a_field_is_a_serialization_failure(pabi, stream, top):
    # Envoy's request/response/... wrappers and filter_state cannot list their keys.
    with pabi.on(stream):
        assert get(pabi, path(top)) == (Status.SERIALIZATION_FAILURE, None)


def test_empty_path_is_not_found(pabi, stream):
    rp = pabi.put(SENTINEL.to_bytes(4, "little"))
    rs = pabi.put(SENTINEL.to_bytes(4, "little"))
    with pabi.on(stream):
        assert properties.proxy_get_property(pabi.vm, 0, 0, rp, rs) == Status.NOT_FOUND
    assert (pabi.u32(rp), pabi.u32(rs)) == (SENTINEL, SENTINEL)


def test_a_trailing_nul_in_the_path_is_tolerated(pabi, stream):
    with pabi.on(stream):
        assert get(pabi, b"request\0path\0") == (Status.OK, b"/api/v1?x=1&y=2")
        assert get(pabi, b"plugin_root_id\0") == (Status.OK, b"my-root")


def test_root_context_has_no_request_attributes_but_has_plugin_and_node_ones(pabi):
    with pabi.on(pabi.root):
        assert get(pabi, path("request", "path")) == (Status.NOT_FOUND, None)
        assert get(pabi, path("source", "address")) == (Status.NOT_FOUND, None)
        assert get(pabi, path("response", "code")) == (Status.NOT_FOUND, None)
        assert get(pabi, path("plugin_root_id")) == (Status.OK, b"my-root")
        assert get(pabi, path("plugin_vm_id")) == (Status.OK, b"vm-7")
        assert get(pabi, path("xds", "node", "id")) == (Status.OK, b"wasmdesk")


def test_tcp_context_has_connection_attributes_but_no_request(pabi):
    ctx = pabi.vm.new_tcp_context(pabi.root, StreamInfo(source_address="[::1]:5555"))
    ctx.created = True
    with pabi.on(ctx):
        assert get(pabi, path("request", "path")) == (Status.NOT_FOUND, None)
        assert get(pabi, path("source", "address")) == (Status.OK, b"[::1]:5555")
        assert get(pabi, path("source", "port")) == (Status.OK, i64(5555))
        assert get(pabi, path("connection", "id")) == (Status.OK, u64(1))


# -- set_property ------------------------------------------------------------------------


def test_set_property_round_trips_on_a_stream_context(pabi, stream):
    with pabi.on(stream):
        assert set_(pabi, b"my_state", b"\x00\xffvalue") == Status.OK
        assert get(pabi, b"my_state") == (Status.OK, b"\x00\xffvalue")
        assert set_(pabi, b"my_state", b"v2") == Status.OK
        assert get(pabi, b"my_state") == (Status.OK, b"v2")
    # kept as Envoy keeps it: filter state "wasm.<name>"
    assert stream.filter_state == {b"wasm.my_state": b"v2"}


def test_set_property_with_a_trailing_nul_is_read_back_without_it(pabi, stream):
    with pabi.on(stream):
        assert set_(pabi, b"k\0", b"v") == Status.OK
        assert get(pabi, b"k") == (Status.OK, b"v")


def test_set_property_is_per_stream(pabi, stream):
    other = pabi.http_context()
    with pabi.on(stream):
        assert set_(pabi, b"k", b"v") == Status.OK
    with pabi.on(other):
        assert get(pabi, b"k") == (Status.NOT_FOUND, None)


def test_set_property_on_the_root_context_is_not_found(pabi):
    with pabi.on(pabi.root):
        assert set_(pabi, b"k", b"v") == Status.NOT_FOUND
        assert get(pabi, b"k") == (Status.NOT_FOUND, None)
    assert pabi.root.filter_state == {}


@pytest.mark.parametrize(
    "name",
    [path("request", "path"), path("plugin_name"), path("source", "address")],
    ids=["request.path", "plugin_name", "source.address"],
)
def test_set_property_cannot_shadow_a_built_in_attribute(pabi, stream, name):
    # Envoy resolves attribute names first; filter state "wasm.<name>" is only the
    # fallback for names that are not attributes.
    with pabi.on(stream):
        before = get(pabi, name)
        assert before[0] == Status.OK
        assert set_(pabi, name, b"spoofed") == Status.OK
        assert get(pabi, name) == before
