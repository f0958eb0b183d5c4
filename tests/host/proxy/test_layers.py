"""The data path's layers (issue 8): the pure and contract modules import neither the
HTTP/1.1 adapter nor the plugin chain nor the Wasm host, so a later HTTP/2 or TCP
adapter can sit beside ``http1.py`` on the same core."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PROXY = Path(__file__).resolve().parents[3] / "host" / "proxy"
FORBIDDEN = ("host.proxy.http1", "host.proxy.chain", "host.proxy.plugins", "host.wasm")


def imports(module: str) -> set[str]:
    tree = ast.parse((PROXY / f"{module}.py").read_text())
    out: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.module:
            out.add(n.module)
        elif isinstance(n, ast.Import):
            out.update(a.name for a in n.names)
    return out


@pytest.mark.parametrize(
    "module",
    [
        "framing",
        "stream",
        "upstream",
        "upstream_api",
        "upstream_h2",
        "records",
        "exchange",
        "exchange_upstream",
        "halfstream",
        "edge",
        "grpc_reply",
    ],
)
def test_a_core_module_depends_on_no_adapter_chain_or_wasm(module: str) -> None:
    bad = {m for m in imports(module) if m.startswith(FORBIDDEN)}
    assert not bad, f"{module}.py imports {sorted(bad)}"


@pytest.mark.parametrize("module", ["exchange", "exchange_upstream", "halfstream"])
def test_the_exchange_reaches_sockets_only_through_the_protocol_objects(module: str) -> None:
    assert ".transport" not in (PROXY / f"{module}.py").read_text()


@pytest.mark.parametrize("module", ["exchange", "exchange_upstream", "halfstream"])
def test_the_exchange_core_emits_events_not_wire_bytes(module: str) -> None:
    """Sans-IO (issue 8): the adapters frame; the core imports no framing function
    that builds bytes."""
    text = (PROXY / f"{module}.py").read_text()
    for name in ("request_head", "response_head", "reply_message", "trailer_block", "chunk"):
        assert not re.search(rf"\b{name}\(", text), f"{module}.py uses framing's {name}"
