"""A/B compares what each request did: one early difference in a counter does not make
every later request differ."""

from __future__ import annotations

from host.lab.abdiff import compare


def _req(i: int, metrics: dict) -> dict:
    return {
        "index": i,
        "method": "GET",
        "path": f"/{i}",
        "request": {"headers": [], "body": "", "forwarded": True},
        "response": {"status": 200, "headers": [], "body": ""},
        "local_response": None,
        "logs": [],
        "metrics": metrics,
        "failure": None,
    }


def test_metrics_compare_per_request_change_not_running_totals() -> None:
    # A counted the first request twice, B once; the second request counts once in both
    a = [
        _req(0, {"c": 2, "h": {"count": 1, "sum": 5}}),
        _req(1, {"c": 3, "h": {"count": 2, "sum": 9}}),
    ]
    b = [
        _req(0, {"c": 1, "h": {"count": 1, "sum": 5}}),
        _req(1, {"c": 2, "h": {"count": 2, "sum": 9}}),
    ]
    cmp = compare(a, b)
    assert [r["differs"] for r in cmp["requests"]] == [True, False]
    assert cmp["requests"][0]["diff"]["metrics"] == [
        '- A: {"c": 2, "h": {"count": 1, "sum": 5}}',
        '+ B: {"c": 1, "h": {"count": 1, "sum": 5}}',
    ]
    assert cmp["summary"] == {
        "requests": 2,
        "identical": 1,
        "different": 1,
        "by_kind": {"metrics": 1},
    }
