"""Which traffic goes where: request routes, and whether a WasmPlugin applies to a listener.

``RouteTable`` is the compiled ``spec.routes`` of the Proxy document with the default
cluster as the last, catch-all route (named ``default``, as Istio names its inbound
catch-all route). ``select(headers)`` returns the first route whose conditions all hold
(Envoy's route table: first match wins), or None, which the data path answers with
404 ``route_not_found`` as Envoy does.

``plugin_match_verdict`` applies a WasmPlugin's ``match`` (Istio TrafficSelectors,
operator reference §1.1) to a listener: its bound port and the traffic direction the
Proxy document declares. Istio evaluates it when it builds a listener's filter chain;
so do we, once per listener, never per request.

Pure functions over header maps and config values: no sockets, no wasm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from host.headers import HeaderMap
from host.proxy.config import RouteConfig, TrafficSelector

__all__ = ["DEFAULT_ROUTE_NAME", "Route", "RouteTable", "plugin_match_verdict"]

DEFAULT_ROUTE_NAME: Final = "default"


@dataclass(frozen=True, slots=True)
class Route:
    """One compiled route: the conditions as bytes, ready for header maps."""

    name: str
    cluster: str
    prefix: bytes | None = None
    path: bytes | None = None
    authority: bytes | None = None  # lower-case
    authority_has_port: bool = False
    headers: tuple[tuple[bytes, bytes], ...] = ()

    @classmethod
    def from_config(cls, rc: RouteConfig) -> Route:
        auth = rc.authority.encode() if rc.authority is not None else None
        return cls(
            name=rc.name,
            cluster=rc.cluster,
            prefix=rc.prefix.encode() if rc.prefix is not None else None,
            path=rc.path.encode() if rc.path is not None else None,
            authority=auth,
            authority_has_port=auth is not None and _has_port(auth),
            headers=tuple((k.encode(), v.encode()) for k, v in rc.headers),
        )

    def matches(self, req: _Request) -> bool:
        """Every condition given holds (Envoy's RouteMatch: all of them, AND)."""
        if self.prefix is not None and not req.path.startswith(self.prefix):
            return False
        if self.path is not None and req.path.split(b"?", 1)[0] != self.path:
            return False
        if self.authority is not None:
            a = req.authority if self.authority_has_port else req.host
            if a != self.authority:
                return False
        # Envoy's HeaderMatcher on a repeated header sees the values joined by ","
        return all(req.headers.get(name) == value for name, value in self.headers)


class _Request:
    """What the routes look at, read from the header map in one pass."""

    __slots__ = ("authority", "headers", "host", "path")

    def __init__(self, headers: HeaderMap, names: frozenset[bytes]) -> None:
        path = authority = host_header = None
        seen: dict[bytes, list[bytes]] = {}
        for k, v in headers:
            if k == b":path":
                path = v if path is None else path
            elif k == b":authority":
                authority = v if authority is None else authority
            elif k == b"host":
                host_header = v if host_header is None else host_header
            if k in names:
                seen.setdefault(k, []).append(v)
        self.path = path or b""
        self.authority = (authority or host_header or b"").lower()
        a = self.authority
        self.host = a[: a.rfind(b":")] if _has_port(a) else a
        self.headers = {k: b",".join(vs) for k, vs in seen.items()}


class RouteTable:
    """The routes in order, then the default cluster (when there is one)."""

    __slots__ = ("_names", "_only", "routes")

    def __init__(self, routes: Sequence[RouteConfig], default_cluster: str | None) -> None:
        compiled = [Route.from_config(r) for r in routes]
        if default_cluster is not None:
            compiled.append(Route(DEFAULT_ROUTE_NAME, default_cluster))  # no condition
        self.routes: tuple[Route, ...] = tuple(compiled)
        self._names = frozenset(k for r in compiled for k, _v in r.headers)
        # no routes configured: every request takes the default (no header lookups)
        self._only = compiled[0] if not routes and compiled else None

    def select(self, headers: HeaderMap) -> Route | None:
        """The first route that matches ``headers``; None: no route (404)."""
        if self._only is not None:
            return self._only
        req = _Request(headers, self._names)
        for r in self.routes:
            if r.matches(req):
                return r
        return None


def _has_port(authority: bytes) -> bool:
    # "host:port", "[v6]:port"; a bare IPv6 literal in brackets has no port
    i = authority.rfind(b":")
    return i > authority.rfind(b"]") and authority[i + 1 :].isdigit()


def plugin_match_verdict(match: Sequence[TrafficSelector], port: int, direction: str) -> str | None:
    """None when a plugin with ``match`` applies to a listener on ``port`` whose traffic
    is ``direction`` (SERVER: inbound, CLIENT: outbound); else why not, for display.

    Istio (pilot/pkg/model/wasm.go ``matchMode``/``matchPorts``): no selector applies
    everywhere; otherwise ANY selector must hold, and a selector holds when its mode
    covers the direction (CLIENT_AND_SERVER and UNDEFINED cover both) and its port list
    is empty or names the port."""
    if not match:
        return None
    for sel in match:
        mode_ok = sel.mode in ("CLIENT_AND_SERVER", "UNDEFINED") or sel.mode == direction
        if mode_ok and (not sel.ports or port in sel.ports):
            return None
    parts = []
    for sel in match:
        conds = []
        if sel.mode not in ("CLIENT_AND_SERVER", "UNDEFINED"):
            conds.append(f"mode {sel.mode}")
        if sel.ports:
            conds.append("ports [" + ", ".join(str(p) for p in sel.ports) + "]")
        parts.append(" ".join(conds) or "any")
    return f"match: {' or '.join(parts)} vs listener {port} ({direction})"
