"""The graphs (issue 12 items 2, 3, 7): the grid reflows and the picker collapses, the
redraw cost does not grow with the app's age, and the Grafana habits (hover values,
legend click to isolate, drag zoom with pause/live, change markers, a removed plugin
leaves the legend, "would act" counts requests). Real widgets, real ``StatsStore``
snapshots on a controlled clock."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, Qt

from gui.stats_panel import PICKER_COLLAPSE_BELOW, RATE_HZ, StatsPanel
from host.proxy.stats import StatsStore


def _feed(panel: StatsPanel, store: StatsStore, now: list[float], seconds: float) -> None:
    total = store.counter("http.downstream_rq_total")
    ok = store.counter("http.downstream_rq_2xx")
    err = store.counter("http.downstream_rq_5xx")
    cb = store.histogram("wasm.add-header.callback_time_us")
    for _ in range(int(seconds * RATE_HZ)):
        now[0] += 1.0 / RATE_HZ
        total.inc(30)
        ok.inc(20)
        err.inc(10)
        cb.record(40.0)
        panel.update_stats(store.snapshot())


def _plots_fit(panel: StatsPanel) -> bool:
    """Every graph is readable (at least 150 px tall) and fits the visible width: nothing
    hidden to the right, nothing needs a splitter dragged (a narrow column scrolls)."""
    width = panel.plot_scroll.viewport().width()
    height = panel.plot_area.height()
    for plot in panel.plots.values():
        r = plot.item.sceneBoundingRect()
        if r.width() < 250 or r.height() < 150 or r.right() > width or r.bottom() > height:
            return False
    return True


def test_grid_reflows_to_one_column_and_the_picker_collapses_when_narrow(qtbot) -> None:
    panel = StatsPanel()
    qtbot.addWidget(panel)
    panel.resize(1560, 800)  # a wide window: two columns and the picker open
    panel.show()
    qtbot.waitUntil(lambda: panel.picker.isVisible() and panel.columns == 2, timeout=2000)
    qtbot.waitUntil(lambda: _plots_fit(panel), timeout=2000)
    panel.resize(980, 760)  # the Graphs tab of a 1400x900 window
    assert PICKER_COLLAPSE_BELOW > 980
    qtbot.waitUntil(lambda: not panel.picker.isVisible() and panel.columns == 2, timeout=2000)
    qtbot.waitUntil(lambda: _plots_fit(panel), timeout=2000)
    panel.resize(620, 560)  # the Graphs tab of a 1024x700 window
    qtbot.waitUntil(lambda: panel.columns == 1, timeout=2000)
    qtbot.waitUntil(lambda: _plots_fit(panel), timeout=2000)
    # the picker opens on demand, and the graphs make room for it
    panel.resize(980, 760)
    qtbot.waitUntil(lambda: panel.columns == 2, timeout=2000)
    panel.picker_button.click()
    assert panel.picker.isVisible() and panel.picker_button.isChecked()
    qtbot.waitUntil(lambda: panel.columns == 1, timeout=2000)
    qtbot.waitUntil(lambda: _plots_fit(panel), timeout=2000)
    panel.resize(1560, 800)  # a user's choice sticks when the width changes
    qtbot.wait(50)
    assert panel.picker.isVisible()


def test_redraw_cost_does_not_grow_with_the_apps_age(qtbot) -> None:
    now = [1000.0]
    store = StatsStore(clock=lambda: now[0])
    panel = StatsPanel()
    qtbot.addWidget(panel)
    panel.update_stats(store.snapshot())
    _feed(panel, store, now, 70)
    n_early = len(panel.curve_data("rq_total")[0])
    _feed(panel, store, now, 230)  # five minutes in: the ring is full
    x, y = panel.curve_data("rq_total")
    # only the visible minute (and the point before it) goes to the curve
    assert len(x) == n_early <= 60 * RATE_HZ + 2
    assert x[0] <= -60.0 < x[1] and x[-1] == 0.0
    assert np.allclose(y[1:], 300.0)
    assert len(panel.series("rq_total")[0]) == 300 * RATE_HZ  # the history is all kept
    # nothing new: a redraw touches no curve
    before = {k: p.redraws for k, p in panel.plots.items()}
    panel.redraw()
    assert {k: p.redraws for k, p in panel.plots.items()} == before
    # the 15-second window hands out 15 seconds
    panel.window_combo.setCurrentIndex(2)
    assert len(panel.curve_data("rq_total")[0]) <= 15 * RATE_HZ + 2


def test_hover_shows_the_values_under_the_pointer(qtbot) -> None:
    now = [50.0]
    store = StatsStore(clock=lambda: now[0])
    panel = StatsPanel()
    qtbot.addWidget(panel)
    panel.update_stats(store.snapshot())
    _feed(panel, store, now, 3)
    text = panel.hover("classes", -1.0)
    assert text.startswith("1.0 s ago:") and "2xx 200" in text and "5xx 100" in text
    assert panel.hover_label.text() == text
    # a real mouse move over a graph does the same
    panel.resize(1000, 700)
    panel.show()
    qtbot.waitExposed(panel)
    vb = panel.plots["requests"].item.getViewBox()
    view_pt = panel.plot_area.mapFromScene(vb.mapViewToScene(QPointF(-1.0, 0.5)))
    panel.hover_label.clear()
    qtbot.mouseMove(panel.plot_area.viewport(), view_pt)
    qtbot.waitUntil(lambda: "all 300" in panel.hover_label.text(), timeout=2000)
    line = panel._hover_line
    assert line is not None and line.getViewBox() is vb
    # into another graph: the line follows
    panel.hover("latency", -2.0)
    lat_vb = panel.plots["latency"].item.getViewBox()
    assert line.getViewBox() is lat_vb
    assert line.value() == -2.0


def test_a_legend_click_isolates_a_curve_and_a_second_shows_all(qtbot) -> None:
    now = [50.0]
    store = StatsStore(clock=lambda: now[0])
    panel = StatsPanel()
    qtbot.addWidget(panel)
    panel.resize(1000, 700)
    panel.show()
    qtbot.waitExposed(panel)
    panel.update_stats(store.snapshot())
    _feed(panel, store, now, 2)
    before = panel.plots["classes"].y_top
    assert before > 200  # 200/s of 2xx, with room above for the legend
    legend = panel.plots["classes"].item.legend
    sample = next(s for s, label in legend.items if label.text == "5xx")
    center = sample.sceneBoundingRect().center()
    pos = panel.plot_area.mapFromScene(center)
    qtbot.mouseClick(panel.plot_area.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    qtbot.waitUntil(lambda: panel.visible_curves("classes") == ["rq_5xx"], timeout=2000)
    # the y range follows what is shown: 100/s of 5xx, not the 200/s of 2xx
    assert 100 < panel.plots["classes"].y_top < before
    qtbot.mouseClick(panel.plot_area.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    qtbot.waitUntil(lambda: len(panel.visible_curves("classes")) == 4, timeout=2000)


def test_drag_zoom_pauses_the_graphs_and_live_resumes(qtbot) -> None:
    now = [50.0]
    store = StatsStore(clock=lambda: now[0])
    panel = StatsPanel()
    qtbot.addWidget(panel)
    panel.resize(1000, 700)
    panel.show()
    qtbot.waitExposed(panel)
    panel.update_stats(store.snapshot())
    _feed(panel, store, now, 5)
    vb = panel.plots["requests"].item.getViewBox()
    a = panel.plot_area.mapFromScene(vb.mapViewToScene(QPointF(-40.0, 0.8)))
    b = panel.plot_area.mapFromScene(vb.mapViewToScene(QPointF(-10.0, 0.2)))
    vp = panel.plot_area.viewport()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=a)
    for i in range(1, 11):
        qtbot.mouseMove(vp, a + (b - a) * i / 10)
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=b)
    qtbot.waitUntil(lambda: not panel.live, timeout=2000)
    assert panel.live_button.text() == "Paused"
    x0, x1 = vb.viewRange()[0]
    assert -45 < x0 < -35 and -15 < x1 < -5  # zoomed into the dragged box
    frozen = panel.curve_data("rq_total")[0].copy()
    _feed(panel, store, now, 1)  # data keeps being recorded, the picture holds still
    assert np.array_equal(panel.curve_data("rq_total")[0], frozen)
    assert len(panel.series("rq_total")[0]) == 60
    panel.live_button.click()
    assert panel.live and vb.viewRange()[0] == [-60.0, 0.0]
    assert len(panel.curve_data("rq_total")[0]) == 60


def test_markers_follow_their_moment_and_removed_plugins_leave_the_legend(qtbot) -> None:
    now = [50.0]
    store = StatsStore(clock=lambda: now[0])
    panel = StatsPanel()
    qtbot.addWidget(panel)
    panel.update_stats(store.snapshot())
    _feed(panel, store, now, 1)
    panel.add_marker("add-header: mode log-only")
    _x, _t, lines = panel.markers[0]
    assert len(lines) == len(panel.plots) and lines[0].value() == 0.0
    _feed(panel, store, now, 2)
    assert abs(lines[0].value() + 2.0) < 1e-6  # two seconds ago now
    assert panel.marker_texts() == ["add-header: mode log-only"]
    assert "time:add-header" in panel.plots["plugin_time"].curves
    legend = panel.plots["plugin_time"].item.legend
    assert any(label.text == "add-header" for _s, label in legend.items)
    panel.prune_plugins(["auth-token"])
    assert "time:add-header" not in panel.plots["plugin_time"].curves
    assert not any(label.text == "add-header" for _s, label in legend.items)
    # the engine keeps the removed plugin's stats: they do not bring the curve back
    _feed(panel, store, now, 1)
    assert "time:add-header" not in panel.plots["plugin_time"].curves
    panel.prune_plugins(["auth-token", "add-header"])  # it is back in the chain
    _feed(panel, store, now, 1)
    assert "time:add-header" in panel.plots["plugin_time"].curves


def test_would_act_counts_requests_not_intents(qtbot) -> None:
    now = [0.0]
    store = StatsStore(clock=lambda: now[0])
    panel = StatsPanel()
    qtbot.addWidget(panel)
    panel.update_stats(store.snapshot())
    for _ in range(3):
        now[0] += 0.1
        # five requests, each with two intents (request and response headers)
        store.counter("wasm.add.log_only.would_mutate_request_headers").inc(5)
        store.counter("wasm.add.log_only.would_mutate_response_headers").inc(5)
        store.counter("wasm.add.log_only.requests_would_act").inc(5)
        panel.update_stats(store.snapshot())
    assert np.allclose(panel.series("would:add")[1], 50.0)  # not 100


def test_legends_fit_the_width_and_stay_above_the_curves(qtbot) -> None:
    now = [50.0]
    store = StatsStore(clock=lambda: now[0])
    panel = StatsPanel()
    qtbot.addWidget(panel)
    panel.resize(980, 760)
    panel.show()
    qtbot.waitExposed(panel)
    panel.update_stats(store.snapshot())
    for name in ("auth-token", "path-counter", "add-header", "body-rewrite"):
        store.histogram(f"wasm.{name}.callback_time_us").record(1.0)
    _feed(panel, store, now, 3)
    plot = panel.plots["plugin_time"]
    legend = plot.item.legend
    vb = plot.item.getViewBox()
    # every entry lies inside the graph (none cut off at the right edge) ...
    right = vb.sceneBoundingRect().right()
    for _sample, label in legend.items:
        assert label.sceneBoundingRect().right() <= right + 1, label.text
    # ... and the curves stay below the legend's rows
    legend_bottom = vb.mapSceneToView(legend.sceneBoundingRect().bottomLeft()).y()
    for key in plot.curves:
        _x, y = panel.curve_data(key)
        assert np.nanmax(y) < legend_bottom, key
