"""Build the self-contained desktop app: ``python packaging/build_app.py [--dist DIR]``.

One folder (PyInstaller ``--onedir``) holding the app, Python, Qt (PySide6), wasmtime's
native library, uvloop/httptools, the demo plugins and the default config: copy
``dist/wasmdesk/`` anywhere and run ``dist/wasmdesk/wasmdesk`` (no virtual environment, no
checkout). The bundle finds its resources through ``host.resources`` (``sys._MEIPASS``).
Prints the bundle's size and the build time at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Only what the app uses from Qt: PySide6's hook would otherwise pull in every module
# pyqtgraph might import.
_EXCLUDES = (
    "PySide6.QtQml", "PySide6.QtQuick", "PySide6.QtQuickWidgets", "PySide6.QtNetwork",
    "PySide6.QtSql", "PySide6.QtTest", "PySide6.QtOpenGLWidgets", "PySide6.QtPdf",
    "PySide6.QtDesigner", "PySide6.QtHelp", "PySide6.QtXml", "PySide6.QtConcurrent",
    "tkinter", "matplotlib", "IPython", "pytest", "mypy", "ruff", "ziglang", "PyInstaller",
)


def _resources() -> list[tuple[Path, str]]:
    out: list[tuple[Path, str]] = []
    plugins = ROOT / "resources" / "plugins"
    for p in sorted(plugins.iterdir()):
        if p.suffix == ".wasm" or p.name.endswith(".schema.json") or p.name == "MANIFEST.json":
            out.append((p, "resources/plugins"))
    out.append((ROOT / "resources" / "default" / "wasmdesk.yaml", "resources/default"))
    out.append((ROOT / "resources" / "icons" / "wasmdesk.svg", "resources/icons"))
    return out


def pyinstaller_args(dist: Path, work: Path) -> list[str]:
    args = [
        str(ROOT / "packaging" / "wasmdesk_main.py"),
        "--name", "wasmdesk",
        "--onedir",
        "--noconfirm",
        "--clean",
        "--log-level", "WARN",
        "--distpath", str(dist),
        "--workpath", str(work),
        "--specpath", str(work),
        "--paths", str(ROOT),
        "--collect-binaries", "wasmtime",
        "--collect-data", "wasmtime",
        "--collect-submodules", "uvloop",
        "--collect-submodules", "host",
        "--collect-submodules", "gui",
        "--hidden-import", "platformdirs",
    ]
    for mod in _EXCLUDES:
        args += ["--exclude-module", mod]
    for src, dest in _resources():
        args += ["--add-data", f"{src}{os.pathsep}{dest}"]
    return args


def build(dist: Path, work: Path) -> tuple[Path, float, int]:
    """Build; returns the bundle folder, the build time (s) and its size (bytes)."""
    import PyInstaller.__main__

    start = time.monotonic()
    PyInstaller.__main__.run(pyinstaller_args(dist, work))
    elapsed = time.monotonic() - start
    folder = dist / "wasmdesk"
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return folder, elapsed, size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dist", default=str(ROOT / "dist"), help="output folder (default dist/)")
    p.add_argument("--work", default=str(ROOT / "build" / "pyinstaller"), help="scratch folder")
    a = p.parse_args(argv)
    folder, elapsed, size = build(Path(a.dist), Path(a.work))
    print(f"built {folder}/wasmdesk: {size / 2**20:.0f} MiB in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
