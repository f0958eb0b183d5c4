"""The inspector for gRPC and trailers (issue 9 §5): a Protocol column, the gRPC status
(code and name) and grpc-message in the list and the details, the trailers at both ends
of the chain and each hop's trailer diff, and ``protocol:`` / ``grpc:`` filters. The last
test runs the real engine: an upstream on loopback answers with ``grpc-status`` trailers
and a plugin (inline WAT) adds one; the record the app fetches shows them."""

from __future__ import annotations

import dataclasses
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from gui.inspector_export import parse_filter, record_exchange
from gui.inspector_panel import InspectorPanel, render_exchange_html, render_request_html
from host.proxy.request_views import RequestGone, RequestSummary, RequestView


def _summary(rid: int, **kw: Any) -> RequestSummary:
    s = RequestSummary(
        id=rid, request_id=f"r{rid}", method="POST", path="/p", status=200, duration_ms=1.0
    )
    return dataclasses.replace(s, **kw)


SUMMARIES = [
    _summary(1, method="GET"),
    _summary(2, protocol="HTTP/2"),
    _summary(3, protocol="HTTP/2", path="/pkg.Svc/Do", grpc_status=0),
    _summary(
        4,
        protocol="HTTP/2",
        path="/pkg.Svc/Do",
        grpc_status=14,
        grpc_message="no healthy upstream",
    ),
]


def test_the_list_shows_the_protocol_and_the_grpc_status(qtbot) -> None:
    panel = InspectorPanel()
    qtbot.addWidget(panel)
    panel.show()
    panel.append_requests(SUMMARIES)
    rows = {int(r[0]): r for r in panel.rows()}
    col = panel.PROTOCOL_COLUMN
    assert [rows[i][col] for i in (1, 2, 3, 4)] == ["HTTP/1.1", "HTTP/2", "gRPC", "gRPC"]
    assert rows[4][7] == "gRPC 14 UNAVAILABLE: no healthy upstream"
    assert rows[3][7] == "gRPC 0 OK"
    assert rows[1][4] == "200" and rows[1][3] == "/p"  # the other columns where they were
    # shown right after Method
    header = panel.request_list.header()
    assert header.visualIndex(col) == header.visualIndex(2) + 1


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("protocol:h2", [2, 3, 4]),
        ("protocol:HTTP/1.1", [1]),
        ("protocol:grpc", [3, 4]),
        ("grpc:error", [4]),
        ("grpc:unavailable", [4]),
        ("grpc:0", [3]),
        ("protocol:grpc method:post", [3, 4]),
    ],
)
def test_protocol_and_grpc_filters(text: str, ids: list[int]) -> None:
    f = parse_filter(text)
    assert [s.id for s in SUMMARIES if f.matches(s)] == ids


def test_bad_protocol_and_grpc_filters_say_why() -> None:
    with pytest.raises(ValueError, match=r"protocol: expected http/1\.1, http/2"):
        parse_filter("protocol:spdy")
    with pytest.raises(ValueError, match="grpc: expected a status code"):
        parse_filter("grpc:99")


def _trailers(before: list[list[str]] | None, after: list[list[str]] | None) -> dict[str, Any]:
    return {"response_trailers_before": before, "response_trailers_after": after}


RECORD_JSON: dict[str, Any] = {
    "id": 7,
    "request_id": "r7",
    "method": "POST",
    "path": "/pkg.Svc/Do",
    "protocol": "HTTP/2",
    "grpc_status": 14,
    "grpc_message": "no healthy upstream",
    "status": 200,
    "outcome": "ok",
    "duration_ms": 2.0,
    "hops": [
        {
            "plugin": "outer",
            "mode": "enforce",
            "ran": True,
            **_trailers(
                [["grpc-status", "14"], ["x-inner", "1"]],
                [["grpc-status", "14"], ["x-inner", "1"], ["x-outer", "1"]],
            ),
        },
        {
            "plugin": "inner",
            "mode": "enforce",
            "ran": True,
            **_trailers([["grpc-status", "14"]], [["grpc-status", "14"], ["x-inner", "1"]]),
        },
    ],
}
RECORD = RequestView.from_dict(RECORD_JSON)


def test_details_show_the_grpc_status_and_the_trailers_at_both_ends() -> None:
    ex = record_exchange(RECORD)
    assert ex.response_trailers_upstream == (("grpc-status", "14"),)
    assert ex.response_trailers_client is not None
    assert ex.response_trailers_client[-1] == ("x-outer", "1")
    html = render_request_html(RECORD)
    assert "HTTP/2 · request id r7" in html
    assert "14 UNAVAILABLE" in html and "grpc-message: no healthy upstream" in html
    assert "resp trailers ±1" in html  # each hop's summary
    assert "response trailers" in html and "+ x-outer: 1" in html
    resp = render_exchange_html(RECORD, "response")
    assert "14 UNAVAILABLE" in resp
    assert "trailers as upstream sent them" in resp and "grpc-status: 14" in resp
    assert "trailers as the client received them" in resp and "x-outer: 1" in resp
    # a plain HTTP exchange says nothing about gRPC
    plain = dataclasses.replace(RECORD, grpc_status=None, protocol="HTTP/1.1")
    assert "gRPC status" not in render_request_html(plain)


# -- the real engine ----------------------------------------------------------------------------


@pytest.fixture
def trailer_upstream() -> Iterator[int]:
    """Answers every request with a chunked body and gRPC-style trailers."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                buf = b""
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\n"
                    b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                    b"5\r\nhello\r\n0\r\ngrpc-status: 14\r\ngrpc-message: no backend\r\n\r\n"
                )

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(2)
    srv.close()


def test_a_real_record_shows_the_upstream_trailers_and_what_a_plugin_added(
    qtbot, tmp_path, trailer_upstream
) -> None:
    from gui.engine_service import EngineService
    from tests.host.proxy.conftest import make_config, wasm_plugin
    from tests.host.proxy.test_trailers import trailers_wasm

    wasm = tmp_path / "trailers.wasm"
    wasm.write_bytes(trailers_wasm(False))
    config = make_config(
        wasm_plugin("tr", str(wasm), root_id="tr"),
        clusters={"backend": f"http://127.0.0.1:{trailer_upstream}"},
    )
    svc = EngineService(dataclasses.replace(config), listen=("127.0.0.1", 0))
    panel = InspectorPanel()
    qtbot.addWidget(panel)
    panel.show()
    try:
        with qtbot.waitSignal(svc.started, timeout=15_000):
            svc.start()
        with qtbot.waitSignal(svc.response_received, timeout=10_000) as got:
            svc.send_request("POST", "/pkg.Svc/Do", [("content-type", "application/grpc")])
        assert got.args[0]["status"] == 200
        seen: list[RequestSummary] = []

        def arrived() -> bool:
            snap = svc.snapshot()
            if snap is not None:
                seen.extend(snap.requests)
            return bool(seen)

        qtbot.waitUntil(arrived, timeout=5_000)
        panel.append_requests(seen)
        # gRPC over HTTP/1.1: the record keeps the wire protocol and the trailer's status
        assert seen[0].protocol == "HTTP/1.1" and seen[0].grpc_status == 14
        assert panel.rows()[0][panel.PROTOCOL_COLUMN] == "gRPC"
        panel.request_selected.connect(svc.fetch_request)
        svc.request_details_received.connect(panel.show_details)
        with qtbot.waitSignal(svc.request_details_received, timeout=5_000):
            panel.select_request(seen[0].id)
        resp = panel.response_view.toPlainText()
        assert "trailers as upstream sent them" in resp
        assert "grpc-status: 14" in resp and "grpc-message: no backend" in resp
        assert "trailers as the client received them" in resp and "x-added: resp" in resp
        assert "response trailers (+1 −0)" in panel.detail_view.toPlainText()
        # a record the engine no longer has: a value that says so, shown as such
        with qtbot.waitSignal(svc.request_details_received, timeout=5_000) as gone:
            svc.fetch_request(10_000)
        assert gone.args[0] == RequestGone(10_000)
        panel.selected_id = 10_000
        panel.show_details(gone.args[0])
        assert "left the inspector's ring" in panel.detail_view.toPlainText()
        assert not panel.curl_button.isEnabled() and not panel.replay_button.isEnabled()
    finally:
        assert svc.close(10)


def test_send_again_keeps_the_protocol_and_unframes_a_grpc_message() -> None:
    from gui.inspector_panel import replay_request

    def rec(headers: list[list[str]], body: str, **kw: Any) -> RequestView:
        hop = {"plugin": "p", "request_headers_before": headers, "request_body_before": body}
        return RequestView.from_dict({"method": "POST", "path": "/pkg.Svc/Do", "hops": [hop], **kw})

    h2 = replay_request(rec([[":method", "POST"], ["x-a", "1"]], "hi", protocol="HTTP/2"))
    assert h2 == {
        "method": "POST",
        "path": "/pkg.Svc/Do",
        "headers": [["x-a", "1"]],
        "body": "hi",
        "protocol": "HTTP/2",
    }
    grpc_headers = [
        [":method", "POST"],
        ["content-type", "application/grpc"],
        ["te", "trailers"],
        ["grpc-timeout", "5S"],
        ["x-user", "alice"],
    ]
    msg = '{"name": "bob"}'
    framed = "\0\0\0\0" + chr(len(msg)) + msg  # one gRPC frame, as the record keeps it
    call = replay_request(rec(grpc_headers, framed, protocol="HTTP/2", grpc_status=0))
    assert call == {
        "protocol": "gRPC",
        "method": "POST",
        "path": "/pkg.Svc/Do",
        "headers": [["x-user", "alice"]],
        "body": '{"name": "bob"}',
        "payload_format": "json",
    }
    binary = "\0\0\0\0\x03" + "\n\x01a"
    call = replay_request(rec(grpc_headers, binary, protocol="HTTP/2"))
    assert call is not None and (call["payload_format"], call["body"]) == ("hex", "0a 01 61")


def test_curl_and_har_of_an_http2_grpc_record_say_so() -> None:
    from gui.inspector_export import record_to_curl, record_to_har

    rec = dataclasses.replace(
        RECORD,
        hops=(
            dataclasses.replace(
                RECORD.hops[0],
                request_headers_before=((":method", "POST"), ("content-type", "application/grpc")),
            ),
            RECORD.hops[1],
        ),
    )
    assert record_to_curl(rec, "http://127.0.0.1:10000").startswith(
        "curl --http2-prior-knowledge -X POST http://127.0.0.1:10000/pkg.Svc/Do"
    )
    (entry,) = record_to_har(rec, "http://127.0.0.1:10000")["log"]["entries"]
    assert entry["request"]["httpVersion"] == entry["response"]["httpVersion"] == "HTTP/2"
    assert (entry["_grpcStatus"], entry["_grpcMessage"]) == (14, "no healthy upstream")
    assert {"name": "x-outer", "value": "1"} in entry["_responseTrailers"]
    plain = record_to_har(dataclasses.replace(RECORD, protocol="HTTP/1.1", grpc_status=None))
    (entry,) = plain["log"]["entries"]
    assert entry["request"]["httpVersion"] == "HTTP/1.1" and "_grpcStatus" not in entry
