"""The composer's history: the requests sent from it, copied as curl, saved to or
loaded from a HAR file (the lab's format, so a saved history can be replayed)."""

from __future__ import annotations

import shlex
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from host.lab.har import body_to_json, empty_log, load_session, write_atomically

__all__ = ["MAX_HISTORY", "as_curl", "history_from_har", "history_to_har"]

MAX_HISTORY = 100


def as_curl(base_url: str, req: Mapping[str, Any]) -> str:
    """A curl command line sending ``req`` (method, path, headers, body) to the proxy."""
    parts = ["curl", "-i"]
    method = str(req.get("method") or "GET")
    if method != "GET":
        parts += ["-X", method]
    for k, v in req.get("headers") or []:
        parts += ["-H", f"{k}: {v}"]
    body = req.get("body") or ""
    if body:
        parts += ["--data-binary", str(body)]
    parts.append(base_url.rstrip("/") + str(req.get("path") or "/"))
    return " ".join(shlex.quote(p) for p in parts)


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
    exchanges, _ = load_session(path)
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
