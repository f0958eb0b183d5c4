"""Writes held to the end of the loop's tick (``host/proxy/write_batch.py``): the HTTP/1.1
adapters' bytes leave together after the tick's I/O callbacks, in order, and nothing held
is lost or reordered by a close, an abort, a parse error or a pipelined request."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from host.proxy.upstream import Cluster, UpstreamPool, UpstreamProtocol

from .conftest import make_config

# -- the batch on a real loop --------------------------------------------------------------


class _Transport(asyncio.Transport):
    """Records writes; refuses one after the end (asyncio would drop it)."""

    def __init__(self, log: list[tuple[str, bytes]] | None = None, name: str = "") -> None:
        super().__init__()
        self.out: list[bytes] = []
        self.log, self.name = log, name
        self.aborted = self.closed = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        assert not (self.aborted or self.closed), "a write after the end"
        self.out.append(bytes(data))
        if self.log is not None:
            self.log.append((self.name, bytes(data)))

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.aborted or self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}.get(name, default)


def test_one_flush_per_tick_sends_every_writer_in_the_order_it_first_wrote() -> None:
    loop = asyncio.new_event_loop()
    try:
        scheduled: list[Any] = []
        real_call_soon = loop.call_soon

        def call_soon(fn: Any, *args: Any, **kw: Any) -> Any:
            scheduled.append(fn)
            return real_call_soon(fn, *args, **kw)

        loop.call_soon = call_soon  # type: ignore[method-assign]
        pool = UpstreamPool(loop)  # its batch binds loop.call_soon: count what it schedules
        batch = pool.write_batch
        log: list[tuple[str, bytes]] = []
        a, b = (UpstreamProtocol(Cluster("c", "127.0.0.1", 9), pool) for _ in range(2))
        a.connection_made(_Transport(log, "a"))
        b.connection_made(_Transport(log, "b"))
        flushes = []
        real_flush = batch.flush

        def tick() -> None:  # one tick's callbacks: both write, nothing is sent yet
            b._write(b"b1 ")
            a._write(b"a1")
            b._write(b"b2")
            assert log == []
            flushes.append(len(batch.waiting))

        loop.call_soon(tick)
        loop.run_until_complete(asyncio.sleep(0.01))
        # b first (it wrote first), its two writes as one
        assert log == [("b", b"b1 b2"), ("a", b"a1")]
        assert flushes == [2] and batch.waiting == []
        assert len([f for f in scheduled if f == real_flush]) == 1  # one flush for the tick
        a._write(b"a2")  # the next tick gets its own flush
        loop.run_until_complete(asyncio.sleep(0.01))
        assert log[-1] == ("a", b"a2")
        assert len([f for f in scheduled if f == real_flush]) == 2
    finally:
        loop.close()


# -- the adapters on real sockets ----------------------------------------------------------


def _recv_all(s: socket.socket) -> bytes:
    chunks = []
    while True:
        c = s.recv(65536)
        if not c:
            return b"".join(chunks)
        chunks.append(c)


@pytest.fixture
def proxy(start_proxy):  # type: ignore[no-untyped-def]
    return start_proxy(make_config())  # the built-in demo upstream: it echoes the path


def test_pipelined_responses_then_a_close_arrive_whole_and_in_order(proxy) -> None:
    reqs = b"".join(
        f"GET /p{i} HTTP/1.1\r\nhost: x\r\n\r\n".encode() for i in range(5)
    ) + b"GET /last HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(reqs)
        data = _recv_all(s)  # the proxy closes after the last response: held bytes first
    assert data.count(b"HTTP/1.1 200 ") == 6
    order = [data.index(p) for p in (b"/p0", b"/p1", b"/p2", b"/p3", b"/p4", b"/last")]
    assert order == sorted(order)


def test_a_malformed_request_is_answered_before_the_close(proxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n")
        f = s.makefile("rb")
        assert f.readline().startswith(b"HTTP/1.1 200 ")
        while f.readline() not in (b"\r\n", b""):
            pass
        s.sendall(b"BROKEN\x01 / HTTP/1.1\r\n\r\n")
        rest = f.read()  # up to the close: the 400 was sent before it
    assert rest.count(b"HTTP/1.1 400 ") == 1
    assert rest.endswith(b"malformed HTTP request: Invalid method encountered\n")


def test_responses_to_many_connections_in_one_tick_all_arrive(proxy) -> None:
    conns = [socket.create_connection(("127.0.0.1", proxy.port), timeout=10) for _ in range(16)]
    try:
        for rnd in range(3):
            for i, s in enumerate(conns):
                s.sendall(f"GET /c{i}/r{rnd} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
            for i, s in enumerate(conns):
                f = s.makefile("rb")
                status = f.readline()
                length = 0
                while (line := f.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = f.read(length)
                assert status.startswith(b"HTTP/1.1 200 ")
                assert f"/c{i}/r{rnd}".encode() in body
    finally:
        for s in conns:
            s.close()


def test_an_abort_drops_what_the_tick_held_and_a_lost_connection_sends_nothing() -> None:
    from host.proxy.core_api import ProxyCore
    from host.proxy.exchange import Limits
    from host.proxy.http1 import DownstreamProtocol

    loop = asyncio.new_event_loop()
    try:
        pool = UpstreamPool(loop)
        up = UpstreamProtocol(Cluster("c", "127.0.0.1", 9), pool)
        t = _Transport()
        up.connection_made(t)
        up._write(b"GET / HTTP/1.1\r\n\r\n")
        up.connection_lost(None)
        pool.write_batch.flush()
        assert t.out == []  # held bytes of a lost connection are not sent

        class Core(ProxyCore):
            def __init__(self) -> None:
                self.loop, self.limits, self.open_connections = loop, Limits(), 0
                self.write_batch = pool.write_batch

        down = DownstreamProtocol(Core())
        t2 = _Transport()
        down.transport = t2
        down.write(b"HTTP/1.1 200 OK\r\n\r\n")
        down.drop(abort=True)  # a reset: nothing of the tick goes out
        pool.write_batch.flush()
        assert t2.out == [] and t2.aborted
        t3 = _Transport()
        down.transport = t3
        down.write(b"part one ")
        down.write(b"part two")
        down.drop(abort=False)  # a close: what the tick held goes out first, in one write
        assert t3.out == [b"part one part two"] and t3.closed
        pool.write_batch.flush()
        assert t3.out == [b"part one part two"]
    finally:
        loop.close()
