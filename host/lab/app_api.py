"""What the desktop app asks of the lab, in plain values (paths, JSON text, dicts): A/B
and Reproduce replays, mock rules checked and loaded, the client's view of request
headers, the composer's history as HAR. ``gui`` reaches it through
``gui.engine_service`` (the app's one door to the engine). Replays run on the
caller's thread with their own wasmtime engine; errors come back as ValueError.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from host.lab.har import HarError, body_to_json, empty_log, load_session, write_atomically
from host.lab.mocks import MockError, Mocks, load_mocks, parse_mocks
from host.lab.record import client_view as _client_view

__all__ = [
    "MAX_HISTORY",
    "check_mock_rules",
    "client_view",
    "history_from_har",
    "history_to_har",
    "load_mock_rules",
    "run_ab",
    "run_reproduce",
    "save_history",
]

MAX_HISTORY = 100


def _mocks(rules: Any) -> Mocks | None:
    if not rules:
        return None
    try:
        return parse_mocks(list(rules), "mocks")
    except MockError as e:
        raise ValueError(str(e)) from None


def check_mock_rules(rules: list[dict[str, Any]]) -> str:
    """ "" when the rules are valid, else the message naming the rule and field."""
    try:
        parse_mocks(rules, "table")
    except MockError as e:
        return str(e)
    return ""


def load_mock_rules(path: str) -> list[dict[str, Any]]:
    """The rules of a mocks file, as table rows (ValueError with the reason)."""
    try:
        mocks = load_mocks(path)
    except MockError as e:
        raise ValueError(str(e)) from None
    out: list[dict[str, Any]] = []
    for r in mocks.rules:
        row: dict[str, Any] = {
            "cluster": r.cluster,
            "path": r.path,
            "method": r.method,
            "grpc_method": r.grpc_method,
            "status": r.status,
            "body": r.body.decode("utf-8", "replace"),
            "delay_ms": r.delay_ms or None,
            "failure": r.failure,
        }
        out.append({k: v for k, v in row.items() if v is not None})
    return out


def client_view(pairs: Iterable[Iterable[str]]) -> list[list[str]]:
    """Request headers as the client sent them (the proxy's additions removed)."""
    raw = [(str(k).encode("latin-1"), str(v).encode("utf-8")) for k, v in pairs]
    return [[k.decode("latin-1"), v.decode("utf-8")] for k, v in _client_view(raw)]


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"{what}: cannot read {path}: {e.strerror or e}") from None


def _options(root_id: str, config: str, mocks: Any = None) -> Any:
    from host.lab.replay import ReplayOptions

    text = config.strip()
    if text:
        try:
            json.loads(text)
        except ValueError as e:
            raise ValueError(f"configuration is not valid JSON: {e}") from None
    return ReplayOptions(
        root_id=root_id, configuration=text.encode("utf-8"), mocks=mocks, timing=True
    )


def run_ab(
    session: str,
    a: str,
    b: str,
    config_a: str,
    config_b: str,
    root_id: str,
    mock_rules: Any = None,
) -> dict[str, Any]:
    """Replay ``session`` through A and B (B defaults to A's module); the outputs and
    their comparison (``host.lab.abdiff.compare``). Raises ValueError for bad input."""
    from host.lab.abdiff import compare
    from host.lab.replay import replay
    from host.wasm import LoadError

    mocks = _mocks(mock_rules)

    try:
        exchanges, _ = load_session(session)
    except HarError as e:
        raise ValueError(f"session: {e}") from None
    wasm_a = _read(a, "A")
    wasm_b = _read(b, "B") if b else wasm_a
    root = root_id or Path(a).name.removesuffix(".wasm")
    try:
        out_a = replay(wasm_a, exchanges, _options(root, config_a, mocks))
        out_b = replay(wasm_b, exchanges, _options(root, config_b, mocks))
    except LoadError as e:
        raise ValueError(e.message) from None
    return {"a": out_a, "b": out_b, "diff": compare(out_a["requests"], out_b["requests"])}


def run_reproduce(
    session: str, module: str, config: str, root_id: str, mock_rules: Any = None
) -> dict[str, Any]:
    """Replay ``session`` through ``module`` (a crash session's recorded root id and
    config are the defaults); the replay's output, its ``failure`` if it trapped."""
    from host.lab.replay import replay
    from host.wasm import LoadError

    mocks = _mocks(mock_rules)

    try:
        exchanges, ext = load_session(session)
    except HarError as e:
        raise ValueError(f"session: {e}") from None
    chain = ext.get("chain") or []
    recorded = chain[0] if len(chain) == 1 and isinstance(chain[0], dict) else {}
    root = root_id or str(recorded.get("root_id") or Path(module).name.removesuffix(".wasm"))
    cfg = config if config.strip() else str(recorded.get("config") or "")
    try:
        return replay(_read(module, "module"), exchanges, _options(root, cfg, mocks))
    except LoadError as e:
        raise ValueError(e.message) from None


def history_to_har(entries: Iterable[Mapping[str, Any]], base_url: str) -> dict[str, Any]:
    doc = empty_log()
    for e in entries:
        body = str(e.get("body") or "").encode("utf-8")
        headers = [{"name": str(k), "value": str(v)} for k, v in e.get("headers") or []]
        request: dict[str, Any] = {
            "method": str(e.get("method") or "GET"),
            "url": base_url.rstrip("/") + str(e.get("path") or "/"),
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": headers,
            "queryString": [],
            "headersSize": -1,
            "bodySize": len(body),
        }
        if body:
            request["postData"] = {"mimeType": "", **body_to_json(body)}
        resp = e.get("response") or {}
        rbody = str(resp.get("body") or "").encode("utf-8")
        content = body_to_json(rbody)
        content.update(size=len(rbody), mimeType="")
        doc["log"]["entries"].append(
            {
                "startedDateTime": str(e.get("at") or "1970-01-01T00:00:00Z"),
                "time": float(resp.get("elapsed_ms") or 0),
                "request": request,
                "response": {
                    "status": int(resp.get("status") or 0),
                    "statusText": "",
                    "httpVersion": "HTTP/1.1",
                    "cookies": [],
                    "headers": [
                        {"name": str(k), "value": str(v)} for k, v in resp.get("headers") or []
                    ],
                    "content": content,
                    "redirectURL": "",
                    "headersSize": -1,
                    "bodySize": len(rbody),
                },
                "cache": {},
                "timings": {"send": 0, "wait": float(resp.get("elapsed_ms") or 0), "receive": 0},
            }
        )
    return doc


def save_history(path: str | Path, entries: Iterable[Mapping[str, Any]], base_url: str) -> None:
    write_atomically(path, history_to_har(entries, base_url))


def history_from_har(path: str | Path) -> deque[dict[str, Any]]:
    """The requests of any HAR file as history entries (newest last); HarError if bad."""
    try:
        exchanges, _ = load_session(path)
    except HarError as e:
        raise ValueError(str(e)) from None
    out: deque[dict[str, Any]] = deque(maxlen=MAX_HISTORY)
    for ex in exchanges:
        r = ex.request
        out.append(
            {
                "method": r.method,
                "path": r.path,
                "headers": [[k, v] for k, v in r.headers if k != "content-length"],
                "body": r.body.decode("utf-8", "replace"),
            }
        )
    return out
