"""Units of the config's text: durations (``250ms``, ``1m30s``), sizes (``256Mi``), plain
numbers and ``HOST:PORT`` addresses, parsed and formatted back. The bottom layer: no
imports from the rest of the package.
"""

from __future__ import annotations

import ipaddress
import math
import re
from decimal import Decimal
from typing import Any

_DURATION = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ms|s|m|h))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
_DURATION_MS = {"ms": Decimal(1), "s": Decimal(1000), "m": Decimal(60_000), "h": Decimal(3_600_000)}
_QUANTITY = re.compile(r"(\d+)(Ki|Mi|Gi|k|K|M|G)?")
_QUANTITY_UNITS = {
    None: 1,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
}


def _parse_duration_ms(value: Any) -> Decimal | None:
    """Milliseconds from ``"250ms"``, ``"5s"``, ``"1m30s"``, ``"1h"`` or a number of seconds.

    Decimal arithmetic, so a value written back by :func:`_fmt_ms` reads back as the same
    float (``0.1 s`` → ``"100ms"`` → ``0.1 s`` exactly)."""
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, int):
            ms = Decimal(value) * 1000
        elif isinstance(value, float):
            ms = Decimal(repr(value)) * 1000
        elif isinstance(value, str):
            text = value.strip()
            if _DURATION.fullmatch(text):
                ms = sum(
                    (Decimal(n) * _DURATION_MS[u] for n, u in _DURATION_PART.findall(text)),
                    Decimal(0),
                )
            else:
                ms = Decimal(text) * 1000
        else:
            return None
    except ArithmeticError:  # decimal.InvalidOperation: not a number
        return None
    return ms if ms.is_finite() and ms > 0 and math.isfinite(float(ms)) else None


def _parse_seconds(value: Any) -> float | None:
    ms = _parse_duration_ms(value)
    return None if ms is None else float(ms / 1000)


def _fmt_ms(ms: Decimal) -> str:
    """``"5s"`` for whole seconds, else ``"250ms"`` (never an exponent)."""
    if ms >= 1000 and ms % 1000 == 0:
        return f"{ms // 1000:f}s"
    return f"{ms.normalize():f}ms"


def _fmt_seconds(seconds: float) -> str:
    return _fmt_ms(Decimal(repr(float(seconds))) * 1000)


def _parse_quantity(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _QUANTITY.fullmatch(value.strip())
        if m:
            return int(m.group(1)) * _QUANTITY_UNITS[m.group(2)]
    return None


def _fmt_quantity(n: int) -> str:
    for unit, size in (("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def _fmt_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _parse_hostport(value: str) -> tuple[str, int] | str:
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or value[end + 1 : end + 2] != ":":
            return "expected [IPv6]:PORT"
        host, port_text = value[1:end], value[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{host!r} is not an IPv6 address"
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep:
            return "expected HOST:PORT"
        if ":" in host:
            return "put an IPv6 address in brackets: [::1]:PORT"
    if not host or any(c.isspace() or c in "/?#@" for c in host):
        return f"invalid host {host!r}"
    if not port_text.isdigit():
        return f"the port must be a number, got {port_text!r}"
    port = int(port_text)
    # Port 0 asks the OS for a free port (tests, several instances side by side).
    if port > 65535:
        return f"the port must be within 1..65535 (or 0 for any free port), got {port}"
    return host, port


def _fmt_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
