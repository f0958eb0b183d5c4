#!/usr/bin/env python3
"""Build the bundled Proxy-Wasm plugins from their AssemblyScript sources.

Every ``src/<name>.ts`` (the root id registered by the plugin is ``<name>``) is compiled with
the pinned toolchain in ``src/package-lock.json`` (assemblyscript 0.14.9 +
@solo-io/proxy-runtime 0.1.8) into ``<out>/<name>.wasm``::

    npx asc <name>.ts -b <out>/<name>.wasm --use abort=abort_proc_exit --optimize

and ``<out>/MANIFEST.json`` records, per plugin, the sha256 of every source file that went in
(the plugin file, the ``src/lib`` files it imports, ``package-lock.json``) and of the output,
plus the toolchain versions. The output is byte-for-byte reproducible (no source maps, no debug
info; asc embeds only cwd-relative file names, and the build always runs in ``src/``).

Usage::

    python resources/plugins/build.py            # rebuild into resources/plugins/
    python resources/plugins/build.py --out DIR  # build elsewhere (MANIFEST.json goes there too)
    python resources/plugins/build.py --check    # rebuild into a temp dir, compare with the
                                                 # committed .wasm files and MANIFEST.json;
                                                 # exit status 1 on any difference

Also checks each plugin for two assemblyscript 0.14.9 miscompilations (a virtual-method stub
left as a bare ``unreachable``; a plugin method missing from the module because its override
was never wired in) with an extra unoptimized build to text (``--no-lint`` skips it). Runs ``npm ci`` in ``src/`` when ``node_modules`` is missing or does
not match the lock file. Needs node and npm on PATH; stdlib only.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
LOCK = SRC / "package-lock.json"
MANIFEST = "MANIFEST.json"
ASC_FLAGS = ["--use", "abort=abort_proc_exit", "--optimize"]
LINT_FLAGS = ["--use", "abort=abort_proc_exit"]
# Packages whose installed version must match the lock file before building.
PINNED = ("assemblyscript", "@solo-io/proxy-runtime", "binaryen", "long")

_IMPORT_RE = re.compile(r"""(?:\bfrom|^\s*import)\s*["'](\.{1,2}/[^"']+)["']""", re.MULTILINE)
_COMMENT_RE = re.compile(r"/\*.*?\*/|^\s*//[^\n]*", re.MULTILINE | re.DOTALL)
# A class of the plugin file and the methods it defines (two-space indented, as in src/).
_CLASS_RE = re.compile(r"^class (\w+)\b[^{]*\{\n(.*?)^\}", re.MULTILINE | re.DOTALL)
_METHOD_RE = re.compile(r"^  (?:static |private |protected |public |get |set )*(\w+)\s*\(", re.MULTILINE)
# An unfinalized virtual stub in an unoptimized text build: the whole body is `unreachable`.
_BROKEN_STUB_RE = re.compile(r"^ \(func (\$\S+@virtual)[^\n]*\n  unreachable\n \)", re.MULTILINE)


class BuildError(Exception):
    pass


@dataclass(frozen=True)
class Built:
    name: str
    seconds: float
    wasm: Path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rel(path: Path) -> str:
    return path.relative_to(HERE).as_posix()


def plugin_names() -> list[str]:
    return sorted(p.stem for p in SRC.glob("*.ts") if not p.name.endswith(".d.ts"))


def plugin_sources(name: str) -> list[Path]:
    """The plugin file, every local module it imports (transitively) and the lock file."""
    seen: set[Path] = set()
    todo = [SRC / f"{name}.ts"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        if not path.is_file():
            raise BuildError(f"{name}: imported file {path} does not exist")
        seen.add(path)
        code = _COMMENT_RE.sub("", path.read_text(encoding="utf-8"))
        for spec in _IMPORT_RE.findall(code):
            target = (path.parent / spec).resolve()
            for candidate in (target.with_name(target.name + ".ts"), target / "index.ts", target):
                if candidate.is_file():
                    todo.append(candidate)
                    break
            else:
                raise BuildError(f"{rel(path)}: cannot resolve import {spec!r}")
    return sorted(seen, key=rel) + [LOCK]


def source_hashes(name: str) -> dict[str, str]:
    return {rel(p): sha256(p) for p in plugin_sources(name)}


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


def require_tools() -> None:
    missing = [tool for tool in ("node", "npm", "npx") if shutil.which(tool) is None]
    if missing:
        raise BuildError(f"{', '.join(missing)} not found on PATH (install Node.js >= 18)")


def installed_matches_lock() -> bool:
    lock = json.loads(LOCK.read_text(encoding="utf-8"))["packages"]
    for pkg in PINNED:
        wanted = lock.get(f"node_modules/{pkg}", {}).get("version")
        meta = SRC / "node_modules" / pkg / "package.json"
        if wanted is None or not meta.is_file():
            return False
        if json.loads(meta.read_text(encoding="utf-8")).get("version") != wanted:
            return False
    return True


def ensure_node_modules() -> None:
    if (SRC / "node_modules").is_dir() and installed_matches_lock():
        return
    print("npm ci (src/node_modules missing or not matching package-lock.json) ...", flush=True)
    start = time.monotonic()
    result = run(["npm", "ci", "--no-audit", "--no-fund"], SRC)
    if result.returncode != 0:
        raise BuildError(f"npm ci failed:\n{result.stdout}{result.stderr}")
    print(f"npm ci done in {time.monotonic() - start:.1f} s", flush=True)


def toolchain() -> dict[str, object]:
    def version(cmd: list[str]) -> str:
        return run(cmd, SRC).stdout.strip()

    def package_version(pkg: str) -> str:
        meta = SRC / "node_modules" / pkg / "package.json"
        return str(json.loads(meta.read_text(encoding="utf-8"))["version"])

    return {
        "node": version(["node", "--version"]),
        "npm": version(["npm", "--version"]),
        **{pkg: package_version(pkg) for pkg in PINNED},
        "asc_command": ["npx", "asc", "<name>.ts", "-b", "<name>.wasm", *ASC_FLAGS],
    }


def lint_problems(name: str, wat: str) -> list[str]:
    """assemblyscript 0.14.9 miscompilations visible in an unoptimized text build.

    1. A virtual stub left as a bare ``unreachable`` (the first call through it was compiled
       while stubs were being finalized; see src/lib/config.ts).
    2. A method of a class in the plugin file that is not in the module at all: its override was
       never wired into the virtual stub, so the SDK's default runs instead (see src/lib/abi.ts).
       A method that is simply never called is reported too; delete it.
    """
    problems = [f"virtual stub {stub} only traps" for stub in _BROKEN_STUB_RE.findall(wat)]
    code = _COMMENT_RE.sub("", (SRC / f"{name}.ts").read_text(encoding="utf-8"))
    for cls, body in _CLASS_RE.findall(code):
        for method in _METHOD_RE.findall(body):
            if method in ("if", "for", "while", "switch", "return"):
                continue
            if f"(func ${name}/{cls}#{method} " not in wat:
                problems.append(f"{cls}#{method} is not in the compiled module")
    return problems


def compile_plugin(name: str, out_dir: Path, lint: bool) -> Built:
    wasm = out_dir / f"{name}.wasm"
    start = time.monotonic()
    result = run(["npx", "asc", f"{name}.ts", "-b", str(wasm), *ASC_FLAGS], SRC)
    if result.returncode != 0 or not wasm.is_file():
        raise BuildError(f"{name}: asc failed (exit {result.returncode}):\n{result.stdout}{result.stderr}")
    if lint:
        with tempfile.TemporaryDirectory(prefix=f"lint-{name}-") as tmp:
            wat = Path(tmp) / f"{name}.wat"
            result = run(["npx", "asc", f"{name}.ts", "-t", str(wat), *LINT_FLAGS], SRC)
            if result.returncode != 0 or not wat.is_file():
                raise BuildError(f"{name}: unoptimized lint build failed:\n{result.stdout}{result.stderr}")
            problems = lint_problems(name, wat.read_text(encoding="utf-8"))
        if problems:
            raise BuildError(
                f"{name}: assemblyscript 0.14.9 miscompiled the plugin: {'; '.join(problems)}. "
                "See src/lib/config.ts and src/lib/abi.ts for the patterns to avoid."
            )
    return Built(name, time.monotonic() - start, wasm)


def build_all(out_dir: Path, jobs: int, lint: bool) -> list[Built]:
    names = plugin_names()
    if not names:
        raise BuildError(f"no plugin sources in {SRC}")
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    built: list[Built] = []
    errors: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(compile_plugin, n, out_dir, lint): n for n in names}
        for future in concurrent.futures.as_completed(futures):
            try:
                item = future.result()
            except BuildError as exc:
                errors.append(str(exc))
                continue
            built.append(item)
            print(f"  {item.name:<20} {item.seconds:5.1f} s  {item.wasm.stat().st_size:>7} bytes", flush=True)
    if errors:
        raise BuildError("\n".join(errors))
    total = time.monotonic() - start
    print(f"built {len(built)} plugins in {total:.1f} s ({jobs} parallel jobs"
          f"{', with lint' if lint else ''})", flush=True)
    return sorted(built, key=lambda b: b.name)


def manifest_for(built: list[Built]) -> dict[str, object]:
    return {
        "comment": "Generated by resources/plugins/build.py from resources/plugins/src; do not edit.",
        "toolchain": toolchain(),
        "plugins": {
            b.name: {
                "root_id": b.name,
                "sources": source_hashes(b.name),
                "wasm": {"file": b.wasm.name, "sha256": sha256(b.wasm), "size": b.wasm.stat().st_size},
            }
            for b in built
        },
    }


def check(built: list[Built]) -> list[str]:
    """Differences between a fresh build and what is committed next to this script."""
    problems: list[str] = []
    for b in built:
        committed = HERE / b.wasm.name
        if not committed.is_file():
            problems.append(f"{b.name}: {rel(committed)} is missing (run build.py)")
        elif committed.read_bytes() != b.wasm.read_bytes():
            problems.append(
                f"{b.name}: {rel(committed)} differs from a rebuild of its sources "
                f"(committed sha256 {sha256(committed)[:16]}, rebuilt {sha256(b.wasm)[:16]}); "
                "run build.py and commit the result"
            )
    names = {b.name for b in built}
    for stray in sorted(HERE.glob("*.wasm")):
        if stray.stem not in names:
            problems.append(f"{rel(stray)} has no source src/{stray.stem}.ts")
    manifest_path = HERE / MANIFEST
    if not manifest_path.is_file():
        problems.append(f"{MANIFEST} is missing (run build.py)")
        return problems
    recorded = json.loads(manifest_path.read_text(encoding="utf-8")).get("plugins", {})
    if set(recorded) != names:
        problems.append(f"{MANIFEST} lists {sorted(recorded)}, sources are {sorted(names)}")
    for b in built:
        entry = recorded.get(b.name)
        if entry is None:
            continue
        if entry["sources"] != source_hashes(b.name):
            problems.append(f"{b.name}: {MANIFEST} source hashes are stale (run build.py)")
        if entry["wasm"]["sha256"] != sha256(b.wasm):
            problems.append(f"{b.name}: {MANIFEST} wasm hash differs from a rebuild (run build.py)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output directory (default: %(default)s)")
    parser.add_argument("--check", action="store_true",
                        help="rebuild into a temp dir and compare with the committed files")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2,
                        help="parallel compiler processes (default: %(default)s)")
    parser.add_argument("--no-lint", dest="lint", action="store_false",
                        help="skip the extra unoptimized build that looks for broken virtual stubs")
    args = parser.parse_args(argv)
    try:
        require_tools()
        ensure_node_modules()
        if args.check:
            with tempfile.TemporaryDirectory(prefix="wasmdesk-plugins-") as tmp:
                built = build_all(Path(tmp), max(1, args.jobs), args.lint)
                problems = check(built)
            if problems:
                print("CHECK FAILED: the committed plugins do not match their sources:", file=sys.stderr)
                for problem in problems:
                    print(f"  - {problem}", file=sys.stderr)
                return 1
            print(f"check OK: {len(built)} plugins rebuilt byte-for-byte identical to the committed .wasm")
            return 0
        out_dir = args.out.resolve()
        built = build_all(out_dir, max(1, args.jobs), args.lint)
        manifest = manifest_for(built)
        (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        print(f"wrote {out_dir / MANIFEST}")
        return 0
    except BuildError as exc:
        print(f"build.py: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
