"""The Mocks tab: rules edited in a table, checked like a --mocks file, loaded and
saved as YAML, and applied to the real engine: a plugin's callout gets the mock's
answer through the proxy."""

from __future__ import annotations

import dataclasses
import json

from gui.mocks_panel import MocksPanel
from host.lab.mocks import parse_mocks
from host.proxy.config import new_plugin
from host.resources import demo_plugin
from tests.gui.helpers import send


def test_table_rules_are_checked_and_round_trip_as_yaml(qtbot, tmp_path) -> None:
    panel = MocksPanel()
    qtbot.addWidget(panel)
    panel.add_rule({"cluster": "auth", "path": "/check", "status": 200, "body": "alice"})
    panel.add_rule({"cluster": "authz", "failure": "timeout", "delay_ms": 20})
    assert panel.rules() == [
        {"cluster": "auth", "path": "/check", "status": 200, "body": "alice"},
        {"cluster": "authz", "delay_ms": 20.0, "failure": "timeout"},
    ]
    with qtbot.waitSignal(panel.mocks_applied) as got:
        assert panel.apply()
    assert len(got.args[0]) == 2
    assert "answered here" in panel.message_label.text()
    path = tmp_path / "mocks.yaml"
    panel.save(str(path))
    other = MocksPanel()
    qtbot.addWidget(other)
    assert other.load(str(path))
    assert parse_mocks(other.rules()) == parse_mocks(panel.rules())
    # a bad cell: a message naming the row and field, nothing applied
    other.add_rule({"cluster": "x", "failure": "explode"})
    emitted: list = []
    other.mocks_applied.connect(emitted.append)
    assert not other.apply()
    assert "mocks[2].failure" in other.message_label.text() and emitted == []


def test_applied_mocks_answer_a_plugins_callout_in_the_real_engine(qtbot, app_window) -> None:
    window, service = app_window
    callout = new_plugin(
        "callout",
        str(demo_plugin("callout")),
        plugin_name="callout",
        plugin_config={"cluster": "auth", "path": "/check"},
    )
    config = dataclasses.replace(service.config, plugins=(callout,))
    with qtbot.waitSignal(service.config_applied, timeout=10_000) as applied:
        service.apply_config(config)
    assert applied.args[0] == []
    # without mocks: no cluster "auth" here, the plugin answers 503
    assert send(qtbot, window, "/x")["status"] == 503
    panel = window.mocks_panel
    panel.add_rule({"cluster": "auth", "path": "/check", "body": "from-the-table"})
    panel.apply()
    qtbot.waitUntil(lambda: send(qtbot, window, "/x")["status"] == 200, timeout=5_000)
    echoed = json.loads(send(qtbot, window, "/x")["body"])
    assert {k.lower(): v for k, v in echoed["headers"].items()}["x-auth-result"] == "from-the-table"
    assert window.lab_panel.mocks == panel.applied  # the Lab's replays use them too
