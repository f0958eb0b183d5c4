"""Real gRPC callouts (grpc.aio to a grpcio server on 127.0.0.1) are recorded with their
request and reply, and a replay answers them from the recording with no network."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from host.lab.har import load_session
from host.lab.record import start_recording, stop_recording
from host.lab.replay import ReplayOptions, replay
from tests.host.proxy.conftest import make_config, wasm_plugin
from tests.host.proxy.grpc_echo_server import EchoServer

WASM = Path(__file__).resolve().parents[2] / "resources" / "plugins" / "c" / "grpc_client.wasm"


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    try:
        yield server
    finally:
        server.stop()


def _hdr(pairs: list[list[str]], name: str) -> str | None:
    return next((v for k, v in pairs if k == name), None)


def test_a_real_grpc_callout_is_recorded_and_replayed_without_the_server(
    echo: EchoServer, start_proxy: Any, tmp_path: Path
) -> None:
    cfg = make_config(
        wasm_plugin("grpc", str(WASM), config={"upstream": "envoy:echo"}),
        clusters={"echo": f"grpc://127.0.0.1:{echo.port}"},
    )
    h = start_proxy(cfg)
    har = tmp_path / "s.har"
    h.sync(start_recording, h.server, har)
    with h.client() as c:
        r = c.get("/", headers={"x-grpc-msg": "via-rec"})
        assert r.status_code == 200, r.text
        assert r.json()["headers"]["x-grpc-reply"] == "echo:via-rec"
    h.wait_for(lambda: len(json.loads(har.read_text())["log"]["entries"]) == 1)
    h.sync(stop_recording, h.server)
    (entry,) = json.loads(har.read_text())["log"]["entries"]
    (call,) = entry["_wasmdesk"]["callouts"]
    assert call["kind"] == "grpc" and call["plugin"] == "grpc" and call["cluster"] == "echo"
    assert call["grpc_method"] == "test.Echo/Unary" and call["grpc_status"] == 0
    assert call["request"]["message"] == {"text": "via-rec"}
    assert call["response"]["body"] == {"text": "echo:via-rec"}
    assert call["elapsed_ms"] > 0
    # the replay has no cluster at all: the recording answers the call
    exchanges, _ = load_session(har)
    opts = ReplayOptions(configuration=b'{"upstream": "envoy:echo"}')
    out = replay(WASM.read_bytes(), exchanges, opts)
    (req,) = out["requests"]
    assert _hdr(req["request"]["headers"], "x-grpc-reply") == "echo:via-rec"
