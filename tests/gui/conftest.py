"""GUI tests run offscreen with pytest-qt; a fake engine service for widget tests."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYTEST_QT_API", "pyside6")

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gui.fakes import FakeEngineService


@pytest.fixture
def fake_service(qtbot):  # type: ignore[no-untyped-def]
    svc = FakeEngineService()
    yield svc


@pytest.fixture(autouse=True)
def _isolated_workspace(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    # no test may read or write the user's real workspace
    monkeypatch.setenv("WASMDESK_WORKSPACE", str(tmp_path / "workspace" / "workspace.yaml"))
    # modules downloaded from a URL are cached by sha256: keep them out of ~/.cache
    monkeypatch.setenv("WASMDESK_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def app_window(qtbot, tmp_path: Path) -> Iterator[tuple[Any, Any]]:  # type: ignore[no-untyped-def]
    """The real app: engine thread, proxy and demo upstream on ephemeral loopback ports,
    a throwaway workspace. Closing it must stop the engine thread."""
    from gui.app import build
    from gui.workspace import Workspace

    window, service = build(
        Workspace.at(tmp_path / "workspace.yaml"),
        listen=("127.0.0.1", 0),
        admin=("127.0.0.1", 0),
    )
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(service.started, timeout=10_000):
        service.start()
    yield window, service
    window.close()
    assert service.thread is not None
    service.thread.join(5)
    assert not service.thread.is_alive()
