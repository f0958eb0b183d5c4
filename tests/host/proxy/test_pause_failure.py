"""A plugin holding a stream paused at its trailers, whose VM then fails outside the
stream's callbacks (a tick): FAIL_OPEN lets the stream go on past the plugin in the
direction it was paused in, with the body the plugin held and the trailers, through
the plugins after it (Envoy: a failed fail-open Wasm filter continues the stream as if
it were absent).

The plugin is inline WAT: body callbacks buffer until the end of the stream
(``buffer``) or continue; the trailers callback of the paused direction returns
StopIteration and marks a pending pause; the next tick traps while one is pending.
A second plugin (``test_trailers``' WAT) adds ``x-added: req|resp`` at the trailers and
sits after the pauser in the paused direction.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from tests.fixtures.wat_modules import compile_wat

from .conftest import ScriptedUpstream, connect, make_config, wasm_plugin
from .test_trailers import trailers_wasm

_WAT = """
(module
  (import "env" "proxy_set_tick_period_milliseconds" (func $set_tick (param i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (global $pending (mut i32) (i32.const 0))
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $n)
      (i32.const 7)) (i32.const -8))))
    (if (i32.gt_u (global.get $heap) (i32.const 131000))
      (then (global.set $heap (i32.const 65536)) (local.set $p (i32.const 65536))))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $set_tick (i32.const 50)))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32)
    (result i32) BODY_RESULT)
  (func (export "proxy_on_response_body") (param $ctx i32) (param $size i32) (param $eos i32)
    (result i32) BODY_RESULT)
  (func (export "proxy_on_request_trailers") (param i32 i32) (result i32) REQ_TRAILERS)
  (func (export "proxy_on_response_trailers") (param i32 i32) (result i32) RESP_TRAILERS)
  (func (export "proxy_on_tick") (param i32)
    (if (global.get $pending) (then (unreachable))))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32))
)
"""
_PAUSE = "(global.set $pending (i32.const 1)) (i32.const 1)"


def _plugin(paused_in: str, buffer: bool) -> bytes:
    body = "(select (i32.const 0) (i32.const 1) (local.get $eos))" if buffer else "(i32.const 0)"
    text = _WAT.replace("BODY_RESULT", body)
    text = text.replace("REQ_TRAILERS", _PAUSE if paused_in == "request" else "(i32.const 0)")
    text = text.replace("RESP_TRAILERS", _PAUSE if paused_in == "response" else "(i32.const 0)")
    return compile_wat(text, f"pause_{paused_in}_trailers")


_REQUEST = (
    b"POST /t HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    b"4\r\nabcd\r\n3\r\nefg\r\n0\r\nx-t: 1\r\n\r\n"
)


def _upstream(scripted_upstream: Any) -> ScriptedUpstream:
    """Reads the request up to its trailers; answers chunked with trailer ``x-rt: 2``."""

    def script(conn: socket.socket, up: ScriptedUpstream) -> None:
        buf = bytearray()
        while b"x-added: req\r\n\r\n" not in buf:
            data = up.recv(conn)
            if not data:
                return
            buf += data
        conn.sendall(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-rt: 2\r\n\r\n"
        )

    return scripted_upstream(script)


def _read_response(s: socket.socket) -> tuple[bytes, bytes, list[bytes]]:
    """(status line, body, trailer lines) of a chunked response."""
    f = s.makefile("rb")
    status = f.readline()
    while f.readline() not in (b"\r\n", b""):
        pass
    body = b""
    while True:
        line = f.readline()
        if not line:
            break
        size = int(line.strip(), 16)
        if size == 0:
            break
        body += f.read(size)
        f.readline()
    trailers = []
    while (ln := f.readline()) not in (b"\r\n", b""):
        trailers.append(ln.strip().lower())
    return status, body, trailers


@pytest.mark.parametrize("buffer", [False, True], ids=["streaming", "buffering"])
@pytest.mark.parametrize("paused_in", ["request", "response"])
def test_fail_open_continues_a_stream_paused_at_its_trailers_in_that_direction(
    start_proxy, scripted_upstream, wasm_file, paused_in: str, buffer: bool
):
    up = _upstream(scripted_upstream)
    pauser = wasm_plugin(
        "pauser", wasm_file(_plugin(paused_in, buffer), "pauser"), fail="FAIL_OPEN"
    )
    adder = wasm_plugin("adder", wasm_file(trailers_wasm(False), "adder"), root_id="tr")
    # the adder comes after the pauser in the paused direction (the response walks back)
    plugins = (pauser, adder) if paused_in == "request" else (adder, pauser)
    h = start_proxy(make_config(*plugins, clusters={"backend": up.url}))
    t0 = time.monotonic()
    with connect(h) as s:
        s.settimeout(10)
        s.sendall(_REQUEST)
        status, body, trailers = _read_response(s)
    assert time.monotonic() - t0 < 5  # the tick's failure, not the 30 s pause timeout
    assert h.slot("pauser").failure.callback == "proxy_on_tick"
    # the request reached the upstream whole: the body the plugin held, then the trailers
    raw = bytes(up.received)
    assert b"4\r\nabcd\r\n3\r\nefg\r\n" in raw or b"7\r\nabcdefg\r\n" in raw, raw
    assert raw.endswith(b"0\r\nx-t: 1\r\nx-added: req\r\n\r\n"), raw
    assert status.startswith(b"HTTP/1.1 200"), status
    assert body == b"hello world"
    assert trailers == [b"x-rt: 2", b"x-added: resp"]
    assert h.stats()["wasm.paused_streams"] == 0
