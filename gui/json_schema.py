"""Plugin configuration schemas: find the ``<module>.schema.json`` that ships beside a
module, check it, and validate a configuration against it.

Validation is ``jsonschema`` (Draft 2020-12: ``$ref``/``$defs``, ``oneOf``/``anyOf``/
``allOf``/``not``, ``if``/``then``/``else``, ``dependentRequired``... everything), with
two changes of ours: ``pattern`` runs on RE2 (linear time: a plugin's pattern cannot hang
the window while the user types) and its errors are mapped to short messages at the
field they concern ("required", "must be at most 10", "unknown field (the schema knows:
...)"), sorted in the schema's field order. ``format`` is an annotation, as the draft
says. Only local references (``#/$defs/...``) resolve: nothing is fetched.

:func:`resolve_refs` inlines local ``$ref`` for the form builder, and
:func:`field_kind` names the widget for each property: the scalars, enums, lists of
strings, nested objects, lists of objects, a choice between alternatives
(``oneOf``/``anyOf``), and JSON text for anything else, so no schema disables the form.

Pure Python, no Qt, no I/O except reading the schema file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing.exceptions import Unresolvable

from host.safe_regex import PatternError, SafePattern, compile_pattern

__all__ = [
    "UNKNOWN_FIELD_KEYWORDS",
    "SchemaError",
    "SchemaIssue",
    "alternative_label",
    "alternatives",
    "check_schema",
    "default_of",
    "field_kind",
    "form_problem",
    "json_type",
    "load_schema",
    "required_of",
    "resolve_refs",
    "schema_path_for",
    "validate",
]

JSON_TYPES = ("null", "boolean", "object", "array", "number", "string", "integer")
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
# the keywords whose issue is a field the schema does not know
UNKNOWN_FIELD_KEYWORDS = frozenset({"additionalProperties", "unevaluatedProperties"})


class SchemaError(ValueError):
    """The schema file cannot be used (unreadable, not JSON, unsupported keywords)."""


@dataclass(frozen=True)
class SchemaIssue:
    """One validation problem: where (a path into the value) and what is wrong;
    ``keyword`` the JSON Schema keyword that failed (``type``, ``additionalProperties``
    ...; "" when not from one), for code that decides by what failed, not by the words."""

    path: Path_
    message: str
    keyword: str = field(default="", compare=False)

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


_SUBSCHEMA = (
    "items",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
)
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")


def _walk(schema: Any, where: str) -> Iterator[tuple[Mapping[str, Any], str]]:
    """Every (sub)schema object with a readable location."""
    if not isinstance(schema, dict):
        return
    yield schema, where
    for key in _SUBSCHEMA:
        if key in schema:
            yield from _walk(schema[key], f"{where}[{key}]")
    for key in _SUBSCHEMA_MAPS:
        sub = schema.get(key)
        if isinstance(sub, dict):
            for name, v in sub.items():
                here = name if key == "properties" and where == "(root)" else f"{where}.{name}"
                if key != "properties":
                    here = f"{where}[{key}].{name}"
                yield from _walk(v, here)
    for key in _SUBSCHEMA_LISTS:
        sub = schema.get(key)
        if isinstance(sub, list):
            for i, v in enumerate(sub):
                yield from _walk(v, f"{where}[{key}][{i}]")


def _pointer(root: Any, ref: str) -> Any:
    """The schema a local ``$ref`` points at; KeyError when it does not resolve."""
    if not ref.startswith("#"):
        raise KeyError(ref)
    node = root
    for part in [p for p in ref[1:].split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(ref)
    return node


def check_schema(schema: Any, where: str = "(root)") -> list[str]:
    """What is wrong with ``schema`` itself (empty when it is a usable Draft 2020-12
    schema): not a schema, a pattern RE2 cannot run, a ``$ref`` that does not resolve
    locally."""
    if isinstance(schema, bool):
        return []
    if not isinstance(schema, dict):
        return [f"{where}: a schema must be an object or a boolean"]
    out: list[str] = []
    # the metaschema, without its "format": "regex" check (Python's re): patterns are
    # RE2's to judge, below
    meta = Draft202012Validator(Draft202012Validator.META_SCHEMA)
    for e in sorted(meta.iter_errors(schema), key=lambda e: list(map(str, e.path)))[:3]:
        at = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.path)
        out.append(f"{where}{at}: not a valid JSON Schema: {e.message}")
    if out:
        return out
    for sub, here in _walk(schema, where):
        pattern = sub.get("pattern")
        if isinstance(pattern, str):
            try:
                _compiled(pattern)
            except PatternError as e:
                out.append(f"{here}: pattern {pattern!r} does not compile: {e}")
        ref = sub.get("$ref")
        if isinstance(ref, str):
            if not ref.startswith("#"):
                out.append(f"{here}: $ref {ref!r} is not local (nothing is fetched)")
            else:
                try:
                    _pointer(schema, ref)
                except KeyError:
                    out.append(f"{here}: $ref {ref!r} does not resolve")
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


def _re2_pattern(
    validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if isinstance(instance, str) and _compiled(pattern).search(instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator = jsonschema.validators.extend(Draft202012Validator, {"pattern": _re2_pattern})


def _word(v: Any) -> str:
    return _TYPE_WORDS.get(json_type(v), json_type(v))


def _friendly(e: ValidationError, path: Path_) -> list[SchemaIssue]:
    """One jsonschema error as the form's messages (some errors are several issues)."""
    kw, want, value = e.validator, e.validator_value, e.instance
    schema = e.schema if isinstance(e.schema, dict) else {}
    if kw == "required":
        return [SchemaIssue((*path, n), "required") for n in want if n not in value]
    if kw in ("additionalProperties", "unevaluatedProperties"):
        props = list((schema.get("properties") or {}).keys())
        known = ", ".join(props) or "none"
        extras = [n for n in value if n not in props]
        return [
            SchemaIssue((*path, n), f"unknown field (the schema knows: {known})", kw)
            for n in extras
        ]
    if kw == "type":
        types = want if isinstance(want, list) else [want]
        words = " or ".join(_TYPE_WORDS.get(str(t), str(t)) for t in types)
        msg = f"expected {words}, got {_word(value)}"
    elif kw == "enum":
        msg = "must be one of " + ", ".join(_fmt(v) for v in want)
    elif kw == "const":
        msg = f"must be {_fmt(want)}"
    elif kw == "minLength":
        msg = "must not be empty" if want == 1 else f"at least {want} characters"
    elif kw == "maxLength":
        msg = f"at most {want} characters"
    elif kw == "pattern":
        msg = _pattern_message(schema, value)
    elif kw == "minimum":
        msg = f"must be at least {_fmt(want)}"
    elif kw == "maximum":
        msg = f"must be at most {_fmt(want)}"
    elif kw == "exclusiveMinimum":
        msg = f"must be more than {_fmt(want)}"
    elif kw == "exclusiveMaximum":
        msg = f"must be less than {_fmt(want)}"
    elif kw == "multipleOf":
        msg = f"must be a multiple of {_fmt(want)}"
    elif kw == "minItems":
        msg = f"at least {want} item(s)"
    elif kw == "maxItems":
        msg = f"at most {want} item(s)"
    elif kw == "uniqueItems":
        out = []
        for i, item in enumerate(value):
            if any(_json_equal(item, other) for other in value[:i]):
                out.append(SchemaIssue((*path, i), f"{_fmt(item)} is listed twice"))
        return out or [SchemaIssue(path, "items must be unique")]
    elif kw in ("oneOf", "anyOf"):
        inner = _closest(e.context) if e.context else None
        if kw == "oneOf" and not e.context:
            msg = "matches more than one of the choices; make it fit exactly one"
        elif inner is not None:
            sub = _friendly(inner, (*path, *inner.relative_path))
            why = "; ".join(str(i) if i.path != path else i.message for i in sub)
            msg = f"matches none of the choices (closest: {why})"
        else:
            msg = "matches none of the choices"
    elif kw == "not":
        msg = "is a value the schema rules out"
    elif kw == "dependentRequired":
        return [
            SchemaIssue((*path, n), f"required when {k} is set")
            for k, names in want.items()
            if k in value
            for n in names
            if n not in value
        ]
    elif kw == "minProperties":
        msg = f"at least {want} field(s)"
    elif kw == "maxProperties":
        msg = f"at most {want} field(s)"
    elif kw == "contains":
        msg = "no item matches what the list must contain"
    elif kw == "false":
        msg = "no value is allowed here"
    else:
        msg = e.message
    return [SchemaIssue(path, msg, kw)]


def _closest(errors: Sequence[ValidationError]) -> ValidationError | None:
    """The most useful error among a composition's alternatives: from the alternative
    that failed least (fewest errors), preferring a broken detail over a wrong kind."""
    by_alt: dict[Any, list[ValidationError]] = {}
    for e in errors:
        by_alt.setdefault(e.relative_schema_path[0] if e.relative_schema_path else 0, []).append(e)
    if not by_alt:
        return None

    def score(errs: list[ValidationError]) -> tuple[int, int]:
        kinds = sum(e.validator in ("type", "const", "enum", "required") for e in errs)
        return len(errs), kinds

    best = min(by_alt.values(), key=score)
    return best_match(best)


def _order_key(schema: Any, path: Path_) -> tuple[int, ...]:
    """An issue's place in the schema's field order (unknown fields last)."""
    out: list[int] = []
    node = schema
    for part in path:
        if isinstance(part, int):
            out.append(part)
            node = node.get("items", {}) if isinstance(node, dict) else {}
            continue
        props = node.get("properties") if isinstance(node, dict) else None
        if isinstance(props, dict) and part in props:
            out.append(list(props).index(part))
            node = props[part]
        else:
            out.append(1 << 20)
            node = {}
    return tuple(out)


def validate(schema: Any, value: Any, path: Path_ = ()) -> list[SchemaIssue]:
    """Every problem with ``value`` against ``schema`` (empty when valid), in field order,
    in words a user reads (see the module docstring)."""
    if schema is True or schema == {}:
        return []
    if schema is False:
        return [SchemaIssue(path, "no value is allowed here")]
    if not isinstance(schema, dict):
        return []
    out: list[SchemaIssue] = []
    try:
        errors = list(_Validator(schema).iter_errors(value))
    except (Unresolvable, PatternError) as exc:
        return [SchemaIssue(path, f"the schema cannot be checked: {exc}")]
    for err in errors:
        out.extend(_friendly(err, (*path, *err.absolute_path)))
    # a type error makes its field's other messages noise
    typed = {i.path for i in out if i.keyword == "type"}
    out = [i for i in out if i.path not in typed or i.keyword == "type"]
    seen: set[tuple[Path_, str]] = set()
    unique = []
    for i in out:
        if (i.path, i.message) not in seen:
            seen.add((i.path, i.message))
            unique.append(i)
    unique.sort(key=lambda i: _order_key(schema, i.path[len(path) :]))
    return unique


def _pattern_message(schema: Mapping[str, Any], value: str) -> str:
    bad = sorted({c for c in value if c in "\r\n\0"})
    if bad:
        names = {"\r": "CR", "\n": "LF", "\0": "NUL"}
        return "must not contain " + ", ".join(names[c] for c in bad)
    if " " in value and " " not in schema["pattern"]:
        return f"must not contain spaces (pattern {schema['pattern']})"
    return f"does not match the pattern {schema['pattern']}"


# -- what the form can render -------------------------------------------------------------------


def resolve_refs(schema: Any, root: Any = None, _seen: tuple[str, ...] = ()) -> Any:
    """``schema`` with every local ``$ref`` replaced by what it points at (its sibling
    keywords kept, as Draft 2020-12 reads them), and ``allOf`` parts and ``if``/``then``/
    ``else`` branches merged into the ``properties`` the form shows. Validation still
    uses the original; this is the shape the form builder lays out. A recursive
    reference is left as it is (the form edits it as JSON text)."""
    root = schema if root is None else root
    if isinstance(schema, list):
        return [resolve_refs(v, root, _seen) for v in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        if ref in _seen:
            return {k: v for k, v in schema.items() if k != "$ref"} | {"x-recursive": ref}
        try:
            target = _pointer(root, ref)
        except KeyError:
            return schema
        merged = dict(resolve_refs(target, root, (*_seen, ref)))
        merged.update({k: resolve_refs(v, root, _seen) for k, v in schema.items() if k != "$ref"})
        return merged
    out = {
        k: (
            {n: resolve_refs(v, root, _seen) for n, v in val.items()}
            if k in ("properties", "$defs", "definitions") and isinstance(val, dict)
            else resolve_refs(val, root, _seen)
        )
        for k, val in schema.items()
    }
    # the fields a composition adds to this object, for the form (optional there:
    # which of them apply is for validation to say)
    parts = [p for p in out.get("allOf") or [] if isinstance(p, dict)]
    parts += [out[k] for k in ("then", "else") if isinstance(out.get(k), dict)]
    if parts and _types_of(out) in (["object"], []):
        props = dict(out.get("properties") or {})
        required = list(out.get("required") or [])
        for part in parts:
            for name, sub in (part.get("properties") or {}).items():
                props.setdefault(name, sub)
        for part in out.get("allOf") or []:
            if isinstance(part, dict):
                required += [n for n in part.get("required") or [] if n not in required]
        if props:
            out["properties"] = props
        if required:
            out["required"] = required
    return out


def form_problem(schema: Any) -> str | None:
    """Why the generated form cannot edit ``schema`` (None when it can): the root must be
    an object with properties. Any property can be edited: those without a widget of
    their own take JSON text."""
    schema = resolve_refs(schema)
    if not isinstance(schema, dict) or _types_of(schema) not in (["object"], []):
        return "the configuration is not described as an object"
    if not isinstance(schema.get("properties"), dict):
        return "the schema lists no properties"
    return None


def alternatives(schema: Any) -> list[dict[str, Any]]:
    """The choices of a ``oneOf``/``anyOf`` property (each with its shared keywords)."""
    if not isinstance(schema, dict):
        return []
    alts = schema.get("oneOf") or schema.get("anyOf")
    if not isinstance(alts, list):
        return []
    shared = {k: v for k, v in schema.items() if k not in ("oneOf", "anyOf")}
    return [shared | a if isinstance(a, dict) else shared for a in alts]


def alternative_label(alt: Mapping[str, Any], index: int) -> str:
    """What the choice between alternatives calls one of them."""
    if alt.get("title"):
        return str(alt["title"])
    for name, sub in (alt.get("properties") or {}).items():
        if isinstance(sub, dict) and "const" in sub:
            return f"{name} = {_fmt(sub['const'])}"
    if "const" in alt:
        return _fmt(alt["const"])
    types = [t for t in _types_of(alt) if t != "null"]
    if alt.get("properties") and not types:
        types = ["object"]
    if types:
        return " or ".join(_TYPE_WORDS.get(t, t) for t in types)
    return f"choice {index + 1}"


def field_kind(schema: Any) -> str | None:
    """The form widget for a (resolved) property schema: enum, string, integer, number,
    boolean, string-list, object, object-list, choice (``oneOf``/``anyOf``), or json
    (JSON text) for anything else; None only for a non-schema."""
    if not isinstance(schema, dict):
        return None
    if schema.get("x-recursive"):
        return "json"
    if alternatives(schema):
        return "choice"
    types = [t for t in _types_of(schema) if t != "null"]
    if "enum" in schema and all(isinstance(e, str | int | float | bool) for e in schema["enum"]):
        return "enum"
    if not types and isinstance(schema.get("properties"), dict):
        types = ["object"]
    if len(types) != 1:
        return "json"
    t = types[0]
    if t in ("string", "integer", "number", "boolean"):
        return t
    if t == "array":
        items = schema.get("items")
        if items is None or (isinstance(items, dict) and _types_of(items) == ["string"]):
            return "string-list"
        if isinstance(items, dict) and field_kind(items) == "object":
            return "object-list"
        return "json"
    if t == "object" and isinstance(schema.get("properties"), dict):
        return "object"
    return "json"


def required_of(schema: Mapping[str, Any]) -> Sequence[str]:
    req = schema.get("required")
    return list(req) if isinstance(req, list) else []
