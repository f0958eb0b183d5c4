"""Envoy's attribute catalogue for proxy_get_property (ABI doc §5.2-5.4).

``lookup(ctx, segments)`` resolves a NUL-split property path against a context
and returns the value in Envoy's encoding (§5.3): strings raw, int/uint as 8
bytes little-endian, bool as one byte, timestamps and durations as int64
nanoseconds, maps and lists in the pairs encoding, messages as protobuf. Both the
current ``xds.*`` names and the legacy top-level ones (``node``, ``cluster_name``
...) resolve. Pure functions over context data: no wasmtime, no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from host.wasm.pairs import HeaderMap, encode_pairs

if TYPE_CHECKING:
    from host.wasm.context import Context, StreamInfo

__all__ = ["ATTRIBUTE_NAMES", "lookup"]

_I64 = struct.Struct("<q")
_U64 = struct.Struct("<Q")


def _int(v: int) -> bytes:
    return _I64.pack(v)


def _uint(v: int) -> bytes:
    return _U64.pack(v & 0xFFFFFFFFFFFFFFFF)


def _bool(v: bool) -> bytes:
    return b"\x01" if v else b"\x00"


def _map(m: HeaderMap | None) -> bytes | None:
    if m is None:
        return None
    # Multi-valued headers are comma-joined, as Envoy's request.headers does.
    seen: dict[bytes, list[bytes]] = {}
    for k, v in m:
        seen.setdefault(k, []).append(v)
    return encode_pairs([(k, b",".join(vs)) for k, vs in seen.items()])


def _pb_str(field: int, value: str) -> bytes:
    data = value.encode()
    return _pb_varint((field << 3) | 2) + _pb_varint(len(data)) + data


def _pb_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return addr, 0


def _node(info: StreamInfo, rest: list[bytes]) -> bytes | None:
    if not rest:
        # envoy.config.core.v3.Node: id = 1, cluster = 2 (metadata omitted).
        return _pb_str(1, info.node_id) + _pb_str(2, info.node_cluster)
    key = rest[0]
    if key == b"id":
        return info.node_id.encode()
    if key == b"cluster":
        return info.node_cluster.encode()
    if key == b"metadata":
        md = info.node_metadata
        if len(rest) == 1:
            return encode_pairs([(k.encode(), v.encode()) for k, v in md.items()])
        v = md.get(rest[1].decode("utf-8", "replace"))
        return v.encode() if v is not None else None
    return None


def _request(ctx: Context, info: StreamInfo, rest: list[bytes]) -> bytes | None:
    headers: HeaderMap | None = getattr(getattr(ctx, "request", None), "headers", None)
    if headers is None:
        return None
    if not rest:
        return None
    key = rest[0]
    h = headers.get
    if key == b"path":
        return h(b":path")
    if key == b"url_path":
        p = h(b":path")
        return p.split(b"?", 1)[0] if p is not None else None
    if key == b"query":
        p = h(b":path")
        return p.split(b"?", 1)[1] if p is not None and b"?" in p else b""
    if key == b"host":
        return h(b":authority") or h(b"host")
    if key == b"scheme":
        return h(b":scheme") or info.scheme.encode()
    if key == b"method":
        return h(b":method")
    if key == b"headers":
        if len(rest) > 1:
            return headers.joined(rest[1])
        return _map(headers)
    if key == b"headers_bytes":
        return _int(headers.byte_size())
    if key == b"referer":
        return h(b"referer")
    if key == b"useragent":
        return h(b"user-agent")
    if key == b"id":
        return h(b"x-request-id") or (info.request_id.encode() if info.request_id else None)
    if key == b"time":
        return _int(info.start_time_ns)
    if key == b"protocol":
        return info.protocol.encode()
    if key == b"duration":
        return _int(info.duration_ns) if info.duration_ns else None
    if key in (b"size", b"total_size"):
        body_size = info.request_size
        return _int(body_size if key == b"size" else body_size + headers.byte_size())
    return None


def _response(ctx: Context, info: StreamInfo, rest: list[bytes]) -> bytes | None:
    d = getattr(ctx, "response", None)
    headers: HeaderMap | None = getattr(d, "headers", None)
    if not rest:
        return None
    key = rest[0]
    if key == b"code":
        st = headers.get(b":status") if headers is not None else None
        return _int(int(st)) if st is not None and st.isdigit() else None
    if key == b"code_details":
        return info.response_code_details.encode() if info.response_code_details else None
    if key == b"flags":
        return _int(info.response_flags)
    if key == b"grpc_status":
        v = headers.get(b"grpc-status") if headers is not None else None
        return _int(int(v)) if v is not None and v.isdigit() else None
    if key == b"headers":
        if headers is None:
            return None
        if len(rest) > 1:
            return headers.joined(rest[1])
        return _map(headers)
    if key == b"trailers":
        return _map(getattr(d, "trailers", None))
    if key == b"headers_bytes":
        return _int(headers.byte_size()) if headers is not None else None
    if key in (b"size", b"total_size"):
        hb = headers.byte_size() if headers is not None else 0
        return _int(info.response_size if key == b"size" else info.response_size + hb)
    if key == b"backend_latency":
        return _int(info.backend_latency_ns) if info.backend_latency_ns else None
    return None


def _address(addr: str, rest: list[bytes]) -> bytes | None:
    if not addr or not rest:
        return None
    _host, port = _split_addr(addr)
    if rest[0] == b"address":
        return addr.encode()
    if rest[0] == b"port":
        return _int(port)
    return None


def _connection(info: StreamInfo, rest: list[bytes]) -> bytes | None:
    if not rest:
        return None
    key = rest[0]
    if key == b"id":
        return _uint(info.connection_id)
    if key == b"mtls":
        return _bool(False)
    if key == b"requested_server_name":
        return b""
    # TLS fields (tls_version, certificates, SANs ...): plaintext listener, absent.
    return None


def _xds(info: StreamInfo, rest: list[bytes]) -> bytes | None:
    if not rest:
        return None
    key = rest[0]
    if key == b"node":
        return _node(info, rest[1:])
    if key == b"cluster_name":
        return info.cluster_name.encode() if info.cluster_name else None
    if key == b"route_name":
        return info.route_name.encode() if info.route_name else None
    if key == b"listener_direction":
        return _int(info.listener_direction)
    return None


def _plugin(ctx: Context, key: bytes) -> bytes | None:
    root = ctx.root
    if key == b"plugin_name":
        return getattr(root, "plugin_name", "").encode()
    if key == b"plugin_root_id":
        return getattr(root, "root_id", "").encode()
    if key == b"plugin_vm_id":
        return ctx.vm.config.vm_id.encode()
    return None


_TOP: dict[bytes, Callable[[Context, StreamInfo, list[bytes]], bytes | None]] = {
    b"request": _request,
    b"response": _response,
    b"source": lambda c, i, r: _address(i.source_address, r),
    b"destination": lambda c, i, r: _address(i.destination_address, r),
    b"upstream": lambda c, i, r: _address(i.upstream_address, r),
    b"connection": lambda c, i, r: _connection(i, r),
    b"xds": lambda c, i, r: _xds(i, r),
    # legacy top-level spellings (pre-2023 Envoy; the Go SDK's properties package)
    b"node": lambda c, i, r: _node(i, r),
    b"cluster_name": lambda c, i, r: _xds(i, [b"cluster_name"]),
    b"route_name": lambda c, i, r: _xds(i, [b"route_name"]),
    b"listener_direction": lambda c, i, r: _xds(i, [b"listener_direction"]),
    b"connection_id": lambda c, i, r: _uint(i.connection_id),
}

ATTRIBUTE_NAMES = sorted(
    [k.decode() for k in _TOP] + ["plugin_name", "plugin_root_id", "plugin_vm_id"]
)


def lookup(ctx: Context, path: bytes) -> bytes | None:
    """The encoded value at NUL-separated ``path``, or None (NOT_FOUND)."""
    if path.endswith(b"\0"):
        path = path[:-1]
    if not path:
        return None
    segments = path.split(b"\0")
    first = segments[0]
    plugin = _plugin(ctx, first)
    if plugin is not None:
        return plugin
    info: StreamInfo | None = getattr(ctx, "info", None)
    fn = _TOP.get(first)
    if fn is None:
        # Only names that are not attributes fall back to set_property values: Envoy's
        # FindValue resolves known tokens first and reads filter state "wasm.<name>"
        # only for unknown ones, so a plugin cannot shadow request.path (ABI doc §5.4).
        return ctx.filter_state.get(path)
    if info is None:
        # Root contexts: only stream-independent attributes.
        if first not in (b"xds", b"node", b"cluster_name", b"route_name", b"listener_direction"):
            return None
        from host.wasm.context import StreamInfo as _SI

        info = _SI()
    return fn(ctx, info, segments[1:])
