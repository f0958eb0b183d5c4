"""Header maps and the serialized "pairs" wire format (ABI doc §5.1).

``HeaderMap`` lives in ``host.headers`` (the proxy uses it too) and is re-exported
here, where the Proxy-Wasm host has always imported it from.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from host.headers import HeaderMap

__all__ = [
    "MAX_PAIRS",
    "MAX_PAIRS_BYTES",
    "HeaderMap",
    "PairsError",
    "decode_pairs",
    "encode_pairs",
    "serialized_size",
]

MAX_PAIRS = 1024
MAX_PAIRS_BYTES = 1 << 20

_U32 = struct.Struct("<I")


class PairsError(ValueError):
    """A serialized map from the guest is malformed."""


def encode_pairs(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    items = list(pairs)
    if not items:
        return b""
    header = [len(items)]
    for k, v in items:
        header.append(len(k))
        header.append(len(v))
    out = bytearray(struct.pack(f"<{len(header)}I", *header))
    for k, v in items:
        out += k
        out += b"\0"
        out += v
        out += b"\0"
    return bytes(out)


def decode_pairs(data: bytes) -> list[tuple[bytes, bytes]]:
    """Decode a pairs buffer; empty (or a lone NUL) means no pairs.

    Unlike cpp-host (which silently yields an empty list), malformed input raises
    ``PairsError`` so host functions can answer BAD_ARGUMENT instead of wiping a map.
    """
    n = len(data)
    if n == 0 or data == b"\0":
        return []
    if n > MAX_PAIRS_BYTES:
        raise PairsError(f"serialized map of {n} bytes exceeds {MAX_PAIRS_BYTES}")
    if n < 4:
        raise PairsError("serialized map shorter than its count")
    (count,) = _U32.unpack_from(data, 0)
    if count > MAX_PAIRS:
        raise PairsError(f"serialized map has {count} pairs (max {MAX_PAIRS})")
    sizes_end = 4 + 8 * count
    if sizes_end > n:
        raise PairsError("serialized map truncated in its size table")
    sizes = struct.unpack_from(f"<{2 * count}I", data, 4)
    pos = sizes_end
    out: list[tuple[bytes, bytes]] = []
    for i in range(count):
        klen, vlen = sizes[2 * i], sizes[2 * i + 1]
        kend = pos + klen
        vend = kend + 1 + vlen
        if vend + 1 > n or data[kend] != 0 or data[vend] != 0:
            raise PairsError(f"serialized map entry {i} is truncated or not NUL-terminated")
        out.append((data[pos:kend], data[kend + 1 : vend]))
        pos = vend + 1
    if pos != n:
        raise PairsError(f"serialized map has {n - pos} trailing bytes")
    return out


def serialized_size(pairs: HeaderMap) -> int:
    """The length of ``encode_pairs(pairs)`` without building it (the spec's map size)."""
    items = pairs._items
    if not items:
        return 0
    return 4 + sum(10 + len(k) + len(v) for k, v in items)
