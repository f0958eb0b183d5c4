"""Each panel on its own, and the main window against a fake engine service."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QApplication

from gui.composer_panel import ComposerPanel, parse_headers
from gui.inspector_panel import InspectorPanel, header_diff
from gui.logs_panel import LogsPanel
from gui.main_window import MainWindow
from gui.plugin_panel import PluginDetailsPanel, PluginListView, state_badge
from gui.stats_panel import Ring, StatsPanel
from gui.workspace import Workspace
from host.proxy.errors import ErrorKind, PluginError
from host.proxy.request_views import RequestSummary, RequestView
from host.proxy.snapshots import FailureView
from host.proxy.stats import StatsStore
from host.resources import demo_plugin
from tests.gui.fakes import FakeEngineService, plugin_snapshot

# -- stats ---------------------------------------------------------------------------------


def test_ring_returns_the_newest_window_oldest_first_without_copying() -> None:
    r = Ring(capacity=4)
    for i in range(6):
        r.append(float(i), float(i * 10))
    x, y = r.view()
    assert list(x) == [2.0, 3.0, 4.0, 5.0]
    assert list(y) == [20.0, 30.0, 40.0, 50.0]
    assert x.base is not None  # a view into the preallocated buffer
    assert r.last() == 50.0


def test_stats_panel_plots_one_second_rates_classes_and_latency_from_snapshots(qtbot) -> None:
    now = [100.0]
    store = StatsStore(clock=lambda: now[0])
    panel = StatsPanel()
    qtbot.addWidget(panel)
    total = store.counter("http.downstream_rq_total")
    ok = store.counter("http.downstream_rq_2xx")
    err = store.counter("http.downstream_rq_5xx")
    lat = store.histogram("http.downstream_rq_time")
    cb = store.histogram("wasm.add-header.callback_time_us")
    panel.update_stats(store.snapshot())
    for step in range(1, 4):
        now[0] += 0.1
        total.inc(20)
        ok.inc(15)
        err.inc(5)
        for _ in range(20):
            lat.record(3.0)
            cb.record(50.0)
        store.counter("wasm.auth-token.log_only.would_reply_403").inc(2)
        store.counter("wasm.body-rewrite.traps").inc(1 if step == 2 else 0)
        panel.update_stats(store.snapshot())
    x, y = panel.series("rq_total")
    assert len(x) == 3 and np.allclose(y, 200.0)  # 20 requests per 0.1 s
    assert np.allclose(panel.series("rq_2xx")[1], 150.0)
    assert np.allclose(panel.series("rq_5xx")[1], 50.0)
    p50 = panel.series("p50")[1][-1]
    assert 2.0 <= p50 <= 5.0
    # 20 x 50 us per 0.1 s = 10 ms of plugin time per second
    assert np.allclose(panel.series("time:add-header")[1], 10.0)
    assert np.allclose(panel.series("would:auth-token")[1], 20.0)
    # rates are over the last second: one trap in the second interval, 0.1 s apart
    assert list(panel.series("traps")[1]) == pytest.approx([0.0, 1 / 0.2, 1 / 0.3])
    _cx, cy = panel.curve_data("rq_total")  # the curve got the ring's data
    assert np.allclose(cy, 200.0)


def test_stats_panel_treats_a_counter_reset_as_a_restart(qtbot) -> None:
    now = [0.0]
    store = StatsStore(clock=lambda: now[0])
    panel = StatsPanel()
    qtbot.addWidget(panel)
    c = store.counter("http.downstream_rq_total")
    c.inc(100)
    panel.update_stats(store.snapshot())
    now[0] = 1.0
    store.reset_counters()
    c.inc(7)
    panel.update_stats(store.snapshot())
    assert panel.series("rq_total")[1][-1] == 7.0
    assert math.isnan(panel.series("p99")[1][-1])  # no requests: no latency point


# -- plugins -------------------------------------------------------------------------------


def test_state_badges_say_running_log_only_canary_and_failed() -> None:
    assert state_badge(plugin_snapshot("a"))[0] == "running"
    assert state_badge(plugin_snapshot("a", state="log-only", mode="log-only"))[0] == "log-only"
    assert state_badge(plugin_snapshot("a", canary_percent=25.0))[0] == "canary 25%"
    assert state_badge(plugin_snapshot("a", state="failed"))[0] == "failed"
    assert state_badge(plugin_snapshot("a", mode="disabled"))[0] == "disabled"


def test_a_plugin_whose_match_leaves_out_the_listener_is_grey_not_failed() -> None:
    p = plugin_snapshot("a", state="not applied", not_applied="match: ports [9999] vs listener 1")
    assert state_badge(p) == ("not applied", "#8b949e")


def test_plugin_list_keeps_engine_order_and_selection(qtbot) -> None:
    view = PluginListView()
    qtbot.addWidget(view)
    plugins = [
        plugin_snapshot("auth-token", phase="AUTHN", state="log-only", mode="log-only"),
        plugin_snapshot("add-header", priority=10),
        plugin_snapshot("body-rewrite", canary_percent=50.0),
        plugin_snapshot("broken", state="failed", failure=FailureView("", "trap", "unreachable")),
    ]
    view.set_plugins(plugins)
    assert view.names() == ["auth-token", "add-header", "body-rewrite", "broken"]
    assert view.badges() == {
        "auth-token": "log-only",
        "add-header": "running",
        "body-rewrite": "canary 50%",
        "broken": "failed",
    }
    with qtbot.waitSignal(view.plugin_selected) as sig:
        view.select("body-rewrite")
    assert sig.args == ["body-rewrite"]
    view.set_plugins(plugins)  # a refresh keeps the selection
    assert view.selected_name() == "body-rewrite"


def test_failed_plugin_details_show_kind_message_backtrace_and_request(qtbot) -> None:
    panel = PluginDetailsPanel()
    qtbot.addWidget(panel)
    failure = FailureView(
        "RUNTIME_ERROR",
        "trap",
        "wasm trap: unreachable",
        backtrace=("0: body_rewrite!on_response_body", "1: proxy_on_response_body"),
        request={"method": "GET", "path": "/boom", "request_id": "r-1"},
    )
    panel.show_plugin(plugin_snapshot("body-rewrite", state="failed", failure=failure), None)
    text = panel.failure_text.toPlainText()
    for part in ("trap: wasm trap: unreachable", "on_response_body", "GET /boom", "r-1"):
        assert part in text
    assert "failed" in panel.state_label.text()


def test_mode_controls_emit_set_plugin_mode_arguments(qtbot) -> None:
    panel = PluginDetailsPanel()
    qtbot.addWidget(panel)
    panel.show_plugin(plugin_snapshot("add-header"), None)
    got: list[tuple[str, dict]] = []
    panel.mode_changed.connect(lambda n, kw: got.append((n, kw)))
    panel.log_only_check.setChecked(True)
    panel.canary_slider.setValue(30)
    panel.enabled_check.setChecked(False)
    panel.fail_combo.setCurrentText("FAIL_OPEN")
    panel.fail_combo.activated.emit(panel.fail_combo.currentIndex())
    assert got == [
        ("add-header", {"mode": "log-only"}),
        ("add-header", {"canary_percent": 30.0}),
        ("add-header", {"mode": "disabled"}),
        ("add-header", {"fail_strategy": "FAIL_OPEN"}),
    ]
    # showing a fresh snapshot does not echo changes back
    got.clear()
    panel.show_plugin(plugin_snapshot("add-header", canary_percent=80.0), None)
    assert got == []


def test_config_editor_rejects_bad_yaml_with_position_and_sends_nothing(qtbot) -> None:
    panel = PluginDetailsPanel()
    qtbot.addWidget(panel)
    panel.show_plugin(plugin_snapshot("add-header"), None)
    edited: list = []
    panel.config_edited.connect(lambda n, v: edited.append((n, v)))
    panel.config_edit.setPlainText("request_header: {name: x-a, value: [unclosed\n")
    assert "line" in panel.config_status.text()
    assert not panel.config_apply_button.isEnabled()
    panel._on_config_apply_button_clicked()
    panel.config_edit.setPlainText("- just\n- a list\n")
    assert "mapping" in panel.config_status.text()
    assert edited == []
    panel.config_edit.setPlainText('{"request_header": {"name": "x-team", "value": "a"}}')
    assert panel.config_apply_button.isEnabled()
    panel.config_apply_button.click()
    assert edited == [("add-header", {"request_header": {"name": "x-team", "value": "a"}})]


# -- logs, inspector, composer ----------------------------------------------------------------


def _log(plugin: str, level: str, message: str, rid: str = "") -> dict:
    return {"plugin": plugin, "level": level, "message": message, "request_id": rid, "time": 1.7e9}


def test_logs_panel_filters_by_plugin_level_and_search(qtbot) -> None:
    panel = LogsPanel(capacity=5)
    qtbot.addWidget(panel)
    panel.append_logs(
        [
            _log("a", "info", "hello one", "r1"),
            _log("b", "warn", "careful", "r2"),
            _log("a", "error", "broken thing", "r3"),
        ]
    )
    assert len(panel.visible_rows()) == 3
    panel.set_filters(plugin="a")
    assert [r[4] for r in panel.visible_rows()] == ["hello one", "broken thing"]
    panel.set_filters(min_level="warn")
    assert [r[4] for r in panel.visible_rows()] == ["careful", "broken thing"]
    panel.set_filters(search="R2")
    assert [r[3] for r in panel.visible_rows()] == ["r2"]
    panel.set_filters()
    panel.append_logs([_log("c", "info", f"m{i}") for i in range(4)])  # over capacity
    assert [r[4] for r in panel.visible_rows()] == ["broken thing", "m0", "m1", "m2", "m3"]
    assert panel.count_label.text() == "5 lines"


def test_header_diff_marks_added_removed_and_unchanged() -> None:
    before = [["a", "1"], ["b", "2"]]
    after = [["a", "1"], ["b", "3"], ["c", "4"]]
    assert header_diff(before, after) == [
        ("=", "a", "1"),
        ("-", "b", "2"),
        ("+", "b", "3"),
        ("+", "c", "4"),
    ]


def test_inspector_lists_newest_first_and_shows_a_hop_diff(qtbot) -> None:
    panel = InspectorPanel(capacity=3)
    qtbot.addWidget(panel)
    panel.append_requests(
        [
            RequestSummary(
                i,
                method="GET",
                path=f"/p{i}",
                status=200,
                duration_ms=1.0,
                started=1.7e9,
                plugins=("add-header",),
            )
            for i in range(1, 5)
        ]
    )
    assert panel.request_ids() == [4, 3, 2]
    with qtbot.waitSignal(panel.request_selected) as sig:
        panel.select_request(3)
    assert sig.args == [3]
    record = RequestView.from_dict(
        {
            "id": 3,
            "method": "GET",
            "path": "/p3",
            "status": 200,
            "request_id": "r3",
            "duration_ms": 1.0,
            "outcome": "",
            "hops": [
                {
                    "plugin": "add-header",
                    "mode": "enforce",
                    "ran": True,
                    "request_headers_before": [[":path", "/p3"]],
                    "request_headers_after": [[":path", "/p3"], ["x-wasmdesk", "hello"]],
                    "callbacks": [{"name": "proxy_on_request_headers", "result": 0, "us": 12.5}],
                    "would": [],
                }
            ],
        }
    )
    panel.show_details(record)
    text = panel.detail_view.toPlainText()
    assert "+ x-wasmdesk: hello" in text
    assert "req headers ±1" in text  # the hop summary
    assert "on_request_headers\nContinue\n12.5" in text  # the callbacks table, named


def test_inspector_reports_whole_body_sizes_when_the_record_keeps_only_the_start(qtbot) -> None:
    panel = InspectorPanel(capacity=3)
    qtbot.addWidget(panel)
    hop = {
        "plugin": "body-rewrite",
        "mode": "enforce",
        "ran": True,
        "response_body_before": "hello " * 10,
        "response_body_after": "HELLO " * 10,
        "response_body_before_size": 300000,
        "response_body_after_size": 300010,
        "callbacks": [],
        "would": [],
    }
    panel.show_details(
        RequestView.from_dict(
            {"id": 1, "method": "GET", "path": "/big", "status": 200, "hops": [hop]}
        )
    )
    text = panel.detail_view.toPlainText()
    assert "changed: 300000 → 300010 bytes, diff of the recorded start" in text
    assert "- hello hello" in text and "+ HELLO HELLO" in text


def test_composer_refuses_a_bad_header_line_and_sends_a_good_request(qtbot) -> None:
    panel = ComposerPanel()
    qtbot.addWidget(panel)
    sent: list = []
    panel.send_requested.connect(lambda *a: sent.append(a))
    panel.headers_edit.setPlainText("authorization Bearer x")
    panel.send_button.click()
    assert sent == [] and "header line 1" in panel.error_label.text()
    panel.path_edit.setText("no-slash")
    panel.headers_edit.setPlainText("")
    panel.send_button.click()
    assert sent == [] and "must start with '/'" in panel.error_label.text()
    panel.path_edit.setText("/api")
    panel.method_combo.setCurrentText("POST")
    panel.headers_edit.setPlainText("x-a: 1\nauthorization: Bearer demo-token\n")
    panel.body_edit.setPlainText("hi")
    panel.send_button.click()
    assert sent == [("POST", "/api", [("x-a", "1"), ("authorization", "Bearer demo-token")], b"hi")]
    assert panel.error_label.text() == ""
    panel.show_response(
        {
            "status": 201,
            "headers": [["x-b", "2"]],
            "body": "ok",
            "body_size": 2,
            "elapsed_ms": 1.5,
            "error": "",
        }
    )
    assert panel.status_label.text().startswith("201")
    assert "x-b: 2" in panel.response_view.toPlainText()
    with pytest.raises(ValueError):
        parse_headers("bad name: x")


# -- the main window against the fake service ----------------------------------------------------


@pytest.fixture
def window(qtbot, fake_service: FakeEngineService, tmp_path: Path) -> MainWindow:
    ws = Workspace.at(tmp_path / "ws.yaml")
    ws.load()
    w = MainWindow(fake_service, ws)
    qtbot.addWidget(w)
    fake_service.with_plugin_specs()
    fake_service.started.emit()
    fake_service.plugins_changed.emit(fake_service.plugins)
    return w


def test_header_shows_the_bound_address_and_copies_it(window: MainWindow) -> None:
    assert window.address_edit.text() == "http://127.0.0.1:10000"
    assert window.generate_button.isEnabled()
    window.copy_button.click()
    assert QApplication.clipboard().text() == "http://127.0.0.1:10000"


def test_generate_traffic_button_asks_for_bounded_load(
    window: MainWindow, fake_service: FakeEngineService
) -> None:
    window.generate_button.click()
    (call,) = [c for c in fake_service.calls if c[0] == "generate_traffic"]
    rps, seconds = call[1]
    assert 0 < rps <= 2000 and 0 < seconds <= 120
    assert not window.generate_button.isEnabled()
    fake_service.traffic_finished.emit({"sent": 10, "elapsed_s": 1, "statuses": {"200": 10}})
    assert window.generate_button.isEnabled()


def test_plugin_list_shows_the_chain_in_effective_order(window: MainWindow) -> None:
    assert window.plugin_list.names() == [
        "auth-token",
        "path-counter",
        "add-header",
        "body-rewrite",
    ]
    assert window.plugin_list.badges()["auth-token"] == "log-only"
    assert window.plugin_list.badges()["body-rewrite"] == "canary 50%"


def test_loading_a_non_wasm_file_says_so_and_changes_nothing(
    window: MainWindow, fake_service: FakeEngineService, tmp_path: Path
) -> None:
    bad = tmp_path / "notes.wasm"
    bad.write_text("this is not wasm")
    assert window.load_plugin_file(bad) is False
    assert "not a WebAssembly module" in window.last_error
    assert window.load_plugin_file(tmp_path / "missing.wasm") is False
    assert "no such file" in window.last_error
    assert fake_service.calls == []


def test_dropping_a_wasm_file_adds_a_plugin(
    qtbot, window: MainWindow, fake_service: FakeEngineService, tmp_path: Path
) -> None:
    src = tmp_path / "add_header.wasm"
    shutil.copy(demo_plugin("add_header"), src)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(src))])
    ev = QDropEvent(
        QPointF(10, 10),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
    )
    window.dropEvent(ev)
    (call,) = [c for c in fake_service.calls if c[0] == "apply_config"]
    new = call[1].plugins[-1]
    assert new.name == "add-header-2"  # add-header is taken
    assert new.plugin_name == ""  # pluginName unset: root id "", as Envoy/Istio
    assert Path(new.location) == src


def test_mode_toggle_reaches_the_service(
    window: MainWindow, fake_service: FakeEngineService
) -> None:
    window.plugin_list.select("add-header")
    window.plugin_details.log_only_check.setChecked(True)
    assert ("set_plugin_mode", ("add-header", {"mode": "log-only"})) in fake_service.calls


def test_poll_feeds_graphs_logs_and_inspector(
    window: MainWindow, fake_service: FakeEngineService
) -> None:
    fake_service.pending_logs.append(_log("add-header", "info", "added x-wasmdesk", "r1"))
    fake_service.pending_requests.append(
        RequestSummary(
            1,
            method="GET",
            path="/x",
            status=200,
            duration_ms=0.5,
            started=1.7e9,
            plugins=("add-header",),
        )
    )
    window._on_poll_timer_timeout()
    assert window.logs_panel.visible_rows()[0][4] == "added x-wasmdesk"
    assert window.inspector_panel.request_ids() == [1]
    window.inspector_panel.select_request(1)
    assert ("fetch_request", 1) in fake_service.calls


def test_engine_errors_are_shown_not_swallowed(
    window: MainWindow, fake_service: FakeEngineService
) -> None:
    fake_service.command_failed.emit("plugin nope: no plugin named 'nope'")
    assert "no plugin named" in window.last_error
    fake_service.config_applied.emit([PluginError(ErrorKind.CONFIGURE, "add-header", "boom")])
    assert "add-header: configure failed: boom" in window.last_error


def test_closing_the_window_saves_the_workspace_and_stops_the_service(
    window: MainWindow, fake_service: FakeEngineService
) -> None:
    window.close()
    assert fake_service.closed
    assert window.workspace is not None and window.workspace.path.is_file()
    assert "kind: WasmPlugin" in window.workspace.path.read_text()
