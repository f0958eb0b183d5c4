"""gRPC end to end through the proxy: a real grpcio server on 127.0.0.1 behind a
``grpc://`` cluster (the proxy forwards over HTTP/2, host/proxy/upstream_h2.py) with
a plugin in the chain that reads ``grpc-status`` (a response trailer, or a header of a
trailers-only answer), adds ``x-grpc-status-seen`` beside it and logs it.

Clients: a raw HTTP/1.1 client (gRPC framing over HTTP/1.1; the response's trailers
come back chunked), and a real grpcio client once the listener speaks HTTP/2 with
prior knowledge (the h2c downstream; those tests skip while it does not).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from tests.fixtures.wat_modules import compile_wat

from .conftest import ProxyHarness, connect, make_config, wasm_plugin
from .grpc_echo_server import EchoServer

_GRPC_STATUS_WAT = """
(module
  (import "env" "proxy_get_header_map_value"
    (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value"
    (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response"
    (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "grpc-status")         ;; 11
  (data (i32.const 1040) "x-grpc-status-seen")  ;; 18
  (data (i32.const 1072) "x-local-reply")       ;; 13
  (data (i32.const 1088) "denied by plugin")    ;; 16
  (data (i32.const 1120) "grpc-status=")        ;; 12
  (global $heap (mut i32) (i32.const 65536))
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $n)
      (i32.const 7)) (i32.const -8))))
    (if (i32.gt_u (global.get $heap) (i32.const 131000))
      (then (global.set $heap (i32.const 65536)) (local.set $p (i32.const 65536))))
    (local.get $p))
  ;; map has grpc-status: add x-grpc-status-seen with its value to the map, log it
  (func $seen (param $map i32)
    (local $p i32) (local $n i32)
    (if (i32.eqz (call $get (local.get $map) (i32.const 1024) (i32.const 11)
                            (i32.const 256) (i32.const 260)))
      (then
        (local.set $p (i32.load (i32.const 256)))
        (local.set $n (i32.load (i32.const 260)))
        (drop (call $add (local.get $map) (i32.const 1040) (i32.const 18)
                         (local.get $p) (local.get $n)))
        (memory.copy (i32.const 2048) (i32.const 1120) (i32.const 12))
        (memory.copy (i32.const 2060) (local.get $p) (local.get $n))
        (drop (call $log (i32.const 2) (i32.const 2048)
                         (i32.add (i32.const 12) (local.get $n)))))))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (i32.eqz (call $get (i32.const 0) (i32.const 1072) (i32.const 13)
                            (i32.const 256) (i32.const 260)))
      (then
        (drop (call $reply (i32.const 403) (i32.const 0) (i32.const 0)
                           (i32.const 1088) (i32.const 16) (i32.const 0) (i32.const 0)
                           (i32.const -1)))
        (return (i32.const 1))))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (call $seen (i32.const 2))
    (i32.const 0))
  (func (export "proxy_on_response_trailers") (param i32 i32) (result i32)
    (call $seen (i32.const 3))
    (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32))
)
"""


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    srv = EchoServer()
    yield srv
    srv.stop()


@pytest.fixture
def proxy(
    start_proxy: Callable[..., ProxyHarness],
    wasm_file: Callable[[bytes, str], str],
    echo: EchoServer,
) -> ProxyHarness:
    path = wasm_file(compile_wat(_GRPC_STATUS_WAT, "grpc_status"), "grpc_status")
    return start_proxy(
        make_config(
            wasm_plugin("grpc-status", path, root_id="grpc-status"),
            clusters={"echo": f"grpc://127.0.0.1:{echo.port}"},
            default_cluster="echo",
        )
    )


def frame(msg: bytes) -> bytes:
    return b"\0" + struct.pack(">I", len(msg)) + msg


class Http1Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, trailers: dict[str, str]):
        self.status, self.headers, self.body, self.trailers = status, headers, body, trailers


def http1_grpc(h: ProxyHarness, method: str, body: bytes, **headers: str) -> Http1Answer:
    """A gRPC call framed over HTTP/1.1 (what a gRPC-Web-ish client or curl could send);
    reads the response with its chunked trailers."""
    extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    with connect(h) as s:
        s.sendall(
            (
                f"POST /test.Echo/{method} HTTP/1.1\r\nhost: echo.local\r\n"
                f"content-type: application/grpc\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
            ).encode()
            + body
        )
        f = s.makefile("rb")
        status = int(f.readline().split()[1])
        hd: dict[str, str] = {}
        while (ln := f.readline()) not in (b"\r\n", b""):
            k, _, v = ln.decode("latin-1").partition(":")
            hd[k.strip().lower()] = v.strip()
        out, trailers = b"", {}
        if "chunked" in hd.get("transfer-encoding", ""):
            while (size := int(f.readline().strip(), 16)) != 0:
                out += f.read(size)
                f.readline()
            while (ln := f.readline()) not in (b"\r\n", b""):
                k, _, v = ln.decode("latin-1").partition(":")
                trailers[k.strip().lower()] = v.strip()
        elif "content-length" in hd:
            out = f.read(int(hd["content-length"]))
        return Http1Answer(status, hd, out, trailers)


def plugin_logs(h: ProxyHarness) -> list[str]:
    return h.sync(lambda: [r.message for _seq, r in h.server.logs])


def last_record(h: ProxyHarness) -> dict[str, Any]:
    recs = h.wait_for(lambda: h.records(), what="a request record")
    rec: dict[str, Any] = recs[-1].to_dict()
    return rec


# -- HTTP/1.1 client → proxy → HTTP/2 → grpcio -------------------------------------------------


def test_unary_call_passes_and_the_plugin_reads_grpc_status_from_the_trailers(
    proxy: ProxyHarness, echo: EchoServer
) -> None:
    a = http1_grpc(proxy, "Unary", frame(b"hi"), x_probe="e2e")
    assert a.status == 200
    assert a.headers["x-srv"] == "unary"
    assert a.body == frame(b"echo:hi")
    assert a.trailers["grpc-status"] == "0"
    assert a.trailers["seen-x-probe"] == "e2e"  # the request's metadata reached the server
    assert a.trailers["x-grpc-status-seen"] == "0"  # added by the plugin's trailers callback
    assert echo.seen_authority[-1] == "echo.local"
    rec = proxy.wait_for(
        lambda: (r := last_record(proxy))["grpc_status"] is not None and r, what="grpc record"
    )
    assert rec["grpc_status"] == 0 and rec["status"] == 200
    assert proxy.wait_for(lambda: "grpc-status=0" in plugin_logs(proxy), what="plugin log")
    names = [c["name"] for c in rec["hops"][0]["callbacks"]]
    assert "proxy_on_response_trailers" in names


def test_error_status_comes_back_as_trailers_to_client_plugin_and_record(
    proxy: ProxyHarness,
) -> None:
    a = http1_grpc(proxy, "Unary", frame(b"fail"))
    assert a.status == 200
    assert a.trailers["grpc-status"] == "5"
    assert a.trailers["grpc-message"] == "no such thing"
    assert a.trailers["x-grpc-status-seen"] == "5"
    rec = proxy.wait_for(
        lambda: (r := last_record(proxy))["grpc_status"] == 5 and r, what="grpc record"
    )
    assert rec["grpc_message"] == "no such thing"


def test_a_trailers_only_answer_carries_the_status_in_its_headers(proxy: ProxyHarness) -> None:
    a = http1_grpc(proxy, "NoSuchMethod", frame(b"x"))  # grpcio: UNIMPLEMENTED, trailers-only
    assert a.status == 200
    assert a.headers["grpc-status"] == "12"
    assert a.headers["x-grpc-status-seen"] == "12"  # the plugin saw it in the headers
    assert a.body == b"" and a.trailers == {}
    proxy.wait_for(lambda: last_record(proxy)["grpc_status"] == 12, what="grpc record")


def test_a_streaming_call_carries_every_message_and_the_trailers(proxy: ProxyHarness) -> None:
    a = http1_grpc(proxy, "Chat", frame(b"one") + frame(b"two"))
    assert a.status == 200
    assert a.headers["x-srv"] == "chat"
    assert a.body == frame(b"re:one") + frame(b"re:two") + frame(b"bye")
    assert a.trailers["x-count"] == "2"
    assert a.trailers["grpc-status"] == "0"
    assert a.trailers["x-grpc-status-seen"] == "0"


def test_the_grpc_timeout_deadline_reaches_the_server(proxy: ProxyHarness) -> None:
    t0 = time.monotonic()
    a = http1_grpc(proxy, "Unary", frame(b"slow"), grpc_timeout="200m")
    assert time.monotonic() - t0 < 1.5  # the server's 2 s sleep was cut short
    status = a.trailers.get("grpc-status") or a.headers.get("grpc-status")
    assert status == "4"  # DEADLINE_EXCEEDED


def _unreachable(start_proxy: Callable[..., ProxyHarness]) -> ProxyHarness:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return start_proxy(
        make_config(clusters={"gone": f"grpc://127.0.0.1:{port}"}, default_cluster="gone")
    )


def test_unreachable_grpc_cluster_is_503_connection_failure(
    start_proxy: Callable[..., ProxyHarness],
) -> None:
    h = _unreachable(start_proxy)
    with h.client() as c:
        r = c.get("/")  # not a gRPC request: the plain 503 (gRPC: UNAVAILABLE, below)
    assert r.status_code == 503
    assert r.text.startswith(
        "upstream connect error or disconnect/reset before headers. reset reason: "
        "connection failure"
    )
    stats = h.stats()
    assert stats["cluster.gone.upstream_rq_error"] == 1
    assert stats["cluster.gone.upstream_cx_connect_fail"] == 1


# -- grpcio client → proxy (h2c) → grpcio server -----------------------------------------------


def speaks_h2c(h: ProxyHarness) -> bool:
    """Whether the listener answers the HTTP/2 connection preface with a SETTINGS frame."""
    with connect(h, timeout=2.0) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        try:
            head = s.recv(9)
        except OSError:
            return False
    return len(head) == 9 and head[3] == 0x04


@pytest.fixture
def channel(proxy: ProxyHarness) -> Iterator[grpc.Channel]:
    if not speaks_h2c(proxy):
        pytest.skip("the listener does not speak HTTP/2 (h2c) yet: H20's downstream")
    ch = grpc.insecure_channel(f"127.0.0.1:{proxy.port}")
    yield ch
    ch.close()


def _unary(ch: grpc.Channel) -> Any:
    return ch.unary_unary("/test.Echo/Unary")


def test_grpcio_client_unary_and_stream_through_the_proxy(
    proxy: ProxyHarness, channel: grpc.Channel
) -> None:
    reply, call = _unary(channel).with_call(b"hello", metadata=(("x-probe", "grpcio"),), timeout=5)
    assert reply == b"echo:hello"
    md = dict(call.trailing_metadata())
    assert md["seen-x-probe"] == "grpcio"
    assert md["x-grpc-status-seen"] == "0"
    chat = channel.stream_stream("/test.Echo/Chat")
    assert list(chat(iter([b"a", b"b"]), timeout=5)) == [b"re:a", b"re:b", b"bye"]
    rec = last_record(proxy)
    assert rec["protocol"] == "HTTP/2" and rec["grpc_status"] == 0


def test_grpcio_client_sees_error_status_and_deadline(
    proxy: ProxyHarness, channel: grpc.Channel
) -> None:
    with pytest.raises(grpc.RpcError) as e:
        _unary(channel)(b"fail", timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert e.value.details() == "no such thing"
    with pytest.raises(grpc.RpcError) as e:
        _unary(channel)(b"slow", timeout=0.3)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_plugin_local_reply_arrives_as_the_mapped_grpc_status(
    proxy: ProxyHarness, channel: grpc.Channel
) -> None:
    with pytest.raises(grpc.RpcError) as e:
        _unary(channel)(b"x", metadata=(("x-local-reply", "1"),), timeout=5)
    # Envoy's HTTP → gRPC mapping: 403 is PERMISSION_DENIED
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert e.value.details() == "denied by plugin"


def test_a_lone_grpc_cluster_is_for_callouts_not_the_implicit_default(
    start_proxy: Callable[..., ProxyHarness], echo: EchoServer
) -> None:
    h = start_proxy(make_config(clusters={"echo": f"grpc://127.0.0.1:{echo.port}"}))
    with h.client() as c:
        r = c.get("/anything")
    assert r.status_code == 200  # the built-in echo upstream answered, not grpcio
    assert r.json()["path"] == "/anything"
    named = start_proxy(
        make_config(clusters={"echo": f"grpc://127.0.0.1:{echo.port}"}, default_cluster="echo")
    )
    assert http1_grpc(named, "Unary", frame(b"x")).body == frame(b"echo:x")
    dump = named.admin("GET", "/config_dump").json()
    assert [(c["name"], c["protocol"], c["tls"]) for c in dump["clusters"]] == [
        ("echo", "HTTP/2", False)
    ]


def test_grpcio_client_sees_unavailable_for_an_unreachable_cluster(
    start_proxy: Callable[..., ProxyHarness],
) -> None:
    h = _unreachable(start_proxy)
    if not speaks_h2c(h):
        pytest.skip("the listener does not speak HTTP/2 (h2c) yet: H20's downstream")
    with grpc.insecure_channel(f"127.0.0.1:{h.port}") as ch, pytest.raises(grpc.RpcError) as e:
        _unary(ch)(b"x", timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE  # Envoy's mapping of the 503
    assert "connection failure" in (e.value.details() or "")


def test_grpcio_server_speaks_first_before_the_client_sent_a_message(
    proxy: ProxyHarness, channel: grpc.Channel, echo: EchoServer
) -> None:
    # the request's headers must reach the server before any message does, and the
    # server's initial metadata the client before any message
    release = threading.Event()

    def nothing_yet() -> Iterator[bytes]:
        release.wait(2)
        yield from ()

    call = channel.stream_stream("/test.Echo/Hold")(nothing_yet(), timeout=2)
    try:
        assert dict(call.initial_metadata())["x-srv"] == "hold"
    finally:
        call.cancel()
        release.set()
