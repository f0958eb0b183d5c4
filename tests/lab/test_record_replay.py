"""Record through a real ``serve`` (HTTP callouts, a plugin that reads the clock and
random bytes and keeps state), then replay the HAR: same values, byte-identical
output twice, no network."""

from __future__ import annotations

import json
from pathlib import Path

from host.lab.har import load_session, read_har
from host.lab.record import start_recording, stop_recording
from host.lab.replay import ReplayOptions, replay
from tests.host.proxy.conftest import make_config, plugin, wasm_plugin
from tests.lab.lab_wat import lab_probe


def _hdr(pairs: list[list[str]], name: str) -> str | None:
    for k, v in pairs:
        if k == name:
            return v
    return None


def _record(tmp_path: Path, start_proxy, upstream, n: int = 3) -> Path:
    wasm = tmp_path / "lab_probe.wasm"
    wasm.write_bytes(lab_probe())
    config = make_config(
        wasm_plugin("lab-probe", str(wasm), root_id="lab_probe"),
        wasm_plugin(
            "callout",
            plugin("callout"),
            root_id="callout",
            config={"cluster": "auth", "path": "/check", "authority": "auth.local"},
        ),
        clusters={"auth": upstream.url},
    )
    h = start_proxy(config)
    har = tmp_path / "session.har"
    clock = h.sync(lambda: h.server.host.clock)
    h.sync(start_recording, h.server, har)
    with h.client() as c:
        for i in range(n):
            r = c.get(f"/item/{i}", headers={"authorization": f"Bearer tok{i}"})
            assert r.status_code == 200
            # valid HAR at every moment: a reader between requests parses it
            # (the request is recorded when it finished, just after the response went out)
            h.wait_for(lambda i=i: len(read_har(har)["log"]["entries"]) == i + 1)
    h.sync(stop_recording, h.server)
    assert h.sync(lambda: h.server.host.clock) is clock  # the host's own clock is back
    return har


def test_recording_holds_what_a_replay_needs(tmp_path, start_proxy, upstream):
    har = _record(tmp_path, start_proxy, upstream)
    doc = json.loads(har.read_text())
    log = doc["log"]
    assert log["version"] == "1.2"
    assert [p["name"] for p in log["_wasmdesk"]["chain"]] == ["lab-probe", "callout"]
    assert all(len(p["module_sha256"]) == 64 for p in log["_wasmdesk"]["chain"])
    e = log["entries"][1]
    assert e["request"]["url"].endswith("/item/1")
    ext = e["_wasmdesk"]
    # the client's request as sent: no proxy-added x-forwarded-* / x-request-id
    names = [k for k, _ in ext["client_request"]["headers"]]
    assert "x-forwarded-for" not in names and "x-forwarded-proto" not in names
    assert "x-request-id" not in names
    assert _hdr(ext["client_request"]["headers"], "authorization") == "Bearer tok1"
    # the clock value and the random bytes the probe obtained, in order
    kinds = [k for k, _ in ext["env"]["lab-probe"]]
    assert kinds == ["wall", "random"]
    # the HTTP callout with request and response
    (call,) = ext["callouts"]
    assert call["kind"] == "http" and call["plugin"] == "callout" and call["cluster"] == "auth"
    assert _hdr(call["request"]["headers"], ":path") == "/check"
    assert call["response"]["status"] == 200
    assert call["response"]["body"]["text"] == "user-tok1\n"
    assert ext["vm_order"] == {"lab-probe": 2, "callout": 2}
    assert ext["upstream_response"]["headers"][0] == [":status", "200"]


def test_replay_reproduces_clock_random_and_state_byte_for_byte(tmp_path, start_proxy, upstream):
    har = _record(tmp_path, start_proxy, upstream)
    exchanges, _ = load_session(har)
    opts = ReplayOptions(root_id="lab_probe", plugin="lab-probe")
    one = replay(lab_probe(), exchanges, opts)
    two = replay(lab_probe(), exchanges, opts)
    assert json.dumps(one, sort_keys=True) == json.dumps(two, sort_keys=True)
    assert one["failure"] is None
    for ex, r in zip(exchanges, one["requests"], strict=True):
        # what the probe added during the recording is what the next plugin received
        recorded = dict(ex.hops["callout"].headers)["x-lab"]
        assert _hdr(r["request"]["headers"], "x-lab") == recorded
    # the request counter (state) went 1, 2, 3 as it did live
    assert [_hdr(r["request"]["headers"], "x-lab")[-8:] for r in one["requests"]] == [
        "00000001",
        "00000002",
        "00000003",
    ]


def test_replay_answers_callouts_from_the_recording(tmp_path, start_proxy, upstream):
    har = _record(tmp_path, start_proxy, upstream)
    exchanges, _ = load_session(har)
    n_upstream = len(upstream.requests)
    out = replay(
        Path(plugin("callout")).read_bytes(),
        exchanges,
        ReplayOptions(
            root_id="callout",
            configuration=b'{"authority":"auth.local","cluster":"auth","path":"/check"}',
        ),
    )
    assert len(upstream.requests) == n_upstream  # no network
    for i, r in enumerate(out["requests"]):
        assert _hdr(r["request"]["headers"], "x-auth-result") == f"user-tok{i}"
        assert r["callouts"][0]["response_status"] == 200
        assert r["notes"] == []


def test_replay_hop_feeds_what_a_later_plugin_received(tmp_path, start_proxy, upstream):
    har = _record(tmp_path, start_proxy, upstream, n=1)
    exchanges, _ = load_session(har)
    out = replay(
        lab_probe("bbbbb"),
        exchanges,
        ReplayOptions(root_id="lab_probe", hop="callout", plugin="lab-probe"),
    )
    headers = out["requests"][0]["request"]["headers"]
    # the callout plugin received the probe's header; now the probe sees it and adds its own
    assert [k for k, _ in headers].count("x-lab") == 2
    assert _hdr(headers, "x-build") == "aaaaa"
