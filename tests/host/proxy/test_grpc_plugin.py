"""A C plugin built from source (resources/plugins/c/grpc_client.c, zig) makes gRPC
callouts -- unary, streaming, cancelled -- to a real grpcio server on 127.0.0.1, through
``wasmdesk try`` (host.runner) and through the running proxy (``serve``), with its
upstream given as a plain cluster name and as a serialized GrpcService."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from host.runner import TryRequest, TryResult, run_try

from .conftest import make_config, wasm_plugin
from .grpc_echo_server import EchoServer

WASM = Path(__file__).resolve().parents[3] / "resources" / "plugins" / "c" / "grpc_client.wasm"


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    srv = EchoServer()
    yield srv
    srv.stop()


def try_grpc(echo: EchoServer, headers: list[tuple[str, str]], upstream: str = "echo") -> TryResult:
    return run_try(
        WASM.read_bytes(),
        TryRequest(
            headers=headers,
            configuration=upstream.encode(),
            clusters={"echo": f"grpc://127.0.0.1:{echo.port}"},
            callback_timeout_ms=1000.0,
        ),
    )


def header(result: TryResult, name: str) -> str | None:
    for k, v in result.request_headers:
        if k == name.encode():
            return v.decode()
    return None


def error_logs(result: TryResult) -> list[object]:
    return [r["message"] for r in result.logs if r.get("level") in ("ERROR", 4, "error")]


@pytest.mark.parametrize("upstream", ["echo", "envoy:echo"])
def test_try_unary_call_resumes_the_request_with_the_reply(echo: EchoServer, upstream: str) -> None:
    result = try_grpc(echo, [("x-grpc-msg", "hello")], upstream)
    assert result.ok, result.failure
    assert result.request_forwarded
    assert header(result, "x-grpc-reply") == "echo:hello"
    assert echo.seen_metadata[-1]["x-plugin"] == "grpc_client"


def test_try_unary_failure_becomes_the_plugins_local_reply(echo: EchoServer) -> None:
    result = try_grpc(echo, [("x-grpc-msg", "fail")])
    assert result.local_response is not None
    assert result.local_response["status"] == 503
    assert result.local_response["body"] == "grpc 5: no such thing"


def test_try_unary_timeout_is_deadline_exceeded(echo: EchoServer) -> None:
    result = try_grpc(echo, [("x-grpc-msg", "slow"), ("x-grpc-timeout-ms", "150")])
    assert result.local_response is not None
    assert str(result.local_response["body"]).startswith("grpc 4: ")


def test_try_stream_sees_metadata_every_message_trailers_and_status(echo: EchoServer) -> None:
    result = try_grpc(echo, [("x-grpc-mode", "stream"), ("x-grpc-msg", "hi")])
    assert result.ok, result.failure
    assert header(result, "x-grpc-initial") == "chat"
    assert header(result, "x-grpc-replies") == "re:hi,bye"
    assert header(result, "x-grpc-trailers") == "2"  # x-count and grpc-status
    assert header(result, "x-grpc-status") == "0"
    assert error_logs(result) == []


def test_try_cancel_in_a_callback_gets_no_further_callbacks(echo: EchoServer) -> None:
    result = try_grpc(echo, [("x-grpc-mode", "cancel"), ("x-grpc-msg", "hi")])
    assert header(result, "x-grpc-cancelled") == "0"  # proxy_grpc_cancel: OK
    assert result.request_forwarded
    assert error_logs(result) == []  # no callback for the cancelled token


def test_try_unknown_cluster_is_refused_at_start(echo: EchoServer) -> None:
    result = try_grpc(echo, [("x-grpc-msg", "x")], upstream="nowhere")
    assert result.local_response is not None
    assert result.local_response["body"] == "grpc start: PARSE_FAILURE"


def test_serve_runs_grpc_callouts_through_the_proxy(
    echo: EchoServer, start_proxy: Callable[..., Any]
) -> None:
    cfg = make_config(
        wasm_plugin("grpc", str(WASM), config={"upstream": "envoy:echo"}),
        clusters={"echo": f"grpc://127.0.0.1:{echo.port}"},
    )
    h = start_proxy(cfg)
    with h.client() as c:
        r = c.get("/", headers={"x-grpc-msg": "via-proxy"})
        assert r.status_code == 200, r.text
        assert r.json()["headers"]["x-grpc-reply"] == "echo:via-proxy"
        r = c.get("/", headers={"x-grpc-mode": "stream", "x-grpc-msg": "s"})
        seen = r.json()["headers"]
        assert (seen["x-grpc-replies"], seen["x-grpc-status"]) == ("re:s,bye", "0")
        r = c.get("/", headers={"x-grpc-msg": "fail"})
        assert r.status_code == 503 and r.text == "grpc 5: no such thing"
    stats = h.stats()
    assert stats.get("cluster.echo.grpc_callout_success", 0) >= 2
    assert stats.get("cluster.echo.grpc_callout_failure", 0) >= 1


def test_cli_try_with_a_grpc_cluster(echo: EchoServer, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from host.cli import main

    rc = main(
        [
            "try",
            str(WASM),
            "--raw-config",
            "echo",
            "--cluster",
            f"echo=grpc://127.0.0.1:{echo.port}",
            "-H",
            "x-grpc-msg: from-cli",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert ["x-grpc-reply", "echo:from-cli"] in out["request"]["headers"]
