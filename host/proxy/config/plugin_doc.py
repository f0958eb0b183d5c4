"""WasmPlugin documents → :class:`PluginSpec`: Istio's fields and defaults, the
``wasmdesk.dev/*`` annotations, ``vmConfig.env`` (resolved against the environment) and
``match``, every problem reported with its field path.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping
from typing import Any

from host.proxy.config.enums import FailStrategy, Mode, Phase
from host.proxy.config.errors import ConfigIssue, _Path
from host.proxy.config.fields import (
    _check_json,
    _Ctx,
    _describe,
    _document_kind,
    _entries,
    _enum,
    _list,
    _mapping,
    _string,
)
from host.proxy.config.model import (
    _ANNOTATIONS,
    _INT32,
    _MAX_ENV,
    _MAX_MEMORY_LIMIT,
    _MAX_TARGET_REFS,
    _MIN_MEMORY_LIMIT,
    ANNOTATION_CALLBACK_TIMEOUT,
    ANNOTATION_CANARY_KEY,
    ANNOTATION_CANARY_PERCENT,
    ANNOTATION_MEMORY_LIMIT,
    ANNOTATION_MODE,
    ANNOTATION_PREFIX,
    ANNOTATION_VM_ID,
    ENV_SOURCES,
    FAIL_STRATEGIES,
    MATCH_MODES,
    MODES,
    PHASES,
    PLUGIN_TYPES,
    PULL_POLICIES,
    EnvVar,
    PluginSpec,
    TrafficSelector,
)
from host.proxy.config.units import _parse_duration_ms, _parse_quantity
from host.proxy.config.validate import (
    _DNS1123_LABEL,
    _DNS1123_SUBDOMAIN,
    CANARY_KEY_RULE,
    _classify_url,
    canary_key,
    is_env_name,
    is_sha256,
)


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
    if sha256 and not is_sha256(sha256):
        hint = " (lower-case only)" if is_sha256(sha256.lower()) else ""
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

    phase = Phase(_enum(ctx, spec.get("phase"), ("spec", "phase"), PHASES, Phase.UNSPECIFIED))
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
    fail_strategy = FailStrategy(
        _enum(
            ctx,
            spec.get("failStrategy"),
            ("spec", "failStrategy"),
            FAIL_STRATEGIES,
            FailStrategy.FAIL_CLOSE,
        )
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
            knobs["mode"] = Mode(_enum(ctx, text, path, MODES, Mode.ENFORCE))
        elif key == ANNOTATION_CANARY_KEY:
            ck = canary_key(text)
            if ck is None:
                ctx.error(path, f"expected {CANARY_KEY_RULE}, got {text!r}")
            else:
                knobs["canary_key"] = ck
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
        if name is not None and not is_env_name(name):
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
    for _i, path, m in _entries(ctx, value, ("spec", "match"), "mode, ports"):
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
