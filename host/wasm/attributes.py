"""Envoy's attribute catalogue for proxy_get_property and CEL (ABI doc §5.2-5.4).

Every attribute resolves to a typed value first (``resolve``): ``str``, ``bytes``,
``int`` (int64), ``UInt`` (uint64), ``bool``, ``float``, ``Timestamp`` / ``Duration``
(nanoseconds), ``dict`` (map), ``list``, ``Message`` (a protobuf message with its
serialized bytes and its fields by name) or ``LookupOnly`` (a map that can be indexed
but not listed, as Envoy's ``filter_state`` and its request/response wrappers).
``encode`` turns a value into the bytes Envoy returns (§5.3; Envoy's
``serializeValue``): strings raw, int/uint as 8 bytes little-endian, bool as one byte,
timestamps and durations as int64 nanoseconds, maps and lists in the pairs encoding,
messages as protobuf; a value that cannot be listed raises ``SerializationFailure``.
``lookup`` is both for a NUL-separated path. The same values feed CEL expressions
(``host.wasm.foreign``).

``TABLE`` lists what is provided: top-level name -> child -> (type, when). Both the
current ``xds.*`` names and the legacy top-level ones (``node``, ``cluster_name`` ...)
resolve. Pure functions over context data: no wasmtime, no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from host.headers import HeaderMap
from host.tls_info import CertFacts, TlsInfo
from host.wasm.node import DEFAULT_NODE, Node
from host.wasm.pairs import encode_pairs

if TYPE_CHECKING:
    from host.wasm.context import Context, StreamInfo

__all__ = [
    "ATTRIBUTE_NAMES",
    "TABLE",
    "Duration",
    "LookupOnly",
    "Message",
    "SerializationFailure",
    "Timestamp",
    "UInt",
    "encode",
    "lookup",
    "resolve",
    "resolve_top",
]

_I64 = struct.Struct("<q")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")


class UInt(int):
    """A uint64 attribute (``connection.id``)."""


class Duration(int):
    """A duration attribute, in nanoseconds."""


class Timestamp(int):
    """A timestamp attribute, in nanoseconds since the Unix epoch."""


class LookupOnly(dict[str, Any]):
    """A map whose entries can be read one by one but which cannot be serialized whole
    (Envoy: ``ListKeys`` unimplemented → SERIALIZATION_FAILURE)."""


@dataclass(frozen=True)
class Message:
    """A protobuf message attribute: its serialized bytes, and its fields by name for
    path walks (``xds.node.metadata.NAMESPACE``)."""

    data: bytes
    fields: Mapping[str, Any]


class SerializationFailure(Exception):
    """The value exists but has no byte encoding (e.g. the whole ``filter_state``)."""


# -- encoding (Envoy's serializeValue) --------------------------------------------------


def encode(v: object) -> bytes:
    """``v`` in Envoy's property encoding (ABI doc §5.3)."""
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, bool):
        return b"\x01" if v else b"\x00"
    if isinstance(v, UInt):
        return _U64.pack(v & 0xFFFFFFFFFFFFFFFF)
    if isinstance(v, int):
        return _I64.pack(v)
    if isinstance(v, float):
        return _F64.pack(v)
    if isinstance(v, Message):
        return v.data
    if isinstance(v, LookupOnly):
        raise SerializationFailure("this map can be looked into but not listed")
    if isinstance(v, Mapping):
        return encode_pairs([(encode(k), encode(x)) for k, x in v.items()])
    if isinstance(v, (list, tuple)):
        return encode_pairs([(encode(x), b"") for x in v])
    if v is None:
        raise SerializationFailure("null value")
    raise SerializationFailure(f"no encoding for {type(v).__name__}")


# -- the values ---------------------------------------------------------------------------

Getter = Callable[["Context", "StreamInfo"], Any]


def _headers_map(m: HeaderMap | None) -> dict[bytes, bytes] | None:
    if m is None:
        return None
    # Multi-valued headers are comma-joined, as Envoy's header wrappers do.
    seen: dict[bytes, list[bytes]] = {}
    for k, v in m:
        seen.setdefault(k, []).append(v)
    return {k: b",".join(vs) for k, vs in seen.items()}


def _split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return addr, 0


def _req_headers(ctx: Context) -> HeaderMap | None:
    d = getattr(ctx, "request", None)
    return getattr(d, "headers", None)


def _resp_headers(ctx: Context) -> HeaderMap | None:
    d = getattr(ctx, "response", None)
    return getattr(d, "headers", None)


def _rh(name: bytes) -> Getter:
    def get(ctx: Context, info: StreamInfo) -> Any:
        h = _req_headers(ctx)
        return h.get(name) if h is not None else None

    return get


def _path_part(ctx: Context, part: int) -> bytes | None:
    h = _req_headers(ctx)
    p = h.get(b":path") if h is not None else None
    if p is None:
        return None
    if part == 0:
        return p.split(b"?", 1)[0]
    return p.split(b"?", 1)[1] if b"?" in p else b""


def _request_size(ctx: Context, info: StreamInfo) -> int:
    # Envoy: the content-length header when there is one, else the body bytes received.
    h = _req_headers(ctx)
    cl = h.get(b"content-length") if h is not None else None
    if cl is not None and cl.isdigit():
        return int(cl)
    return info.request_size


def _headers_bytes(h: HeaderMap | None) -> int:
    return h.byte_size() if h is not None else 0


def _response_code(ctx: Context, info: StreamInfo) -> int | None:
    h = _resp_headers(ctx)
    st = h.get(b":status") if h is not None else None
    if st is not None and st.isdigit():
        return int(st)
    return info.response_code or None


def _grpc_status(ctx: Context, info: StreamInfo) -> int | None:
    h = _resp_headers(ctx)
    v = h.get(b"grpc-status") if h is not None else None
    return int(v) if v is not None and v.isdigit() else None


def _response_trailers(ctx: Context, info: StreamInfo) -> Any:
    d = getattr(ctx, "response", None)
    return _headers_map(getattr(d, "trailers", None))


def _metadata_message(filter_metadata: Mapping[str, Mapping[str, Any]]) -> Message:
    """envoy.config.core.v3.Metadata: filter_metadata = 1 (map<string, Struct>)."""
    from host.wasm.proto import field_bytes, field_message, struct_message

    data = b"".join(
        field_message(1, field_bytes(1, k) + field_message(2, struct_message(v)))
        for k, v in sorted(filter_metadata.items())
    )
    return Message(
        data,
        {
            "filter_metadata": {k: dict(v) for k, v in filter_metadata.items()},
            "typed_filter_metadata": {},
        },
    )


_EMPTY_METADATA = _metadata_message({})


def node_value(node: Node) -> Message:
    """``xds.node`` as a message attribute (fields walkable by name)."""
    fields: dict[str, Any] = {
        "id": node.id,
        "cluster": node.cluster,
        "metadata": dict(node.metadata),
        "user_agent_name": node.user_agent_name,
    }
    if node.locality:
        fields["locality"] = Message(node.locality_message(), dict(node.locality))
    return Message(node.message(), fields)


def _node_of(ctx: Context, info: StreamInfo | None) -> Node:
    if info is not None and info.node is not None:
        return info.node
    host = getattr(getattr(ctx, "vm", None), "host", None)
    node = getattr(host, "node", None)
    return node if isinstance(node, Node) else DEFAULT_NODE


def _filter_state(ctx: Context, info: StreamInfo) -> LookupOnly:
    return LookupOnly({k.decode("utf-8", "replace"): v for k, v in ctx.filter_state.items()})


def _upstream_addr(info: StreamInfo) -> str | None:
    return info.upstream_address or None


def _s(v: str | None) -> str | None:
    return v if v else None


_S = "string"
_I = "int"


def _tls_entries(
    side: Callable[[StreamInfo], TlsInfo | None], when: str
) -> dict[str, tuple[Getter, str, str]]:
    """The TLS children of ``connection``/``upstream`` (Envoy's ``extractSslInfo``): only
    on a TLS connection; the version and subjects always there (subjects "" without a
    certificate), the first SAN of a kind, the digest and PEM only with a peer
    certificate."""

    def field(pick: Callable[[TlsInfo], Any]) -> Getter:
        def get(ctx: Context, info: StreamInfo) -> Any:
            t = side(info)
            return pick(t) if t is not None else None

        return get

    def first(values: tuple[str, ...]) -> str | None:
        return values[0] if values else None

    def cert(c: CertFacts | None, pick: Callable[[CertFacts], Any]) -> Any:
        return pick(c) if c is not None else None

    return {
        "tls_version": (field(lambda t: t.version), _S, when),
        "subject_local_certificate": (
            field(lambda t: t.local.subject if t.local else ""),
            _S,
            when,
        ),
        "subject_peer_certificate": (field(lambda t: t.peer.subject if t.peer else ""), _S, when),
        "dns_san_local_certificate": (
            field(lambda t: cert(t.local, lambda c: first(c.dns_sans))),
            _S,
            when + ", a DNS SAN in our certificate",
        ),
        "dns_san_peer_certificate": (
            field(lambda t: cert(t.peer, lambda c: first(c.dns_sans))),
            _S,
            when + ", a DNS SAN in the peer's certificate",
        ),
        "uri_san_local_certificate": (
            field(lambda t: cert(t.local, lambda c: first(c.uri_sans))),
            _S,
            when + ", a URI SAN in our certificate",
        ),
        "uri_san_peer_certificate": (
            field(lambda t: cert(t.peer, lambda c: first(c.uri_sans))),
            _S,
            when + ", a URI SAN in the peer's certificate",
        ),
        "sha256_peer_certificate_digest": (
            field(lambda t: cert(t.peer, lambda c: c.sha256 or None)),
            _S,
            when + ", a peer certificate",
        ),
        "peer_certificate": (
            field(lambda t: cert(t.peer, lambda c: c.pem_url_encoded or None)),
            _S,
            when + ", a peer certificate (URL-encoded PEM)",
        ),
    }


#: top-level name -> child -> (getter, type, when). ``when`` says when Envoy has it.
TABLE: dict[str, dict[str, tuple[Getter, str, str]]] = {
    "request": {
        "path": (_rh(b":path"), _S, "request headers on"),
        "url_path": (lambda c, i: _path_part(c, 0), _S, "request headers on"),
        "host": (lambda c, i: _rh(b":authority")(c, i) or _rh(b"host")(c, i), _S, "headers on"),
        "scheme": (lambda c, i: _rh(b":scheme")(c, i) or i.scheme, _S, "request headers on"),
        "method": (_rh(b":method"), _S, "request headers on"),
        "headers": (lambda c, i: _headers_map(_req_headers(c)), "map", "request headers on"),
        "headers_bytes": (
            lambda c, i: _headers_bytes(_req_headers(c)) if _req_headers(c) else None,
            _I,
            "request headers on",
        ),
        "referer": (_rh(b"referer"), _S, "when the header is present"),
        "useragent": (_rh(b"user-agent"), _S, "when the header is present"),
        "time": (lambda c, i: Timestamp(i.start_time_ns), "timestamp", "always"),
        "id": (
            lambda c, i: _rh(b"x-request-id")(c, i) or _s(i.request_id),
            _S,
            "request headers on",
        ),
        "protocol": (lambda c, i: i.protocol, _S, "always"),
        "query": (lambda c, i: _path_part(c, 1), _S, "request headers on"),
        "duration": (
            lambda c, i: Duration(i.duration_ns) if i.request_complete else None,
            "duration",
            "proxy_on_log",
        ),
        "size": (_request_size, _I, "always (content-length, else body bytes so far)"),
        "total_size": (
            lambda c, i: i.request_size + _headers_bytes(_req_headers(c)),
            _I,
            "always",
        ),
    },
    "response": {
        "code": (_response_code, _I, "response headers on"),
        "code_details": (lambda c, i: _s(i.response_code_details), _S, "response headers on"),
        "flags": (lambda c, i: i.response_flags, _I, "always"),
        "grpc_status": (_grpc_status, _I, "gRPC responses"),
        "headers": (lambda c, i: _headers_map(_resp_headers(c)), "map", "response headers on"),
        "headers_bytes": (
            lambda c, i: _headers_bytes(_resp_headers(c)) if _resp_headers(c) else None,
            _I,
            "response headers on",
        ),
        "trailers": (_response_trailers, "map", "response trailers on"),
        "size": (lambda c, i: i.response_size, _I, "always (body bytes sent so far)"),
        "total_size": (
            lambda c, i: i.response_size + _headers_bytes(_resp_headers(c)),
            _I,
            "always",
        ),
        "backend_latency": (
            lambda c, i: Duration(i.backend_latency_ns) if i.backend_latency_ns else None,
            "duration",
            "after upstream response headers",
        ),
    },
    "source": {
        "address": (lambda c, i: _s(i.source_address), _S, "always"),
        "port": (
            lambda c, i: _split_addr(i.source_address)[1] if i.source_address else None,
            _I,
            "always",
        ),
    },
    "destination": {
        "address": (lambda c, i: _s(i.destination_address), _S, "always"),
        "port": (
            lambda c, i: _split_addr(i.destination_address)[1] if i.destination_address else None,
            _I,
            "always",
        ),
    },
    "connection": {
        "id": (lambda c, i: UInt(i.connection_id), "uint", "always"),
        "mtls": (lambda c, i: i.tls is not None and i.tls.mtls, "bool", "always (no TLS: false)"),
        "requested_server_name": (
            lambda c, i: i.tls.server_name if i.tls is not None else "",
            _S,
            "always (no TLS or no SNI: empty)",
        ),
        "termination_details": (lambda c, i: _s(i.termination_details), _S, "when set"),
        # a downstream handshake that failed never reaches an HTTP filter: no
        # transport_failure_reason here
        **_tls_entries(lambda i: i.tls, "TLS listener"),
    },
    "upstream": {
        "address": (lambda c, i: _upstream_addr(i), _S, "once an upstream host is chosen"),
        "port": (
            lambda c, i: _split_addr(i.upstream_address)[1] if i.upstream_address else None,
            _I,
            "once an upstream host is chosen",
        ),
        "local_address": (lambda c, i: _s(i.upstream_local_address), _S, "once connected"),
        "transport_failure_reason": (
            lambda c, i: _s(i.upstream_transport_failure_reason),
            _S,
            "after a connect failure",
        ),
        "request_attempt_count": (
            lambda c, i: UInt(i.attempt_count) if i.attempt_count else None,
            "uint",
            "once routed upstream",
        ),
        **_tls_entries(lambda i: i.upstream_tls, "https:// cluster, once connected"),
    },
    "xds": {
        "node": (lambda c, i: node_value(_node_of(c, i)), "message", "always"),
        "cluster_name": (lambda c, i: _s(i.cluster_name), _S, "when a route names a cluster"),
        "cluster_metadata": (
            lambda c, i: _EMPTY_METADATA if i.cluster_name else None,
            "message",
            "when a route names a cluster",
        ),
        "route_name": (lambda c, i: i.route_name, _S, "when a route matched"),
        "route_metadata": (
            lambda c, i: _EMPTY_METADATA if i.route_name is not None else None,
            "message",
            "when a route matched",
        ),
        "virtual_host_name": (
            lambda c, i: i.virtual_host_name if i.route_name is not None else None,
            _S,
            "when a route matched",
        ),
        "virtual_host_metadata": (
            lambda c, i: _EMPTY_METADATA if i.route_name is not None else None,
            "message",
            "when a route matched",
        ),
        "upstream_host_metadata": (
            lambda c, i: _EMPTY_METADATA if i.upstream_address else None,
            "message",
            "once an upstream host is chosen",
        ),
        "listener_direction": (lambda c, i: i.listener_direction, _I, "always"),
        "listener_metadata": (lambda c, i: _EMPTY_METADATA, "message", "always"),
        "filter_chain_name": (lambda c, i: i.filter_chain_name, _S, "always"),
    },
}

#: top-level names whose whole value is a message or a map (not a wrapper)
_WHOLE: dict[str, tuple[Getter, str, str]] = {
    "metadata": (
        lambda c, i: (
            _metadata_message(i.dynamic_metadata) if i.dynamic_metadata else _EMPTY_METADATA
        ),
        "message",
        "always",
    ),
    "filter_state": (_filter_state, "map (lookup only)", "always"),
    "upstream_filter_state": (lambda c, i: LookupOnly(), "map (lookup only)", "always"),
    "connection_id": (lambda c, i: UInt(i.connection_id), "uint", "always"),
}

# legacy top-level spellings (pre-2023 Envoy; the Go SDK's properties package)
_LEGACY = {
    "node": "node",
    "cluster_name": "cluster_name",
    "cluster_metadata": "cluster_metadata",
    "route_name": "route_name",
    "route_metadata": "route_metadata",
    "listener_direction": "listener_direction",
    "listener_metadata": "listener_metadata",
    "upstream_host_metadata": "upstream_host_metadata",
}

_PLUGIN = ("plugin_name", "plugin_root_id", "plugin_vm_id")
# attributes a root context (no stream) has
_STREAMLESS = {"xds", "node", "listener_direction", "listener_metadata", *_PLUGIN}

ATTRIBUTE_NAMES = sorted([*TABLE, *_WHOLE, *_LEGACY, *_PLUGIN])


def _plugin(ctx: Context, key: str) -> str:
    root = ctx.root
    if key == "plugin_name":
        return str(getattr(root, "plugin_name", ""))
    if key == "plugin_root_id":
        return str(getattr(root, "root_id", ""))
    return str(ctx.vm.config.vm_id)


def _stream_info(ctx: Context) -> StreamInfo | None:
    info: StreamInfo | None = getattr(ctx, "info", None)
    if info is not None and info.refresh is not None:
        info.refresh(info)
    return info


def resolve_top(ctx: Context, name: str, info: StreamInfo | None = None) -> Any:
    """The whole value of top-level attribute ``name`` as CEL sees it (request, response
    ... as maps of their children), or None. Values set with proxy_set_property are
    found here too (Envoy's filter state ``wasm.<name>``)."""
    if name in _PLUGIN:
        return _plugin(ctx, name)
    if info is None:
        info = _stream_info(ctx)
    if info is None:
        if name not in _STREAMLESS:
            return None
        from host.wasm.context import StreamInfo as _SI

        info = _SI()
    if name in _LEGACY:
        getter = TABLE["xds"][_LEGACY[name]][0]
        return getter(ctx, info)
    children = TABLE.get(name)
    if children is not None:
        out = LookupOnly()
        for child, (getter, _t, _w) in children.items():
            v = getter(ctx, info)
            if v is not None:
                out[child] = v
        return out
    whole = _WHOLE.get(name)
    if whole is not None:
        return whole[0](ctx, info)
    # Only names that are not attributes fall back to set_property values: Envoy's
    # FindValue resolves known tokens first and reads filter state "wasm.<name>" only
    # for unknown ones, so a plugin cannot shadow request.path (ABI doc §5.4).
    return ctx.filter_state.get(b"wasm." + name.encode())


def _walk(v: Any, seg: str) -> Any:
    if isinstance(v, Message):
        return v.fields.get(seg)
    if isinstance(v, Mapping):
        if seg in v:
            return v[seg]
        return v.get(seg.encode()) if not isinstance(v, LookupOnly) else None
    if isinstance(v, (list, tuple)):
        try:
            idx = int(seg)
        except ValueError:
            return None
        return v[idx] if 0 <= idx < len(v) else None
    return None


def resolve(ctx: Context, segments: list[str]) -> Any:
    """The typed value at ``segments``, or None (NOT_FOUND)."""
    if not segments:
        return None
    first = segments[0]
    rest = segments[1:]
    children = TABLE.get(first)
    if children is not None and rest:
        info = _stream_info(ctx)
        if info is None and first not in _STREAMLESS:
            return None
        if info is None:
            from host.wasm.context import StreamInfo as _SI

            info = _SI()
        entry = children.get(rest[0])
        if entry is None:
            return None
        if first == "request" and rest[0] == "headers" and len(rest) > 1:
            h = _req_headers(ctx)
            return h.joined(rest[1].encode()) if h is not None else None
        if first == "response" and rest[0] == "headers" and len(rest) > 1:
            h = _resp_headers(ctx)
            return h.joined(rest[1].encode()) if h is not None else None
        v = entry[0](ctx, info)
        rest = rest[1:]
    else:
        v = resolve_top(ctx, first)
    for seg in rest:
        if v is None:
            return None
        v = _walk(v, seg)
    return v


def lookup(ctx: Context, path: bytes) -> bytes | None:
    """The encoded value at NUL-separated ``path``, or None (NOT_FOUND); raises
    ``SerializationFailure`` for a value with no encoding."""
    if path.endswith(b"\0"):
        path = path[:-1]
    if not path:
        return None
    segments = path.decode("utf-8", "surrogateescape").split("\0")
    v = resolve(ctx, segments)
    if v is None:
        return None
    return encode(v)
