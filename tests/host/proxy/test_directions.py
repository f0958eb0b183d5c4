"""Direction as a parameter (issue 8): one half-stream object per direction on the
exchange."""

from __future__ import annotations

from host.proxy.http1 import Exchange, HalfStream


def test_the_exchange_keeps_its_per_direction_state_in_two_half_streams() -> None:
    assert not [s for s in Exchange.__slots__ if s.startswith(("req_", "resp_", "_req_"))]
    assert {"req", "resp"} <= set(Exchange.__slots__)
    req, resp = HalfStream(True), HalfStream(False)
    assert (req.request, resp.request) == (True, False)
    assert (list(req.pending), req.out, req.queued, req.declared, req.written) == ([], [], 0, -1, 0)
