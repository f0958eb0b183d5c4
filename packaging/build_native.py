"""Compile the data path with mypyc, and the C crossing (``host/wasm/_crossing.c``),
into ``.native/`` (see ``host/_native.py``).

Run by ``packaging/bootstrap.sh``; quick when the stamp already matches the sources and
the interpreter. Needs mypy (the test extras install it), setuptools and a C compiler
with this Python's headers; without them it says why and exits 0: Wasmdesk then runs
the same modules as plain Python.

The sources are compiled from a scratch copy of ``host/`` (so no build file ever lands
beside them), and only the compiled extension modules and mypyc's shared library are
kept, in ``.native/lib/<package path>/``, with ``.native/stamp.json``.

Usage: python packaging/build_native.py [--force] [--check]
  --check  exit 1 unless a matching build is in place (prints its state)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from host import _native  # noqa: E402

# setuptools' build_ext for the C files named as arguments, in place (run in the
# scratch copy): module name = path without ".c", dots for slashes
_BUILD_EXTENSIONS = """
import sys
from setuptools import Extension, setup
setup(
    name="wasmdesk-native",
    ext_modules=[Extension(p[:-2].replace("/", "."), [p]) for p in sys.argv[1:]],
    script_args=["build_ext", "--inplace", "--quiet"],
)
"""


def build(force: bool = False) -> str:
    """Build when needed; returns what the process would now run (``_native.state``)."""
    os.environ.pop("WASMDESK_PURE", None)
    if not force and _native.state(ROOT) == "compiled":
        return "compiled (up to date)"
    why = _missing_tools()
    if why:
        return f"pure: {why}"
    out = _native.native_dir(ROOT)
    digest = _native.sources_digest(ROOT)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wasmdesk-mypyc-") as tmp:
        work = Path(tmp)
        shutil.copytree(ROOT / "host", work / "host", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(ROOT / "pyproject.toml", work / "pyproject.toml")  # mypy's settings
        r = subprocess.run(
            [sys.executable, "-m", "mypyc", *_native.NATIVE_MODULES],
            cwd=work,
            capture_output=True,
            text=True,
            env=dict(os.environ, MYPYC_OPT_LEVEL="3"),
            timeout=1800,
        )
        if r.returncode != 0:
            tail = (r.stdout + r.stderr).strip().splitlines()[-15:]
            return "pure: mypyc failed:\n  " + "\n  ".join(tail)
        r = subprocess.run(
            [sys.executable, "-c", _BUILD_EXTENSIONS, *_native.NATIVE_EXTENSIONS],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if r.returncode != 0:
            tail = (r.stdout + r.stderr).strip().splitlines()[-15:]
            return "pure: the C extensions failed to build:\n  " + "\n  ".join(tail)
        lib = out / "lib"
        if out.exists():
            shutil.rmtree(out)
        lib.mkdir(parents=True)
        suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        for rel in (*_native.NATIVE_MODULES, *_native.NATIVE_EXTENSIONS):
            so = work / (rel.rsplit(".", 1)[0] + suffix)  # a .py's or a .c's module
            if not so.exists():
                return f"pure: the build wrote no {so.name}"
            dest = lib / so.relative_to(work)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(so, dest)
        for shared in work.glob(f"*__mypyc{suffix}"):
            shutil.copy2(shared, lib / shared.name)
    (out / "stamp.json").write_text(
        json.dumps(
            {
                "sources": digest,
                "interpreter": _native.interpreter_tag(),
                "modules": list(_native.NATIVE_MODULES),
                "seconds": round(time.monotonic() - started, 1),
            },
            indent=1,
        )
    )
    return _native.state(ROOT)


def _missing_tools() -> str:
    try:
        import mypyc  # noqa: F401
        import setuptools  # noqa: F401
    except ImportError as e:
        return f"{e.name} is not installed"
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if not shutil.which(cc):
        return f"no C compiler ({cc})"
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").exists():
        return f"no Python headers ({include}/Python.h)"
    return ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="rebuild even when up to date")
    ap.add_argument("--check", action="store_true", help="only say whether a build matches")
    args = ap.parse_args()
    if args.check:
        st = _native.state(ROOT)
        print(st)
        return 0 if st == "compiled" else 1
    print("data path:", build(args.force))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
