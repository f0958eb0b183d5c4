"""The canary decision: whether one request runs a plugin at a given share.

Operator-reference §2.3: only the sampled share of requests runs a canaried plugin
(random, or a sticky hash of a header or the client address); ``x-wasmdesk-canary:
always|never`` forces the canaried plugins (below 100%) on or off; the header is a
control header of this proxy, removed before plugins and upstream see it (also when no
plugin is configured: ``NoPluginsFilter``). Pure functions of the request; no wasm.
"""

from __future__ import annotations

import hashlib
import random

from host.headers import HeaderMap
from host.proxy.stream import CONTINUE, PassThroughFilter, Verdict

__all__ = ["CANARY_HEADER", "NoPluginsFilter", "canary_forced", "canary_sampled"]

CANARY_HEADER = b"x-wasmdesk-canary"


def canary_forced(headers: HeaderMap) -> bool | None:
    """``x-wasmdesk-canary: always`` → True, ``never`` → False, else None."""
    forced = headers.get(CANARY_HEADER)
    if forced is not None:
        f = forced.strip().lower()
        if f == b"always":
            return True
        if f == b"never":
            return False
    return None


def canary_sampled(
    percent: float, key: str, headers: HeaderMap, client_ip: str, forced: bool | None = None
) -> bool:
    """Whether this request runs a plugin at ``percent``% with canary key ``key``
    (``forced``: the request's x-wasmdesk-canary verdict, see ``canary_forced``).

    The header forces canaried plugins only: a plugin at 100% is not a canary and
    runs whatever it says (Kong's ``canary_by_header_name`` likewise only moves
    requests between the canary and the rest)."""
    if percent >= 100:
        return True
    if forced is not None:
        return forced
    if percent <= 0:
        return False
    if key == "random":
        return random.random() * 100 < percent
    if key == "client-ip":
        material = client_ip.encode()
    elif key.startswith("header:"):
        v = headers.get(key[7:])
        if v is None:
            # No key to hash: fall back to a random draw rather than always one side.
            return random.random() * 100 < percent
        material = v
    else:
        return random.random() * 100 < percent
    bucket = int.from_bytes(hashlib.blake2b(material, digest_size=8).digest(), "big") % 10_000
    return bucket < percent * 100


class NoPluginsFilter(PassThroughFilter):
    """The filter when no plugin is configured: everything passes, but the canary
    control header is still not forwarded upstream."""

    __slots__ = ()

    def request_headers(self, headers: HeaderMap, end_stream: bool) -> Verdict:
        if headers.get(CANARY_HEADER) is not None:
            headers.remove(CANARY_HEADER)
        return CONTINUE
