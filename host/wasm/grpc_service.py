"""Where a ``proxy_grpc_call``/``proxy_grpc_stream`` goes: the ``upstream`` argument.

Envoy reads it as a serialized ``envoy.config.core.v3.GrpcService`` (what the C++ SDK
sends) and, when that does not parse, as a plain cluster name (the Rust and Go SDKs).
``parse_grpc_upstream`` does the same with the host's tiny protobuf reader, keeping only
the fields a callout uses: ``envoy_grpc.cluster_name`` and ``authority``, ``timeout``
and ``initial_metadata``. A message that parses but names no cluster (a ``google_grpc``
service, or text that happens to be valid protobuf) is taken as a plain name, so a
cluster called e.g. ``b2`` is still found. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from host.wasm.proto import LEN, VARINT, ProtoError, read_fields

__all__ = ["GrpcUpstream", "parse_grpc_upstream"]

# envoy.config.core.v3.GrpcService
_ENVOY_GRPC, _TIMEOUT, _INITIAL_METADATA = 1, 3, 5
# GrpcService.EnvoyGrpc
_CLUSTER_NAME, _AUTHORITY = 1, 2
# google.protobuf.Duration
_SECONDS, _NANOS = 1, 2
# envoy.config.core.v3.HeaderValue
_KEY, _VALUE, _RAW_VALUE = 1, 2, 3


@dataclass(frozen=True)
class GrpcUpstream:
    """The target of one gRPC callout."""

    cluster: str
    authority: str | None = None  # EnvoyGrpc.authority (Envoy's default: the cluster name)
    timeout_ms: int | None = None  # GrpcService.timeout
    metadata: list[tuple[bytes, bytes]] = field(default_factory=list)
    from_proto: bool = False


def _len_fields(data: bytes) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    for number, wire, value in read_fields(data):
        if wire == LEN and isinstance(value, bytes):
            out.setdefault(number, []).append(value)
        elif wire == LEN:  # pragma: no cover - read_fields gives bytes for LEN
            raise ProtoError("bad length-delimited field")
    return out


def _duration_ms(data: bytes) -> int:
    seconds = nanos = 0
    for number, wire, value in read_fields(data):
        if wire != VARINT or not isinstance(value, int):
            raise ProtoError("Duration: unexpected field type")
        if number == _SECONDS:
            seconds = value
        elif number == _NANOS:
            nanos = value
    if seconds >= 1 << 63 or nanos >= 1 << 31:
        raise ProtoError("negative Duration")
    return seconds * 1000 + nanos // 1_000_000


def _header_value(data: bytes) -> tuple[bytes, bytes]:
    f = _len_fields(data)
    key = f.get(_KEY, [b""])[-1]
    value = f.get(_RAW_VALUE, f.get(_VALUE, [b""]))[-1]
    if not key:
        raise ProtoError("HeaderValue without a key")
    return key.lower(), value


def parse_grpc_upstream(raw: bytes) -> GrpcUpstream:
    """The upstream a plugin named: a serialized GrpcService or a plain cluster name."""
    try:
        top = _len_fields(raw)
        envoy = top.get(_ENVOY_GRPC)
        if envoy:
            inner = _len_fields(envoy[-1])
            cluster = inner.get(_CLUSTER_NAME, [b""])[-1].decode("utf-8")
            if cluster:
                authority = inner.get(_AUTHORITY, [b""])[-1].decode("utf-8") or None
                timeout = top.get(_TIMEOUT)
                return GrpcUpstream(
                    cluster,
                    authority,
                    _duration_ms(timeout[-1]) if timeout else None,
                    [_header_value(h) for h in top.get(_INITIAL_METADATA, [])],
                    True,
                )
    except (ProtoError, UnicodeDecodeError):
        pass
    return GrpcUpstream(raw.decode("utf-8", "replace"))
