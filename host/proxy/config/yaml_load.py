"""YAML text → composed nodes → plain values, with the line of every field and the size,
node and depth limits checked before any value is built.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from host.proxy.config.errors import ConfigError, ConfigIssue, _Path

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


def _too_large(source: str, line: int) -> ConfigIssue:
    return ConfigIssue(
        source,
        line,
        "",
        f"the config is larger than {MAX_CONFIG_BYTES >> 20} MiB (it goes on past this line)",
    )


def compose(text: str, source: str) -> list[Node]:
    """The YAML documents of ``text`` as composed nodes (every document, empty ones as None or a
    null scalar). Raises :class:`ConfigError` for text over the limits or not YAML."""
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
    return nodes
