"""HTTP/1.1 framing as pure functions: message heads, hop-by-hop headers, chunked
encoding, body-length rules and the checks on what may go on the wire.

No sockets, no state beyond a bounded cache of field names already checked: the
HTTP/1.1 adapters (``http1.DownstreamProtocol``, ``upstream.UpstreamProtocol``) ask
these functions for bytes when the exchange core sends them headers, data and
trailers, and write them themselves. The HTTP/2 adapter does not use this module.

Body-length rule (RFC 9112 §6): a head is built when the first body bytes or the
end of the stream are released. If the whole body is known by then its length is
the ``content-length``; otherwise the (possibly modified) declared length is kept,
or the body is chunked when there is none. Trailers need chunked framing.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from http import HTTPStatus
from typing import Final

from host.headers import HeaderMap

__all__ = [
    "CONTINUE_100",
    "HOP_BY_HOP",
    "SPECIAL_REQUEST_HEADERS",
    "RequestHead",
    "ResponseHead",
    "chunk",
    "error_message",
    "field_problem",
    "reason",
    "reason_bytes",
    "reply_problem",
    "request_head",
    "request_id",
    "request_line_problem",
    "response_head",
    "trailer_block",
    "trailer_problem",
]

HOP_BY_HOP: Final = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"trailer",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"http2-settings",  # only meaningful with an h2c upgrade, which we ignore
    )
)
# request headers the data path reads or rewrites itself
SPECIAL_REQUEST_HEADERS: Final = HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"x-forwarded-for",
    b"x-request-id",
    b"expect",
}
CONTINUE_100: Final = b"HTTP/1.1 100 Continue\r\n\r\n"

_getrandbits: Final = random.Random().getrandbits  # its own generator, seeded from the OS
# UUID version 4 and the RFC 9562 variant, set in 128 random bits
_UUID_KEEP: Final = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID_SET: Final = (0x4000 << 64) | (0x8000 << 48)


def request_id() -> bytes:
    """A random (version 4) UUID, as Envoy generates for x-request-id; cheaper than uuid4().

    The bits come from ``random`` (seeded from the OS at start), not ``os.urandom``: a
    request id is a correlation handle, not a secret, and this saves a syscall per request.
    (Of the ways measured compiled, hex() and an f-string cost least: ~0.3 µs.)
    """
    h = (_getrandbits(128) & _UUID_KEEP | _UUID_SET).to_bytes(16, "big").hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}".encode()


# -- what may go on the wire -------------------------------------------------------------

# RFC 9110 §5.1, §5.5 (Envoy's codec refuses the same): a field name is a token, a value
# holds no CR, LF or NUL, a method is a token and a path is origin-form (or "*"). A head
# that breaks these is never written.
_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_ORIGIN_FORM: Final = re.compile(rb"/[^\x00-\x20\x7f]*|\*")
_GOOD_NAMES: Final[set[bytes]] = set()  # names already checked (bounded)


def field_problem(name: bytes, value: bytes) -> str | None:
    """Why ``name: value`` cannot be serialized, or None."""
    if name not in _GOOD_NAMES:
        if not _TOKEN.fullmatch(name):
            return f"invalid header name {name[:64]!r}"
        if len(_GOOD_NAMES) < 4096:
            _GOOD_NAMES.add(name)
    # (ints, not b"\r": a one-byte bytes needle first fails as an int, with a TypeError
    # raised and cleared inside CPython, ~8x the cost)
    if 13 in value or 10 in value or 0 in value:
        return f"header {name[:64].decode('latin-1')} has CR, LF or NUL in its value"
    return None


def request_line_problem(method: bytes, path: bytes) -> str | None:
    """Why ``method path`` cannot start a request line, or None."""
    if method not in _GOOD_NAMES:
        if not _TOKEN.fullmatch(method):
            return f"invalid :method {method[:64]!r}"
        if len(_GOOD_NAMES) < 4096:
            _GOOD_NAMES.add(method)  # a method is a token too
    if not _ORIGIN_FORM.fullmatch(path):
        return f"invalid :path {path[:64]!r} (origin-form or *)"
    return None


def trailer_problem(trailers: HeaderMap | None) -> str | None:
    """Why a trailer field cannot be serialized, or None."""
    if trailers:
        for k, v in trailers:
            problem = field_problem(k, v)
            if problem is not None:
                return "trailer: " + problem
    return None


def _block_suspect(block: bytes, lines: int) -> bool:
    """True unless ``block`` (``lines`` field lines joined by CRLF) holds no CR, LF or
    NUL of its own: the fast check, one pass each in C; the slow one says what is wrong."""
    return block.count(10) != lines - 1 or block.count(13) != lines - 1 or 0 in block


def _pairs_problem(pairs: Iterable[tuple[bytes, bytes]]) -> str | None:
    for k, v in pairs:
        if k[:1] != b":" and k != b"content-length" and k not in HOP_BY_HOP:
            problem = field_problem(k, v)
            if problem is not None:
                return problem
    return None


# -- reason phrases ------------------------------------------------------------------------

# Python's (http.HTTPStatus, RFC 9110's names); a code it does not know prints "Unknown",
# as Envoy's CodeUtility does.
_REASON_BYTES: Final = {s.value: s.phrase.encode() for s in HTTPStatus}


def reason(status: int) -> str:
    phrase = _REASON_BYTES.get(status)
    return phrase.decode() if phrase is not None else "Unknown"


def reason_bytes(status: int) -> bytes:
    return _REASON_BYTES.get(status) or reason(status).encode()


# -- bodies --------------------------------------------------------------------------------


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (RFC 9112 §7.1)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def trailer_block(trailers: HeaderMap | None) -> bytes:
    """The end of a chunked body: the last chunk, the trailer fields, CRLF."""
    if not trailers:
        return b"0\r\n\r\n"
    lines = [k + b": " + v for k, v in trailers if k[:1] != b":"]
    return b"0\r\n%s\r\n\r\n" % b"\r\n".join(lines) if lines else b"0\r\n\r\n"


# -- heads ---------------------------------------------------------------------------------


class RequestHead:
    """A serialized request head and the framing it chose for the body (a compiled class:
    a NamedTuple's constructor runs interpreted code, once per request)."""

    def __init__(self, data: bytes, chunked: bool, declared: int) -> None:
        self.data: Final = data
        self.chunked: Final = chunked
        self.declared: Final = declared  # the content-length written (-1: none)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RequestHead) and (self.data, self.chunked, self.declared) == (
            other.data,
            other.chunked,
            other.declared,
        )

    def __repr__(self) -> str:
        return f"RequestHead({self.data!r}, {self.chunked}, {self.declared})"


class ResponseHead:
    """A serialized response head, its status and the framing it chose for the body."""

    def __init__(self, data: bytes, status: int, chunked: bool, declared: int) -> None:
        self.data: Final = data
        self.status: Final = status
        self.chunked: Final = chunked
        self.declared: Final = declared  # the content-length written (-1: none)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ResponseHead) and (
            self.data,
            self.status,
            self.chunked,
            self.declared,
        ) == (other.data, other.status, other.chunked, other.declared)

    def __repr__(self) -> str:
        return f"ResponseHead({self.data!r}, {self.status}, {self.chunked}, {self.declared})"


def request_head(
    h: HeaderMap,
    default_authority: bytes,
    trailers: HeaderMap | None,
    end: bool,
    released: list[bytes],
    has_body: bool,
) -> RequestHead | str:
    """The upstream request head for headers ``h``, or why it cannot be serialized: a CR,
    LF or NUL in a value, a name that is not a token, a bad :method or :path. ``end``: the
    whole body is in ``released``; ``has_body``: the client's request had one."""
    method = path = authority = b""
    lines = []
    declared = -1
    suspect = False
    verified = h.verified  # (as a strict parser delivered it: no scan needed)
    for k, v in h:
        if k[:1] == b":":
            if k == b":method":
                method = v
            elif k == b":path":
                path = v
            elif k == b":authority":
                authority = v
            continue
        if k == b"content-length":
            try:
                declared = int(v)
            except ValueError:
                declared = -1
            continue
        if k in HOP_BY_HOP:
            continue
        if not verified and k not in _GOOD_NAMES:
            suspect = True
        lines.append(k + b": " + v)
    method = method or b"GET"
    path = path or b"/"
    authority = authority or default_authority
    chunked = False
    written = -1
    if trailers:
        lines.append(b"transfer-encoding: chunked")  # trailers need chunked framing
        chunked = True
    elif end:  # the whole (released) body is in ``released``
        n = sum(map(len, released))
        if n or has_body or declared >= 0:
            lines.append(b"content-length: %d" % n)
        written = n
    elif declared >= 0:
        lines.append(b"content-length: %d" % declared)
        written = declared
    else:
        lines.append(b"transfer-encoding: chunked")
        chunked = True
    block = b"\r\n".join(lines)
    if (
        suspect
        or (not verified and lines and _block_suspect(block, len(lines)))
        or method not in _GOOD_NAMES
        or path[:1] != b"/"
        or trailers
    ):
        problem = (
            _pairs_problem(h) or request_line_problem(method, path) or trailer_problem(trailers)
        )
    else:
        problem = None if _ORIGIN_FORM.fullmatch(path) else request_line_problem(method, path)
    problem = problem or field_problem(b"host", authority)
    if problem:
        return problem
    if lines:
        data = b"%s %s HTTP/1.1\r\nhost: %s\r\n%s\r\n\r\n" % (method, path, authority, block)
    else:
        data = b"%s %s HTTP/1.1\r\nhost: %s\r\n\r\n" % (method, path, authority)
    return RequestHead(data, chunked, written)


def response_head(
    h: HeaderMap,
    trailers: HeaderMap | None,
    end: bool,
    released: list[bytes],
    head_request: bool,
    close: bool,
) -> ResponseHead | None:
    """The response head for the client, or None when a header cannot be serialized (the
    caller answers 502 instead, as Envoy's codec refuses such a response). ``end``: the
    whole body is in ``released``; ``head_request``: the answer to a HEAD (no body);
    ``close``: the connection closes after this response."""
    status = 200
    lines = []
    declared = -1
    suspect = False
    verified = h.verified  # (as a strict parser delivered it: no scan needed)
    for k, v in h:
        if k == b":status":
            try:
                status = int(v)
            except ValueError:
                status = 502
            continue
        if k[:1] == b":":
            continue
        if k == b"content-length":
            try:
                declared = int(v)
            except ValueError:
                declared = -1
            continue
        if k in HOP_BY_HOP:
            continue
        if not verified and k not in _GOOD_NAMES:
            suspect = True
        lines.append(k + b": " + v)
    if suspect or trailers:
        if _pairs_problem(h) or trailer_problem(trailers):
            return None
    chunked = False
    written = -1
    if status in (204, 304) or 100 <= status < 200:
        pass
    elif trailers and not head_request:
        lines.append(b"transfer-encoding: chunked")  # trailers need chunked framing
        chunked = True
    elif end:
        n = sum(map(len, released))
        if head_request and declared >= 0:
            n = declared
        lines.append(b"content-length: %d" % n)
        written = n
    elif declared >= 0:
        lines.append(b"content-length: %d" % declared)
        written = declared
    else:
        lines.append(b"transfer-encoding: chunked")
        chunked = True
    if close:
        lines.append(b"connection: close")
    block = b"\r\n".join(lines)
    if not verified and lines and _block_suspect(block, len(lines)):
        return None  # a CR, LF or NUL in a value
    if not lines:  # (a 204 or 304 with no header at all)
        data = b"HTTP/1.1 %d %s\r\n\r\n" % (status, reason_bytes(status))
    else:
        data = b"HTTP/1.1 %d %s\r\n%s\r\n\r\n" % (status, reason_bytes(status), block)
    return ResponseHead(data, status, chunked, written)


def reply_problem(headers: list[tuple[bytes, bytes]]) -> bool:
    """True when a local reply's headers cannot be serialized (``response_head`` refuses
    the same when the exchange sends them)."""
    return any(field_problem(k, v) for k, v in headers if k[:1] != b":")


def error_message(status: int, message: str) -> bytes:
    """The plain-text answer to a request that could not be parsed (the connection closes)."""
    body = (message + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {reason(status)}\r\ncontent-type: text/plain\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    return head + body
