"""The recorder's file is valid HAR after every request, and its bounds stop recording
with a clear message and the reason in the file."""

from __future__ import annotations

import json

from host.lab.env import RecordingClock
from host.lab.record import Recorder
from host.proxy.chain import RequestRecord


def _rec(i: int) -> RequestRecord:
    return RequestRecord(
        id=i,
        request_id=f"rid-{i}",
        method="GET",
        path=f"/p/{i}",
        authority="x",
        client="127.0.0.1:1",
        status=200,
        outcome="",
        duration_ms=1.0,
        started=1_700_000_000.0,
        hops=[],
    )


def test_count_limit_stops_with_a_message_and_the_file_stays_valid(tmp_path) -> None:
    path = tmp_path / "s.har"
    said: list[str] = []
    r = Recorder(path, RecordingClock(), max_entries=2, on_stop=said.append)
    assert json.loads(path.read_text())["log"]["entries"] == []
    for i in range(3):
        r.exchange_finished(object(), _rec(i))  # type: ignore[arg-type]
        doc = json.loads(path.read_text())  # parseable after every request
    assert [e["request"]["url"] for e in doc["log"]["entries"]] == [
        "http://x/p/0",
        "http://x/p/1",
    ]
    reason = "recording stopped: the limit of 2 requests was reached"
    assert doc["log"]["_wasmdesk"]["stopped"] == reason
    assert said == [f"{reason}; 2 requests are in {path}"]
    assert not r.active
    r.exchange_finished(object(), _rec(9))  # type: ignore[arg-type]
    assert len(json.loads(path.read_text())["log"]["entries"]) == 2


def test_size_limit(tmp_path) -> None:
    path = tmp_path / "s.har"
    r = Recorder(path, RecordingClock(), max_bytes=1500)
    for i in range(5):
        r.exchange_finished(object(), _rec(i))  # type: ignore[arg-type]
    doc = json.loads(path.read_text())
    assert 0 < len(doc["log"]["entries"]) < 5
    assert "size limit of 1500 bytes" in doc["log"]["_wasmdesk"]["stopped"]
