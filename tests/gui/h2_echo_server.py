"""A real HTTP/2 (h2c, prior knowledge) server on 127.0.0.1 for the composer's tests,
built on the ``h2`` library: its own thread and asyncio loop, started and stopped by the
test. Every request is answered 200 with ``x-seen-method`` / ``x-seen-path`` /
``x-seen-<header>`` for the request's ``x-*`` headers and the body ``h2 echo: <body>``;
the requests seen are kept in ``seen`` (pseudo-headers included)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import h2.config
import h2.connection
import h2.events


class _Conn(asyncio.Protocol):
    def __init__(self, server: H2EchoServer) -> None:
        self.server = server
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.streams: dict[int, tuple[list[tuple[str, str]], bytearray]] = {}
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            events = self.conn.receive_data(data)
        except Exception:  # a bad peer: drop it
            self.transport.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self.streams[ev.stream_id] = (
                    [(str(k), str(v)) for k, v in ev.headers],
                    bytearray(),
                )
            elif isinstance(ev, h2.events.DataReceived):
                self.streams[ev.stream_id][1].extend(ev.data)
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                self._answer(ev.stream_id)
        self.transport.write(self.conn.data_to_send())

    def _answer(self, stream_id: int) -> None:
        headers, body = self.streams.pop(stream_id)
        self.server.seen.append((headers, bytes(body)))
        d = dict(headers)
        out = [
            (":status", "200"),
            ("content-type", "text/plain"),
            ("x-seen-method", d.get(":method", "")),
            ("x-seen-path", d.get(":path", "")),
        ]
        out += [(f"x-seen-{k}", v) for k, v in headers if k.startswith("x-")]
        self.conn.send_headers(stream_id, out)
        self.conn.send_data(stream_id, b"h2 echo: " + bytes(body), end_stream=True)


class H2EchoServer:
    def __init__(self) -> None:
        self.seen: list[tuple[list[tuple[str, str]], bytes]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self.loop)
        self.server: asyncio.Server = fut.result(5)
        self.port: int = self.server.sockets[0].getsockname()[1]

    async def _start(self) -> asyncio.Server:
        return await self.loop.create_server(lambda: _Conn(self), "127.0.0.1", 0)

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
