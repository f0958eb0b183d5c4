"""Where the time goes: per guest callback, the host calls it made (name, count,
time) and the guest's own time, in ``try --json`` and ``replay --timing``."""

from __future__ import annotations

import json

from host.lab.har import Exchange, Message
from host.lab.replay import ReplayOptions, replay
from host.runner import TryRequest, run_try
from tests.lab.lab_wat import lab_probe


def test_try_reports_host_calls_per_callback():
    r = run_try(lab_probe(), TryRequest(root_id="lab_probe"))
    doc = r.to_json()
    (entry,) = [p for p in doc["profile"] if p["callback"] == "proxy_on_request_headers"]
    calls = {c["name"]: c["count"] for c in entry["host_calls"]}
    assert calls == {
        "proxy_get_header_map_value": 1,
        "proxy_get_current_time_nanoseconds": 1,
        "random_get": 1,
        "proxy_add_header_map_value": 2,
        "proxy_log": 1,
    }
    host_us = sum(c["us"] for c in entry["host_calls"])
    assert 0 <= entry["guest_us"] <= entry["total_us"]
    assert abs(entry["total_us"] - entry["guest_us"] - host_us) < 1.0
    json.dumps(doc)  # serialisable as is


def test_replay_adds_timing_only_when_asked():
    ex = [Exchange(0, Message(path="/a"), Message(status=200))]
    plain = replay(lab_probe(), ex, ReplayOptions(root_id="lab_probe"))
    assert "profile" not in plain["requests"][0]
    timed = replay(lab_probe(), ex, ReplayOptions(root_id="lab_probe", timing=True))
    names = [p["callback"] for p in timed["requests"][0]["profile"]]
    assert "proxy_on_request_headers" in names and "proxy_on_delete" in names
