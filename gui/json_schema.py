"""Plugin configuration schemas: find the ``<module>.schema.json`` that ships beside a
module, check it is a schema the form can render, and validate a configuration against it.

The validator covers the JSON Schema (draft 2020-12) subset plugin schemas use: ``type``
(one or a list), ``enum``, ``const``, ``properties``, ``required``,
``additionalProperties`` (boolean or schema), ``items``, ``minItems``/``maxItems``,
``uniqueItems``, ``minLength``/``maxLength``, ``pattern``, ``minimum``/``maximum``,
``exclusiveMinimum``/``exclusiveMaximum`` and ``multipleOf``. Annotations (``title``,
``description``, ``default``, ``examples``, ``$schema``, ``$id``, ``$comment``) are read,
never enforced. A schema that uses anything else (``$ref``, ``oneOf``...) is reported by
:func:`check_schema`, and the app falls back to the YAML editor rather than half-validate.

Pure Python, no Qt, no I/O except reading the schema file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host.safe_regex import PatternError, SafePattern, compile_pattern

__all__ = [
    "SchemaError",
    "SchemaIssue",
    "check_schema",
    "default_of",
    "field_kind",
    "form_problem",
    "json_type",
    "load_schema",
    "required_of",
    "schema_path_for",
    "validate",
]

JSON_TYPES = ("null", "boolean", "object", "array", "number", "string", "integer")
ANNOTATIONS = frozenset(
    [
        "$schema",
        "$id",
        "$comment",
        "title",
        "description",
        "default",
        "examples",
        "readOnly",
        "writeOnly",
        "deprecated",
        "format",
    ]
)
ASSERTIONS = frozenset(
    [
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
    ]
)
_TYPE_WORDS = {
    "null": "null",
    "boolean": "a boolean",
    "object": "an object",
    "array": "a list",
    "number": "a number",
    "string": "a string",
    "integer": "an integer",
}

Path_ = tuple[str | int, ...]


class SchemaError(ValueError):
    """The schema file cannot be used (unreadable, not JSON, unsupported keywords)."""


@dataclass(frozen=True)
class SchemaIssue:
    """One validation problem: where (a path into the value) and what is wrong."""

    path: Path_
    message: str

    @property
    def where(self) -> str:
        out = ""
        for part in self.path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out or "(configuration)"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


# -- finding and loading ------------------------------------------------------------------------


def schema_path_for(module: str | os.PathLike[str]) -> Path:
    """``plugins/add_header.wasm`` → ``plugins/add_header.schema.json``."""
    p = Path(module)
    stem = p.name[: -len(".wasm")] if p.name.lower().endswith(".wasm") else p.name
    return p.with_name(f"{stem}.schema.json")


def load_schema(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a schema file; raises SchemaError with a message for the user."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise SchemaError(f"{p.name}: cannot read it: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise SchemaError(f"{p.name}: not UTF-8 text") from None
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as e:
        raise SchemaError(
            f"{p.name}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"
        ) from None
    problems = check_schema(schema)
    if problems:
        raise SchemaError(f"{p.name}: " + "; ".join(problems[:3]))
    return schema  # type: ignore[no-any-return]


def check_schema(schema: Any, where: str = "(root)") -> list[str]:
    """What in ``schema`` this module cannot enforce (empty when every keyword is known
    and well-formed)."""
    if isinstance(schema, bool):
        return []
    if not isinstance(schema, dict):
        return [f"{where}: a schema must be an object or a boolean"]
    out: list[str] = []
    for key, v in schema.items():
        if key in ANNOTATIONS:
            continue
        if key not in ASSERTIONS:
            out.append(f"{where}: keyword {key!r} is not supported by the form")
            continue
        if key == "type":
            types = v if isinstance(v, list) else [v]
            if not types or any(t not in JSON_TYPES for t in types):
                out.append(f"{where}: unknown type {v!r}")
        elif key == "enum" and not isinstance(v, list):
            out.append(f"{where}: enum must be a list")
        elif key == "properties":
            if not isinstance(v, dict):
                out.append(f"{where}: properties must be an object")
            else:
                for name, sub in v.items():
                    out.extend(check_schema(sub, f"{where}.{name}" if where != "(root)" else name))
        elif key in ("additionalProperties", "items"):
            out.extend(check_schema(v, f"{where}[{key}]"))
        elif key == "required":
            if not isinstance(v, list) or not all(isinstance(n, str) for n in v):
                out.append(f"{where}: required must be a list of names")
        elif key == "pattern":
            if not isinstance(v, str):
                out.append(f"{where}: pattern must be a string")
            else:
                try:
                    _compiled(v)
                except PatternError as e:
                    out.append(f"{where}: pattern {v!r} does not compile: {e}")
        elif key in ("minItems", "maxItems", "minLength", "maxLength"):
            if not _is_int(v) or v < 0:
                out.append(f"{where}: {key} must be a non-negative integer")
        elif key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
            if not _is_number(v) or (key == "multipleOf" and v <= 0):
                out.append(f"{where}: {key} must be a number")
    return out


# -- helpers ------------------------------------------------------------------------------------


def _compiled(pattern: str) -> SafePattern:
    """A schema's ``pattern`` comes with the plugin: compiled with RE2 (linear time),
    so no pattern can hang the window while the user types."""
    return compile_pattern(pattern)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, int | float)) and not isinstance(v, bool) and math.isfinite(v)


def json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "integer" if v.is_integer() else "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list | tuple):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _has_type(v: Any, t: str) -> bool:
    actual = json_type(v)
    return actual == t or (t == "number" and actual == "integer")


def _json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: ``True`` is not ``1``, ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    return type(a) is type(b) and bool(a == b)


def _fmt(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False)


def _types_of(schema: Mapping[str, Any]) -> list[str]:
    t = schema.get("type")
    if t is None:
        return []
    return list(t) if isinstance(t, list) else [t]


def default_of(schema: Any) -> Any:
    """The schema's ``default`` (None if there is none)."""
    return schema.get("default") if isinstance(schema, dict) else None


# -- validation ---------------------------------------------------------------------------------


def validate(schema: Any, value: Any, path: Path_ = ()) -> list[SchemaIssue]:
    """Every problem with ``value`` against ``schema`` (empty when valid), in field order."""
    if schema is True or schema == {}:
        return []
    if schema is False:
        return [SchemaIssue(path, "no value is allowed here")]
    if not isinstance(schema, dict):
        return []
    out: list[SchemaIssue] = []
    types = _types_of(schema)
    if types and not any(_has_type(value, t) for t in types):
        want = " or ".join(_TYPE_WORDS.get(t, t) for t in types)
        got = _TYPE_WORDS.get(json_type(value), json_type(value))
        out.append(SchemaIssue(path, f"expected {want}, got {got}"))
        return out  # the other keywords would only repeat it
    if "enum" in schema and not any(_json_equal(value, e) for e in schema["enum"]):
        choices = ", ".join(_fmt(e) for e in schema["enum"])
        out.append(SchemaIssue(path, f"must be one of {choices}"))
    if "const" in schema and not _json_equal(value, schema["const"]):
        out.append(SchemaIssue(path, f"must be {_fmt(schema['const'])}"))
    if isinstance(value, str):
        n = len(value)
        if "minLength" in schema and n < schema["minLength"]:
            m = schema["minLength"]
            out.append(
                SchemaIssue(path, "must not be empty" if m == 1 else f"at least {m} characters")
            )
        if "maxLength" in schema and n > schema["maxLength"]:
            out.append(SchemaIssue(path, f"at most {schema['maxLength']} characters"))
        if "pattern" in schema and _compiled(schema["pattern"]).search(value) is None:
            out.append(SchemaIssue(path, _pattern_message(schema, value)))
    if _is_number(value):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(SchemaIssue(path, f"must be at least {_fmt(schema['minimum'])}"))
        if "maximum" in schema and value > schema["maximum"]:
            out.append(SchemaIssue(path, f"must be at most {_fmt(schema['maximum'])}"))
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            out.append(SchemaIssue(path, f"must be more than {_fmt(schema['exclusiveMinimum'])}"))
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            out.append(SchemaIssue(path, f"must be less than {_fmt(schema['exclusiveMaximum'])}"))
        if "multipleOf" in schema:
            q = value / schema["multipleOf"]
            if not math.isclose(q, round(q), rel_tol=0, abs_tol=1e-9):
                out.append(SchemaIssue(path, f"must be a multiple of {_fmt(schema['multipleOf'])}"))
    if isinstance(value, list | tuple):
        if "minItems" in schema and len(value) < schema["minItems"]:
            out.append(SchemaIssue(path, f"at least {schema['minItems']} item(s)"))
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append(SchemaIssue(path, f"at most {schema['maxItems']} item(s)"))
        if schema.get("uniqueItems"):
            for i, item in enumerate(value):
                if any(_json_equal(item, other) for other in value[:i]):
                    out.append(SchemaIssue((*path, i), f"{_fmt(item)} is listed twice"))
        if "items" in schema:
            for i, item in enumerate(value):
                out.extend(validate(schema["items"], item, (*path, i)))
    if isinstance(value, dict):
        props: Mapping[str, Any] = schema.get("properties") or {}
        for name in schema.get("required") or ():
            if name not in value:
                out.append(SchemaIssue((*path, name), "required"))
        for name, sub in props.items():
            if name in value:
                out.extend(validate(sub, value[name], (*path, name)))
        extra = schema.get("additionalProperties", True)
        for name in value:
            if name in props:
                continue
            if extra is False:
                known = ", ".join(props) or "none"
                out.append(SchemaIssue((*path, name), f"unknown field (the schema knows: {known})"))
            elif isinstance(extra, dict):
                out.extend(validate(extra, value[name], (*path, name)))
    return out


def _pattern_message(schema: Mapping[str, Any], value: str) -> str:
    bad = sorted({c for c in value if c in "\r\n\0"})
    if bad:
        names = {"\r": "CR", "\n": "LF", "\0": "NUL"}
        return "must not contain " + ", ".join(names[c] for c in bad)
    if " " in value and " " not in schema["pattern"]:
        return f"must not contain spaces (pattern {schema['pattern']})"
    return f"does not match the pattern {schema['pattern']}"


# -- what the form can render -------------------------------------------------------------------


def form_problem(schema: Any) -> str | None:
    """Why the generated form cannot edit ``schema`` (None when it can): the root must be
    an object whose fields are strings, numbers, integers, booleans, enums, lists of
    strings, or nested objects of the same."""
    if not isinstance(schema, dict) or _types_of(schema) not in (["object"], []):
        return "the configuration is not described as an object"
    if not isinstance(schema.get("properties"), dict):
        return "the schema lists no properties"
    return _fields_problem(schema, "")


def _fields_problem(schema: Mapping[str, Any], where: str) -> str | None:
    for name, sub in (schema.get("properties") or {}).items():
        here = f"{where}.{name}" if where else name
        kind = field_kind(sub)
        if kind is None:
            return f"{here}: the form cannot edit this kind of field"
        if kind == "object":
            problem = _fields_problem(sub, here)
            if problem:
                return problem
    return None


def field_kind(schema: Any) -> str | None:
    """The form widget for a property schema: enum, string, integer, number, boolean,
    string-list, object; None when the form cannot edit it."""
    if not isinstance(schema, dict):
        return None
    types = [t for t in _types_of(schema) if t != "null"]
    if "enum" in schema and all(isinstance(e, str | int | float | bool) for e in schema["enum"]):
        return "enum"
    if len(types) != 1:
        return None
    t = types[0]
    if t in ("string", "integer", "number", "boolean"):
        return t
    if t == "array":
        items = schema.get("items")
        if items is None or (isinstance(items, dict) and _types_of(items) == ["string"]):
            return "string-list"
        return None
    if t == "object" and isinstance(schema.get("properties"), dict):
        return "object"
    return None


def required_of(schema: Mapping[str, Any]) -> Sequence[str]:
    req = schema.get("required")
    return list(req) if isinstance(req, list) else []
