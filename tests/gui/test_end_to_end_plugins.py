"""The real app (engine thread, proxy, demo plugins on 127.0.0.1), driven the way a user
drives it: a schema form, dragging the chain, a module from a URL, a broken module, a
trapping plugin, vmConfig env, and closing under load. Each test checks what actually
went through the proxy and what the window then shows."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.proxy.errors import ErrorKind
from host.resources import demo_plugin
from tests.fixtures.wat_modules import make_trap_module, make_wasi_probe_module
from tests.gui.helpers import drop_plugin, send

pytestmark = pytest.mark.slow


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def module_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A plain HTTP server on 127.0.0.1 serving a directory: (base URL, directory)."""
    root = tmp_path / "served"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root))
    )
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()
    t.join(5)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def test_schema_form_reconfigures_a_demo_plugin_live(qtbot, app_window) -> None:
    window, service = app_window
    window.plugin_list.select("add-header")
    details = window.plugin_details
    details.sections.setCurrentIndex(1)
    assert details.form is not None and details.form_active()
    form = details.form
    assert form.field("request_header.name").line.text() == "x-wasmdesk"  # the running config
    # invalid input: an inline error, Apply disabled, nothing reaches the engine
    name = form.field("request_header.name")
    name.line.setText("x form")
    name.line.textEdited.emit("x form")
    assert form.error_text("request_header.name").startswith("must not contain spaces")
    assert not details.config_apply_button.isEnabled()
    name.line.setText("x-from-form")
    name.line.textEdited.emit("x-from-form")
    value = form.field("request_header.value")
    value.line.setText("yes")
    value.line.textEdited.emit("yes")
    with qtbot.waitSignal(service.config_applied, timeout=10_000) as applied:
        details.config_apply_button.click()
    assert applied.args == [[]]
    qtbot.waitUntil(lambda: details.config_status.text() == "Applied", timeout=5_000)
    resp = send(qtbot, window, "/form-check")
    assert resp["status"] == 200
    assert '"x-from-form": "yes"' in resp["body"]  # the echo upstream saw the new header
    spec = next(p for p in service.config.plugins if p.name == "add-header")
    assert spec.plugin_config["request_header"] == {"name": "x-from-form", "value": "yes"}


def test_dragging_within_a_phase_reorders_the_running_chain(qtbot, app_window) -> None:
    window, service = app_window
    view = window.plugin_list
    view.resize(400, 300)
    with qtbot.waitSignal(service.plugins_changed, timeout=10_000):
        drop_plugin(view, "body-rewrite", "add-header")
    qtbot.waitUntil(
        lambda: view.names() == ["auth-token", "path-counter", "body-rewrite", "add-header"],
        timeout=5_000,
    )
    prio = {p.name: p.priority for p in service.config.plugins}
    assert prio["body-rewrite"] == 20 and prio["add-header"] == 10
    # a request that runs every plugin now meets them in the new order
    send(qtbot, window, "/order", "x-wasmdesk-canary: always")

    def order_seen() -> None:
        rows = [r for r in window.inspector_panel.rows() if r[3] == "/order"]
        assert rows and rows[0][6] == "auth-token, path-counter, body-rewrite, add-header"

    qtbot.waitUntil(order_seen, timeout=5_000)
    # across phases: refused with a reason, the chain stays
    drop_plugin(view, "add-header", "auth-token")
    assert "add-header is in phase UNSPECIFIED_PHASE" in window.last_error


def test_plugin_from_a_url_is_checked_against_its_sha256(qtbot, app_window, module_server) -> None:
    window, service = app_window
    base, root = module_server
    data = demo_plugin("add_header").read_bytes()
    (root / "add_header.wasm").write_bytes(data)
    good = hashlib.sha256(data).hexdigest()
    before = window.plugin_list.names()

    def refused(url: str, sha: str) -> str:
        with qtbot.waitSignal(service.config_refused, timeout=15_000) as got:
            assert window.load_plugin_url(url, sha, "add_header")
        (err,) = got.args[0]
        return str(err)

    wrong = "0" * 64
    err = refused(f"{base}/add_header.wasm", wrong)
    assert "sha256 mismatch" in err and good in err
    assert "Nothing was changed" in window.last_error
    err = refused(f"http://127.0.0.1:{_closed_port()}/add_header.wasm", good)
    assert "cannot download" in err
    err = refused(f"{base}/missing.wasm", good)
    assert "HTTP 404" in err
    assert window.plugin_list.names() == before
    assert send(qtbot, window, "/still-fine")["status"] == 200

    with qtbot.waitSignal(service.config_applied, timeout=15_000) as applied:
        assert window.load_plugin_url(f"{base}/add_header.wasm", good, "add_header")
    assert applied.args == [[]]
    qtbot.waitUntil(lambda: "add-header-2" in window.plugin_list.names(), timeout=5_000)
    assert window.plugin_list.badges()["add-header-2"] == "running"
    assert window.plugin_details.config_tabs.currentIndex() == 1  # no schema: YAML
    spec = next(p for p in service.config.plugins if p.name == "add-header-2")
    assert (spec.url, spec.sha256) == (f"{base}/add_header.wasm", good)


def test_a_broken_module_file_is_refused_and_changes_nothing(
    qtbot, app_window, tmp_path: Path
) -> None:
    window, service = app_window
    broken = tmp_path / "broken.wasm"
    broken.write_bytes(b"\0asm\x01\0\0\0" + b"\xff" * 40)  # the magic, then garbage
    before = window.plugin_list.names()
    with qtbot.waitSignal(service.config_refused, timeout=10_000) as got:
        assert window.load_plugin_file(broken)
    (err,) = got.args[0]
    assert err.kind is ErrorKind.COMPILE and "invalid WebAssembly module" in err.message
    assert "invalid WebAssembly module" in window.last_error
    assert window.plugin_list.names() == before
    assert all(p.name != "broken" for p in service.config.plugins)
    assert send(qtbot, window, "/after-broken")["status"] == 200


def test_a_trapping_plugin_shows_its_failure_and_its_policy_applies(
    qtbot, app_window, tmp_path: Path
) -> None:
    window, service = app_window
    trapper = tmp_path / "trapper.wasm"
    trapper.write_bytes(make_trap_module("proxy_on_request_headers", "unreachable"))
    with qtbot.waitSignal(service.config_applied, timeout=10_000) as applied:
        assert window.load_plugin_file(trapper)
    assert applied.args == [[]]  # it starts and configures fine; it traps per request
    qtbot.waitUntil(lambda: window.plugin_list.badges().get("trapper") == "running", timeout=5_000)

    resp = send(qtbot, window, "/boom")
    assert resp["status"] == 503  # FAIL_CLOSE, the default
    assert ["x-wasmdesk-failed-plugin", "trapper"] in resp["headers"]
    qtbot.waitUntil(lambda: window.plugin_list.badges().get("trapper") == "failed", timeout=5_000)
    window.plugin_list.select("trapper")
    text = window.plugin_details.failure_text.toPlainText()
    first = text.splitlines()[0]
    assert "unreachable" in first  # kind: message
    assert "backtrace:" in text and "proxy_on_request_headers" in text
    assert "triggered by: GET /boom" in text and ":path: /boom" in text

    # the inspector shows the failed hop of that request
    def failed_row() -> None:
        rows = [r for r in window.inspector_panel.rows() if r[3] == "/boom"]
        assert rows and "trapper failed" in rows[0][7]

    qtbot.waitUntil(failed_row, timeout=5_000)
    row = next(r for r in window.inspector_panel.rows() if r[3] == "/boom")
    window.inspector_panel.select_request(int(row[0]))
    qtbot.waitUntil(
        lambda: "failure" in window.inspector_panel.detail_view.toPlainText(), timeout=5_000
    )
    assert "unreachable" in window.inspector_panel.detail_view.toPlainText()

    # FAIL_OPEN through the UI: the next request skips the failed plugin
    d = window.plugin_details
    i = d.fail_combo.findText("FAIL_OPEN")
    d.fail_combo.setCurrentIndex(i)
    with qtbot.waitSignal(service.plugins_changed, timeout=5_000):
        d.fail_combo.activated.emit(i)
    assert send(qtbot, window, "/after")["status"] == 200

    # Reload: a fresh VM, running again
    with qtbot.waitSignal(service.plugin_reloaded, timeout=10_000) as reloaded:
        d.reload_button.click()
    assert reloaded.args == ["trapper", None]
    qtbot.waitUntil(lambda: window.plugin_list.badges().get("trapper") == "running", timeout=5_000)


def test_vm_config_env_reaches_the_module(qtbot, app_window, tmp_path: Path, monkeypatch) -> None:
    window, service = app_window
    monkeypatch.setenv("WASMDESK_E2E_FROM_HOST", "host-value")
    probe = tmp_path / "probe.wasm"
    probe.write_bytes(make_wasi_probe_module())
    with qtbot.waitSignal(service.config_applied, timeout=10_000):
        assert window.load_plugin_file(probe)
    qtbot.waitUntil(lambda: window.plugin_list.selected_name() == "probe", timeout=5_000)
    d = window.plugin_details
    d.sections.setCurrentIndex(2)
    d.env_add_button.click()
    d.env_table.item(0, 0).setText("GREETING")
    d.env_table.item(0, 2).setText("hello env")
    d.env_add_button.click()
    d.env_table.item(1, 0).setText("WASMDESK_E2E_FROM_HOST")
    d.env_table.cellWidget(1, 1).setCurrentText("HOST")
    with qtbot.waitSignal(service.config_applied, timeout=10_000) as applied:
        d.env_apply_button.click()
    assert applied.args == [[]]

    def module_saw_it() -> None:
        window.logs_panel.set_filters(plugin="probe")
        messages = [r[4] for r in window.logs_panel.visible_rows()]
        assert "GREETING=hello env" in messages
        assert "WASMDESK_E2E_FROM_HOST=host-value" in messages

    qtbot.waitUntil(module_saw_it, timeout=5_000)
    qtbot.waitUntil(
        lambda: "The module sees: GREETING=hello env" in d.env_status.text(), timeout=5_000
    )
    saved = next(p for p in service.config.plugins if p.name == "probe")
    assert [e.name for e in saved.env] == ["GREETING", "WASMDESK_E2E_FROM_HOST"]


def test_closing_under_load_stops_the_proxy_and_the_engine_thread(
    qtbot, app_window, tmp_path: Path
) -> None:
    window, service = app_window
    host, port = service.listen_address
    with qtbot.waitSignal(service.traffic_progress, timeout=5_000):
        window.generate_button.click()
    window.close()
    assert service.thread is not None
    service.thread.join(5)
    assert not service.thread.is_alive()
    with pytest.raises(OSError), contextlib.closing(socket.socket()) as s:
        s.settimeout(1)
        s.connect((host, port))
    assert window.workspace is not None and window.workspace.path.is_file()
