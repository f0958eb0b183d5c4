"""The graphs' metric picker and intent/effect curves, the inspector's hop details, the
log-to-request link and the composer's replay, on real widgets with plain data."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt

from gui.composer_panel import ComposerPanel
from gui.inspector_panel import InspectorPanel, body_diff, replay_request
from gui.logs_panel import LogsPanel
from gui.stats_panel import AUTO_PICK, StatsPanel
from host.proxy.request_views import RequestSummary, RequestView
from host.proxy.stats import StatsStore
from host.wasm.metrics import MetricsRegistry, MetricType


def _store_with_custom_metrics(now: list[float]) -> tuple[StatsStore, MetricsRegistry]:
    store = StatsStore(clock=lambda: now[0])
    reg = MetricsRegistry()
    store.include_plugin_metrics(reg)
    return store, reg


def test_plugin_metrics_are_recorded_and_plotted_when_picked(qtbot) -> None:
    now = [10.0]
    store, reg = _store_with_custom_metrics(now)
    ids = {
        name: reg.define(kind, name)
        for name, kind in (
            ("a.total", MetricType.COUNTER),
            ("b.total", MetricType.COUNTER),
            ("c.total", MetricType.COUNTER),
            ("d.total", MetricType.COUNTER),
            ("queue.depth", MetricType.GAUGE),
            ("sizes", MetricType.HISTOGRAM),
        )
    }
    panel = StatsPanel()
    qtbot.addWidget(panel)
    panel.update_stats(store.snapshot())
    for _ in range(5):
        now[0] += 0.1
        for name in ("a.total", "b.total", "c.total", "d.total"):
            reg.get(ids[name]).value += 3  # what proxy_increment_metric does
        reg.get(ids["queue.depth"]).value = 7
        reg.get(ids["sizes"]).record(100)
        panel.update_stats(store.snapshot())
    assert set(panel.metric_names()) == {
        "a.total",
        "b.total",
        "c.total",
        "d.total",
        "queue.depth",
        "sizes",
    }
    # before the user picks, the first few counters are plotted
    assert panel.picked == ["a.total", "b.total", "c.total"][:AUTO_PICK]
    assert np.allclose(panel.series("custom:d.total")[1], 30.0)  # recorded, not plotted
    assert np.allclose(panel.series("custom:queue.depth")[1], 7.0)
    assert 50 <= panel.series("custom:sizes")[1][-1] <= 200  # the median of the interval
    panel.pick_metrics(["d.total", "queue.depth"])
    assert panel.picked == ["d.total", "queue.depth"]
    _x, y = panel.curve_data("custom:d.total")
    assert len(y) == 5 and np.allclose(y, 30.0)  # the history from before the pick
    try:
        panel.curve_data("custom:a.total")
        raise AssertionError("a.total is still plotted")
    except KeyError:
        pass
    panel.metric_filter.setText("queue")
    hidden = [panel.metric_list.item(i).isHidden() for i in range(panel.metric_list.count())]
    assert hidden.count(False) == 1


def test_log_only_intent_is_plotted_beside_the_effect(qtbot) -> None:
    now = [0.0]
    store = StatsStore(clock=lambda: now[0])
    panel = StatsPanel()
    qtbot.addWidget(panel)
    panel.update_stats(store.snapshot())
    for step in range(1, 5):
        now[0] += 0.1
        if step <= 2:  # log-only: it would reply 403 five times per tick
            store.counter("wasm.auth.log_only.would_reply_403").inc(5)
        else:  # enforced: it replies 403
            store.counter("wasm.auth.local_reply_403").inc(5)
        panel.update_stats(store.snapshot())
    would = panel.series("would:auth")[1]
    did = panel.series("did:auth")[1]
    assert would[0] == 50.0 and did[0] == 0.0
    assert did[-1] > 0 and would[-1] < would[1] + 1e-9  # intent turned into effect


def _hop(**kw) -> dict:
    base = {
        "plugin": "p",
        "mode": "enforce",
        "ran": True,
        "skipped_reason": "",
        "request_headers_before": [[":path", "/x"]],
        "request_headers_after": [[":path", "/x"]],
        "request_body_before": None,
        "request_body_after": None,
        "response_headers_before": None,
        "response_headers_after": None,
        "response_body_before": None,
        "response_body_after": None,
        "local_reply": None,
        "would": [],
        "paused_ms": 0.0,
        "callbacks": [],
        "callouts": [],
        "failure": None,
    }
    base.update(kw)
    return base


def test_inspector_shows_log_only_intent_callouts_body_diff_and_callback_times(qtbot) -> None:
    panel = InspectorPanel()
    qtbot.addWidget(panel)
    rec = {
        "id": 9,
        "request_id": "r-9",
        "method": "POST",
        "path": "/api",
        "authority": "localhost",
        "client": "127.0.0.1:5555",
        "status": 200,
        "outcome": "",
        "duration_ms": 2.5,
        "hops": [
            _hop(
                plugin="auth",
                mode="log-only",
                request_headers_before=[
                    [":method", "POST"],
                    [":path", "/api"],
                    ["x-a", "1"],
                    ["host", "h"],
                ],
                request_headers_after=[
                    [":method", "POST"],
                    [":path", "/api"],
                    ["x-a", "1"],
                    ["host", "h"],
                    ["x-would", "yes"],
                ],
                request_body_before="hi",
                request_body_after="hi",
                local_reply={
                    "status": 403,
                    "details": "denied",
                    "headers": [["x-d", "1"]],
                    "body": "forbidden",
                },
                would=["mutate_request_headers", "reply_403"],
                callbacks=[{"name": "proxy_on_request_headers", "result": 0, "us": 40.0}],
            ),
            _hop(
                plugin="checker",
                callouts=[
                    {"cluster": "auth", "status": 200, "failure": None, "elapsed_ms": 3.2},
                    {"cluster": "auth", "status": None, "failure": "timeout", "elapsed_ms": 1000.0},
                ],
                paused_ms=4.0,
            ),
            _hop(
                plugin="rewrite",
                response_body_before="line one\nhello\n",
                response_body_after="line one\nHELLO\n",
                callbacks=[
                    {"name": "proxy_on_response_body", "result": 0, "us": 12.0},
                    {"name": "proxy_on_log", "result": None, "us": 1.5},
                ],
            ),
            _hop(plugin="off", ran=False, skipped_reason="not sampled by canary"),
        ],
    }
    panel.show_details(RequestView.from_dict(rec))
    text = panel.detail_view.toPlainText()
    assert "Log-only: the changes below are what this plugin would have made" in text
    assert "would reply 403" in text and "would have replied 403 (denied)" in text
    assert "+ x-would: yes" in text
    assert "timeout" in text and "3.2" in text  # both callouts
    assert "held the stream paused for 4.0 ms" in text
    assert "- hello" in text and "+ HELLO" in text and "  line one" in text
    assert "response body (changed: 15 → 15 bytes)" in text
    assert "on_response_body\nContinue\n12.0" in text and "13.5 µs in all" in text
    assert "skipped: not sampled by canary" in text
    # "Send again": the request as the client sent it, minus pseudo and hop headers
    assert panel.replay_button.isEnabled()
    got: list = []
    panel.replay_requested.connect(got.append)
    panel.replay_button.click()
    assert got == [{"method": "POST", "path": "/api", "headers": [["x-a", "1"]], "body": "hi"}]
    assert replay_request(RequestView(id=1)) is None


def test_body_diff_is_line_by_line() -> None:
    assert body_diff("a\nb\n", "a\nc\n") == [(" ", "a"), ("-", "b"), ("+", "c")]


def test_pausing_the_inspector_freezes_the_list(qtbot) -> None:
    panel = InspectorPanel()
    qtbot.addWidget(panel)
    toggles: list = []
    panel.capture_toggled.connect(toggles.append)
    panel.append_requests([RequestSummary(1, method="GET", path="/a", status=200)])
    panel.pause_button.click()
    panel.append_requests([RequestSummary(2, method="GET", path="/b", status=200)])
    assert panel.request_ids() == [1] and toggles == [False]
    panel.pause_button.click()
    panel.append_requests([RequestSummary(3, method="GET", path="/c", status=200)])
    assert panel.request_ids() == [3, 1] and toggles == [False, True]


def test_double_clicking_a_log_line_opens_its_request(qtbot) -> None:
    logs = LogsPanel()
    qtbot.addWidget(logs)
    logs.append_logs(
        [
            {"plugin": "a", "level": "info", "message": "no request", "request_id": ""},
            {"plugin": "a", "level": "info", "message": "hello", "request_id": "r-7"},
        ]
    )
    got: list = []
    logs.request_activated.connect(got.append)
    logs.table.doubleClicked.emit(logs.proxy.index(0, 4))
    logs.table.doubleClicked.emit(logs.proxy.index(1, 4))
    assert got == ["r-7"]
    insp = InspectorPanel()
    qtbot.addWidget(insp)
    insp.append_requests([RequestSummary(5, request_id="r-7", method="GET", path="/", status=200)])
    assert insp.select_request_id("r-7") and not insp.select_request_id("r-8")
    assert insp.request_list.currentItem().data(0, Qt.ItemDataRole.UserRole) == 5


def test_composer_takes_a_replayed_request(qtbot) -> None:
    c = ComposerPanel()
    qtbot.addWidget(c)
    sent: list = []
    c.send_requested.connect(lambda *a: sent.append(a))
    c.fill({"method": "PUT", "path": "/p?q=1", "headers": [["x-a", "1"]], "body": "b"})
    c.send_button.click()
    assert sent == [("PUT", "/p?q=1", [("x-a", "1")], b"b")]
