"""The whole app against the real proxy, with and without a TLS listener: the composer's
HTTP/1.1, HTTP/2 and gRPC sends go THROUGH the proxy (h2c or ALPN h2 over TLS, gRPC on a
plain or a secure channel) to upstreams the test starts on loopback (an ``h2`` echo
server, a grpcio server), the inspector shows each exchange's protocol and gRPC status,
the load generator works over TLS, and curl lines carry ``https`` and ``--cacert``.
``spec.tls: demo`` makes its CA under ``WASMDESK_DATA_DIR`` (the test's tmp_path)."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gui.tls_client import trust_anchor
from tests.gui.h2_echo_server import H2EchoServer
from tests.host.proxy.grpc_echo_server import EchoServer


@pytest.fixture
def upstreams() -> Iterator[tuple[H2EchoServer, EchoServer]]:
    web, grpc_srv = H2EchoServer(), EchoServer()
    yield web, grpc_srv
    web.close()
    grpc_srv.server.stop(0)


def _start(qtbot: Any, tmp_path: Path, proxy_spec: str) -> tuple[Any, Any]:
    """The real app (engine thread, proxy on an ephemeral loopback port) on a workspace
    whose Proxy document has ``proxy_spec`` under ``spec``."""
    from gui.app import build
    from gui.workspace import Workspace, default_config_path

    # one bundled plugin: the inspector records exchanges that ran a plugin chain
    wasm = (default_config_path().parent / "../plugins/add_header.wasm").resolve()
    ws = tmp_path / "workspace.yaml"
    ws.write_text(
        "apiVersion: wasmdesk.dev/v1alpha1\nkind: Proxy\nspec:\n"
        "  listen: 127.0.0.1:0\n  admin: 127.0.0.1:0\n" + proxy_spec + "---\n"
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\n"
        f"metadata: {{name: add-header}}\nspec: {{url: '{wasm}', pluginName: add_header}}\n"
    )
    window, service = build(Workspace.at(ws), listen=("127.0.0.1", 0), admin=("127.0.0.1", 0))
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(service.started, timeout=15_000):
        service.start()
    return window, service


def _stop(window: Any, service: Any) -> None:
    window.close()
    service.thread.join(5)
    assert not service.thread.is_alive()


def _clusters(web: H2EchoServer, grpc_srv: EchoServer, default: str) -> str:
    return (
        "  clusters:\n"
        f"  - {{name: web, url: 'http://127.0.0.1:{web.port}', protocol: h2}}\n"
        f"  - {{name: grpc, url: 'grpc://127.0.0.1:{grpc_srv.port}'}}\n"
        f"  defaultCluster: {default}\n"
    )


def _row(qtbot: Any, window: Any, request_id: str) -> list[str]:
    """The inspector's row for this request id, once the 10 Hz poll has listed it."""
    panel = window.inspector_panel
    qtbot.waitUntil(lambda: request_id in panel.request_id_list(), timeout=5_000)
    return panel.rows()[panel.request_id_list().index(request_id)]


def _send(
    qtbot: Any, window: Any, service: Any, protocol: str, path: str, body: str = "hello"
) -> dict[str, Any]:
    c = window.composer_panel
    c.protocol_combo.setCurrentText(protocol)
    c.path_edit.setText(path)
    if protocol == "gRPC":
        c.headers_edit.setPlainText("x-user: alice\nx-bin-bin: AAE=")
        c.payload_combo.setCurrentIndex(c.payload_combo.findData("text"))
        c.body_edit.setPlainText(body)
        c.deadline_spin.setValue(0.5 if body == "slow" else 5.0)
    else:
        c.method_combo.setCurrentText("POST")
        c.headers_edit.setPlainText("x-k: v")
        c.body_edit.setPlainText("body")
    with qtbot.waitSignal(service.response_received, timeout=10_000) as got:
        c.send_button.click()
    return dict(got.args[0])


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "tls-demo"])
def test_the_composer_reaches_upstreams_through_the_proxy_in_each_protocol(
    qtbot, tmp_path, monkeypatch, upstreams, tls
) -> None:
    monkeypatch.setenv("WASMDESK_DATA_DIR", str(tmp_path / "data"))
    web, grpc_srv = upstreams
    # gRPC goes to the grpc cluster by its path (a route), the rest to the h2 web echo
    routes = "  routes:\n  - {name: rpc, match: {prefix: /test.Echo/}, cluster: grpc}\n"
    spec = _clusters(web, grpc_srv, "web") + routes + ("  tls: demo\n" if tls else "")
    window, service = _start(qtbot, tmp_path, spec)
    try:
        h, p = service.listen_address
        scheme = "https" if tls else "http"
        assert window.address_edit.text() == f"{scheme}://{h}:{p}"
        if tls:
            ca = tmp_path / "data" / "tls" / "demo-ca.pem"
            assert service.listener_tls.ca_file == str(ca) and ca.is_file()
        else:
            assert service.listener_tls is None

        for protocol in ("HTTP/1.1", "HTTP/2"):
            d = _send(qtbot, window, service, protocol, f"/web/{protocol[-1]}")
            assert (d["error"], d["status"], d["protocol"]) == ("", 200, protocol)
            assert ["x-seen-x-k", "v"] in d["headers"]  # it reached the upstream
            assert d["body"] == "h2 echo: body"
            row = _row(qtbot, window, d["request_id"])
            assert (row[3], row[4], row[8]) == (f"/web/{protocol[-1]}", "200", protocol)
        seen = dict(web.seen[-1][0])
        assert seen[":scheme"] == "http"  # the upstream leg is h2c either way
        assert seen["x-forwarded-proto"] == scheme

        ok = _send(qtbot, window, service, "gRPC", "/test.Echo/Unary")
        assert (ok["error"], ok["grpc_status"], ok["body"]) == ("", 0, "echo:hello")
        assert ["seen-x-user", "alice"] in ok["trailing_metadata"]
        row = _row(qtbot, window, ok["request_id"])
        assert (row[3], row[4], row[8]) == ("/test.Echo/Unary", "200", "gRPC")
        assert row[7].startswith("gRPC 0 OK")
        failed = _send(qtbot, window, service, "gRPC", "/test.Echo/Nope")
        assert failed["grpc_status"] == 12  # UNIMPLEMENTED, from the grpcio server
        assert _row(qtbot, window, failed["request_id"])[7].startswith("gRPC 12 UNIMPLEMENTED")
        seen_md = grpc_srv.seen_metadata[-1]
        assert seen_md["x-forwarded-proto"] == scheme
        assert seen_md["x-bin-bin"] == "0001"  # a -bin value arrives as its bytes
        late = _send(qtbot, window, service, "gRPC", "/test.Echo/Unary", body="slow")
        assert late["grpc_status"] == 4 and late["elapsed_ms"] < 1500  # DEADLINE_EXCEEDED
        assert grpc_srv.cancelled.wait(3)  # the call was cancelled up to the server
    finally:
        _stop(window, service)


def test_over_tls_the_load_generator_send_again_and_curl_use_https_and_the_demo_ca(
    qtbot, tmp_path, monkeypatch, upstreams
) -> None:
    monkeypatch.setenv("WASMDESK_DATA_DIR", str(tmp_path / "data"))
    web, grpc_srv = upstreams
    window, service = _start(qtbot, tmp_path, _clusters(web, grpc_srv, "web") + "  tls: demo\n")
    try:
        ca = str(tmp_path / "data" / "tls" / "demo-ca.pem")
        base = window.address_edit.text()
        assert base.startswith("https://127.0.0.1:")
        with qtbot.waitSignal(service.traffic_finished, timeout=15_000) as got:
            assert service.generate_traffic(40.0, 0.5)
        res = got.args[0]
        assert res["sent"] == res["planned"] == 20
        assert (res["errors"], res["last_error"]) == (0, "")
        assert res["statuses"] == {"200": 20}  # the h2 echo answers every path 200
        tls_handshakes = service.snapshot().stats.counters
        assert any(k.endswith("ssl.handshake") and v > 0 for k, v in tls_handshakes.items())

        # Send again: the inspector's record back in the composer, sent over TLS again
        d = _send(qtbot, window, service, "HTTP/2", "/again")
        panel = window.inspector_panel
        _row(qtbot, window, d["request_id"])
        with qtbot.waitSignal(service.request_details_received, timeout=5_000):
            assert panel.select_request_id(d["request_id"])
        with qtbot.waitSignal(service.response_received, timeout=10_000) as again:
            panel.replay_button.click()
            window.composer_panel.send_button.click()
        a = again.args[0]
        assert (a["error"], a["status"], a["protocol"], a["path"]) == ("", 200, "HTTP/2", "/again")
        assert a["request_id"] != d["request_id"]

        # both curl lines trust the demo CA, and the composer's one works as printed
        curl = panel.curl_text()
        assert f"curl --cacert {ca} --http2 -X POST {base}/again " in curl
        c = window.composer_panel
        c.protocol_combo.setCurrentText("HTTP/1.1")
        c.method_combo.setCurrentText("GET")
        c.path_edit.setText("/by-curl")
        c.headers_edit.setPlainText("x-k: curl")
        c.body_edit.setPlainText("")
        line = c.curl_command()
        assert line.startswith(f"curl -i --cacert {ca} --http1.1 ") and f"{base}/by-curl" in line
        out = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=10)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("HTTP/1.1 200") and "x-seen-x-k: curl" in out.stdout
        c.protocol_combo.setCurrentText("gRPC")
        c.path_edit.setText("/test.Echo/Unary")
        c.headers_edit.setPlainText("")
        assert f"curl -i --cacert {ca} --http2 -X POST" in c.curl_command()
    finally:
        _stop(window, service)


def _cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: Any, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        b = b.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return b.sign(signer, hashes.SHA256())


def test_the_app_trusts_a_self_signed_chain_and_otherwise_the_system_store(tmp_path) -> None:
    ca_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = _cert("Test CA", ca_key, "Test CA", ca_key, True)
    leaf = _cert("localhost", leaf_key, "Test CA", ca_key, False)
    selfsigned = _cert("localhost", leaf_key, "localhost", leaf_key, False)

    def pem(name: str, *certs: x509.Certificate) -> str:
        path = tmp_path / name
        path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
        return str(path)

    assert trust_anchor(pem("self.pem", selfsigned)) == str(tmp_path / "self.pem")
    assert trust_anchor(pem("chain.pem", leaf, ca)) == str(tmp_path / "chain.pem")
    assert trust_anchor(pem("leaf.pem", leaf)) is None  # its CA is not here: the system store
    assert trust_anchor(pem("leaf2.pem", leaf), demo_ca="/x/demo-ca.pem") == "/x/demo-ca.pem"
    assert trust_anchor(str(tmp_path / "gone.pem")) is None


def _pem_files(tmp_path: Path, name: str, key: Any, *certs: x509.Certificate) -> str:
    """``spec.tls`` for these certificates (written next to the workspace) and key."""
    (tmp_path / f"{name}.pem").write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    )
    (tmp_path / f"{name}-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return f"  tls: {{cert: {name}.pem, key: {name}-key.pem}}\n"


def test_a_self_signed_listener_certificate_is_the_apps_trust_anchor(
    qtbot, tmp_path, upstreams
) -> None:
    web, grpc_srv = upstreams
    key = ec.generate_private_key(ec.SECP256R1())
    tls = _pem_files(tmp_path, "self", key, _cert("localhost", key, "localhost", key, False))
    window, service = _start(qtbot, tmp_path, _clusters(web, grpc_srv, "web") + tls)
    try:
        assert service.listener_tls.ca_file == str(tmp_path / "self.pem")
        assert window.address_edit.text().startswith("https://")
        for protocol in ("HTTP/1.1", "HTTP/2"):
            d = _send(qtbot, window, service, protocol, "/self")
            assert (d["error"], d["status"], d["protocol"]) == ("", 200, protocol)
        assert f"--cacert {tmp_path / 'self.pem'} " in window.composer_panel.curl_command()
    finally:
        _stop(window, service)


def test_a_certificate_the_app_cannot_verify_fails_each_request_with_the_reason(
    qtbot, tmp_path, upstreams
) -> None:
    # a leaf from a CA that is neither in the file nor in the system store
    web, grpc_srv = upstreams
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    tls = _pem_files(tmp_path, "leaf", key, _cert("localhost", key, "Test CA", ca_key, False))
    spec = _clusters(web, grpc_srv, "grpc") + tls
    window, service = _start(qtbot, tmp_path, spec)
    try:
        assert service.listener_tls.ca_file is None  # the system store
        assert "--cacert" not in window.composer_panel.curl_command()
        for protocol in ("HTTP/1.1", "HTTP/2"):
            d = _send(qtbot, window, service, protocol, "/x")
            assert d["status"] == 0 and "CERTIFICATE_VERIFY_FAILED" in d["error"], d
        g = _send(qtbot, window, service, "gRPC", "/test.Echo/Unary")
        assert g["grpc_status"] == 14 and "CERTIFICATE_VERIFY_FAILED" in g["grpc_message"]
        assert "unable to get local issuer certificate" in g["grpc_message"]
        assert web.seen == [] and grpc_srv.seen_metadata == []  # nothing got through
        assert window.composer_panel.status_label.text().startswith("gRPC 14 UNAVAILABLE")
    finally:
        _stop(window, service)


def test_with_mtls_the_app_says_it_has_no_client_certificate(qtbot, tmp_path, upstreams) -> None:
    web, grpc_srv = upstreams
    key = ec.generate_private_key(ec.SECP256R1())
    tls = _pem_files(tmp_path, "self", key, _cert("localhost", key, "localhost", key, False))
    tls = tls.replace("}\n", ", clientCa: self.pem}\n")
    window, service = _start(qtbot, tmp_path, _clusters(web, grpc_srv, "web") + tls)
    try:
        assert service.listener_tls.client_certificate_required
        assert "requires client certificates" in window.statusBar().currentMessage()
        d = _send(qtbot, window, service, "HTTP/1.1", "/m")
        # the server's alert does not surface through the loop's TLS transport: the
        # connection just closes (the note above says why)
        assert d["status"] == 0 and d["error"], d
        assert web.seen == []
    finally:
        _stop(window, service)
