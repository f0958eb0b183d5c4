"""A tiny protobuf wire-format reader and writer, for the few small messages the host
exchanges with plugins: Envoy's foreign-function arguments (SetEnvoyFilterStateArguments,
DeclarePropertyArguments) and the messages it returns as property values (``xds.node``,
``google.protobuf.Struct`` metadata).

Not a protobuf library: no schemas, no unknown-field preservation. ``read_fields`` splits
a message into ``(field number, wire type, value)``; the ``field_*`` writers emit one
field each. Malformed input raises ``ProtoError``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence

__all__ = [
    "ProtoError",
    "field_bytes",
    "field_double",
    "field_message",
    "field_varint",
    "read_fields",
    "read_message",
    "struct_message",
    "varint",
]

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5
_MAX_VARINT_BYTES = 10


class ProtoError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def varint(v: int) -> bytes:
    """``v`` as a base-128 varint (negative ints as their 64-bit two's complement)."""
    v &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(data):
            raise ProtoError("truncated varint")
        b = data[pos + i]
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, pos + i + 1
        shift += 7
    raise ProtoError("varint longer than 10 bytes")


def read_fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Each field of a serialized message: (number, wire type, int or bytes value)."""
    pos = 0
    n = len(data)
    while pos < n:
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtoError("field number 0")
        if wire == VARINT:
            value, pos = _read_varint(data, pos)
            yield number, wire, value
        elif wire == LEN:
            size, pos = _read_varint(data, pos)
            if pos + size > n:
                raise ProtoError("length-delimited field runs past the end")
            yield number, wire, data[pos : pos + size]
            pos += size
        elif wire == FIXED64:
            if pos + 8 > n:
                raise ProtoError("truncated fixed64")
            yield number, wire, int.from_bytes(data[pos : pos + 8], "little")
            pos += 8
        elif wire == FIXED32:
            if pos + 4 > n:
                raise ProtoError("truncated fixed32")
            yield number, wire, int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
        else:
            raise ProtoError(f"unsupported wire type {wire}")


def read_message(data: bytes, schema: Mapping[int, str]) -> dict[int, int | bytes]:
    """The last value of each field named in ``schema`` (number -> "varint"|"bytes"), as
    proto3 parsing keeps the last occurrence; a field of the wrong wire type is an error."""
    out: dict[int, int | bytes] = {}
    for number, wire, value in read_fields(data):
        kind = schema.get(number)
        if kind is None:
            continue  # unknown field: skipped, as protobuf parsers do
        want = VARINT if kind == "varint" else LEN
        if wire != want:
            raise ProtoError(f"field {number}: wire type {wire}, expected {want}")
        out[number] = value
    return out


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3 | VARINT) + varint(value)


def field_bytes(number: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | LEN) + varint(len(data)) + data


def field_message(number: int, body: bytes) -> bytes:
    return field_bytes(number, body)


def field_double(number: int, value: float) -> bytes:
    return varint(number << 3 | FIXED64) + struct.pack("<d", value)


# -- google.protobuf.Struct / Value / ListValue -----------------------------------------


def _value_message(v: object) -> bytes:
    # Value: null_value = 1, number_value = 2, string_value = 3, bool_value = 4,
    # struct_value = 5, list_value = 6 (ListValue: values = 1)
    if v is None:
        return field_varint(1, 0)
    if isinstance(v, bool):
        return field_varint(4, int(v))
    if isinstance(v, (int, float)):
        return field_double(2, float(v))
    if isinstance(v, str):
        return field_bytes(3, v)
    if isinstance(v, Mapping):
        return field_message(5, struct_message(v))
    if isinstance(v, Sequence):
        return field_message(6, b"".join(field_message(1, _value_message(x)) for x in v))
    return field_bytes(3, str(v))


def struct_message(fields: Mapping[str, object]) -> bytes:
    """A JSON-like mapping as a serialized ``google.protobuf.Struct`` (keys sorted, as
    protobuf's deterministic serialization orders map entries)."""
    out = bytearray()
    for key in sorted(fields):
        entry = field_bytes(1, key) + field_message(2, _value_message(fields[key]))
        out += field_message(1, entry)
    return bytes(out)
