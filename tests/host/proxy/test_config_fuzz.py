"""Config that cannot crash (issue 13 §10, §12c): recursive merges, deep nesting, huge
files, characters YAML refuses and arbitrary field types all give ``file:line`` errors,
never a traceback; Hypothesis fuzzes the YAML text and the field types (bounded
examples); ``wasmdesk serve --config BAD`` exits 2 with one line per problem."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host.proxy.config import (
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    MAX_CONFIG_NODES,
    ConfigError,
    ProxyConfig,
    load_config,
    parse_config,
)

WASMDESK = Path(sys.executable).parent / "wasmdesk"

_PLUGIN_HEAD = (
    "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: p}\n"
    "spec:\n  url: /x.wasm\n"
)


def _refusal(text: str, source: str = "f.yaml") -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        parse_config(text, source, "/srv")
    return ei.value


def _assert_located(e: ConfigError, source: str = "f.yaml") -> None:
    """Every issue names the file and a line; the message has one line per issue."""
    assert e.errors
    for issue in e.errors:
        assert issue.line >= 1, issue
        assert str(issue).startswith(f"{source}:{issue.line}"), issue
        assert "\n" not in str(issue)
    assert len(str(e).splitlines()) == len(e.errors)


# -- the cases of the issue ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("a: &a\n  <<: *a\n", 1, "recursive << merge"),
        (_PLUGIN_HEAD + "  pluginConfig: &c\n    x: 1\n    <<: *c\n", 6, "recursive << merge"),
    ],
)
def test_recursive_merge_key_is_a_located_error(text: str, line: int, needle: str) -> None:
    e = _refusal(text)
    _assert_located(e)
    assert any(i.line == line and needle in i.message for i in e.errors), str(e)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 5000 + "]" * 5000,
        "{a: " * 5000 + "1" + "}" * 5000,
        "".join(" " * i + "a:\n" for i in range(5000)),
        "".join("  " * i + "- \n" for i in range(3000)),
        _PLUGIN_HEAD + "  pluginConfig: " + "[" * 5000 + "]" * 5000 + "\n",
    ],
    ids=["flow-lists", "flow-maps", "block-maps", "block-lists", "in-pluginConfig"],
)
def test_deep_nesting_is_refused_with_file_line_not_a_recursion_error(text: str) -> None:
    e = _refusal(text)
    _assert_located(e)
    assert f"nested deeper than {MAX_CONFIG_DEPTH} levels" in str(e)


def test_nesting_through_aliases_is_bounded_too() -> None:
    # each level nests the previous one twice: the composed file is shallow, the values not
    levels = ["l0: &l0 [1]"]
    for i in range(1, MAX_CONFIG_DEPTH + 5):
        levels.append(f"l{i}: &l{i} [*l{i - 1}]")
    e = _refusal("\n".join(levels) + "\n")
    _assert_located(e)
    assert "nested deeper than" in str(e)


def test_a_huge_plugin_config_is_refused_quickly(tmp_path: Path) -> None:
    n = 900_000
    cfg = tmp_path / "big.yaml"
    cfg.write_text(
        _PLUGIN_HEAD + "  pluginConfig:\n    items:\n" + "".join(f"    - {i}\n" for i in range(n))
    )
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as ei:
        load_config(cfg)
    took = time.monotonic() - t0
    _assert_located(ei.value, str(cfg))
    assert f"more than {MAX_CONFIG_NODES} YAML nodes" in str(ei.value)
    # the refusal comes at the node that crossed the limit
    (issue,) = ei.value.errors
    assert MAX_CONFIG_NODES - 20 < issue.line < MAX_CONFIG_NODES + 20
    assert took < 3.0, took  # was 28 s and 806 MB


def test_a_file_over_16_mib_is_refused_without_parsing_it(tmp_path: Path) -> None:
    cfg = tmp_path / "huge.yaml"
    line = "# " + "x" * 1000 + "\n"
    with cfg.open("w") as f:
        for _ in range(MAX_CONFIG_BYTES // len(line) + 2):
            f.write(line)
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as ei:
        load_config(cfg)
    assert time.monotonic() - t0 < 2.0
    _assert_located(ei.value, str(cfg))
    assert "larger than 16 MiB" in str(ei.value)


@pytest.mark.parametrize(
    ("data", "line", "col", "needle"),
    [
        (b"a: b\nc: \x00\n", 2, 4, "#x0000"),
        (b"a: b\n\nc: \x07d\n", 3, 4, "#x0007"),
        (b"a: b\nc: \xff\xfe\n", 2, 4, "not UTF-8"),
        (b"a: \xe9t\xe9\n", 1, 4, "not UTF-8"),
    ],
)
def test_characters_yaml_refuses_and_bad_utf8_have_line_and_column(
    tmp_path: Path, data: bytes, line: int, col: int, needle: str
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(data)
    with pytest.raises(ConfigError) as ei:
        load_config(cfg)
    (issue,) = ei.value.errors
    assert (issue.line, issue.column) == (line, col), issue
    assert needle in issue.message
    assert str(issue).startswith(f"{cfg}:{line}:{col}: ")


def test_a_tcp_default_cluster_is_a_config_error_at_its_line() -> None:
    # (https://, grpc:// and grpcs:// clusters all carry the data path now)
    text = (
        "apiVersion: wasmdesk.dev/v1alpha1\nkind: Proxy\nspec:\n"
        "  clusters: [{name: s, url: 'tcp://127.0.0.1:1'}]\n  defaultCluster: s\n"
    )
    e = _refusal(text)
    _assert_located(e)
    (issue,) = e.errors
    assert issue.line == 5 and issue.path == "spec.defaultCluster"
    assert "is a tcp:// cluster: only a spec.tcp listener forwards to it" in issue.message


# -- fuzzing -------------------------------------------------------------------------------

_TOKENS = [
    "a", ":", " ", "  ", "\n", "- ", "&x ", "*x", "<<: ", "{", "}", "[", "]", ",", "'", '"',
    "\t", "\x00", "\x07", "\ufeff", "---\n", "...\n", "!!str ", "!foo ", "? ", "|\n", ">\n",
    "#", "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "\\", "\ud800", "é", "1e9", "~", "null",
    "kind: WasmPlugin\n", "apiVersion: extensions.istio.io/v1alpha1\n",
    "metadata: {name: p}\n", "spec:\n", "  url: /x.wasm\n", "  pluginConfig: ",
    "kind: Proxy\n", "apiVersion: wasmdesk.dev/v1alpha1\n", "!!binary ",
    "!!python/object ", "2001-12-14t21:59:43.10-05:00", "0x1F", ".inf",
]  # fmt: skip


def _outcome(text: str, counts: collections.Counter[str]) -> None:
    try:
        cfg = parse_config(text, "f.yaml", "/srv")
    except ConfigError as e:
        _assert_located(e)
        counts["refused"] += 1
    else:
        assert isinstance(cfg, ProxyConfig)
        counts["accepted"] += 1


def test_fuzz_yaml_text_gives_located_errors_never_a_traceback() -> None:
    counts: collections.Counter[str] = collections.Counter()

    @settings(
        max_examples=600, database=None, deadline=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.lists(st.sampled_from(_TOKENS), max_size=40))
    def run(parts: list[str]) -> None:
        _outcome("".join(parts), counts)

    run()
    print(f"yaml text fuzz: {dict(counts)}")
    assert counts["refused"] > 0


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "1s", "100ms", "-1", "0", "FAIL_OPEN", "AUTHN", "127.0.0.1:0", "HOST", "INLINE",
            "http://127.0.0.1:1", "https://h/x.wasm", "file:///x.wasm", "oci://x/y", "a" * 300,
            "1e400", "header:", "header:X-A", "256Mi", "0.5", "log-only",
        ]
    ),
)  # fmt: skip
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
_PLUGIN_FIELDS = [
    ("apiVersion",), ("kind",), ("metadata",), ("metadata", "name"),
    ("metadata", "namespace"), ("metadata", "annotations"),
    ("metadata", "annotations", "wasmdesk.dev/mode"),
    ("metadata", "annotations", "wasmdesk.dev/canary-percent"),
    ("metadata", "annotations", "wasmdesk.dev/canary-key"),
    ("metadata", "annotations", "wasmdesk.dev/vm-id"),
    ("metadata", "annotations", "wasmdesk.dev/callback-timeout"),
    ("metadata", "annotations", "wasmdesk.dev/memory-limit"),
    ("spec",), ("spec", "url"), ("spec", "sha256"), ("spec", "pluginName"),
    ("spec", "pluginConfig"), ("spec", "phase"), ("spec", "priority"),
    ("spec", "failStrategy"), ("spec", "vmConfig"), ("spec", "vmConfig", "env"),
    ("spec", "type"), ("spec", "match"), ("spec", "imagePullPolicy"),
    ("spec", "selector"), ("spec", "targetRefs"),
]  # fmt: skip
_PROXY_FIELDS = [
    ("apiVersion",), ("kind",), ("spec",), ("spec", "listen"), ("spec", "admin"),
    ("spec", "clusters"), ("spec", "defaultCluster"),
]  # fmt: skip


def _set(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    d = doc
    for key in path[:-1]:
        if not isinstance(d.get(key), dict):
            d[key] = {}
        d = d[key]
    d[path[-1]] = value


def test_fuzz_field_types_give_located_errors_never_a_traceback() -> None:
    counts: collections.Counter[str] = collections.Counter()
    doc_changes = st.lists(st.tuples(st.integers(0, 100), _VALUES), max_size=3)

    @settings(
        max_examples=250, database=None, deadline=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.lists(st.tuples(st.booleans(), doc_changes), min_size=1, max_size=3))
    def run(docs: list[tuple[bool, list[tuple[int, Any]]]]) -> None:
        out = []
        for is_plugin, changes in docs:
            if is_plugin:
                doc: dict[str, Any] = {
                    "apiVersion": "extensions.istio.io/v1alpha1",
                    "kind": "WasmPlugin",
                    "metadata": {"name": "p"},
                    "spec": {"url": "/x.wasm"},
                }
                fields = _PLUGIN_FIELDS
            else:
                doc = {"apiVersion": "wasmdesk.dev/v1alpha1", "kind": "Proxy", "spec": {}}
                fields = _PROXY_FIELDS
            for i, value in changes:
                _set(doc, fields[i % len(fields)], value)
            out.append(doc)
        _outcome(yaml.safe_dump_all(out, sort_keys=False), counts)

    run()
    print(f"field type fuzz: {dict(counts)}")
    assert counts["refused"] > 0 and counts["accepted"] > 0


# -- wasmdesk serve --config BAD -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("a: &a\n  <<: *a\n", "recursive << merge"),
        ("x: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than"),
    ],
    ids=["recursive-merge", "deep-nesting"],
)
def test_serve_with_a_bad_config_exits_2_with_file_line(
    tmp_path: Path, text: str, needle: str
) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    env = {k: v for k, v in os.environ.items() if k.lower() != "http_proxy"}
    r = subprocess.run(
        [str(WASMDESK), "serve", "--config", str(cfg), "--no-watch"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert needle in r.stderr
    located = [ln for ln in r.stderr.splitlines() if ln.startswith(f"{cfg}:")]
    assert located and all(f"{cfg}:" in ln for ln in located)


def test_serve_names_the_document_of_a_plugin_that_fails_to_load(tmp_path: Path) -> None:
    cfg = tmp_path / "w.yaml"
    cfg.write_text(
        "apiVersion: wasmdesk.dev/v1alpha1\nkind: Proxy\nspec: {listen: '127.0.0.1:0', "
        "admin: '127.0.0.1:0'}\n---\n" + _PLUGIN_HEAD.replace("/x.wasm", "./missing.wasm")
    )
    env = {k: v for k, v in os.environ.items() if k.lower() != "http_proxy"}
    r = subprocess.run(
        [str(WASMDESK), "serve", "--config", str(cfg), "--no-watch"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 1, r.stderr  # could not start (README), not an invalid file
    assert f"did not start: {cfg}:5: plugin p: cannot read" in r.stderr
