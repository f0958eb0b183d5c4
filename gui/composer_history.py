"""The composer's history: the requests sent from it, copied as curl, saved to or
loaded from a HAR file (the lab's format, so a saved history can be replayed).

HTTP/2 and gRPC entries are saved with ``httpVersion: HTTP/2`` and a
``_wasmdesk_composer`` extension field (protocol, message format, deadline; gRPC status)
so loading puts them back in the form as they were; an HTTP/2 or gRPC request in a HAR
from elsewhere (a browser, mitmproxy) comes back as such too."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import shlex
import tempfile
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gui.composer_send import (
    check_grpc_method,
    encode_payload,
    grpc_curl,
    parse_metadata,
    tls_curl_options,
)
from gui.engine_service import lab_api

__all__ = ["MAX_HISTORY", "as_curl", "history_from_har", "save_history"]

MAX_HISTORY = lab_api.MAX_HISTORY
_EXT = "_wasmdesk_composer"
_H2_VERSIONS = {"http/2", "http/2.0", "h2", "h2c"}
_GRPC_SET_BY_CLIENT = {"content-type", "te", "grpc-timeout", "user-agent", "grpc-encoding"}


def save_history(path: str | Path, entries: Iterable[Mapping[str, Any]], base_url: str) -> None:
    """Write the history as HAR 1.2 (the lab's shape), replacing the file by rename."""
    entries = list(entries)
    doc = lab_api.history_to_har(entries, base_url)
    for e, har in zip(entries, doc["log"]["entries"], strict=True):
        proto = str(e.get("protocol") or "HTTP/1.1")
        if proto == "HTTP/1.1":
            continue
        har["request"]["httpVersion"] = har["response"]["httpVersion"] = "HTTP/2"
        ext: dict[str, Any] = {"protocol": proto}
        if proto == "gRPC":
            resp = e.get("response") or {}
            ext.update(
                payload_format=str(e.get("payload_format") or "json"),
                deadline_s=float(e.get("deadline_s") or 10.0),
                grpc_status=resp.get("grpc_status"),
                grpc_message=resp.get("grpc_message") or "",
                trailers=resp.get("trailers") or [],
            )
        har[_EXT] = ext
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def history_from_har(path: str | Path) -> deque[dict[str, Any]]:
    """Any HAR's requests as history entries, newest last (ValueError if bad); HTTP/2
    and gRPC requests keep their protocol."""
    out = lab_api.history_from_har(path)
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))["log"]["entries"]
    except (OSError, ValueError, KeyError, TypeError):
        return out
    if not isinstance(raw, list) or len(raw) < len(out):
        return out
    for e, har in zip(out, raw[len(raw) - len(out) :], strict=True):
        if isinstance(har, dict):
            _restore_protocol(e, har)
    return out


def _restore_protocol(e: dict[str, Any], har: Mapping[str, Any]) -> None:
    req = har.get("request") if isinstance(har.get("request"), dict) else {}
    ext = har.get(_EXT) if isinstance(har.get(_EXT), dict) else {}
    proto = str(ext.get("protocol") or "")
    ctype = next(
        (
            str(h.get("value"))
            for h in req.get("headers") or []
            if isinstance(h, dict) and str(h.get("name", "")).lower() == "content-type"
        ),
        "",
    )
    if not proto and ctype.startswith("application/grpc"):
        proto = "gRPC"
    if not proto and str(req.get("httpVersion") or "").lower() in _H2_VERSIONS:
        proto = "HTTP/2"
    if proto not in ("HTTP/2", "gRPC"):
        return
    e["protocol"] = proto
    if proto != "gRPC":
        return
    e["method"] = "POST"
    e["headers"] = [
        [k, v]
        for k, v in e.get("headers") or []
        if str(k).lower() not in _GRPC_SET_BY_CLIENT and not str(k).startswith(("grpc-", ":"))
    ]
    e["deadline_s"] = float(ext.get("deadline_s") or 10.0)
    if ext:
        e["payload_format"] = str(ext.get("payload_format") or "json")
        return
    # a gRPC request from another tool: the body is framed messages; show the first as hex
    post = req.get("postData") if isinstance(req.get("postData"), dict) else {}
    text = str(post.get("text") or "")
    try:
        data = base64.b64decode(text) if post.get("encoding") == "base64" else text.encode()
    except (binascii.Error, ValueError):
        data = b""
    if len(data) >= 5 and int.from_bytes(data[1:5], "big") <= len(data) - 5:
        data = data[5 : 5 + int.from_bytes(data[1:5], "big")]
    e["payload_format"] = "hex"
    e["body"] = data.hex(" ")


def as_curl(base_url: str, req: Mapping[str, Any], cacert: str = "") -> str:
    """A curl command line sending ``req`` (method, path, headers, body) to the proxy:
    HTTP/2 with ``--http2-prior-knowledge``; a gRPC call (``protocol: gRPC``) as its
    framed message piped from printf (``gui.composer_send.grpc_curl``). On an
    ``https://`` proxy, ``--cacert cacert`` (when given) and the protocol by ALPN.
    ValueError when a gRPC entry's method, metadata or message is not valid."""
    protocol = str(req.get("protocol") or "HTTP/1.1")
    if protocol == "gRPC":
        lines = "\n".join(f"{k}: {v}" for k, v in req.get("headers") or [])
        return grpc_curl(
            base_url,
            check_grpc_method(str(req.get("path") or "")),
            encode_payload(str(req.get("body") or ""), str(req.get("payload_format") or "json")),
            parse_metadata(lines),
            float(req.get("deadline_s") or 10.0),
            cacert,
        )
    parts = ["curl", "-i", *tls_curl_options(base_url, cacert, protocol)]
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
