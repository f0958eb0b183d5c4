"""The code stays as the style guide asks: ruff-clean, and mypy --strict on ``host``."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (it is in the test extras)")
    return found


def test_ruff_finds_nothing_in_host_gui_and_bench():
    out = subprocess.run([_tool("ruff"), "check", "host", "gui", "bench"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.timeout(300)
def test_mypy_strict_passes_on_host():
    out = subprocess.run([_tool("mypy"), "host"], cwd=ROOT, capture_output=True, text=True,
                         timeout=290)
    assert out.returncode == 0, out.stdout + out.stderr
