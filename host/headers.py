"""Header maps: the one representation of HTTP headers, trailers and metadata that both
the Proxy-Wasm host (``host.wasm``) and the proxy (``host.proxy``) use.

A ``HeaderMap`` is an ordered list of (key, value) byte pairs, duplicates kept, keys
lower-cased as Envoy does (``LowerCaseString``). Values are raw bytes, never decoded.
This module knows neither the ABI's serialized pairs format (``host.wasm.pairs``) nor
HTTP/1.1 framing (``host.proxy.framing``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

__all__ = ["HeaderMap"]

# Lower-cased names by name: the same few header names recur on every request, and a
# dictionary hit is several times cheaper than the method call of bytes.lower() in
# compiled code. Bounded: cleared when full (names a peer makes up do not pile up).
_LOWERED: Final[dict[bytes, bytes]] = {}
_LOWERED_MAX: Final = 1024


def _lower(key: bytes) -> bytes:
    k = _LOWERED.get(key)
    if k is None:
        k = key.lower()
        if len(_LOWERED) >= _LOWERED_MAX:
            _LOWERED.clear()
        _LOWERED[key] = k
    return k


class HeaderMap:
    """Ordered multi-map of byte strings with case-insensitive (lower-cased) keys.

    ``verified``: every field is as a strict HTTP/1.1 parser (llhttp) delivered it, so
    names are tokens and values hold no CR, LF or NUL; the framing then skips its own
    scan. Only the HTTP/1.1 adapters set it. A change clears it, unless its caller says
    the field was ``checked`` to the same rule (the ABI's header functions, which refuse
    anything else); a removal keeps it."""

    __slots__ = ("_items", "verified")

    def __init__(self, items: Iterable[tuple[bytes | str, bytes | str]] = ()) -> None:
        self._items: list[tuple[bytes, bytes]] = [(_lower(_b(k)), _b(v)) for k, v in items]
        self.verified = False

    @classmethod
    def from_pairs(cls, pairs: list[tuple[bytes, bytes]]) -> HeaderMap:
        m = cls()
        m._items = [(k.lower(), v) for k, v in pairs]
        return m

    @classmethod
    def wrap(cls, items: list[tuple[bytes, bytes]], verified: bool = False) -> HeaderMap:
        """A map over ``items`` itself (no copy): keys already lower-case. ``verified``:
        the caller vouches for every field (see the class) and hands ``items`` over."""
        m = cls()
        m._items = items
        m.verified = verified
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

    def add(self, key: bytes | str, value: bytes | str, checked: bool = False) -> None:
        self._items.append((_lower(_b(key)), _b(value)))
        if not checked:
            self.verified = False

    def replace(self, key: bytes | str, value: bytes | str, checked: bool = False) -> None:
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
        if not checked:
            self.verified = False

    def remove(self, key: bytes | str) -> None:
        k = _lower(_b(key))
        self._items = [(ik, iv) for ik, iv in self._items if ik != k]

    def set_all(self, pairs: list[tuple[bytes, bytes]], checked: bool = False) -> None:
        self._items = [(k.lower(), v) for k, v in pairs]
        if not checked:
            self.verified = False

    def byte_size(self) -> int:
        return sum(len(k) + len(v) for k, v in self._items)

    def to_text_pairs(self) -> list[list[str]]:
        return [[k.decode("latin-1"), v.decode("utf-8", "replace")] for k, v in self._items]


def _b(x: bytes | str) -> bytes:
    if type(x) is bytes:
        return x
    return x.encode("utf-8") if isinstance(x, str) else bytes(x)
