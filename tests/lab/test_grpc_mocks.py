"""Mocks answer gRPC callouts (try, replay, serve) in front of the grpc.aio transport:
the plugin receives the mocked message (a unary success is the reply alone, as Envoy
delivers it: no close follows) or the mocked status, and a call neither a mock nor a
cluster can carry is refused with a log line naming the cluster and method."""

from __future__ import annotations

import json

from host.cli import main
from host.lab.har import Exchange, Message
from host.lab.mocks import parse_mocks
from host.lab.replay import ReplayOptions, replay
from tests.host.proxy.conftest import make_config, wasm_plugin
from tests.lab.lab_wat import grpc_probe

RULES = [
    {"cluster": "authz", "grpc_method": "pkg.Authz/Check", "body": "allowed", "grpc_status": 0}
]


def _hdr(pairs: list[list[str]], name: str) -> str | None:
    return next((v for k, v in pairs if k == name), None)


def test_try_with_grpc_mocks(tmp_path, capsys) -> None:
    wasm = tmp_path / "g.wasm"
    wasm.write_bytes(grpc_probe())
    mocks = tmp_path / "m.yaml"
    mocks.write_text(json.dumps(RULES))
    assert main(["try", str(wasm), "--mocks", str(mocks), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert _hdr(doc["request"]["headers"], "x-grpc-reply") == "allowed"
    assert _hdr(doc["request"]["headers"], "x-grpc-status") is None  # no close after a reply
    # without mocks: refused, and the host says why, naming the call
    assert main(["try", str(wasm), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert _hdr(doc["request"]["headers"], "x-grpc-refused") == "1"
    assert any("grpc call to authz/pkg.Authz/Check" in x["message"] for x in doc["logs"])


def test_replay_with_grpc_mock_failure() -> None:
    mocks = parse_mocks(
        [{"cluster": "authz", "grpc_method": "pkg.Authz/Check", "failure": "timeout"}]
    )
    out = replay(
        grpc_probe(),
        [Exchange(0, Message(path="/a"), Message(status=200))],
        ReplayOptions(root_id="g", mocks=mocks),
    )
    r = out["requests"][0]
    assert _hdr(r["request"]["headers"], "x-grpc-status") == "4"  # DEADLINE_EXCEEDED
    assert _hdr(r["request"]["headers"], "x-grpc-reply") is None
    (call,) = r["callouts"]
    assert call["kind"] == "grpc" and call["grpc_method"] == "pkg.Authz/Check"
    assert call["failure"] == "timeout" and call["message"] == "ping"


def test_serve_spec_mocks_answer_grpc(tmp_path, start_proxy) -> None:
    import dataclasses

    wasm = tmp_path / "g.wasm"
    wasm.write_bytes(grpc_probe())
    cfg = make_config(wasm_plugin("g", str(wasm), root_id="g"))
    h = start_proxy(dataclasses.replace(cfg, mocks=tuple(RULES)))
    with h.client() as c:
        headers = c.get("/x").json()["headers"]
    assert headers["x-grpc-reply"] == "allowed" and "x-grpc-status" not in headers


def test_mocked_grpc_calls_are_recorded_and_replayed_from_the_recording(
    tmp_path, start_proxy
) -> None:
    import dataclasses

    from host.lab.har import load_session
    from host.lab.record import start_recording, stop_recording

    wasm = tmp_path / "g.wasm"
    wasm.write_bytes(grpc_probe())
    cfg = make_config(wasm_plugin("g", str(wasm), root_id="g"))
    h = start_proxy(dataclasses.replace(cfg, mocks=tuple(RULES)))
    har = tmp_path / "s.har"
    h.sync(start_recording, h.server, har)
    with h.client() as c:
        assert c.get("/x").status_code == 200
    h.wait_for(lambda: len(json.loads(har.read_text())["log"]["entries"]) == 1)
    h.sync(stop_recording, h.server)
    (entry,) = json.loads(har.read_text())["log"]["entries"]
    (call,) = entry["_wasmdesk"]["callouts"]
    assert call["kind"] == "grpc" and call["plugin"] == "g" and call["cluster"] == "authz"
    assert call["request"]["message"]["text"] == "ping"
    assert call["response"]["body"]["text"] == "allowed" and call["grpc_status"] == 0
    # a replay without any mocks answers the call from the recording
    exchanges, _ = load_session(har)
    out = replay(grpc_probe(), exchanges, ReplayOptions(root_id="g"))
    r = out["requests"][0]
    assert _hdr(r["request"]["headers"], "x-grpc-reply") == "allowed"
    assert _hdr(r["request"]["headers"], "x-grpc-status") is None
