"""The built-in demo upstream: an echo service on loopback.

Answers every request with a JSON document of what it received (method, path,
query, headers, body), so ``wasmdesk serve`` with no configuration shows at once
what the plugin chain did to a request. ``/status/N`` answers with status N,
``/delay/MS`` waits MS milliseconds first (bounded to 10 s), ``/bytes/N`` sends N
bytes of text. 204 and 304 responses and answers to HEAD carry no body (RFC 9110
§6.4.1). Built on asyncio + httptools like the proxy; loopback only.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any

import httptools

__all__ = ["EchoServer", "start_echo_server"]


class _EchoProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        keep = self.parser.should_keep_alive()
        url = httptools.parse_url(self.url)
        path = (url.path or b"/").decode("latin-1")
        query = (url.query or b"").decode("latin-1")
        body = b"".join(self.body)
        status = 200
        delay = 0.0
        payload: bytes
        ctype = "application/json"
        if path.startswith("/status/") and path[8:].isdigit():
            status = max(200, min(599, int(path[8:])))
        if path.startswith("/delay/") and path[7:].isdigit():
            delay = min(int(path[7:]), 10_000) / 1000.0
        if path.startswith("/bytes/") and path[7:].isdigit():
            payload = b"x" * min(int(path[7:]), 16 << 20)
            ctype = "text/plain"
        else:
            doc: dict[str, Any] = {
                "method": method,
                "path": path,
                "query": query,
                "headers": dict(self.headers),
                "body": body.decode("utf-8", "replace"),
                "message": "hello from the wasmdesk demo upstream",
            }
            payload = json.dumps(doc, indent=1).encode()
        self._reset()
        close = "" if keep else "connection: close\r\n"
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        if status in (204, 304):
            # No body, and no content-length either: a 204 must not have one, and on a
            # 304 it would describe a representation that is not sent.
            payload = b""
            framing = ""
        else:
            framing = f"content-type: {ctype}\r\ncontent-length: {len(payload)}\r\n"
        if method == "HEAD":
            payload = b""  # the head says what a GET would get; no body follows
        head = (
            f"HTTP/1.1 {status} {phrase}\r\n{framing}server: wasmdesk-demo-upstream\r\n{close}\r\n"
        ).encode()
        transport = self.transport
        if transport is None:
            return

        def send() -> None:
            if not transport.is_closing():
                transport.write(head + payload)
                if not keep:
                    transport.close()

        if delay:
            asyncio.get_running_loop().call_later(delay, send)
        else:
            send()


class EchoServer:
    def __init__(self, server: asyncio.base_events.Server) -> None:
        self.server = server
        sock = server.sockets[0].getsockname()
        self.host, self.port = str(sock[0]), int(sock[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        self.server.close()


async def start_echo_server(host: str = "127.0.0.1", port: int = 0) -> EchoServer:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_EchoProtocol, host, port, reuse_address=True)
    return EchoServer(server)
