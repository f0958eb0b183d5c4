"""The composer's unary gRPC call to a TLS listener, on HTTP/2 over Python's ``ssl``.

Why not grpcio's secure channel: grpcio verifies with its own BoringSSL, which refuses
any CA with an IP-address name constraint ("unsupported name constraint type"), and the
demo CA (``spec.tls: demo``) is constrained to 127.0.0.0/8 and ::1. So over TLS the call
goes out on the ``h2`` library over an ``ssl`` connection (OpenSSL, the verification
curl, httpx and the load generator use too): one stream, ``application/grpc``, the
message framed, ``grpc-timeout`` and a local deadline, the status from the trailers
(or a trailers-only answer, or mapped from the HTTP status as gRPC clients do). The
result has ``gui.composer_send.grpc_unary``'s shape. Cleartext calls stay on grpcio.
Runs on the engine thread's loop; loopback only (the caller checks); no Qt here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

from gui.composer_send import grpc_frame

__all__ = ["grpc_unary_tls"]

# gRPC's HTTP-to-status mapping (doc/http-grpc-status-mapping.md) for an answer without
# grpc-status
_HTTP_TO_GRPC = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}
_NOT_METADATA = {"content-type", "grpc-status", "grpc-message", "grpc-encoding"}


def _metadata(headers: Sequence[tuple[str, str]]) -> list[list[str]]:
    return [[k, v] for k, v in headers if not k.startswith(":") and k not in _NOT_METADATA]


class _Call:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.headers: list[tuple[str, str]] = []
        self.trailers: list[tuple[str, str]] = []
        self.data = bytearray()
        self.ended = False
        self.reset = ""

    def flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self.writer.write(out)

    async def pump(self, sid: int) -> None:
        """Read once from the socket and take the events for stream ``sid``."""
        await self.writer.drain()
        chunk = await self.reader.read(65536)
        if not chunk:
            raise ConnectionError("the proxy closed the connection")
        for ev in self.conn.receive_data(chunk):
            if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                self.headers = [(str(k), str(v)) for k, v in ev.headers]
            elif isinstance(ev, h2.events.TrailersReceived) and ev.stream_id == sid:
                self.trailers = [(str(k), str(v)) for k, v in ev.headers]
            elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                self.data += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                self.ended = True
            elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                self.reset = f"the stream was reset ({h2.errors.ErrorCodes(ev.error_code).name})"
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.reset = f"the proxy ended the connection (GOAWAY {ev.error_code})"
        self.flush()

    async def send(self, sid: int, body: bytes) -> None:
        """The request body within the server's flow-control windows, then END_STREAM."""
        view = memoryview(body)
        while view and not (self.ended or self.reset):
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if room <= 0:
                await self.pump(sid)
                continue
            self.conn.send_data(sid, bytes(view[:room]))
            view = view[room:]
            self.flush()
        if not (self.ended or self.reset):
            self.conn.end_stream(sid)
            self.flush()


async def grpc_unary_tls(
    host: str,
    port: int,
    method: str,
    message: bytes,
    metadata: Sequence[tuple[str, str | bytes]],
    deadline_s: float,
    tls: ssl.SSLContext,
) -> dict[str, Any]:
    """One unary call over TLS (``tls``: a verifying client context offering ALPN
    ``h2``); a failed call is a result with its status (14 UNAVAILABLE when there was
    no connection, 4 DEADLINE_EXCEEDED past ``deadline_s``), not an exception."""
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "protocol": "gRPC",
        "grpc_method": method,
        "grpc_status": None,
        "grpc_message": "",
        "initial_metadata": [],
        "trailing_metadata": [],
        "body": "",
        "body_hex": "",
        "body_size": 0,
        "error": "",
    }
    call: _Call | None = None
    sid = 1
    try:
        async with asyncio.timeout(deadline_s):
            try:
                reader, writer = await asyncio.open_connection(host, port, ssl=tls)
            except OSError as e:  # ssl.SSLError is one: verification, handshake
                result.update(grpc_status=14, grpc_message=f"failed to connect: {e}")
                return result
            call = _Call(reader, writer)
            alpn = writer.get_extra_info("ssl_object").selected_alpn_protocol()
            if alpn != "h2":
                result.update(grpc_status=14, grpc_message=f"the proxy chose ALPN {alpn!r}, not h2")
                return result
            call.conn.initiate_connection()
            sid = call.conn.get_next_available_stream_id()
            head = [
                (":method", "POST"),
                (":scheme", "https"),
                (":path", method),
                (":authority", f"{host}:{port}"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("grpc-timeout", f"{max(1, round(deadline_s * 1000))}m"),
                ("user-agent", "wasmdesk-composer"),
            ]
            for k, v in metadata:
                head.append((k, base64.b64encode(v).decode() if isinstance(v, bytes) else v))
            call.conn.send_headers(sid, head)
            call.flush()
            await call.send(sid, grpc_frame(message))
            while not (call.ended or call.reset):
                await call.pump(sid)
    except TimeoutError:
        result.update(grpc_status=4, grpc_message="Deadline Exceeded")
        if call is not None:
            with contextlib.suppress(Exception):
                call.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                call.flush()
    except (OSError, ConnectionError, h2.exceptions.ProtocolError) as e:
        result.update(grpc_status=14, grpc_message=f"{type(e).__name__}: {e}")
    finally:
        if call is not None:
            call.writer.close()
        result["elapsed_ms"] = round((time.perf_counter() - t0) * 1000, 3)
    if result["grpc_status"] is not None or call is None:
        return result
    return _answer(result, call)


def _answer(result: dict[str, Any], call: _Call) -> dict[str, Any]:
    if call.reset and not call.ended:
        result.update(grpc_status=14, grpc_message=call.reset)
        return result
    # trailers-only: the status is in the headers
    end = dict(call.trailers or call.headers)
    head = dict(call.headers)
    status = end.get("grpc-status")
    if status is None or not status.isdigit():
        code = int(head.get(":status") or 0)
        result.update(grpc_status=_HTTP_TO_GRPC.get(code, 2), grpc_message=f"HTTP status {code}")
        return result
    result.update(
        grpc_status=int(status),
        grpc_message=urllib.parse.unquote(end.get("grpc-message", "")),
        initial_metadata=_metadata(call.headers) if call.trailers else [],
        trailing_metadata=_metadata(call.trailers or call.headers),
    )
    data = bytes(call.data)
    if len(data) >= 5:
        if data[0] != 0:
            result.update(grpc_status=13, grpc_message="the reply is compressed (not supported)")
            return result
        reply = data[5 : 5 + int.from_bytes(data[1:5], "big")]
        result.update(
            body=reply.decode("utf-8", "replace"), body_hex=reply.hex(" "), body_size=len(reply)
        )
    return result
