"""Live graphs of the proxy's stats (pyqtgraph), fed from engine snapshots at ~10 Hz.

Every series lives in a preallocated numpy ring (5 minutes at 10 Hz, stored twice over so
the newest window is always one contiguous view); every curve is created once and fed
with ``setData`` from those views (pyqtgraph ``examples/scrollingPlots.py``). Rates and
interval latency quantiles are computed from the difference between successive
snapshots, so a ``reset_counters`` shows as a restart, not a negative rate.

Takes ``StatsSnapshot`` objects only; never talks to the engine.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from host.proxy.stats import HistogramSnapshot, StatsSnapshot

__all__ = ["Ring", "StatsPanel"]

HISTORY_S = 300.0
RATE_HZ = 10
CAPACITY = int(HISTORY_S * RATE_HZ)
RATE_WINDOW_S = 1.0  # rates are moving averages over this long
_CLASS_COLOURS = {2: "#3fb950", 3: "#58a6ff", 4: "#d29922", 5: "#f85149"}
_PALETTE = ("#58a6ff", "#3fb950", "#d29922", "#f85149", "#bc8cff", "#39c5cf", "#ff7b72", "#e3b341")
_MAX_DYNAMIC = 8  # curves per plot for per-plugin series


class Ring:
    """A fixed-size time series: ``append`` is O(1) and allocation-free; ``view`` is the
    oldest-to-newest window as numpy views (no copy)."""

    __slots__ = ("_n", "_rel", "_x", "_y", "capacity", "head")

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._x = np.zeros(2 * capacity, dtype=np.float64)
        self._y = np.full(2 * capacity, np.nan, dtype=np.float64)
        self._rel = np.zeros(capacity, dtype=np.float64)
        self.head = 0  # next write position
        self._n = 0

    def append(self, x: float, y: float) -> None:
        i = self.head
        self._x[i] = self._x[i + self.capacity] = x
        self._y[i] = self._y[i + self.capacity] = y
        self.head = (i + 1) % self.capacity
        if self._n < self.capacity:
            self._n += 1

    def __len__(self) -> int:
        return self._n

    def view(self) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        if self._n < self.capacity:
            return self._x[: self._n], self._y[: self._n]
        h = self.head
        return self._x[h : h + self.capacity], self._y[h : h + self.capacity]

    def relative_view(self, now: float) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """``view()`` with x as seconds before ``now`` (negative), computed into a
        preallocated buffer: the plots keep a fixed x range, so their axes do not
        re-render every frame."""
        xs, ys = self.view()
        rel = self._rel[: len(xs)]
        np.subtract(xs, now, out=rel)
        return rel, ys

    def last(self) -> float:
        if not self._n:
            return math.nan
        return float(self._y[(self.head - 1) % self.capacity])


def _delta_hist(now: HistogramSnapshot, before: HistogramSnapshot | None) -> HistogramSnapshot:
    if before is None or before.count > now.count:
        return now
    b = tuple(max(0, a - c) for a, c in zip(now.buckets, before.buckets, strict=False))
    return HistogramSnapshot.of(b, max(0.0, now.sum - before.sum), now.bounds)


def nice_ceiling(v: float) -> float:
    """The next 1-2-5 step at or above ``v`` (at least 1)."""
    if not math.isfinite(v) or v <= 1:
        return 1.0
    mag = 10 ** math.floor(math.log10(v))
    for step in (1, 2, 5, 10):
        if v <= step * mag:
            return float(step * mag)
    return float(10 * mag)


class _Plot:
    """One plot and its curves, each backed by a Ring. The x range is fixed (seconds
    before now) and the y range moves in 1-2-5 steps, so the axes rarely re-render."""

    def __init__(self, item: pg.PlotItem) -> None:
        self.item = item
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.rings: dict[str, Ring] = {}
        self.y_top = 1.0

    def add(self, key: str, label: str, colour: str) -> None:
        pen = pg.mkPen(colour, width=2)
        curve = self.item.plot(name=label, pen=pen)
        curve.setClipToView(True)
        curve.setDownsampling(auto=True, method="peak")
        self.curves[key] = curve
        self.rings[key] = Ring()

    def push(self, key: str, x: float, y: float) -> None:
        self.rings[key].append(x, y)

    def redraw(self, now: float, window_s: float) -> None:
        top = 0.0
        for key, curve in self.curves.items():
            xs, ys = self.rings[key].relative_view(now)
            curve.setData(xs, ys)
            if len(ys):
                visible = ys[xs >= -window_s]
                if len(visible) and not np.all(np.isnan(visible)):
                    top = max(top, float(np.nanmax(visible)))
        want = nice_ceiling(top * 1.1)
        if want != self.y_top:
            self.y_top = want
            self.item.setYRange(0, want, padding=0)


class StatsPanel(QWidget):
    """Requests/s, responses by status class, latency p50/p99, time per plugin, and
    traps with log-only intents; the last five minutes."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("StatsPanel")
        pg.setConfigOptions(antialias=False, background="#0d1117", foreground="#c9d1d9")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Window"))
        self.window_combo = QComboBox()
        for label, secs in (("1 minute", 60.0), ("5 minutes", HISTORY_S), ("15 seconds", 15.0)):
            self.window_combo.addItem(label, secs)
        bar.addWidget(self.window_combo)
        bar.addStretch(1)
        lay.addLayout(bar)
        # one graphics view for all plots: one paint per frame, not one per plot
        self.plot_area = pg.GraphicsLayoutWidget()
        self.plot_area.setObjectName("plot_area")
        lay.addWidget(self.plot_area, 1)
        self.plots: dict[str, _Plot] = {}
        titles = {
            "requests": ("Requests / s", "req/s"),
            "classes": ("Responses by status class / s", "resp/s"),
            "latency": ("Latency (ms, last second)", "ms"),
            "plugin_time": ("Time in each plugin (ms of CPU / s)", "ms/s"),
            "events": ("Traps and log-only intents / s", "/s"),
            "custom": ("Plugin-defined metrics / s", "/s"),
        }
        self.window_s = 60.0
        for i, (key, (title, unit)) in enumerate(titles.items()):
            item = self.plot_area.addPlot(row=i // 2, col=i % 2, title=title)
            item.showGrid(x=True, y=True, alpha=0.2)
            item.setLabel("bottom", "seconds ago")
            item.setLabel("left", unit)
            item.addLegend(offset=(5, 5))
            item.setMouseEnabled(x=False, y=False)
            item.hideButtons()
            item.disableAutoRange()
            item.setXRange(-self.window_s, 0, padding=0)
            item.setYRange(0, 1, padding=0)
            self.plots[key] = _Plot(item)
        self.window_combo.currentIndexChanged.connect(self._on_window_combo_changed)
        self.plots["requests"].add("rq_total", "all", "#58a6ff")
        for c, colour in _CLASS_COLOURS.items():
            self.plots["classes"].add(f"rq_{c}xx", f"{c}xx", colour)
        self.plots["latency"].add("p50", "p50", "#3fb950")
        self.plots["latency"].add("p99", "p99", "#f85149")
        self._prev: StatsSnapshot | None = None
        self._window: deque[StatsSnapshot] = deque(maxlen=64)
        self._t0: float | None = None
        self._now = 0.0
        self.updates = 0

    def _on_window_combo_changed(self, _index: int) -> None:
        self.window_s = float(self.window_combo.currentData())
        for plot in self.plots.values():
            plot.item.setXRange(-self.window_s, 0, padding=0)
        self.redraw()

    # -- feeding -----------------------------------------------------------------------------

    def series(self, key: str) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """The data behind a curve (``rq_total``, ``rq_2xx``, ``p99``, ``time:<plugin>``,
        ``traps``, ``would:<plugin>``, ``custom:<metric>``), oldest first."""
        for plot in self.plots.values():
            if key in plot.rings:
                return plot.rings[key].view()
        raise KeyError(key)

    def series_keys(self) -> list[str]:
        return [k for p in self.plots.values() for k in p.rings]

    def curve_data(self, key: str) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """What the curve was last given (``getData``), for tests and screenshots."""
        for plot in self.plots.values():
            if key in plot.curves:
                x, y = plot.curves[key].getData()
                return (
                    np.asarray(x if x is not None else []),
                    np.asarray(y if y is not None else []),
                )
        raise KeyError(key)

    def _ensure(self, plot: str, key: str, label: str) -> bool:
        p = self.plots[plot]
        if key in p.rings:
            return True
        if len(p.rings) >= _MAX_DYNAMIC:
            return False
        p.add(key, label, _PALETTE[len(p.rings) % len(_PALETTE)])
        return True

    def update_stats(self, snap: StatsSnapshot, redraw: bool = True) -> None:
        """Take one snapshot. Rates and latency quantiles are over the last second
        (against the oldest snapshot at most ~1 s old), plotted at every snapshot."""
        last = self._prev
        if last is not None and snap.time <= last.time:
            return  # repeated or out of order
        self._prev = snap
        if self._t0 is None:
            self._t0 = snap.time
        x = snap.time - self._t0
        self._now = x
        window = self._window
        window.append(snap)
        while len(window) > 2 and snap.time - window[0].time > RATE_WINDOW_S + 0.05:
            window.popleft()
        prev = window[0]
        if prev is snap:
            return
        dt = snap.time - prev.time

        def rate(name: str) -> float:
            now = snap.counters.get(name, 0)
            before = prev.counters.get(name, 0)
            return (now - before if now >= before else now) / dt

        self.plots["requests"].push("rq_total", x, rate("http.downstream_rq_total"))
        for c in _CLASS_COLOURS:
            self.plots["classes"].push(f"rq_{c}xx", x, rate(f"http.downstream_rq_{c}xx"))
        now_h = snap.histograms.get("http.downstream_rq_time")
        if now_h is not None:
            d = _delta_hist(now_h, prev.histograms.get("http.downstream_rq_time"))
            p50 = d.p50 if d.count else math.nan
            p99 = d.p99 if d.count else math.nan
        else:
            p50 = p99 = math.nan
        self.plots["latency"].push("p50", x, p50)
        self.plots["latency"].push("p99", x, p99)
        # per-plugin CPU time: the sum of callback_time_us per second, in ms
        for name, h in snap.histograms.items():
            if name.startswith("wasm.") and name.endswith(".callback_time_us"):
                plugin = name[5 : -len(".callback_time_us")]
                if self._ensure("plugin_time", f"time:{plugin}", plugin):
                    ph = prev.histograms.get(name)
                    used = h.sum - ph.sum if ph is not None and ph.sum <= h.sum else h.sum
                    self.plots["plugin_time"].push(f"time:{plugin}", x, used / 1000.0 / dt)
        # traps (all plugins) and what log-only plugins would have done
        traps = 0.0
        would: dict[str, float] = {}
        custom: dict[str, float] = {}
        for name, v in snap.counters.items():
            if name.startswith("wasm."):
                if name.endswith(".traps"):
                    traps += rate(name)
                elif ".log_only.would_" in name:
                    plugin = name[5:].split(".log_only.", 1)[0]
                    would[plugin] = would.get(plugin, 0.0) + rate(name)
            elif name.startswith("wasmcustom.") and v:
                custom[name[len("wasmcustom.") :]] = rate(name)
        self._ensure("events", "traps", "traps")
        self.plots["events"].push("traps", x, traps)
        for plugin, r in would.items():
            if self._ensure("events", f"would:{plugin}", f"{plugin} would act"):
                self.plots["events"].push(f"would:{plugin}", x, r)
        for metric, r in sorted(custom.items()):
            if self._ensure("custom", f"custom:{metric}", metric):
                self.plots["custom"].push(f"custom:{metric}", x, r)
        self.updates += 1
        if redraw:
            self.redraw()

    def redraw(self) -> None:
        for plot in self.plots.values():
            plot.redraw(self._now, self.window_s)
