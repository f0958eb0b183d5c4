"""The bundled plugins in resources/plugins/ are what their AssemblyScript sources build to.

Always: MANIFEST.json matches the current sources and the committed .wasm files (so editing a
source without rebuilding fails here), and every module is a Proxy-Wasm module wasmtime accepts.
With node and npm on PATH (marker ``npm``): rebuild everything from source with the real SDK
(``build.py --check``) and compare byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from tests import build_check_cache

PLUGINS = Path(__file__).resolve().parents[2] / "resources" / "plugins"
SRC = PLUGINS / "src"
BUILD_SCRIPT = PLUGINS / "build.py"
ABI_MARKERS = {"proxy_abi_version_0_2_0", "proxy_abi_version_0_2_1"}
DEMO_PLUGINS = ("add_header", "auth_token", "path_counter", "body_rewrite")
TEST_PLUGINS = (
    "typical", "callout", "shared_data", "ticker", "log_levels", "config_parse", "body_echo_request",
)
ALL_PLUGINS = tuple(sorted(DEMO_PLUGINS + TEST_PLUGINS))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PLUGINS / "MANIFEST.json").read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def engine() -> wasmtime.Engine:
    return wasmtime.Engine()


def test_every_plugin_has_a_source_a_wasm_and_a_manifest_entry() -> None:
    sources = sorted(p.stem for p in SRC.glob("*.ts"))
    wasms = sorted(p.stem for p in PLUGINS.glob("*.wasm"))
    assert sources == list(ALL_PLUGINS)
    assert wasms == list(ALL_PLUGINS)
    assert sorted(manifest()["plugins"]) == list(ALL_PLUGINS)


@pytest.mark.parametrize("name", ALL_PLUGINS)
def test_manifest_source_hashes_match_the_current_sources(name: str) -> None:
    recorded: dict[str, str] = manifest()["plugins"][name]["sources"]
    assert f"src/{name}.ts" in recorded
    assert "src/package-lock.json" in recorded
    stale = [path for path, digest in recorded.items() if sha256(PLUGINS / path) != digest]
    assert not stale, (
        f"{name}: {stale} changed since {name}.wasm was built; "
        "run `python resources/plugins/build.py` and commit the .wasm files and MANIFEST.json"
    )


@pytest.mark.parametrize("name", ALL_PLUGINS)
def test_manifest_wasm_hash_matches_the_committed_module(name: str) -> None:
    entry = manifest()["plugins"][name]["wasm"]
    wasm = PLUGINS / entry["file"]
    assert entry["file"] == f"{name}.wasm"
    assert sha256(wasm) == entry["sha256"], f"{wasm.name} is not the module MANIFEST.json records"
    assert wasm.stat().st_size == entry["size"]


def test_manifest_records_the_pinned_toolchain() -> None:
    toolchain = manifest()["toolchain"]
    assert toolchain["assemblyscript"] == "0.14.9"
    assert toolchain["@solo-io/proxy-runtime"] == "0.1.8"
    package = json.loads((SRC / "package.json").read_text(encoding="utf-8"))
    assert package["devDependencies"] == {"@solo-io/proxy-runtime": "0.1.8", "assemblyscript": "0.14.9"}


@pytest.mark.parametrize("name", ALL_PLUGINS)
def test_module_is_a_proxy_wasm_module(engine: wasmtime.Engine, name: str) -> None:
    data = (PLUGINS / f"{name}.wasm").read_bytes()
    assert data[:4] == b"\0asm"
    module = wasmtime.Module(engine, data)
    funcs = {e.name for e in module.exports if isinstance(e.type, wasmtime.FuncType)}
    assert funcs & ABI_MARKERS, f"{name}.wasm exports no Proxy-Wasm ABI version marker"
    assert {"malloc", "proxy_on_context_create", "proxy_on_configure", "proxy_on_delete"} <= funcs
    assert any(e.name == "memory" and isinstance(e.type, wasmtime.MemoryType) for e in module.exports)
    modules = {i.module for i in module.imports}
    assert modules <= {"env", "wasi_unstable"}, modules
    # AssemblyScript stores string literals as UTF-16LE: the root id passed to
    # registerRootContext is the file name.
    assert name.encode("utf-16-le") in data


@pytest.mark.parametrize("name", DEMO_PLUGINS)
def test_demo_plugin_has_a_configuration_schema(name: str) -> None:
    schema = json.loads((PLUGINS / f"{name}.schema.json").read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["properties"]
    for field, spec in schema["properties"].items():
        assert {"title", "description", "type", "default"} <= spec.keys(), field


def test_readme_documents_every_plugin() -> None:
    readme = (PLUGINS / "README.md").read_text(encoding="utf-8")
    missing = [name for name in ALL_PLUGINS if f"`{name}`" not in readme]
    assert not missing


@pytest.mark.npm
@pytest.mark.slow
@pytest.mark.timeout(600)  # a cache miss on a loaded 2-core machine: 4-5 min
@pytest.mark.skipif(
    shutil.which("npm") is None or shutil.which("node") is None, reason="needs node and npm on PATH"
)
def test_rebuild_from_source_is_byte_identical() -> None:
    # A pass is cached under ~/.cache/wasmdesk/build-check, keyed on every source, build.py,
    # node and the installed npm package versions (tests/build_check_cache.py); a hit still
    # checks the committed .wasm files and MANIFEST.json against the recorded digests.
    inputs = build_check_cache.assemblyscript_inputs(PLUGINS)
    result = build_check_cache.run_check(BUILD_SCRIPT, PLUGINS, inputs, timeout=580)
    if not result.ok and not result.cached and build_check_cache.npm_registry_unreachable(
        result.output
    ):
        verdict, message = build_check_cache.unreachable_registry_verdict(
            result.output, ci=build_check_cache.in_ci()
        )
        if verdict == "skip":
            pytest.skip(message)
        pytest.fail(message)
    assert result.ok, f"build.py --check failed:\n{result.output}"
