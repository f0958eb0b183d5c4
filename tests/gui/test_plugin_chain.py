"""The plugin chain and the selected plugin's modes, against the fake engine service:
reordering by drag within a phase, loading from a URL, canary key, vmConfig env, and
bad input that must change nothing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from gui.chain_order import MoveRefused, priorities_for_move
from gui.main_window import MainWindow
from gui.plugin_panel import PluginDetailsPanel, PluginListView
from gui.url_dialog import LoadUrlDialog
from gui.workspace import Workspace, default_config_path
from host.proxy.config import EnvVar, effective_order, load_config, new_plugin
from host.proxy.errors import ErrorKind, PluginError
from host.resources import demo_plugin
from tests.gui.fakes import FakeEngineService, plugin_snapshot
from tests.gui.helpers import drop_plugin

SHA = "ab" * 32


def _spec(name: str, phase: str = "UNSPECIFIED_PHASE", priority: int | None = None):
    return new_plugin(name, str(demo_plugin("add_header")), phase=phase, priority=priority)


def _names(specs) -> list[str]:
    return [s.name for s in effective_order(specs)]


# -- priorities for a move ----------------------------------------------------------------------


def test_a_move_changes_only_the_moved_plugin_when_there_is_room() -> None:
    specs = [_spec("a", priority=30), _spec("b", priority=20), _spec("c", priority=10)]
    assert priorities_for_move(specs, "c", 0) == {"c": 40}
    assert priorities_for_move(specs, "a", 1) == {"a": 15}
    assert priorities_for_move(specs, "a", 2) == {"a": 0}
    assert priorities_for_move(specs, "b", 1) == {}  # already there


def test_a_move_renumbers_the_phase_when_priorities_leave_no_gap() -> None:
    specs = [_spec("a", priority=2), _spec("b", priority=1), _spec("c"), _spec("d")]
    changes = priorities_for_move(specs, "d", 2)  # between b and c, both below is unset
    moved = [dataclasses.replace(s, priority=changes.get(s.name, s.priority)) for s in specs]
    assert _names(moved) == ["a", "b", "d", "c"]
    changes = priorities_for_move(specs, "a", 3)  # below two unset plugins: renumber
    moved = [dataclasses.replace(s, priority=changes.get(s.name, s.priority)) for s in specs]
    assert _names(moved) == ["b", "c", "d", "a"]
    assert changes == {"a": 10, "b": 40, "c": 30, "d": 20}


def test_a_move_into_another_phase_is_refused() -> None:
    specs = [_spec("authn", phase="AUTHN"), _spec("a", priority=1), _spec("b")]
    with pytest.raises(MoveRefused, match="authn is in phase AUTHN"):
        priorities_for_move(specs, "authn", 2)
    with pytest.raises(MoveRefused):
        priorities_for_move(specs, "b", 0)


# -- dragging in the list ----------------------------------------------------------------------


def test_dragging_a_row_asks_for_a_new_position_and_leaves_the_rows_alone(qtbot) -> None:
    view = PluginListView()
    qtbot.addWidget(view)
    view.resize(500, 300)
    view.show()
    view.set_plugins([plugin_snapshot(n) for n in ("a", "b", "c")])
    moves: list[tuple[str, int]] = []
    view.plugin_moved.connect(lambda n, i: moves.append((n, i)))
    drop_plugin(view, "c", "a")  # above a
    drop_plugin(view, "a", "c", below=True)  # below c
    drop_plugin(view, "b", "b")  # onto itself: no move
    assert moves == [("c", 0), ("a", 2)]
    assert view.names() == ["a", "b", "c"]  # the engine's next publish reorders


def test_files_dropped_on_the_list_are_handed_on(qtbot, tmp_path: Path) -> None:
    view = PluginListView()
    qtbot.addWidget(view)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(tmp_path / "x.wasm"))])
    got: list = []
    view.files_dropped.connect(got.append)
    ev = QDropEvent(
        QPointF(5, 5),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    view.dropEvent(ev)
    assert got == [[str(tmp_path / "x.wasm")]]


# -- the window against the fake service --------------------------------------------------------


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


def _applied(fake: FakeEngineService):
    return [c[1] for c in fake.calls if c[0] == "apply_config"]


def test_dragging_within_a_phase_applies_new_priorities(
    window: MainWindow, fake_service: FakeEngineService
) -> None:
    # the demo chain: auth-token (AUTHN), path-counter (STATS), add-header (10),
    # body-rewrite (unset), the last two in the unspecified phase
    drop_plugin(window.plugin_list, "body-rewrite", "add-header")
    (config,) = _applied(fake_service)
    prio = {p.name: p.priority for p in config.plugins}
    assert prio["body-rewrite"] == 20 and prio["add-header"] == 10
    assert _names(config.plugins)[2:] == ["body-rewrite", "add-header"]
    assert "New priorities: body-rewrite → 20" in window.statusBar().currentMessage()


def test_dragging_into_another_phase_says_why_and_changes_nothing(
    window: MainWindow, fake_service: FakeEngineService
) -> None:
    drop_plugin(window.plugin_list, "add-header", "auth-token")
    assert _applied(fake_service) == []
    assert "phase" in window.last_error and "add-header" in window.last_error


def test_move_buttons_step_within_the_phase(
    window: MainWindow, fake_service: FakeEngineService
) -> None:
    window.plugin_list.select("body-rewrite")
    window.up_button.click()
    (config,) = _applied(fake_service)
    assert _names(config.plugins)[2:] == ["body-rewrite", "add-header"]
    window.plugin_list.select("path-counter")
    window.up_button.click()  # would leave STATS: refused
    assert len(_applied(fake_service)) == 1


def test_url_dialog_checks_its_fields_before_loading(qtbot) -> None:
    dlg = LoadUrlDialog()
    qtbot.addWidget(dlg)
    assert "Type the module's URL" in dlg.problem()
    dlg.url_edit.setText("ftp://example.com/x.wasm")
    dlg.url_edit.textEdited.emit(dlg.url_edit.text())
    assert "Only http:// and https://" in dlg.error_label.text()
    dlg.url_edit.setText("https://example.com/plugins/add_header.wasm")
    dlg.url_edit.textEdited.emit(dlg.url_edit.text())
    assert dlg.root_edit.text() == ""  # Envoy/Istio's default root id, not the file name
    dlg.sha_edit.setText("1234")
    dlg.sha_edit.textEdited.emit("1234")
    assert "64 hexadecimal digits" in dlg.error_label.text()
    dlg.sha_edit.setText(SHA.upper())
    dlg.sha_edit.textEdited.emit(SHA.upper())
    assert dlg.problem() == ""
    assert dlg.values() == ("https://example.com/plugins/add_header.wasm", SHA, "")
    dlg.root_edit.setText("add header")
    dlg.root_edit.textEdited.emit("add header")
    assert "A root id is empty or letters" in dlg.error_label.text()
    dlg.root_edit.setText("add_header")
    dlg.root_edit.textEdited.emit("add_header")
    assert dlg.values()[2] == "add_header"


def test_loading_from_a_url_asks_the_engine_to_check_it_first(
    window: MainWindow, fake_service: FakeEngineService
) -> None:
    assert window.load_plugin_url("http://127.0.0.1:9/x.wasm", "nope", "x") is False
    assert "64 hexadecimal digits" in window.last_error
    assert fake_service.calls == []
    assert window.load_plugin_url("http://127.0.0.1:9/m/add_header.wasm", SHA, "add_header")
    (config,) = _applied(fake_service)
    new = config.plugins[-1]
    assert (new.name, new.url, new.sha256, new.plugin_name) == (
        "add-header-2",
        "http://127.0.0.1:9/m/add_header.wasm",
        SHA,
        "add_header",
    )
    assert fake_service.checked  # apply_config(..., check_new=True)
    # the engine refused it (download, digest, compile or start-up failed)
    fake_service.config_refused.emit(
        [PluginError(ErrorKind.VERIFY, "add-header-2", "sha256 mismatch for ...")]
    )
    assert "sha256 mismatch" in window.last_error
    assert "Nothing was changed" in window.last_error
    assert window._base_config() is fake_service.config  # no pending change remains


def test_canary_key_controls_emit_random_client_ip_or_a_header(qtbot) -> None:
    panel = PluginDetailsPanel()
    qtbot.addWidget(panel)
    panel.show_plugin(plugin_snapshot("a", canary_key="header:x-user-id"), None)
    assert panel.canary_key_combo.currentData() == "header"
    assert panel.canary_header_edit.text() == "x-user-id"
    got: list = []
    panel.mode_changed.connect(lambda n, kw: got.append(kw))
    i = panel.canary_key_combo.findData("client-ip")
    panel.canary_key_combo.setCurrentIndex(i)
    panel.canary_key_combo.activated.emit(i)
    assert not panel.canary_header_edit.isEnabled()
    i = panel.canary_key_combo.findData("header")
    panel.canary_key_combo.setCurrentIndex(i)
    panel.canary_header_edit.setText("bad header")
    panel.canary_header_edit.editingFinished.emit()
    assert "not a valid header name" in panel.canary_key_error.text()
    panel.canary_header_edit.setText("X-Tenant")
    panel.canary_header_edit.editingFinished.emit()
    assert got == [{"canary_key": "client-ip"}, {"canary_key": "header:x-tenant"}]


def test_env_editor_checks_names_and_applies_through_the_config(
    window: MainWindow, fake_service: FakeEngineService, monkeypatch
) -> None:
    monkeypatch.setenv("WASMDESK_TEST_TOKEN", "from-host")
    window.plugin_list.select("add-header")
    d = window.plugin_details
    d.sections.setCurrentIndex(2)
    d.env_add_button.click()
    d.env_table.item(0, 0).setText("1BAD")
    assert "not a valid variable name" in d.env_status.text()
    assert not d.env_apply_button.isEnabled()
    d.env_table.item(0, 0).setText("GREETING")
    d.env_table.item(0, 2).setText("hello")
    d.env_add_button.click()
    d.env_table.item(1, 0).setText("WASMDESK_TEST_TOKEN")
    d.env_table.cellWidget(1, 1).setCurrentText("HOST")
    assert d.env_apply_button.isEnabled()
    d.env_apply_button.click()
    (config,) = _applied(fake_service)
    spec = next(p for p in config.plugins if p.name == "add-header")
    assert spec.env == (
        EnvVar("GREETING", "INLINE", "hello"),
        EnvVar("WASMDESK_TEST_TOKEN", "HOST", ""),
    )
    assert spec.vm_env == (("GREETING", "hello"), ("WASMDESK_TEST_TOKEN", "from-host"))
    fake_service.config_applied.emit([])
    fake_service.plugins_changed.emit(fake_service.plugins)
    assert "The module sees: GREETING=hello, WASMDESK_TEST_TOKEN=from-host" in d.env_status.text()


def test_env_change_the_plugin_rejects_keeps_the_running_version(
    window: MainWindow, fake_service: FakeEngineService
) -> None:
    window.plugin_list.select("add-header")
    d = window.plugin_details
    d.env_add_button.click()
    d.env_table.item(0, 0).setText("A")
    d.env_apply_button.click()
    fake_service.config_applied.emit([PluginError(ErrorKind.CONFIGURE, "add-header", "boom")])
    assert "Not applied, the running version is kept: configure failed: boom" in (
        d.env_status.text()
    )


def test_importing_an_invalid_file_says_where_and_changes_nothing(
    window: MainWindow, fake_service: FakeEngineService, tmp_path: Path, monkeypatch
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nspec: {}\n")
    monkeypatch.setattr(
        "gui.main_window.QFileDialog.getOpenFileName", lambda *a, **k: (str(bad), "")
    )
    window._on_import_action_triggered()
    assert "bad.yaml" in window.last_error and "metadata.name" in window.last_error
    assert fake_service.calls == []


def test_export_then_import_round_trips_through_the_file_menu(
    window: MainWindow, fake_service: FakeEngineService, tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "exported.yaml"
    monkeypatch.setattr(
        "gui.main_window.QFileDialog.getSaveFileName", lambda *a, **k: (str(out), "")
    )
    window._on_export_action_triggered()
    assert "kind: WasmPlugin" in out.read_text()
    exported = load_config(out)
    assert [p.name for p in exported.plugins] == [
        p.name for p in load_config(default_config_path()).plugins
    ]
    monkeypatch.setattr(
        "gui.main_window.QFileDialog.getOpenFileName", lambda *a, **k: (str(out), "")
    )
    window._on_import_action_triggered()
    (config,) = _applied(fake_service)
    assert [p.name for p in config.plugins] == [p.name for p in exported.plugins]
    assert fake_service.checked  # new plugins are checked before anything changes


def test_remove_and_disable_reach_the_engine(
    window: MainWindow, fake_service: FakeEngineService
) -> None:
    window.plugin_list.select("body-rewrite")
    d = window.plugin_details
    d.enabled_check.setChecked(False)
    assert ("set_plugin_mode", ("body-rewrite", {"mode": "disabled"})) in fake_service.calls
    d.remove_button.click()
    (config,) = _applied(fake_service)
    assert [p.name for p in config.plugins] == ["auth-token", "path-counter", "add-header"]
