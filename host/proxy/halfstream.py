"""One direction of an exchange (the request, or the response) and the rules every
protocol shares for it: the flow-control marks and the body-length rule.

``HalfStream`` holds what the filter holds back, what it released and what went to
the peer; the exchange's step handlers take a half-stream, so the request and the
response share one implementation. ``framed_headers`` applies the body-length rule
to the headers about to be sent, before any protocol adapter frames them. No wire
format, no socket, no wasm here.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from host.headers import HeaderMap

__all__ = ["ENTRY_COST", "HIGH_WATER", "LOW_WATER", "HalfStream", "framed_headers"]

# Flow control: past the high-water mark of bytes held for the other side, reading
# from the sending side pauses; it resumes below the low-water mark.
HIGH_WATER: Final = 1024 * 1024
LOW_WATER: Final = 256 * 1024
ENTRY_COST: Final = 64  # what one held chunk costs besides its bytes (so 1-byte chunks count too)


class HalfStream:
    """One direction of an exchange: what the filter holds back, what it released and
    what the peer got."""

    __slots__ = (
        "complete",
        "declared",
        "end",
        "end_written",
        "eos_delivered",
        "has_body",
        "head_sent",
        "headers",
        "out",
        "passed",
        "pending",
        "queued",
        "remaining",
        "request",
        "trailers",
        "waiting",
        "written",
    )

    def __init__(self, request: bool) -> None:
        self.request = request
        self.headers: HeaderMap | None = None
        self.trailers: HeaderMap | None = None
        self.has_body = False
        self.passed = False  # the filter let the headers through
        self.pending: deque[tuple[bytes, bool]] = deque()  # held while the filter waits
        self.waiting = False  # the filter answered Wait (or Hold on the headers)
        self.out: list[bytes] = []  # released bytes not yet sent
        self.queued = 0  # bytes in pending and out (flow control)
        self.head_sent = False
        self.declared = -1  # the content-length the sent headers declare (-1: none)
        self.written = 0  # body bytes sent
        self.end = False  # the filter released the end of the stream
        self.end_written = False
        # what the peer sends (the request side: the client's parser events)
        self.remaining = -1  # content-length bytes still to come (-1: chunked / none)
        self.complete = False  # the peer finished sending
        self.eos_delivered = False

    def take(self) -> bytes:
        """The released bytes, handed on now (flow control and the count follow)."""
        out = self.out
        data = b"".join(out) if len(out) > 1 else out[0]
        self.queued -= len(data) + len(out) * ENTRY_COST
        self.out = []
        self.written += len(data)
        return data


def _content_length(h: HeaderMap) -> int:
    for k, v in h._items:
        if k == b"content-length":
            try:
                return int(v)
            except ValueError:
                return -1
    return -1


def framed_headers(half: HalfStream, end: bool, head_request: bool = False) -> HeaderMap:
    """``half``'s headers as they go out, by the body-length rule (RFC 9112 §6): when
    the whole body is released with them (``end``), its real length is the
    ``content-length`` (a plugin may have changed the body); when trailers are known
    already, there is none (HTTP/1.1 frames them chunked); otherwise the declared length stays.
    ``head_request``: the answer to a HEAD keeps its declared length. The map is a copy
    when it changes: filters keep seeing the headers they passed. Records the declared
    length on ``half``."""
    h = half.headers
    assert h is not None
    declared = _content_length(h)
    if half.trailers and not head_request:
        if declared >= 0:
            h = HeaderMap.from_pairs([(k, v) for k, v in h if k != b"content-length"])
        half.declared = -1
        return h
    if end and not (head_request and declared >= 0):
        out = half.out
        n = len(out[0]) if len(out) == 1 else sum(map(len, out))
        if n != declared and (n or half.has_body or declared >= 0):
            pairs = [(k, v) for k, v in h if k != b"content-length"]
            pairs.append((b"content-length", b"%d" % n))
            h = HeaderMap.from_pairs(pairs)
            declared = n
    half.declared = declared
    return h
