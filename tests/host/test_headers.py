"""host.headers: the one header map type, shared by the Proxy-Wasm host and the proxy."""

from __future__ import annotations

import ast
from pathlib import Path

import host.headers
import host.wasm
import host.wasm.pairs
from host.headers import HeaderMap
from host.proxy import chain, exchange, framing, routes


def test_the_wasm_host_and_the_proxy_share_one_header_map_type() -> None:
    assert host.wasm.HeaderMap is HeaderMap
    assert host.wasm.pairs.HeaderMap is HeaderMap  # the old import place still works
    for module in (chain, exchange, framing, routes):
        assert module.HeaderMap is HeaderMap, module.__name__


def test_host_headers_depends_on_no_other_host_module() -> None:
    # (the source: compiled with mypyc, the module itself is an extension)
    tree = ast.parse((Path(host.__file__).parent / "headers.py").read_text())
    imported = {
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
    }
    assert not {m for m in imported if m and m.split(".")[0] == "host"}


def test_header_map_keeps_order_duplicates_and_lower_cases_keys() -> None:
    m = HeaderMap([("X-A", "1"), (b"x-a", b"2"), ("B", "3")])
    assert m.items() == [(b"x-a", b"1"), (b"x-a", b"2"), (b"b", b"3")]
    assert m.get_all("X-A") == [b"1", b"2"]
    m.replace("x-a", "9")
    assert m.items() == [(b"x-a", b"9"), (b"b", b"3")]
