"""The engine (``host``) never imports Qt or the GUI: checked on the real import graph."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("PySide6", "shiboken6", "pyqtgraph", "gui")


def test_host_package_imports_no_qt_or_gui():
    code = (
        "import sys, pkgutil, importlib, host\n"
        "for m in pkgutil.walk_packages(host.__path__, 'host.'):\n"
        "    importlib.import_module(m.name)\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", f"host imported: {out.stdout.strip()}"


def test_host_sources_do_not_mention_qt_imports():
    offenders = []
    for path in (ROOT / "host").rglob("*.py"):
        for line in path.read_text().splitlines():
            s = line.strip()
            if s.startswith(("import ", "from ")) and any(
                s.split()[1].split(".")[0] == f for f in FORBIDDEN
            ):
                offenders.append(f"{path.relative_to(ROOT)}: {s}")
    assert offenders == []
