"""Pure helpers behind the inspector: callback results by name, the request and the
response as the client and the upstream saw them, the filter bar's query language, and
a record exported as a curl command or a HAR 1.2 log. Values in, values (and the HAR's
JSON) out: no Qt and no engine objects here (a record is the engine's frozen
``host.proxy.request_views.RequestView``, a list row its ``RequestSummary``)."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gui.composer_send import GRPC_STATUS_NAMES, tls_curl_options
from host.proxy.request_views import (
    HeaderPairs,
    HopView,
    LocalReplyView,
    RequestSummary,
    RequestView,
)

__all__ = [
    "Exchange",
    "InspectorFilter",
    "callback_result_name",
    "hop_not_reached",
    "parse_filter",
    "record_exchange",
    "record_to_curl",
    "record_to_har",
]

# Envoy's enums as the ABI doc lists them (proxy-wasm-abi.md §4: FilterHeadersStatus,
# FilterDataStatus, FilterTrailersStatus); the spec itself names only 0 Continue, 1 Pause.
_HEADERS_STATUS = (
    "Continue",
    "StopIteration",
    "ContinueAndEndStream",
    "StopAllIterationAndBuffer",
    "StopAllIterationAndWatermark",
)
_DATA_STATUS = (
    "Continue",
    "StopIterationAndBuffer",
    "StopIterationAndWatermark",
    "StopIterationNoBuffer",
)
_TRAILERS_STATUS = ("Continue", "StopIteration")
_BOOL_RESULT = ("proxy_on_vm_start", "proxy_on_configure", "proxy_on_done")


def callback_result_name(callback: str, result: object) -> str:
    """The name of a callback's return value ("Continue", "StopIterationAndBuffer"...),
    "—" when the callback returns nothing, the raw value when it is out of range."""
    if result is None:
        return "—"
    if not isinstance(result, int) or isinstance(result, bool):
        return str(result)  # "trap"
    name = str(callback)
    table: tuple[str, ...] = ()
    if name.endswith("_headers"):
        table = _HEADERS_STATUS
    elif name.endswith("_body"):
        table = _DATA_STATUS
    elif name.endswith("_trailers") or name.endswith("_metadata"):
        table = _TRAILERS_STATUS
    elif name in _BOOL_RESULT:
        return "true" if result else "false"
    if 0 <= result < len(table):
        return table[result]
    return str(result)


def hop_not_reached(hop: HopView) -> bool:
    """A hop that was chosen for the request but never called: an earlier plugin (or a
    failed one) answered first, so this one's callbacks did not run."""
    if not hop.ran or any(
        (hop.callbacks, hop.failure, hop.callouts, hop.local_reply, hop.would, hop.paused_ms)
    ):
        return False
    return all(
        part is None
        for part in (
            hop.request_headers_before,
            hop.request_body_before,
            hop.request_trailers_before,
            hop.response_headers_before,
            hop.response_body_before,
            hop.response_trailers_before,
        )
    )


_V = TypeVar("_V")


def _first(hops: Sequence[HopView], part: Callable[[HopView], _V | None]) -> _V | None:
    return next((v for h in hops if (v := part(h)) is not None), None)


def _last(hops: Sequence[HopView], part: Callable[[HopView], _V | None]) -> _V | None:
    return _first(hops[::-1], part)


@dataclass(frozen=True)
class Exchange:
    """The request and the response at both ends of the chain (``record_exchange``);
    None where no plugin saw that part."""

    request_headers_client: HeaderPairs | None
    request_headers_upstream: HeaderPairs | None
    request_body_client: str | None
    request_body_upstream: str | None
    response_headers_upstream: HeaderPairs | None
    response_headers_client: HeaderPairs | None
    response_body_upstream: str | None
    response_body_client: str | None
    local_reply: LocalReplyView | None
    # trailers (grpc-status rides in the response's): at both ends, as for headers
    request_trailers_client: HeaderPairs | None
    request_trailers_upstream: HeaderPairs | None
    response_trailers_upstream: HeaderPairs | None
    response_trailers_client: HeaderPairs | None


def record_exchange(rec: RequestView) -> Exchange:
    """The request and the response at both ends of the chain, from the hops' records:
    the request as the client sent it (the first hop's "before") and as upstream got it
    (the last enforcing hop's "after"), the response as upstream sent it (the last hop's
    "before", the response runs back up) and as the client got it (the first hop's
    "after")."""
    hops = [h for h in rec.hops if h.ran]
    enforcing = [h for h in hops if h.mode != "log-only"] or hops
    return Exchange(
        request_headers_client=_first(hops, lambda h: h.request_headers_before),
        request_headers_upstream=_last(enforcing, lambda h: h.request_headers_after),
        request_body_client=_first(hops, lambda h: h.request_body_before),
        request_body_upstream=_last(enforcing, lambda h: h.request_body_after),
        response_headers_upstream=_last(hops, lambda h: h.response_headers_before),
        response_headers_client=_first(enforcing, lambda h: h.response_headers_after),
        response_body_upstream=_last(hops, lambda h: h.response_body_before),
        response_body_client=_first(enforcing, lambda h: h.response_body_after),
        local_reply=_first(enforcing, lambda h: h.local_reply),
        request_trailers_client=_first(hops, lambda h: h.request_trailers_before),
        request_trailers_upstream=_last(enforcing, lambda h: h.request_trailers_after),
        response_trailers_upstream=_last(hops, lambda h: h.response_trailers_before),
        response_trailers_client=_first(enforcing, lambda h: h.response_trailers_after),
    )


_SKIP_CURL = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}


def record_to_curl(rec: RequestView, base_url: str = "", cacert: str = "") -> str:
    """A curl command that sends the recorded request again, as the client sent it
    (pseudo-headers, host and hop-by-hop fields left to curl). ``base_url``: the proxy
    (``http://127.0.0.1:10000``); the record's authority when empty. ``cacert``: the CA
    an ``https://`` proxy is checked against (``--cacert``)."""
    ex = record_exchange(rec)
    base = base_url.rstrip("/") or f"http://{rec.authority or '127.0.0.1'}"
    method = rec.method or "GET"
    # as the client spoke: h2c with prior knowledge, or by ALPN over TLS
    protocol = "HTTP/2" if rec.protocol == "HTTP/2" else "HTTP/1.1"
    parts = ["curl", *tls_curl_options(base, cacert, protocol)]
    if method != "GET":
        parts += ["-X", method]
    parts.append(base + (rec.path or "/"))
    for k, v in ex.request_headers_client or ():
        if k.startswith(":") or k.lower() in _SKIP_CURL:
            continue
        parts += ["-H", f"{k}: {v}"]
    body = ex.request_body_client
    if body:
        parts += ["--data-binary", body]
    return " ".join(shlex.quote(p) for p in parts)


def _har_headers(pairs: HeaderPairs | None) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in pairs or () if not k.startswith(":")]


def record_to_har(rec: RequestView, base_url: str = "") -> dict[str, Any]:
    """One record as a HAR 1.2 log with one entry (what browsers' devtools and mitmweb
    import). Headers are those at the client's end; the plugin hops go in ``_hops``
    (HAR allows custom fields with a leading underscore)."""
    ex = record_exchange(rec)
    base = base_url.rstrip("/") or f"http://{rec.authority or '127.0.0.1'}"
    req_headers = _har_headers(ex.request_headers_client)
    resp_pairs = ex.response_headers_client
    lr = ex.local_reply
    if resp_pairs is None and lr is not None:
        resp_pairs = lr.headers
    resp_headers = _har_headers(resp_pairs)
    resp_body = ex.response_body_client
    if resp_body is None and lr is not None:
        resp_body = lr.body
    ctype = next((h["value"] for h in resp_headers if h["name"].lower() == "content-type"), "")
    req_body = ex.request_body_client
    started = rec.started or time.time()
    ms = rec.duration_ms
    version = rec.protocol or "HTTP/1.1"  # what the client spoke
    request: dict[str, Any] = {
        "method": rec.method or "GET",
        "url": base + (rec.path or "/"),
        "httpVersion": version,
        "cookies": [],
        "headers": req_headers,
        "queryString": [],
        "headersSize": -1,
        "bodySize": len(req_body.encode()) if req_body else 0,
    }
    if req_body:
        req_ctype = next(
            (h["value"] for h in req_headers if h["name"].lower() == "content-type"), ""
        )
        request["postData"] = {"mimeType": req_ctype, "text": req_body}
    entry = {
        "startedDateTime": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started))
        + f".{int(started % 1 * 1000):03d}Z",
        "time": ms,
        "request": request,
        "response": {
            "status": rec.status,
            "statusText": "",
            "httpVersion": version,
            "cookies": [],
            "headers": resp_headers,
            "content": {
                "size": len(resp_body.encode()) if resp_body else 0,
                "mimeType": ctype,
                **({"text": resp_body} if resp_body else {}),
            },
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": -1,
        },
        "cache": {},
        "timings": {"send": 0, "wait": ms, "receive": 0},
        "_requestId": rec.request_id,
        "_hops": [h.to_dict() for h in rec.hops],
    }
    if rec.grpc_status is not None:  # HAR has no field for them: our own
        entry["_grpcStatus"] = rec.grpc_status
        entry["_grpcMessage"] = rec.grpc_message
    if ex.response_trailers_client is not None:
        entry["_responseTrailers"] = _har_headers(ex.response_trailers_client)
    return {
        "log": {
            "version": "1.2",
            "creator": {"name": "wasmdesk", "version": "1"},
            "entries": [entry],
        }
    }


# -- the filter bar ------------------------------------------------------------------------

_FILTER_KEYS = ("status", "method", "path", "plugin", "changed", "failed", "protocol", "grpc")
_PROTOCOL_ALIASES = {"h2": "http/2", "http2": "http/2", "h1": "http/1", "http1": "http/1"}


@dataclass
class InspectorFilter:
    """What the filter bar asks for; every given term must hold (AND)."""

    status: list[str] = field(default_factory=list)  # "5xx", "404"
    method: list[str] = field(default_factory=list)
    path: list[str] = field(default_factory=list)  # substrings
    plugin: list[str] = field(default_factory=list)  # ran on the request
    changed: list[str] = field(default_factory=list)  # changed something on it
    failed: bool = False
    protocol: list[str] = field(default_factory=list)  # "http/2", "http/1", "grpc"
    grpc: list[str] = field(default_factory=list)  # a code ("14"), or "error" (not 0)

    @property
    def empty(self) -> bool:
        return not (
            self.status
            or self.method
            or self.path
            or self.plugin
            or self.changed
            or self.failed
            or self.protocol
            or self.grpc
        )

    def matches(self, s: RequestSummary) -> bool:
        """Does an inspector summary pass?"""
        if self.status:
            code = str(s.status)
            if not any(
                code == want or (want.endswith("xx") and code[:1] == want[:1])
                for want in self.status
            ):
                return False
        if self.method and s.method.upper() not in self.method:
            return False
        if any(p not in s.path for p in self.path):
            return False
        if any(not any(want in p for p in s.plugins) for want in self.plugin):
            return False
        if any(not any(want in p for p in s.changed_by) for want in self.changed):
            return False
        if self.failed and not (s.failed or s.status == 0 or s.status >= 500):
            return False
        grpc = s.grpc_status
        for want in self.protocol:
            if want == "grpc":
                if grpc is None:
                    return False
            elif not (s.protocol or "HTTP/1.1").lower().startswith(want):
                return False
        for want in self.grpc:
            if grpc is None or (str(grpc) != want if want != "error" else grpc == 0):
                return False
        return True


def parse_filter(text: str) -> InspectorFilter:
    """``status:5xx method:post path:/api plugin:auth changed:add-header failed``; a bare
    word is a path substring. Raises ValueError naming an unknown key or a bad status."""
    f = InspectorFilter()
    for word in text.split():
        key, sep, value = word.partition(":")
        key = key.lower()
        if not sep:
            if key == "failed":
                f.failed = True
            else:
                f.path.append(word)
            continue
        if key not in _FILTER_KEYS:
            raise ValueError(f"unknown filter {key!r} (use {', '.join(_FILTER_KEYS)})")
        if not value:
            raise ValueError(f"{key}: needs a value")
        if key == "status":
            v = value.lower()
            if not (
                (len(v) == 3 and v.isdigit()) or (len(v) == 3 and v[0] in "12345" and v[1:] == "xx")
            ):
                raise ValueError(f"status: expected a code (404) or a class (5xx), got {value!r}")
            f.status.append(v)
        elif key == "method":
            f.method.append(value.upper())
        elif key == "failed":
            f.failed = value.lower() not in ("no", "false", "0")
        elif key == "protocol":
            v = _PROTOCOL_ALIASES.get(value.lower(), value.lower())
            if not (v == "grpc" or v.startswith("http/")):
                raise ValueError(f"protocol: expected http/1.1, http/2 (h2) or grpc, got {value!r}")
            f.protocol.append(v)
        elif key == "grpc":
            v = value.lower()
            by_name = {n.lower(): str(c) for c, n in GRPC_STATUS_NAMES.items()}
            v = by_name.get(v, v)
            if not (v == "error" or (v.isdigit() and int(v) in GRPC_STATUS_NAMES)):
                raise ValueError(
                    f"grpc: expected a status code (14), a name (unavailable) or error, "
                    f"got {value!r}"
                )
            f.grpc.append(v)
        else:
            getattr(f, key).append(value)
    return f
