"""Export for a cluster: the WasmPlugin documents of a wasmdesk config in the form
``kubectl apply`` and Istio accept.

Only WasmPlugin documents are written (the ``Proxy`` document is wasmdesk's own and stays in
the workspace). Every module URL must be something a proxy in the cluster can fetch: an
``oci://`` image is pinned to its digest (``url: oci://registry/repo@sha256:…`` and
``sha256`` alike, which Istio requires to agree), an ``http(s)://`` URL is kept with its
``sha256``; a local file is refused, naming each plugin that needs a registry reference
(``wasmdesk push`` makes one). Namespace and selector are set when given; ``pluginName`` is
taken from the image's runtime config when the plugin has none. Server-set metadata
(``resourceVersion``, ``uid``, ``status`` …) is dropped so the file applies anywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from host.oci.fetch import PulledModule
from host.oci.module_source import default_root_id
from host.proxy.config import PluginSpec, ProxyConfig, plugin_to_document

__all__ = ["ExportError", "ExportResult", "export_for_cluster"]

_SERVER_METADATA = (
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
)


class ExportError(ValueError):
    """The config cannot be exported for a cluster as it is (the message says why)."""


@dataclass
class ExportResult:
    documents: list[dict[str, Any]]
    yaml: str
    warnings: list[str] = field(default_factory=list)


def export_for_cluster(
    config: ProxyConfig,
    *,
    namespace: str | None = None,
    match_labels: dict[str, str] | None = None,
    resolve: Callable[[PluginSpec], PulledModule],
    pushed: dict[str, str] | None = None,
) -> ExportResult:
    """The WasmPlugin documents of ``config`` for a cluster.

    ``resolve`` pulls (or finds in the cache) an ``oci://`` plugin's image to learn its
    digest and root ids. ``pushed`` maps plugin names to the ``oci://…@sha256:`` reference
    a local module was pushed to (the app pushes before exporting)."""
    pushed = pushed or {}
    local = [s.name for s in config.plugins if s.location_kind == "file" and s.name not in pushed]
    if local:
        raise ExportError(
            "these plugins load a local file, which a cluster cannot fetch; push each to a "
            "registry (wasmdesk push FILE.wasm REGISTRY/REPO:TAG) and set its url to the "
            f"oci:// reference: {', '.join(local)}"
        )
    docs: list[dict[str, Any]] = []
    warnings: list[str] = []
    for spec in config.plugins:
        doc = plugin_to_document(spec)
        meta = doc.setdefault("metadata", {})
        body = doc.setdefault("spec", {})
        doc.pop("status", None)
        for key in _SERVER_METADATA:
            meta.pop(key, None)
        meta["namespace"] = namespace or meta.get("namespace") or spec.namespace
        root = ""
        if spec.name in pushed:
            url = pushed[spec.name]
            body["url"] = url
            body["sha256"] = url.rsplit("@sha256:", 1)[1]
        elif spec.location_kind == "oci":
            pulled = resolve(spec)
            body["url"] = f"oci://{pulled.ref.registry}/{pulled.ref.repository}@{pulled.digest}"
            body["sha256"] = pulled.sha256
            root = default_root_id(pulled)
        elif not spec.sha256:
            warnings.append(
                f"{spec.name}: {spec.url} has no sha256; the proxy will load whatever the URL "
                "serves"
            )
        if spec.fail_strategy == "FAIL_RELOAD":
            warnings.append(
                f"{spec.name}: failStrategy FAIL_RELOAD needs a recent Istio (the 1.23 CRD "
                "rejects it; FAIL_CLOSE and FAIL_OPEN are accepted everywhere)"
            )
        if not body.get("pluginName"):
            if root:
                body["pluginName"] = root
            else:
                warnings.append(
                    f"{spec.name}: no pluginName (root id); set it if the module has more than "
                    "one root context"
                )
        if not body.get("selector") and not body.get("targetRefs") and not body.get("targetRef"):
            if match_labels:
                body["selector"] = {"matchLabels": dict(match_labels)}
            else:
                warnings.append(
                    f"{spec.name}: no selector or targetRefs: it applies to every workload in "
                    f"namespace {meta['namespace']}"
                )
        docs.append(doc)
    text = yaml.safe_dump_all(
        docs, explicit_start=True, sort_keys=False, allow_unicode=True, width=4096
    )
    return ExportResult(docs, text, warnings)
