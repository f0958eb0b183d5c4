"""`wasmdesk` with no arguments, as the README runs it: a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gui.launcher import no_display_reason
from host.proxy.config import load_config

WASMDESK = Path(sys.executable).parent / "wasmdesk"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.pop("QT_QPA_PLATFORM", None)
    env["WASMDESK_WORKSPACE"] = str(tmp_path / "ws" / "workspace.yaml")
    env["WASMDESK_CACHE_DIR"] = os.environ.get("WASMDESK_CACHE_DIR", str(tmp_path / "cache"))
    env.update(extra)
    return env


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="display detection is Linux's")
def test_without_a_display_it_says_why_and_what_to_run_instead(tmp_path):
    out = subprocess.run([str(WASMDESK)], capture_output=True, text=True, timeout=60,
                         env=_env(tmp_path))
    assert out.returncode == 2
    assert "no display" in out.stderr and "wasmdesk serve" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "ws" / "workspace.yaml").exists()  # nothing was started


def test_no_display_reason_follows_the_environment():
    if not sys.platform.startswith("linux"):
        assert no_display_reason({}) is None
        return
    assert no_display_reason({}) is not None
    assert no_display_reason({"DISPLAY": ":0"}) is None
    assert no_display_reason({"WAYLAND_DISPLAY": "wayland-0"}) is None
    assert no_display_reason({"QT_QPA_PLATFORM": "offscreen"}) is None


@pytest.mark.timeout(90)
def test_the_window_opens_on_the_demo_and_closes_cleanly(tmp_path):
    out = subprocess.run(
        [str(WASMDESK)], capture_output=True, text=True, timeout=80,
        env=_env(tmp_path, QT_QPA_PLATFORM="offscreen", WASMDESK_QUIT_AFTER_MS="3000"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "Fatal" not in out.stderr
    # closing saved the workspace: the demo chain, in the format `wasmdesk serve` reads
    config = load_config(tmp_path / "ws" / "workspace.yaml")
    names = {p.name for p in config.plugins}
    assert {"auth-token", "path-counter", "add-header", "body-rewrite"} <= names


def test_desktop_entry_installs_and_uninstalls_for_the_user(tmp_path):
    script = Path(__file__).resolve().parents[2] / "packaging" / "install-desktop-entry.sh"
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path))
    out = subprocess.run(["sh", str(script)], capture_output=True, text=True, env=env,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    entry = (tmp_path / "applications" / "wasmdesk.desktop").read_text()
    assert entry.startswith("[Desktop Entry]\n")
    fields = dict(line.split("=", 1) for line in entry.splitlines()[1:] if "=" in line)
    assert fields["Type"] == "Application" and fields["Terminal"] == "false"
    assert fields["Exec"] == f'"{script.parents[1]}/.venv/bin/wasmdesk"'
    assert Path(fields["Icon"]).read_text().lstrip().startswith("<svg")
    out = subprocess.run(["sh", str(script), "--uninstall"], capture_output=True, text=True,
                         env=env, timeout=30)
    assert out.returncode == 0
    assert not (tmp_path / "applications" / "wasmdesk.desktop").exists()
