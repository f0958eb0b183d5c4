"""The plugin manager's per-request services to the chain (part of ``chain.ChainHost``).

``plugins.PluginManager`` is control-plane code and stays interpreted; it inherits
these three from ``RequestServices``, which is compiled with the data path, so a
request's chain reaches them without an interpreted frame: whether the request records
its per-hop detail, the guest time of each plugin on it, and its inspector record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mypy_extensions import mypyc_attr

from host.proxy.inspector import InspectorRing

if TYPE_CHECKING:
    from host.proxy.chain import ChainRun
    from host.proxy.slots import PluginSlot
    from host.proxy.stats import StatsStore
    from host.wasm.context import HttpContext

__all__ = ["RequestServices"]


@mypyc_attr(allow_interpreted_subclasses=True)  # (plugins.PluginManager)
class RequestServices:
    """What ``ChainRun`` asks of the manager on every request; the subclass sets the
    attributes."""

    stats: StatsStore | None
    inspector: InspectorRing
    recorder: Any  # the lab's recorder (host.lab.record.Recorder), or None

    def record_callback_time(self, slot: PluginSlot, ctx: HttpContext) -> None:
        total = 0.0
        for _name, _r, us in ctx.callbacks:
            total += us
        slot.callback_us.append(total)  # the Overview's time per request
        stats = self.stats
        if stats is not None:
            h = slot.callback_time_stat
            if h is None:
                h = slot.callback_time_stat = stats.histogram(f"wasm.{slot.name}.callback_time_us")
            h.record(total)

    def record_detail(self) -> bool:
        """Whether a request starting now records its per-hop detail: while someone
        watches the inspector (``InspectorRing.detailed``) or the lab records."""
        return self.recorder is not None or self.inspector.detailed()

    def request_finished(self, run: ChainRun) -> None:
        rec = self.inspector.record(run)
        if self.recorder is not None:
            self.recorder.exchange_finished(run, rec)
