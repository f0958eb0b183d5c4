"""Writing the config back as YAML: the fields this package manages rewritten from the
dataclasses where they changed, everything else in the original documents kept as it was.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from decimal import Decimal
from typing import Any

import yaml

from host.proxy.config.enums import Direction, FailStrategy, Mode, Phase
from host.proxy.config.errors import ConfigIssue
from host.proxy.config.fields import _Ctx
from host.proxy.config.model import (
    ANNOTATION_CALLBACK_TIMEOUT,
    ANNOTATION_CANARY_KEY,
    ANNOTATION_CANARY_PERCENT,
    ANNOTATION_MEMORY_LIMIT,
    ANNOTATION_MODE,
    ANNOTATION_VM_ID,
    DEFAULT_CALLBACK_TIMEOUT_MS,
    DEFAULT_CLUSTER_TIMEOUT_S,
    DEFAULT_MEMORY_LIMIT,
    PROXY_API_VERSION,
    WASMPLUGIN_API_VERSION,
    EnvVar,
    ListenerTls,
    PluginSpec,
    ProxyConfig,
    RouteConfig,
    TcpListenerConfig,
    TrafficSelector,
)
from host.proxy.config.plugin_doc import _parse_quietly
from host.proxy.config.proxy_doc import _parse_proxy
from host.proxy.config.units import _fmt_ms, _fmt_number, _fmt_quantity, _fmt_seconds
from host.wasm.node import DEFAULT_NODE


def plugin_to_document(spec: PluginSpec) -> dict[str, Any]:
    """The WasmPlugin document for ``spec``: its ``raw`` document (if any) with the fields
    this package manages rewritten where they differ; for a plugin made in code, a fresh
    document with defaults omitted."""
    base: dict[str, Any] = copy.deepcopy(spec.raw) if spec.raw else {}
    old: PluginSpec | None = None
    if base:
        old = _parse_quietly(base, spec.base_dir)
        if old is None:  # a raw document that no longer parses: start afresh
            base = {}
    if not base:
        base = {
            "apiVersion": WASMPLUGIN_API_VERSION,
            "kind": "WasmPlugin",
            "metadata": {},
            "spec": {},
        }
    base["apiVersion"] = WASMPLUGIN_API_VERSION
    base["kind"] = "WasmPlugin"
    if not isinstance(base.get("metadata"), dict):
        base["metadata"] = {}
    if not isinstance(base.get("spec"), dict):
        base["spec"] = {}
    for fname, writer in _PLUGIN_WRITERS:
        new_value = getattr(spec, fname)
        if old is not None:
            if getattr(old, fname) == new_value:
                continue
        elif fname not in ("name", "url") and new_value == _PLUGIN_DEFAULTS[fname]:
            continue
        writer(base, new_value)
    return base


def dump_config(config: ProxyConfig) -> str:
    """The effective config as multi-document YAML, in the original document order (new
    plugins last): managed fields from the dataclasses, everything else from ``raw``."""
    docs = [plugin_to_document(p) for p in config.plugins]
    proxy_doc = _proxy_to_document(config)
    if proxy_doc is not None:
        # Plugins keep their tuple order; the Proxy document goes back where it was (first if
        # it is new). Plugins created in code (line 0) count as coming after it.
        at = 0
        if config.line:
            lines = [p.line or math.inf for p in config.plugins]
            at = next((k for k, line in enumerate(lines) if line > config.line), len(lines))
        docs.insert(at, proxy_doc)
    if not docs:
        return ""
    return yaml.safe_dump_all(
        docs,
        explicit_start=True,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=4096,
    )


def _set(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    d = doc
    for key in path[:-1]:
        nxt = d.get(key)
        if not isinstance(nxt, dict):
            nxt = {}
            d[key] = nxt
        d = nxt
    d[path[-1]] = value


def _delete(doc: dict[str, Any], path: tuple[str, ...], prune: int = 0) -> None:
    """Remove ``path``; then drop up to ``prune`` parents left empty (annotations, vmConfig)."""
    chain: list[dict[str, Any]] = [doc]
    for key in path[:-1]:
        nxt = chain[-1].get(key)
        if not isinstance(nxt, dict):
            return
        chain.append(nxt)
    chain[-1].pop(path[-1], None)
    for depth in range(prune):
        parent, child_key = chain[-2 - depth], path[-2 - depth]
        if chain[-1 - depth]:
            break
        parent.pop(child_key, None)


def _field_writer(path: tuple[str, ...], default: Any, to_yaml: Any = None, prune: int = 0) -> Any:
    def write(doc: dict[str, Any], value: Any) -> None:
        if value == default:
            _delete(doc, path, prune)
        else:
            _set(doc, path, to_yaml(value) if to_yaml else copy.deepcopy(value))

    return write


def _annotation_writer(key: str, default: Any, to_text: Any) -> Any:
    return _field_writer(("metadata", "annotations", key), default, to_text, prune=1)


def _write_env(doc: dict[str, Any], env: tuple[EnvVar, ...]) -> None:
    if not env:
        _delete(doc, ("spec", "vmConfig", "env"), prune=1)
        return
    entries: list[dict[str, Any]] = []
    for e in env:
        item: dict[str, Any] = {"name": e.name}
        if e.value_from != "INLINE":
            item["valueFrom"] = e.value_from
        else:
            item["value"] = e.value
        entries.append(item)
    _set(doc, ("spec", "vmConfig", "env"), entries)


def _write_match(doc: dict[str, Any], match: tuple[TrafficSelector, ...]) -> None:
    if not match:
        _delete(doc, ("spec", "match"))
        return
    entries: list[dict[str, Any]] = []
    for sel in match:
        item: dict[str, Any] = {"mode": sel.mode}
        if sel.ports:
            item["ports"] = [{"number": p} for p in sel.ports]
        entries.append(item)
    _set(doc, ("spec", "match"), entries)


def _write_target_refs(doc: dict[str, Any], refs: tuple[dict[str, Any], ...]) -> None:
    _delete(doc, ("spec", "targetRef"))
    if refs:
        _set(doc, ("spec", "targetRefs"), [copy.deepcopy(r) for r in refs])
    else:
        _delete(doc, ("spec", "targetRefs"))


_PLUGIN_WRITERS: tuple[tuple[str, Any], ...] = (
    ("name", _field_writer(("metadata", "name"), None)),
    ("namespace", _field_writer(("metadata", "namespace"), "default")),
    ("mode", _annotation_writer(ANNOTATION_MODE, Mode.ENFORCE, str)),
    ("canary_percent", _annotation_writer(ANNOTATION_CANARY_PERCENT, 100.0, _fmt_number)),
    ("canary_key", _annotation_writer(ANNOTATION_CANARY_KEY, "random", str)),
    ("vm_id", _annotation_writer(ANNOTATION_VM_ID, "", str)),
    (
        "callback_timeout_ms",
        _annotation_writer(
            ANNOTATION_CALLBACK_TIMEOUT,
            DEFAULT_CALLBACK_TIMEOUT_MS,
            lambda ms: _fmt_ms(Decimal(repr(float(ms)))),
        ),
    ),
    (
        "memory_limit_bytes",
        _annotation_writer(ANNOTATION_MEMORY_LIMIT, DEFAULT_MEMORY_LIMIT, _fmt_quantity),
    ),
    ("selector", _field_writer(("spec", "selector"), None)),
    ("target_refs", _write_target_refs),
    ("url", _field_writer(("spec", "url"), None)),
    ("sha256", _field_writer(("spec", "sha256"), "")),
    ("image_pull_policy", _field_writer(("spec", "imagePullPolicy"), "UNSPECIFIED_POLICY")),
    ("image_pull_secret", _field_writer(("spec", "imagePullSecret"), "")),
    ("plugin_name", _field_writer(("spec", "pluginName"), "")),
    ("plugin_config", _field_writer(("spec", "pluginConfig"), {})),
    ("phase", _field_writer(("spec", "phase"), Phase.UNSPECIFIED, str)),
    ("priority", _field_writer(("spec", "priority"), None)),
    ("fail_strategy", _field_writer(("spec", "failStrategy"), FailStrategy.FAIL_CLOSE, str)),
    ("env", _write_env),
    ("match", _write_match),
    ("type", _field_writer(("spec", "type"), "HTTP")),
)
_PLUGIN_DEFAULTS: dict[str, Any] = {
    f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
    for f in dataclasses.fields(PluginSpec)
}


def _proxy_to_document(config: ProxyConfig) -> dict[str, Any] | None:
    old = ProxyConfig()
    base: dict[str, Any] | None = copy.deepcopy(config.raw) if config.raw is not None else None
    if base is not None:
        issues: list[ConfigIssue] = []
        fields = _parse_proxy(base, _Ctx("<raw>", {}, 0, issues))
        if fields is None:
            base = None
        else:
            old = ProxyConfig(**fields)
    new_fields = (
        "listen",
        "admin",
        "clusters",
        "default_cluster",
        "node",
        "routes",
        "direction",
        "tls",
        "tcp",
    )
    if base is None:
        if all(getattr(config, f) == getattr(old, f) for f in new_fields):
            return None
        base = {"apiVersion": PROXY_API_VERSION, "kind": "Proxy", "spec": {}}
    if not isinstance(base.get("spec"), dict):
        base["spec"] = {}
    spec: dict[str, Any] = base["spec"]
    for key in ("listen", "admin"):
        value = getattr(config, key)
        if value != getattr(old, key):
            if value == getattr(ProxyConfig(), key):
                spec.pop(key, None)
            else:
                spec[key] = value
    if config.clusters != old.clusters:
        old_raw = {c.get("name"): c for c in spec.get("clusters") or [] if isinstance(c, dict)}
        old_by_name = {c.name: c for c in old.clusters}
        entries: list[dict[str, Any]] = []
        for c in config.clusters:
            item = copy.deepcopy(old_raw.get(c.name, {}))
            prev = old_by_name.get(c.name)
            item["name"] = c.name
            item["url"] = c.url
            if prev is None or prev.timeout_s != c.timeout_s or "timeout" not in item:
                if c.timeout_s == DEFAULT_CLUSTER_TIMEOUT_S:
                    item.pop("timeout", None)
                else:
                    item["timeout"] = _fmt_seconds(c.timeout_s)
            if prev is None or prev.connect_timeout_s != c.connect_timeout_s:
                if c.connect_timeout_s is None:
                    item.pop("connectTimeout", None)
                else:
                    item["connectTimeout"] = _fmt_seconds(c.connect_timeout_s)
            if prev is None or prev.protocol != c.protocol:
                if c.protocol is None:
                    item.pop("protocol", None)
                else:
                    item["protocol"] = c.protocol
            if prev is None or prev.ca_file != c.ca_file:
                if c.ca_file is None:
                    item.pop("caFile", None)
                else:
                    item["caFile"] = c.ca_file
            entries.append(item)
        if entries:
            spec["clusters"] = entries
        else:
            spec.pop("clusters", None)
    if config.default_cluster != old.default_cluster:
        if config.default_cluster is None:
            spec.pop("defaultCluster", None)
        else:
            spec["defaultCluster"] = config.default_cluster
    if config.node != old.node:
        if config.node == DEFAULT_NODE:
            spec.pop("node", None)
        else:
            spec["node"] = config.node.to_dict()
    if config.routes != old.routes:
        if config.routes:
            spec["routes"] = [_route_to_document(r) for r in config.routes]
        else:
            spec.pop("routes", None)
    if config.tcp != old.tcp:
        if config.tcp:
            spec["tcp"] = [_tcp_to_document(t) for t in config.tcp]
        else:
            spec.pop("tcp", None)
    if config.direction != old.direction:
        if config.direction == Direction.SERVER:
            spec.pop("direction", None)
        else:
            spec["direction"] = str(config.direction)
    if config.tls != old.tls:
        if config.tls is None:
            spec.pop("tls", None)
        else:
            spec["tls"] = _tls_to_document(config.tls)
    return base


def _tls_to_document(tls: ListenerTls) -> str | dict[str, Any]:
    if tls.demo:
        return "demo"
    doc: dict[str, Any] = {"cert": tls.cert, "key": tls.key}
    if tls.client_ca:
        doc["clientCa"] = tls.client_ca
    return doc


def _tcp_to_document(listener: TcpListenerConfig) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if listener.name != listener.listen.replace(":", "_"):  # not the default name
        doc["name"] = listener.name
    doc["listen"] = listener.listen
    doc["cluster"] = listener.cluster
    return doc


def _route_to_document(route: RouteConfig) -> dict[str, Any]:
    match: dict[str, Any] = {}
    for key in ("prefix", "path", "authority"):
        v = getattr(route, key)
        if v is not None:
            match[key] = v
    if route.headers:
        match["headers"] = dict(route.headers)
    doc: dict[str, Any] = {"name": route.name} if route.name else {}
    doc["match"] = match
    doc["cluster"] = route.cluster
    return doc
