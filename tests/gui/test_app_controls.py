"""The app's controls against the real engine (issue 12 items 4, 7, 8, 11): the canary
number field, "failed, skipped", the plugin log level, Remove with Undo, the keyboard
shortcuts, the admin link, change markers, "would act" per request, the retry editor
for a plugin that needs a configuration, and the Overview summary. Engine thread,
proxy and demo upstream on ephemeral loopback ports."""

from __future__ import annotations

import shutil
from dataclasses import replace

import httpx
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence

from gui.plugin_panel import plugin_summary, state_badge
from host.proxy.snapshots import PluginSnapshot, PluginState
from host.resources import demo_plugin

pytestmark = pytest.mark.slow


def _plugin(window, name: str) -> PluginSnapshot:
    return next(p for p in window._latest_plugins if p.name == name)


def test_canary_number_field_sets_the_exact_percentage(qtbot, app_window) -> None:
    window, service = app_window
    qtbot.waitUntil(lambda: bool(window.plugin_list.names()), timeout=5_000)
    window.plugin_list.select("add-header")
    d = window.plugin_details
    with qtbot.waitSignal(service.plugins_changed, timeout=5_000):
        d.canary_spin.setValue(25)
    qtbot.waitUntil(
        lambda: window.plugin_list.badges()["add-header"] == "canary 25%", timeout=5_000
    )
    assert d.canary_slider.value() == 25
    # the slider moves the field too
    d.canary_slider.setValue(40)
    assert d.canary_spin.value() == 40
    qtbot.waitUntil(
        lambda: window.plugin_list.badges()["add-header"] == "canary 40%", timeout=5_000
    )
    # a marker where the mode changed
    assert any("add-header: canary percent" in t for t in window.stats_panel.marker_texts())


def test_a_fail_open_failed_plugin_says_failed_skipped() -> None:
    base = PluginSnapshot("p", PluginState.FAILED)
    assert state_badge(replace(base, fail_strategy="FAIL_OPEN"))[0] == "failed, skipped"
    assert state_badge(replace(base, fail_strategy="FAIL_CLOSE"))[0] == "failed"


def test_plugin_log_level_is_set_from_the_logs_tab(qtbot, app_window) -> None:
    window, service = app_window
    ah, ap = service.admin_address
    assert httpx.get(f"http://{ah}:{ap}/logging").json()["plugin_log_level"] == "info"
    combo = window.logs_panel.plugin_level_combo
    combo.setCurrentIndex(combo.findText("trace"))
    combo.activated.emit(combo.currentIndex())  # what a user's pick sends

    def engine_at_trace() -> None:
        assert httpx.get(f"http://{ah}:{ap}/logging").json()["plugin_log_level"] == "trace"

    qtbot.waitUntil(engine_at_trace, timeout=5_000)
    assert service.log_level == "trace"


def test_remove_can_be_undone_in_place(qtbot, app_window) -> None:
    window, service = app_window
    qtbot.waitUntil(lambda: bool(window.plugin_list.names()), timeout=5_000)
    before = window.plugin_list.names()
    spec = next(p for p in service.config.plugins if p.name == "path-counter")
    with qtbot.waitSignal(service.config_applied, timeout=10_000):
        window.plugin_details.remove_requested.emit("path-counter")
    qtbot.waitUntil(lambda: "path-counter" not in window.plugin_list.names(), timeout=5_000)
    assert window.undo_button.isVisible() and "path-counter" in window.undo_button.text()
    # the graphs mark it and drop its curves from the legend
    qtbot.waitUntil(
        lambda: "chain −path-counter" in window.stats_panel.marker_texts(), timeout=5_000
    )
    with qtbot.waitSignal(service.config_applied, timeout=10_000):
        window.undo_button.click()
    qtbot.waitUntil(lambda: window.plugin_list.names() == before, timeout=5_000)
    assert not window.undo_button.isVisible()
    back = next(p for p in service.config.plugins if p.name == "path-counter")
    assert back == spec  # the same spec, config and modes included
    assert window.undo_remove() is False  # nothing left to undo


def test_keyboard_shortcuts_and_the_admin_link(qtbot, app_window) -> None:
    window, service = app_window
    qtbot.waitUntil(lambda: bool(window.plugin_list.names()), timeout=5_000)
    keys = {a.objectName(): a.shortcut() for a in window.actions()}
    assert keys["shortcut_load_plugin"] == QKeySequence(QKeySequence.StandardKey.Open)
    assert keys["shortcut_save_workspace"] == QKeySequence("Ctrl+S")
    assert keys["shortcut_quit"] == QKeySequence("Ctrl+Q")
    assert keys["shortcut_filter"] == QKeySequence("Ctrl+F")
    assert keys["shortcut_reload_plugin"] == QKeySequence("F5")
    window.activateWindow()
    # Ctrl+F: the current tab's filter
    window.tabs.setCurrentWidget(window.logs_panel)
    qtbot.keyClick(window, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window.logs_panel.search_edit.hasFocus(), timeout=2_000)
    # F5: reload the selected plugin in the engine
    window.plugin_list.select("add-header")
    window.plugin_list.setFocus()
    with qtbot.waitSignal(service.plugin_reloaded, timeout=10_000) as reloaded:
        qtbot.keyClick(window.plugin_list, Qt.Key.Key_F5)
    assert reloaded.args == ["add-header", None]
    # Ctrl+S: saves the workspace now
    window.workspace.path.unlink(missing_ok=True)
    qtbot.keyClick(window.plugin_list, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    assert window.workspace.path.is_file()
    # the admin URL is a link that opens in the browser
    ah, ap = service.admin_address
    assert f'href="http://{ah}:{ap}/"' in window.admin_label.text()
    assert window.admin_label.openExternalLinks()
    # messages end before the lag label instead of running under it
    assert window.lag_label.minimumWidth() >= window.lag_label.fontMetrics().horizontalAdvance(
        "GUI lag ≤ 9999 ms"
    )


def test_would_act_counts_requests_in_the_engine(qtbot, app_window) -> None:
    window, service = app_window
    qtbot.waitUntil(lambda: bool(window.plugin_list.names()), timeout=5_000)
    with qtbot.waitSignal(service.plugins_changed, timeout=5_000):
        service.set_plugin_mode("add-header", mode="log-only")
    for _ in range(3):
        with qtbot.waitSignal(service.response_received, timeout=10_000):
            service.send_request("GET", "/hello", [("authorization", "Bearer demo-token")])

    def counted() -> None:
        c = service.snapshot().stats.counters
        assert c.get("wasm.add-header.log_only.requests_would_act") == 3
        intents = sum(v for k, v in c.items() if k.startswith("wasm.add-header.log_only.would_"))
        assert intents == 6  # request and response headers, for each request

    qtbot.waitUntil(counted, timeout=5_000)


def test_a_plugin_that_needs_a_config_opens_the_editor_and_retry_loads_it(
    qtbot, app_window, tmp_path
) -> None:
    window, service = app_window
    module = tmp_path / "config_parse.wasm"
    shutil.copy(demo_plugin("config_parse"), module)
    with qtbot.waitSignal(service.config_refused, timeout=15_000):
        assert window.load_plugin_file(module)
    dlg = window._retry
    assert dlg is not None and dlg.isVisible()
    assert 'missing required field "name"' in dlg.error_label.text()
    assert "config-parse" not in window.plugin_list.names()  # nothing added yet
    # a config it still rejects: the plugin's new error, the dialog stays
    dlg.editor.setPlainText('{"name": "demo", "limit": "ten"}')
    with qtbot.waitSignal(service.config_refused, timeout=15_000):
        dlg.retry_button.click()
    assert window._retry is dlg and dlg.isVisible()
    assert "limit" in dlg.error_label.text()
    dlg.editor.setPlainText("name: demo\nlimit: 3\n")
    with qtbot.waitSignal(service.config_applied, timeout=15_000) as applied:
        dlg.retry_button.click()
    assert applied.args == [[]]
    qtbot.waitUntil(lambda: "config-parse" in window.plugin_list.names(), timeout=5_000)
    assert not dlg.isVisible()
    spec = next(p for p in service.config.plugins if p.name == "config-parse")
    assert spec.plugin_config == {"name": "demo", "limit": 3}
    # the plugin runs with it: the demo upstream echoes the request headers it added
    with qtbot.waitSignal(service.response_received, timeout=10_000) as got:
        service.send_request("GET", "/x", [("authorization", "Bearer demo-token")])
    assert '"x-config-name": "demo"' in got.args[0]["body"]
    assert '"x-config-limit": "3"' in got.args[0]["body"]


def test_overview_summarises_the_selected_plugin(qtbot, app_window) -> None:
    window, service = app_window
    qtbot.waitUntil(lambda: bool(window.plugin_list.names()), timeout=5_000)
    for _ in range(2):
        with qtbot.waitSignal(service.response_received, timeout=10_000):
            service.send_request("GET", "/hello", [("authorization", "Bearer demo-token")])
    window.plugin_list.select("add-header")

    def summarised() -> None:
        window._refresh_details()
        rows = dict(plugin_summary(_plugin(window, "add-header")))
        assert rows["ABI"].startswith("0.2")
        assert "AssemblyScript" in rows["SDK"]
        assert int(rows["Invocations"]) >= 2
        assert rows["Traps"] == "0"
        assert rows["Time per request"].endswith("µs of CPU")
        text = window.plugin_details.summary_label.text()
        assert "AssemblyScript" in text and "Time per request" in text

    qtbot.waitUntil(summarised, timeout=5_000)
