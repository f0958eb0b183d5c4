"""HTTP/2 on the listener (issue 9 §2): h2c with prior knowledge beside HTTP/1.1 on the
same port, each stream one exchange on the same core. Real clients over loopback:
curl --http2-prior-knowledge, httpx with http2=True, and a raw client driven by the h2
library for what the others hide (resets, windows, trailers, bad frames, many streams).
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import httpx
import pytest

from host.headers import HeaderMap
from host.proxy.exchange import Limits
from host.proxy.listener import protocol_factory
from host.proxy.stream import CONTINUE, PassThroughFilter, Verdict
from tests.fixtures.wat_modules import compile_wat
from tests.need_tool import need_tool

from .certs import self_signed
from .conftest import ScriptedUpstream, make_config, plugin, wasm_plugin

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Stream:
    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.trailers: list[tuple[bytes, bytes]] = []
        self.ended = False
        self.reset: int | None = None
        self.headers_ended = False  # END_STREAM on the headers (trailers-only)

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


class H2Client:
    """A blocking HTTP/2 client over a real socket, frames by the h2 library."""

    def __init__(self, addr: tuple[str, int], window: int | None = None) -> None:
        self.sock = socket.create_connection(addr, timeout=5)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.streams: dict[int, Stream] = {}
        self.terminated: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.auto_ack = True
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(
        self,
        path: str = "/",
        method: str = "GET",
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes = b"",
        end: bool = True,
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        pairs = [
            (b":method", method.encode()),
            (b":path", path.encode()),
            (b":authority", b"test"),
            (b":scheme", b"http"),
            *(headers or []),
        ]
        self.streams[sid] = Stream()
        self.conn.send_headers(sid, pairs, end_stream=end and not body)
        if body:
            self.send_body(sid, body, end)
        self.flush()
        return sid

    def send_body(self, sid: int, body: bytes, end: bool, timeout: float = 5.0) -> None:
        """Send ``body`` as the windows allow (reading WINDOW_UPDATEs meanwhile)."""
        deadline = time.monotonic() + timeout
        while body:
            window = min(
                self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size
            )
            if window <= 0:
                assert time.monotonic() < deadline, "the proxy never opened the window"
                self.read_once()
                continue
            self.conn.send_data(sid, body[:window], end_stream=end and len(body) <= window)
            body = body[window:]
            self.flush()

    def read_once(self, timeout: float = 5.0) -> None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:  # closed while our last frames were in flight
            data = b""
        if not data:
            self.closed = True
            return
        for ev in self.conn.receive_data(data):
            self._event(ev)
        try:
            self.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.closed = True

    def _event(self, ev: Any) -> None:
        s = self.streams.get(getattr(ev, "stream_id", 0) or 0)
        match ev:
            case h2.events.ResponseReceived():
                assert s is not None
                s.headers = [(bytes(k), bytes(v)) for k, v in ev.headers]
                s.headers_ended = ev.stream_ended is not None
            case h2.events.DataReceived():
                assert s is not None
                s.body += ev.data
                if self.auto_ack:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            case h2.events.TrailersReceived():
                assert s is not None
                s.trailers = [(bytes(k), bytes(v)) for k, v in ev.headers]
            case h2.events.StreamEnded():
                assert s is not None
                s.ended = True
            case h2.events.StreamReset():
                if s is not None:
                    s.reset = ev.error_code
            case h2.events.ConnectionTerminated():
                self.terminated = ev

    def wait(self, cond: Any, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, "timed out"
            assert not self.closed, "the proxy closed the connection"
            self.read_once(max(deadline - time.monotonic(), 0.01))

    def response(self, sid: int, timeout: float = 5.0) -> Stream:
        s = self.streams[sid]
        self.wait(lambda: s.ended or s.reset is not None, timeout)
        return s

    def close(self) -> None:
        self.sock.close()


def _echo(body: bytes) -> dict[str, Any]:
    return json.loads(body)


def _add_header() -> dict[str, Any]:
    """A plugin in the chain (the inspector records requests that run plugins)."""
    return wasm_plugin("add", plugin("add_header"), root_id="add_header")


def _connect(h: Any, **kw: Any) -> H2Client:
    return H2Client(h.addr, **kw)


# -- real clients ----------------------------------------------------------------------------


def test_curl_with_prior_knowledge_and_http11_share_the_port(start_proxy) -> None:
    need_tool("curl")
    h = start_proxy(make_config())
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-i",
            "--http2-prior-knowledge",
            "-H",
            "cookie: a=1",
            "-H",
            "cookie: b=2",
            "-d",
            "hello",
            h.url + "/x?y=1",
        ],
        capture_output=True,
        timeout=10,
        check=True,
    ).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/2 200")
    doc = _echo(body)
    assert (doc["method"], doc["path"], doc["query"], doc["body"]) == ("POST", "/x", "y=1", "hello")
    # the crumbs joined as Envoy's codec joins them; the edge headers added
    assert doc["headers"]["cookie"] == "a=1; b=2"
    assert doc["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert doc["headers"]["host"] == f"127.0.0.1:{h.port}"
    out = subprocess.run(
        ["curl", "-sS", "-i", h.url + "/one"], capture_output=True, timeout=10, check=True
    ).stdout
    assert out.startswith(b"HTTP/1.1 200")
    stats = h.stats()
    assert stats["http.downstream_rq_http2_total"] == 1
    assert stats["http.downstream_rq_http1_total"] == 1


def test_httpx_http2_bodies_bigger_than_the_windows_both_ways(start_proxy) -> None:
    h = start_proxy(make_config())
    big = bytes(range(256)) * 4096  # 1 MiB: four times the stream window we advertise
    with httpx.Client(http2=True, http1=False, base_url=h.url, trust_env=False, timeout=10) as c:
        r = c.post("/up", content=big, headers={"content-type": "application/octet-stream"})
        assert (r.http_version, r.status_code) == ("HTTP/2", 200)
        assert _echo(r.content)["headers"]["content-length"] == str(len(big))
        r = c.post("/up", content=b"x" * len(big))
        assert _echo(r.content)["body"] == "x" * len(big)
        r = c.get("/bytes/3000000")  # response over the client's 64 KiB window
        assert r.content == b"x" * 3_000_000
    assert h.stats()["http.downstream_rq_http2_total"] == 3


def test_a_plugin_runs_on_http2_and_the_inspector_says_so(start_proxy) -> None:
    h = start_proxy(make_config(wasm_plugin("add", plugin("add_header"), root_id="add_header")))
    with httpx.Client(http2=True, http1=False, base_url=h.url, trust_env=False, timeout=10) as c:
        r = c.get("/p")
    assert r.http_version == "HTTP/2"
    assert r.headers["x-wasmdesk-plugin"] == "add_header"
    assert _echo(r.content)["headers"]["x-wasmdesk"] == "hello"
    rec = h.wait_for(lambda: [x for x in h.records() if x.path == "/p"], what="record")[0]
    d = rec.to_dict()
    assert d["protocol"] == "HTTP/2" and d["status"] == 200 and d["grpc_status"] is None
    assert d["hops"][0]["ran"] is True


# -- the raw client ------------------------------------------------------------------------------


def test_many_streams_at_once_on_one_connection(start_proxy) -> None:
    h = start_proxy(make_config())
    c = _connect(h)
    try:
        c.wait(lambda: c.conn.remote_settings.max_concurrent_streams == 100)
        sids = [c.request(f"/s{i}", "POST", body=b"b%d" % i) for i in range(40)]
        for i, sid in enumerate(sids):
            s = c.response(sid)
            assert s.header(b":status") == b"200"
            doc = _echo(s.body)
            assert (doc["path"], doc["body"]) == (f"/s{i}", f"b{i}")
    finally:
        c.close()


def test_trailers_both_ways_through_an_http11_upstream(start_proxy, scripted_upstream) -> None:
    """A request without content-length streams chunked upstream, so its trailers pass
    over HTTP/1.1; the upstream's chunked trailers come back as HTTP/2 trailers, and
    their grpc-status is the record's."""

    def script(conn: socket.socket, up: ScriptedUpstream) -> None:
        buf = bytearray()
        while b"\r\n0\r\n" not in buf or not buf.endswith(b"\r\n\r\n"):
            data = up.recv(conn)
            if not data:
                return
            buf += data
        conn.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\n"
            b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"
            b"0\r\ngrpc-status: 5\r\ngrpc-message: not here\r\n\r\n"
        )

    up = scripted_upstream(script)
    h = start_proxy(make_config(_add_header(), clusters={"backend": up.url}))
    c = _connect(h)
    try:
        sid = c.request(
            "/pkg.Svc/Get",
            "POST",
            [(b"content-type", b"application/grpc"), (b"te", b"trailers")],
            body=b"abc",
            end=False,
        )
        c.conn.send_headers(sid, [(b"x-req-trailer", b"1")], end_stream=True)
        c.flush()
        s = c.response(sid)
    finally:
        c.close()
    assert s.header(b":status") == b"200" and s.body == b"hello"
    assert (b"grpc-status", b"5") in s.trailers and (b"grpc-message", b"not here") in s.trailers
    sent = bytes(up.received).lower()
    assert b"transfer-encoding: chunked" in sent and b"x-req-trailer: 1\r\n" in sent
    rec = h.wait_for(lambda: [x for x in h.records() if x.path == "/pkg.Svc/Get"])[0]
    assert (rec.protocol, rec.grpc_status, rec.grpc_message) == ("HTTP/2", 5, "not here")
    assert h.stats()["http.downstream_rq_grpc_total"] == 1


def test_a_client_reset_ends_the_exchange_and_the_connection_goes_on(start_proxy) -> None:
    h = start_proxy(make_config(_add_header()))
    c = _connect(h)
    try:
        sid = c.request("/delay/3000")
        time.sleep(0.2)
        c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        c.flush()
        rec = h.wait_for(lambda: [x for x in h.records() if x.path == "/delay/3000"])[0]
        assert rec.outcome == "client_disconnect" and rec.protocol == "HTTP/2"
        s = c.response(c.request("/after"))
        assert _echo(s.body)["path"] == "/after"
    finally:
        c.close()


def test_a_failure_mid_response_resets_only_its_stream(start_proxy, scripted_upstream) -> None:
    def script(conn: socket.socket, up: ScriptedUpstream) -> None:
        buf = bytearray()
        if up.read_head(conn, buf) is None:
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
        time.sleep(0.2)
        conn.close()

    up = scripted_upstream(script)
    h = start_proxy(make_config(clusters={"backend": up.url}))
    c = _connect(h)
    try:
        s = c.response(c.request("/cut"))
        assert s.reset is not None and not s.ended  # RST_STREAM, not a clean end
        assert s.header(b":status") == b"200" and s.body == b"0123456789"
        assert c.terminated is None
        # the connection still serves new streams
        c.conn.ping(b"12345678")
        c.flush()
        c.wait(lambda: True)
    finally:
        c.close()


def test_a_stalled_upstream_closes_the_clients_window(start_proxy, scripted_upstream) -> None:
    """Back-pressure: while the upstream does not read, the proxy stops acknowledging the
    stream's data, so the client cannot send more than a bounded amount."""
    gate: list[socket.socket] = []

    def script(conn: socket.socket, up: ScriptedUpstream) -> None:
        gate.append(conn)  # never reads: its receive buffer fills
        up.event("done").wait(10)

    up = scripted_upstream(script)
    h = start_proxy(make_config(clusters={"backend": up.url}))
    c = _connect(h)
    try:
        sid = c.request("/slow", "POST", [(b"content-length", b"%d" % (64 << 20))], end=False)
        sent = 0
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            window = min(c.conn.local_flow_control_window(sid), 16384)
            if window > 0:
                c.conn.send_data(sid, b"z" * window)
                c.flush()
                sent += window
                continue
            try:
                c.read_once(0.5)
            except TimeoutError:
                break  # no WINDOW_UPDATE came: the window stays shut
        assert c.conn.local_flow_control_window(sid) == 0
        assert sent < 32 << 20, sent  # bounded by socket buffers and our marks, not 64 MiB
    finally:
        up.event("done").set()
        c.close()


def test_a_header_block_over_64_kib_is_answered_431_on_its_stream(start_proxy) -> None:
    h = start_proxy(make_config())
    c = _connect(h)
    try:
        s = c.response(c.request("/big", headers=[(b"x-big", b"v" * 70_000)]))
        assert s.header(b":status") == b"431"
        assert b"64 KiB" in s.body
        s = c.response(c.request("/fine"))
        assert s.header(b":status") == b"200"
    finally:
        c.close()
    assert h.stats()["http.downstream_rq_4xx"] == 1


def test_bad_frames_end_the_connection_with_goaway_not_the_proxy(start_proxy) -> None:
    h = start_proxy(make_config())
    for junk in (
        b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00",  # WINDOW_UPDATE of 0
        b"\x00\x00\x05\x01\x04\x00\x00\x00\x02\xff\xff\xff\xff\xff",  # bad HPACK on stream 2
        b"\x00\x40\x01\x00\x00\x00\x00\x00\x01" + b"x" * 16385,  # over the frame size
        b"\x00\x00\x01\x00\x00\x00\x00\x00\x03x",  # DATA on an idle stream
    ):
        s = socket.create_connection(h.addr, timeout=5)
        try:
            s.sendall(PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00" + junk)
            got = b""
            while True:
                data = s.recv(65536)
                if not data:
                    break
                got += data
            # a GOAWAY frame (type 7) came before the close
            assert b"\x07\x00\x00\x00\x00\x00" in got, got
        finally:
            s.close()
    r = httpx.get(h.url + "/still", trust_env=False, timeout=5)
    assert r.status_code == 200


def test_an_idle_connection_gets_goaway(start_proxy) -> None:
    h = start_proxy(make_config())
    h.sync(lambda: setattr(h.server, "limits", Limits(idle_timeout_s=0.3)))
    c = _connect(h)
    try:
        c.response(c.request("/x"))
        c.wait(lambda: c.terminated is not None or c.closed, timeout=5)
        assert c.terminated is not None and c.terminated.error_code == 0
    finally:
        c.close()


def test_a_slow_preface_and_http11_pipelining_still_work(start_proxy) -> None:
    h = start_proxy(make_config())
    # the preface in pieces is still HTTP/2
    s = socket.create_connection(h.addr, timeout=5)
    try:
        for piece in (PREFACE[:1], PREFACE[1:5], PREFACE[5:]):
            s.sendall(piece)
            time.sleep(0.05)
        s.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        assert s.recv(9)[3] == 0x04  # the server's SETTINGS
    finally:
        s.close()
    # "P" then the rest: HTTP/1.1, and two pipelined requests are both answered
    s = socket.create_connection(h.addr, timeout=5)
    try:
        s.sendall(b"P")
        time.sleep(0.05)
        s.sendall(
            b"OST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nz"
            b"GET /b HTTP/1.1\r\nhost: x\r\n\r\n"
        )
        got = b""
        deadline = time.monotonic() + 5
        while got.count(b"HTTP/1.1 200") < 2 and time.monotonic() < deadline:
            got += s.recv(65536)
        assert got.count(b"HTTP/1.1 200") == 2 and b'"/a"' in got and b'"/b"' in got
    finally:
        s.close()


# -- gRPC local replies --------------------------------------------------------------------------


def test_a_local_reply_to_grpc_is_a_trailers_only_grpc_error(start_proxy) -> None:
    h = start_proxy(
        make_config(
            wasm_plugin("auth", plugin("auth_token"), root_id="auth_token", config={"token": "t"})
        )
    )
    c = _connect(h)
    try:
        s = c.response(
            c.request(
                "/pkg.Svc/M",
                "POST",
                [(b"content-type", b"application/grpc")],
                body=b"\x00\x00\x00\x00\x00",
            )
        )
    finally:
        c.close()
    # Envoy: HTTP 200, grpc-status from the HTTP status (403 -> PERMISSION_DENIED), the
    # body as grpc-message, no body, END_STREAM on the headers
    assert s.headers_ended and s.body == b""
    assert s.header(b":status") == b"200"
    assert s.header(b"content-type") == b"application/grpc"
    assert s.header(b"grpc-status") == b"7"
    assert s.header(b"grpc-message") == b"forbidden: missing or invalid token"
    assert s.header(b"x-wasmdesk-denied-by") == b"auth_token"
    rec = h.wait_for(lambda: [x for x in h.records() if x.path == "/pkg.Svc/M"])[0]
    assert (rec.status, rec.grpc_status) == (200, 7)
    assert rec.grpc_message == "forbidden: missing or invalid token"


def test_a_proxy_error_to_grpc_maps_the_status(start_proxy) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nothing listens there: connect failure, 503 -> UNAVAILABLE
    h = start_proxy(make_config(clusters={"backend": f"http://127.0.0.1:{port}"}))
    c = _connect(h)
    try:
        s = c.response(
            c.request(
                "/pkg.Svc/M",
                "POST",
                [(b"content-type", b"application/grpc+proto")],
                body=b"\x00\x00\x00\x00\x00",
            )
        )
    finally:
        c.close()
    assert s.headers_ended and s.header(b":status") == b"200"
    assert s.header(b"grpc-status") == b"14"
    msg = s.header(b"grpc-message") or b""
    assert msg.startswith(b"upstream connect error") and b"\n" not in msg
    # HTTP/1.1 gets the same shape for a gRPC content-type (Envoy decides by content-type)
    r = httpx.post(
        h.url + "/pkg.Svc/M",
        content=b"x",
        trust_env=False,
        timeout=5,
        headers={"content-type": "application/grpc"},
    )
    assert (r.status_code, r.headers["grpc-status"], r.content) == (200, "14", b"")


_RESET_WAT = """
(module
  (import "env" "proxy_close_stream" (func $close (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $close (i32.const 0)))
    (i32.const 1))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32)))
"""


def test_a_plugin_reset_is_rst_stream_on_that_stream_only(start_proxy, wasm_file) -> None:
    url = wasm_file(compile_wat(_RESET_WAT, "resetter"), "resetter")
    h = start_proxy(make_config(wasm_plugin("resetter", url)))
    c = _connect(h)
    try:
        for path in ("/r1", "/r2"):  # the connection outlives each reset
            s = c.response(c.request(path))
            assert s.reset == h2.errors.ErrorCodes.INTERNAL_ERROR and not s.headers
        assert c.terminated is None and not c.closed
    finally:
        c.close()
    rec = h.wait_for(lambda: [x for x in h.records() if x.path == "/r2"])[0]
    assert (rec.outcome, rec.protocol) == ("reset", "HTTP/2")


def test_alpn_h2_on_a_tls_listener_picks_http2(start_proxy, tmp_path) -> None:
    """The listener's protocol factory behind TLS (the TLS listener itself is separate
    work): a client offering ALPN h2 and http/1.1 gets HTTP/2, one offering only
    http/1.1 gets HTTP/1.1, on the same port."""
    key, crt = self_signed(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(crt, key)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    h = start_proxy(make_config(_add_header()))

    async def listen() -> Any:
        return await h.loop.create_server(protocol_factory(h.server), "127.0.0.1", 0, ssl=ctx)

    srv = h.call(listen())
    try:
        port = srv.sockets[0].getsockname()[1]
        url = f"https://127.0.0.1:{port}"
        with httpx.Client(
            http2=True,
            verify=ssl.create_default_context(cafile=str(crt)),
            trust_env=False,
            timeout=10,
        ) as c:
            r = c.get(url + "/tls2")
            assert (r.http_version, r.status_code) == ("HTTP/2", 200)
            doc = _echo(r.content)
            assert doc["path"] == "/tls2" and doc["headers"]["x-forwarded-proto"] == "https"
        with httpx.Client(
            verify=ssl.create_default_context(cafile=str(crt)), trust_env=False, timeout=10
        ) as c:
            r = c.get(url + "/tls1")
            assert (r.http_version, r.status_code) == ("HTTP/1.1", 200)
    finally:
        h.sync(srv.close)
    rec = h.wait_for(lambda: [x for x in h.records() if x.path == "/tls2"])[0]
    assert rec.protocol == "HTTP/2"


def test_a_client_goaway_closes_the_connection(start_proxy) -> None:
    """h2's state machine is closed once it receives GOAWAY (it refuses to send even on
    streams below last_stream_id), so the connection ends at once; its exchanges end
    as lost clients and the proxy goes on."""
    h = start_proxy(make_config(_add_header()))
    c = _connect(h)
    try:
        c.request("/delay/300")
        time.sleep(0.1)
        # GOAWAY (raw: h2's own state machine would stop reading after sending it)
        c.sock.sendall(b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" + b"\x00" * 8)
        c.wait(lambda: c.closed, timeout=5)
    finally:
        c.close()
    rec = h.wait_for(lambda: [x for x in h.records() if x.path == "/delay/300"])[0]
    assert rec.outcome == "client_disconnect"
    assert httpx.get(h.url + "/still", trust_env=False, timeout=5).status_code == 200


class _BadResponseHeader(PassThroughFilter):
    """Sets a response header no HTTP version may carry (as a careless plugin could)."""

    def __init__(self, name: bytes, value: bytes) -> None:
        self.name, self.value = name, value

    def response_headers(self, headers: HeaderMap, end_stream: bool) -> Verdict:
        headers.replace(self.name, self.value)
        return CONTINUE


@pytest.mark.parametrize(
    "name,value", [(b"x-evil", b"a\r\nx-smuggled: 1"), (b"x-evil", b"\x00"), (b"bad name", b"v")]
)
def test_an_unsendable_response_header_gets_502_on_http2(start_proxy, name, value) -> None:
    h = start_proxy(make_config())
    h.sync(setattr, h.server, "filter_factory", lambda info: _BadResponseHeader(name, value))
    c = _connect(h)
    try:
        s = c.response(c.request("/h"))
        assert s.header(b":status") == b"502" and b"invalid header" in s.body
        assert all(k not in (b"x-evil", b"bad name") for k, _ in s.headers)
        assert c.terminated is None
    finally:
        c.close()


def test_a_body_plugin_rewrites_an_http2_request_body(start_proxy) -> None:
    """body_echo_request buffers the whole body and upper-cases it: the HTTP/2 request
    (no content-length, a body in DATA frames) reaches the HTTP/1.1 upstream with the
    real content-length and the new body."""
    h = start_proxy(
        make_config(
            wasm_plugin("echo-body", plugin("body_echo_request"), root_id="body_echo_request")
        )
    )
    c = _connect(h)
    try:
        sid = c.request("/up", "POST", body=b"hello ", end=False)
        c.send_body(sid, b"world", True)
        s = c.response(sid)
    finally:
        c.close()
    doc = _echo(s.body)
    assert doc["body"] == "HELLO WORLD" and doc["headers"]["content-length"] == "11"
    assert "transfer-encoding" not in doc["headers"]


def test_a_response_stuck_behind_a_closed_window_is_reset_after_the_idle_timeout(
    start_proxy,
) -> None:
    h = start_proxy(make_config())
    h.sync(lambda: setattr(h.server, "limits", Limits(idle_timeout_s=0.4)))
    c = _connect(h, window=0)  # the client never lets a DATA byte through
    try:
        s = c.response(c.request("/bytes/10"), timeout=5)
        assert s.header(b":status") == b"200" and s.body == b""
        assert s.reset == h2.errors.ErrorCodes.INTERNAL_ERROR
    finally:
        c.close()
