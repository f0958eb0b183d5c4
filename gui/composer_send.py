"""The composer's HTTP/2 and gRPC requests: checking what the user typed, and the two
clients that send it (HTTP/1.1 stays with ``gui.traffic.fetch``).

* HTTP/2 goes out with httpx (``http1=False, http2=True``: h2c with prior knowledge on an
  ``http://`` address, as ``curl --http2-prior-knowledge`` does; ALPN ``h2`` over TLS
  when the listener is TLS).
* gRPC goes out with grpcio's asyncio API (``grpc.aio``, imported on first use) as a
  generic unary call: the message is the bytes the user gave, with no protobuf encoding
  (Wasmdesk has no descriptors): a JSON payload is sent as its UTF-8 text (what a server
  with a JSON codec reads), a protobuf message is given as hex or base64. To a TLS
  listener it goes out on a secure channel trusting the listener's CA.

Both run on the engine thread's asyncio loop (driven by ``gui.engine_service``), talk to
loopback only, and return plain dicts. No Qt here.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import shlex
import ssl
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "GRPC_STATUS_NAMES",
    "PAYLOAD_FORMATS",
    "PROTOCOLS",
    "check_grpc_method",
    "encode_payload",
    "fetch_h2",
    "grpc_curl",
    "grpc_frame",
    "grpc_status_text",
    "grpc_unary",
    "parse_metadata",
    "tls_curl_options",
]

PROTOCOLS = ("HTTP/1.1", "HTTP/2", "gRPC")
# how the gRPC message box is read: (key, label)
PAYLOAD_FORMATS = (
    ("json", "JSON (sent as UTF-8 text)"),
    ("text", "text (UTF-8)"),
    ("hex", "hex bytes"),
    ("base64", "base64 bytes"),
)
MAX_DEADLINE_S = 300.0

# grpc/status.h, as Envoy prints them
GRPC_STATUS_NAMES = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}

_METHOD = re.compile(r"^/?([A-Za-z_][\w.]*)/([A-Za-z_]\w*)$")
_MD_KEY = re.compile(r"^[0-9a-z_.-]+$")
# set by grpcio itself (or by the transport): refused in the metadata box
_RESERVED_MD = {"content-type", "te", "grpc-timeout", "user-agent", "host", "grpc-encoding"}


def grpc_status_text(code: int | None) -> str:
    """``14 UNAVAILABLE``; "" for None (not gRPC)."""
    if code is None:
        return ""
    return f"{code} {GRPC_STATUS_NAMES.get(code, 'UNKNOWN_CODE')}"


def check_grpc_method(text: str) -> str:
    """``/package.Service/Method`` (a missing leading slash is added); ValueError
    saying what is wrong."""
    m = _METHOD.match(text.strip())
    if m is None:
        raise ValueError(
            "a gRPC method is /package.Service/Method (e.g. /grpc.health.v1.Health/Check)"
        )
    return f"/{m.group(1)}/{m.group(2)}"


def encode_payload(text: str, fmt: str) -> bytes:
    """The message bytes for the payload box; ValueError naming the problem."""
    if fmt == "json":
        if text.strip():
            try:
                json.loads(text)
            except ValueError as e:
                raise ValueError(f"the message is not valid JSON: {e}") from None
        return text.strip().encode("utf-8")
    if fmt == "text":
        return text.encode("utf-8")
    if fmt == "hex":
        digits = "".join(text.split())
        try:
            return bytes.fromhex(digits)
        except ValueError:
            raise ValueError("the message is not hex (pairs of 0-9a-f, spaces allowed)") from None
    if fmt == "base64":
        try:
            return base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the message is not valid base64") from None
    raise ValueError(f"unknown payload format {fmt!r}")


def parse_metadata(text: str) -> list[tuple[str, str | bytes]]:
    """``key: value`` per line as gRPC metadata (keys lower-case; a ``-bin`` key's
    value is base64 and sent as bytes); ValueError naming the bad line."""
    out: list[tuple[str, str | bytes]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if not sep or not _MD_KEY.match(key):
            raise ValueError(
                f"metadata line {n}: expected 'key: value' with a key of 0-9 a-z _ . -, "
                f"got {line!r}"
            )
        if key.startswith("grpc-") or key in _RESERVED_MD or key.startswith(":"):
            raise ValueError(f"metadata line {n}: {key} is set by the gRPC client itself")
        if key.endswith("-bin"):
            try:
                out.append((key, base64.b64decode(value, validate=True)))
            except (binascii.Error, ValueError):
                raise ValueError(f"metadata line {n}: a -bin value is base64") from None
            continue
        if any(not (0x20 <= ord(c) < 0x7F) for c in value):
            raise ValueError(f"metadata line {n}: a text value is printable ASCII")
        out.append((key, value))
    return out


def grpc_frame(message: bytes) -> bytes:
    """One length-prefixed gRPC message (not compressed), as it goes on the wire."""
    return b"\0" + len(message).to_bytes(4, "big") + message


def tls_curl_options(base_url: str, cacert: str, protocol: str) -> list[str]:
    """curl's options for the protocol on this address: over ``https://`` the CA to
    trust (``--cacert``; none: the system store) and ``--http2`` / ``--http1.1`` (curl
    picks by ALPN there); on ``http://`` HTTP/2 is ``--http2-prior-knowledge``."""
    if not base_url.startswith("https://"):
        return ["--http2-prior-knowledge"] if protocol == "HTTP/2" else []
    out = ["--cacert", cacert] if cacert else []
    return [*out, "--http2" if protocol == "HTTP/2" else "--http1.1"]


def _octal_printf(data: bytes) -> str:
    safe = set(b'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 {}[]:,.-_"')
    return "".join(chr(b) if b in safe else f"\\{b:03o}" for b in data)


def grpc_curl(
    base_url: str,
    method: str,
    message: bytes,
    metadata: Sequence[tuple[str, str | bytes]],
    deadline_s: float,
    cacert: str = "",
) -> str:
    """A shell line that sends the same gRPC call with curl: the framed message from
    ``printf`` (octal escapes, POSIX), HTTP/2 with prior knowledge (``--http2`` and
    ``--cacert`` on an ``https://`` address), the gRPC headers."""
    parts = ["curl", "-i", *tls_curl_options(base_url, cacert, "HTTP/2")]
    parts += [
        "-X",
        "POST",
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        "-H",
        f"grpc-timeout: {max(1, round(deadline_s * 1000))}m",
    ]
    for k, v in metadata:
        text = base64.b64encode(v).decode() if isinstance(v, bytes) else v
        parts += ["-H", f"{k}: {text}"]
    parts += ["--data-binary", "@-", "--output", "-", base_url.rstrip("/") + method]
    printf = "printf " + shlex.quote(_octal_printf(grpc_frame(message)))
    return printf + " | " + " ".join(shlex.quote(p) for p in parts)


def _md_pairs(md: Any) -> list[list[str]]:
    """grpc.aio metadata as [key, value] (a binary value as base64)."""
    out: list[list[str]] = []
    for k, v in md or ():
        out.append([str(k), base64.b64encode(v).decode() if isinstance(v, bytes) else str(v)])
    return out


async def grpc_unary(
    host: str,
    port: int,
    method: str,
    message: bytes,
    metadata: Sequence[tuple[str, str | bytes]] = (),
    deadline_s: float = 10.0,
    tls: bool = False,
    ca_file: str | None = None,
) -> dict[str, Any]:
    """One unary call with raw bytes in and out; the result as a plain dict: the status
    code and message, initial and trailing metadata, the response message (text and
    hex). A failed call is a result with its status, not an exception. ``tls``: over TLS,
    verifying the server against ``ca_file`` (else the system trust store)."""
    import grpc
    import grpc.aio

    def identity(b: bytes) -> bytes:
        return b

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
    # no proxy from the environment, and no retries: one call, as the user asked
    options = [("grpc.enable_http_proxy", 0), ("grpc.enable_retries", 0)]
    if tls:
        roots = Path(ca_file).read_bytes() if ca_file else None
        creds = grpc.ssl_channel_credentials(root_certificates=roots)
        channel = grpc.aio.secure_channel(f"{host}:{port}", creds, options=options)
    else:
        channel = grpc.aio.insecure_channel(f"{host}:{port}", options=options)
    try:
        call = channel.unary_unary(
            method, request_serializer=identity, response_deserializer=identity
        )(message, metadata=tuple(metadata), timeout=deadline_s)
        try:
            reply = await call
        except grpc.aio.AioRpcError as e:
            result.update(
                grpc_status=e.code().value[0],
                grpc_message=e.details() or "",
                initial_metadata=_md_pairs(e.initial_metadata()),
                trailing_metadata=_md_pairs(e.trailing_metadata()),
            )
        else:
            code = await call.code()
            result.update(
                grpc_status=code.value[0],
                grpc_message=await call.details() or "",
                initial_metadata=_md_pairs(await call.initial_metadata()),
                trailing_metadata=_md_pairs(await call.trailing_metadata()),
                body=reply.decode("utf-8", "replace"),
                body_hex=reply.hex(" "),
                body_size=len(reply),
            )
    finally:
        await channel.close()
    result["elapsed_ms"] = round((time.perf_counter() - t0) * 1000, 3)
    return result


async def fetch_h2(
    host: str,
    port: int,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    timeout_s: float = 30.0,
    tls: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    """One HTTP/2 request with prior knowledge (h2c), or over TLS with ALPN ``h2`` when
    ``tls`` (a verifying client context) is given; the response in the shape of
    ``gui.traffic.HttpResponse.to_dict`` plus ``protocol`` (what was spoken)."""
    import httpx

    t0 = time.perf_counter()
    url = f"{'https' if tls is not None else 'http'}://{host}:{port}{path}"
    try:
        async with httpx.AsyncClient(
            http1=False, http2=True, timeout=timeout_s, trust_env=False, verify=tls or True
        ) as client:
            r = await client.request(method, url, headers=list(headers), content=body or None)
            data = r.content
    except httpx.HTTPError as e:
        return {
            "protocol": "HTTP/2",
            "status": 0,
            "headers": [],
            "body": "",
            "body_size": 0,
            "elapsed_ms": round((time.perf_counter() - t0) * 1000, 3),
            "error": f"{type(e).__name__}: {e}" if str(e) else type(e).__name__,
        }
    return {
        "protocol": r.http_version,
        "status": r.status_code,
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in r.headers.raw],
        "body": data.decode("utf-8", "replace"),
        "body_size": len(data),
        "elapsed_ms": round((time.perf_counter() - t0) * 1000, 3),
        "error": "",
    }


def result_text(d: Mapping[str, Any]) -> str:
    """The composer's response box for a gRPC result: metadata, then the message."""
    out = ["initial metadata:"]
    out += [f"  {k}: {v}" for k, v in d.get("initial_metadata") or []] or ["  (none)"]
    out.append("trailing metadata:")
    out += [f"  {k}: {v}" for k, v in d.get("trailing_metadata") or []] or ["  (none)"]
    size = int(d.get("body_size") or 0)
    out.append("")
    if d.get("grpc_status") == 0 or size:
        out.append(f"message ({size} bytes):")
        out.append(f"  hex:  {d.get('body_hex') or ''}")
        out.append(f"  text: {d.get('body') or ''}")
    else:
        out.append("no message (the call ended with an error status)")
    return "\n".join(out)
