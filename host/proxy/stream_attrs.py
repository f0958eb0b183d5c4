"""A request's Proxy-Wasm stream attributes (``StreamInfo``) as the proxy knows them.

``new_stream_info`` makes the attributes a plugin reads with ``proxy_get_property``
(made on first use: most requests never read one); ``refresh_stream_info`` copies in
what the data path learnt since, before an attribute is read; ``response_flags`` is
Envoy's ``response.flags`` bitmask for what happened to the request.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from host.proxy.stream import ExchangeInfo
from host.wasm.context import StreamInfo

__all__ = ["new_stream_info", "refresh_stream_info", "response_flags"]


def new_stream_info(
    i: ExchangeInfo, client_direction: bool, refresh: Callable[[StreamInfo], None]
) -> StreamInfo:
    """The stream's attributes (``client_direction``: the listener is OUTBOUND)."""
    return StreamInfo(
        source_address=f"{i.client[0]}:{i.client[1]}",
        destination_address=f"{i.local[0]}:{i.local[1]}",
        connection_id=i.connection_id,
        request_id=i.request_id,
        start_time_ns=i.start_wall_ns,
        # Envoy's TrafficDirection: INBOUND 1 (SERVER), OUTBOUND 2 (CLIENT)
        listener_direction=2 if client_direction else 1,
        tls=i.tls,
        refresh=refresh,
    )


def refresh_stream_info(
    si: StreamInfo, i: ExchangeInfo, response_seen: bool, completed: bool
) -> None:
    """Copy in what the data path learnt since (called before an attribute is read):
    bytes counted, the cluster and upstream, the response's code and details."""
    # the route selected when the headers arrived, or again after clear_route_cache
    si.cluster_name = i.cluster
    si.route_name = i.route_name if i.cluster else None  # None: no route matched
    si.request_size = i.request_bytes
    si.response_size = i.response_bytes
    si.upstream_address = i.upstream_address
    si.upstream_tls = i.upstream_tls
    si.upstream_transport_failure_reason = i.upstream_transport_failure_reason
    if i.upstream_address:
        si.attempt_count = 1
    si.response_code = i.status
    details = i.response_code_details
    if not details and response_seen:
        details = "via_upstream"
    si.response_code_details = details
    si.response_flags = response_flags(i.outcome, details)
    if i.upstream_ms:
        si.backend_latency_ns = int(i.upstream_ms * 1e6)
    if completed:
        si.request_complete = True
        si.duration_ns = max(0, time.monotonic_ns() - int(i.start * 1e9))


# Envoy's response flag bits (StreamInfo::CoreResponseFlag, the legacy bitmask that
# response.flags gives).
UPSTREAM_REQUEST_TIMEOUT = 0x4  # UT
LOCAL_RESET = 0x8  # LR
UPSTREAM_CONNECTION_FAILURE = 0x20  # UF
UPSTREAM_CONNECTION_TERMINATION = 0x40  # UC
NO_ROUTE_FOUND = 0x100  # NR
DOWNSTREAM_CONNECTION_TERMINATION = 0x4000  # DC
DOWNSTREAM_PROTOCOL_ERROR = 0x40000  # DPE
UPSTREAM_PROTOCOL_ERROR = 0x800000  # UPE


def response_flags(outcome: str, details: str) -> int:
    """``response.flags`` for what happened to a request (its outcome and code details)."""
    if not details and not outcome:
        return 0
    if details.startswith("upstream_reset_before_response_started{connection_failure"):
        return UPSTREAM_CONNECTION_FAILURE
    if details.startswith("upstream_reset_before_response_started{connection_termination"):
        return UPSTREAM_CONNECTION_TERMINATION
    if details == "upstream_response_timeout":
        return UPSTREAM_REQUEST_TIMEOUT
    if details == "route_not_found":
        return NO_ROUTE_FOUND
    if details == "upstream_protocol_error":
        return UPSTREAM_PROTOCOL_ERROR
    if details.startswith(("http1.codec_error", "http2.codec_error")):
        return DOWNSTREAM_PROTOCOL_ERROR
    if outcome == "client_disconnect":
        return DOWNSTREAM_CONNECTION_TERMINATION
    if outcome == "reset":
        return LOCAL_RESET
    return 0
