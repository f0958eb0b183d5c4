"""Direction as a parameter (issue 8): one half-stream object per direction on the
exchange, one chain iteration per event kind taking the direction as a value, and the
inspector's hop record with per-direction sub-records behind the same flat output."""

from __future__ import annotations

from host.proxy.chain import REQUEST, RESPONSE, HopRecord, HopSideRecord
from host.proxy.http1 import Exchange, HalfStream
from host.wasm.types import StreamType

FLAT_KEYS = [
    "plugin",
    "mode",
    "ran",
    "skipped_reason",
    "request_headers_before",
    "request_headers_after",
    "request_body_before",
    "request_body_after",
    "request_body_before_size",
    "request_body_after_size",
    "response_headers_before",
    "response_headers_after",
    "response_body_before",
    "response_body_after",
    "response_body_before_size",
    "response_body_after_size",
    # the trailers each trailers callback was given and left (issue 9 §5: the app's
    # inspector shows them; grpc-status is a trailer)
    "request_trailers_before",
    "request_trailers_after",
    "response_trailers_before",
    "response_trailers_after",
    "local_reply",
    "would",
    "paused_ms",
    "callbacks",
    "callouts",
    "failure",
]


def test_the_exchange_keeps_its_per_direction_state_in_two_half_streams() -> None:
    # (compiled with mypyc, a class lists its attributes in __mypyc_attrs__, not __slots__)
    names = getattr(Exchange, "__mypyc_attrs__", None) or Exchange.__slots__
    assert not [s for s in names if s.startswith(("req_", "resp_", "_req_"))]
    assert {"req", "resp"} <= set(names)
    req, resp = HalfStream(True), HalfStream(False)
    assert (req.request, resp.request) == (True, False)
    assert (list(req.pending), req.out, req.queued, req.declared, req.written) == ([], [], 0, -1, 0)


def test_the_two_directions_differ_only_in_their_values() -> None:
    assert (REQUEST.step, RESPONSE.step) == (1, -1)
    assert (REQUEST.stream, RESPONSE.stream) == (StreamType.HTTP_REQUEST, StreamType.HTTP_RESPONSE)
    # Envoy: a buffered body over the limit is 413 for a request, 500 for a response
    assert (REQUEST.overflow.status, REQUEST.overflow.details) == (413, "request_payload_too_large")
    assert (RESPONSE.overflow.status, RESPONSE.overflow.details) == (
        500,
        "response_payload_too_large",
    )
    rec = HopRecord("p", "enforce", True)
    assert REQUEST.record(rec) is rec.request and RESPONSE.record(rec) is rec.response


def test_a_hop_record_reads_and_serializes_as_before() -> None:
    rec = HopRecord("p", "log-only", True)
    assert isinstance(rec.request, HopSideRecord)
    rec.request.headers_before = [(b":path", b"/a")]
    rec.request.headers_after = [(b":path", b"/b")]
    rec.response.body_before, rec.response.body_before_size = b"hello", 5
    rec.response.body_after, rec.response.body_after_size = b"HELLO", 5
    assert rec.request_headers_before == [(b":path", b"/a")]
    assert rec.response_body_after == b"HELLO" and rec.response_body_before_size == 5
    d = rec.to_dict()
    assert list(d) == FLAT_KEYS
    assert d["request_headers_after"] == [[":path", "/b"]]
    assert (d["response_body_before"], d["response_body_after"]) == ("hello", "HELLO")
    assert d["request_body_before"] is None and d["response_headers_before"] is None
