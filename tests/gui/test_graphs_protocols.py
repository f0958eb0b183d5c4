"""Graphs split by protocol (issue 9 §5): requests/s per protocol (HTTP/1.1, HTTP/2,
gRPC) beside "all", and TCP connections (new/s, active) and bytes/s from the ``tcp.*``
counters; each series appears only once its counter exists, and the legend, hover and
markers work on them as on the others. Real ``StatsStore`` snapshots on a controlled
clock."""

from __future__ import annotations

import numpy as np
import pytest

from gui.stats_panel import RATE_HZ, StatsPanel
from host.proxy.stats import StatsStore


def _panel(qtbot) -> StatsPanel:
    panel = StatsPanel()
    qtbot.addWidget(panel)
    panel.resize(1200, 800)
    panel.show()
    return panel


def _tick(panel: StatsPanel, store: StatsStore, now: list[float], seconds: float, **inc: int):
    for _ in range(int(seconds * RATE_HZ)):
        now[0] += 1.0 / RATE_HZ
        for name, n in inc.items():
            store.counter(name.replace("__", ".")).inc(n)
        panel.update_stats(store.snapshot())


def test_request_rate_per_protocol_appears_with_its_counter(qtbot) -> None:
    now = [100.0]
    store = StatsStore(clock=lambda: now[0])
    panel = _panel(qtbot)
    panel.update_stats(store.snapshot())
    _tick(panel, store, now, 2, http__downstream_rq_total=10)
    # an engine without the protocol counters: only "all"
    assert list(panel.plots["requests"].curves) == ["rq_total"]
    assert "tcp_cx" not in panel.plots
    _tick(
        panel,
        store,
        now,
        3,
        http__downstream_rq_total=10,
        http__downstream_rq_http1_total=4,
        http__downstream_rq_http2_total=6,
        http__downstream_rq_grpc_total=5,
    )
    assert list(panel.plots["requests"].curves) == ["rq_total", "rq_http1", "rq_http2", "rq_grpc"]
    labels = [c.name() for c in panel.plots["requests"].curves.values()]
    assert labels == ["all", "HTTP/1.1", "HTTP/2", "gRPC"]
    panel.redraw()
    for key, per_s in (("rq_total", 100), ("rq_http1", 40), ("rq_http2", 60), ("rq_grpc", 50)):
        _x, y = panel.series(key)
        assert abs(y[-1] - per_s) < 1e-6, (key, y[-1])
    # hover reads them, a legend click isolates one
    text = panel.hover("requests", -0.05)
    assert "HTTP/2 60" in text and "gRPC 50" in text
    panel.isolate("rq_grpc")
    assert panel.visible_curves("requests") == ["rq_grpc"]
    panel.isolate("rq_grpc")
    assert len(panel.visible_curves("requests")) == 4


def test_tcp_graphs_arrive_with_the_tcp_counters_and_keep_the_markers(qtbot) -> None:
    now = [100.0]
    store = StatsStore(clock=lambda: now[0])
    panel = _panel(qtbot)
    panel.update_stats(store.snapshot())
    _tick(panel, store, now, 1, http__downstream_rq_total=1)
    panel.add_marker("meter: mode log-only")
    plots_before = len(panel.plots)
    active = store.gauge("tcp.downstream_cx_active")
    active.set(3)
    _tick(
        panel,
        store,
        now,
        3,
        tcp__downstream_cx_total=2,
        tcp__downstream_cx_rx_bytes_total=1024,
        tcp__downstream_cx_tx_bytes_total=4096,
    )
    assert len(panel.plots) == plots_before + 2
    assert list(panel.plots["tcp_cx"].curves) == ["tcp_cx_rate", "tcp_cx_active"]
    assert list(panel.plots["tcp_bytes"].curves) == ["tcp_rx", "tcp_tx"]
    last = {k: float(panel.series(k)[1][-1]) for k in ("tcp_cx_rate", "tcp_rx", "tcp_tx")}
    assert last == pytest.approx({"tcp_cx_rate": 20.0, "tcp_rx": 10.0, "tcp_tx": 40.0})
    assert panel.series("tcp_cx_active")[1][-1] == 3.0  # a gauge: its value
    # the marker set before the TCP plots existed is on them too, and a new one as well
    ((_x, _t, lines),) = panel.markers
    assert len(lines) == len(panel.plots)
    panel.add_marker("config")
    assert all(len(m[2]) == len(panel.plots) for m in panel.markers)
    panel.redraw()
    x, y = panel.curve_data("tcp_tx")
    assert len(x) and np.nanmax(y) == pytest.approx(40.0)
    # narrow: one column that scrolls, tall enough for all the plots
    panel.set_columns(1)
    assert panel.plot_area.minimumHeight() >= len(panel.plots) * 150
    # markers leave every plot, the TCP ones too
    while panel.markers:
        panel._drop_marker(0)
    assert all(
        not any(isinstance(i, type(lines[0])) for i in p.item.items) for p in panel.plots.values()
    )
