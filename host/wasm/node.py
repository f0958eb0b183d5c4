"""The proxy's node identity (Envoy's bootstrap ``node``), as plugins read it through
the ``xds.node`` attribute (ABI doc §5.4).

Istio's plugins name the workload from ``node.metadata`` (``WORKLOAD_NAME``,
``NAMESPACE``, ``LABELS`` ...). ``Node.parse`` checks a ``{id, cluster, metadata,
locality}`` mapping (the Proxy document's ``spec.node``, ``wasmdesk try --node``) and
``Node.message`` serializes it as ``envoy.config.core.v3.Node``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from host.wasm.proto import field_bytes, field_message, struct_message

__all__ = ["DEFAULT_NODE", "Node", "NodeError"]

_LOCALITY_KEYS = ("region", "zone", "sub_zone")


class NodeError(ValueError):
    """A node description that is not ``{id, cluster, metadata, locality}``; the message
    names the field (``metadata.LABELS``) and what was expected."""


@dataclass(frozen=True)
class Node:
    id: str = "wasmdesk"
    cluster: str = "wasmdesk"
    metadata: Mapping[str, Any] = field(default_factory=dict)
    locality: Mapping[str, str] = field(default_factory=dict)
    user_agent_name: str = "wasmdesk"

    @classmethod
    def parse(cls, data: object) -> Node:
        """A Node from a JSON/YAML mapping; ``NodeError`` names the first bad field."""
        if not isinstance(data, Mapping):
            raise NodeError(f"expected a mapping with id, cluster, metadata, got {_kind(data)}")
        unknown = sorted(set(data) - {"id", "cluster", "metadata", "locality"})
        if unknown:
            raise NodeError(
                f"{unknown[0]}: unknown field (expected id, cluster, metadata, locality)"
            )
        node_id = data.get("id", cls.id)
        cluster = data.get("cluster", cls.cluster)
        for name, v in (("id", node_id), ("cluster", cluster)):
            if not isinstance(v, str):
                raise NodeError(f"{name}: expected a string, got {_kind(v)}")
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, Mapping):
            raise NodeError(f"metadata: expected a mapping, got {_kind(metadata)}")
        _check_json(metadata, "metadata")
        locality = data.get("locality") or {}
        if not isinstance(locality, Mapping):
            raise NodeError(f"locality: expected a mapping, got {_kind(locality)}")
        for k, v in locality.items():
            if k not in _LOCALITY_KEYS:
                raise NodeError(f"locality.{k}: unknown field (expected region, zone, sub_zone)")
            if not isinstance(v, str):
                raise NodeError(f"locality.{k}: expected a string, got {_kind(v)}")
        return cls(node_id, cluster, dict(metadata), dict(locality))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "cluster": self.cluster}
        if self.metadata:
            d["metadata"] = dict(self.metadata)
        if self.locality:
            d["locality"] = dict(self.locality)
        return d

    def locality_message(self) -> bytes:
        # envoy.config.core.v3.Locality: region = 1, zone = 2, sub_zone = 3
        return b"".join(
            field_bytes(i + 1, self.locality[k])
            for i, k in enumerate(_LOCALITY_KEYS)
            if self.locality.get(k)
        )

    def message(self) -> bytes:
        """``envoy.config.core.v3.Node``: id = 1, cluster = 2, metadata = 3 (Struct),
        locality = 4, user_agent_name = 6; empty fields omitted, as proto3 does."""
        out = b""
        if self.id:
            out += field_bytes(1, self.id)
        if self.cluster:
            out += field_bytes(2, self.cluster)
        if self.metadata:
            out += field_message(3, struct_message(self.metadata))
        if self.locality:
            out += field_message(4, self.locality_message())
        if self.user_agent_name:
            out += field_bytes(6, self.user_agent_name)
        return out


DEFAULT_NODE = Node()


def _kind(v: object) -> str:
    if v is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(v), type(v).__name__)


def _check_json(v: object, where: str) -> None:
    if v is None or isinstance(v, (str, bool, int, float)):
        return
    if isinstance(v, Mapping):
        for k, x in v.items():
            if not isinstance(k, str):
                raise NodeError(f"{where}: keys must be strings, got {_kind(k)}")
            _check_json(x, f"{where}.{k}")
        return
    if isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            _check_json(x, f"{where}[{i}]")
        return
    raise NodeError(f"{where}: expected a string, number, boolean, list or mapping, got {_kind(v)}")
