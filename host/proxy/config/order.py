"""The chain order Istio builds from phase and priority, and a line per plugin saying why."""

from __future__ import annotations

from collections.abc import Iterable

from host.proxy.config.enums import Phase
from host.proxy.config.model import PHASES, PluginSpec
from host.proxy.config.units import _fmt_number

_PHASE_RANK = {p: i for i, p in enumerate(PHASES)}
_PHASE_NOTE: dict[str, str] = {
    Phase.AUTHN: "before Istio authn",
    Phase.AUTHZ: "after Istio authn, before Istio authz",
    Phase.STATS: "after Istio authz, before stats",
    Phase.UNSPECIFIED: "last, right before the router",
}


def _order_key(p: PluginSpec) -> tuple[int, bool, int]:
    # Istio sorts each phase stably by priority descending with an unset priority taken as
    # the minimum integer (pilot/pkg/model/push_context.go), not the documented 0.
    return (_PHASE_RANK.get(p.phase, len(PHASES)), p.priority is None, -(p.priority or 0))


def effective_order(plugins: Iterable[PluginSpec]) -> list[PluginSpec]:
    """The chain order Istio would build: phases AUTHN → AUTHZ → STATS → UNSPECIFIED_PHASE;
    in a phase priority descending, unset priority last (below any negative number); ties
    keep document order (Istio: creation order). Disabled plugins stay in the list."""
    return sorted(plugins, key=_order_key)  # sorted() is stable


def explain_order(plugins: Iterable[PluginSpec]) -> list[str]:
    """One line per plugin, in chain order, saying why it sits where it does."""
    ordered = effective_order(plugins)
    out: list[str] = []
    for pos, p in enumerate(ordered, 1):
        label = p.name if p.namespace == "default" else f"{p.namespace}/{p.name}"
        text = f"{pos}. {label}: phase {p.phase} ({_PHASE_NOTE.get(p.phase, '?')}), "
        if p.priority is None:
            text += "priority unset (treated as lowest, as Istio's code does — docs say 0)"
        else:
            text += f"priority {p.priority}"
        peers = [q.name for q in ordered if q is not p and _order_key(q) == _order_key(p)]
        if peers:
            text += f"; ties with {', '.join(peers)}: kept in document order"
        if p.mode == "disabled":
            text += "; disabled: keeps its place, the proxy skips it"
        else:
            if p.mode == "log-only":
                text += "; log-only: runs, its effects are recorded, not applied"
            if p.canary_percent < 100:
                pct = _fmt_number(p.canary_percent)
                text += f"; canary: runs for {pct}% of requests (key {p.canary_key})"
        out.append(text)
    return out
