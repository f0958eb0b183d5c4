"""The configuration's value types: :class:`PluginSpec` (one WasmPlugin), :class:`ProxyConfig`
(the Proxy document plus the plugins), clusters, routes, env entries, traffic selectors, the
API versions and annotation keys, and the StrEnums of the operator knobs. Frozen values;
building them from YAML is :mod:`.parse`'s job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

from host.proxy.config.enums import Direction, FailStrategy, Mode, Phase
from host.proxy.config.istio_json import _istio_json
from host.proxy.config.units import _fmt_hostport
from host.proxy.config.validate import _classify_url
from host.wasm.node import DEFAULT_NODE
from host.wasm.node import Node as NodeInfo

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
PHASES: tuple[str, ...] = tuple(m.value for m in Phase)
FAIL_STRATEGIES: tuple[str, ...] = tuple(m.value for m in FailStrategy)
PLUGIN_TYPES = ("UNSPECIFIED_PLUGIN_TYPE", "HTTP", "NETWORK")
PULL_POLICIES = ("UNSPECIFIED_POLICY", "IfNotPresent", "Always")
MATCH_MODES = ("UNDEFINED", "CLIENT", "SERVER", "CLIENT_AND_SERVER")
# the Proxy document's spec.direction (Istio's match modes)
DIRECTIONS: tuple[str, ...] = tuple(m.value for m in Direction)
ENV_SOURCES = ("INLINE", "HOST")
MODES: tuple[str, ...] = tuple(m.value for m in Mode)

DEFAULT_LISTEN = ("127.0.0.1", 10000)
DEFAULT_ADMIN = ("127.0.0.1", 9901)
DEFAULT_CLUSTER_TIMEOUT_S = 5.0
# Same defaults as host.wasm.vm.VmConfig (not imported: the config stays free of wasmtime).
DEFAULT_CALLBACK_TIMEOUT_MS = 100.0
DEFAULT_MEMORY_LIMIT = 256 * 1024 * 1024
_MIN_MEMORY_LIMIT = 64 * 1024  # one wasm page
_MAX_MEMORY_LIMIT = 4 * 1024 * 1024 * 1024  # wasm32 address space

_INT32 = (-(2**31), 2**31 - 1)
_MAX_ENV = 256  # istio/api wasm.proto VmConfig.env MaxItems
_MAX_TARGET_REFS = 16


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
    ca_file: str | None = None  # https://, grpcs://: trust these CAs, not the system store
    # the data path's upstream protocol as written ("http1" | "h2"); None: from the URL
    # (grpc:// and grpcs:// are h2, http:// and https:// are http1)
    protocol: str | None = None

    @property
    def forwards(self) -> bool:
        """Whether the data path can forward to this cluster: http:// and https:// (HTTP/1.1,
        or HTTP/2 with ``protocol: h2``), grpc:// and grpcs:// (HTTP/2); tcp:// clusters
        serve the spec.tcp listeners only."""
        return self.url.split(":", 1)[0].lower() in ("http", "https", "grpc", "grpcs")


@dataclass(frozen=True)
class ListenerTls:
    """The Proxy document's ``spec.tls``: the listener's certificate and key (absolute
    paths), an optional client CA (mTLS: clients must present a certificate it signed),
    or ``demo``: the local demo certificate (``host.proxy.demo_cert``), made at start."""

    cert: str = ""
    key: str = ""
    client_ca: str | None = None
    demo: bool = False


@dataclass(frozen=True)
class TcpListenerConfig:
    """One ``spec.tcp[]`` entry of the Proxy document: a TCP listener whose connections go
    to a ``tcp://`` cluster through the NETWORK plugins (Envoy's tcp_proxy behind the
    network filters). ``name`` names its ``tcp.<name>.*`` stats (default: the listen
    address with ``:`` as ``_``, as Envoy names listeners)."""

    name: str
    listen_host: str
    listen_port: int
    cluster: str

    @property
    def listen(self) -> str:
        return _fmt_hostport(self.listen_host, self.listen_port)


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
    phase: Phase = Phase.UNSPECIFIED
    priority: int | None = None  # None: unset, ordered below any explicit priority
    fail_strategy: FailStrategy = FailStrategy.FAIL_CLOSE
    env: tuple[EnvVar, ...] = ()  # spec.vmConfig.env as written
    vm_env: tuple[tuple[str, str], ...] = ()  # what the module sees, resolved at load time
    type: str = "HTTP"  # UNSPECIFIED_PLUGIN_TYPE is HTTP
    match: tuple[TrafficSelector, ...] = ()
    image_pull_policy: str = "UNSPECIFIED_POLICY"
    image_pull_secret: str = ""  # a name in the Proxy document's spec.pullSecrets
    selector: dict[str, Any] | None = field(default=None, hash=False)
    target_refs: tuple[dict[str, Any], ...] = field(default=(), hash=False)
    mode: Mode = Mode.ENFORCE
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
    tcp: tuple[TcpListenerConfig, ...] = ()  # spec.tcp: TCP listeners (NETWORK plugins)
    direction: Direction = Direction.SERVER  # the listener's side, for WasmPlugin match
    # imagePullSecret name -> docker config JSON file (absolute path)
    pull_secrets: tuple[tuple[str, str], ...] = ()
    # the listener's limits (spec.timeouts, spec.maxConnections); see http1.Limits
    request_headers_timeout_s: float = 10.0
    idle_timeout_s: float = 300.0
    max_connections: int = 1024
    tls: ListenerTls | None = None  # spec.tls; None: plain TCP
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
