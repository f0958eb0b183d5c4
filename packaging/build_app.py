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
    "PySide6.QtQml",
    "PySide6.QtQuick",
    "PySide6.QtQuickWidgets",
    "PySide6.QtNetwork",
    "PySide6.QtSql",
    "PySide6.QtPdf",
    "PySide6.QtDesigner",
    "PySide6.QtHelp",
    "PySide6.QtXml",
    "PySide6.QtConcurrent",
    "tkinter",
    "matplotlib",
    "IPython",
    "pytest",
    "mypy",
    "ruff",
    "ziglang",
    "PyInstaller",
)
# pyqtgraph imports these through its Qt shim (importlib), which the analysis misses;
# the list is what a running window has in sys.modules.
_QT_MODULES = (
    "PySide6.QtCore",
    "PySide6.QtGui",
    "PySide6.QtWidgets",
    "PySide6.QtSvg",
    "PySide6.QtOpenGL",
    "PySide6.QtOpenGLWidgets",
    "PySide6.QtTest",
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
        "--name",
        "wasmdesk",
        "--onedir",
        "--noconfirm",
        "--clean",
        "--log-level",
        "WARN",
        "--distpath",
        str(dist),
        "--workpath",
        str(work),
        "--specpath",
        str(work),
        "--paths",
        str(ROOT),
        "--collect-submodules",
        "uvloop",
        "--collect-submodules",
        "host",
        "--collect-submodules",
        "gui",
        "--hidden-import",
        "platformdirs",
        "--collect-data",
        "pyqtgraph",
    ]
    for mod in _QT_MODULES:
        args += ["--hidden-import", mod]
    for mod in _EXCLUDES:
        args += ["--exclude-module", mod]
    for src, dest in _resources():
        args += ["--add-data", f"{src}{os.pathsep}{dest}"]
    # wasmtime-py loads its native library with ctypes from <package>/<platform>/, which
    # PyInstaller's analysis does not see: add it where wasmtime looks.
    import wasmtime

    pkg = Path(wasmtime.__file__).parent
    for lib in pkg.rglob("_libwasmtime.*"):
        args += ["--add-binary", f"{lib}{os.pathsep}{lib.parent.relative_to(pkg.parent)}"]
    return args


def build(dist: Path, work: Path) -> tuple[Path, float, int]:
    """Build; returns the bundle folder, the build time (s) and its size (bytes)."""
    import PyInstaller.__main__

    start = time.monotonic()
    PyInstaller.__main__.run(pyinstaller_args(dist, work))
    elapsed = time.monotonic() - start
    folder = dist / "wasmdesk"
    size = sum(f.lstat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())
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
