"""The one place an outgoing ``proxy_http_call`` request is assembled from plugin input.

Both callers (the proxy's ``CalloutDispatcher`` and the offline runner's
``CalloutClient``) use it. The destination is the cluster's own scheme, host and
port; the plugin supplies only the origin-form ``:path`` (appended to the cluster
URL's path prefix, never parsed as a URL, so ``@host:port/...`` or ``//host/...``
cannot name another authority), the method, ``:authority`` (sent only as the Host
header) and ordinary headers. The ABI layer has already answered BAD_ARGUMENT to
anything else (``host.wasm.abi.callouts``); this module re-checks, as the last
line before the socket. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from host.wasm.abi._validate import valid_headers, valid_origin_path
from host.wasm.context import HttpCallout

__all__ = [
    "CalloutRequest",
    "build_callout_request",
    "callout_failure",
    "record_callout_response",
]


@dataclass(frozen=True)
class CalloutRequest:
    method: str
    url: httpx.URL
    headers: list[tuple[str, str]]


def build_callout_request(cluster_url: str, call: HttpCallout) -> CalloutRequest:
    """``ValueError`` when the call's :path or headers could leave the cluster."""
    base = httpx.URL(cluster_url)
    hdr = dict(call.headers)
    path = hdr.get(b":path", b"/")
    if not valid_origin_path(path) or not valid_headers(call.headers):
        raise ValueError(f"callout :path {path!r} or a header is not allowed")
    method = hdr.get(b":method", b"GET").decode("latin-1")
    if not method or not all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in method):
        raise ValueError(f"callout :method {method!r} is not a token")
    authority = hdr.get(b":authority") or hdr.get(b"host") or b""
    headers = [
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in call.headers
        if not k.startswith(b":") and k != b"host"
    ]
    if authority:
        headers.append(("host", authority.decode("latin-1")))
    url = httpx.URL(
        scheme=base.scheme,
        host=base.host,
        port=base.port,
        raw_path=base.raw_path.rstrip(b"/") + path,
    )
    return CalloutRequest(method, url, headers)


def callout_failure(error: Exception) -> str:
    """What ``proxy_get_status`` reports for a callout that got no response: ``timeout``,
    ``connect_failure`` or ``reset: …`` (a refused request, or any other transport error)."""
    if isinstance(error, httpx.TimeoutException):
        return "timeout"
    if isinstance(error, httpx.ConnectError):
        return "connect_failure"
    if isinstance(error, httpx.HTTPError):
        return f"reset: {type(error).__name__}"
    return f"reset: {error}"


def record_callout_response(call: HttpCallout, resp: httpx.Response) -> None:
    """The response as the plugin reads it: ``:status`` first, names lower-cased."""
    call.response_status = resp.status_code
    call.response_headers = [(b":status", str(resp.status_code).encode())] + [
        (k.lower(), v) for k, v in resp.headers.raw
    ]
    call.response_body = resp.content
