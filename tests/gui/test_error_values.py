"""The window decides and shows from a plugin error's fields (issue 8: no parsing of
message text in the GUI): the retry editor opens for a configure error and only for one,
whatever the message says; a failed reload shows the plugin's own log lines."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from gui.json_schema import UNKNOWN_FIELD_KEYWORDS, validate
from gui.main_window import MainWindow
from gui.workspace import Workspace
from host.proxy.errors import ErrorKind, PluginError
from host.resources import demo_plugin
from tests.gui.fakes import FakeEngineService

GUI = Path(__file__).resolve().parents[2] / "gui"


@pytest.fixture
def window(qtbot, fake_service: FakeEngineService, tmp_path: Path) -> MainWindow:
    ws = Workspace.at(tmp_path / "ws.yaml")
    ws.load()
    w = MainWindow(fake_service, ws)
    qtbot.addWidget(w)
    w.show()
    fake_service.with_plugin_specs()
    fake_service.started.emit()
    fake_service.plugins_changed.emit(fake_service.plugins)
    return w


def _load(window: MainWindow, tmp_path: Path) -> str:
    module = tmp_path / "my_plugin.wasm"
    shutil.copy(demo_plugin("add_header"), module)
    assert window.load_plugin_file(module)
    assert window._loading is not None
    return window._loading.name


def test_only_a_configure_error_opens_the_config_editor(
    window: MainWindow, fake_service: FakeEngineService, tmp_path: Path
) -> None:
    name = _load(window, tmp_path)
    # a start-up failure whose text mentions "configure": still not a configure error
    # (the window used to look for that word in the message)
    fake_service.config_refused.emit(
        [PluginError(ErrorKind.START, name, "failed before configure", state="START_FAILED")]
    )
    assert window._retry is None
    assert f"{name}: start failed: failed before configure" in window.last_error
    assert "Nothing was changed" in window.last_error

    name = _load(window, tmp_path)
    # a configure error whose text does not say so, and another plugin's error first
    log = ('config_parse: missing required field "name"',)
    fake_service.config_refused.emit(
        [
            PluginError(ErrorKind.FETCH, "someone-else", "cannot read x.wasm"),
            PluginError(ErrorKind.CONFIGURE, name, "returned false", log=log),
        ]
    )
    dlg = window._retry
    assert dlg is not None and dlg.isVisible()
    text = dlg.error_label.text()
    assert "configure failed: returned false" in text
    assert log[0] in text and "someone-else" not in text


def test_a_failed_reload_shows_the_error_with_the_plugins_log(
    window: MainWindow, fake_service: FakeEngineService
) -> None:
    err = PluginError(
        ErrorKind.CONFIGURE,
        "add-header",
        "proxy_on_configure returned false",
        log=("first line", "second line"),
        state="CONFIGURE_FAILED",
        reason="configure_failed",
    )
    fake_service.plugin_reloaded.emit("add-header", err)
    assert window.last_error.splitlines() == [
        "configure failed: proxy_on_configure returned false (CONFIGURE_FAILED, configure_failed)",
        "The plugin's log:",
        "  first line",
        "  second line",
    ]
    fake_service.plugin_reloaded.emit("add-header", None)
    assert window.statusBar().currentMessage() == "add-header reloaded"


def test_no_gui_module_reads_an_engine_message_back() -> None:
    """The markers the engine once composed for the GUI to split: none is read in gui/."""
    markers = re.compile(r"\(plugin log: |startswith\(f\"plugin |\.split\(\": \", 1\)")
    found = [
        f"{p.name}:{i}"
        for p in sorted(GUI.glob("*.py"))
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if markers.search(line)
    ]
    assert found == []


def test_schema_issues_say_which_keyword_failed() -> None:
    """The form decides from ``SchemaIssue.keyword`` (a type error hides its field's other
    issues; an unknown field sends the user to the YAML tab), not from the words."""
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1}},
        "additionalProperties": False,
    }
    issues = validate(schema, {"n": "one", "extra": 1})
    assert sorted((i.where, i.keyword) for i in issues) == [
        ("extra", "additionalProperties"),
        ("n", "type"),
    ]
    assert {i.keyword for i in validate(schema, {"n": 0})} == {"minimum"}
    assert "additionalProperties" in UNKNOWN_FIELD_KEYWORDS
