"""The composer in HTTP/2 and gRPC (issue 9 §5): the form's checks, the history, curl
and HAR, and real calls on loopback: a grpcio server (generic handlers, raw bytes) and an
h2c server built on the ``h2`` library, both started by the test, reached through the
real engine service's thread."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gui.composer_history import as_curl
from gui.composer_panel import ComposerPanel
from gui.composer_send import (
    check_grpc_method,
    encode_payload,
    grpc_curl,
    grpc_frame,
    grpc_status_text,
    parse_metadata,
)
from gui.main_window import MainWindow
from gui.workspace import Workspace
from tests.gui.fakes import FakeEngineService
from tests.gui.h2_echo_server import H2EchoServer
from tests.host.proxy.grpc_echo_server import EchoServer

# -- what the form accepts ------------------------------------------------------------------------


def test_grpc_inputs_are_checked_with_a_message() -> None:
    assert check_grpc_method("test.Echo/Unary") == "/test.Echo/Unary"
    assert check_grpc_method(" /grpc.health.v1.Health/Check ") == "/grpc.health.v1.Health/Check"
    for bad in ("", "/Unary", "/a b/C", "/pkg.S/M/extra"):
        with pytest.raises(ValueError, match=r"/package\.Service/Method"):
            check_grpc_method(bad)
    assert encode_payload(' {"a": 1} ', "json") == b'{"a": 1}'
    assert encode_payload("0a 05 68656c6c6f", "hex") == b"\n\x05hello"
    assert encode_payload("aGk=", "base64") == b"hi"
    assert encode_payload("é", "text") == "é".encode()
    with pytest.raises(ValueError, match="not valid JSON"):
        encode_payload("{a: 1}", "json")
    with pytest.raises(ValueError, match="not hex"):
        encode_payload("0g", "hex")
    with pytest.raises(ValueError, match="not valid base64"):
        encode_payload("a", "base64")
    assert parse_metadata("X-User: alice\n\nx-tok-bin: AAE=") == [
        ("x-user", "alice"),
        ("x-tok-bin", b"\x00\x01"),
    ]
    with pytest.raises(ValueError, match="metadata line 1: grpc-timeout is set by"):
        parse_metadata("grpc-timeout: 1S")
    with pytest.raises(ValueError, match="metadata line 2: expected"):
        parse_metadata("a: b\nno colon")
    with pytest.raises(ValueError, match="-bin value is base64"):
        parse_metadata("k-bin: ***")
    assert grpc_status_text(14) == "14 UNAVAILABLE" and grpc_status_text(None) == ""


def test_the_grpc_curl_line_sends_exactly_the_framed_message() -> None:
    msg = b"\x00\x01'%\\\n" + "é".encode() + b'{"a": 1}'
    line = grpc_curl("http://127.0.0.1:10000", "/test.Echo/Unary", msg, [("x-a", "1")], 2.5)
    printf, _, curl = line.partition(" | ")
    # the printf half, run by a POSIX shell, writes the frame byte for byte
    out = subprocess.run(["sh", "-c", printf], capture_output=True, check=True).stdout
    assert out == grpc_frame(msg) == b"\0\0\0\0" + bytes([len(msg)]) + msg
    assert curl == (
        "curl -i --http2-prior-knowledge -X POST -H 'content-type: application/grpc' "
        "-H 'te: trailers' -H 'grpc-timeout: 2500m' -H 'x-a: 1' --data-binary @- "
        "--output - http://127.0.0.1:10000/test.Echo/Unary"
    )
    h2 = as_curl("http://h:1", {"protocol": "HTTP/2", "method": "GET", "path": "/x"})
    assert h2 == "curl -i --http2-prior-knowledge http://h:1/x"


# -- the panel against the fake service -----------------------------------------------------------


@pytest.fixture
def window(qtbot, tmp_path: Path) -> tuple[MainWindow, FakeEngineService]:
    fake = FakeEngineService()
    ws = Workspace.at(tmp_path / "ws.yaml")
    ws.load()
    w = MainWindow(fake, ws)
    qtbot.addWidget(w)
    w.show()
    fake.started.emit()
    return w, fake


def test_composer_sends_http2_and_grpc_and_keeps_them_in_its_history(window, tmp_path) -> None:
    w, fake = window
    c = w.composer_panel
    c.protocol_combo.setCurrentText("HTTP/2")
    c.method_combo.setCurrentText("POST")
    c.path_edit.setText("/h2?x=1")
    c.headers_edit.setPlainText("x-k: v")
    c.body_edit.setPlainText("hello")
    c.send_button.click()
    assert fake.calls[-1] == (
        "send_request",
        ("POST", "/h2?x=1", [("x-k", "v")], b"hello", "HTTP/2"),
    )
    c.show_response(
        {"protocol": "HTTP/2", "status": 200, "elapsed_ms": 2.0, "body_size": 2, "body": "ok"}
    )
    assert c.status_label.text() == "200 · 2.0 ms · 2 bytes · HTTP/2"

    c.protocol_combo.setCurrentText("gRPC")
    assert not c.method_combo.isVisibleTo(c) and c.grpc_box.isVisibleTo(c)
    assert c._form.labelForField(c.headers_edit).text() == "Metadata"
    assert "no protobuf descriptors" in c.grpc_note.text()
    c.path_edit.setText("/test.Echo/Unary")
    c.headers_edit.setPlainText("x-user: alice")
    c.body_edit.setPlainText("{bad json")
    c.send_button.click()
    assert "not valid JSON" in c.error_label.text()
    assert fake.calls[-1][0] == "send_request"  # nothing sent
    c.body_edit.setPlainText('{"name": "world"}')
    c.deadline_spin.setValue(2.5)
    c.send_button.click()
    assert fake.calls[-1] == (
        "send_grpc",
        ("/test.Echo/Unary", b'{"name": "world"}', [("x-user", "alice")], 2.5),
    )
    c.show_response(
        {
            "protocol": "gRPC",
            "grpc_status": 14,
            "grpc_message": "no healthy upstream",
            "initial_metadata": [],
            "trailing_metadata": [["x-why", "down"]],
            "body_size": 0,
            "elapsed_ms": 1.5,
        }
    )
    assert c.status_label.text() == "gRPC 14 UNAVAILABLE · 1.5 ms · 0 bytes · no healthy upstream"
    assert "x-why: down" in c.response_view.toPlainText()
    assert [c.history_combo.itemText(i) for i in range(c.history_combo.count())] == [
        "gRPC /test.Echo/Unary  → 14 UNAVAILABLE",
        "HTTP/2 POST /h2?x=1  → 200",
    ]
    # curl for each, from the form as it is
    assert c.curl_command().startswith("printf ") and "--http2-prior-knowledge" in c.curl_command()
    c._on_history_combo_activated(1)
    assert c.protocol == "HTTP/2" and c.method_combo.isVisibleTo(c)
    assert c.curl_command().startswith("curl -i --http2-prior-knowledge -X POST")
    # HAR: saved as HTTP/2 entries with the composer's extension, loaded back as they were
    har = tmp_path / "h.har"
    c.save_har(str(har))
    doc = json.loads(har.read_text())
    assert [e["request"]["httpVersion"] for e in doc["log"]["entries"]] == ["HTTP/2", "HTTP/2"]
    assert doc["log"]["entries"][1]["_wasmdesk_composer"]["grpc_status"] == 14
    other = ComposerPanel()
    other.load_har(str(har))
    assert [(e["protocol"], e["path"]) for e in other.history] == [
        ("HTTP/2", "/h2?x=1"),
        ("gRPC", "/test.Echo/Unary"),
    ]
    assert other.protocol == "gRPC" and other.deadline_spin.value() == 2.5
    assert other.body_edit.toPlainText() == '{"name": "world"}'
    other.deleteLater()


def test_a_grpc_request_in_a_foreign_har_comes_back_as_a_grpc_call(qtbot, tmp_path) -> None:
    frame = grpc_frame(b"\x0a\x02hi")
    import base64

    har = {
        "log": {
            "version": "1.2",
            "creator": {"name": "mitmproxy", "version": "10"},
            "entries": [
                {
                    "startedDateTime": "2025-01-01T00:00:00Z",
                    "time": 1,
                    "request": {
                        "method": "POST",
                        "url": "http://127.0.0.1:50051/pkg.Svc/Do",
                        "httpVersion": "HTTP/2.0",
                        "headers": [
                            {"name": "content-type", "value": "application/grpc"},
                            {"name": "te", "value": "trailers"},
                            {"name": "x-user", "value": "bob"},
                        ],
                        "queryString": [],
                        "cookies": [],
                        "headersSize": -1,
                        "bodySize": len(frame),
                        "postData": {
                            "mimeType": "application/grpc",
                            "text": base64.b64encode(frame).decode(),
                            "encoding": "base64",
                        },
                    },
                    "response": {
                        "status": 200,
                        "statusText": "",
                        "httpVersion": "HTTP/2.0",
                        "headers": [],
                        "cookies": [],
                        "content": {"size": 0, "mimeType": ""},
                        "redirectURL": "",
                        "headersSize": -1,
                        "bodySize": 0,
                    },
                    "cache": {},
                    "timings": {"send": 0, "wait": 1, "receive": 0},
                }
            ],
        }
    }
    path = tmp_path / "foreign.har"
    path.write_text(json.dumps(har))
    c = ComposerPanel()
    qtbot.addWidget(c)
    c.load_har(str(path))
    assert c.error_label.text() == ""
    assert c.protocol == "gRPC" and c.path_edit.text() == "/pkg.Svc/Do"
    assert c.headers_edit.toPlainText() == "x-user: bob"
    assert c.payload_combo.currentData() == "hex" and c.body_edit.toPlainText() == "0a 02 68 69"


# -- real calls through the engine service's thread ---------------------------------------------


@pytest.fixture
def service(qtbot) -> Iterator[Any]:
    from gui.engine_service import EngineService
    from gui.workspace import default_config_path
    from host.proxy.config import load_config

    svc = EngineService(
        load_config(default_config_path()), listen=("127.0.0.1", 0), admin=("127.0.0.1", 0)
    )
    with qtbot.waitSignal(svc.started, timeout=15_000):
        svc.start()
    yield svc
    assert svc.close(10)


@pytest.fixture
def grpc_server() -> Iterator[EchoServer]:
    srv = EchoServer()
    yield srv
    srv.server.stop(0)


def test_grpc_calls_reach_a_real_grpc_server_and_show_status_metadata_and_reply(
    qtbot, service, grpc_server
) -> None:
    panel = ComposerPanel()
    qtbot.addWidget(panel)
    target = ("127.0.0.1", grpc_server.port)
    panel.request_composed.connect(
        lambda d: service.send_grpc(
            d["method"], d["message"], d["metadata"], d["deadline_s"], target=target
        )
    )
    service.response_received.connect(panel.show_response)

    def call(message: str, fmt: str = "text", deadline: float = 5.0) -> dict[str, Any]:
        panel.protocol_combo.setCurrentText("gRPC")
        panel.path_edit.setText("/test.Echo/Unary")
        panel.headers_edit.setPlainText("x-user: alice\nx-bin-bin: AAE=")
        panel.payload_combo.setCurrentIndex(panel.payload_combo.findData(fmt))
        panel.body_edit.setPlainText(message)
        panel.deadline_spin.setValue(deadline)
        with qtbot.waitSignal(service.response_received, timeout=10_000) as got:
            panel.send_button.click()
        return dict(got.args[0])

    ok = call('{"name": "world"}', fmt="json")
    assert (ok["grpc_status"], ok["grpc_message"]) == (0, "")
    assert ok["body"] == 'echo:{"name": "world"}' and ok["body_size"] == 22
    assert ok["body_hex"].startswith("65 63 68 6f 3a 7b")
    assert ["x-srv", "unary"] in ok["initial_metadata"]
    assert ["seen-x-user", "alice"] in ok["trailing_metadata"]
    seen = grpc_server.seen_metadata[-1]
    assert seen["x-user"] == "alice" and seen["x-bin-bin"] == "0001"  # the -bin value as bytes
    assert seen["x-request-id"] == ok["request_id"]  # the inspector can find it
    assert panel.status_label.text().startswith("gRPC 0 OK · ")
    assert "text: echo:" in panel.response_view.toPlainText()

    failed = call("fail")
    assert (failed["grpc_status"], failed["grpc_message"]) == (5, "no such thing")
    assert panel.status_label.text().startswith("gRPC 5 NOT_FOUND")
    assert panel.status_label.text().endswith("no such thing")
    assert "no message" in panel.response_view.toPlainText()

    late = call("slow", deadline=0.3)
    assert late["grpc_status"] == 4 and late["elapsed_ms"] < 2000
    assert panel.status_label.text().startswith("gRPC 4 DEADLINE_EXCEEDED")
    assert grpc_server.cancelled.wait(3)  # the server saw the call go away

    raw = call("0a 05 68 65 6c 6c 6f", fmt="hex")
    assert raw["body_hex"] == "65 63 68 6f 3a 0a 05 68 65 6c 6c 6f"
    assert [panel.history_combo.itemText(i) for i in range(4)] == [
        "gRPC /test.Echo/Unary  → 0 OK",
        "gRPC /test.Echo/Unary  → 4 DEADLINE_EXCEEDED",
        "gRPC /test.Echo/Unary  → 5 NOT_FOUND",
        "gRPC /test.Echo/Unary  → 0 OK",
    ]


def test_a_grpc_call_to_a_closed_port_is_unavailable_not_a_crash(qtbot, service) -> None:
    with qtbot.waitSignal(service.response_received, timeout=10_000) as got:
        assert service.send_grpc("/test.Echo/Unary", b"x", (), 2.0, target=("127.0.0.1", 1))
    assert got.args[0]["grpc_status"] == 14
    failures: list[str] = []
    service.command_failed.connect(failures.append)
    assert not service.send_grpc("Unary", b"", (), 1.0)
    assert not service.send_grpc("/a.B/C", b"", (), 0.0)
    assert not service.send_grpc("/a.B/C", b"", (), 1.0, target=("10.0.0.1", 50051))
    assert failures == [
        "send gRPC: a gRPC method is /package.Service/Method (e.g. /grpc.health.v1.Health/Check)",
        "send gRPC: the deadline is 0..300 s",
        "send: 10.0.0.1 is not a loopback address",
    ]


def test_http2_requests_reach_a_real_h2c_server(qtbot, service) -> None:
    srv = H2EchoServer()
    try:
        with qtbot.waitSignal(service.response_received, timeout=10_000) as got:
            service.send_request(
                "POST",
                "/h2/path?q=1",
                [("x-k", "v")],
                b"hello",
                protocol="HTTP/2",
                target=("127.0.0.1", srv.port),
            )
        d = got.args[0]
        assert (d["protocol"], d["status"], d["body"]) == ("HTTP/2", 200, "h2 echo: hello")
        headers = dict(d["headers"])
        assert headers["x-seen-method"] == "POST" and headers["x-seen-path"] == "/h2/path?q=1"
        assert headers["x-seen-x-k"] == "v"
        assert headers["x-seen-x-request-id"] == d["request_id"]
        ((seen_headers, seen_body),) = srv.seen
        assert seen_body == b"hello"
        assert (":scheme", "http") in seen_headers  # h2c, prior knowledge
        # HTTP/1.1 still goes through the proxy as before, saying so
        with qtbot.waitSignal(service.response_received, timeout=10_000) as got:
            service.send_request("GET", "/hello")
        assert got.args[0]["protocol"] == "HTTP/1.1" and got.args[0]["status"] == 200
        # an HTTP/2 request to a server that does not speak it: a clear error, no crash
        with qtbot.waitSignal(service.response_received, timeout=10_000) as got:
            service.send_request("GET", "/", protocol="HTTP/2", target=("127.0.0.1", 1))
        assert got.args[0]["error"].startswith("ConnectError")
    finally:
        srv.close()
