"""Live graphs of the proxy's stats (pyqtgraph), fed from engine snapshots at ~10 Hz.

Requests/s, responses by status class, latency p50/p99, CPU time per plugin, traps
with each log-only plugin's intent (what it would have done) beside its effect (what
it enforced), and the plugin-defined metrics the user picks from a list (counters as
rates, gauges as values, histograms as their median over the last second).

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
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from host.proxy.stats import HistogramSnapshot, StatsSnapshot

__all__ = ["Ring", "StatsPanel"]

HISTORY_S = 300.0
RATE_HZ = 10
CAPACITY = int(HISTORY_S * RATE_HZ)
RATE_WINDOW_S = 1.0  # rates are moving averages over this long
_CLASS_COLOURS = {2: "#3fb950", 3: "#58a6ff", 4: "#d29922", 5: "#f85149"}
_PALETTE = ("#58a6ff", "#3fb950", "#d29922", "#f85149", "#bc8cff", "#39c5cf", "#ff7b72", "#e3b341")
_MAX_DYNAMIC = 8  # curves per plot for per-plugin series
MAX_CUSTOM = 256  # plugin-defined metrics with a recorded history
AUTO_PICK = 3  # plugin-defined metrics plotted before the user picks any
_CUSTOM_PREFIX = "wasmcustom."
_EFFECT_PREFIXES = ("local_reply_", "paused", "fail_closed_rejected")


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

    def add(
        self, key: str, label: str, colour: str, ring: Ring | None = None, dashed: bool = False
    ) -> None:
        pen = pg.mkPen(colour, width=2, style=Qt.PenStyle.DashLine if dashed else None)
        curve = self.item.plot(name=label, pen=pen)
        curve.setClipToView(True)
        curve.setDownsampling(auto=True, method="peak")
        self.curves[key] = curve
        self.rings[key] = ring if ring is not None else Ring()

    def remove(self, key: str) -> None:
        curve = self.curves.pop(key, None)
        self.rings.pop(key, None)
        if curve is not None:
            self.item.removeItem(curve)
            legend = self.item.legend
            if legend is not None:
                legend.removeItem(curve)

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
    """Requests/s, responses by status class, latency p50/p99, time per plugin, traps
    with log-only intent beside effect, and picked plugin-defined metrics; the last five
    minutes."""

    metrics_picked = Signal(list)  # the plugin-defined metrics now plotted

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
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.plot_area)
        picker = QWidget()
        pl = QVBoxLayout(picker)
        pl.setContentsMargins(4, 0, 0, 0)
        pl.addWidget(QLabel("<b>Plugin-defined metrics</b>"))
        self.metric_filter = QLineEdit()
        self.metric_filter.setPlaceholderText("Filter")
        self.metric_filter.setClearButtonEnabled(True)
        pl.addWidget(self.metric_filter)
        self.metric_list = QListWidget()
        self.metric_list.setObjectName("metric_list")
        self.metric_list.setToolTip(
            "Tick a metric to plot it (at most 8): counters as a rate per second, gauges "
            "as their value, histograms as the median of the last second"
        )
        pl.addWidget(self.metric_list, 1)
        self.metric_note = QLabel("")
        self.metric_note.setWordWrap(True)
        pl.addWidget(self.metric_note)
        split.addWidget(picker)
        split.setStretchFactor(0, 1)
        split.setSizes([900, 230])
        lay.addWidget(split, 1)
        self.plots: dict[str, _Plot] = {}
        titles = {
            "requests": ("Requests / s", "req/s"),
            "classes": ("Responses by status class / s", "resp/s"),
            "latency": ("Latency (ms, last second)", "ms"),
            "plugin_time": ("Time in each plugin (ms of CPU / s)", "ms/s"),
            "events": ("Traps; log-only intent (solid) beside effect (dashed) / s", "/s"),
            "custom": ("Plugin-defined metrics (picked on the right)", ""),
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
        self.metric_list.itemChanged.connect(self._on_metric_list_item_changed)
        self.metric_filter.textChanged.connect(self._on_metric_filter_text_changed)
        self.plots["requests"].add("rq_total", "all", "#58a6ff")
        for c, colour in _CLASS_COLOURS.items():
            self.plots["classes"].add(f"rq_{c}xx", f"{c}xx", colour)
        self.plots["latency"].add("p50", "p50", "#3fb950")
        self.plots["latency"].add("p99", "p99", "#f85149")
        self.custom_rings: dict[str, Ring] = {}
        self.custom_kinds: dict[str, str] = {}
        self.picked: list[str] = []
        self._user_picked = False
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
        ``traps``, ``would:<plugin>``, ``did:<plugin>``, ``custom:<metric>``), oldest
        first. Plugin-defined metrics are recorded whether plotted or not."""
        for plot in self.plots.values():
            if key in plot.rings:
                return plot.rings[key].view()
        if key.startswith("custom:") and key[7:] in self.custom_rings:
            return self.custom_rings[key[7:]].view()
        raise KeyError(key)

    def series_keys(self) -> list[str]:
        keys = [k for p in self.plots.values() for k in p.rings]
        keys.extend(f"custom:{m}" for m in self.custom_rings if f"custom:{m}" not in keys)
        return keys

    def metric_names(self) -> list[str]:
        """Every plugin-defined metric seen, in the picker's order."""
        return [
            self.metric_list.item(i).data(Qt.ItemDataRole.UserRole)
            for i in range(self.metric_list.count())
        ]

    def pick_metrics(self, names: list[str]) -> None:
        """Plot exactly these plugin-defined metrics (as ticking them would)."""
        self._user_picked = True
        self.metric_list.blockSignals(True)
        for i in range(self.metric_list.count()):
            item = self.metric_list.item(i)
            on = item.data(Qt.ItemDataRole.UserRole) in names
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
        self.metric_list.blockSignals(False)
        self._sync_picked()

    def _on_metric_list_item_changed(self, _item: QListWidgetItem) -> None:
        self._user_picked = True
        self._sync_picked()

    def _on_metric_filter_text_changed(self, text: str) -> None:
        needle = text.strip().lower()
        for i in range(self.metric_list.count()):
            item = self.metric_list.item(i)
            item.setHidden(bool(needle) and needle not in item.text().lower())

    def _sync_picked(self) -> None:
        want = [
            self.metric_list.item(i).data(Qt.ItemDataRole.UserRole)
            for i in range(self.metric_list.count())
            if self.metric_list.item(i).checkState() == Qt.CheckState.Checked
        ]
        note = ""
        if len(want) > _MAX_DYNAMIC:
            note = f"Only the first {_MAX_DYNAMIC} ticked metrics are plotted."
            want = want[:_MAX_DYNAMIC]
        self.metric_note.setText(note)
        plot = self.plots["custom"]
        for metric in list(self.picked):
            if metric not in want:
                plot.remove(f"custom:{metric}")
        for metric in want:
            if metric not in self.picked:
                colour = _PALETTE[len(plot.curves) % len(_PALETTE)]
                kind = self.custom_kinds.get(metric, "counter")
                label = metric + {"counter": " /s", "gauge": "", "histogram": " p50"}[kind]
                plot.add(f"custom:{metric}", label, colour, ring=self.custom_rings[metric])
        self.picked = want
        self.redraw()
        self.metrics_picked.emit(list(want))

    def _add_metric(self, metric: str, kind: str) -> None:
        self.custom_rings[metric] = Ring()
        self.custom_kinds[metric] = kind
        item = QListWidgetItem(f"{metric}  ({kind})")
        item.setData(Qt.ItemDataRole.UserRole, metric)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        auto = not self._user_picked and len(self.picked) < AUTO_PICK and kind == "counter"
        item.setCheckState(Qt.CheckState.Checked if auto else Qt.CheckState.Unchecked)
        needle = self.metric_filter.text().strip().lower()
        item.setHidden(bool(needle) and needle not in item.text().lower())
        self.metric_list.blockSignals(True)
        self.metric_list.addItem(item)
        self.metric_list.blockSignals(False)
        if auto:
            self._sync_picked()

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
        # traps (all plugins); each log-only plugin's intent beside its effect
        traps = 0.0
        would: dict[str, float] = {}
        did: dict[str, float] = {}
        for name in snap.counters:
            if not name.startswith("wasm."):
                continue
            if name.endswith(".traps"):
                traps += rate(name)
                continue
            plugin, _, what = name[5:].partition(".")
            if what.startswith("log_only.would_"):
                would[plugin] = would.get(plugin, 0.0) + rate(name)
            elif what.startswith(_EFFECT_PREFIXES):
                did[plugin] = did.get(plugin, 0.0) + rate(name)
        self._ensure("events", "traps", "traps")
        self.plots["events"].push("traps", x, traps)
        events = self.plots["events"]
        for plugin, r in would.items():
            if f"would:{plugin}" not in events.rings:
                if len(events.rings) + 2 > _MAX_DYNAMIC:
                    continue
                colour = _PALETTE[(len(events.rings) // 2 + 1) % len(_PALETTE)]
                events.add(f"would:{plugin}", f"{plugin} would act", colour)
                events.add(f"did:{plugin}", f"{plugin} enforced", colour, dashed=True)
            events.push(f"would:{plugin}", x, r)
            events.push(f"did:{plugin}", x, did.get(plugin, 0.0))
        self._feed_custom(snap, prev, x, dt)
        self.updates += 1
        if redraw:
            self.redraw()

    def _feed_custom(self, snap: StatsSnapshot, prev: StatsSnapshot, x: float, dt: float) -> None:
        """Record every plugin-defined metric (so a metric picked later has its history)."""
        n = len(_CUSTOM_PREFIX)
        for name, v in snap.counters.items():
            if not name.startswith(_CUSTOM_PREFIX):
                continue
            metric = name[n:]
            if metric not in self.custom_rings:
                if not v or len(self.custom_rings) >= MAX_CUSTOM:
                    continue
                self._add_metric(metric, "counter")
            before = prev.counters.get(name, 0)
            self.custom_rings[metric].append(x, (v - before if v >= before else v) / dt)
        for name, g in snap.gauges.items():
            if not name.startswith(_CUSTOM_PREFIX):
                continue
            metric = name[n:]
            if metric not in self.custom_rings:
                if len(self.custom_rings) >= MAX_CUSTOM:
                    continue
                self._add_metric(metric, "gauge")
            self.custom_rings[metric].append(x, float(g))
        for name, h in snap.histograms.items():
            if not name.startswith(_CUSTOM_PREFIX):
                continue
            metric = name[n:]
            if metric not in self.custom_rings:
                if not h.count or len(self.custom_rings) >= MAX_CUSTOM:
                    continue
                self._add_metric(metric, "histogram")
            d = _delta_hist(h, prev.histograms.get(name))
            self.custom_rings[metric].append(x, d.p50 if d.count else math.nan)

    def redraw(self) -> None:
        for plot in self.plots.values():
            plot.redraw(self._now, self.window_s)
