""" "Send again" sends what the client sent: the proxy's x-forwarded-* and request id
are dropped (the proxy will make a fresh id), the client's own x-forwarded-for stays."""

from __future__ import annotations

from gui.inspector_panel import replay_request
from host.proxy.request_views import HopView, RequestView


def _rec(before: list[list[str]]) -> RequestView:
    pairs = tuple((k, v) for k, v in before)
    return RequestView(
        1, method="GET", path="/p", hops=(HopView("p", request_headers_before=pairs),)
    )


def test_send_again_drops_what_the_proxy_added() -> None:
    # the shape http1.py gives: client headers, then xff, x-forwarded-proto, x-request-id
    got = replay_request(
        _rec(
            [
                [":method", "GET"],
                [":path", "/p"],
                [":authority", "x"],
                ["accept", "*/*"],
                ["x-forwarded-for", "127.0.0.1"],
                ["x-forwarded-proto", "http"],
                ["x-request-id", "6c1b6f1e-0b7e-4a0e-9d5b-6a1a3b7f9c11"],
            ]
        )
    )
    assert got == {"method": "GET", "path": "/p", "headers": [["accept", "*/*"]], "body": ""}


def test_send_again_keeps_the_clients_own_forwarded_for_but_not_its_request_id() -> None:
    got = replay_request(
        _rec(
            [
                [":method", "GET"],
                ["x-request-id", "client-chose-this"],
                ["x-forwarded-for", "10.0.0.9, 127.0.0.1"],
                ["x-forwarded-proto", "http"],
            ]
        )
    )
    assert got is not None
    assert got["headers"] == [["x-forwarded-for", "10.0.0.9"]]


def test_composer_history_curl_and_har_round_trip(qtbot, tmp_path) -> None:
    from gui.composer_panel import ComposerPanel
    from host.lab.har import load_session

    c = ComposerPanel()
    qtbot.addWidget(c)
    c.base_url = "http://127.0.0.1:10000"
    sent: list = []
    c.send_requested.connect(lambda *a: sent.append(a))
    c.method_combo.setCurrentText("POST")
    c.path_edit.setText("/api/items?x=1")
    c.headers_edit.setPlainText("authorization: Bearer it's\ncontent-type: text/plain")
    c.body_edit.setPlainText("hello")
    c.send_button.click()
    c.show_response({"status": 201, "elapsed_ms": 3.5, "headers": [["x-r", "1"]], "body": "ok"})
    c.method_combo.setCurrentText("GET")
    c.path_edit.setText("/second")
    c.headers_edit.setPlainText("")
    c.body_edit.setPlainText("")
    c.send_button.click()
    assert len(sent) == 2
    assert [c.history_combo.itemText(i) for i in range(c.history_combo.count())] == [
        "GET /second",
        "POST /api/items?x=1  → 201",
    ]
    # picking the older one puts it back in the form, and curl sends exactly that
    c._on_history_combo_activated(1)
    assert c.path_edit.text() == "/api/items?x=1" and c.body_edit.toPlainText() == "hello"
    assert c.curl_command() == (
        "curl -i -X POST -H 'authorization: Bearer it'\"'\"'s' -H 'content-type: text/plain' "
        "--data-binary hello 'http://127.0.0.1:10000/api/items?x=1'"
    )
    # save as HAR: any HAR reader (and the lab) reads it back
    har = tmp_path / "history.har"
    c.save_har(str(har))
    exchanges, _ = load_session(har)
    assert [(e.request.method, e.request.path) for e in exchanges] == [
        ("POST", "/api/items?x=1"),
        ("GET", "/second"),
    ]
    assert exchanges[0].request.body == b"hello"
    assert exchanges[0].response is not None and exchanges[0].response.status == 201
    other = ComposerPanel()
    qtbot.addWidget(other)
    other.load_har(str(har))
    assert other.history_combo.count() == 2
    assert other.path_edit.text() == "/second"
    bad = tmp_path / "bad.har"
    bad.write_text("[]")
    other.load_har(str(bad))
    assert "not a HAR file" in other.error_label.text()
