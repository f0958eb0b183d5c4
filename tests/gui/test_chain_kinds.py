"""The chain panel shows HTTP and TCP (``type: NETWORK``) plugins apart (issue 9 §5): a
Type column, each kind numbered in its own chain, drags and the move buttons stay within
a kind, the intercept (HTTP requests only) lists only HTTP plugins; and the real engine's
snapshot carries the type the panel reads."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gui.main_window import MainWindow
from gui.plugin_panel import PluginListView, plugin_summary
from gui.workspace import Workspace
from host.proxy.config import effective_order, new_plugin, with_changes
from host.resources import demo_plugin
from tests.gui.fakes import FakeEngineService, plugin_snapshot
from tests.gui.helpers import drop_plugin


def test_tcp_plugins_are_listed_after_the_http_chain_with_their_type(qtbot) -> None:
    view = PluginListView()
    qtbot.addWidget(view)
    view.set_plugins(
        [
            plugin_snapshot("meter", type="NETWORK", state="running"),
            plugin_snapshot("a"),
            plugin_snapshot("b", type="HTTP"),
            plugin_snapshot("guard", type="NETWORK", state="failed", fail_strategy="FAIL_OPEN"),
        ]
    )
    rows = [
        [view.topLevelItem(i).text(c) for c in range(len(view.COLUMNS))]
        for i in range(view.topLevelItemCount())
    ]
    assert [(r[0], r[1], r[2], r[view.STATE_COLUMN]) for r in rows] == [
        ("1", "a", "HTTP", "running"),
        ("2", "b", "HTTP", "running"),
        ("1", "meter", "TCP", "running"),
        ("2", "guard", "TCP", "failed, skipped"),
    ]
    assert view.badges()["guard"] == "failed, skipped"
    assert view.kinds() == {"a": "HTTP", "b": "HTTP", "meter": "TCP", "guard": "TCP"}
    assert view.chain_index("guard") == 1 and view.chain_index("b") == 1
    assert "network (TCP) filter" in view.topLevelItem(2).toolTip(2)
    assert dict(plugin_summary(plugin_snapshot("meter", type="NETWORK")))["Type"].startswith("TCP")


def test_a_drag_never_crosses_from_one_kind_to_the_other(qtbot) -> None:
    view = PluginListView()
    qtbot.addWidget(view)
    view.resize(500, 300)
    view.show()
    view.set_plugins(
        [plugin_snapshot(n) for n in ("a", "b")]
        + [plugin_snapshot(n, type="NETWORK") for n in ("t1", "t2")]
    )
    moves: list[tuple[str, int]] = []
    view.plugin_moved.connect(lambda n, i: moves.append((n, i)))
    drop_plugin(view, "t2", "t1")  # above t1: first of the TCP chain
    drop_plugin(view, "a", "t1")  # above t1 is after b: the end of the HTTP chain
    # positions are in each kind's own chain (what the window's move_plugin takes)
    assert moves == [("t2", 0), ("a", 1)]
    # the drag cursor refuses a TCP plugin among HTTP ones (same phase, other kind)
    assert not view._phase_allows("t1", 0)
    assert not view._phase_allows("a", 3)  # after t2: among TCP plugins
    assert view._phase_allows("t2", 2)


@pytest.fixture
def window(qtbot, tmp_path: Path) -> tuple[MainWindow, FakeEngineService]:
    fake = FakeEngineService()
    base = fake.config
    wasm = str(demo_plugin("add_header"))
    tcp = [
        with_changes(new_plugin(n, wasm, priority=prio), type="NETWORK")
        for n, prio in (("meter", 20), ("guard", 10))
    ]
    fake._config = dataclasses.replace(base, plugins=(*base.plugins, *tcp))
    ws = Workspace.at(tmp_path / "ws.yaml")
    ws.load()
    w = MainWindow(fake, ws)
    qtbot.addWidget(w)
    w.show()
    fake.with_plugin_specs()
    fake.started.emit()
    fake.plugins_changed.emit(fake.plugins)
    return w, fake


def test_moving_a_tcp_plugin_reorders_the_tcp_chain_only(window) -> None:
    w, fake = window
    http_before = [p.name for p in effective_order(fake.config.plugins) if p.type == "HTTP"]
    w.plugin_list.select("guard")
    w.up_button.click()  # guard above meter
    applied = [c[1] for c in fake.calls if c[0] == "apply_config"]
    assert len(applied) == 1
    prio = {p.name: p.priority for p in applied[0].plugins}
    assert prio["guard"] > prio["meter"]
    tcp_after = [p.name for p in effective_order(applied[0].plugins) if p.type == "NETWORK"]
    assert tcp_after == ["guard", "meter"]
    # the HTTP chain's priorities did not move
    assert [p.name for p in effective_order(applied[0].plugins) if p.type == "HTTP"] == (
        http_before
    )
    w.plugin_list.select("body-rewrite")
    w.up_button.click()  # above add-header, in the HTTP chain: a normal move
    assert len([c for c in fake.calls if c[0] == "apply_config"]) == 2


def test_the_intercept_lists_only_http_plugins(window) -> None:
    w, _fake = window
    names = [
        w.intercept_panel.plugin_combo.itemText(i)
        for i in range(w.intercept_panel.plugin_combo.count())
    ]
    assert "meter" not in names and "guard" not in names
    assert "add-header" in names


def test_the_real_engine_publishes_the_type_the_panel_shows(qtbot, tmp_path: Path) -> None:
    from gui.engine_service import EngineService
    from gui.workspace import default_config_path
    from host.proxy.config import load_config

    base = load_config(default_config_path())
    tcp = with_changes(new_plugin("meter", str(demo_plugin("add_header"))), type="NETWORK")
    svc = EngineService(
        dataclasses.replace(base, plugins=(*base.plugins, tcp)),
        listen=("127.0.0.1", 0),
        admin=("127.0.0.1", 0),
    )
    try:
        with qtbot.waitSignal(svc.plugins_changed, timeout=15_000) as got:
            svc.start()
        plugins = got.args[0]
        assert plugins[-1].name == "meter" and plugins[-1].type == "NETWORK"
        assert {p.type for p in plugins[:-1]} == {"HTTP"}
        view = PluginListView()
        qtbot.addWidget(view)
        view.set_plugins(plugins)
        assert view.kinds()["meter"] == "TCP"
    finally:
        assert svc.close(10)


def test_the_details_of_a_tcp_plugin_say_so_and_offer_no_header_canary(qtbot) -> None:
    from gui.plugin_panel import PluginDetailsPanel

    panel = PluginDetailsPanel()
    qtbot.addWidget(panel)
    header = panel.canary_key_combo.findData("header")
    panel.show_plugin(plugin_snapshot("meter", type="NETWORK"), None)
    assert panel.title_label.text().endswith("· TCP (network filter)")
    assert not panel.canary_key_combo.model().item(header).isEnabled()
    panel.show_plugin(plugin_snapshot("add-header"), None)
    assert "TCP" not in panel.title_label.text()
    assert panel.canary_key_combo.model().item(header).isEnabled()
