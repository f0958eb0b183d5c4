"""Reading a config: file → text → YAML nodes → documents → :class:`ProxyConfig`, with one
:class:`ConfigError` listing every problem (a half-valid config is never returned).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from host.proxy.config.errors import ConfigError, ConfigIssue
from host.proxy.config.fields import _Ctx, _document_kind
from host.proxy.config.model import PluginSpec, ProxyConfig
from host.proxy.config.plugin_doc import _parse_plugin
from host.proxy.config.proxy_doc import _parse_proxy
from host.proxy.config.validate import _resolve_path
from host.proxy.config.yaml_load import MAX_CONFIG_BYTES, _Builder, _too_large, compose


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
    nodes = compose(text, source)

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
