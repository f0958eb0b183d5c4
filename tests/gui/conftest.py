"""GUI tests run offscreen with pytest-qt; a fake engine service for widget tests."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYTEST_QT_API", "pyside6")

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
