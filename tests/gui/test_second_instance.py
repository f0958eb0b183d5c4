"""A second Wasmdesk (issue 12 item 9): it picks free ports and says so, and it does not
write the workspace another live instance holds (it runs read-only and says so); a lock
left by a process that is gone is taken over. Real processes, real sockets."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gui.workspace import Workspace


def _holder(ws_path: Path) -> subprocess.Popen[str]:
    """Another process holding the workspace lock until its stdin closes."""
    code = (
        "import sys; from gui.workspace import Workspace; "
        f"w = Workspace.at({str(ws_path)!r}); w.load(); print(w.lock(), flush=True); "
        "sys.stdin.read(); w.unlock()"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(root)),
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "True"
    return proc


def test_a_workspace_held_by_a_live_process_opens_read_only(tmp_path: Path) -> None:
    path = tmp_path / "workspace.yaml"
    proc = _holder(path)
    try:
        ws = Workspace.at(path)
        config = ws.load()
        assert ws.lock() is False
        assert ws.locked_by == proc.pid
        assert f"pid {proc.pid}" in ws.lock_note and "read-only" in ws.lock_note
        assert ws.save(config) is False and not path.exists()  # nothing written
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
    assert not ws.lock_path.exists()  # the holder released it on its way out


def test_a_stale_lock_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "workspace.yaml"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(10)
    ws = Workspace.at(path)
    ws.lock_path.write_text(f"{dead.pid}\n")
    config = ws.load()
    assert ws.lock() is True
    assert "stale" in ws.lock_note and str(dead.pid) in ws.lock_note
    assert ws.lock_path.read_text().strip() == str(os.getpid())
    assert ws.save(config) is True and path.is_file()
    ws.unlock()
    assert not ws.lock_path.exists()


@pytest.mark.slow
def test_a_second_instance_picks_free_ports_and_says_so(qtbot, app_window, tmp_path) -> None:
    from gui.app import build

    first, first_service = app_window
    lh, lp = first_service.listen_address
    ah, ap = first_service.admin_address
    # the second one asks for the ports the first one has, on the same workspace
    window, service = build(
        Workspace.at(tmp_path / "workspace.yaml"), listen=(lh, lp), admin=(ah, ap)
    )
    qtbot.addWidget(window)
    window.show()
    try:
        with qtbot.waitSignal(service.started, timeout=10_000):
            service.start()
        assert service.listen_address[1] not in (0, lp)
        assert service.admin_address[1] not in (0, ap)
        message = window.statusBar().currentMessage()
        # both port notes and the workspace note, in one message
        assert f"proxy port {lp} is taken" in message
        assert f"admin port {ap} is taken" in message
        assert "read-only" in message and f"pid {os.getpid()}" in message
        assert "read-only" in window.windowTitle()
        assert "read-only" not in first.windowTitle()
        before = (
            (tmp_path / "workspace.yaml").stat().st_mtime_ns
            if (tmp_path / "workspace.yaml").exists()
            else None
        )
        window.save_workspace()
        time.sleep(0.01)
        after = (
            (tmp_path / "workspace.yaml").stat().st_mtime_ns
            if (tmp_path / "workspace.yaml").exists()
            else None
        )
        assert before == after  # the second one wrote nothing
        assert "another Wasmdesk" in window.statusBar().currentMessage()
    finally:
        window.close()
    assert first.workspace.lock_path.read_text().strip() == str(os.getpid())
