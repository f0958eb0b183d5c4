"""Trailers (issue 7 §5): a chunked request's trailers reach the upstream and a chunked
response's trailers reach the client; ``proxy_on_request_trailers`` and
``proxy_on_response_trailers`` run under ``serve`` (and may change the trailers), also
after the plugin buffered the body (StopIterationAndBuffer), and under ``try``.

The plugin is inline WAT: its trailers callbacks add ``x-added: req`` / ``x-added: resp``;
the ``buffer`` variant's body callbacks return StopIterationAndBuffer until the end of
the stream.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from host.runner import TryRequest, run_try
from tests.fixtures.wat_modules import compile_wat

from .conftest import ScriptedUpstream, connect, make_config, wasm_plugin

_TRAILERS_WAT = """
(module
  (import "env" "proxy_add_header_map_value"
    (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "x-added")
  (data (i32.const 1040) "req")
  (data (i32.const 1056) "resp")
  (global $heap (mut i32) (i32.const 65536))
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
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32)
    (result i32)
    REQ_ADD
    BODY_RESULT)
  (func (export "proxy_on_response_body") (param $ctx i32) (param $size i32) (param $eos i32)
    (result i32)
    RESP_ADD
    BODY_RESULT)
  (func (export "proxy_on_request_trailers") (param i32 i32) (result i32)
    (drop (call $add (i32.const 1) (i32.const 1024) (i32.const 7) (i32.const 1040) (i32.const 3)))
    (i32.const 0))
  (func (export "proxy_on_response_trailers") (param i32 i32) (result i32)
    (drop (call $add (i32.const 3) (i32.const 1024) (i32.const 7) (i32.const 1056) (i32.const 4)))
    (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32))
)
"""


def trailers_wasm(buffer: bool, add_from_body: bool = False) -> bytes:
    """``buffer``: the body callbacks return StopIterationAndBuffer until the end of the
    stream. ``add_from_body``: they add ``x-added: req|resp`` trailers from the last data
    (allowed there, as Envoy's addDecodedTrailers / addEncodedTrailers)."""
    result = "(select (i32.const 0) (i32.const 1) (local.get $eos))" if buffer else "(i32.const 0)"
    add = (
        "(if (local.get $eos) (then (drop (call $add (i32.const {m}) (i32.const 1024)"
        " (i32.const 7) (i32.const {v}) (i32.const {n})))))"
    )
    text = _TRAILERS_WAT.replace("BODY_RESULT", result)
    text = text.replace("REQ_ADD", add.format(m=1, v=1040, n=3) if add_from_body else "")
    text = text.replace("RESP_ADD", add.format(m=3, v=1056, n=4) if add_from_body else "")
    return compile_wat(text, "trailers")


def _read_until(conn: socket.socket, up: ScriptedUpstream, buf: bytearray, end: bytes) -> bool:
    while end not in buf:
        data = up.recv(conn)
        if not data:
            return False
        buf += data
    return True


def _chunked_upstream(scripted_upstream: Any, request_end: bytes) -> ScriptedUpstream:
    """Reads a request up to ``request_end``; answers chunked with trailer ``x-rt: 2``."""

    def script(conn: socket.socket, up: ScriptedUpstream) -> None:
        buf = bytearray()
        if not _read_until(conn, up, buf, request_end):
            return
        conn.sendall(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-rt: 2\r\n\r\n"
        )

    return scripted_upstream(script)


def _read_chunked(f: Any) -> tuple[bytes, bytes, list[bytes]]:
    """(head, body, trailer lines) of a chunked response."""
    head = b""
    while (ln := f.readline()) not in (b"\r\n", b""):
        head += ln.lower()
    assert b"transfer-encoding: chunked" in head, head
    body = b""
    while True:
        size = int(f.readline().strip(), 16)
        if size == 0:
            break
        body += f.read(size)
        f.readline()
    trailers = []
    while (ln := f.readline()) not in (b"\r\n", b""):
        trailers.append(ln.strip().lower())
    return head, body, trailers


_REQUEST = (
    b"POST /t HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    b"4\r\nabcd\r\n3\r\nefg\r\n0\r\nx-t: 1\r\n\r\n"
)


def _exchange(start_proxy, scripted_upstream, request_end: bytes, plugins=()):
    up = _chunked_upstream(scripted_upstream, request_end)
    h = start_proxy(make_config(*plugins, clusters={"backend": up.url}))
    with connect(h) as s:
        s.sendall(_REQUEST)
        head, body, trailers = _read_chunked(s.makefile("rb"))
    upstream_req = bytes(up.received)
    return head, body, trailers, upstream_req


def _request_body_and_trailers(raw: bytes) -> tuple[bytes, list[bytes]]:
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    body = b""
    while True:
        line, _, rest = rest.partition(b"\r\n")
        size = int(line, 16)
        if size == 0:
            break
        body, rest = body + rest[:size], rest[size + 2 :]
    trailers = [t.lower() for t in rest.split(b"\r\n") if t]
    return body, trailers


def test_trailers_pass_through_without_plugins(start_proxy, scripted_upstream):
    _head, body, trailers, up = _exchange(start_proxy, scripted_upstream, b"x-t: 1\r\n\r\n")
    assert body == b"hello world"
    assert trailers == [b"x-rt: 2"]
    req_body, req_trailers = _request_body_and_trailers(up)
    assert req_body == b"abcdefg"
    assert req_trailers == [b"x-t: 1"]


@pytest.mark.parametrize("buffer", [False, True], ids=["streaming", "buffering"])
def test_plugin_trailer_callbacks_run_and_change_the_trailers(
    start_proxy, scripted_upstream, wasm_file, buffer
):
    path = wasm_file(trailers_wasm(buffer), "trailers")
    _head, body, trailers, up = _exchange(
        start_proxy,
        scripted_upstream,
        b"x-added: req\r\n\r\n",
        plugins=(wasm_plugin("tr", path, root_id="tr"),),
    )
    req_body, req_trailers = _request_body_and_trailers(up)
    assert req_body == b"abcdefg"  # a buffered body is released at the trailers
    assert req_trailers == [b"x-t: 1", b"x-added: req"]
    assert body == b"hello world"
    assert trailers == [b"x-rt: 2", b"x-added: resp"]


def test_trailer_callbacks_are_recorded_by_the_inspector(
    start_proxy, scripted_upstream, wasm_file
):
    path = wasm_file(trailers_wasm(True), "trailers")
    up = _chunked_upstream(scripted_upstream, b"x-added: req\r\n\r\n")
    h = start_proxy(
        make_config(wasm_plugin("tr", path, root_id="tr"), clusters={"backend": up.url})
    )
    with connect(h) as s:
        s.sendall(_REQUEST)
        _read_chunked(s.makefile("rb"))
    rec = h.wait_for(lambda: h.records(), what="a request record")[-1].to_dict()
    names = [c["name"] for c in rec["hops"][0]["callbacks"]]
    assert "proxy_on_request_trailers" in names and "proxy_on_response_trailers" in names


@pytest.mark.parametrize("buffer", [False, True], ids=["streaming", "buffering"])
def test_try_runs_trailer_callbacks_also_after_buffering(buffer):
    r = run_try(
        trailers_wasm(buffer),
        TryRequest(
            method="POST",
            body=b"payload",
            trailers=[("x-t", "1")],
            response_body=b"answer",
            response_trailers=[("x-rt", "2")],
        ),
    )
    assert r.failure is None
    assert r.request_forwarded
    assert r.request_body == b"payload"
    assert r.request_trailers == [(b"x-t", b"1"), (b"x-added", b"req")]
    assert r.response_body == b"answer"
    assert r.response_trailers == [(b"x-rt", b"2"), (b"x-added", b"resp")]
    names = [c["name"] for c in r.callbacks]
    assert "proxy_on_request_trailers" in names and "proxy_on_response_trailers" in names
    doc = r.to_json()
    assert doc["request"]["trailers"] == [["x-t", "1"], ["x-added", "req"]]  # type: ignore[index]


def test_trailers_a_plugin_adds_from_the_last_data_are_sent(
    start_proxy, scripted_upstream, wasm_file
):
    """No trailers from either peer; the plugin buffers each body and adds a trailer from
    its last body callback: both messages then go out chunked, with the trailer."""

    def script(conn: socket.socket, up: ScriptedUpstream) -> None:
        buf = bytearray()
        if not _read_until(conn, up, buf, b"x-added: req\r\n\r\n"):
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")

    up = scripted_upstream(script)
    path = wasm_file(trailers_wasm(True, add_from_body=True), "trailers")
    h = start_proxy(
        make_config(wasm_plugin("tr", path, root_id="tr"), clusters={"backend": up.url})
    )
    with connect(h) as s:
        s.sendall(b"POST /t HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc")
        _head, body, trailers = _read_chunked(s.makefile("rb"))
    req_body, req_trailers = _request_body_and_trailers(bytes(up.received))
    assert req_body == b"abc" and req_trailers == [b"x-added: req"]
    assert body == b"hello" and trailers == [b"x-added: resp"]
