"""The rebuild-check cache (tests/build_check_cache.py) is honest: its key moves with every input,
a hit still catches a changed committed binary, and an unreachable npm registry fails in CI."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests import build_check_cache as bcc

ROOT = Path(__file__).resolve().parents[1]
C_DIR = ROOT / "resources" / "plugins" / "c"
AS_SRC = ROOT / "resources" / "plugins" / "src"


@pytest.fixture
def c_copy(tmp_path: Path) -> Path:
    """The C plugin directory (sources, build.py, committed .wasm and MANIFEST.json) copied."""
    out = tmp_path / "c"
    shutil.copytree(C_DIR, out, ignore=shutil.ignore_patterns("__pycache__"))
    return out


def _key_without_tools(c_dir: Path) -> str:
    inputs = bcc.c_inputs(c_dir)
    assert str(inputs["zig"]).startswith("0."), inputs["zig"]  # the real `zig version`
    return bcc.cache_key(inputs)


def test_key_moves_with_every_source_byte_the_build_script_and_the_zig_version(c_copy: Path):
    base = _key_without_tools(c_copy)
    assert _key_without_tools(c_copy) == base  # stable

    header = c_copy / "proxy_abi.h"
    original = header.read_bytes()
    header.write_bytes(original + b"\n")
    assert _key_without_tools(c_copy) != base
    header.write_bytes(original)

    script = c_copy / "build.py"
    script.write_bytes(script.read_bytes().replace(b'"-O2"', b'"-O3"'))
    assert _key_without_tools(c_copy) != base
    shutil.copy(C_DIR / "build.py", script)

    (c_copy / "extra.h").write_text("/* a new header */\n")
    assert _key_without_tools(c_copy) != base
    (c_copy / "extra.h").unlink()
    assert _key_without_tools(c_copy) == base

    inputs = bcc.c_inputs(c_copy)
    assert bcc.cache_key({**inputs, "zig": "0.18.0"}) != bcc.cache_key(inputs)


def test_npm_key_uses_installed_versions_and_the_lock_before_npm_ci(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    lock = {"packages": {
        "": {"name": "x"},
        "node_modules/assemblyscript": {"version": "0.14.9"},
        "node_modules/@solo-io/proxy-runtime": {"version": "0.1.8"},
    }}
    (src / "package-lock.json").write_text(json.dumps(lock))
    from_lock = bcc.npm_package_versions(src)
    assert from_lock == {"node_modules/@solo-io/proxy-runtime": "0.1.8",
                         "node_modules/assemblyscript": "0.14.9"}

    for path, version in (("assemblyscript", "0.14.9"), ("@solo-io/proxy-runtime", "0.1.8")):
        (src / "node_modules" / path).mkdir(parents=True)
        (src / "node_modules" / path / "package.json").write_text(json.dumps({"version": version}))
    assert bcc.npm_package_versions(src) == from_lock  # npm ci installed exactly the lock

    (src / "node_modules/assemblyscript/package.json").write_text('{"version": "0.14.10"}')
    assert bcc.npm_package_versions(src)["node_modules/assemblyscript"] == "0.14.10"
    shutil.rmtree(src / "node_modules/@solo-io")
    assert bcc.npm_package_versions(src)["node_modules/@solo-io/proxy-runtime"] == "missing"


def test_the_real_assemblyscript_key_covers_sources_script_node_and_packages():
    inputs = bcc.assemblyscript_inputs(ROOT / "resources" / "plugins")
    sources = inputs["sources"]
    assert isinstance(sources, dict)
    assert {"src/add_header.ts", "src/package-lock.json", "src/package.json"} <= set(sources)
    assert any(name.startswith("src/lib/") for name in sources)
    assert not any("node_modules" in name for name in sources)
    packages = inputs["npm_packages"]
    assert isinstance(packages, dict) and "node_modules/assemblyscript" in packages
    assert len(str(inputs["build_script"])) == 64


def test_a_hit_still_catches_a_changed_committed_binary_and_a_stray_module(
    c_copy: Path, tmp_path: Path
):
    cache = tmp_path / "cache"
    inputs = bcc.c_inputs(c_copy)
    key = bcc.cache_key(inputs)
    assert not bcc.lookup(key, c_copy, cache).hit

    record = bcc.store(key, inputs, bcc.committed_outputs(c_copy), 1.0, cache)
    assert record == cache / f"{key}.json"
    saved = json.loads(record.read_text())
    assert saved["byte-identical"] == "yes"
    # every committed module (the directory's .wasm files) and the manifest
    modules = {p.name for p in c_copy.glob("*.wasm")}
    assert {"rust_strict.wasm", "tinygo_like.wasm"} <= modules
    assert set(saved["digests"]) == {"MANIFEST.json", *modules}

    result = bcc.run_check(c_copy / "build.py", c_copy, inputs, timeout=5, root=cache)
    assert result.ok and result.cached and result.record == record

    wasm = c_copy / "rust_strict.wasm"
    data = bytearray(wasm.read_bytes())
    data[-1] ^= 0xFF
    wasm.write_bytes(bytes(data))
    result = bcc.run_check(c_copy / "build.py", c_copy, inputs, timeout=5, root=cache)
    assert result.cached and not result.ok
    assert "rust_strict.wasm: committed sha256" in result.output

    shutil.copy(C_DIR / "rust_strict.wasm", wasm)
    (c_copy / "stray.wasm").write_bytes(b"\0asm\x01\0\0\0")
    found = bcc.lookup(key, c_copy, cache)
    assert found.hit and found.problems == (
        "stray.wasm: not produced by the build of these sources (no source for it?)",
    )


def test_a_foreign_or_broken_record_is_a_miss(c_copy: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    cache.mkdir()
    key = bcc.cache_key(bcc.c_inputs(c_copy))
    (cache / f"{key}.json").write_text("{not json")
    assert not bcc.lookup(key, c_copy, cache).hit
    (cache / f"{key}.json").write_text(json.dumps({"key": "other", "byte-identical": "yes",
                                                   "digests": {}}))
    assert not bcc.lookup(key, c_copy, cache).hit


def test_cache_dir_follows_xdg_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert bcc.cache_root() == tmp_path / "wasmdesk" / "build-check"
    monkeypatch.setenv("WASMDESK_BUILD_CHECK_CACHE", "0")
    assert not bcc.cache_enabled()
    monkeypatch.setenv("WASMDESK_BUILD_CHECK_CACHE", "1")
    assert bcc.cache_enabled()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm on PATH")
def test_npm_ci_against_an_unreachable_registry_fails_in_ci_and_skips_elsewhere(tmp_path: Path):
    work = tmp_path / "src"
    work.mkdir()
    for name in ("package.json", "package-lock.json"):
        shutil.copy(AS_SRC / name, work / name)
    env = {
        **os.environ,
        "npm_config_registry": f"http://127.0.0.1:{_closed_port()}/",
        "npm_config_cache": str(tmp_path / "npm-cache"),  # empty: npm must ask the registry
        "npm_config_fetch_retries": "0",
        "npm_config_fetch_retry_mintimeout": "100",
        "npm_config_fetch_retry_maxtimeout": "200",
        "npm_config_offline": "false",
    }
    proc = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert bcc.npm_registry_unreachable(output), output

    verdict, message = bcc.unreachable_registry_verdict(output, ci=True)
    assert verdict == "fail"
    assert "npm registry is unreachable" in message and "CI=true" in message
    assert "ECONNREFUSED" in message
    assert bcc.unreachable_registry_verdict(output, ci=False)[0] == "skip"


def test_a_real_build_failure_is_not_mistaken_for_an_unreachable_registry():
    asc_error = (
        "build.py: error: add_header: asc failed (exit 1):\n"
        "ERROR TS2304: Cannot find name 'foo'.\n   in add_header.ts(12,5)"
    )
    assert not bcc.npm_registry_unreachable(asc_error)


def test_ci_flag(monkeypatch: pytest.MonkeyPatch):
    for value, expected in (("true", True), ("1", True), ("", False), ("false", False)):
        monkeypatch.setenv("CI", value)
        assert bcc.in_ci() is expected


def test_a_check_that_runs_out_of_time_fails_with_a_clear_message(c_copy: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    inputs = bcc.c_inputs(c_copy)
    result = bcc.run_check(c_copy / "build.py", c_copy, inputs, timeout=0.001, root=cache)
    assert not result.ok and not result.cached
    assert "build.py --check did not finish within 0 s" in result.output
    assert not cache.exists()  # nothing recorded
