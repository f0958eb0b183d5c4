"""Bad input gets a clear error or a sane default, never a traceback: malformed HAR
entries, broken _wasmdesk fields, a recorded callout without a usable response."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from host.cli import main
from host.lab.har import HarError, load_session
from host.lab.replay import ReplayOptions, replay
from tests.host.proxy.conftest import plugin


def _write(tmp_path: Path, entries: list) -> Path:
    p = tmp_path / "s.har"
    p.write_text(json.dumps({"log": {"version": "1.2", "entries": entries}}))
    return p


def test_a_bad_url_is_a_one_line_error(tmp_path, capsys) -> None:
    har = _write(tmp_path, [{"request": {"url": "http://[bad"}}])
    with pytest.raises(HarError, match="entry 0 is malformed: Invalid IPv6 URL"):
        load_session(har)
    assert main(["replay", str(har), plugin("add_header")]) == 2
    assert "entry 0 is malformed" in capsys.readouterr().err


def test_wrong_types_fall_back_to_defaults(tmp_path) -> None:
    har = _write(
        tmp_path,
        [
            {
                "request": {"method": 5, "url": None, "headers": "x"},
                "response": {"status": "abc", "headers": [1, 2], "content": 5},
            },
            {
                "request": {},
                "_wasmdesk": {
                    "client_request": 5,
                    "upstream_response": {"headers": [[":status", "x"]], "body": {"text": 5}},
                    "callouts": [5, {"response": 7}],
                    "env": {"a": 5, "b": [["wall", "x"], 7]},
                    "hops": {"h": None},
                },
            },
        ],
    )
    exchanges, _ = load_session(har)
    assert exchanges[0].request.method == "5" and exchanges[0].response.status == 200
    assert exchanges[1].callouts == [{"response": 7}] and list(exchanges[1].env) == ["b"]
    out = replay(
        Path(plugin("add_header")).read_bytes(), exchanges, ReplayOptions(root_id="add_header")
    )
    assert out["failure"] is None and len(out["requests"]) == 2


def test_a_recorded_callout_without_a_usable_response_fails_the_call(tmp_path) -> None:
    har = _write(
        tmp_path,
        [
            {
                "request": {},
                "_wasmdesk": {
                    "callouts": [
                        {"cluster": "auth", "request": 5, "response": {"status": "x"}},
                    ]
                },
            }
        ],
    )
    exchanges, _ = load_session(har)
    out = replay(Path(plugin("callout")).read_bytes(), exchanges, ReplayOptions(root_id="callout"))
    r = out["requests"][0]
    assert r["callouts"][0]["failure"] == "reset"
    assert r["local_response"]["status"] == 503
