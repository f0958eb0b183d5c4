"""``pluginConfig`` as Istio serialises it (golang/protobuf jsonpb): the bytes a plugin
reads in ``proxy_on_configure``. Pure; the bottom layer of the package.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any


def _istio_json(value: Any) -> bytes:
    """Istio's ``protomarshal.ToJSON(Struct)`` (golang/protobuf jsonpb, no indent): object
    keys sorted, numbers are doubles printed as Go's encoding/json does, strings escaped as
    Go does (<, >, & and U+2028/9 as \\u escapes). istio/istio pilot/pkg/model/wasm.go."""
    return _go_json(value).encode("utf-8")


def _go_json(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return _go_number(float(value))
    if isinstance(value, str):
        return _go_string(value)
    if isinstance(value, list):
        return "[" + ",".join(_go_json(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(f"{_go_string(str(k))}:{_go_json(value[k])}" for k in sorted(value))
            + "}"
        )
    raise TypeError(f"not JSON: {value!r}")


def _go_number(f: float) -> str:
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    a = abs(f)
    if a < 1e-6 or a >= 1e21:
        mantissa, exp = repr(f).split("e")
        n = int(exp)
        return f"{mantissa}e-{-n}" if n < 0 else f"{mantissa}e+{n:02d}"
    s = format(Decimal(repr(f)), "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


_GO_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}


def _go_string(s: str) -> str:
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif o < 0x20 or ch in "<>&" or o in (0x2028, 0x2029):
            out.append(f"\\u{o:04x}")
        elif 0xD800 <= o <= 0xDFFF:
            out.append("\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
