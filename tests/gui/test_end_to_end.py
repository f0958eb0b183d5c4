"""The app with the real engine thread on ephemeral loopback ports: start it, drive it the
way a user does, and check what the graphs' data, the inspector and the logs show."""

from __future__ import annotations

import gc
import shutil
from collections.abc import Iterator

import numpy as np
import pytest
from PySide6.QtCore import Qt

from gui.workspace import Workspace
from host.proxy.errors import ErrorKind
from host.resources import demo_plugin

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _heap_of_a_fresh_app() -> Iterator[None]:
    """The lag bounds are about the app, not about what earlier tests in this process left
    on the heap: a full collection walks every tracked object, and after a thousand tests
    that alone can hold the GIL past the max bound. Freezing what exists now gives these
    tests the heap a freshly started app has (its own objects are still collected)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.mark.alone  # its figures are timing: nothing else runs meanwhile
def test_generate_traffic_moves_graphs_inspector_and_logs(qtbot, app_window) -> None:
    window, service = app_window
    host, port = service.listen_address
    assert host == "127.0.0.1" and port > 0
    assert window.address_edit.text() == f"http://127.0.0.1:{port}"
    assert window.plugin_list.names() == [
        "auth-token",
        "path-counter",
        "add-header",
        "body-rewrite",
    ]
    # the composer's bounded load: 200 req/s for 1.5 s, through the UI
    window.composer_panel.rps_spin.setValue(200)
    window.composer_panel.seconds_spin.setValue(1.5)
    with qtbot.waitSignal(service.traffic_finished, timeout=15_000) as done:
        window.composer_panel.load_button.click()
    result = done.args[0]
    assert result["sent"] == 300 and result["errors"] == 0
    assert result["statuses"]["200"] >= 200  # the demo mix has a few 404/503 on purpose
    qtbot.waitUntil(lambda: window.composer_panel.load_progress.value() == 300, timeout=5_000)

    def graphs_moved() -> None:
        _x, y = window.stats_panel.series("rq_total")
        assert np.nanmax(y) > 50
        assert np.nansum(window.stats_panel.series("rq_5xx")[1]) > 0
        assert np.nanmax(window.stats_panel.series("p99")[1]) > 0
        assert "time:add-header" in window.stats_panel.series_keys()
        assert "would:auth-token" in window.stats_panel.series_keys()  # log-only intent

    qtbot.waitUntil(graphs_moved, timeout=5_000)
    # plugin-defined metrics: listed, the first counters plotted, any other one pickable
    stats = window.stats_panel
    assert "path_counter.total" in stats.metric_names()
    assert "path_counter.total" in stats.picked
    assert np.nanmax(stats.series("custom:path_counter.total")[1]) > 50
    stats.pick_metrics(["auth_token.denied"])
    _x, denied = stats.curve_data("custom:auth_token.denied")
    assert np.nanmax(denied) > 10  # its history, from before it was picked
    _x, y = window.stats_panel.curve_data("rq_total")
    assert np.nanmax(y) > 50  # what the plot shows, not just the ring

    def inspector_and_logs_filled() -> None:
        assert len(window.inspector_panel.request_ids()) >= 100
        assert any(r[2] == "add-header" for r in window.logs_panel.visible_rows())

    qtbot.waitUntil(inspector_and_logs_filled, timeout=5_000)
    # a log line's request id opens that request in the inspector
    logs = window.logs_panel
    logs.set_filters(plugin="auth-token", search="denied")
    newest = logs.proxy.rowCount() - 1
    rid = logs.visible_rows()[newest][3]
    # a line is published as the plugin logs it, its request when the request ends
    qtbot.waitUntil(lambda: rid in window.inspector_panel.request_id_list(), timeout=5_000)
    logs.table.doubleClicked.emit(logs.proxy.index(newest, 4))
    assert window.tabs.currentWidget() is window.inspector_panel
    item = window.inspector_panel.request_list.currentItem()
    assert item is not None and item.data(1, Qt.ItemDataRole.UserRole) == rid
    qtbot.waitUntil(
        lambda: "would have replied 403" in window.inspector_panel.detail_view.toPlainText(),
        timeout=5_000,
    )
    logs.set_filters()
    # a request's hops, fetched from the engine on selection
    newest = window.inspector_panel.request_ids()[0]
    window.inspector_panel.select_request(newest)
    # the window's slot runs queued on the GUI thread, after the engine emitted
    qtbot.waitUntil(
        lambda: "+ x-wasmdesk: hello" in window.inspector_panel.detail_view.toPlainText(),
        timeout=5_000,
    )
    assert window.max_lag_ms < 250  # the GUI kept turning (measured figure in docs/gui.md)


def test_user_loads_a_plugin_file_then_sees_its_effect(qtbot, app_window, tmp_path) -> None:
    window, service = app_window
    module = tmp_path / "add_header.wasm"
    shutil.copy(demo_plugin("add_header"), module)
    # not a module: a message, nothing applied
    junk = tmp_path / "readme.wasm"
    junk.write_text("hello")
    assert window.load_plugin_file(junk) is False
    assert "not a WebAssembly module" in window.last_error
    with qtbot.waitSignal(service.config_applied, timeout=10_000) as applied:
        assert window.load_plugin_file(module)
    assert applied.args == [[]]
    qtbot.waitUntil(lambda: "add-header-2" in window.plugin_list.names(), timeout=5_000)
    assert window.plugin_list.badges()["add-header-2"] == "running"
    assert window.plugin_list.selected_name() == "add-header-2"

    # the new plugin's config, through the config editor: a header of its own
    details = window.plugin_details
    details.config_edit.setPlainText(
        "request_header: {name: x-loaded, value: by-test}\n"
        "response_header: {name: x-loaded-response, value: 'yes'}\n"
    )
    with qtbot.waitSignal(service.config_applied, timeout=10_000) as applied:
        details.config_apply_button.click()
    assert applied.args == [[]]
    qtbot.waitUntil(lambda: details.config_status.text() == "Applied", timeout=5_000)

    # send a request through the composer
    c = window.composer_panel
    c.path_edit.setText("/from-composer")
    c.headers_edit.setPlainText("x-test: 1")
    with qtbot.waitSignal(service.response_received, timeout=10_000) as got:
        c.send_button.click()
    resp = got.args[0]
    assert resp["status"] == 200 and not resp["error"]
    assert ["x-loaded-response", "yes"] in resp["headers"]
    assert '"x-loaded": "by-test"' in resp["body"]  # the demo upstream echoes it
    qtbot.waitUntil(lambda: c.status_label.text().startswith("200"), timeout=5_000)

    def seen() -> None:
        rows = window.inspector_panel.rows()
        assert any(r[3] == "/from-composer" and "add-header-2" in r[6] for r in rows)
        window.logs_panel.set_filters(plugin="add-header-2")
        assert any("/from-composer" in r[4] for r in window.logs_panel.visible_rows())

    qtbot.waitUntil(seen, timeout=5_000)

    # a configuration the plugin rejects: its own log lines, and the running version stays
    details.config_edit.setPlainText("request_header: {name: 'bad name', value: x}\n")
    with qtbot.waitSignal(service.config_applied, timeout=10_000) as applied:
        details.config_apply_button.click()
    (err,) = applied.args[0]
    assert (err.plugin, err.kind) == ("add-header-2", ErrorKind.CONFIGURE)
    qtbot.waitUntil(
        lambda: "Rejected; the running version is kept" in details.config_status.text(),
        timeout=5_000,
    )
    assert window.plugin_list.badges()["add-header-2"] == "running"

    def plugin_said_why() -> None:
        window.logs_panel.set_filters(plugin="add-header-2", search="not a valid header name")
        assert window.logs_panel.visible_rows()

    qtbot.waitUntil(plugin_said_why, timeout=5_000)
    with qtbot.waitSignal(service.response_received, timeout=10_000) as got:
        c.send_button.click()
    assert ["x-loaded-response", "yes"] in got.args[0]["headers"]  # old config still runs

    # log-only through the UI: the engine's state follows
    with qtbot.waitSignal(service.plugins_changed, timeout=5_000):
        details.log_only_check.setChecked(True)
    qtbot.waitUntil(
        lambda: window.plugin_list.badges()["add-header-2"] == "log-only", timeout=5_000
    )

    # closing saves the workspace with the new plugin; the next start restores it
    window.close()
    saved = Workspace.at(tmp_path / "workspace.yaml")
    restored = {p.name: p for p in saved.load().plugins}
    assert restored["add-header-2"].mode == "log-only"
    assert restored["add-header-2"].plugin_config["response_header"]["name"] == (
        "x-loaded-response"
    )


@pytest.mark.alone  # its figures are timing: nothing else runs meanwhile
def test_gui_event_loop_stays_responsive_at_1000_requests_per_second(qtbot, app_window) -> None:
    window, service = app_window
    # warm up: the first traffic creates the per-plugin curves once
    with qtbot.waitSignal(service.traffic_finished, timeout=10_000):
        service.generate_traffic(200, 0.5)
    qtbot.wait(200)
    window.lag_samples.clear()
    with qtbot.waitSignal(service.traffic_finished, timeout=15_000) as done:
        window.generate_button.setEnabled(False)
        # 3 s: about 100 lag samples, so the p95 is not one or two stray paints
        service.generate_traffic(1000, 3.0)
    assert done.args[0]["sent"] == 3000 and done.args[0]["errors"] == 0
    lags = sorted(window.lag_samples)
    assert len(lags) >= 20
    # The GUI stays live under the load: most heartbeats on time and none stalled. The
    # figure the app is held to (p95 lag under 50 ms at 1000 req/s with the graphs shown)
    # is a measurement, taken by bench/bench_gui.py on a quiet machine (the project keeps
    # timing targets in bench/, not in tests): on this 2-core machine a paint pass of the
    # graphs lands in the p95 of a 3 s sample often enough to make it a coin toss here.
    assert lags[len(lags) // 2] < 20, lags
    assert lags[-1] < 250, lags
