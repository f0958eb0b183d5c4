"""Envoy's gRPC shape for local replies: a reply the proxy or a plugin makes to a gRPC
request (content-type ``application/grpc...``) is an HTTP 200 trailers-only response
carrying ``grpc-status`` (the plugin's, else mapped from the HTTP status as Envoy's
``Grpc::Utility::httpToGrpcStatus`` does) and ``grpc-message`` (the body,
percent-encoded as the gRPC spec asks); no body. Pure code.
"""

from __future__ import annotations

from host.headers import HeaderMap
from host.proxy.stream import LocalReply

__all__ = ["grpc_local_reply", "grpc_status_of", "http_to_grpc_status", "is_grpc"]

# gRPC status codes (grpc/doc/statuscodes.md)
_INTERNAL, _UNAUTHENTICATED, _PERMISSION_DENIED, _UNIMPLEMENTED = 13, 16, 7, 12
_UNAVAILABLE, _UNKNOWN = 14, 2


def is_grpc(content_type: bytes | None) -> bool:
    """Envoy's ``Grpc::Common::isGrpcRequestHeaders``: the content-type says gRPC."""
    return content_type is not None and content_type[:16].lower() == b"application/grpc"


def http_to_grpc_status(status: int) -> int:
    """grpc/doc/http-grpc-status-mapping.md, as Envoy maps a local reply's HTTP status."""
    if status == 400:
        return _INTERNAL
    if status == 401:
        return _UNAUTHENTICATED
    if status == 403:
        return _PERMISSION_DENIED
    if status == 404:
        return _UNIMPLEMENTED
    if status in (429, 502, 503, 504):
        return _UNAVAILABLE
    return _UNKNOWN


def _percent_encode(text: bytes) -> bytes:
    """gRPC's grpc-message encoding: bytes outside printable ASCII, and '%', as %XX."""
    if all(0x20 <= c <= 0x7E and c != 0x25 for c in text):
        return text
    return b"".join(bytes((c,)) if 0x20 <= c <= 0x7E and c != 0x25 else b"%%%02X" % c for c in text)


def grpc_local_reply(reply: LocalReply) -> LocalReply:
    """``reply`` as Envoy sends a local reply to a gRPC request (trailers-only)."""
    status = b""
    message = b""
    rest: list[tuple[bytes, bytes]] = []
    for k, v in reply.headers:
        if k == b"grpc-status":
            status = status or v
        elif k == b"grpc-message":
            message = message or v
        elif k not in (b"content-type", b"content-length"):
            rest.append((k, v))
    if not status:
        status = b"%d" % http_to_grpc_status(reply.status)
    if not message and reply.body:
        body = reply.body[:-1] if reply.body.endswith(b"\n") else reply.body
        message = _percent_encode(body)
    headers = [(b"content-type", b"application/grpc"), (b"grpc-status", status)]
    if message:
        headers.append((b"grpc-message", message))
    return LocalReply(200, b"", headers + rest, reply.details)


def grpc_status_of(m: HeaderMap) -> tuple[int, str] | None:
    """The ``grpc-status`` (and message) a header or trailer map carries, or None."""
    v = m.get(b"grpc-status")
    if v is None:
        return None
    try:
        code = int(v)
    except ValueError:
        return None
    msg = m.get(b"grpc-message") or b""
    return code, msg.decode("utf-8", "replace")
