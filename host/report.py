"""Human-readable rendering of a ``wasmdesk try`` result (the non ``--json`` output)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from host.runner import TryResult
from host.runner_tcp import TcpTryResult

__all__ = ["header_diff", "render_try", "render_try_tcp"]


def header_diff(before: list[tuple[bytes, bytes]], after: list[tuple[bytes, bytes]]) -> list[str]:
    """Lines "+ name: value" / "- name: value" / "~ name: old -> new" in ``after`` order."""

    def d(pairs: list[tuple[bytes, bytes]]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for k, v in pairs:
            out.setdefault(k.decode("latin-1"), []).append(v.decode("utf-8", "replace"))
        return out

    b, a = d(before), d(after)
    lines = []
    for k, vals in a.items():
        old = b.get(k)
        if old is None:
            lines += [f"  + {k}: {v}" for v in vals]
        elif old != vals:
            lines.append(f"  ~ {k}: {', '.join(old)} -> {', '.join(vals)}")
    for k, vals in b.items():
        if k not in a:
            lines += [f"  - {k}: {v}" for v in vals]
    return lines


def _short(body: bytes, limit: int = 200) -> str:
    text = body.decode("utf-8", "replace")
    return text if len(text) <= limit else text[:limit] + f"… ({len(body)} bytes)"


def render_try(plugin: str, r: TryResult) -> str:
    out = [f"plugin    {plugin}  (ABI {r.abi or '?'}, {r.sdk or 'unknown SDK'})"]
    out += [f"WARNING   {w}" for w in r.warnings]
    if r.failure is not None:
        f = r.failure
        out.append(f"FAILED    {f['state']} / {f['kind']}: {f['message']}")
        frames = f.get("backtrace") or []
        for frame in frames if isinstance(frames, list) else []:
            out.append(f"            at {frame}")
    if r.original_request_headers:
        fate = (
            "forwarded upstream"
            if r.request_forwarded
            else ("answered locally" if r.local_response else "not forwarded")
        )
        out.append(f"request   {fate}")
        diff = header_diff(r.original_request_headers, r.request_headers)
        out += diff or ["  (headers unchanged)"]
        if r.request_body:
            out.append(f"  body: {_short(r.request_body)}")
    if r.local_response is not None:
        lr = r.local_response
        out.append(
            f"local reply {lr['status']}  details={lr['details'] or '-'}  body={lr['body']!r}"
        )
    if r.response_status is not None:
        out.append(f"response  {r.response_status}")
        diff = header_diff(r.original_response_headers, r.response_headers)
        out += diff or ["  (headers unchanged)"]
        if r.response_body:
            out.append(f"  body: {_short(r.response_body)}")
    if r.callouts:
        out.append("callouts")
        for c in r.callouts:
            res = c["failure"] or c["response_status"]
            out.append(f"  {c['cluster']}  -> {res}  ({c['elapsed_ms']} ms)")
    if r.ticks_fired:
        out.append(f"ticks     {r.ticks_fired} fired")
    out += _metrics_logs_notes(r.metrics, r.logs, r.notes)
    return "\n".join(out)


def render_try_tcp(plugin: str, r: TcpTryResult) -> str:
    """``wasmdesk try --tcp``: each callback with its input and what it released, then what
    each direction became."""
    out = [f"plugin    {plugin}  (ABI {r.abi or '?'}, {r.sdk or 'unknown SDK'})  TCP"]
    out += [f"WARNING   {w}" for w in r.warnings]
    if r.failure is not None:
        f = r.failure
        out.append(f"FAILED    {f['state']} / {f['kind']}: {f['message']}")
    arrows = {"downstream": "client -> upstream", "upstream": "upstream -> client"}
    for s in r.steps:
        result = str(s["result"])
        if s.get("paused_first") and result != "pause":
            result = f"pause -> {result}"
        line = f"  {s['callback']:<28} {result:<18}"
        if s["callback"] != "proxy_on_new_connection":
            line += f" {arrows[str(s['direction'])]}"
            line += "  end of stream" if s.get("end_of_stream") else f"  in={s['input']!r}"
            if (s["result"] == "continue" and not s.get("end_of_stream")) or s["released"]:
                line += f"  out={s['released']!r}"
        out.append(line.rstrip())
    if r.closed_by_plugin:
        out.append("closed    by the plugin (proxy_close_stream)")
    out.append(f"to upstream    {_short(r.to_upstream)!r}")
    out.append(f"to client      {_short(r.to_downstream)!r}")
    for direction, data in r.held.items():
        out.append(f"held ({direction})  {_short(data)!r}")
    if r.ticks_while_paused:
        out.append(f"ticks     {r.ticks_while_paused} while paused")
    out += _metrics_logs_notes(r.metrics, r.logs, r.notes)
    return "\n".join(out)


def _metrics_logs_notes(
    metrics: Mapping[str, object], logs: Sequence[Mapping[str, object]], notes: Sequence[str]
) -> list[str]:
    """The tail ``try`` and ``try --tcp`` both print: metrics, the plugin's logs, notes."""
    out: list[str] = []
    if metrics:
        out.append("metrics")
        out += [f"  {k} = {v}" for k, v in metrics.items()]
    if logs:
        out.append("logs")
        out += [f"  [{rec['level']}] {rec['message']}" for rec in logs]
    out += [f"note: {n}" for n in notes]
    return out
