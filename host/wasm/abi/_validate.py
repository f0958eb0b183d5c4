"""What a plugin may put into a header map, a callout or a local reply.

Every header-setting host function (``proxy_add/replace_header_map_value``,
``proxy_set_header_map_pairs``, the ``proxy_http_call`` header and trailer lists,
``proxy_send_local_response`` headers, gRPC initial metadata) checks names and
values here and answers BAD_ARGUMENT when they fail, so a plugin can neither split
a response nor smuggle a request (CR/LF) nor cut a header short (NUL). Envoy's
``HeaderString`` refuses the same bytes. Pure functions: no guest memory, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["PSEUDO_HEADERS", "valid_header", "valid_headers", "valid_origin_path", "valid_value"]

# RFC 9110 §5.6.2 token characters.
_TCHAR = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
PSEUDO_HEADERS = frozenset((b":path", b":method", b":authority", b":scheme", b":status"))


def valid_value(value: bytes) -> bool:
    """No CR, LF or NUL: the bytes that end or cut a header line on the wire."""
    # three C-level scans: a host function's hot path (every header a plugin sets)
    return b"\r" not in value and b"\n" not in value and b"\0" not in value


def valid_name(name: bytes) -> bool:
    """A token (RFC 9110), or one of the pseudo-headers a plugin may set."""
    if name in PSEUDO_HEADERS:
        return True
    # deleting every token character leaves nothing: one C-level pass
    return bool(name) and not name.translate(None, _TCHAR)


def valid_header(name: bytes, value: bytes) -> bool:
    return valid_name(name) and valid_value(value)


def valid_headers(pairs: Iterable[tuple[bytes, bytes]]) -> bool:
    return all(valid_name(k) and valid_value(v) for k, v in pairs)


def valid_origin_path(path: bytes) -> bool:
    """An origin-form request target (RFC 9112 §3.2.1): ``/`` then no CR/LF/NUL,
    space or ``#``. Anything else (``@host:port/...``, ``//host/...``, an absolute
    URL) could name another host than the cluster's."""
    if not path.startswith(b"/") or path.startswith(b"//"):
        return False
    return valid_value(path) and b" " not in path and b"\t" not in path and b"#" not in path
