"""Plain-text rendering of a replay for the terminal (``--json`` has everything)."""

from __future__ import annotations

from typing import Any

__all__ = ["render_replay"]


def render_replay(out: dict[str, Any]) -> str:
    m = out["module"]
    n = len(out["requests"])
    lines = [f"replay of {n} requests through {m['root_id']} ({m['sha256'][:12]})"]
    for r in out["requests"]:
        if "skipped" in r:
            lines.append(f"#{r['index']} skipped: {r['skipped']}")
            continue
        lr = r["local_response"]
        what = (
            f"local reply {lr['status']}"
            if lr
            else ("forwarded" if r["request"]["forwarded"] else "not forwarded")
        )
        lines.append(
            f"#{r['index']} {r['method']} {r['path']} -> {r['response']['status']} ({what})"
        )
        for log in r["logs"]:
            lines.append(f"    [{log['level']}] {log['message']}")
        for c in r["callouts"]:
            res = c["failure"] or c["response_status"]
            lines.append(f"    callout {c['cluster']}: {res}")
        for n in r["notes"]:
            lines.append(f"    note: {n}")
        if r["failure"]:
            f = r["failure"]
            lines.append(f"    FAILED in {f['callback']}: {f['kind']}: {f['message']}")
            lines.extend(f"      {b}" for b in f["backtrace"])
    return "\n".join(lines)
