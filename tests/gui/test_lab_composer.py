""" "Send again" sends what the client sent: the proxy's x-forwarded-* and request id
are dropped (the proxy will make a fresh id), the client's own x-forwarded-for stays."""

from __future__ import annotations

from gui.inspector_panel import replay_request


def _rec(before: list[list[str]]) -> dict:
    return {
        "method": "GET",
        "path": "/p",
        "hops": [{"request_headers_before": before, "request_body_before": None}],
    }


def test_send_again_drops_what_the_proxy_added() -> None:
    # the shape http1.py gives: client headers, then xff, x-forwarded-proto, x-request-id
    got = replay_request(
        _rec(
            [
                [":method", "GET"],
                [":path", "/p"],
                [":authority", "x"],
                ["accept", "*/*"],
                ["x-forwarded-for", "127.0.0.1"],
                ["x-forwarded-proto", "http"],
                ["x-request-id", "6c1b6f1e-0b7e-4a0e-9d5b-6a1a3b7f9c11"],
            ]
        )
    )
    assert got == {"method": "GET", "path": "/p", "headers": [["accept", "*/*"]], "body": ""}


def test_send_again_keeps_the_clients_own_forwarded_for_but_not_its_request_id() -> None:
    got = replay_request(
        _rec(
            [
                [":method", "GET"],
                ["x-request-id", "client-chose-this"],
                ["x-forwarded-for", "10.0.0.9, 127.0.0.1"],
                ["x-forwarded-proto", "http"],
            ]
        )
    )
    assert got is not None
    assert got["headers"] == [["x-forwarded-for", "10.0.0.9"]]
