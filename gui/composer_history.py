"""The composer's history: the requests sent from it, copied as curl, saved to or
loaded from a HAR file (the lab's format, so a saved history can be replayed)."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from gui.engine_service import lab_api

__all__ = ["MAX_HISTORY", "as_curl", "history_from_har", "save_history"]

MAX_HISTORY = lab_api.MAX_HISTORY
history_from_har = lab_api.history_from_har  # any HAR's requests (ValueError if bad)
save_history = lab_api.save_history


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
