"""Header maps and the serialized "pairs" wire format (ABI doc §5.1).

``HeaderMap`` is the host's representation of an HTTP header/trailer/metadata
map: an ordered list of (key, value) byte pairs, duplicates kept, keys lower-cased
as Envoy does (``LowerCaseString``). Values are raw bytes, never decoded.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

__all__ = [
    "MAX_PAIRS",
    "MAX_PAIRS_BYTES",
    "HeaderMap",
    "PairsError",
    "decode_pairs",
    "encode_pairs",
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


def _lower(key: bytes) -> bytes:
    return key.lower()


class HeaderMap:
    """Ordered multi-map of byte strings with case-insensitive (lower-cased) keys."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[bytes | str, bytes | str]] = ()) -> None:
        self._items: list[tuple[bytes, bytes]] = [(_lower(_b(k)), _b(v)) for k, v in items]

    @classmethod
    def from_pairs(cls, pairs: list[tuple[bytes, bytes]]) -> HeaderMap:
        m = cls()
        m._items = [(k.lower(), v) for k, v in pairs]
        return m

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HeaderMap) and self._items == other._items

    def __repr__(self) -> str:
        return f"HeaderMap({self._items!r})"

    def items(self) -> list[tuple[bytes, bytes]]:
        return list(self._items)

    def copy(self) -> HeaderMap:
        m = HeaderMap()
        m._items = list(self._items)
        return m

    def get(self, key: bytes | str) -> bytes | None:
        k = _lower(_b(key))
        for ik, iv in self._items:
            if ik == k:
                return iv
        return None

    def get_all(self, key: bytes | str) -> list[bytes]:
        k = _lower(_b(key))
        return [iv for ik, iv in self._items if ik == k]

    def joined(self, key: bytes | str) -> bytes | None:
        vals = self.get_all(key)
        return b",".join(vals) if vals else None

    def add(self, key: bytes | str, value: bytes | str) -> None:
        self._items.append((_lower(_b(key)), _b(value)))

    def replace(self, key: bytes | str, value: bytes | str) -> None:
        k = _lower(_b(key))
        v = _b(value)
        out: list[tuple[bytes, bytes]] = []
        done = False
        for ik, iv in self._items:
            if ik == k:
                if not done:
                    out.append((k, v))
                    done = True
            else:
                out.append((ik, iv))
        if not done:
            out.append((k, v))
        self._items = out

    def remove(self, key: bytes | str) -> None:
        k = _lower(_b(key))
        self._items = [(ik, iv) for ik, iv in self._items if ik != k]

    def set_all(self, pairs: list[tuple[bytes, bytes]]) -> None:
        self._items = [(k.lower(), v) for k, v in pairs]

    def serialize(self) -> bytes:
        return encode_pairs(self._items)

    def serialized_size(self) -> int:
        if not self._items:
            return 0
        return 4 + sum(10 + len(k) + len(v) for k, v in self._items)

    def byte_size(self) -> int:
        return sum(len(k) + len(v) for k, v in self._items)

    def to_text_pairs(self) -> list[list[str]]:
        return [[k.decode("latin-1"), v.decode("utf-8", "replace")] for k, v in self._items]


def _b(x: bytes | str) -> bytes:
    if type(x) is bytes:
        return x
    return x.encode("utf-8") if isinstance(x, str) else bytes(x)
