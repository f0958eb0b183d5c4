"""The user's data and cache live in the platform's standard directories (platformdirs);
WASMDESK_WORKSPACE and WASMDESK_CACHE_DIR still override."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import pytest

from gui.workspace import default_workspace_path
from host.cli_oci import download_dir
from host.wasm.runtime import _default_cache_dir, user_cache_root


def test_workspace_in_the_platform_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WASMDESK_WORKSPACE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    expected = platformdirs.user_data_path("wasmdesk", appauthor=False) / "workspace.yaml"
    assert default_workspace_path() == expected == tmp_path / "data" / "wasmdesk" / "workspace.yaml"
    monkeypatch.setenv("WASMDESK_WORKSPACE", str(tmp_path / "w.yaml"))
    assert default_workspace_path() == tmp_path / "w.yaml"


def test_caches_in_the_platform_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WASMDESK_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "cache" / "wasmdesk"
    assert user_cache_root() == root
    assert _default_cache_dir() == root / "modules"
    assert download_dir() == root / "downloads"
    monkeypatch.setenv("WASMDESK_CACHE_DIR", str(tmp_path / "mine"))
    assert _default_cache_dir() == tmp_path / "mine"
    assert download_dir() == tmp_path / "mine" / "downloads"
