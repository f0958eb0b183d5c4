"""Architecture contracts on the real import graph (import-linter / grimp).

- The contracts in pyproject's ``[tool.importlinter]`` hold (``lint-imports``): ``host`` never
  imports ``gui`` or Qt; ``host.wasm`` never imports ``host.proxy``; ``gui`` reaches ``host`` only
  through ``gui/engine_service.py`` and the value-type modules listed there.
- Each contract really breaks: a copy of the sources with one violating import fails it.
- ``host`` has no import cycles beyond the known ones in ``KNOWN_CYCLES`` (strict: a new cycle
  fails, and so does a listed one that is gone, so the list shrinks as the cycles are removed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

# Strongly connected components of host's import graph today: modules that reach each other
# through imports. Two graphs: every import (``if TYPE_CHECKING:`` ones too: a type-level
# cycle is still coupling both ways), and only the imports that run (module level or inside
# functions). The data-path rebuild (issue 8) is to remove the proxy ones.
_WASM_RUNTIME_CYCLE = frozenset({
    "host.wasm.abi", "host.wasm.abi.callouts", "host.wasm.abi.logging",
    "host.wasm.abi.stream_control", "host.wasm.abi.wasi", "host.wasm.plugin_host", "host.wasm.vm",
})
KNOWN_CYCLES: dict[str, dict[frozenset[str], str]] = {
    "all-imports": {
        _WASM_RUNTIME_CYCLE | {
            "host.wasm.abi._common", "host.wasm.abi.buffers", "host.wasm.abi.contexts",
            "host.wasm.abi.header_maps", "host.wasm.abi.metrics", "host.wasm.abi.properties",
            "host.wasm.abi.shared_state", "host.wasm.attributes", "host.wasm.context",
            "host.wasm.foreign",
        }: "every host function module types PluginVM/contexts; vm installs them",
    },
    "runtime-imports": {
        _WASM_RUNTIME_CYCLE: (
            "vm -> abi (host functions) -> abi.logging -> plugin_host.LogRecord -> vm, broken "
            "at import time by imports inside functions"
        ),
    },
}


def lint_imports(cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )


def contract_states(output: str) -> dict[str, str]:
    """``{contract name: "KEPT" | "BROKEN"}`` from lint-imports' summary lines."""
    states: dict[str, str] = {}
    for line in output.splitlines():
        for state in ("KEPT", "BROKEN"):
            head, sep, _ = line.rstrip().rpartition(state)
            if sep and head.strip() and not line.startswith(("Contracts:", "-")):
                states[head.strip()] = state
                break
    return states


CONTRACTS = {
    "host-no-gui": "host (the engine) never imports gui or Qt",
    "wasm-no-proxy": (
        "host.wasm (the Proxy-Wasm host) never imports host.proxy (the proxy built on it)"
    ),
    "gui-through-engine-service": (
        "gui reaches host only through gui.engine_service and named value-type modules"
    ),
    "config-layers": "host.proxy.config's modules are layered (none imports a higher one)",
}


def test_lint_imports_keeps_every_contract() -> None:
    proc = lint_imports(ROOT)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert contract_states(output) == {name: "KEPT" for name in CONTRACTS.values()}, output


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """host/, gui/ and pyproject.toml copied: a tree to plant violations in."""
    root = tmp_path_factory.mktemp("arch")
    for package in ("host", "gui"):
        shutil.copytree(ROOT / package, root / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


VIOLATIONS = [
    ("host-no-gui", "host/report.py", "import PySide6.QtCore"),
    ("host-no-gui", "host/proxy/stats.py", "from gui import engine_service"),
    ("wasm-no-proxy", "host/wasm/types.py", "from host.proxy import stats"),
    ("gui-through-engine-service", "gui/stats_panel.py",
     "from host.proxy.server import ProxyServer"),
    ("gui-through-engine-service", "gui/logs_panel.py", "import host.wasm.vm"),
    ("config-layers", "host/proxy/config/model.py", "from host.proxy.config import parse"),
    ("config-layers", "host/proxy/config/units.py", "from host.proxy.config.model import EnvVar"),
]


@pytest.mark.parametrize(("contract", "module", "line"), VIOLATIONS)
def test_a_violating_import_breaks_its_contract(
    source_copy: Path, contract: str, module: str, line: str
) -> None:
    target = source_copy / module
    original = target.read_text(encoding="utf-8")
    # Inside a function, as a lazy import would be: still an import of the module.
    target.write_text(original + f"\n\ndef _planted() -> None:\n    {line}  # noqa\n",
                      encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(source_copy)}  # the copy, not the installed tree
    try:
        proc = lint_imports(source_copy, env)
    finally:
        target.write_text(original, encoding="utf-8")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    expected = {name: "KEPT" for name in CONTRACTS.values()}
    expected[CONTRACTS[contract]] = "BROKEN"
    assert contract_states(output) == expected, output
    assert module.removesuffix(".py").replace("/", ".") in output  # names the offender


# -- no new import cycles in host -------------------------------------------------------------


def import_cycles(modules: Iterable[str], imports_of: Callable[[str], set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    nodes = sorted(modules)
    inside = set(nodes)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[set[str]] = []
    work: list[tuple[str, list[str]]] = []

    def enter(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        work.append((v, sorted(imports_of(v) & inside)))

    for start in nodes:
        if start in index:
            continue
        enter(start)
        while work:
            v, todo = work[-1]
            if todo:
                w = todo.pop()
                if w not in index:
                    enter(w)
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
            if low[v] == index[v]:
                component = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.add(w)
                    if w == v:
                        break
                if len(component) > 1:
                    cycles.append(component)
    return cycles


def describe(graph: grimp.ImportGraph, component: set[str]) -> str:
    edges = []
    for importer in sorted(component):
        for imported in sorted(graph.find_modules_directly_imported_by(importer) & component):
            lines = [d["line_number"] for d in
                     graph.get_import_details(importer=importer, imported=imported)]
            edges.append(f"    {importer} -> {imported} (line {', '.join(map(str, lines))})")
    return "\n".join(edges)


def test_import_cycle_finder_finds_a_planted_cycle() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d"),
                               ("p.d", "p.e"), ("p.e", "p.d"), ("p.f", "p.a")]:
        graph.add_import(importer=importer, imported=imported)
    cycles = import_cycles(graph.modules, graph.find_modules_directly_imported_by)
    assert sorted(map(sorted, cycles)) == [["p.a", "p.b", "p.c"], ["p.d", "p.e"]]


@pytest.mark.parametrize("graph_kind", sorted(KNOWN_CYCLES))
def test_host_has_no_import_cycles_beyond_the_known_ones(graph_kind: str) -> None:
    graph = grimp.build_graph(
        "host", exclude_type_checking_imports=graph_kind == "runtime-imports", cache_dir=None
    )
    known = KNOWN_CYCLES[graph_kind]
    found = {frozenset(c) for c in import_cycles(graph.modules,
                                                 graph.find_modules_directly_imported_by)}
    report = [f"new import cycle in host ({graph_kind}):\n{describe(graph, set(c))}"
              for c in found if c not in known]
    report += [
        f"known cycle {sorted(c)} ({graph_kind}) is gone or changed: update KNOWN_CYCLES"
        for c in known if c not in found
    ]
    assert not report, "\n".join(report)
