"""The local proxy's configuration: parse, validate, order and export.

A config file is multi-document YAML: one ``extensions.istio.io/v1alpha1`` ``WasmPlugin``
document per plugin, with Istio's fields and meanings (operator reference §1.1), and at most
one ``wasmdesk.dev/v1alpha1`` ``Proxy`` document (listener, admin API, upstream clusters).
Wasmdesk's own per-plugin knobs (mode, canary) are ``wasmdesk.dev/*`` annotations, so the
same WasmPlugin documents apply to an Istio cluster unchanged.

Invalid input raises one :class:`ConfigError` listing every problem with file, line and field
path; a half-valid config is never returned. :func:`dump_config` writes the effective config
back as the same YAML: the fields this package manages are rewritten from the dataclasses,
everything else in the original documents (unknown fields, selector, targetRefs, labels) is
kept as it was.

This package is pure: no network, no wasm, no sockets, no Qt. It reads the config file and,
at load time, the process environment (``vmConfig.env`` entries with ``valueFrom: HOST``).
It only classifies module URLs; fetching them (and refusing ``oci://``) is ``plugins``' job.

The package is layered (each module imports only those above it; no circles):

- ``enums``, ``units``, ``istio_json``, ``validate``, ``errors``: the bottom, importing nothing
  from the package (StrEnums, durations/sizes/addresses, Istio's JSON, one validator per
  rule, ConfigIssue/ConfigError);
- ``model``: the frozen value types;
- ``yaml_load`` (YAML with line tracking and the size/depth limits), ``fields`` (field checks);
- ``plugin_doc``, ``proxy_doc`` (documents → model), ``parse`` (file/text → ProxyConfig);
- ``order`` (the effective order, explained), ``export`` (model → YAML), ``edit`` (new plugins,
  validated changes).

This ``__init__`` re-exports the public names, so ``from host.proxy.config import X`` works
as it did when this was one module.
"""

from __future__ import annotations

from host.proxy.config.edit import new_plugin, with_changes
from host.proxy.config.enums import Direction, FailStrategy, Mode, Phase
from host.proxy.config.errors import ConfigError, ConfigIssue
from host.proxy.config.export import dump_config, plugin_to_document
from host.proxy.config.model import (
    ANNOTATION_CALLBACK_TIMEOUT,
    ANNOTATION_CANARY_KEY,
    ANNOTATION_CANARY_PERCENT,
    ANNOTATION_MEMORY_LIMIT,
    ANNOTATION_MODE,
    ANNOTATION_PREFIX,
    ANNOTATION_VM_ID,
    DEFAULT_ADMIN,
    DEFAULT_CALLBACK_TIMEOUT_MS,
    DEFAULT_CLUSTER_TIMEOUT_S,
    DEFAULT_LISTEN,
    DEFAULT_MEMORY_LIMIT,
    DIRECTIONS,
    ENV_SOURCES,
    FAIL_STRATEGIES,
    MATCH_MODES,
    MODES,
    PHASES,
    PLUGIN_TYPES,
    PROXY_API_VERSION,
    PULL_POLICIES,
    WASMPLUGIN_API_VERSION,
    ClusterConfig,
    EnvVar,
    ListenerTls,
    PluginSpec,
    ProxyConfig,
    RouteConfig,
    TcpListenerConfig,
    TrafficSelector,
)
from host.proxy.config.order import effective_order, explain_order
from host.proxy.config.parse import load_config, parse_config
from host.proxy.config.validate import (
    CANARY_KEY_RULE,
    canary_key,
    http_url_error,
    is_env_name,
    is_header_name,
    is_sha256,
    module_url_error,
)
from host.proxy.config.yaml_load import MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH, MAX_CONFIG_NODES

__all__ = [
    "ANNOTATION_CALLBACK_TIMEOUT",
    "ANNOTATION_CANARY_KEY",
    "ANNOTATION_CANARY_PERCENT",
    "ANNOTATION_MEMORY_LIMIT",
    "ANNOTATION_MODE",
    "ANNOTATION_PREFIX",
    "ANNOTATION_VM_ID",
    "CANARY_KEY_RULE",
    "DEFAULT_ADMIN",
    "DEFAULT_CALLBACK_TIMEOUT_MS",
    "DEFAULT_CLUSTER_TIMEOUT_S",
    "DEFAULT_LISTEN",
    "DEFAULT_MEMORY_LIMIT",
    "DIRECTIONS",
    "ENV_SOURCES",
    "FAIL_STRATEGIES",
    "MATCH_MODES",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_NODES",
    "MODES",
    "PHASES",
    "PLUGIN_TYPES",
    "PROXY_API_VERSION",
    "PULL_POLICIES",
    "WASMPLUGIN_API_VERSION",
    "ClusterConfig",
    "ConfigError",
    "ConfigIssue",
    "Direction",
    "EnvVar",
    "FailStrategy",
    "ListenerTls",
    "Mode",
    "Phase",
    "PluginSpec",
    "ProxyConfig",
    "RouteConfig",
    "TcpListenerConfig",
    "TrafficSelector",
    "canary_key",
    "dump_config",
    "effective_order",
    "explain_order",
    "http_url_error",
    "is_env_name",
    "is_header_name",
    "is_sha256",
    "load_config",
    "module_url_error",
    "new_plugin",
    "parse_config",
    "plugin_to_document",
    "with_changes",
]
