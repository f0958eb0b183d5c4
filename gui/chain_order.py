"""Reordering the plugin chain by dragging: which priorities make a plugin sit where the
user dropped it.

The chain order is Istio's (``host.proxy.config.effective_order``): phase first, then
priority descending, unset priority last, ties in document order. A plugin can only move
within its phase (the phase is a separate choice). The smallest change wins: only the
moved plugin gets a new priority, halfway between its new neighbours; when there is no
integer gap (or an unset neighbour sits above it), the phase is renumbered 10, 20, 30...
from the bottom. The result is checked against ``effective_order`` before it is returned.

Pure functions over ``PluginSpec``; no Qt.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from host.proxy.config import PluginSpec, effective_order

__all__ = ["MoveRefused", "priorities_for_move"]

_INT32 = (-(2**31), 2**31 - 1)
STEP = 10


class MoveRefused(ValueError):
    """The move is not possible (another phase, unknown plugin): the message says why."""


def _order_after(specs: Sequence[PluginSpec], changes: dict[str, int | None]) -> list[str]:
    changed = [
        dataclasses.replace(s, priority=changes[s.name]) if s.name in changes else s for s in specs
    ]
    return [s.name for s in effective_order(changed)]


def priorities_for_move(
    specs: Sequence[PluginSpec], name: str, new_index: int
) -> dict[str, int | None]:
    """The priority changes (plugin name → new priority) that move ``name`` to position
    ``new_index`` (0-based) of the effective chain; {} when it is already there. Raises
    MoveRefused when the position is in another phase."""
    order = effective_order(specs)
    names = [s.name for s in order]
    if name not in names:
        raise MoveRefused(f"no plugin named {name!r}")
    by_name = {s.name: s for s in order}
    moved = by_name[name]
    rest = [n for n in names if n != name]
    new_index = max(0, min(new_index, len(rest)))
    desired = [*rest[:new_index], name, *rest[new_index:]]
    if desired == names:
        return {}
    phase_of = {s.name: s.phase for s in order}
    same = [n for n in desired if phase_of[n] == moved.phase]
    # the moved plugin's neighbours in the whole list must be of its phase (or absent)
    before = desired[new_index - 1] if new_index > 0 else None
    after = desired[new_index + 1] if new_index + 1 < len(desired) else None
    if (before is None or phase_of[before] != moved.phase) and (
        after is None or phase_of[after] != moved.phase
    ):
        raise MoveRefused(
            f"{name} is in phase {moved.phase}: drag it within its phase, or change its "
            "phase under Modes"
        )
    k = same.index(name)
    prev_p = by_name[same[k - 1]].priority if k > 0 else None
    next_p = by_name[same[k + 1]].priority if k + 1 < len(same) else None
    has_prev = k > 0
    candidate: int | None = None
    if not has_prev:
        if next_p is not None:
            candidate = next_p + STEP
        else:
            candidate = max((by_name[n].priority or 0 for n in same if n != name), default=0)
            candidate += STEP
    elif prev_p is not None:
        if next_p is None:
            candidate = prev_p - STEP
        elif prev_p - next_p >= 2:
            candidate = (prev_p + next_p) // 2
    if candidate is not None and _INT32[0] <= candidate <= _INT32[1]:
        changes: dict[str, int | None] = {name: candidate}
        if _order_after(specs, changes) == desired:
            return changes
    # no room between the neighbours: renumber the phase, STEP x n ... STEP, top to bottom
    n = len(same)
    changes = {
        p: STEP * (n - i) for i, p in enumerate(same) if by_name[p].priority != STEP * (n - i)
    }
    if _order_after(specs, changes) == desired:
        return changes
    raise MoveRefused(f"cannot find priorities that put {name} there")  # pragma: no cover
