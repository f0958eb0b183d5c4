"""HAR 1.2 sessions: what the lab writes under ``serve --record`` and reads in a replay.

A session is an ordinary HAR 1.2 log (browsers, mitmproxy and Postman read it);
what a replay needs beyond HAR rides in ``_wasmdesk`` extension fields (HAR allows
custom fields that start with ``_``):

- ``log._wasmdesk.chain``: the plugin chain (name, root id, module sha256, config, mode);
- ``entry._wasmdesk``: ``request_id``, ``client_request`` (the request as the client
  sent it, before any plugin), ``upstream_response`` (as the upstream answered, before
  any plugin; null for a local reply), ``hops`` (per plugin: what it was given),
  ``callouts`` (``kind`` http|grpc, plugin, cluster, request, response or failure,
  ``elapsed_ms``), ``env`` (per plugin: the clock values and random bytes its VM
  obtained, in order) and ``vm_order`` (per plugin: the n-th request its VM saw).

Bodies are text when they are UTF-8, else base64 with ``encoding: base64`` (HAR's own
convention for ``content``).
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from host import __version__

__all__ = [
    "Exchange",
    "HarError",
    "Message",
    "body_from_json",
    "body_to_json",
    "empty_log",
    "load_session",
    "pairs_from_json",
    "pairs_to_json",
    "read_har",
    "write_atomically",
    "write_text_atomically",
]

Pairs = list[tuple[str, str]]


class HarError(Exception):
    """The file is not a HAR log a replay can use (the message says why)."""


def body_to_json(data: bytes) -> dict[str, Any]:
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"text": base64.b64encode(data).decode("ascii"), "encoding": "base64"}


def body_from_json(obj: Any) -> bytes:
    if not isinstance(obj, dict):
        return b""
    text = obj.get("text") or ""
    if not isinstance(text, str):
        return b""
    if obj.get("encoding") == "base64":
        try:
            return base64.b64decode(text)
        except ValueError:
            return b""
    return text.encode("utf-8")


def pairs_to_json(pairs: list[tuple[bytes, bytes]] | Pairs) -> list[list[str]]:
    out: list[list[str]] = []
    for k, v in pairs:
        ks = k.decode("latin-1") if isinstance(k, bytes) else k
        vs = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
        out.append([ks, vs])
    return out


def pairs_from_json(obj: Any) -> Pairs:
    """``[[name, value], ...]`` (ours) or ``[{"name", "value"}, ...]`` (HAR's)."""
    out: Pairs = []
    if not isinstance(obj, list):
        return out
    for item in obj:
        if isinstance(item, dict):
            out.append((str(item.get("name", "")), str(item.get("value", ""))))
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            out.append((str(item[0]), str(item[1])))
    return out


@dataclass
class Message:
    """A request (method, path, authority) or a response (status); headers without
    pseudo-headers, the body whole."""

    method: str = "GET"
    path: str = "/"
    authority: str = "localhost"
    scheme: str = "http"
    status: int = 200
    headers: Pairs = field(default_factory=list)
    body: bytes = b""


@dataclass
class Exchange:
    """One HAR entry as a replay uses it."""

    index: int
    request: Message
    response: Message | None  # the upstream's; None: none recorded (a local reply)
    request_id: str = ""
    hops: dict[str, Message] = field(default_factory=dict)  # what plugin NAME received
    callouts: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, list[list[Any]]] = field(default_factory=dict)
    recorded: bool = False  # carries _wasmdesk fields
    raw: dict[str, Any] = field(default_factory=dict)


def _split_pseudo(pairs: Pairs, msg: Message) -> Message:
    for k, v in pairs:
        kl = k.lower()
        if kl == ":method":
            msg.method = v
        elif kl == ":path":
            msg.path = v
        elif kl == ":authority":
            msg.authority = v
        elif kl == ":scheme":
            msg.scheme = v
        elif kl == ":status":
            msg.status = int(v) if v.isdigit() else msg.status
        elif kl == "host" and not msg.authority:
            msg.authority = v
        elif not kl.startswith(":"):
            msg.headers.append((kl, v))
    return msg


def _message(obj: Any) -> Message | None:
    if not isinstance(obj, dict):
        return None
    msg = Message(authority="")
    _split_pseudo(pairs_from_json(obj.get("headers")), msg)
    if isinstance(obj.get("status"), int):
        msg.status = obj["status"]
    msg.body = body_from_json(obj.get("body"))
    msg.authority = msg.authority or "localhost"
    return msg


# HTTP/2 pseudo-headers and connection-level headers a browser's devtools list
_DROP_FROM_BROWSER = {"connection", "keep-alive", "transfer-encoding", "upgrade"}


def _from_har_request(req: dict[str, Any]) -> Message:
    url = str(req.get("url") or "/")
    parts = urlsplit(url)
    msg = Message(
        method=str(req.get("method") or "GET").upper(),
        path=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
        authority=parts.netloc or "localhost",
        scheme=parts.scheme or "http",
    )
    for k, v in pairs_from_json(req.get("headers")):
        kl = k.lower()
        if kl.startswith(":"):
            if kl == ":authority":
                msg.authority = v
            continue
        if kl in _DROP_FROM_BROWSER:
            continue
        if kl == "host":
            msg.authority = v
            continue
        msg.headers.append((kl, v))
    post = req.get("postData")
    if isinstance(post, dict):
        msg.body = body_from_json(post)
    return msg


def _from_har_response(resp: dict[str, Any]) -> Message:
    status = resp.get("status")
    msg = Message(status=status if isinstance(status, int) and 100 <= status <= 999 else 200)
    for k, v in pairs_from_json(resp.get("headers")):
        kl = k.lower()
        if kl.startswith(":") or kl in _DROP_FROM_BROWSER or kl == "content-length":
            continue
        msg.headers.append((kl, v))
    msg.body = body_from_json(resp.get("content"))
    return msg


def read_har(path: str | Path) -> dict[str, Any]:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise HarError(f"no such file: {path}") from None
    except OSError as e:
        raise HarError(f"cannot read {path}: {e.strerror}") from None
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise HarError(f"{path}: not JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("log"), dict):
        raise HarError(f"{path}: not a HAR file (no top-level 'log' object)")
    entries = doc["log"].get("entries")
    if not isinstance(entries, list):
        raise HarError(f"{path}: not a HAR file ('log.entries' is not a list)")
    return doc


def load_session(path: str | Path) -> tuple[list[Exchange], dict[str, Any]]:
    """The entries of a HAR file in recorded order, and ``log._wasmdesk`` ({} if none)."""
    doc = read_har(path)
    log = doc["log"]
    out: list[Exchange] = []
    for i, entry in enumerate(log["entries"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
            raise HarError(f"{path}: entry {i} has no request object")
        try:
            out.append(_exchange(i, entry))
        except (TypeError, ValueError, AttributeError) as e:
            raise HarError(f"{path}: entry {i} is malformed: {e}") from None
    ext_log = log.get("_wasmdesk")
    return out, ext_log if isinstance(ext_log, dict) else {}


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _exchange(i: int, entry: dict[str, Any]) -> Exchange:
    ext = entry.get("_wasmdesk")
    if not isinstance(ext, dict):
        # A plain HAR (a browser's devtools, mitmproxy): what the client sent and what
        # it got back stand in for the upstream's answer.
        resp = entry.get("response")
        response = _from_har_response(resp) if isinstance(resp, dict) else None
        return Exchange(i, _from_har_request(entry["request"]), response, "", raw=entry)
    request = _message(ext.get("client_request")) or _from_har_request(entry["request"])
    upstream = ext.get("upstream_response")
    hops = {
        str(name): m for name, h in _dict(ext.get("hops")).items() if (m := _message(h)) is not None
    }
    calls = ext.get("callouts")
    return Exchange(
        i,
        request,
        _message(upstream) if upstream is not None else None,
        str(ext.get("request_id") or ""),
        hops,
        [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else [],
        {str(k): list(v) for k, v in _dict(ext.get("env")).items() if isinstance(v, list)},
        True,
        entry,
    )


def empty_log() -> dict[str, Any]:
    return {
        "log": {
            "version": "1.2",
            "creator": {"name": "wasmdesk", "version": __version__},
            "pages": [],
            "entries": [],
        }
    }


def write_atomically(path: str | Path, doc: dict[str, Any], *, fsync: bool = True) -> None:
    """Write ``doc`` as JSON so that a reader sees the old file or the new, never half."""
    write_text_atomically(path, json.dumps(doc, indent=1, ensure_ascii=False) + "\n", fsync=fsync)


def write_text_atomically(path: str | Path, text: str, *, fsync: bool = True) -> None:
    """Write to a temporary file beside ``path`` and rename it over ``path``. Without
    ``fsync`` the file survives a crash of the process (not of the machine)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=str(target.parent or "."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
