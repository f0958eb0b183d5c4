"""Plugins made and changed in code (the desktop app's add/edit): validated like a loaded
document, with ``raw`` kept in step so the change shows in the export.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from host.proxy.config.errors import ConfigError, ConfigIssue
from host.proxy.config.export import plugin_to_document
from host.proxy.config.fields import _Ctx, _document_kind
from host.proxy.config.model import EnvVar, PluginSpec, TrafficSelector
from host.proxy.config.plugin_doc import _parse_plugin


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
