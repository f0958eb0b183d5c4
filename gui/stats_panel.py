"""Live graphs of the proxy's stats (pyqtgraph), fed from engine snapshots at ~10 Hz.

Requests/s (all, and per protocol: HTTP/1.1, HTTP/2, gRPC, each once its counter
exists), responses by status class, latency p50/p99, CPU time per plugin, traps with
each log-only plugin's intent (what it would have done) beside its effect (what it
enforced), the plugin-defined metrics the user picks from a list (counters as rates,
gauges as values, histograms as their median over the last second), and, once the engine
has TCP listeners (``tcp.*`` counters), TCP connections (new/s, active) and bytes/s.

Every series lives in a preallocated numpy ring (5 minutes at 10 Hz, stored twice over so
the newest window is always one contiguous view); every curve is created once and fed
with ``setData`` from those views (pyqtgraph ``examples/scrollingPlots.py``). Rates and
interval latency quantiles are computed from the difference between successive
snapshots, so a ``reset_counters`` shows as a restart, not a negative rate.

Redraw cost stays flat however long the app runs: each curve gets only the slice of its
ring inside the visible window (found by binary search), with clip-to-view and peak
downsampling on top, and a curve whose data did not change since the last redraw is not
touched. The grid reflows to one column when narrow and the metric picker collapses.
Grafana habits: hover values, a click on a legend swatch isolates that curve (again to
show all), drag to zoom (which pauses; Live resumes), and vertical markers where a mode,
config or module changed.

Takes ``StatsSnapshot`` objects only; never talks to the engine.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
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
_WOULD_REQUESTS = "log_only.requests_would_act"  # one per request a log-only plugin would change
ONE_COLUMN_BELOW = 900  # px of plot area: narrower, the grid is one column
MIN_PLOT_HEIGHT = 190  # px: below this a graph is not readable; the column scrolls instead
PICKER_COLLAPSE_BELOW = 1100  # px of panel: narrower, the metric picker starts collapsed
MAX_MARKERS = 40
SCROLL_PX = 2.0  # redraw once the graphs would scroll by this many pixels
LEGEND_ROW_PX = 20  # one row of legend entries
LEGEND_ENTRY_PX = (6.5, 30)  # an entry's width: per character of its label, plus swatch
# requests/s per protocol: (series key, counter, legend label, colour); a series appears
# once its counter does (Envoy's names; the gRPC one is ours: content-type application/grpc)
PROTOCOL_SERIES = (
    ("rq_http1", "http.downstream_rq_http1_total", "HTTP/1.1", "#3fb950"),
    ("rq_http2", "http.downstream_rq_http2_total", "HTTP/2", "#bc8cff"),
    ("rq_grpc", "http.downstream_rq_grpc_total", "gRPC", "#39c5cf"),
)
# the TCP listeners' totals (per listener ``tcp.<name>.*`` too: only the totals are drawn)
TCP_CX_TOTAL = "tcp.downstream_cx_total"
TCP_CX_ACTIVE = "tcp.downstream_cx_active"
TCP_RX = "tcp.downstream_cx_rx_bytes_total"
TCP_TX = "tcp.downstream_cx_tx_bytes_total"


class Ring:
    """A fixed-size time series: ``append`` is O(1) and allocation-free; ``view`` is the
    oldest-to-newest window as numpy views (no copy)."""

    __slots__ = ("_n", "_rel", "_x", "_y", "capacity", "head", "writes")

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._x = np.zeros(2 * capacity, dtype=np.float64)
        self._y = np.full(2 * capacity, np.nan, dtype=np.float64)
        self._rel = np.zeros(capacity, dtype=np.float64)
        self.head = 0  # next write position
        self._n = 0
        self.writes = 0  # appends so far: a redraw skips a ring that did not change

    def append(self, x: float, y: float) -> None:
        i = self.head
        self._x[i] = self._x[i + self.capacity] = x
        self._y[i] = self._y[i + self.capacity] = y
        self.head = (i + 1) % self.capacity
        self.writes += 1
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

    def window_view(
        self, now: float, window_s: float
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """``relative_view`` cut to the last ``window_s`` seconds (plus the point before,
        so the line enters from the edge): the cost of drawing it depends on the window,
        not on how long the app has run."""
        xs, ys = self.view()
        start = max(0, int(np.searchsorted(xs, now - window_s, side="left")) - 1)
        xs = xs[start:]
        rel = self._rel[: len(xs)]
        np.subtract(xs, now, out=rel)
        return rel, ys[start:]

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
        self._drawn: dict[str, tuple[int, float, float]] = {}  # key -> (writes, now, window)
        self.redraws = 0  # setData calls, for tests

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
        self._drawn.pop(key, None)
        if curve is not None:
            self.item.removeItem(curve)
            legend = self.item.legend
            if legend is not None:
                legend.removeItem(curve)

    def push(self, key: str, x: float, y: float) -> None:
        self.rings[key].append(x, y)

    def redraw(self, now: float, window_s: float, y_range: bool = True) -> None:
        top = 0.0
        for key, curve in self.curves.items():
            ring = self.rings[key]
            state = (ring.writes, now, window_s)
            if self._drawn.get(key) != state:  # only what changed
                self._drawn[key] = state
                xs, ys = ring.window_view(now, window_s)
                curve.setData(xs, ys)
                self.redraws += 1
            if not curve.isVisible():
                continue
            _x, ys = curve.getData()
            if ys is not None and len(ys) and not np.all(np.isnan(ys)):
                top = max(top, float(np.nanmax(ys)))
        want = nice_ceiling(top * self._fit_legend())
        if y_range and want != self.y_top:
            self.y_top = want
            self.item.setYRange(0, want, padding=0)

    def _fit_legend(self) -> float:
        """Lay the legend out in as many columns as fit the graph's width, and return
        the y headroom that keeps its rows above the curves (legends never cover them)."""
        vb = self.item.getViewBox()
        width, height = float(vb.width()), float(vb.height())
        legend = self.item.legend
        n = len(self.curves)
        if legend is None or n == 0 or width <= 0 or height <= 0:
            return 1.1
        per_char, extra = LEGEND_ENTRY_PX
        widest = max(len(c.name() or "") for c in self.curves.values()) * per_char + extra
        cols = max(1, min(n, int(width // widest)))
        if cols != legend.columnCount:
            legend.setColumnCount(cols)
        rows = -(-n // cols)
        used = min(0.6, (rows * LEGEND_ROW_PX + 8) / height)
        return 1.05 / (1.0 - used)

    def isolate(self, key: str) -> None:
        """Show only ``key``'s curve; if it is already the only one shown, show all."""
        alone = all(c.isVisible() == (k == key) for k, c in self.curves.items())
        for k, c in self.curves.items():
            c.setVisible(alone or k == key)


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
        self.live_button = QPushButton("Live")
        self.live_button.setObjectName("live_button")
        self.live_button.setCheckable(True)
        self.live_button.setChecked(True)
        self.live_button.setToolTip(
            "Live: the graphs follow the newest data. Off (or drag a box on a graph to "
            "zoom): they hold still; click Live to resume."
        )
        bar.addWidget(self.live_button)
        self.hover_label = QLabel("")
        self.hover_label.setObjectName("hover_label")
        bar.addWidget(self.hover_label, 1)
        self.picker_button = QPushButton("Metrics ▸")
        self.picker_button.setObjectName("picker_button")
        self.picker_button.setCheckable(True)
        self.picker_button.setToolTip("Show or hide the plugin-defined metric picker")
        bar.addWidget(self.picker_button)
        lay.addLayout(bar)
        # one graphics view for all plots: one paint per frame, not one per plot
        self.plot_area = pg.GraphicsLayoutWidget()
        self.plot_area.setObjectName("plot_area")
        body = QHBoxLayout()
        body.setContentsMargins(0, 0, 0, 0)
        # narrow: one column of readable graphs that scrolls, never squeezed to slivers
        self.plot_scroll = QScrollArea()
        self.plot_scroll.setObjectName("plot_scroll")
        self.plot_scroll.setWidgetResizable(True)
        self.plot_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.plot_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.plot_scroll.setWidget(self.plot_area)
        body.addWidget(self.plot_scroll, 1)
        self.picker = picker = QWidget()
        picker.setObjectName("metric_picker")
        picker.setFixedWidth(240)
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
        body.addWidget(picker)
        picker.hide()
        self._picker_auto = True  # collapsed/expanded by width until the user chooses
        lay.addLayout(body, 1)
        self.plots: dict[str, _Plot] = {}
        titles = {
            "requests": ("Requests / s", "req/s"),
            "classes": ("Responses by status class / s", "resp/s"),
            "latency": ("Latency (ms, last second)", "ms"),
            "plugin_time": ("Time in each plugin (ms of CPU / s)", "ms/s"),
            "events": ("Traps; log-only: would change (solid), enforced (dashed) / s", "/s"),
            "custom": ("Plugin-defined metrics (pick them under Metrics)", ""),
        }
        self.window_s = 60.0
        self.columns = 2
        self.markers: list[tuple[float, str, list[pg.InfiniteLine]]] = []
        self._hover_line: pg.InfiniteLine | None = None
        self._hover_plot: str | None = None
        for key, (title, unit) in titles.items():
            self._add_plot(key, title, unit)
        self.plot_area.scene().sigMouseMoved.connect(self._on_scene_mouse_moved)
        self.live_button.toggled.connect(self._on_live_button_toggled)
        self.picker_button.toggled.connect(self._on_picker_button_toggled)
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
        self._drawn_at = -math.inf
        self._chain: set[str] | None = None  # the plugins in the chain, once known
        self.updates = 0

    def _add_plot(self, key: str, title: str, unit: str) -> _Plot:
        """A plot at the end of the grid (the TCP ones arrive once their counters do),
        with the legend, zoom and marker habits of the others."""
        n = len(self.plots)
        item = self.plot_area.addPlot(row=n // self.columns, col=n % self.columns, title=title)
        item.showGrid(x=True, y=True, alpha=0.2)
        item.setLabel("bottom", "seconds ago")
        item.setLabel("left", unit)
        legend = item.addLegend(offset=(5, 1), colCount=4, brush=(13, 17, 23, 170))
        legend.sigSampleClicked.connect(
            lambda curve, k=key: self._on_legend_sample_clicked(k, curve)
        )
        item.setMouseEnabled(x=True, y=False)
        item.getViewBox().setMouseMode(pg.ViewBox.RectMode)
        item.getViewBox().sigRangeChangedManually.connect(self._on_range_changed_manually)
        item.hideButtons()
        item.disableAutoRange()
        item.setXRange(-self.window_s, 0, padding=0)
        item.setYRange(0, 1, padding=0)
        plot = self.plots[key] = _Plot(item)
        if self.columns == 1:
            self.plot_area.setMinimumHeight(len(self.plots) * MIN_PLOT_HEIGHT)
        for _x, text, lines in self.markers:  # markers already placed
            line = self._marker_line(text, False)
            item.addItem(line, ignoreBounds=True)
            lines.append(line)
        return plot

    def _ensure_tcp_plots(self) -> None:
        if "tcp_cx" in self.plots:
            return
        cx = self._add_plot("tcp_cx", "TCP connections: new / s, active", "")
        cx.add("tcp_cx_rate", "new /s", "#58a6ff")
        cx.add("tcp_cx_active", "active", "#3fb950")
        io = self._add_plot("tcp_bytes", "TCP bytes (KiB / s)", "KiB/s")
        io.add("tcp_rx", "received", "#d29922")
        io.add("tcp_tx", "sent", "#bc8cff")
        if self.markers:
            self._place_markers()

    def _on_window_combo_changed(self, _index: int) -> None:
        self.window_s = float(self.window_combo.currentData())
        for plot in self.plots.values():
            plot.item.setXRange(-self.window_s, 0, padding=0)
        self.redraw()

    # -- layout: reflow, picker ------------------------------------------------------------------

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        width = event.size().width()
        if self._picker_auto:
            self.set_picker_open(width >= PICKER_COLLAPSE_BELOW, by_user=False)
        self._reflow()

    def _reflow(self) -> None:
        picker = self.picker.width() if self.picker.isVisibleTo(self) else 0
        area = self.width() - picker - 12
        self.set_columns(1 if area < ONE_COLUMN_BELOW else 2)

    def set_columns(self, columns: int) -> None:
        """Lay the graphs out in ``columns`` columns (1 or 2)."""
        if columns == self.columns:
            return
        self.columns = columns
        ci = self.plot_area.ci
        items = [p.item for p in self.plots.values()]
        for item in items:
            ci.removeItem(item)
        for i, item in enumerate(items):
            ci.addItem(item, row=i // columns, col=i % columns)
        rows = -(-len(items) // columns)
        self.plot_area.setMinimumHeight(rows * MIN_PLOT_HEIGHT if columns == 1 else 0)

    def set_picker_open(self, on: bool, by_user: bool = True) -> None:
        """Show or collapse the metric picker (a user's choice sticks; until then it
        follows the panel's width)."""
        if by_user:
            self._picker_auto = False
        self.picker.setVisible(on)
        self.picker_button.blockSignals(True)
        self.picker_button.setChecked(on)
        self.picker_button.blockSignals(False)
        self.picker_button.setText("Metrics ◂" if on else "Metrics ▸")
        if self.isVisible() or not by_user:
            self._reflow()

    def _on_picker_button_toggled(self, on: bool) -> None:
        self.set_picker_open(on)

    # -- Grafana habits: live/pause, zoom, isolate, hover, markers --------------------------------

    @property
    def live(self) -> bool:
        return self.live_button.isChecked()

    def set_live(self, on: bool) -> None:
        self.live_button.setChecked(on)

    def _on_live_button_toggled(self, on: bool) -> None:
        self.live_button.setText("Live" if on else "Paused")
        if on:
            for plot in self.plots.values():
                plot.item.setXRange(-self.window_s, 0, padding=0)
                plot.y_top = -1.0  # set the y range again at the next redraw
            self.redraw()

    def _on_range_changed_manually(self, *_args: Any) -> None:
        if self.live:
            self.set_live(False)  # a zoom holds the picture still

    def zoom(self, x0: float, x1: float) -> None:
        """Show seconds-ago ``x0``..``x1`` on every graph (what dragging a box does)."""
        self.set_live(False)
        for plot in self.plots.values():
            plot.item.setXRange(x0, x1, padding=0)

    def isolate(self, key: str) -> None:
        """Show only the curve ``key`` in its graph (again: show all of them)."""
        for plot in self.plots.values():
            if key in plot.curves:
                plot.isolate(key)
                plot.redraw(self._now, self.window_s, y_range=self.live)
                return
        raise KeyError(key)

    def visible_curves(self, plot: str) -> list[str]:
        return [k for k, c in self.plots[plot].curves.items() if c.isVisible()]

    def _on_legend_sample_clicked(self, plot: str, curve: pg.PlotDataItem) -> None:
        curve.setVisible(not curve.isVisible())  # undo the legend's own toggle
        key = next((k for k, c in self.plots[plot].curves.items() if c is curve), None)
        if key is not None:
            self.isolate(key)

    def values_at(self, plot: str, x: float) -> list[tuple[str, float]]:
        """(curve label, value) of each visible curve of ``plot`` nearest ``x`` seconds
        ago: what hovering shows."""
        p = self.plots[plot]
        out: list[tuple[str, float]] = []
        for key, curve in p.curves.items():
            if not curve.isVisible():
                continue
            xs, ys = curve.getData()
            if xs is None or not len(xs):
                continue
            i = int(np.clip(np.searchsorted(xs, x), 0, len(xs) - 1))
            if i and abs(xs[i - 1] - x) < abs(xs[i] - x):
                i -= 1
            out.append((curve.name() or key, float(ys[i])))
        return out

    def hover(self, plot: str, x: float) -> str:
        """Show the values at ``x`` (seconds ago) in the hover line; returns the text."""
        vals = self.values_at(plot, x)
        text = (
            f"{-x:.1f} s ago: "
            + ", ".join(f"{name} {v:.4g}" for name, v in vals if math.isfinite(v))
            if vals
            else ""
        )
        self.hover_label.setText(text)
        if self._hover_line is None:
            self._hover_line = pg.InfiniteLine(angle=90, pen=pg.mkPen("#8b949e", width=1))
        if self._hover_plot != plot:  # the line follows the pointer into another graph
            if self._hover_plot is not None:
                self.plots[self._hover_plot].item.removeItem(self._hover_line)
            self.plots[plot].item.addItem(self._hover_line, ignoreBounds=True)
            self._hover_plot = plot
        self._hover_line.setPos(x)
        return text

    def _on_scene_mouse_moved(self, pos: QPointF) -> None:
        for key, plot in self.plots.items():
            vb = plot.item.getViewBox()
            if vb.sceneBoundingRect().contains(pos):
                self.hover(key, float(vb.mapSceneToView(pos).x()))
                return

    def add_marker(self, text: str) -> None:
        """A vertical line on every graph at the newest sample, labelled ``text`` (a
        mode, config or module change), so its effect shows where it happened."""
        lines = []
        for plot in self.plots.values():
            line = self._marker_line(text, plot is self.plots["requests"])
            plot.item.addItem(line, ignoreBounds=True)
            lines.append(line)
        self.markers.append((self._now, text, lines))
        while len(self.markers) > MAX_MARKERS:
            self._drop_marker(0)
        self._place_markers()

    def _marker_line(self, text: str, labelled: bool) -> pg.InfiniteLine:
        line = pg.InfiniteLine(
            pos=0.0,
            angle=90,
            pen=pg.mkPen("#e3b341", width=1, style=Qt.PenStyle.DotLine),
            label=text if labelled else None,
            labelOpts={"position": 0.85, "color": "#e3b341", "rotateAxis": (1, 0)},
        )
        line.setToolTip(text)
        return line

    def _drop_marker(self, i: int) -> None:
        _x, _t, lines = self.markers.pop(i)
        for plot, line in zip(self.plots.values(), lines, strict=False):
            plot.item.removeItem(line)

    def _place_markers(self) -> None:
        while self.markers and self._now - self.markers[0][0] > HISTORY_S:
            self._drop_marker(0)
        for x, _text, lines in self.markers:
            for line in lines:
                line.setPos(x - self._now)

    def marker_texts(self) -> list[str]:
        return [t for _x, t, _l in self.markers]

    def prune_plugins(self, names: Sequence[str]) -> None:
        """Drop the per-plugin curves (time, would act, enforced) of plugins no longer
        in the chain, so a removed plugin leaves the legend."""
        keep = set(names)
        self._chain = keep  # the engine keeps a removed plugin's stats: do not re-add them
        for plot in (self.plots["plugin_time"], self.plots["events"]):
            for key in list(plot.curves):
                kind, _, plugin = key.partition(":")
                if kind in ("time", "would", "did") and plugin not in keep:
                    plot.remove(key)

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

        requests = self.plots["requests"]
        requests.push("rq_total", x, rate("http.downstream_rq_total"))
        for key, counter, label, colour in PROTOCOL_SERIES:
            if counter in snap.counters:
                if key not in requests.rings:
                    requests.add(key, label, colour)
                requests.push(key, x, rate(counter))
        if TCP_CX_TOTAL in snap.counters:
            self._ensure_tcp_plots()
            cx, io = self.plots["tcp_cx"], self.plots["tcp_bytes"]
            cx.push("tcp_cx_rate", x, rate(TCP_CX_TOTAL))
            cx.push("tcp_cx_active", x, float(snap.gauges.get(TCP_CX_ACTIVE, 0)))
            io.push("tcp_rx", x, rate(TCP_RX) / 1024.0)
            io.push("tcp_tx", x, rate(TCP_TX) / 1024.0)
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
                if self._chain is not None and plugin not in self._chain:
                    continue
                if self._ensure("plugin_time", f"time:{plugin}", plugin):
                    ph = prev.histograms.get(name)
                    used = h.sum - ph.sum if ph is not None and ph.sum <= h.sum else h.sum
                    self.plots["plugin_time"].push(f"time:{plugin}", x, used / 1000.0 / dt)
        # traps (all plugins); each log-only plugin's intent beside its effect
        traps = 0.0
        would: dict[str, float] = {}
        intents: dict[str, float] = {}  # only for an engine without the request count
        counted: set[str] = set()
        did: dict[str, float] = {}
        for name in snap.counters:
            if not name.startswith("wasm."):
                continue
            if name.endswith(".traps"):
                traps += rate(name)
                continue
            plugin, _, what = name[5:].partition(".")
            if what == _WOULD_REQUESTS:
                would[plugin] = rate(name)  # requests, not intents
                counted.add(plugin)
            elif what.startswith("log_only.would_") and plugin not in counted:
                intents[plugin] = intents.get(plugin, 0.0) + rate(name)
            elif what.startswith(_EFFECT_PREFIXES):
                did[plugin] = did.get(plugin, 0.0) + rate(name)
        for plugin, r in intents.items():
            if plugin not in counted:
                would[plugin] = r
        self._ensure("events", "traps", "traps")
        self.plots["events"].push("traps", x, traps)
        events = self.plots["events"]
        for plugin, r in would.items():
            if self._chain is not None and plugin not in self._chain:
                continue
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
        if redraw and self._redraw_due():
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

    def _redraw_due(self) -> bool:
        """Redraw when the graphs have scrolled by at least SCROLL_PX pixels: every
        snapshot for the 15 s window, every ~0.25 s for the minute, ~1.3 s for five
        minutes (a paint costs the same whatever moved; see docs/gui.md)."""
        if not self.isVisible():
            return True
        width = max(100.0, float(self.plots["requests"].item.getViewBox().width()))
        return self._now - self._drawn_at >= SCROLL_PX * self.window_s / width - 1e-9

    def redraw(self) -> None:
        """Draw the newest window (nothing while paused: the picture holds still)."""
        if not self.live:
            return
        self._drawn_at = self._now
        for plot in self.plots.values():
            plot.redraw(self._now, self.window_s)
        if self.markers:
            self._place_markers()
