"""Crash sessions: when a plugin traps under ``serve`` (or in the app), the requests its
VM handled before the failure, up to the trapping one, are written as a HAR session in
the data directory's ``crashes`` folder, so ``wasmdesk replay`` (and the app's
Reproduce button) can run them again and hit the same trap with the same backtrace.

It works from the request inspector's ring (the last 200 requests by default), so it
costs nothing until a plugin fails. The ring keeps each hop's headers and bodies (bodies
cut at 16 KiB) but not the guest's clock values or callout bodies: a replay of a crash
session uses a fixed clock and answers callouts from mocks. For an exact session,
record with ``serve --record``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from host.lab.har import empty_log, write_atomically
from host.lab.record import entry_of

if TYPE_CHECKING:
    from host.proxy.chain import RequestRecord
    from host.proxy.plugins import PluginManager

__all__ = ["CrashKeeper"]


def _default_folder() -> Path:
    from host.datadir import user_data_dir

    return user_data_dir() / "crashes"


class CrashKeeper:
    """A failure listener: on a request where a plugin trapped, keep its session."""

    def __init__(
        self, manager: PluginManager, folder: Callable[[], Path] = _default_folder
    ) -> None:
        self.m = manager
        self.folder = folder
        self.kept: dict[str, Path] = {}  # plugin -> its latest crash session

    def on_request(self, rec: RequestRecord) -> None:
        for hop in rec.hops:
            if hop.ran and hop.failure is not None:
                try:
                    self._keep(hop.plugin, rec)
                except OSError as e:
                    self.m.log_error(f"{hop.plugin}: could not keep the crash session: {e}")

    def _keep(self, plugin: str, failing: RequestRecord) -> None:
        records: list[RequestRecord] = []
        for r in reversed(self.m.recent):
            h = next((x for x in r.hops if x.plugin == plugin), None)
            if h is None or not h.ran:
                continue
            if r is not failing and h.failure is not None:
                break  # the previous VM ended here
            records.append(r)
        if not records or records[0] is not failing:
            records.insert(0, failing)
        records.reverse()
        slot = self.m.slots.get(plugin)
        doc = empty_log()
        chain: list[dict[str, Any]] = []
        if slot is not None:
            chain.append(
                {
                    "name": plugin,
                    "root_id": slot.spec.plugin_name,
                    "module_sha256": slot.sha256
                    or (slot.instance.module.sha256 if slot.instance else None),
                    "config": slot.spec.plugin_config_json.decode("utf-8", "replace"),
                    "mode": slot.mode,
                }
            )
        doc["log"]["_wasmdesk"] = {
            "version": 1,
            "chain": chain,
            "crash": {"plugin": plugin, "failure": slot.failure_dict() if slot else None},
        }
        doc["log"]["entries"] = [entry_of(r) for r in records]
        folder = self.folder()
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in plugin)
        path = folder / f"crash-{safe}-{stamp}-{failing.id}.har"
        write_atomically(path, doc)
        self.kept[plugin] = path
        if slot is not None:
            slot.crash_session = str(path)
        root = slot.spec.plugin_name if slot is not None else plugin
        self.m.log_error(
            f"{plugin}: the {len(records)} requests that led to the failure are kept in "
            f"{path}; reproduce with: wasmdesk replay {path} MODULE.wasm --root-id {root}"
        )
