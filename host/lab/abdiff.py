"""A/B and golden comparisons of replay outputs: what differs, per request and by kind.

Both compare the observable outcome of each request (request and response headers and
bodies, status, local reply, whether it was forwarded, logs, what it did to the metrics,
failure), not incidental details (context ids, callback results), so a diff means
behaviour changed.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["KINDS", "compare", "outcome", "render", "with_metric_deltas"]

KINDS = (
    "status",
    "request_headers",
    "request_body",
    "forwarded",
    "response_headers",
    "response_body",
    "local_reply",
    "logs",
    "metrics",
    "failure",
)


def _metric_delta(prev: dict[str, Any], cur: dict[str, Any]) -> dict[str, Any]:
    """What one request did to the metrics: counters and gauges by how much they moved,
    histograms by the count and sum they gained (so one early difference does not
    make every later request differ)."""
    out: dict[str, Any] = {}
    for k, v in cur.items():
        before = prev.get(k)
        if isinstance(v, int) and not isinstance(v, bool):
            d = v - (before if isinstance(before, int) else 0)
            if d:
                out[k] = d
        elif isinstance(v, dict):
            b = before if isinstance(before, dict) else {}
            dc = int(v.get("count", 0)) - int(b.get("count", 0))
            ds = int(v.get("sum", 0)) - int(b.get("sum", 0))
            if dc or ds:
                out[k] = {"count": dc, "sum": ds}
    return out


def with_metric_deltas(reqs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The requests with ``metrics`` replaced by what each request changed."""
    prev: dict[str, Any] = {}
    out: list[dict[str, Any]] = []
    for r in reqs:
        cur = r.get("metrics")
        if isinstance(cur, dict):
            out.append(dict(r, metrics=_metric_delta(prev, cur)))
            prev = cur
        else:
            out.append(r)
    return out


def outcome(req: dict[str, Any]) -> dict[str, Any]:
    """The comparable part of one replayed request."""
    if "skipped" in req:
        return {"skipped": req["skipped"]}
    request = req.get("request") or {}
    response = req.get("response") or {}
    failure = req.get("failure")
    return {
        "status": response.get("status"),
        "request_headers": request.get("headers"),
        "request_body": request.get("body"),
        "forwarded": request.get("forwarded"),
        "response_headers": response.get("headers"),
        "response_body": response.get("body"),
        "local_reply": req.get("local_response"),
        "logs": [[x.get("level"), x.get("message")] for x in req.get("logs") or []],
        "metrics": req.get("metrics"),
        "failure": None
        if not failure
        else {k: failure.get(k) for k in ("kind", "message", "callback", "backtrace")},
    }


def _pairs_diff(a: Any, b: Any) -> list[str]:
    sa = [tuple(x) for x in a or []]
    sb = [tuple(x) for x in b or []]
    out = [f"- {k}: {v}" for k, v in sa if (k, v) not in sb]
    out += [f"+ {k}: {v}" for k, v in sb if (k, v) not in sa]
    return out or ["(same pairs, different order)"]


def _short(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    return s if len(s) <= 200 else s[:200] + f"… ({len(s)} chars)"


def compare(
    a: list[dict[str, Any]], b: list[dict[str, Any]], labels: tuple[str, str] = ("A", "B")
) -> dict[str, Any]:
    """Per-request differences between two replays of one session, and a summary."""
    a, b = with_metric_deltas(a), with_metric_deltas(b)
    rows: list[dict[str, Any]] = []
    by_kind: dict[str, int] = {}
    for i in range(max(len(a), len(b))):
        ra = a[i] if i < len(a) else {"skipped": "absent"}
        rb = b[i] if i < len(b) else {"skipped": "absent"}
        oa, ob = outcome(ra), outcome(rb)
        diffs: dict[str, list[str]] = {}
        for k in sorted(set(oa) | set(ob), key=(*KINDS, "skipped").index):
            va, vb = oa.get(k), ob.get(k)
            if va == vb:
                continue
            if k in ("request_headers", "response_headers"):
                lines = _pairs_diff(va, vb)
            else:
                lines = [f"- {labels[0]}: {_short(va)}", f"+ {labels[1]}: {_short(vb)}"]
            diffs[k] = lines
            by_kind[k] = by_kind.get(k, 0) + 1
        rows.append(
            {
                "index": ra.get("index", rb.get("index", i)),
                "method": ra.get("method", rb.get("method", "")),
                "path": ra.get("path", rb.get("path", "")),
                "differs": bool(diffs),
                "diff": diffs,
            }
        )
    n_diff = sum(1 for r in rows if r["differs"])
    return {
        "requests": rows,
        "summary": {
            "requests": len(rows),
            "identical": len(rows) - n_diff,
            "different": n_diff,
            "by_kind": dict(sorted(by_kind.items())),
        },
    }


def render(cmp: dict[str, Any], labels: tuple[str, str] = ("A", "B")) -> str:
    lines: list[str] = []
    for row in cmp["requests"]:
        if not row["differs"]:
            continue
        lines.append(f"#{row['index']} {row['method']} {row['path']}")
        for kind, diff in row["diff"].items():
            lines.append(f"  {kind}:")
            lines.extend(f"    {d}" for d in diff)
    s = cmp["summary"]
    kinds = ", ".join(f"{k} {n}" for k, n in s["by_kind"].items())
    lines.append(
        f"{s['requests']} requests: {s['identical']} identical, {s['different']} different"
        + (f" ({kinds})" if kinds else "")
        + f"  [{labels[0]} vs {labels[1]}]"
    )
    return "\n".join(lines)
