"""What the proxy adds to every request at the edge, whatever the client's protocol:
``x-forwarded-for`` (the client's address appended), ``x-forwarded-proto`` and an
``x-request-id`` when the client sent none, as Envoy's connection manager does for an
edge proxy (``use_remote_address: true``). Pure code: no socket, no wire format.
"""

from __future__ import annotations

from host.proxy import framing

__all__ = ["add_edge_headers"]


def add_edge_headers(
    items: list[tuple[bytes, bytes]],
    xff: list[bytes],
    request_id: bytes | None,
    client_ip: bytes,
    scheme: bytes = b"http",
) -> bytes:
    """Append the edge headers to ``items`` (the request's headers, without the
    client's ``x-forwarded-for`` lines, which are ``xff``: several coalesce into one, as
    Envoy does); returns the request id (the client's, or a new one)."""
    xff.append(client_ip)
    items.append((b"x-forwarded-for", b", ".join(xff) if len(xff) > 1 else client_ip))
    items.append((b"x-forwarded-proto", scheme))
    if request_id is None:
        request_id = framing.request_id()
        items.append((b"x-request-id", request_id))
    return request_id
