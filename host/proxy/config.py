"""The local proxy's configuration: parse, validate, order and export.

A config file is multi-document YAML: one ``extensions.istio.io/v1alpha1`` ``WasmPlugin``
document per plugin, with Istio's fields and meanings (operator reference §1.1), and at most
one ``wasmdesk.dev/v1alpha1`` ``Proxy`` document (listener, admin API, upstream clusters).
Wasmdesk's own per-plugin knobs (mode, canary) are ``wasmdesk.dev/*`` annotations, so the
same WasmPlugin documents apply to an Istio cluster unchanged.

Invalid input raises one :class:`ConfigError` listing every problem with file, line and field
path; a half-valid config is never returned. :func:`dump_config` writes the effective config
back as the same YAML: the fields this module manages are rewritten from the dataclasses,
everything else in the original documents (unknown fields, selector, targetRefs, labels) is
kept as it was.

This module is pure: no network, no wasm, no sockets, no Qt. It reads the config file and,
at load time, the process environment (``vmConfig.env`` entries with ``valueFrom: HOST``).
It only classifies module URLs; fetching them (and refusing ``oci://``) is ``plugins``' job.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from host.wasm.node import DEFAULT_NODE, NodeError
from host.wasm.node import Node as NodeInfo

__all__ = [
    "ANNOTATION_CANARY_KEY",
    "ANNOTATION_CANARY_PERCENT",
    "ANNOTATION_MODE",
    "FAIL_STRATEGIES",
    "MODES",
    "PHASES",
    "PLUGIN_TYPES",
    "PROXY_API_VERSION",
    "WASMPLUGIN_API_VERSION",
    "ClusterConfig",
    "ConfigError",
    "ConfigIssue",
    "EnvVar",
    "PluginSpec",
    "ProxyConfig",
    "RouteConfig",
    "TrafficSelector",
    "dump_config",
    "effective_order",
    "explain_order",
    "load_config",
    "new_plugin",
    "parse_config",
    "plugin_to_document",
    "with_changes",
]

WASMPLUGIN_API_VERSION = "extensions.istio.io/v1alpha1"
PROXY_API_VERSION = "wasmdesk.dev/v1alpha1"
_KINDS = {"WasmPlugin": WASMPLUGIN_API_VERSION, "Proxy": PROXY_API_VERSION}

ANNOTATION_PREFIX = "wasmdesk.dev/"
ANNOTATION_MODE = "wasmdesk.dev/mode"
ANNOTATION_CANARY_PERCENT = "wasmdesk.dev/canary-percent"
ANNOTATION_CANARY_KEY = "wasmdesk.dev/canary-key"
# Knobs the plugin manager needs that Istio has no field for (VmConfig in host.wasm.vm).
ANNOTATION_VM_ID = "wasmdesk.dev/vm-id"
ANNOTATION_CALLBACK_TIMEOUT = "wasmdesk.dev/callback-timeout"
ANNOTATION_MEMORY_LIMIT = "wasmdesk.dev/memory-limit"
_ANNOTATIONS = (
    ANNOTATION_MODE,
    ANNOTATION_CANARY_PERCENT,
    ANNOTATION_CANARY_KEY,
    ANNOTATION_VM_ID,
    ANNOTATION_CALLBACK_TIMEOUT,
    ANNOTATION_MEMORY_LIMIT,
)

# Chain order of the phases (operator reference §1.2): AUTHN → AUTHZ → STATS → UNSPECIFIED.
PHASES = ("AUTHN", "AUTHZ", "STATS", "UNSPECIFIED_PHASE")
_PHASE_RANK = {p: i for i, p in enumerate(PHASES)}
_PHASE_NOTE = {
    "AUTHN": "before Istio authn",
    "AUTHZ": "after Istio authn, before Istio authz",
    "STATS": "after Istio authz, before stats",
    "UNSPECIFIED_PHASE": "last, right before the router",
}
FAIL_STRATEGIES = ("FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD")
PLUGIN_TYPES = ("UNSPECIFIED_PLUGIN_TYPE", "HTTP", "NETWORK")
PULL_POLICIES = ("UNSPECIFIED_POLICY", "IfNotPresent", "Always")
MATCH_MODES = ("UNDEFINED", "CLIENT", "SERVER", "CLIENT_AND_SERVER")
DIRECTIONS = ("SERVER", "CLIENT")  # the Proxy document's spec.direction (Istio's match modes)
ENV_SOURCES = ("INLINE", "HOST")
MODES = ("enforce", "log-only", "disabled")

DEFAULT_LISTEN = ("127.0.0.1", 10000)
DEFAULT_ADMIN = ("127.0.0.1", 9901)
DEFAULT_CLUSTER_TIMEOUT_S = 5.0
# Same defaults as host.wasm.vm.VmConfig (not imported: this module stays free of wasmtime).
DEFAULT_CALLBACK_TIMEOUT_MS = 100.0
DEFAULT_MEMORY_LIMIT = 256 * 1024 * 1024
_MIN_MEMORY_LIMIT = 64 * 1024  # one wasm page
_MAX_MEMORY_LIMIT = 4 * 1024 * 1024 * 1024  # wasm32 address space

_INT32 = (-(2**31), 2**31 - 1)
_MAX_ENV = 256  # istio/api wasm.proto VmConfig.env MaxItems
_MAX_TARGET_REFS = 16

_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_C_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# An RFC 9110 token, with an optional leading ":" for pseudo-headers.
_HEADER_NAME = re.compile(r":?[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_SHA256 = re.compile(r"[a-f0-9]{64}")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
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

_Path = tuple[str | int, ...]


# -- errors ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config: where (file, line, field path) and what was expected."""

    file: str
    line: int
    path: str
    message: str
    column: int | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line > 0:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(ValueError):
    """The config is invalid. ``errors`` lists every issue; ``str()`` shows one per line."""

    def __init__(self, errors: Sequence[ConfigIssue]) -> None:
        self.errors: list[ConfigIssue] = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


# -- the configuration -------------------------------------------------------------------------


class EnvVar(NamedTuple):
    """One ``vmConfig.env`` entry as written (``value_from`` INLINE or HOST)."""

    name: str
    value_from: str = "INLINE"
    value: str = ""


class TrafficSelector(NamedTuple):
    """One ``match`` entry: ``mode`` (UNDEFINED is normalised to CLIENT_AND_SERVER) and ports."""

    mode: str = "CLIENT_AND_SERVER"
    ports: tuple[int, ...] = ()


@dataclass(frozen=True)
class ClusterConfig:
    """An upstream cluster of the Proxy document (``spec.clusters[]``)."""

    name: str
    url: str
    timeout_s: float = DEFAULT_CLUSTER_TIMEOUT_S
    connect_timeout_s: float | None = None
    ca_file: str | None = None  # grpcs:// only: trust these CAs, not the system store


@dataclass(frozen=True)
class RouteConfig:
    """One ``spec.routes[]`` entry of the Proxy document: a request that matches every
    condition given goes to ``cluster``. ``name`` is what ``xds.route_name`` reads."""

    name: str
    cluster: str
    prefix: str | None = None  # :path starts with it
    path: str | None = None  # :path without the query equals it
    authority: str | None = None  # :authority (case-insensitive; no port: any port)
    headers: tuple[tuple[str, str], ...] = ()  # (lower-case name, exact value)


@dataclass(frozen=True)
class PluginSpec:
    """One WasmPlugin document, validated, with Istio's defaults applied.

    ``raw`` is the original document; :func:`dump_config` rewrites only the fields this class
    models and keeps everything else. ``line`` is where the document starts. Build new specs
    with :func:`new_plugin` and change them with :func:`with_changes`, which keep the derived
    fields (``vm_env``, ``raw``) in step; ``dataclasses.replace`` works for the operator knobs
    (mode, canary, failStrategy, phase, priority) too, since export compares against ``raw``.
    """

    name: str  # metadata.name
    url: str  # spec.url as written
    namespace: str = "default"
    sha256: str = ""
    plugin_name: str = ""  # spec.pluginName: Envoy root_id
    plugin_config: dict[str, Any] = field(default_factory=dict, hash=False)
    phase: str = "UNSPECIFIED_PHASE"
    priority: int | None = None  # None: unset, ordered below any explicit priority
    fail_strategy: str = "FAIL_CLOSE"
    env: tuple[EnvVar, ...] = ()  # spec.vmConfig.env as written
    vm_env: tuple[tuple[str, str], ...] = ()  # what the module sees, resolved at load time
    type: str = "HTTP"  # UNSPECIFIED_PLUGIN_TYPE is HTTP
    match: tuple[TrafficSelector, ...] = ()
    image_pull_policy: str = "UNSPECIFIED_POLICY"
    image_pull_secret: str = ""  # a name in the Proxy document's spec.pullSecrets
    selector: dict[str, Any] | None = field(default=None, hash=False)
    target_refs: tuple[dict[str, Any], ...] = field(default=(), hash=False)
    mode: str = "enforce"
    canary_percent: float = 100.0
    canary_key: str = "random"  # random | client-ip | header:<lower-case name>
    vm_id: str = ""
    callback_timeout_ms: float = DEFAULT_CALLBACK_TIMEOUT_MS
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False)
    source: str = field(default="", compare=False, repr=False)
    base_dir: str = field(default="", compare=False, repr=False)

    @cached_property
    def _location(self) -> tuple[str, str]:
        loc = _classify_url(self.url, self.base_dir or os.getcwd())
        if isinstance(loc, str):
            raise ValueError(f"plugin {self.name}: spec.url: {loc}")
        return loc

    @property
    def location_kind(self) -> str:
        """Where the module comes from: ``file``, ``http``, ``https`` or ``oci``."""
        return self._location[0]

    @property
    def location(self) -> str:
        """An absolute file path (file), the URL (http/https) or ``oci://`` reference."""
        return self._location[1]

    @cached_property
    def plugin_config_json(self) -> bytes:
        """``pluginConfig`` as the plugin sees it in ``proxy_on_configure``: the JSON text
        Istio produces (compact, keys sorted, Go number/string formatting); b"" if empty."""
        return _istio_json(self.plugin_config) if self.plugin_config else b""

    @property
    def filter_name(self) -> str:
        """Envoy's ``PluginConfig.name`` for this plugin: ``<namespace>.<name>``."""
        return f"{self.namespace}.{self.name}"


@dataclass(frozen=True)
class ProxyConfig:
    """The whole effective configuration: the Proxy document plus the plugins, in document
    order. ``source`` is the file it came from; ``raw`` the Proxy document (None if absent)."""

    listen_host: str = DEFAULT_LISTEN[0]
    listen_port: int = DEFAULT_LISTEN[1]
    admin_host: str = DEFAULT_ADMIN[0]
    admin_port: int = DEFAULT_ADMIN[1]
    clusters: tuple[ClusterConfig, ...] = ()
    default_cluster: str | None = None
    node: NodeInfo = DEFAULT_NODE  # spec.node: Envoy's bootstrap node (xds.node)
    routes: tuple[RouteConfig, ...] = ()  # first match wins; the default cluster last
    direction: str = "SERVER"  # the listener's traffic direction, for WasmPlugin match
    # imagePullSecret name -> docker config JSON file (absolute path)
    pull_secrets: tuple[tuple[str, str], ...] = ()
    # the listener's limits (spec.timeouts, spec.maxConnections); see http1.Limits
    request_headers_timeout_s: float = 10.0
    idle_timeout_s: float = 300.0
    max_connections: int = 1024
    plugins: tuple[PluginSpec, ...] = ()
    # spec.mocks: callout mock rules (host/lab/mocks.py), checked when parsed
    mocks: tuple[Any, ...] = field(default=(), hash=False)
    source: str = field(default="<string>", compare=False)
    raw: dict[str, Any] | None = field(default=None, compare=False, hash=False, repr=False)
    line: int = field(default=0, compare=False)

    @property
    def listen(self) -> str:
        return _fmt_hostport(self.listen_host, self.listen_port)

    @property
    def admin(self) -> str:
        return _fmt_hostport(self.admin_host, self.admin_port)

    def cluster(self, name: str) -> ClusterConfig | None:
        return next((c for c in self.clusters if c.name == name), None)


# -- loading -----------------------------------------------------------------------------------


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> ProxyConfig:
    """Read and validate a config file; relative module paths resolve against its directory."""
    source = os.path.abspath(os.fspath(path))
    try:
        with open(source, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)  # never more than the limit into memory
    except OSError as e:
        raise ConfigError(
            [ConfigIssue(source, 0, "", f"cannot read the config: {e.strerror or e}")]
        ) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([_too_large(source, data.count(b"\n", 0, MAX_CONFIG_BYTES) + 1)])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError(
            [ConfigIssue(source, line, "", f"the config is not UTF-8 text: {e.reason}", col)]
        ) from None
    return parse_config(text, source, os.path.dirname(source), environ=environ)


def _too_large(source: str, line: int) -> ConfigIssue:
    return ConfigIssue(
        source,
        line,
        "",
        f"the config is larger than {MAX_CONFIG_BYTES >> 20} MiB (it goes on past this line)",
    )


def parse_config(
    text: str,
    source: str = "<string>",
    base_dir: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> ProxyConfig:
    """Parse and validate config text. Raises :class:`ConfigError` with every issue found.

    ``base_dir`` anchors relative module paths (default: ``source``'s directory, or the
    current directory for ``<string>``); ``environ`` feeds ``valueFrom: HOST`` env entries
    (default: ``os.environ``)."""
    if base_dir is not None:
        base = os.path.abspath(os.fspath(base_dir))
    elif source.startswith("<"):
        base = os.getcwd()
    else:
        base = os.path.dirname(os.path.abspath(source))
    env = os.environ if environ is None else environ
    issues: list[ConfigIssue] = []
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError([_too_large(source, text.count("\n", 0, MAX_CONFIG_BYTES) + 1)])
    try:
        _check_limits_fast(text)
        nodes = list(yaml.compose_all(text, Loader=_BoundedLoader))
    except yaml.reader.ReaderError as e:
        # a character YAML does not allow (control characters, NUL): no mark, a position
        pos = e.position
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        ch = e.character if isinstance(e.character, int) else ord(str(e.character)[:1] or "?")
        raise ConfigError(
            [ConfigIssue(source, line, "", f"YAML error: character #x{ch:04x}: {e.reason}", col)]
        ) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = e.problem or e.context or "invalid YAML"
        if e.context and e.problem:
            what = f"{e.problem} ({e.context})"
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, None)
        label = "config too large" if isinstance(e, _LimitError) else "YAML syntax error"
        raise ConfigError([ConfigIssue(source, line, "", f"{label}: {what}", col)]) from None
    except yaml.YAMLError as e:
        raise ConfigError([ConfigIssue(source, 0, "", f"YAML error: {e}")]) from None

    builder = _Builder(source, issues)
    plugins: list[PluginSpec] = []
    proxy: tuple[dict[str, Any], dict[str, Any], int] | None = None  # (fields, raw, line)
    proxy_line = 0
    seen_plugins: dict[tuple[str, str], int] = {}
    for node in nodes:
        if node is None or (isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null"):
            continue  # an empty document
        doc_line = node.start_mark.line + 1
        if not isinstance(node, MappingNode):
            what = "a list" if isinstance(node, SequenceNode) else f"the scalar {node.value!r}"
            issues.append(
                ConfigIssue(
                    source,
                    doc_line,
                    "",
                    f"a document must be a mapping (apiVersion, kind, metadata, spec), got {what}",
                )
            )
            continue
        doc, lines = builder.document(node)
        ctx = _Ctx(source, lines, doc_line, issues)
        kind = _document_kind(doc, ctx)
        if kind == "WasmPlugin":
            spec = _parse_plugin(doc, ctx, base, env)
            if spec is None:
                continue
            key = (spec.namespace, spec.name)
            if key in seen_plugins:
                ctx.error(
                    ("metadata", "name"),
                    f"duplicate plugin name {spec.name!r} in namespace "
                    f"{spec.namespace!r} (first defined at line {seen_plugins[key]})",
                )
                continue
            other = next((ln for (ns, n), ln in seen_plugins.items() if n == spec.name), None)
            if other is not None:
                # Istio allows it across namespaces, but one local proxy names its
                # plugins (stats, admin API, the app) by metadata.name alone.
                ctx.error(
                    ("metadata", "name"),
                    f"plugin name {spec.name!r} is already used in another namespace (line "
                    f"{other}); names must be unique in one wasmdesk config",
                )
                continue
            seen_plugins[key] = doc_line
            plugins.append(spec)
        elif kind == "Proxy":
            if proxy_line:
                ctx.error(
                    ("kind",),
                    f"more than one Proxy document (the first starts at line "
                    f"{proxy_line}); a config has at most one",
                )
                continue
            proxy_line = doc_line
            fields = _parse_proxy(doc, ctx, base)
            if fields is not None:
                proxy = (fields, doc, doc_line)
    if issues:
        issues.sort(key=lambda i: i.line)
        raise ConfigError(issues)
    if proxy is None:
        return ProxyConfig(plugins=tuple(plugins), source=source)
    fields, raw, line = proxy
    if "pull_secrets" in fields:
        fields["pull_secrets"] = tuple(
            (n, _resolve_path(path, base)) for n, path in fields["pull_secrets"]
        )
    return ProxyConfig(**fields, plugins=tuple(plugins), source=source, raw=raw, line=line)


# -- ordering ----------------------------------------------------------------------------------


def _order_key(p: PluginSpec) -> tuple[int, bool, int]:
    # Istio sorts each phase stably by priority descending with an unset priority taken as
    # the minimum integer (pilot/pkg/model/push_context.go), not the documented 0.
    return (_PHASE_RANK.get(p.phase, len(PHASES)), p.priority is None, -(p.priority or 0))


def effective_order(plugins: Iterable[PluginSpec]) -> list[PluginSpec]:
    """The chain order Istio would build: phases AUTHN → AUTHZ → STATS → UNSPECIFIED_PHASE;
    in a phase priority descending, unset priority last (below any negative number); ties
    keep document order (Istio: creation order). Disabled plugins stay in the list."""
    return sorted(plugins, key=_order_key)  # sorted() is stable


def explain_order(plugins: Iterable[PluginSpec]) -> list[str]:
    """One line per plugin, in chain order, saying why it sits where it does."""
    ordered = effective_order(plugins)
    out: list[str] = []
    for pos, p in enumerate(ordered, 1):
        label = p.name if p.namespace == "default" else f"{p.namespace}/{p.name}"
        text = f"{pos}. {label}: phase {p.phase} ({_PHASE_NOTE.get(p.phase, '?')}), "
        if p.priority is None:
            text += "priority unset (treated as lowest, as Istio's code does — docs say 0)"
        else:
            text += f"priority {p.priority}"
        peers = [q.name for q in ordered if q is not p and _order_key(q) == _order_key(p)]
        if peers:
            text += f"; ties with {', '.join(peers)}: kept in document order"
        if p.mode == "disabled":
            text += "; disabled: keeps its place, the proxy skips it"
        else:
            if p.mode == "log-only":
                text += "; log-only: runs, its effects are recorded, not applied"
            if p.canary_percent < 100:
                pct = _fmt_number(p.canary_percent)
                text += f"; canary: runs for {pct}% of requests (key {p.canary_key})"
        out.append(text)
    return out


# -- programmatic changes and export -----------------------------------------------------------


def new_plugin(
    name: str,
    url: str,
    *,
    namespace: str = "default",
    base_dir: str | os.PathLike[str] | None = None,
    **fields: Any,
) -> PluginSpec:
    """A validated plugin created in code (the desktop app's "add plugin"), with its document
    in ``raw``. ``fields`` are PluginSpec field names. Raises :class:`ConfigError`."""
    base = os.path.abspath(os.fspath(base_dir)) if base_dir is not None else os.getcwd()
    seed = PluginSpec(name=name, url=url, namespace=namespace, base_dir=base, source="<new plugin>")
    return with_changes(seed, **fields)


def with_changes(spec: PluginSpec, **changes: Any) -> PluginSpec:
    """``dataclasses.replace`` that validates the result and keeps ``raw`` (and the derived
    ``vm_env``) in step, so the change shows in :func:`dump_config`. Giving ``vm_env`` alone
    sets INLINE ``env`` entries; ``plugin_config_json`` alone sets ``plugin_config``; a
    ``location`` alone sets ``url``. Raises :class:`ConfigError` (a ValueError)."""
    names = {f.name for f in dataclasses.fields(PluginSpec)}
    derived = {"plugin_config_json", "location", "location_kind"}
    unknown = sorted(set(changes) - names - derived)
    if unknown:
        raise TypeError(f"with_changes: unknown PluginSpec field(s): {', '.join(unknown)}")
    changes = dict(changes)
    if "plugin_config_json" in changes:
        text = changes.pop("plugin_config_json")
        if "plugin_config" not in changes:
            changes["plugin_config"] = _config_from_json(text)
    if "location" in changes:
        loc = changes.pop("location")
        changes.setdefault("url", str(loc))
    changes.pop("location_kind", None)
    if "vm_env" in changes and "env" not in changes:
        changes["env"] = tuple(EnvVar(str(k), "INLINE", str(v)) for k, v in changes["vm_env"])
    for key in ("env", "match", "target_refs"):
        if key in changes and changes[key] is not None:
            changes[key] = tuple(changes[key])
    if "env" in changes:
        changes["env"] = tuple(e if isinstance(e, EnvVar) else EnvVar(*e) for e in changes["env"])
    if "match" in changes:
        changes["match"] = tuple(
            m if isinstance(m, TrafficSelector) else TrafficSelector(m[0], tuple(m[1]))
            for m in changes["match"]
        )
    changed = dataclasses.replace(spec, **changes)
    doc = plugin_to_document(changed)
    issues: list[ConfigIssue] = []
    file = spec.source or "<with_changes>"
    ctx = _Ctx(file, {}, spec.line, issues)
    kind = _document_kind(doc, ctx)
    result = _parse_plugin(doc, ctx, spec.base_dir or os.getcwd(), os.environ) if kind else None
    if issues or result is None:
        raise ConfigError(issues or [ConfigIssue(file, spec.line, "", "invalid plugin")])
    return dataclasses.replace(result, line=spec.line, source=spec.source)


def plugin_to_document(spec: PluginSpec) -> dict[str, Any]:
    """The WasmPlugin document for ``spec``: its ``raw`` document (if any) with the fields
    this module manages rewritten where they differ; for a plugin made in code, a fresh
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


# -- YAML nodes → Python values, with the line of every field ----------------------------------

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_SCALAR_TAGS = {
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:timestamp",
}
_NODE_BUDGET = 200_000  # guards against alias bombs
# Limits on what a config may be, checked while reading and composing, before any
# Python value is built (a huge or deeply nested file must be refused, not crash or
# take minutes): the file's size, YAML nodes in the whole file, nesting depth.
MAX_CONFIG_BYTES = 16 << 20
MAX_CONFIG_NODES = 100_000
MAX_CONFIG_DEPTH = 64


class _LimitError(yaml.MarkedYAMLError):
    """A config over one of the limits (refused at the node where it was crossed)."""


def _check_limits_fast(text: str) -> None:
    """The node and depth limits checked on libyaml's event stream (when PyYAML has it):
    a file over them is refused in a fraction of the time the pure-Python composer takes
    to get there. Syntax errors are left to that composer, which words them as before."""
    if not getattr(yaml, "__with_libyaml__", False):
        return
    depth = nodes = 0
    mark: Any  # libyaml's Mark: the same fields as PyYAML's
    try:
        for ev in yaml.parse(text, Loader=yaml.CSafeLoader):
            if isinstance(ev, (yaml.ScalarEvent, yaml.AliasEvent)):
                nodes += 1
            elif isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                nodes += 1
                depth += 1
                if depth > MAX_CONFIG_DEPTH:
                    mark = ev.start_mark
                    raise _LimitError(
                        None, None, f"nested deeper than {MAX_CONFIG_DEPTH} levels", mark
                    )
            elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
            if nodes > MAX_CONFIG_NODES:
                mark = ev.start_mark
                raise _LimitError(
                    None,
                    None,
                    f"more than {MAX_CONFIG_NODES} YAML nodes in the file",
                    mark,
                )
    except _LimitError:
        raise
    except (yaml.YAMLError, UnicodeEncodeError):  # (lone surrogates: not UTF-8 encodable)
        return


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing (with the position) a file that nests deeper than
    ``MAX_CONFIG_DEPTH`` or holds more than ``MAX_CONFIG_NODES`` nodes while it composes
    (PyYAML's composer recurses once per level: no RecursionError can happen)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self._depth >= MAX_CONFIG_DEPTH:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise _LimitError(None, None, f"nested deeper than {MAX_CONFIG_DEPTH} levels", mark)
        self._nodes += 1
        if self._nodes > MAX_CONFIG_NODES:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise _LimitError(
                None, None, f"more than {MAX_CONFIG_NODES} YAML nodes in the file", mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Builder:
    """Turns composed nodes into plain values (dict/list/str/int/float/bool/None), recording
    the line of every mapping key and list item so errors can point at them."""

    def __init__(self, file: str, issues: list[ConfigIssue]) -> None:
        self.file = file
        self.issues = issues
        self.constructor = yaml.SafeLoader("")
        self.budget = _NODE_BUDGET

    def document(self, node: Node) -> tuple[dict[str, Any], dict[_Path, int]]:
        lines: dict[_Path, int] = {(): node.start_mark.line + 1}
        value = self._value(node, (), lines, set())
        return (value if isinstance(value, dict) else {}), lines

    def _issue(self, node: Node, message: str) -> None:
        self.issues.append(
            ConfigIssue(
                self.file, node.start_mark.line + 1, "", message, node.start_mark.column + 1
            )
        )

    def _value(self, node: Node, path: _Path, lines: dict[_Path, int], stack: set[int]) -> Any:
        self.budget -= 1
        if self.budget == 0:
            self._issue(node, "the document is too large (an alias expanding too often?)")
        if self.budget <= 0:
            return None
        if isinstance(node, ScalarNode):
            return self._scalar(node)
        if id(node) in stack:
            self._issue(node, "recursive YAML alias")
            return None
        if len(path) >= MAX_CONFIG_DEPTH:
            # aliases can nest what the composer saw within the limit deeper still
            self._issue(node, f"nested deeper than {MAX_CONFIG_DEPTH} levels (through aliases)")
            return None
        stack.add(id(node))
        try:
            if isinstance(node, MappingNode):
                if node.tag != _MAP_TAG:
                    self._issue(node, f"unsupported YAML tag {_short_tag(node.tag)}")
                out: dict[str, Any] = {}
                own: set[str] = set()
                for knode, vnode, merged in self._pairs(node, set()):
                    key = self._key(knode)
                    if key is None:
                        continue
                    if not merged:
                        if key in own:
                            self._issue(knode, f"duplicate key {key!r}")
                        own.add(key)
                    lines[(*path, key)] = knode.start_mark.line + 1
                    out[key] = self._value(vnode, (*path, key), lines, stack)
                return out
            if isinstance(node, SequenceNode):
                if node.tag != _SEQ_TAG:
                    self._issue(node, f"unsupported YAML tag {_short_tag(node.tag)}")
                items: list[Any] = []
                for i, item in enumerate(node.value):
                    lines[(*path, i)] = item.start_mark.line + 1
                    items.append(self._value(item, (*path, i), lines, stack))
                return items
            return None
        finally:
            stack.discard(id(node))

    def _pairs(self, node: MappingNode, merging: set[int]) -> list[tuple[Node, Node, bool]]:
        """Key/value pairs with ``<<`` merge keys expanded: merged ones first (explicit keys
        override them; of several merged maps the first wins), flagged as merged.
        ``merging``: the mappings being merged on the way here (a merge of itself is an
        error, not endless recursion)."""
        merged: list[tuple[Node, Node, bool]] = []
        own: list[tuple[Node, Node, bool]] = []
        if len(merging) >= MAX_CONFIG_DEPTH:
            self._issue(node, f"<< merges nested deeper than {MAX_CONFIG_DEPTH} levels")
            return []
        merging.add(id(node))
        try:
            for knode, vnode in node.value:
                if knode.tag != _MERGE_TAG:
                    own.append((knode, vnode, False))
                    continue
                subs = vnode.value if isinstance(vnode, SequenceNode) else [vnode]
                for sub in reversed(subs):
                    if not isinstance(sub, MappingNode):
                        self._issue(sub, "a << merge key needs a mapping or a list of mappings")
                    elif id(sub) in merging:
                        self._issue(sub, "recursive << merge (a mapping merges itself)")
                    else:
                        merged.extend((k, v, True) for k, v, _ in self._pairs(sub, merging))
        finally:
            merging.discard(id(node))
        # merged pairs are copies: count them against the budget as nodes are (merge bombs)
        self.budget -= len(merged)
        if self.budget <= 0:
            self._issue(node, "the document is too large (merge keys expanding too often?)")
            return []
        return merged + own

    def _key(self, node: Node) -> str | None:
        if not isinstance(node, ScalarNode):
            self._issue(node, "mapping keys must be plain scalars")
            return None
        value = self._scalar(node)
        # Kubernetes (sigs.k8s.io/yaml) turns non-string keys into their text; so do we.
        return value if isinstance(value, str) else str(node.value)

    def _scalar(self, node: ScalarNode) -> Any:
        tag = node.tag
        if tag not in _SCALAR_TAGS:
            self._issue(node, f"unsupported YAML tag {_short_tag(tag)}")
            return None
        if tag in ("tag:yaml.org,2002:str", "tag:yaml.org,2002:timestamp"):
            # Timestamps stay text, as in Kubernetes, so they survive JSON and export.
            return str(node.value)
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as e:
            self._issue(node, f"invalid value: {e}")
            return None


def _short_tag(tag: str) -> str:
    return "!!" + tag[len("tag:yaml.org,2002:") :] if tag.startswith("tag:yaml.org,2002:") else tag


# -- validation helpers ------------------------------------------------------------------------


class _Ctx:
    def __init__(
        self, file: str, lines: dict[_Path, int], doc_line: int, issues: list[ConfigIssue]
    ) -> None:
        self.file = file
        self.lines = lines
        self.doc_line = doc_line
        self.issues = issues

    def line(self, path: _Path) -> int:
        p = path
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get((), self.doc_line)

    def error(self, path: _Path, message: str) -> None:
        self.issues.append(ConfigIssue(self.file, self.line(path), _fmt_path(path), message))


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _fmt_path(path: _Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    return repr(value)


def _mapping(ctx: _Ctx, value: Any, path: _Path) -> dict[str, Any] | None:
    """``value`` if it is a mapping; None (silently) if null/absent; None with an error else."""
    if value is None:
        return None
    if not isinstance(value, dict):
        ctx.error(path, f"expected a mapping, got {_describe(value)}")
        return None
    return value


def _list(ctx: _Ctx, value: Any, path: _Path) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        ctx.error(path, f"expected a list, got {_describe(value)}")
        return []
    return value


def _string(ctx: _Ctx, value: Any, path: _Path, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            ctx.error(path, "required field is missing")
        return None
    if not isinstance(value, str):
        ctx.error(path, f"expected a string, got {_describe(value)}")
        return None
    return value


def _enum(ctx: _Ctx, value: Any, path: _Path, choices: Sequence[str], default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or value not in choices:
        ctx.error(path, f"expected one of {', '.join(sorted(choices))}, got {_describe(value)}")
        return default
    return value


def _document_kind(doc: dict[str, Any], ctx: _Ctx) -> str | None:
    kind = doc.get("kind")
    api = doc.get("apiVersion")
    if kind is None:
        ctx.error(("kind",), "required field is missing (expected WasmPlugin or Proxy)")
        return None
    if not isinstance(kind, str) or kind not in _KINDS:
        hint = ""
        if isinstance(kind, str):
            close = [k for k in _KINDS if k.lower() == kind.lower()]
            hint = f" (did you mean {close[0]}?)" if close else ""
        ctx.error(
            ("kind",),
            f"unknown kind {_describe(kind)}{hint}; expected WasmPlugin "
            f"({WASMPLUGIN_API_VERSION}) or Proxy ({PROXY_API_VERSION})",
        )
        return None
    want = _KINDS[kind]
    if api is None:
        ctx.error(("apiVersion",), f"required field is missing (expected {want} for kind {kind})")
        return None
    if api != want:
        ctx.error(("apiVersion",), f"expected {want} for kind {kind}, got {_describe(api)}")
        return None
    return kind


# -- URLs, durations, sizes, addresses ---------------------------------------------------------


def _looks_like_path(url: str) -> bool:
    return (
        url.startswith(("/", "./", "../", "~", "\\", ".\\", "..\\"))
        or re.match(r"[A-Za-z]:[\\/]", url) is not None
        or url.lower().endswith(".wasm")
    )


def _classify_url(url: str, base_dir: str) -> tuple[str, str] | str:
    """(kind, location) for a module URL, or an error message.

    As Istio: ``file://`` (the rest is the path: ``strings.TrimPrefix``), ``http(s)://``,
    ``oci://``, and no scheme ⇒ an OCI reference (``registry:5000/repo:tag`` included).
    Wasmdesk extension: a scheme-less value that is clearly a path (``/…``, ``./…``, ``~/…``,
    ``…/x.wasm``) is a local file. Relative paths resolve against the config's directory."""
    m = _SCHEME.match(url)
    if m is None:
        if _looks_like_path(url):
            return "file", _resolve_path(url, base_dir)
        if not url.strip() or any(c.isspace() for c in url):
            return "expected a module URL (file://, http(s)://, oci://) or a path"
        return "oci", "oci://" + url
    scheme = m.group(1).lower()
    rest = url[m.end() :]
    if scheme == "file":
        if not rest:
            return "a file:// URL needs a path"
        return "file", _resolve_path(rest, base_dir)
    if scheme in ("http", "https"):
        err = _check_http_url(url)
        return err if err else (scheme, url)
    if scheme == "oci":
        if not rest or rest.startswith("/"):
            return "an oci:// URL needs an image reference (oci://registry/repo:tag)"
        return "oci", url
    return (
        f"unsupported scheme {scheme + '://'!r}; "
        "expected file://, http://, https://, oci:// or a path"
    )


def _resolve_path(p: str, base_dir: str) -> str:
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(p)))


def _check_http_url(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        return f"invalid URL: {e}"
    if not parts.hostname:
        return f"the URL has no host: {url!r}"
    if port == 0:
        return "port 0 is not a valid destination port"
    return None


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


# -- pluginConfig as Istio serialises it -------------------------------------------------------


def _check_json(ctx: _Ctx, value: Any, path: _Path) -> None:
    """pluginConfig must be representable as a google.protobuf.Struct."""
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        if abs(value) > 2**1023:
            ctx.error(path, "number too large for a JSON double")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            ctx.error(path, f"{value!r} has no JSON representation")
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_json(ctx, v, (*path, i))
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _check_json(ctx, v, (*path, k))
        return
    ctx.error(path, f"unsupported value {value!r}")


def _istio_json(value: Any) -> bytes:
    """Istio's ``protomarshal.ToJSON(Struct)`` (golang/protobuf jsonpb, no indent): object
    keys sorted, numbers are doubles printed as Go's encoding/json does, strings escaped as
    Go does (<, >, & and U+2028/9 as \\u escapes). istio/istio pilot/pkg/model/wasm.go."""
    return _go_json(value).encode("utf-8")


def _go_json(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return _go_number(float(value))
    if isinstance(value, str):
        return _go_string(value)
    if isinstance(value, list):
        return "[" + ",".join(_go_json(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(f"{_go_string(str(k))}:{_go_json(value[k])}" for k in sorted(value))
            + "}"
        )
    raise TypeError(f"not JSON: {value!r}")


def _go_number(f: float) -> str:
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    a = abs(f)
    if a < 1e-6 or a >= 1e21:
        mantissa, exp = repr(f).split("e")
        n = int(exp)
        return f"{mantissa}e-{-n}" if n < 0 else f"{mantissa}e+{n:02d}"
    s = format(Decimal(repr(f)), "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


_GO_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}


def _go_string(s: str) -> str:
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif o < 0x20 or ch in "<>&" or o in (0x2028, 0x2029):
            out.append(f"\\u{o:04x}")
        elif 0xD800 <= o <= 0xDFFF:
            out.append("\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _config_from_json(text: Any) -> dict[str, Any]:
    """``plugin_config_json`` given to :func:`with_changes`, as a pluginConfig mapping."""
    problem = "pluginConfig must be a JSON object"
    try:
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8")
        obj = json.loads(text) if text else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        problem = f"pluginConfig is not JSON: {e}"
        obj = None
    if not isinstance(obj, dict):
        raise ConfigError([ConfigIssue("<with_changes>", 0, "spec.pluginConfig", problem)])
    return obj


# -- WasmPlugin documents ----------------------------------------------------------------------


def _parse_plugin(
    doc: dict[str, Any], ctx: _Ctx, base_dir: str, environ: Mapping[str, str]
) -> PluginSpec | None:
    before = len(ctx.issues)
    meta = _mapping(ctx, doc.get("metadata"), ("metadata",))
    if meta is None and doc.get("metadata") is not None:
        return None  # not a mapping: reported; the rest would only add noise
    meta = meta or {}
    name = _string(ctx, meta.get("name"), ("metadata", "name"), required=True) or ""
    if name and (len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name)):
        ctx.error(
            ("metadata", "name"),
            f"expected a lower-case RFC 1123 name (a-z, 0-9, '-', '.'; "
            f"starting and ending alphanumeric, at most 253 characters), got {name!r}",
        )
    namespace = _string(ctx, meta.get("namespace"), ("metadata", "namespace")) or "default"
    if len(namespace) > 63 or not _DNS1123_LABEL.fullmatch(namespace):
        ctx.error(
            ("metadata", "namespace"),
            f"expected a lower-case RFC 1123 label (a-z, 0-9, '-', "
            f"at most 63 characters), got {namespace!r}",
        )
    knobs = _parse_annotations(ctx, meta.get("annotations"))

    spec = _mapping(ctx, doc.get("spec"), ("spec",))
    if spec is None:
        if doc.get("spec") is None:
            ctx.error(("spec",), "required field is missing (spec.url at least)")
        return None

    url = _string(ctx, spec.get("url"), ("spec", "url"), required=True) or ""
    if url:
        loc = _classify_url(url, base_dir)
        if isinstance(loc, str):
            ctx.error(("spec", "url"), loc)
    elif "url" in spec and isinstance(spec.get("url"), str):
        ctx.error(("spec", "url"), "must not be empty")

    sha256 = _string(ctx, spec.get("sha256"), ("spec", "sha256")) or ""
    if sha256 and not _SHA256.fullmatch(sha256):
        hint = " (lower-case only)" if _SHA256.fullmatch(sha256.lower()) else ""
        ctx.error(
            ("spec", "sha256"), f"expected 64 lower-case hex digits or empty{hint}, got {sha256!r}"
        )
    elif sha256 and "@sha256:" in url:
        pinned = url.rsplit("@sha256:", 1)[1]
        if pinned != sha256:
            ctx.error(
                ("spec", "sha256"), f"does not match the digest in spec.url (@sha256:{pinned})"
            )

    plugin_name = _string(ctx, spec.get("pluginName"), ("spec", "pluginName")) or ""
    if len(plugin_name) > 256:
        ctx.error(("spec", "pluginName"), f"at most 256 characters, got {len(plugin_name)}")

    plugin_config: dict[str, Any] = {}
    if spec.get("pluginConfig") is not None:
        pc = _mapping(ctx, spec.get("pluginConfig"), ("spec", "pluginConfig"))
        if pc is not None:
            _check_json(ctx, pc, ("spec", "pluginConfig"))
            plugin_config = copy.deepcopy(pc)  # the spec never shares objects with raw

    phase = _enum(ctx, spec.get("phase"), ("spec", "phase"), PHASES, "UNSPECIFIED_PHASE")
    priority: int | None = None
    raw_priority = spec.get("priority")
    if raw_priority is not None:
        if isinstance(raw_priority, bool) or not isinstance(raw_priority, int):
            hint = " (remove the quotes)" if isinstance(raw_priority, str) else ""
            ctx.error(
                ("spec", "priority"), f"expected an integer{hint}, got {_describe(raw_priority)}"
            )
        elif not _INT32[0] <= raw_priority <= _INT32[1]:
            ctx.error(("spec", "priority"), f"expected a 32-bit integer, got {raw_priority}")
        else:
            priority = raw_priority
    fail_strategy = _enum(
        ctx, spec.get("failStrategy"), ("spec", "failStrategy"), FAIL_STRATEGIES, "FAIL_CLOSE"
    )
    ptype = _enum(ctx, spec.get("type"), ("spec", "type"), PLUGIN_TYPES, "UNSPECIFIED_PLUGIN_TYPE")
    if ptype == "UNSPECIFIED_PLUGIN_TYPE":
        ptype = "HTTP"
    pull = _enum(
        ctx,
        spec.get("imagePullPolicy"),
        ("spec", "imagePullPolicy"),
        PULL_POLICIES,
        "UNSPECIFIED_POLICY",
    )
    secret = _string(ctx, spec.get("imagePullSecret"), ("spec", "imagePullSecret"))
    if secret is not None and not 1 <= len(secret) <= 253:
        ctx.error(("spec", "imagePullSecret"), "expected 1..253 characters")

    env, vm_env = _parse_env(ctx, spec.get("vmConfig"), environ)
    match = _parse_match(ctx, spec.get("match"))

    selector = _mapping(ctx, spec.get("selector"), ("spec", "selector"))
    if selector is not None and "matchLabels" in selector:
        labels = _mapping(ctx, selector["matchLabels"], ("spec", "selector", "matchLabels"))
        for k, v in (labels or {}).items():
            if not isinstance(v, str):
                ctx.error(
                    ("spec", "selector", "matchLabels", k), f"expected a string, got {_describe(v)}"
                )
    target_refs: list[dict[str, Any]] = []
    for i, ref in enumerate(_list(ctx, spec.get("targetRefs"), ("spec", "targetRefs"))):
        m = _mapping(ctx, ref, ("spec", "targetRefs", i))
        if m is None and ref is None:
            ctx.error(("spec", "targetRefs", i), "expected a mapping, got null")
        if m is not None:
            target_refs.append(m)
    if len(target_refs) > _MAX_TARGET_REFS:
        ctx.error(
            ("spec", "targetRefs"), f"at most {_MAX_TARGET_REFS} entries, got {len(target_refs)}"
        )
    legacy_ref = _mapping(ctx, spec.get("targetRef"), ("spec", "targetRef"))
    if legacy_ref is not None:
        if target_refs:
            ctx.error(("spec", "targetRef"), "only one of targetRefs or targetRef can be set")
        else:
            target_refs = [legacy_ref]
    if selector is not None and target_refs:
        field_name = "targetRefs" if spec.get("targetRefs") else "targetRef"
        ctx.error(("spec", field_name), "only one of targetRefs or selector can be set")

    if len(ctx.issues) > before:
        return None
    return PluginSpec(
        name=name,
        url=url,
        namespace=namespace,
        sha256=sha256,
        plugin_name=plugin_name,
        plugin_config=plugin_config,
        phase=phase,
        priority=priority,
        fail_strategy=fail_strategy,
        env=env,
        vm_env=vm_env,
        type=ptype,
        match=match,
        image_pull_policy=pull,
        image_pull_secret=secret or "",
        selector=copy.deepcopy(selector),
        target_refs=tuple(copy.deepcopy(target_refs)),
        raw=doc,
        line=ctx.doc_line,
        source=ctx.file,
        base_dir=base_dir,
        **knobs,
    )


def _parse_annotations(ctx: _Ctx, value: Any) -> dict[str, Any]:
    knobs: dict[str, Any] = {}
    annotations = _mapping(ctx, value, ("metadata", "annotations")) or {}
    for key, v in annotations.items():
        path: _Path = ("metadata", "annotations", key)
        if not key.startswith(ANNOTATION_PREFIX):
            continue  # other tools' annotations are theirs
        if key not in _ANNOTATIONS:
            ctx.error(path, f"unknown wasmdesk annotation; known: {', '.join(_ANNOTATIONS)}")
            continue
        if key == ANNOTATION_CANARY_PERCENT:
            # Annotation values are strings in Kubernetes; a bare YAML number is accepted too.
            pct: float | None = None
            if isinstance(v, str):
                try:
                    pct = float(v.strip())
                except ValueError:
                    pct = None
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                pct = float(v)
            if pct is None or not math.isfinite(pct) or not 0 <= pct <= 100:
                ctx.error(path, f"expected a number from 0 to 100, got {_describe(v)}")
            else:
                knobs["canary_percent"] = pct
            continue
        if key == ANNOTATION_MEMORY_LIMIT:
            n = _parse_quantity(v)
            if n is None or not _MIN_MEMORY_LIMIT <= n <= _MAX_MEMORY_LIMIT:
                ctx.error(
                    path, f"expected a size from 64Ki to 4Gi (e.g. 256Mi), got {_describe(v)}"
                )
            else:
                knobs["memory_limit_bytes"] = n
            continue
        if key == ANNOTATION_CALLBACK_TIMEOUT:
            ms = _parse_duration_ms(v)
            if ms is None:
                ctx.error(
                    path, f"expected a positive duration (e.g. 100ms, 2s), got {_describe(v)}"
                )
            else:
                knobs["callback_timeout_ms"] = float(ms)
            continue
        text = _string(ctx, v, path)
        if text is None:
            if v is None:
                ctx.error(path, "expected a string, got null")
            continue
        if key == ANNOTATION_MODE:
            knobs["mode"] = _enum(ctx, text, path, MODES, "enforce")
        elif key == ANNOTATION_CANARY_KEY:
            if text in ("random", "client-ip"):
                knobs["canary_key"] = text
            elif text.startswith("header:") and _HEADER_NAME.fullmatch(text[7:]):
                knobs["canary_key"] = "header:" + text[7:].lower()
            else:
                ctx.error(path, f"expected random, client-ip or header:NAME, got {text!r}")
        elif key == ANNOTATION_VM_ID:
            knobs["vm_id"] = text
    return knobs


def _parse_env(
    ctx: _Ctx, value: Any, environ: Mapping[str, str]
) -> tuple[tuple[EnvVar, ...], tuple[tuple[str, str], ...]]:
    vm = _mapping(ctx, value, ("spec", "vmConfig"))
    if vm is None:
        return (), ()
    entries = _list(ctx, vm.get("env"), ("spec", "vmConfig", "env"))
    if len(entries) > _MAX_ENV:
        ctx.error(("spec", "vmConfig", "env"), f"at most {_MAX_ENV} entries, got {len(entries)}")
    env: list[EnvVar] = []
    resolved: list[tuple[str, str]] = []
    first: dict[str, int] = {}
    for i, entry in enumerate(entries):
        path: _Path = ("spec", "vmConfig", "env", i)
        m = _mapping(ctx, entry, path)
        if m is None:
            if entry is None:
                ctx.error(path, "expected a mapping with name (and valueFrom, value), got null")
            continue
        name = _string(ctx, m.get("name"), (*path, "name"), required=True)
        if name is not None and (len(name) > 256 or not _C_IDENTIFIER.fullmatch(name)):
            ctx.error(
                (*path, "name"),
                f"expected a C identifier ([A-Za-z_][A-Za-z0-9_]*, at most 256 "
                f"characters), got {name!r}",
            )
            name = None
        source = _enum(ctx, m.get("valueFrom"), (*path, "valueFrom"), ENV_SOURCES, "INLINE")
        val = m.get("value")
        text = ""
        if source == "HOST" and val is not None:
            # istio/api EnvVar CEL rule (the field comment says the opposite; the rule wins).
            ctx.error((*path, "value"), "value may only be set when valueFrom is INLINE")
        elif val is not None:
            text = _string(ctx, val, (*path, "value")) or ""
            if len(text) > 2048:
                ctx.error((*path, "value"), f"at most 2048 characters, got {len(text)}")
        if name is None:
            continue
        if name in first:
            # A list-map keyed by name in the CRD; Envoy rejects a key in both INLINE and HOST.
            ctx.error(
                (*path, "name"),
                f"duplicate env name {name!r} (first at spec.vmConfig.env[{first[name]}])",
            )
            continue
        first[name] = i
        env.append(EnvVar(name, source, text))
        if source == "INLINE":
            resolved.append((name, text))
        elif name in environ:  # missing host keys are ignored, as in Envoy
            resolved.append((name, environ[name]))
    return tuple(env), tuple(resolved)


def _parse_match(ctx: _Ctx, value: Any) -> tuple[TrafficSelector, ...]:
    out: list[TrafficSelector] = []
    for i, entry in enumerate(_list(ctx, value, ("spec", "match"))):
        path: _Path = ("spec", "match", i)
        m = _mapping(ctx, entry, path)
        if m is None:
            if entry is None:
                ctx.error(path, "expected a mapping (mode, ports), got null")
            continue
        mode = _enum(ctx, m.get("mode"), (*path, "mode"), MATCH_MODES, "CLIENT_AND_SERVER")
        if mode == "UNDEFINED":
            mode = "CLIENT_AND_SERVER"  # pilot/pkg/model/wasm.go matchMode treats them alike
        ports: list[int] = []
        for j, port in enumerate(_list(ctx, m.get("ports"), (*path, "ports"))):
            ppath: _Path = (*path, "ports", j)
            pm = _mapping(ctx, port, ppath)
            number = pm.get("number") if pm is not None else None
            if pm is None and port is not None:
                continue
            if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 65535:
                ctx.error(
                    (*ppath, "number"), f"expected a port number 1..65535, got {_describe(number)}"
                )
            elif number in ports:
                ctx.error((*ppath, "number"), f"duplicate port {number}")
            else:
                ports.append(number)
        out.append(TrafficSelector(mode, tuple(ports)))
    return tuple(out)


def _parse_quietly(doc: dict[str, Any], base_dir: str) -> PluginSpec | None:
    """A raw document as a spec (for export diffs), or None if it does not validate."""
    issues: list[ConfigIssue] = []
    ctx = _Ctx("<raw>", {}, 0, issues)
    if _document_kind(doc, ctx) != "WasmPlugin":
        return None
    spec = _parse_plugin(doc, ctx, base_dir or os.getcwd(), {})
    return None if issues else spec


# -- writing managed fields back into a WasmPlugin document ------------------------------------


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
    ("mode", _annotation_writer(ANNOTATION_MODE, "enforce", str)),
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
    ("phase", _field_writer(("spec", "phase"), "UNSPECIFIED_PHASE")),
    ("priority", _field_writer(("spec", "priority"), None)),
    ("fail_strategy", _field_writer(("spec", "failStrategy"), "FAIL_CLOSE")),
    ("env", _write_env),
    ("match", _write_match),
    ("type", _field_writer(("spec", "type"), "HTTP")),
)
_PLUGIN_DEFAULTS: dict[str, Any] = {
    f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
    for f in dataclasses.fields(PluginSpec)
}


# -- the Proxy document ------------------------------------------------------------------------

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
)
_TIMEOUT_FIELDS = {"requestHeaders": "request_headers_timeout_s", "idle": "idle_timeout_s"}
_CLUSTER_FIELDS = ("name", "url", "timeout", "connectTimeout", "caFile")


def _parse_proxy(
    doc: dict[str, Any], ctx: _Ctx, base_dir: str | None = None
) -> dict[str, Any] | None:
    """The Proxy document's fields; ``base_dir`` anchors relative ``caFile`` paths (and
    only then are they checked to exist)."""
    before = len(ctx.issues)
    out: dict[str, Any] = {}
    _mapping(ctx, doc.get("metadata"), ("metadata",))
    spec = _mapping(ctx, doc.get("spec"), ("spec",)) or {}
    for key in spec:
        if key not in _PROXY_SPEC_FIELDS:
            ctx.error(
                ("spec", key), f"unknown field; expected one of {', '.join(_PROXY_SPEC_FIELDS)}"
            )
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
    for i, entry in enumerate(_list(ctx, spec.get("clusters"), ("spec", "clusters"))):
        path: _Path = ("spec", "clusters", i)
        m = _mapping(ctx, entry, path)
        if m is None:
            if entry is None:
                ctx.error(path, "expected a mapping (name, url, timeout), got null")
            continue
        for key in m:
            if key not in _CLUSTER_FIELDS:
                ctx.error(
                    (*path, key), f"unknown field; expected one of {', '.join(_CLUSTER_FIELDS)}"
                )
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
            if url is not None and not url.lower().startswith("grpcs://"):
                ctx.error((*path, "caFile"), "only a grpcs:// cluster takes a caFile")
            ca_file = _resolve_path(ca_file, base_dir or os.getcwd())
            if base_dir is not None and not os.path.isfile(ca_file):
                ctx.error((*path, "caFile"), f"no such file: {ca_file!r}")
        if name is not None:
            first[name] = i
        if name is not None and url is not None and timeouts["timeout"] is not None:
            clusters.append(
                ClusterConfig(name, url, timeouts["timeout"], timeouts["connectTimeout"], ca_file)
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
        elif any(c.name == default and not c.url.startswith("http://") for c in clusters):
            # found before start-up (file:line, exit 2), not as a start-up failure
            scheme = next(c.url for c in clusters if c.name == default).split(":", 1)[0]
            ctx.error(
                ("spec", "defaultCluster"),
                f"{default!r} is an {scheme}:// cluster: the proxy forwards to http:// "
                f"upstreams only ({scheme} clusters serve plugin callouts)",
            )
        out["default_cluster"] = default
    if spec.get("node") is not None:
        try:
            out["node"] = NodeInfo.parse(spec["node"])
        except NodeError as e:
            ctx.error(("spec", "node"), str(e))
    out["routes"] = _parse_routes(ctx, spec.get("routes"), first, clusters)
    out["direction"] = _enum(
        ctx, spec.get("direction"), ("spec", "direction"), DIRECTIONS, "SERVER"
    )
    secrets = _mapping(ctx, spec.get("pullSecrets"), ("spec", "pullSecrets"))
    if secrets:
        paths = [
            (str(k), _string(ctx, v, ("spec", "pullSecrets", str(k)))) for k, v in secrets.items()
        ]
        out["pull_secrets"] = tuple((k, v) for k, v in paths if v)
    _parse_listener_limits(spec, ctx, out)
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
    for i, entry in enumerate(_list(ctx, value, ("spec", "routes"))):
        path: _Path = ("spec", "routes", i)
        m = _mapping(ctx, entry, path)
        if m is None:
            if entry is None:
                ctx.error(path, "expected a mapping (name, match, cluster), got null")
            continue
        ok = True
        for key in m:
            if key not in _ROUTE_FIELDS:
                ctx.error(
                    (*path, key), f"unknown field; expected one of {', '.join(_ROUTE_FIELDS)}"
                )
                ok = False
        name = _string(ctx, m.get("name"), (*path, "name")) or ""
        cluster = _string(ctx, m.get("cluster"), (*path, "cluster"), required=True)
        if cluster is not None:
            known = next((c for c in clusters if c.name == cluster), None)
            if cluster not in defined:
                ctx.error(
                    (*path, "cluster"),
                    f"{cluster!r} is not a cluster in spec.clusters "
                    f"(defined: {', '.join(defined) or 'none'})",
                )
                ok = False
            elif known is not None and not known.url.startswith("http://"):
                ctx.error(
                    (*path, "cluster"),
                    f"the proxy forwards to http:// upstreams only; {known.url} can serve "
                    "plugin callouts but not be a route's cluster",
                )
                ok = False
        else:
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
            if not _HEADER_NAME.fullmatch(hname):
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


def _cluster_url_error(url: str) -> str | None:
    m = _SCHEME.match(url)
    if m is None or m.group(1).lower() not in ("http", "https", "grpc", "grpcs"):
        return f"expected an http://, https://, grpc:// or grpcs:// URL, got {url!r}"
    err = _check_http_url(url)
    if err:
        return err
    parts = urlsplit(url)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"a cluster is a scheme, host and port; drop the path/query from {url!r}"
    return None


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
    new_fields = ("listen", "admin", "clusters", "default_cluster", "node", "routes", "direction")
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
    if config.direction != old.direction:
        if config.direction == "SERVER":
            spec.pop("direction", None)
        else:
            spec["direction"] = config.direction
    return base


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
