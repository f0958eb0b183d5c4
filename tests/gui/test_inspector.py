"""The inspector's widgets (issue 12 items 1, 5, 6): a pinned selection rendered once,
"follow newest", the filter bar, sortable columns, Request/Response tabs, "not reached"
hops, named callback results, curl/HAR export, the intercept tab, the load generator's
bounds and its achieved-vs-planned line."""

from __future__ import annotations

import dataclasses
import json
import shlex
from typing import Any

import pytest
from PySide6.QtCore import Qt

from gui.composer_panel import ComposerPanel
from gui.inspector_export import (
    callback_result_name,
    hop_not_reached,
    parse_filter,
    record_to_curl,
    record_to_har,
)
from gui.inspector_panel import InspectorPanel
from gui.intercept_panel import InterceptPanel, parse_header_lines
from gui.main_window import MainWindow
from gui.traffic import check_load_input, load_status
from host.proxy.request_views import HeldView, HopView, RequestSummary, RequestView
from tests.gui.fakes import FakeEngineService


def _summary(i: int, **kw: Any) -> RequestSummary:
    s = RequestSummary(
        id=i,
        request_id=f"r-{i}",
        method="GET",
        path=f"/p{i}",
        status=200,
        duration_ms=float(i),
        started=1.7e9 + i,
        plugins=("auth", "add-header"),
        changed_by=("add-header",),
    )
    return dataclasses.replace(s, **kw)


def _record(i: int = 7) -> RequestView:
    return RequestView.from_dict(_record_json(i))


def _record_json(i: int) -> dict[str, Any]:
    """The record as the admin API's ``/requests`` has it."""
    return {
        "id": i,
        "request_id": f"r-{i}",
        "method": "POST",
        "path": "/api/echo?x=1",
        "authority": "127.0.0.1:10000",
        "status": 403,
        "duration_ms": 1.5,
        "started": 1.7e9,
        "outcome": "reply",
        "hops": [
            {
                "plugin": "auth",
                "mode": "enforce",
                "ran": True,
                "request_headers_before": [
                    [":method", "POST"],
                    [":path", "/api/echo?x=1"],
                    ["host", "127.0.0.1:10000"],
                    ["content-type", "text/plain"],
                    ["x-it's", "a quote"],
                ],
                "request_headers_after": [
                    [":method", "POST"],
                    [":path", "/api/echo?x=1"],
                    ["content-type", "text/plain"],
                ],
                "request_body_before": "hello 'world'",
                "request_body_after": "hello 'world'",
                "response_headers_before": [[":status", "403"], ["content-type", "text/plain"]],
                "response_headers_after": [
                    [":status", "403"],
                    ["content-type", "text/plain"],
                    ["x-denied", "1"],
                ],
                "local_reply": {"status": 403, "details": "no_token", "headers": [], "body": "no"},
                "callbacks": [
                    {"name": "proxy_on_request_headers", "result": 1, "us": 5.0},
                    {"name": "proxy_on_request_body", "result": 1, "us": 2.0},
                    {"name": "proxy_on_response_headers", "result": 0, "us": 1.0},
                    {"name": "proxy_on_log", "result": None, "us": 1.0},
                ],
                "would": [],
            },
            {
                "plugin": "add-header",
                "mode": "enforce",
                "ran": True,
                "callbacks": [],
                "would": [],
            },
        ],
    }


# -- item 1: the selection ------------------------------------------------------------------


def test_the_selection_stays_pinned_to_its_record_as_rows_arrive_and_leave(qtbot) -> None:
    panel = InspectorPanel(capacity=5)
    qtbot.addWidget(panel)
    asked: list[int] = []
    panel.request_selected.connect(asked.append)
    panel.append_requests([_summary(i) for i in range(1, 6)])
    panel.select_request(2)
    assert asked == [2]
    panel.show_details(_record(2))
    for start in range(6, 60, 3):  # the poll's batches: the selected row would fall off
        panel.append_requests([_summary(i) for i in range(start, start + 3)])
    assert asked == [2]  # asked once: no refetch per poll
    assert panel.renders == 1  # rendered once
    item = panel.request_list.currentItem()
    assert item is not None and item.data(0, Qt.ItemDataRole.UserRole) == 2
    ids = panel.request_ids()
    assert 2 in ids and len(ids) == 5  # kept (pinned) within capacity
    assert ids[:4] == [59, 58, 57, 56]
    assert panel.shown_id == 2
    # a late answer for another record does not replace the shown one
    panel.show_details(_record(9))
    assert panel.shown_id == 2 and panel.renders == 1
    # selecting another row asks once for it
    panel.select_request(58)
    assert asked == [2, 58]


def test_follow_newest_selects_the_newest_at_most_once_a_second(qtbot) -> None:
    panel = InspectorPanel(capacity=50)
    qtbot.addWidget(panel)
    asked: list[int] = []
    panel.request_selected.connect(asked.append)
    panel.append_requests([_summary(i) for i in range(1, 4)])
    panel.follow_check.setChecked(True)
    assert asked == [3]
    panel.append_requests([_summary(4)])
    assert asked == [3]  # within the second: not yet
    panel._followed_at -= 1.0  # a second later
    panel.append_requests([_summary(5)])
    assert asked == [3, 5]
    panel.follow_check.setChecked(False)
    panel._followed_at -= 1.0
    panel.append_requests([_summary(6)])
    assert asked == [3, 5]


# -- item 6: the list -------------------------------------------------------------------------


def test_filter_bar_terms_and_a_bad_term(qtbot) -> None:
    panel = InspectorPanel()
    qtbot.addWidget(panel)
    panel.append_requests(
        [
            _summary(1),
            _summary(2, status=503, path="/api/orders", failed="auth"),
            _summary(3, method="POST", path="/api/echo", changed_by=()),
            _summary(4, status=404, plugins=("auth",), changed_by=()),
        ]
    )
    cases = {
        "status:5xx": [2],
        "status:404": [4],
        "method:post": [3],
        "path:/api": [3, 2],
        "api": [3, 2],
        "plugin:add-header": [3, 2, 1],
        "changed:add-header": [2, 1],
        "failed": [2],
        "path:/api failed": [2],
        "": [4, 3, 2, 1],
    }
    for text, want in cases.items():
        panel.set_filter(text)
        assert panel.visible_request_ids() == want, text
    panel.set_filter("status:5xx")
    assert panel.count_label.text() == "1 of 4 most recent requests"
    panel.append_requests([_summary(5, status=500), _summary(6)])
    assert panel.visible_request_ids() == [5, 2]  # new rows are filtered too
    panel.set_filter("colour:red")
    assert panel.filter_error.isVisibleTo(panel)
    assert "unknown filter 'colour'" in panel.filter_error.text()
    assert panel.visible_request_ids() == [5, 2]  # the last good filter holds
    with pytest.raises(ValueError, match="status: expected a code"):
        parse_filter("status:abc")


def test_columns_sort_numerically_and_back(qtbot) -> None:
    panel = InspectorPanel()
    qtbot.addWidget(panel)
    panel.append_requests(
        [_summary(1, status=503), _summary(2, status=200), _summary(10, status=404)]
    )
    assert panel.request_ids() == [10, 2, 1]  # newest first, by number (10 > 2)
    panel.request_list.sortByColumn(4, Qt.SortOrder.AscendingOrder)
    assert [r[4] for r in panel.rows()] == ["200", "404", "503"]
    panel.request_list.sortByColumn(5, Qt.SortOrder.DescendingOrder)  # ms
    assert panel.request_ids() == [10, 2, 1]
    panel.request_list.sortByColumn(0, Qt.SortOrder.DescendingOrder)
    panel.append_requests([_summary(11)])
    assert panel.request_ids()[0] == 11


# -- item 6: the details ----------------------------------------------------------------------


def test_request_and_response_tabs_not_reached_and_named_results(qtbot) -> None:
    panel = InspectorPanel()
    qtbot.addWidget(panel)
    panel.append_requests([_summary(7)])
    panel.select_request(7)
    panel.show_details(_record())
    hops = panel.detail_view.toPlainText()
    assert "not reached" in hops
    assert "enforce 0.0 µs" not in hops
    assert "on_request_headers\nStopIteration\n5.0" in hops
    assert "on_request_body\nStopIterationAndBuffer\n2.0" in hops
    assert "on_response_headers\nContinue\n1.0" in hops
    assert "on_log\n—\n1.0" in hops
    req = panel.request_view.toPlainText()
    assert "headers as the client sent them" in req and "x-it's: a quote" in req
    assert "headers as upstream received them" in req  # they differ
    assert "body as the client sent it\nhello 'world'" in req
    resp = panel.response_view.toPlainText()
    assert "local reply 403 (no_token): upstream was not asked" in resp
    assert "x-denied: 1" in resp
    assert [panel.detail_tabs.tabText(i) for i in range(3)] == [
        "Plugin hops",
        "Request",
        "Response",
    ]


def test_callback_result_names() -> None:
    assert callback_result_name("proxy_on_request_headers", 0) == "Continue"
    assert callback_result_name("proxy_on_response_headers", 4) == "StopAllIterationAndWatermark"
    assert callback_result_name("proxy_on_response_body", 3) == "StopIterationNoBuffer"
    assert callback_result_name("proxy_on_request_trailers", 1) == "StopIteration"
    assert callback_result_name("proxy_on_configure", 1) == "true"
    assert callback_result_name("proxy_on_request_headers", 9) == "9"
    assert callback_result_name("proxy_on_request_headers", "trap") == "trap"
    assert not hop_not_reached(HopView("p", ran=False))
    assert hop_not_reached(HopView("p", ran=True))
    failed = HopView.from_dict({"plugin": "p", "ran": True, "failure": {"kind": "x"}})
    assert not hop_not_reached(failed)


def test_export_as_curl_and_har(qtbot, tmp_path) -> None:
    rec = _record()
    cmd = record_to_curl(rec, "http://127.0.0.1:10000")
    argv = shlex.split(cmd)  # quoting survives a shell
    assert argv[:4] == ["curl", "-X", "POST", "http://127.0.0.1:10000/api/echo?x=1"]
    i = argv.index("x-it's: a quote")
    assert argv[i - 1] == "-H"
    assert "host: 127.0.0.1:10000" not in argv and ":method: POST" not in " ".join(argv)
    assert argv[-2:] == ["--data-binary", "hello 'world'"]
    har = record_to_har(rec)
    entry = har["log"]["entries"][0]
    assert har["log"]["version"] == "1.2"
    assert entry["request"]["url"] == "http://127.0.0.1:10000/api/echo?x=1"
    assert {"name": "content-type", "value": "text/plain"} in entry["request"]["headers"]
    assert entry["request"]["postData"]["text"] == "hello 'world'"
    assert entry["response"]["status"] == 403
    assert {"name": "x-denied", "value": "1"} in entry["response"]["headers"]
    assert entry["_hops"][0]["plugin"] == "auth"
    # through the panel: enabled once a record is shown, the file is valid JSON
    panel = InspectorPanel()
    qtbot.addWidget(panel)
    assert not panel.curl_button.isEnabled() and panel.save_har("x") == "no request is shown"
    panel.base_url = "http://127.0.0.1:10000"
    panel.append_requests([_summary(7)])
    panel.select_request(7)
    panel.show_details(rec)
    assert panel.curl_button.isEnabled() and panel.curl_text() == cmd
    panel.curl_button.click()
    from PySide6.QtGui import QGuiApplication

    assert QGuiApplication.clipboard().text() == cmd
    path = tmp_path / "r.har"
    assert panel.save_har(str(path)) == ""
    assert json.loads(path.read_text())["log"]["entries"][0]["_requestId"] == "r-7"
    assert "r.har" in panel.save_har(str(tmp_path / "missing" / "r.har"))


# -- intercept tab ------------------------------------------------------------------------------


def test_intercept_tab_arms_edits_and_resumes(qtbot) -> None:
    panel = InterceptPanel()
    qtbot.addWidget(panel)
    got: list[Any] = []
    panel.arm_requested.connect(lambda *a: got.append(("arm", a)))
    panel.resume_requested.connect(lambda *a: got.append(("resume", a)))
    panel.arm_button.click()
    assert got == [] and "load a plugin first" in panel.rule_label.text()
    panel.set_plugins(["auth", "add-header"])
    panel.plugin_combo.setCurrentText("add-header")
    panel.stage_combo.setCurrentIndex(1)
    panel.path_edit.setText("/api")
    panel.arm_button.click()
    assert got == [("arm", ("add-header", "request_body", "/api"))]
    held = HeldView(
        id=3,
        plugin="add-header",
        stage="request_body",
        method="POST",
        path="/api/x",
        headers=((":method", "POST"), (":path", "/api/x"), ("x-a", "1")),
        body="abc",
        held_at=1e12,
        timeout_s=60,
    )
    panel.show_held([held])
    assert "#3 POST /api/x at add-header" in panel.held_list.item(0).text()
    assert panel.headers_edit.toPlainText() == ":method: POST\n:path: /api/x\nx-a: 1"
    assert panel.body_edit.isEnabled() and panel.body_edit.toPlainText() == "abc"
    assert panel.headers_edit.isReadOnly()  # at the body, the head has gone upstream
    panel.body_edit.setPlainText("xyz")
    panel.resume_button.click()
    assert got[-1] == ("resume", (3, None, "xyz"))
    # another one caught meanwhile: the editor keeps the one being edited
    panel.headers_edit.setPlainText("in progress")
    panel.show_held([held, dataclasses.replace(held, id=4, stage="request_headers", body=None)])
    assert panel.headers_edit.toPlainText() == "in progress"
    # 3 went on
    panel.show_held([dataclasses.replace(held, id=4, stage="request_headers", body=None)])
    assert not panel.headers_edit.isReadOnly() and not panel.body_edit.isEnabled()
    panel.headers_edit.setPlainText(":method: POST\n:path: /api/y\nX-B: 2")
    panel.resume_button.click()
    edited = [[":method", "POST"], [":path", "/api/y"], ["x-b", "2"]]
    assert got[-1] == ("resume", (4, edited, None))
    panel.headers_edit.setPlainText("no colon here")
    panel.resume_button.click()
    assert "line 1: expected 'name: value'" in panel.error_label.text()
    panel.unchanged_button.click()
    assert got[-1] == ("resume", (4, None, None))
    panel.show_held([])
    assert panel.held_list.count() == 0 and not panel.resume_button.isEnabled()
    with pytest.raises(ValueError):
        parse_header_lines("bad name: x")


# -- item 5: the load generator ----------------------------------------------------------------


def test_load_input_out_of_range_is_refused_with_a_message_not_clamped(qtbot) -> None:
    c = ComposerPanel()
    qtbot.addWidget(c)
    asked: list[Any] = []
    c.load_requested.connect(lambda *a: asked.append(a))
    c.seconds_spin.clear()
    qtbot.keyClicks(c.seconds_spin, "130")
    assert c.seconds_spin.value() == 130  # typed as typed (it used to become 13)
    c.load_button.click()
    assert asked == []
    assert "duration 130 s is out of range: use 0.5 to 120 s" in c.load_result_label.text()
    c.seconds_spin.setValue(2)
    c.rps_spin.setValue(2500)
    c.load_button.click()
    assert asked == [] and "rate 2500 req/s is out of range" in c.load_result_label.text()
    c.rps_spin.setValue(300)
    c.load_button.click()
    assert asked == [(300.0, 2.0)]
    assert check_load_input(0, 1) and check_load_input(1, 0.1) and not check_load_input(1, 0.5)


def test_load_status_says_achieved_vs_planned_and_when_it_cannot_keep_up() -> None:
    text, behind = load_status(590, 6000, 300, 2.0)
    assert text == "traffic 590/6000 · 295 of 300 req/s" and not behind
    text, behind = load_status(300, 6000, 300, 2.0)
    assert behind and text.endswith("cannot keep up")
    done = {"planned": 6000, "sent": 3332, "elapsed_s": 30.0, "errors": 0, "cancelled": False}
    text, behind = load_status(0, 0, 300, 0, done)
    assert behind
    assert text.startswith("traffic done: 3332/6000 sent · 111 of 300 req/s · could not keep up")
    stopped = dict(done, cancelled=True)
    text, behind = load_status(0, 0, 300, 0, stopped)
    assert text.startswith("traffic stopped: 3332/6000 sent") and not behind


def test_stop_sits_next_to_generate_traffic_and_the_header_tells_the_truth(qtbot) -> None:
    svc = FakeEngineService()
    window = MainWindow(svc)
    qtbot.addWidget(window)
    svc.started.emit()
    hl = window.generate_button.parentWidget().layout()
    assert hl.indexOf(window.stop_traffic_button) == hl.indexOf(window.generate_button) + 1
    assert not window.stop_traffic_button.isEnabled()
    window.generate_button.click()
    assert window.stop_traffic_button.isEnabled() and not window.generate_button.isEnabled()
    window.stop_traffic_button.click()
    assert ("stop_traffic", None) in svc.calls
    svc.traffic_finished.emit(
        {"planned": 6000, "sent": 3332, "elapsed_s": 30.0, "rps": 300.0, "cancelled": False}
    )
    assert "3332/6000 sent" in window.traffic_label.text()
    assert "could not keep up" in window.traffic_label.text()
    assert "d29922" in window.traffic_label.styleSheet()
    assert not window.stop_traffic_button.isEnabled() and window.generate_button.isEnabled()


def test_held_requests_reach_the_intercept_tab(qtbot) -> None:
    svc = FakeEngineService()
    window = MainWindow(svc)
    qtbot.addWidget(window)
    window.inspector_panel.intercept_button.click()
    assert window.tabs.currentWidget() is window.intercept_panel
    svc.intercepts_changed.emit(
        (HeldView(1, "a", "request_headers", "GET", "/", held_at=1e12, timeout_s=60),)
    )
    assert window.tabs.tabText(window.tabs.indexOf(window.intercept_panel)) == "Intercept (1)"
    window.intercept_panel.unchanged_button.click()
    assert ("resume_intercept", (1, None, None)) in svc.calls
