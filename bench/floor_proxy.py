"""The floor for ``bench_proxy.py``: the least an HTTP/1.1 proxy in Python can do per request.

uvloop + httptools, asyncio protocols, no plugin, no checks, no stats, no records: parse
the request head (httptools), serialise it again towards the upstream on a keep-alive
connection owned by this downstream connection, parse the response head and body
(httptools), serialise them back. Content-length bodies only (what the bench sends and
its nginx upstream answers). Not part of Wasmdesk: it says how far the real proxy's CPU
per request can fall in this language and runtime, against nginx in the same run.

Usage: python bench/floor_proxy.py LISTEN_PORT UPSTREAM_PORT   (127.0.0.1 only)
"""

from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop

HOP = {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}


class Upstream(asyncio.Protocol):
    """One keep-alive upstream connection, serving one downstream connection."""

    def __init__(self, down: Downstream) -> None:
        self.down = down
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        status = self.parser.get_status_code()
        out = [b"HTTP/1.1 %d OK\r\n" % status]
        for k, v in self.headers:
            lk = k.lower()
            if lk not in HOP and lk != b"content-length":
                out.append(k + b": " + v + b"\r\n")
        out.append(b"content-length: %d\r\n\r\n" % len(body))
        out.append(body)
        self.headers, self.body = [], []
        self.down.respond(b"".join(out))

    def connection_lost(self, exc: Exception | None) -> None:
        self.down.upstream = None


class Downstream(asyncio.Protocol):
    """One client connection: requests in, one at a time, to its own upstream."""

    upstream_port = 0

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.upstream: Upstream | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        out = [self.parser.get_method() + b" " + self.url + b" HTTP/1.1\r\n"]
        for k, v in self.headers:
            lk = k.lower()
            if lk not in HOP and lk != b"content-length":
                out.append(k + b": " + v + b"\r\n")
        if body:
            out.append(b"content-length: %d\r\n" % len(body))
        out.append(b"\r\n")
        out.append(body)
        self.keep_alive = self.parser.should_keep_alive()
        self.url, self.headers, self.body = b"", [], []
        req = b"".join(out)
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.write(req)
        else:
            asyncio.get_running_loop().create_task(self._connect_and_send(req))

    async def _connect_and_send(self, req: bytes) -> None:
        loop = asyncio.get_running_loop()
        transport, up = await loop.create_connection(
            lambda: Upstream(self), "127.0.0.1", self.upstream_port
        )
        self.upstream = up
        transport.write(req)

    def respond(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)
        if not self.keep_alive:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.close()


async def main(listen: int, upstream: int) -> None:
    Downstream.upstream_port = upstream
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Downstream, "127.0.0.1", listen, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2])))
