"""A cache for the byte-identical rebuild checks of the bundled plugins.

The two rebuild tests (AssemblyScript via npm, C via zig) take most of the suite's wall time,
yet their answer only changes when an input changes. So a successful ``build.py --check`` is
recorded under the user cache dir, ``~/.cache/wasmdesk/build-check/<key>.json`` (or
``$XDG_CACHE_HOME/wasmdesk/build-check/``), and a later run with the same key reuses it.

The key is the sha256 of everything that decides the build's output:

- every source file's bytes (relative path + sha256),
- the build script's own bytes (it holds the compiler flags),
- the tool versions: for AssemblyScript the node version and the version of every npm package
  actually installed in ``node_modules`` (the lock file's versions when ``node_modules`` is not
  there yet: ``npm ci`` installs exactly those); for C the ``zig version`` output.

A record says ``"byte-identical": "yes"`` and holds the sha256 of every committed output file
(the ``.wasm`` files and ``MANIFEST.json``) at the time the check passed. A hit still hashes the
committed files and compares: a committed binary changed since (or a new stray ``.wasm``) fails
exactly as a rebuild would. Only passing checks are recorded. ``WASMDESK_BUILD_CHECK_CACHE=0``
turns the cache off (always rebuild).

Also here: telling an unreachable npm registry apart from a real build failure, and what to do
about it (fail in CI, skip with the reason elsewhere).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

FORMAT = 1  # bump when the record or key layout changes
_NETWORK_ERRORS = re.compile(
    r"\b(ENOTFOUND|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EAI_AGAIN|ENETUNREACH|EHOSTUNREACH|"
    r"ERR_SOCKET_TIMEOUT|network request to|request to \S+ failed)\b",
    re.IGNORECASE,
)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    return sha256_bytes(path.read_bytes())


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wasmdesk" / "build-check"


def cache_enabled() -> bool:
    return os.environ.get("WASMDESK_BUILD_CHECK_CACHE", "1").strip().lower() not in (
        "0", "no", "false", "off",
    )


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def file_digests(root: Path, paths: Iterable[Path]) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(paths)}


# -- the key inputs of each build ---------------------------------------------------------------


def assemblyscript_inputs(plugins_dir: Path) -> dict[str, object]:
    """Key inputs of resources/plugins/build.py: sources, script, node and npm package versions."""
    src = plugins_dir / "src"
    sources = [
        p for p in src.rglob("*")
        if p.is_file() and "node_modules" not in p.relative_to(src).parts
    ]
    return {
        "kind": "assemblyscript",
        "sources": file_digests(plugins_dir, sources),
        "build_script": sha256_file(plugins_dir / "build.py"),
        "node": _tool_output(["node", "--version"]),
        "npm_packages": npm_package_versions(src),
    }


def npm_package_versions(src: Path) -> dict[str, str]:
    """Every package the lock file lists, with the version installed in node_modules.

    Without node_modules the lock's own versions (what ``npm ci`` installs); a package the lock
    lists but node_modules lacks is ``"missing"``.
    """
    lock = json.loads((src / "package-lock.json").read_text(encoding="utf-8"))
    packages: dict[str, dict[str, object]] = lock.get("packages", {})
    installed = (src / "node_modules").is_dir()
    versions: dict[str, str] = {}
    for path, meta in sorted(packages.items()):
        if not path.startswith("node_modules/"):
            continue
        if not installed:
            versions[path] = str(meta.get("version", ""))
            continue
        manifest = src / path / "package.json"
        if manifest.is_file():
            data = json.loads(manifest.read_text(encoding="utf-8"))
            versions[path] = str(data.get("version", ""))
        else:
            versions[path] = "missing"
    return versions


def c_inputs(c_dir: Path) -> dict[str, object]:
    """Key inputs of resources/plugins/c/build.py: sources, script, zig version."""
    sources = [p for p in c_dir.iterdir() if p.is_file() and p.suffix in (".c", ".h")]
    return {
        "kind": "c",
        "sources": file_digests(c_dir, sources),
        "build_script": sha256_file(c_dir / "build.py"),
        "zig": _tool_output([sys.executable, "-m", "ziglang", "version"]),
    }


def _tool_output(cmd: list[str]) -> str:
    return _tool_output_cached(tuple(cmd))


@functools.cache  # one pytest session: the tools do not change under it
def _tool_output_cached(cmd: tuple[str, ...]) -> str:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable: {e}"
    return proc.stdout.strip() if proc.returncode == 0 else f"failed: {proc.returncode}"


def cache_key(inputs: Mapping[str, object]) -> str:
    canonical = json.dumps({"format": FORMAT, **inputs}, sort_keys=True, separators=(",", ":"))
    return sha256_bytes(canonical.encode())


# -- the committed outputs ----------------------------------------------------------------------


def committed_outputs(out_dir: Path) -> dict[str, str]:
    """sha256 of every committed ``.wasm`` file and of MANIFEST.json in ``out_dir``."""
    files = [*out_dir.glob("*.wasm"), out_dir / "MANIFEST.json"]
    return file_digests(out_dir, [p for p in files if p.is_file()])


# -- lookup and store ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Lookup:
    """What the cache knows for a key: nothing, a verified hit, or a hit the files contradict."""

    key: str
    path: Path
    hit: bool
    problems: tuple[str, ...] = ()


def lookup(key: str, out_dir: Path, root: Path | None = None) -> Lookup:
    path = (root or cache_root()) / f"{key}.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Lookup(key, path, hit=False)
    if (
        not isinstance(record, dict)
        or record.get("key") != key
        or record.get("byte-identical") != "yes"
        or not isinstance(record.get("digests"), dict)
    ):
        return Lookup(key, path, hit=False)  # unreadable or foreign: rebuild
    recorded: dict[str, str] = record["digests"]
    now = committed_outputs(out_dir)
    problems = [
        f"{name}: committed sha256 {now.get(name, 'missing')[:16]} but the byte-identical "
        f"build of these exact sources and tools produced {recorded[name][:16]}"
        for name in sorted(recorded) if now.get(name) != recorded[name]
    ]
    problems += [
        f"{name}: not produced by the build of these sources (no source for it?)"
        for name in sorted(set(now) - set(recorded))
    ]
    return Lookup(key, path, hit=True, problems=tuple(problems))


def store(
    key: str, inputs: Mapping[str, object], digests: Mapping[str, str], seconds: float,
    root: Path | None = None,
) -> Path:
    path = (root or cache_root()) / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "key": key,
        "byte-identical": "yes",
        "digests": dict(digests),
        "inputs": dict(inputs),
        "build_seconds": round(seconds, 1),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)  # atomic: a parallel run never reads half a record
    return path


# -- running a check with the cache --------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    cached: bool
    output: str
    record: Path | None = None


def run_check(
    build_script: Path, out_dir: Path, inputs: Mapping[str, object], timeout: float,
    root: Path | None = None,
) -> CheckResult:
    """``build_script --check`` unless a verified record for ``inputs`` exists; record a pass."""
    key = cache_key(inputs)
    if cache_enabled():
        found = lookup(key, out_dir, root)
        if found.hit:
            detail = "\n".join(f"  - {p}" for p in found.problems)
            return CheckResult(
                not found.problems, True,
                f"cache hit {found.path}" + (f"; committed outputs changed:\n{detail}"
                                             if found.problems else ""),
                found.path,
            )
    before = committed_outputs(out_dir)
    start = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, str(build_script), "--check"],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
    except subprocess.TimeoutExpired as e:
        partial = _text(e.stdout) + _text(e.stderr)
        return CheckResult(False, False, f"{build_script.name} --check did not finish within "
                                         f"{timeout:.0f} s; its output so far:\n{partial}")
    seconds = time.monotonic() - start
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        return CheckResult(False, False, output)
    if not cache_enabled() or committed_outputs(out_dir) != before:
        return CheckResult(True, False, output)  # files changed while building: no record
    return CheckResult(True, False, output, store(key, inputs, before, seconds, root))


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", "replace")


def npm_registry_unreachable(output: str) -> bool:
    """Whether a failed npm step failed because the registry could not be reached."""
    return bool(_NETWORK_ERRORS.search(output))


def unreachable_registry_verdict(output: str, ci: bool) -> tuple[str, str]:
    """("fail" | "skip", message) for a build that failed on an unreachable npm registry."""
    message = (
        "the npm registry is unreachable, so the AssemblyScript plugins cannot be rebuilt "
        "(npm ci needs it once to fill src/node_modules):\n" + output.strip()[-2000:]
    )
    if ci:
        return "fail", message + "\nCI=true: a rebuild check that cannot run is a failure here."
    return "skip", message + "\n(under CI=true this is a failure)"
