"""The app's lab: A/B of two builds on a session (table with a "differs" column, the
diff view), Reproduce of a crash session, the failure panel's Reproduce button, and
Record through the real engine."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from gui.lab_panel import LabPanel
from gui.plugin_panel import PluginDetailsPanel
from host.proxy.snapshots import FailureView, PluginSnapshot, PluginState
from tests.gui.helpers import send
from tests.lab.lab_wat import lab_probe


def _har(path: Path, trap_at: int | None = None, n: int = 3) -> Path:
    entries = []
    for i in range(n):
        headers = [{"name": "accept", "value": "*/*"}]
        if i == trap_at:
            headers.append({"name": "x-trap", "value": "1"})
        entries.append(
            {
                "request": {"method": "GET", "url": f"http://x.test/r/{i}", "headers": headers},
                "response": {"status": 200, "headers": [], "content": {"text": "ok"}},
            }
        )
    path.write_text(json.dumps({"log": {"version": "1.2", "entries": entries}}))
    return path


def test_ab_table_and_diff_view(qtbot, tmp_path) -> None:
    a, b = tmp_path / "a.wasm", tmp_path / "b.wasm"
    a.write_bytes(lab_probe("aaaaa"))
    b.write_bytes(lab_probe("bbbbb"))
    panel = LabPanel()
    qtbot.addWidget(panel)
    panel.session_edit.setText(str(_har(tmp_path / "s.har")))
    panel.a_edit.setText(str(a))
    panel.b_edit.setText(str(b))
    panel.root_id_edit.setText("lab_probe")
    panel.compare_button.click()
    qtbot.waitUntil(lambda: panel.result is not None, timeout=30_000)
    assert panel.differs_column() == ["request_headers"] * 3
    assert panel.status_label.text() == "3 requests: 0 identical, 3 different"
    text = panel.detail_view.toPlainText()
    assert "- x-build: aaaaa" in text and "+ x-build: bbbbb" in text
    # where the time went, per callback, with the host calls by name
    assert "where the time goes" in text
    assert "proxy_on_request_headers" in text and "proxy_get_current_time_nanoseconds ×1" in text
    # one module, two configurations: identical (the probe ignores its config)
    panel.result = None
    panel.b_edit.setText("")
    panel.config_b_edit.setText('{"x": 1}')
    panel.compare()
    qtbot.waitUntil(lambda: panel.result is not None, timeout=30_000)
    assert panel.differs_column() == ["", "", ""]
    # bad input: a message, no crash
    panel.a_edit.setText(str(tmp_path / "missing.wasm"))
    panel.compare()
    qtbot.waitUntil(lambda: "cannot read" in panel.status_label.text(), timeout=30_000)


def test_reproduce_shows_the_trap_and_its_backtrace(qtbot, tmp_path) -> None:
    a = tmp_path / "a.wasm"
    a.write_bytes(lab_probe())
    panel = LabPanel()
    qtbot.addWidget(panel)
    panel.session_edit.setText(str(_har(tmp_path / "s.har", trap_at=2)))
    panel.a_edit.setText(str(a))
    panel.root_id_edit.setText("lab_probe")
    panel.reproduce_button.click()
    qtbot.waitUntil(lambda: panel.reproduced is not None, timeout=30_000)
    assert "reproduced on request #2: unreachable in proxy_on_request_headers" in (
        panel.status_label.text()
    )
    assert "boom" in panel.detail_view.toPlainText()


def test_failure_panel_reproduce_button(qtbot) -> None:
    d = PluginDetailsPanel()
    qtbot.addWidget(d)
    p = PluginSnapshot(
        "probe",
        PluginState.FAILED,
        root_id="lab_probe",
        failure=FailureView(
            "RUNTIME_ERROR",
            "unreachable",
            "boom",
            callback="proxy_on_request_headers",
            session="/data/crashes/crash-probe.har",
        ),
    )
    d.show_plugin(p, None)
    assert d.reproduce_button.isEnabled()
    with qtbot.waitSignal(d.reproduce_requested) as got:
        d.reproduce_button.click()
    assert got.args == ["probe", "/data/crashes/crash-probe.har"]
    d.show_plugin(dataclasses.replace(p, failure=None), None)
    assert not d.reproduce_button.isEnabled()


def test_record_toggle_records_through_the_real_engine(qtbot, app_window, tmp_path, monkeypatch):
    monkeypatch.setenv("WASMDESK_DATA_DIR", str(tmp_path / "data"))
    window, service = app_window
    lab = window.lab_panel
    with qtbot.waitSignal(service.recording_changed, timeout=10_000) as on:
        lab.record_button.click()
    assert on.args[0] is True
    path = Path(on.args[1])
    assert path.parent == tmp_path / "data" / "recordings"
    send(qtbot, window, "/hello")
    qtbot.waitUntil(lambda: len(json.loads(path.read_text())["log"]["entries"]) >= 1, timeout=5000)
    with qtbot.waitSignal(service.recording_changed, timeout=10_000) as off:
        lab.record_button.click()
    assert off.args == [False, str(path)]
    assert lab.session_edit.text() == str(path)  # ready to replay or compare


def test_failure_panel_reproduce_replays_the_crash_in_the_lab(
    qtbot, app_window, tmp_path, monkeypatch
) -> None:
    import dataclasses

    from host.proxy.config import new_plugin

    monkeypatch.setenv("WASMDESK_DATA_DIR", str(tmp_path / "data"))
    window, service = app_window
    wasm = tmp_path / "probe.wasm"
    wasm.write_bytes(lab_probe())
    spec = new_plugin("probe", str(wasm), plugin_name="lab_probe", fail_strategy="FAIL_OPEN")
    with qtbot.waitSignal(service.config_applied, timeout=10_000):
        service.apply_config(dataclasses.replace(service.config, plugins=(spec,)))
    send(qtbot, window, "/one")
    send(qtbot, window, "/boom", headers="x-trap: 1")
    window.plugin_list.select("probe")
    details = window.plugin_details
    qtbot.waitUntil(details.reproduce_button.isEnabled, timeout=5_000)
    details.reproduce_button.click()
    lab = window.lab_panel
    assert window.tabs.currentWidget() is lab
    assert lab.a_edit.text() == str(wasm) and lab.root_id_edit.text() == "lab_probe"
    qtbot.waitUntil(lambda: lab.reproduced is not None, timeout=30_000)
    assert "reproduced on request #1: unreachable" in lab.status_label.text()
    assert "boom" in lab.detail_view.toPlainText()
