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
from typing import Final

__all__ = ["PSEUDO_HEADERS", "valid_header", "valid_headers", "valid_origin_path", "valid_value"]

# RFC 9110 §5.6.2 token characters.
_TCHAR: Final = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
PSEUDO_HEADERS: Final = frozenset((b":path", b":method", b":authority", b":scheme", b":status"))
# The refused bytes as ints: ``13 in value`` is a memchr, while ``b"\r" in value`` first
# tries the one-byte needle as an int, fails with a TypeError and clears it (~15x dearer).
_CR: Final = 13
_LF: Final = 10
_NUL: Final = 0
_SP: Final = 32
_TAB: Final = 9
_HASH: Final = 35


def valid_value(value: bytes) -> bool:
    """No CR, LF or NUL: the bytes that end or cut a header line on the wire."""
    # three memchr scans: a host function's hot path (every header a plugin sets)
    return _CR not in value and _LF not in value and _NUL not in value


# Names already found valid: a plugin sets the same few names on every request, and a
# dict lookup is several times cheaper than the translate below. Bounded (emptied when
# full) so that a plugin making up names cannot grow it.
_VALID_NAMES: dict[bytes, bool] = {}
_VALID_NAMES_MAX: Final = 1024


def valid_name(name: bytes) -> bool:
    """A token (RFC 9110), or one of the pseudo-headers a plugin may set."""
    if name in _VALID_NAMES:
        return True
    if name in PSEUDO_HEADERS:
        return True
    # deleting every token character leaves nothing: one C-level pass
    if not name or name.translate(None, _TCHAR):
        return False
    if len(_VALID_NAMES) >= _VALID_NAMES_MAX:
        _VALID_NAMES.clear()
    _VALID_NAMES[name] = True
    return True


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
    return valid_value(path) and _SP not in path and _TAB not in path and _HASH not in path
