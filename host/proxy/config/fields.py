"""Checking one field of a document: the context that turns a field path into file:line,
the type checks (mapping, list, string, enum), ``kind``/``apiVersion`` and ``pluginConfig``
as a protobuf Struct. Every document parser builds on these.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from host.proxy.config.errors import ConfigIssue, _Path
from host.proxy.config.model import _KINDS, PROXY_API_VERSION, WASMPLUGIN_API_VERSION


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


def _entries(
    ctx: _Ctx, value: Any, path: _Path, shape: str
) -> Iterator[tuple[int, _Path, dict[str, Any]]]:
    """The mappings in list field ``value`` with their index and path. A null entry is the error
    ``expected a mapping (<shape>), got null``; another non-mapping is ``_mapping``'s."""
    for i, entry in enumerate(_list(ctx, value, path)):
        epath: _Path = (*path, i)
        m = _mapping(ctx, entry, epath)
        if m is None:
            if entry is None:
                ctx.error(epath, f"expected a mapping ({shape}), got null")
            continue
        yield i, epath, m


def _known_fields(
    ctx: _Ctx,
    m: Mapping[str, Any],
    path: _Path,
    fields: Sequence[str],
    hints: Mapping[str, str] | None = None,
) -> bool:
    """Report each key of ``m`` that is not one of ``fields`` (``hints``: a word more for
    a given key); whether every key is known."""
    ok = True
    for key in m:
        if key not in fields:
            hint = (hints or {}).get(key, "")
            ctx.error((*path, key), f"unknown field; expected one of {', '.join(fields)}{hint}")
            ok = False
    return ok


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
