"""The workspace: saved atomically, restored at start, a file that fails to load is
renamed aside (never lost) and the app starts on the demo, saying so."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from gui.workspace import Workspace, default_config_path
from host.proxy.config import load_config, with_changes


def test_missing_workspace_starts_on_the_demo_and_saves_a_loadable_file(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path / "sub" / "workspace.yaml")
    config = ws.load()
    assert ws.writable and "default demo" in ws.message
    assert [p.name for p in config.plugins] == [
        p.name for p in load_config(default_config_path()).plugins
    ]
    changed = dataclasses.replace(
        config,
        plugins=tuple(
            with_changes(p, mode="disabled") if p.name == "add-header" else p
            for p in config.plugins
        ),
    )
    assert ws.save(changed)
    assert not list(ws.path.parent.glob(".*.tmp"))  # the temporary file was renamed
    again = Workspace.at(ws.path)
    restored = again.load()
    assert "restored" in again.message
    by_name = {p.name: p for p in restored.plugins}
    assert by_name["add-header"].mode == "disabled"
    assert by_name["auth-token"].mode == "log-only"
    # module paths were written absolute: the file works wherever it lives
    assert all(Path(p.url).is_absolute() for p in restored.plugins)
    assert Path(by_name["add-header"].location).is_file()


def test_invalid_workspace_is_renamed_aside_and_the_path_saved_again(tmp_path: Path) -> None:
    path = tmp_path / "workspace.yaml"
    path.write_text("kind: WasmPlugin\nspec: [not, a, mapping\n")
    before = path.read_bytes()
    ws = Workspace.at(path)
    config = ws.load()
    assert ws.set_aside is not None and ws.set_aside.parent == tmp_path
    assert ws.set_aside.name.startswith("workspace.yaml.bad-")
    assert ws.set_aside.read_bytes() == before  # nothing lost
    assert not path.exists()
    assert "renamed to workspace.yaml.bad-" in ws.message and str(path) in ws.message
    assert f"{path}:3" in ws.message  # the first problem, with file:line
    assert config.plugins  # the demo runs instead
    assert ws.writable and ws.save(config)
    assert load_config(path).plugins  # a good workspace again
    # a second bad file in the same second does not overwrite the first one set aside
    path.write_text("a: &a\n  <<: *a\n")
    again = Workspace.at(path)
    again.load()
    assert again.set_aside is not None and again.set_aside != ws.set_aside
    assert ws.set_aside.read_bytes() == before


@pytest.mark.parametrize(
    "text",
    ["a: &a\n  <<: *a\n", "x: " + "[" * 5000 + "]" * 5000 + "\n", "a: \x00\n"],
    ids=["recursive-merge", "deep-nesting", "nul"],
)
def test_the_app_starts_on_the_demo_when_the_workspace_fails_to_load(
    qtbot: Any, tmp_path: Path, text: str
) -> None:
    """The app used to crash at every start on such a workspace (RecursionError)."""
    from gui.app import build

    path = tmp_path / "workspace.yaml"
    path.write_text(text)
    window, service = build(Workspace.at(path), listen=("127.0.0.1", 0), admin=("127.0.0.1", 0))
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: "Workspace set aside" in _box_titles(window), timeout=5000)
    assert "renamed to workspace.yaml.bad-" in window.last_error
    assert "running the default demo" in window.last_error
    (aside,) = tmp_path.glob("workspace.yaml.bad-*")
    assert aside.read_text() == text
    names = [p.name for p in service.config.plugins]
    assert names == [p.name for p in load_config(default_config_path()).plugins]
    window.close()


def _box_titles(window: Any) -> list[str]:
    from PySide6.QtWidgets import QMessageBox

    return [b.windowTitle() for b in window.findChildren(QMessageBox)]


def test_export_writes_wasmplugin_yaml_that_imports_back(tmp_path: Path) -> None:
    config = load_config(default_config_path())
    out = tmp_path / "export" / "plugins.yaml"
    Workspace.at(tmp_path / "ws.yaml").export_to(config, out)
    text = out.read_text()
    assert "kind: WasmPlugin" in text and "apiVersion: extensions.istio.io/v1alpha1" in text
    assert [p.name for p in load_config(out).plugins] == [p.name for p in config.plugins]
