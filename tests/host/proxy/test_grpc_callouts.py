"""gRPC callouts over the real transport (host/proxy/grpc_callouts.py, grpc.aio) against a
real grpcio server on 127.0.0.1 (``grpc_echo_server.EchoServer``).

The plugin is a probe compiled from WAT source here (``grpc_probe.wat``):
``proxy_on_tick`` performs the operation the test wrote into its memory (unary call,
stream, send, cancel, close), and every gRPC callback appends an entry to an event log
in memory (kind, token, argument, the map/buffer/status it read). A callback can also
perform the prepared operation itself ("react"), to cancel or send from inside a
callback as a plugin would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import wasmtime

from host.proxy.grpc_callouts import GrpcCalloutDispatcher, GrpcCluster
from host.wasm import LogLevel, PluginHost, VirtualClock, VmConfig
from host.wasm.context import RootContext
from host.wasm.pairs import decode_pairs, encode_pairs
from host.wasm.proto import field_bytes, field_message, field_varint
from host.wasm.types import Status
from host.wasm.vm import PluginVM

from .certs import self_signed
from .grpc_echo_server import EchoServer

PROBE_WAT = Path(__file__).with_name("grpc_probe.wat")

KINDS = {1: "initial_metadata", 2: "message", 3: "trailing_metadata", 4: "close"}
UNARY, STREAM, SEND, CANCEL, CLOSE = 1, 2, 3, 4, 5


@dataclass
class Event:
    kind: str
    token: int
    arg: int  # elements, message size or gRPC status
    data: Any  # pairs, message bytes or the status message
    read_status: int


class Probe:
    """The WAT probe on a PluginHost whose gRPC transport is the real dispatcher."""

    def __init__(
        self, host: PluginHost, vm: PluginVM, root: RootContext, disp: GrpcCalloutDispatcher
    ) -> None:
        self.host, self.vm, self.root, self.disp = host, vm, root, disp
        self._next = 0x3000

    def put(self, data: bytes) -> tuple[int, int]:
        ptr = self._next
        self.vm.instance.write(ptr, data)
        self._next += (len(data) + 8) & ~7
        return ptr, len(data)

    def prepare(
        self,
        op: int,
        *,
        upstream: bytes = b"echo",
        service: bytes = b"test.Echo",
        method: bytes = b"Unary",
        metadata: list[tuple[bytes, bytes]] | None = None,
        message: bytes = b"",
        timeout_ms: int = 0,
        token: int = 0,
        end_stream: bool = False,
    ) -> None:
        words = [op]
        for blob in (upstream, service, method, encode_pairs(metadata or []), message):
            words += self.put(blob)
        words += [timeout_ms, token, int(end_stream)]
        self.vm.instance.write(0x1000, b"".join(w.to_bytes(4, "little") for w in words))
        self.vm.instance.write(0x1038, b"\0" * 8)

    def op(self, op: int, **kw: Any) -> tuple[int, int]:
        """Perform ``op`` from proxy_on_tick: (status, token written)."""
        self.prepare(op, **kw)
        assert self.vm.tick(self.root)
        return self.status(), self.vm.instance.read_u32(0x103C)

    def status(self) -> int:
        rc = self.vm.instance.read_u32(0x1038)
        return rc - (1 << 32) if rc >= 1 << 31 else rc

    def react_on(self, kind: str, op: int, **kw: Any) -> None:
        """The next callback of ``kind`` performs ``op``."""
        self.prepare(op, **kw)
        code = {v: k for k, v in KINDS.items()}[kind]
        self.vm.instance.write(0x1080, code.to_bytes(4, "little"))

    def run(self, until: Callable[[], bool], limit_s: float = 5.0) -> None:
        deadline = time.monotonic() + limit_s
        while not until():
            assert time.monotonic() < deadline, f"timed out; events so far: {self.events()}"
            self.host.run_pending()
            if not until():
                self.disp.pump(0.2)
        self.host.run_pending()

    def settle(self, limit_s: float = 5.0) -> None:
        self.run(lambda: not self.disp.busy and not self.host.pending, limit_s)

    def events(self) -> list[Event]:
        out = []
        for i in range(self.vm.instance.read_u32(0x2000)):
            e = 0x2010 + 32 * i
            kind, tok, arg, ptr, size, code, rc = (
                self.vm.instance.read_u32(e + 4 * j) for j in range(7)
            )
            raw = self.vm.instance.read(ptr, size) if size else b""
            name = KINDS[kind]
            data: Any = raw
            if name in ("initial_metadata", "trailing_metadata"):
                data = decode_pairs(raw) if raw else []
            elif name == "close":
                data = (code, raw)
            out.append(Event(name, tok, arg, data, rc))
        return out


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    srv = EchoServer()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def probe_module() -> bytes:
    return bytes(wasmtime.wat2wasm(PROBE_WAT.read_text(encoding="utf-8")))


def start_probe(module: bytes, disp: GrpcCalloutDispatcher) -> Probe:
    host = PluginHost(grpc=disp, clock=VirtualClock(), log_level=LogLevel.TRACE)
    vm = host.create_vm(host.compile(module), VmConfig(name="probe"))
    return Probe(host, vm, vm.start_plugin("probe", b""), disp)


@pytest.fixture
def gp(echo: EchoServer, probe_module: bytes) -> Iterator[Probe]:
    loop = asyncio.new_event_loop()
    disp = GrpcCalloutDispatcher(
        loop,
        {
            "echo": GrpcCluster(f"grpc://127.0.0.1:{echo.port}", timeout_s=5.0),
            "down": GrpcCluster(f"grpc://127.0.0.1:{_free_port()}", timeout_s=5.0),
            "web": GrpcCluster("http://127.0.0.1:1"),  # not a gRPC cluster
        },
    )
    p = start_probe(probe_module, disp)
    yield p
    p.host.close()
    loop.run_until_complete(disp.aclose())
    loop.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# -- unary -------------------------------------------------------------------------------


def test_unary_call_delivers_the_reply_once_and_sends_the_plugins_metadata(
    gp: Probe, echo: EchoServer
) -> None:
    rc, token = gp.op(UNARY, message=b"hello", metadata=[(b"x-plugin", b"p1")], timeout_ms=2000)
    assert rc == Status.OK and token % 4 == 1
    assert token in gp.root.grpc_calls
    gp.settle()
    events = gp.events()
    # Envoy: a unary call's success is one proxy_on_grpc_receive and nothing else
    assert [(e.kind, e.token, e.arg, e.data, e.read_status) for e in events] == [
        ("message", token, len(b"echo:hello"), b"echo:hello", Status.OK)
    ]
    assert token not in gp.root.grpc_calls  # the call is over
    assert echo.seen_metadata[-1]["x-plugin"] == "p1"
    assert echo.seen_authority[-1] == "echo"  # Envoy's default :authority: the cluster name


def test_binary_metadata_travels_as_bytes(gp: Probe, echo: EchoServer) -> None:
    rc, _token = gp.op(
        UNARY, message=b"b", metadata=[(b"x-blob-bin", b"\x00\xff")], timeout_ms=2000
    )
    assert rc == Status.OK
    gp.settle()
    assert [e.data for e in gp.events()] == [b"echo:b"]
    assert echo.seen_metadata[-1]["x-blob-bin"] == "00ff"  # the server saw the raw bytes


def test_unary_call_error_status_reaches_proxy_on_grpc_close_and_get_status(gp: Probe) -> None:
    rc, token = gp.op(UNARY, message=b"fail", timeout_ms=2000)
    assert rc == Status.OK
    gp.settle()
    events = gp.events()
    assert [(e.kind, e.token, e.arg) for e in events] == [("close", token, 5)]  # NOT_FOUND
    assert events[0].data == (5, b"no such thing") and events[0].read_status == Status.OK
    assert token not in gp.root.grpc_calls


def test_unary_timeout_ends_the_call_with_deadline_exceeded(gp: Probe, echo: EchoServer) -> None:
    t0 = time.monotonic()
    rc, token = gp.op(UNARY, message=b"slow", timeout_ms=200)
    assert rc == Status.OK
    gp.settle()
    elapsed = time.monotonic() - t0
    [close] = gp.events()
    assert (close.kind, close.token, close.arg) == ("close", token, 4)  # DEADLINE_EXCEEDED
    assert close.data[0] == 4 and b"deadline" in close.data[1].lower()
    assert elapsed < 1.5


def test_service_timeout_from_a_grpc_service_upstream_applies_when_the_call_gives_none(
    gp: Probe,
) -> None:
    duration = field_varint(2, 150_000_000)  # 150 ms
    service = field_message(1, field_bytes(1, "echo")) + field_message(3, duration)
    rc, _token = gp.op(UNARY, upstream=service, message=b"slow", timeout_ms=0)
    assert rc == Status.OK
    gp.settle()
    [close] = gp.events()
    assert (close.kind, close.arg) == ("close", 4)


def test_grpc_service_upstream_names_the_cluster_and_adds_its_initial_metadata(
    gp: Probe, echo: EchoServer
) -> None:
    # envoy.config.core.v3.GrpcService{envoy_grpc{cluster_name, authority}, initial_metadata[]}
    header = field_bytes(1, "x-from-service") + field_bytes(2, "svc")
    service = field_message(
        1, field_bytes(1, "echo") + field_bytes(2, "echo.internal")
    ) + field_message(5, header)
    rc, token = gp.op(
        UNARY, upstream=service, message=b"m", metadata=[(b"x-plugin", b"p")], timeout_ms=2000
    )
    assert rc == Status.OK
    assert gp.root.grpc_calls[token].authority == "echo.internal"
    gp.settle()
    assert [e.data for e in gp.events()] == [b"echo:m"]
    seen = echo.seen_metadata[-1]
    assert seen["x-from-service"] == "svc" and seen["x-plugin"] == "p"
    assert echo.seen_authority[-1] == "echo.internal"


def test_unknown_cluster_is_parse_failure_and_a_non_grpc_cluster_is_refused(gp: Probe) -> None:
    assert gp.op(UNARY, upstream=b"nowhere", message=b"m")[0] == Status.PARSE_FAILURE
    assert gp.op(UNARY, upstream=b"web", message=b"m")[0] == Status.PARSE_FAILURE
    logs = [r.message for r in gp.host.logs]
    assert any("unknown gRPC cluster 'nowhere'" in m for m in logs)
    assert not gp.root.grpc_calls and not gp.disp.busy


def test_connection_refused_is_unavailable_with_only_the_close_callback(gp: Probe) -> None:
    rc, token = gp.op(STREAM, upstream=b"down", method=b"Chat")
    assert rc == Status.OK and token % 4 == 2
    gp.settle()
    events = gp.events()
    assert [(e.kind, e.token, e.arg) for e in events] == [("close", token, 14)]  # UNAVAILABLE


def test_bad_metadata_and_names_are_refused_before_anything_is_sent(gp: Probe) -> None:
    assert gp.op(UNARY, metadata=[(b"x-a", b"v\r\nx-b: 1")])[0] == Status.BAD_ARGUMENT
    assert gp.op(UNARY, metadata=[(b":authority", b"evil")])[0] == Status.BAD_ARGUMENT
    assert gp.op(UNARY, service=b"a/b")[0] == Status.BAD_ARGUMENT
    # gRPC's own rules: key characters, printable ASCII values unless the key ends in -bin
    assert gp.op(UNARY, metadata=[(b"x!a", b"1")])[0] == Status.BAD_ARGUMENT
    assert gp.op(UNARY, metadata=[(b"x-a", "é".encode())])[0] == Status.BAD_ARGUMENT
    assert not gp.disp.busy and not gp.disp.finished


# -- streams -----------------------------------------------------------------------------


def test_stream_callbacks_come_in_envoys_order_and_close_half_closes(
    gp: Probe, echo: EchoServer
) -> None:
    rc, token = gp.op(STREAM, method=b"Chat", metadata=[(b"x-plugin", b"s1")])
    assert rc == Status.OK
    assert gp.op(SEND, token=token, message=b"one")[0] == Status.OK
    gp.run(lambda: any(e.kind == "message" for e in gp.events()))
    assert gp.op(SEND, token=token, message=b"two")[0] == Status.OK
    # close = half-close: the server still answers, then ends the call
    assert gp.op(CLOSE, token=token)[0] == Status.OK
    assert gp.op(SEND, token=token, message=b"late")[0] == Status.BAD_ARGUMENT
    gp.settle()
    events = gp.events()
    assert [e.kind for e in events] == [
        "initial_metadata",
        "message",
        "message",
        "message",
        "trailing_metadata",
        "close",
    ]
    assert {e.token for e in events} == {token}
    assert events[0].data == [(b"x-srv", b"chat")] and events[0].arg == 1
    assert [e.data for e in events[1:4]] == [b"re:one", b"re:two", b"bye"]
    assert events[4].data == [(b"x-count", b"2"), (b"grpc-status", b"0")]
    assert events[5].arg == 0 and events[5].data == (0, b"")
    assert echo.seen_metadata[-1]["x-plugin"] == "s1"
    assert token not in gp.root.grpc_calls


def test_stream_error_status_comes_with_trailers_then_close(gp: Probe) -> None:
    _rc, token = gp.op(STREAM, method=b"Chat")
    gp.op(SEND, token=token, message=b"abort")
    gp.settle()
    events = gp.events()
    assert [e.kind for e in events] == ["initial_metadata", "trailing_metadata", "close"]
    assert (b"grpc-status", b"7") in events[1].data and (b"grpc-message", b"go away") in events[
        1
    ].data
    assert events[2].arg == 7 and events[2].data == (7, b"go away")  # PERMISSION_DENIED


def test_send_with_end_stream_half_closes(gp: Probe) -> None:
    _rc, token = gp.op(STREAM, method=b"Chat")
    assert gp.op(SEND, token=token, message=b"only", end_stream=True)[0] == Status.OK
    gp.settle()
    events = gp.events()
    assert [e.data for e in events if e.kind == "message"] == [b"re:only", b"bye"]
    assert events[-1].kind == "close" and events[-1].arg == 0


def test_cancel_from_a_callback_stops_every_further_callback(gp: Probe, echo: EchoServer) -> None:
    echo.cancelled.clear()
    _rc, token = gp.op(STREAM, method=b"Chat")
    gp.op(SEND, token=token, message=b"one")
    # the first callback (initial metadata) cancels; the reply to "one" must not arrive
    gp.react_on("initial_metadata", CANCEL, token=token)
    gp.run(lambda: bool(gp.events()))
    gp.settle()
    time.sleep(0.1)
    gp.host.run_pending()
    events = gp.events()
    assert [e.kind for e in events] == ["initial_metadata"]  # nothing after the cancel
    assert gp.status() == Status.OK  # proxy_grpc_cancel answered OK
    assert token not in gp.root.grpc_calls
    assert echo.cancelled.wait(3)  # the server saw the call go away
    assert gp.op(CANCEL, token=token)[0] == Status.NOT_FOUND


def test_cancelling_a_unary_call_drops_its_reply(gp: Probe) -> None:
    _rc, token = gp.op(UNARY, message=b"slow", timeout_ms=3000)
    assert gp.op(CANCEL, token=token)[0] == Status.OK
    gp.settle()
    assert gp.events() == []


def test_pump_waits_for_a_silent_stream_once_only(gp: Probe) -> None:
    # the offline runner pumps between callbacks: a stream the server keeps open must not
    # cost the full wait on every pump
    _rc, token = gp.op(STREAM, method=b"Hold")
    gp.run(lambda: [e.kind for e in gp.events()] == ["initial_metadata"])
    t0 = time.monotonic()
    assert gp.disp.pump(0.3) == 0
    assert time.monotonic() - t0 >= 0.25
    t0 = time.monotonic()
    assert gp.disp.pump(0.3) == 0
    assert time.monotonic() - t0 < 0.2
    assert gp.op(CANCEL, token=token)[0] == Status.OK and not gp.disp.busy


def test_grpc_calls_count_against_the_in_flight_cap(
    gp: Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    from host.wasm.abi import callouts

    monkeypatch.setattr(callouts, "MAX_INFLIGHT_CALLOUTS", 2)
    tokens = [gp.op(STREAM, method=b"Chat")[1] for _ in range(2)]
    assert all(tokens)
    assert gp.op(STREAM, method=b"Chat")[0] == Status.INTERNAL_FAILURE
    assert gp.vm.callouts_refused == 1
    for t in tokens:
        assert gp.op(CANCEL, token=t)[0] == Status.OK
    assert gp.op(STREAM, method=b"Chat")[0] == Status.OK


# -- TLS -----------------------------------------------------------------------------------


def _self_signed(tmp: Path) -> tuple[bytes, bytes]:
    key, crt = self_signed(tmp)
    return key.read_bytes(), crt.read_bytes()


def test_grpcs_cluster_verifies_the_server_with_its_ca_file(
    tmp_path: Path, probe_module: bytes
) -> None:
    key, crt = _self_signed(tmp_path)
    srv = EchoServer(grpc.ssl_server_credentials([(key, crt)]))
    loop = asyncio.new_event_loop()
    url = f"grpcs://127.0.0.1:{srv.port}"
    disp = GrpcCalloutDispatcher(
        loop,
        {
            "tls": GrpcCluster(url, ca_file=str(tmp_path / "crt.pem")),
            "untrusted": GrpcCluster(url),
            "gone": GrpcCluster(url, ca_file=str(tmp_path / "removed.pem")),
        },
    )
    try:
        p = start_probe(probe_module, disp)
        _rc, ok = p.op(UNARY, upstream=b"tls", message=b"secure", timeout_ms=3000)
        # the system store does not trust the self-signed certificate
        _rc, bad = p.op(UNARY, upstream=b"untrusted", message=b"x", timeout_ms=3000)
        # a CA file that went away after start-up: the call fails, the proxy does not
        _rc, gone = p.op(STREAM, upstream=b"gone", method=b"Chat")
        p.settle()
        by_token = {e.token: e for e in p.events()}
        assert by_token[ok].kind == "message" and by_token[ok].data == b"echo:secure"
        assert by_token[bad].kind == "close" and by_token[bad].arg == 14  # UNAVAILABLE
        assert by_token[gone].kind == "close" and by_token[gone].arg == 13  # INTERNAL
        assert b"removed.pem" in by_token[gone].data[1]
        p.host.close()
    finally:
        loop.run_until_complete(disp.aclose())
        loop.close()
        srv.stop()
