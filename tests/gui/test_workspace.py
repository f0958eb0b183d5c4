"""The workspace: saved atomically, restored at start, an invalid file is kept."""

from __future__ import annotations

import dataclasses
from pathlib import Path

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


def test_invalid_workspace_is_kept_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "workspace.yaml"
    path.write_text("kind: WasmPlugin\nspec: [not, a, mapping\n")
    before = path.read_bytes()
    ws = Workspace.at(path)
    config = ws.load()
    assert not ws.writable
    assert "invalid" in ws.message and str(path) in ws.message
    assert config.plugins  # the demo runs instead
    assert ws.save(config) is False
    assert path.read_bytes() == before


def test_export_writes_wasmplugin_yaml_that_imports_back(tmp_path: Path) -> None:
    config = load_config(default_config_path())
    out = tmp_path / "export" / "plugins.yaml"
    Workspace.at(tmp_path / "ws.yaml").export_to(config, out)
    text = out.read_text()
    assert "kind: WasmPlugin" in text and "apiVersion: extensions.istio.io/v1alpha1" in text
    assert [p.name for p in load_config(out).plugins] == [p.name for p in config.plugins]
