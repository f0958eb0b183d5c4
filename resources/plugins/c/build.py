#!/usr/bin/env python3
"""Build the C conformance plugins (SDK emulations) with zig's clang from PyPI.

Every ``<name>.c`` listed in ``PLUGINS`` is compiled with ``python -m ziglang cc`` (package
``ziglang==0.17.1``) for ``wasm32-wasi`` into ``<out>/<name>.wasm``, and ``<out>/MANIFEST.json``
records the sha256 of every input (the ``.c`` file and the headers it includes), of every
output, the exact flags and the zig version. The output is byte-for-byte reproducible: no debug
info, no name section, nothing path- or time-dependent ends up in the module.

Usage::

    python resources/plugins/c/build.py            # rebuild into resources/plugins/c/
    python resources/plugins/c/build.py --out DIR  # build elsewhere (MANIFEST.json goes there too)
    python resources/plugins/c/build.py --check    # rebuild into a temp dir and compare with the
                                                   # committed .wasm files and MANIFEST.json;
                                                   # exit status 1 on any difference

Needs ``ziglang`` importable by the running interpreter (``pip install ziglang==0.17.1``);
stdlib only otherwise. The first build compiles zig's libc for wasm32-wasi into zig's global
cache (tens of seconds); later builds take well under a second per plugin.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
MANIFEST = "MANIFEST.json"
ZIG_VERSION = "0.17.1"  # the pinned ziglang wheel; other versions produce other bytes

# Flags every plugin gets. Exports and imports are spelled in the sources with
# export_name / import_module attributes, so no -rdynamic, --export or --import-symbols:
# the module exports exactly what the emulated SDK would (e.g. no `malloc` for Rust).
COMMON_FLAGS = (
    "-target", "wasm32-wasi",
    "-O2",
    "-std=c11",
    "-Wall", "-Wextra", "-Werror",
    "-Wl,--strip-debug",  # drops DWARF (it holds absolute paths) and the name section
)

# name -> (WASI execution model, ABI marker the source exports, what it emulates)
PLUGINS: dict[str, tuple[str, str, str]] = {
    "rust_strict": ("reactor", "0.2.1", "Rust SDK (proxy-wasm crate) on wasm32-wasip1"),
    "tinygo_like": ("command", "0.2.0", "TinyGo -target=wasi with the Go SDK"),
    "cpp_2020_like": (
        "reactor",
        "0.1.0",
        "C++ SDK of 2020: 0.1.0 marker with 3-parameter headers callbacks, root id factories",
    ),
    "grpc_client": (
        "reactor",
        "0.2.1",
        "an HTTP filter making gRPC callouts (unary, stream, cancel) for the transport tests",
    ),
    "tcp_filter": (
        "reactor",
        "0.2.1",
        "a network (TCP) filter: transforms, counts, closes on a marker, pauses until a tick",
    ),
}

_INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)


class BuildError(Exception):
    pass


@dataclass(frozen=True)
class Built:
    name: str
    seconds: float
    wasm: Path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flags_for(name: str) -> list[str]:
    model = PLUGINS[name][0]
    return [*COMMON_FLAGS, f"-mexec-model={model}"]


def zig_command() -> list[str]:
    return [sys.executable, "-m", "ziglang"]


def zig_version() -> str:
    try:
        proc = subprocess.run(
            [*zig_command(), "version"], capture_output=True, text=True, check=False
        )
    except OSError as e:  # pragma: no cover - interpreter vanished
        raise BuildError(f"cannot run zig: {e}") from e
    if proc.returncode != 0:
        raise BuildError(
            "`python -m ziglang version` failed; install the pinned compiler with "
            f"`pip install ziglang=={ZIG_VERSION}`\n{proc.stderr.strip()}"
        )
    return proc.stdout.strip()


def sources_of(name: str) -> list[Path]:
    """The .c file and every local header it includes (recursively), sorted by name."""
    seen: dict[str, Path] = {}
    todo = [HERE / f"{name}.c"]
    while todo:
        path = todo.pop()
        if path.name in seen:
            continue
        if not path.is_file():
            raise BuildError(f"missing source {path}")
        seen[path.name] = path
        for inc in _INCLUDE_RE.findall(path.read_text(encoding="utf-8")):
            todo.append(HERE / inc)
    return [seen[k] for k in sorted(seen)]


def build_one(name: str, out: Path) -> Built:
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{name}.wasm"
    tmp = out / f".{name}.wasm.partial"
    # Run in this directory with a relative source name; the output path does not reach
    # the module (verified: identical bytes from any cwd/out dir with these flags).
    cmd = [*zig_command(), "cc", *flags_for(name), f"{name}.c", "-o", str(tmp)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BuildError(f"{name}: zig cc failed ({proc.returncode}):\n{proc.stderr.strip()}")
    target.write_bytes(tmp.read_bytes())  # plain 0644 file, not the linker's 0755
    tmp.unlink()
    return Built(name, dt, target)


def manifest_for(built: list[Built], version: str) -> dict[str, object]:
    plugins: dict[str, object] = {}
    for b in sorted(built, key=lambda b: b.name):
        model, abi, emulates = PLUGINS[b.name]
        plugins[b.name] = {
            "emulates": emulates,
            "abi": abi,
            "exec_model": model,
            "flags": flags_for(b.name),
            "sources": {p.name: sha256(p) for p in sources_of(b.name)},
            "wasm": {"file": b.wasm.name, "sha256": sha256(b.wasm), "size": b.wasm.stat().st_size},
        }
    return {
        "comment": "Generated by resources/plugins/c/build.py; do not edit.",
        "toolchain": {
            "ziglang": ZIG_VERSION,
            "zig_version": version,
            "compiler": "python -m ziglang cc",
        },
        "plugins": plugins,
    }


def write_manifest(data: dict[str, object], out: Path) -> Path:
    path = out / MANIFEST
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def build_all(out: Path, names: list[str] | None = None) -> tuple[list[Built], float]:
    version = zig_version()
    if version != ZIG_VERSION:
        raise BuildError(
            f"zig {version} found, but the committed modules are built with {ZIG_VERSION}: "
            f"`pip install ziglang=={ZIG_VERSION}`"
        )
    t0 = time.perf_counter()
    built = [build_one(n, out) for n in (names or sorted(PLUGINS))]
    total = time.perf_counter() - t0
    write_manifest(manifest_for(built, version), out)
    return built, total


def check() -> int:
    """Rebuild into a temp dir; compare bytes and manifest with what is committed."""
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="wasmdesk-c-plugins-") as tmp:
        out = Path(tmp)
        built, total = build_all(out)
        for b in built:
            committed = HERE / b.wasm.name
            if not committed.is_file():
                problems.append(f"{committed.name}: missing (run build.py)")
            elif committed.read_bytes() != b.wasm.read_bytes():
                problems.append(
                    f"{committed.name}: committed module differs from a fresh build "
                    f"({sha256(committed)[:12]} vs {sha256(b.wasm)[:12]})"
                )
        fresh = (out / MANIFEST).read_text(encoding="utf-8")
        committed_manifest = HERE / MANIFEST
        if not committed_manifest.is_file():
            problems.append(f"{MANIFEST}: missing")
        elif committed_manifest.read_text(encoding="utf-8") != fresh:
            problems.append(f"{MANIFEST}: differs from a fresh build's manifest")
    for p in problems:
        print(f"MISMATCH {p}", file=sys.stderr)
    print(f"checked {len(built)} plugins in {total:.2f}s: "
          f"{'OK, byte-identical' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=HERE, help="output directory (default: here)")
    ap.add_argument("--check", action="store_true",
                    help="rebuild into a temp dir and compare with the committed files")
    ap.add_argument("names", nargs="*",
                    help=f"plugins to build (default: all of {sorted(PLUGINS)})")
    args = ap.parse_args(argv)
    try:
        if args.check:
            return check()
        unknown = [n for n in args.names if n not in PLUGINS]
        if unknown:
            ap.error(f"unknown plugin(s) {unknown}; known: {sorted(PLUGINS)}")
        if args.names and args.out.resolve() == HERE:
            ap.error("building a subset here would drop the others from MANIFEST.json; "
                     "use --out DIR for a subset")
        built, total = build_all(args.out, args.names or None)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for b in built:
        print(f"built {b.wasm} ({b.wasm.stat().st_size} bytes) in {b.seconds:.2f}s")
    print(f"total {total:.2f}s; manifest {args.out / MANIFEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
