"""The ``wasmdesk.dev/v1alpha1`` Proxy document → the fields of :class:`ProxyConfig`: listener
and admin addresses, upstream clusters, routes, TCP listeners, direction, pull secrets,
listener limits and the lab's callout mocks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from host.proxy.config.enums import Direction
from host.proxy.config.errors import _Path
from host.proxy.config.fields import (
    _Ctx,
    _describe,
    _entries,
    _enum,
    _known_fields,
    _mapping,
    _string,
)
from host.proxy.config.model import (
    DEFAULT_ADMIN,
    DEFAULT_CLUSTER_TIMEOUT_S,
    DEFAULT_LISTEN,
    DIRECTIONS,
    ClusterConfig,
    ListenerTls,
    RouteConfig,
    TcpListenerConfig,
)
from host.proxy.config.units import _fmt_hostport, _is_loopback, _parse_hostport, _parse_seconds
from host.proxy.config.validate import _SCHEME, _resolve_path, http_url_error, is_header_name
from host.wasm.node import Node as NodeInfo
from host.wasm.node import NodeError

_PROXY_SPEC_FIELDS = (
    "listen",
    "admin",
    "clusters",
    "defaultCluster",
    "node",
    "routes",
    "direction",
    "pullSecrets",
    "timeouts",
    "maxConnections",
    "mocks",
    "tls",
    "tcp",
)
_TLS_FIELDS = ("cert", "key", "clientCa")
_TIMEOUT_FIELDS = {"requestHeaders": "request_headers_timeout_s", "idle": "idle_timeout_s"}
_CLUSTER_FIELDS = ("name", "url", "timeout", "connectTimeout", "caFile", "protocol")
CLUSTER_PROTOCOLS = ("http1", "h2")


def _parse_proxy(
    doc: dict[str, Any], ctx: _Ctx, base_dir: str | None = None
) -> dict[str, Any] | None:
    """The Proxy document's fields; ``base_dir`` anchors relative ``caFile`` paths (and
    only then are they checked to exist)."""
    before = len(ctx.issues)
    out: dict[str, Any] = {}
    _mapping(ctx, doc.get("metadata"), ("metadata",))
    spec = _mapping(ctx, doc.get("spec"), ("spec",)) or {}
    _known_fields(ctx, spec, ("spec",), _PROXY_SPEC_FIELDS)
    for key, names in (
        ("listen", ("listen_host", "listen_port")),
        ("admin", ("admin_host", "admin_port")),
    ):
        text = _string(ctx, spec.get(key), ("spec", key))
        if text is None:
            continue
        hp = _parse_hostport(text.strip())
        if isinstance(hp, str):
            ctx.error(("spec", key), f"{hp} (expected HOST:PORT, e.g. 127.0.0.1:10000)")
            continue
        if key == "admin" and not _is_loopback(hp[0]):
            ctx.error(
                ("spec", "admin"),
                "admin API listens on loopback only (127.0.0.0/8, ::1 or "
                f"localhost), got {hp[0]!r}",
            )
            continue
        out[names[0]], out[names[1]] = hp
    clusters: list[ClusterConfig] = []
    first: dict[str, int] = {}
    for i, path, m in _entries(
        ctx, spec.get("clusters"), ("spec", "clusters"), "name, url, timeout"
    ):
        _known_fields(ctx, m, path, _CLUSTER_FIELDS)
        name = _string(ctx, m.get("name"), (*path, "name"), required=True)
        if name is not None and not name.strip():
            ctx.error((*path, "name"), "must not be empty")
            name = None
        if name is not None and name in first:
            ctx.error(
                (*path, "name"),
                f"duplicate cluster name {name!r} (first at spec.clusters[{first[name]}])",
            )
            name = None
        url = _string(ctx, m.get("url"), (*path, "url"), required=True)
        if url is not None:
            err = _cluster_url_error(url)
            if err:
                ctx.error((*path, "url"), err)
                url = None
        timeouts: dict[str, float | None] = {
            "timeout": DEFAULT_CLUSTER_TIMEOUT_S,
            "connectTimeout": None,
        }
        for key in timeouts:
            if m.get(key) is None:
                continue
            seconds = _parse_seconds(m[key])
            if seconds is None:
                ctx.error(
                    (*path, key),
                    f"expected a positive duration (250ms, 5s, 1m or a number of "
                    f"seconds), got {_describe(m[key])}",
                )
            timeouts[key] = seconds
        ca_file = _string(ctx, m.get("caFile"), (*path, "caFile"))
        if ca_file is not None:
            if url is not None and not url.lower().startswith(("grpcs://", "https://")):
                ctx.error((*path, "caFile"), "only an https:// or grpcs:// cluster takes a caFile")
            ca_file = _resolve_path(ca_file, base_dir or os.getcwd())
            if base_dir is not None and not os.path.isfile(ca_file):
                ctx.error((*path, "caFile"), f"no such file: {ca_file!r}")
            elif base_dir is not None:
                from host.proxy.tls import ca_file_error

                problem = ca_file_error(ca_file)
                if problem:
                    ctx.error((*path, "caFile"), problem)
        protocol = _cluster_protocol(ctx, m.get("protocol"), (*path, "protocol"), url)
        if name is not None:
            first[name] = i
        if name is not None and url is not None and timeouts["timeout"] is not None:
            clusters.append(
                ClusterConfig(
                    name, url, timeouts["timeout"], timeouts["connectTimeout"], ca_file, protocol
                )
            )
    out["clusters"] = tuple(clusters)
    default = _string(ctx, spec.get("defaultCluster"), ("spec", "defaultCluster"))
    if default is not None:
        if default not in first:
            defined = ", ".join(first) or "none"
            ctx.error(
                ("spec", "defaultCluster"),
                f"{default!r} is not a cluster in spec.clusters (defined: {defined})",
            )
        elif any(c.name == default and not c.forwards for c in clusters):
            # found before start-up (file:line, exit 2), not as a start-up failure
            scheme = next(c.url for c in clusters if c.name == default).split(":", 1)[0]
            ctx.error(
                ("spec", "defaultCluster"),
                f"{default!r} is a tcp:// cluster: only a spec.tcp listener forwards to it"
                if scheme.lower() == "tcp"
                else f"{default!r} is an {scheme}:// cluster: the proxy forwards to http://, "
                f"https://, grpc:// and grpcs:// upstreams ({scheme} clusters serve plugin "
                "callouts)",
            )
        out["default_cluster"] = default
    if spec.get("node") is not None:
        try:
            out["node"] = NodeInfo.parse(spec["node"])
        except NodeError as e:
            ctx.error(("spec", "node"), str(e))
    out["routes"] = _parse_routes(ctx, spec.get("routes"), first, clusters)
    out["tcp"] = _parse_tcp(ctx, spec.get("tcp"), first, clusters, out)
    out["direction"] = Direction(
        _enum(ctx, spec.get("direction"), ("spec", "direction"), DIRECTIONS, Direction.SERVER)
    )
    secrets = _mapping(ctx, spec.get("pullSecrets"), ("spec", "pullSecrets"))
    if secrets:
        paths = [
            (str(k), _string(ctx, v, ("spec", "pullSecrets", str(k)))) for k, v in secrets.items()
        ]
        out["pull_secrets"] = tuple((k, v) for k, v in paths if v)
    _parse_listener_limits(spec, ctx, out)
    if spec.get("tls") is not None:
        tls = _parse_tls(ctx, spec["tls"], base_dir)
        if tls is not None:
            out["tls"] = tls
    if spec.get("mocks") is not None:  # the debugging lab's callout mocks
        from host.lab.mocks import MockError, parse_mocks

        try:
            parse_mocks(spec["mocks"], "")
        except MockError as e:
            ctx.error(("spec", "mocks"), str(e).removeprefix(": "))
        else:
            out["mocks"] = tuple(spec["mocks"])
    return None if len(ctx.issues) > before else out


_ROUTE_FIELDS = ("name", "match", "cluster")
_ROUTE_MATCH_FIELDS = ("prefix", "path", "authority", "headers")


def _parse_routes(
    ctx: _Ctx, value: Any, defined: Mapping[str, int], clusters: Sequence[ClusterConfig]
) -> tuple[RouteConfig, ...]:
    """``spec.routes``: each a name, a match (prefix or path, authority, headers: all
    given must hold) and a cluster of ``spec.clusters`` the data path can reach."""
    routes: list[RouteConfig] = []
    for _i, path, m in _entries(ctx, value, ("spec", "routes"), "name, match, cluster"):
        ok = _known_fields(ctx, m, path, _ROUTE_FIELDS)
        name = _string(ctx, m.get("name"), (*path, "name")) or ""
        cluster, known = _cluster_ref(ctx, m, path, defined, clusters)
        if cluster is None:
            ok = False
        elif known is not None and _is_tcp(known.url):
            ctx.error(
                (*path, "cluster"),
                f"{known.url} is a tcp:// cluster: only a spec.tcp listener forwards to it, "
                "not an HTTP route",
            )
            ok = False
        elif known is not None and not known.forwards:
            ctx.error(
                (*path, "cluster"),
                f"the proxy forwards to http://, https://, grpc:// and grpcs:// upstreams; "
                f"{known.url} can serve plugin callouts but not be a route's cluster",
            )
            ok = False
        mpath: _Path = (*path, "match")
        match = _mapping(ctx, m.get("match"), mpath)
        if match is None:
            if m.get("match") is None:
                ctx.error(mpath, "required field is missing (prefix, path, authority or headers)")
            continue
        fields: dict[str, Any] = {}
        for key in match:
            if key == "safe_regex":
                ctx.error(
                    (*mpath, key),
                    "regular expressions are not supported; use prefix, path, authority or headers",
                )
                ok = False
            elif key not in _ROUTE_MATCH_FIELDS:
                ctx.error(
                    (*mpath, key),
                    f"unknown field; expected one of {', '.join(_ROUTE_MATCH_FIELDS)}",
                )
                ok = False
        for key in ("prefix", "path"):
            text = _string(ctx, match.get(key), (*mpath, key))
            if text is None:
                if match.get(key) is not None:
                    ok = False
                continue
            if not text.startswith("/"):
                ctx.error((*mpath, key), f"expected a path starting with '/', got {text!r}")
                ok = False
            fields[key] = text
        if "prefix" in fields and "path" in fields:
            ctx.error(mpath, "give prefix or path, not both (Envoy's path_specifier is one of)")
            ok = False
        authority = _string(ctx, match.get("authority"), (*mpath, "authority"))
        if authority is not None:
            if not authority.strip() or any(c.isspace() for c in authority):
                ctx.error((*mpath, "authority"), f"expected a host or host:port, got {authority!r}")
                ok = False
            fields["authority"] = authority.lower()
        elif match.get("authority") is not None:
            ok = False
        headers: list[tuple[str, str]] = []
        hmap = _mapping(ctx, match.get("headers"), (*mpath, "headers"))
        if hmap is None and match.get("headers") is not None:
            ok = False
        for hname, hvalue in (hmap or {}).items():
            hpath: _Path = (*mpath, "headers", hname)
            if not is_header_name(hname):
                ctx.error(hpath, f"not a valid header name: {hname!r}")
                ok = False
            elif isinstance(hvalue, bool) or not isinstance(hvalue, (str, int)):
                ctx.error(
                    hpath, f"expected the header's exact value (a string), got {_describe(hvalue)}"
                )
                ok = False
            else:
                headers.append((hname.lower(), str(hvalue)))
        if not fields and not headers:
            if ok:
                ctx.error(
                    mpath,
                    "empty match: give prefix, path, authority or headers "
                    "(prefix: / matches every request)",
                )
            continue
        if ok and cluster is not None:
            routes.append(RouteConfig(name, cluster, headers=tuple(headers), **fields))
    return tuple(routes)


_TCP_FIELDS = ("name", "listen", "cluster")
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def _cluster_ref(
    ctx: _Ctx,
    m: Mapping[str, Any],
    path: _Path,
    defined: Mapping[str, int],
    clusters: Sequence[ClusterConfig],
) -> tuple[str | None, ClusterConfig | None]:
    """An entry's required ``cluster`` field: the name (None: missing, not a string or
    not in ``spec.clusters``, each reported) and the cluster it names (None also when the
    entry that defines it did not parse: reported there)."""
    cluster = _string(ctx, m.get("cluster"), (*path, "cluster"), required=True)
    if cluster is None:
        return None, None
    if cluster not in defined:
        ctx.error(
            (*path, "cluster"),
            f"{cluster!r} is not a cluster in spec.clusters "
            f"(defined: {', '.join(defined) or 'none'})",
        )
        return None, None
    return cluster, next((c for c in clusters if c.name == cluster), None)


def _is_tcp(url: str) -> bool:
    return url.lower().startswith("tcp://")


def _parse_tcp(
    ctx: _Ctx,
    value: Any,
    defined: Mapping[str, int],
    clusters: Sequence[ClusterConfig],
    out: Mapping[str, Any],
) -> tuple[TcpListenerConfig, ...]:
    """``spec.tcp``: TCP listeners, each a ``listen`` address (a port no other listener of
    this document takes), a ``tcp://`` cluster of ``spec.clusters`` and an optional name
    (unique; default the address with ``:`` as ``_``, Envoy's listener naming)."""
    listeners: list[TcpListenerConfig] = []
    # addresses already taken: the HTTP listener and the admin API (as parsed or default)
    taken: list[tuple[str, int, str]] = [
        (
            str(out.get("listen_host", DEFAULT_LISTEN[0])),
            int(out.get("listen_port", DEFAULT_LISTEN[1])),
            "spec.listen",
        ),
        (
            str(out.get("admin_host", DEFAULT_ADMIN[0])),
            int(out.get("admin_port", DEFAULT_ADMIN[1])),
            "spec.admin",
        ),
    ]
    names: dict[str, int] = {}
    for i, path, m in _entries(ctx, value, ("spec", "tcp"), "name, listen, cluster"):
        ok = _known_fields(ctx, m, path, _TCP_FIELDS)
        hp: tuple[str, int] | None = None
        text = _string(ctx, m.get("listen"), (*path, "listen"), required=True)
        if text is not None:
            parsed = _parse_hostport(text.strip())
            if isinstance(parsed, str):
                ctx.error((*path, "listen"), f"{parsed} (expected HOST:PORT, e.g. 127.0.0.1:9000)")
                ok = False
            else:
                hp = parsed
        else:
            ok = False
        if hp is not None and hp[1] != 0:
            for host, port, where in taken:
                if port == hp[1] and (
                    host == hp[0] or host in _WILDCARD_HOSTS or hp[0] in _WILDCARD_HOSTS
                ):
                    ctx.error((*path, "listen"), f"port {hp[1]} is already taken by {where}")
                    ok = False
                    break
            else:
                taken.append((hp[0], hp[1], f"spec.tcp[{i}]"))
        cluster, known = _cluster_ref(ctx, m, path, defined, clusters)
        if cluster is None:
            ok = False
        elif known is not None and not _is_tcp(known.url):
            ctx.error(
                (*path, "cluster"),
                f"a TCP listener forwards to a tcp:// cluster; {cluster!r} is {known.url}",
            )
            ok = False
        name = _string(ctx, m.get("name"), (*path, "name"))
        if name is not None and (not name.strip() or any(c.isspace() for c in name)):
            ctx.error((*path, "name"), f"expected a name without spaces, got {name!r}")
            ok = False
        if name is None and hp is not None:
            name = _fmt_hostport(*hp).replace(":", "_")
        if name is not None and name in names:
            ctx.error(
                (*path, "name"),
                f"duplicate TCP listener name {name!r} (first at spec.tcp[{names[name]}]); "
                "give each a name",
            )
            ok = False
        if name is not None:
            names.setdefault(name, i)
        if ok and hp is not None and cluster is not None and name is not None:
            listeners.append(TcpListenerConfig(name, hp[0], hp[1], cluster))
    return tuple(listeners)


def _parse_listener_limits(spec: dict[str, Any], ctx: _Ctx, out: dict[str, Any]) -> None:
    """``spec.timeouts: {requestHeaders, idle}`` and ``spec.maxConnections``."""
    timeouts = _mapping(ctx, spec.get("timeouts"), ("spec", "timeouts")) or {}
    for key, value in timeouts.items():
        if key not in _TIMEOUT_FIELDS:
            ctx.error(("spec", "timeouts", key), "unknown field; expected requestHeaders or idle")
            continue
        seconds = _parse_seconds(value)
        if seconds is None:
            ctx.error(
                ("spec", "timeouts", key),
                f"expected a positive duration (250ms, 5s, 1m or a number of seconds), "
                f"got {_describe(value)}",
            )
            continue
        out[_TIMEOUT_FIELDS[key]] = seconds
    cap = spec.get("maxConnections")
    if cap is not None:
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            ctx.error(
                ("spec", "maxConnections"), f"expected a positive integer, got {_describe(cap)}"
            )
        else:
            out["max_connections"] = cap


def _parse_tls(ctx: _Ctx, value: Any, base_dir: str | None) -> ListenerTls | None:
    """``spec.tls``: ``demo``, or ``{cert, key, clientCa}`` (paths next to the config
    file). With ``base_dir`` the files are read and checked: they exist, parse as PEM,
    and the key is the certificate's."""
    if value == "demo":
        return ListenerTls(demo=True)
    m = _mapping(ctx, value, ("spec", "tls")) if not isinstance(value, str) else None
    if m is None:
        if isinstance(value, str):
            ctx.error(
                ("spec", "tls"),
                f"expected demo or a mapping (cert, key, clientCa), got {value!r}",
            )
        return None
    ok = _known_fields(
        ctx, m, ("spec", "tls"), _TLS_FIELDS, {"demo": " (the demo certificate is `tls: demo`)"}
    )
    paths: dict[str, str] = {}
    for key in _TLS_FIELDS:
        text = _string(ctx, m.get(key), ("spec", "tls", key), required=key != "clientCa")
        if text is None:
            ok = ok and key == "clientCa" and m.get(key) is None
            continue
        if not text.strip():
            ctx.error(("spec", "tls", key), "must not be empty")
            ok = False
            continue
        paths[key] = _resolve_path(text, base_dir or os.getcwd())
    if not ok:
        return None
    if base_dir is not None:
        from host.proxy.tls import listener_files_error

        problems = listener_files_error(paths["cert"], paths["key"], paths.get("clientCa"))
        for key, message in problems:
            ctx.error(("spec", "tls", key), message)
        if problems:
            return None
    return ListenerTls(paths["cert"], paths["key"], paths.get("clientCa"))


def _cluster_protocol(ctx: _Ctx, value: Any, path: _Path, url: str | None) -> str | None:
    """``protocol``: the data path's upstream protocol, ``http1`` (default) or ``h2``
    (HTTP/2 with prior knowledge on http://; grpc:// and grpcs:// are h2 already)."""
    if value is None:
        return None
    if not isinstance(value, str) or value not in CLUSTER_PROTOCOLS:
        ctx.error(
            path,
            f"expected http1 (HTTP/1.1, the default) or h2 (HTTP/2), got {_describe(value)}",
        )
        return None
    scheme = (url or "").split(":", 1)[0].lower()
    if scheme == "tcp":
        ctx.error(path, "tcp:// clusters carry bytes, not HTTP: drop protocol")
        return None
    if scheme in ("grpc", "grpcs") and value != "h2":
        ctx.error(path, f"{scheme}:// clusters speak HTTP/2: drop protocol or write h2")
        return None
    return value


def _cluster_url_error(url: str) -> str | None:
    m = _SCHEME.match(url)
    if m is None or m.group(1).lower() not in ("http", "https", "grpc", "grpcs", "tcp"):
        return f"expected an http://, https://, grpc://, grpcs:// or tcp:// URL, got {url!r}"
    err = http_url_error(url)
    if err:
        return err
    parts = urlsplit(url)
    if m.group(1).lower() == "tcp" and parts.port is None:
        return f"a tcp:// cluster needs a port (tcp://HOST:PORT), got {url!r}"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"a cluster is a scheme, host and port; drop the path/query from {url!r}"
    return None
