"""TLS on the listener and to upstreams, with real clients and servers on 127.0.0.1:
Python ``ssl`` clients, ``curl --cacert`` and ``openssl s_client`` against the listener
(a test CA's certificate, or the demo certificate made in a temporary data directory),
handshake garbage counted and survived, client certificates (``clientCa``), ``https://``
clusters against a real TLS upstream started here (verified with the cluster's
``caFile``; refused with Envoy's 503 when the certificate is not trusted), the TLS
attributes a plugin reads, and the config errors for bad files.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from host.proxy.config import ConfigError, ListenerTls, dump_config, parse_config
from host.proxy.demo_cert import ensure_demo_cert
from host.proxy.server import ProxyServer, StartupError, StartupKind
from host.proxy.tls import cert_facts, tls_failure_reason
from tests.fixtures import wat_modules
from tests.host.proxy.conftest import plugin, wasm_plugin
from tests.need_tool import need_tool

OK, NOT_FOUND = 0, 1

# -- a test PKI ----------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> None:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    usage: Any = ExtendedKeyUsageOID.SERVER_AUTH,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@dataclass
class Pki:
    dir: Path
    ca: Path
    cert: Path  # a server certificate for localhost / 127.0.0.1
    key: Path
    client_cert: Path  # a client certificate with a URI SAN
    client_key: Path
    other_ca: Path  # a CA that signed nothing here


def _pem(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("Test CA", ca_key, _name("Test CA"), ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    server = _cert(
        "localhost",
        key,
        ca.subject,
        ca_key,
        sans=[
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ],
    )
    ckey = ec.generate_private_key(ec.SECP256R1())
    client = _cert(
        "client-a",
        ckey,
        ca.subject,
        ca_key,
        sans=[x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/a")],
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _cert("Other CA", other_key, _name("Other CA"), other_key, ca=True)
    _write_key(d / "server-key.pem", key)
    _write_key(d / "client-key.pem", ckey)
    return Pki(
        d,
        _pem(d / "ca.pem", ca),
        _pem(d / "server.pem", server),
        d / "server-key.pem",
        _pem(d / "client.pem", client),
        d / "client-key.pem",
        _pem(d / "other-ca.pem", other),
    )


# -- helpers ---------------------------------------------------------------------------------


def _proxy_doc(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "wasmdesk.dev/v1alpha1",
        "kind": "Proxy",
        "spec": {"listen": "127.0.0.1:0", "admin": "127.0.0.1:0", **spec},
    }


def _yaml(*docs: dict[str, Any]) -> str:
    return yaml.safe_dump_all(list(docs), sort_keys=False)


def _client_ctx(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


def _tls_get(port: int, ctx: ssl.SSLContext, host: str = "127.0.0.1", path: str = "/x") -> Any:
    with httpx.Client(verify=ctx, trust_env=False, timeout=10) as c:
        return c.get(f"https://{host}:{port}{path}")


def _raw_tls(port: int, ctx: ssl.SSLContext, host: str = "localhost") -> tuple[str, bytes]:
    """One request over a Python ssl socket: (the TLS version, the response's bytes)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with raw, ctx.wrap_socket(raw, server_hostname=host) as s:
        s.sendall(f"GET /raw HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return str(s.version()), data


def _listener_stats(h: Any) -> dict[str, int]:
    prefix = f"listener.127.0.0.1_{h.port}."
    return {k[len(prefix) :]: v for k, v in h.stats().items() if k.startswith(prefix)}


# -- the listener ----------------------------------------------------------------------------


def test_a_python_ssl_client_gets_tls13_and_the_request_goes_on_as_https(start_proxy, pki):
    h = start_proxy(_yaml(_proxy_doc(tls={"cert": str(pki.cert), "key": str(pki.key)})))
    r = _tls_get(h.port, _client_ctx(pki.ca))
    assert r.status_code == 200
    echoed = r.json()
    # Envoy sets :scheme and x-forwarded-proto from the TLS connection
    assert echoed["headers"]["x-forwarded-proto"] == "https"
    version, data = _raw_tls(h.port, _client_ctx(pki.ca))
    assert version == "TLSv1.3" and data.startswith(b"HTTP/1.1 200 ")
    tls12 = _client_ctx(pki.ca)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    version, data = _raw_tls(h.port, tls12)
    assert version == "TLSv1.2" and data.startswith(b"HTTP/1.1 200 ")
    # ALPN: the listener serves h2 and http/1.1; a client offering h2 gets it, one
    # offering only http/1.1 gets that
    alpn = _client_ctx(pki.ca)
    alpn.set_alpn_protocols(["h2", "http/1.1"])
    raw = socket.create_connection(("127.0.0.1", h.port), timeout=10)
    with raw, alpn.wrap_socket(raw, server_hostname="localhost") as s:
        assert s.selected_alpn_protocol() == "h2"
    alpn1 = _client_ctx(pki.ca)
    alpn1.set_alpn_protocols(["http/1.1"])
    raw = socket.create_connection(("127.0.0.1", h.port), timeout=10)
    with raw, alpn1.wrap_socket(raw, server_hostname="localhost") as s:
        assert s.selected_alpn_protocol() == "http/1.1"
    stats = _listener_stats(h)
    assert stats["ssl.handshake"] == 5
    assert stats["ssl.versions.TLSv1.3"] == 4 and stats["ssl.versions.TLSv1.2"] == 1
    assert stats.get("ssl.connection_error", 0) == 0
    assert stats["ssl.no_certificate"] == 5  # no client certificates asked for
    assert sum(v for k, v in stats.items() if k.startswith("ssl.ciphers.")) == 5


def test_handshake_garbage_is_counted_and_the_listener_keeps_serving(start_proxy, pki):
    h = start_proxy(_yaml(_proxy_doc(tls={"cert": str(pki.cert), "key": str(pki.key)})))
    # plain HTTP on the TLS port, random bytes, a client that does not trust our CA
    for junk in (b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", os.urandom(300)):
        with socket.create_connection(("127.0.0.1", h.port), timeout=5) as s:
            s.sendall(junk)
            s.settimeout(5)
            try:
                while s.recv(4096):
                    pass
            except (ConnectionResetError, TimeoutError):
                pass
    with pytest.raises(httpx.ConnectError):
        _tls_get(h.port, _client_ctx(pki.other_ca))
    # a connection that closes mid-handshake
    with socket.create_connection(("127.0.0.1", h.port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x00")
    h.wait_for(lambda: _listener_stats(h).get("ssl.connection_error", 0) >= 3, what="errors")
    assert _tls_get(h.port, _client_ctx(pki.ca)).status_code == 200
    stats = _listener_stats(h)
    assert stats["ssl.handshake"] == 1
    assert h.sync(lambda: h.server.running)


def test_clients_must_present_a_certificate_the_client_ca_signed(start_proxy, pki, wasm_file):
    module = wasm_file(wat_modules.make_property_probe_module(), "property_probe")
    tokens = [
        "q~connection/mtls",
        "q~connection/subject_peer_certificate",
        "q~connection/uri_san_peer_certificate",
        "q~connection/sha256_peer_certificate_digest",
        "q~connection/dns_san_peer_certificate",
        "q~connection/peer_certificate",
    ]
    probe = wasm_plugin("probe", f"file://{module}", root_id="probe", config={"#": tokens})
    tls = {"cert": str(pki.cert), "key": str(pki.key), "clientCa": str(pki.ca)}
    h = start_proxy(_yaml(_proxy_doc(tls=tls), probe))
    with pytest.raises(httpx.HTTPError):  # no client certificate: the handshake fails
        _tls_get(h.port, _client_ctx(pki.ca))
    r = _tls_get(h.port, _client_ctx(pki.ca, pki.client_cert, pki.client_key))
    assert r.status_code == 200
    got = _probe_answers(h, "probe", len(tokens))
    der = x509.load_pem_x509_certificate(pki.client_cert.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    assert got[0] == (OK, b"\x01")
    assert got[1] == (OK, b"CN=client-a")
    assert got[2] == (OK, b"spiffe://cluster.local/ns/default/sa/a")
    assert got[3] == (OK, hashlib.sha256(der).hexdigest().encode())
    assert got[4][0] == NOT_FOUND  # no DNS SAN in the client's certificate
    assert got[5][0] == OK and got[5][1].startswith(b"-----BEGIN%20CERTIFICATE-----%0A")
    # a client certificate another CA signed does not verify either
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _cert(
        "mallory", other_key, _name("Other"), other_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    _pem(pki.dir / "mallory.pem", other)
    _write_key(pki.dir / "mallory-key.pem", other_key)
    with pytest.raises(httpx.HTTPError):
        _tls_get(h.port, _client_ctx(pki.ca, pki.dir / "mallory.pem", pki.dir / "mallory-key.pem"))
    h.wait_for(lambda: _listener_stats(h).get("ssl.fail_verify_error") == 1, what="counted")
    stats = _listener_stats(h)
    assert stats["ssl.connection_error"] == 2
    assert stats["ssl.fail_verify_no_cert"] == 1
    assert stats["ssl.handshake"] == 1
    assert stats.get("ssl.no_certificate", 0) == 0


def _probe_answers(h: Any, root_id: str, n: int) -> list[tuple[int, bytes]]:
    """What the property probe logged for its first ``n`` tokens (status, value)."""

    def lines() -> list[str]:
        return [r.message for _, r in h.server.logs if r.root_id == root_id]

    h.wait_for(lambda: len(lines()) >= n, what="probe lines")
    out = []
    for line in lines()[:n]:
        status, _, hexval = line[4:].partition(":")
        out.append((int(status), bytes.fromhex(hexval)))
    return out


def test_a_plugin_reads_the_listeners_tls_attributes(start_proxy, pki, wasm_file):
    module = wasm_file(wat_modules.make_property_probe_module(), "property_probe")
    tokens = [
        "q~connection/tls_version",
        "q~connection/requested_server_name",
        "q~connection/mtls",
        "q~connection/subject_local_certificate",
        "q~connection/dns_san_local_certificate",
        "q~connection/subject_peer_certificate",
        "q~connection/sha256_peer_certificate_digest",
        "q~request/scheme",
        "q~upstream/tls_version",
    ]
    probe = wasm_plugin("probe", f"file://{module}", root_id="probe", config={"#": tokens})
    h = start_proxy(_yaml(_proxy_doc(tls={"cert": str(pki.cert), "key": str(pki.key)}), probe))
    assert _tls_get(h.port, _client_ctx(pki.ca), host="localhost").status_code == 200
    assert _probe_answers(h, "probe", len(tokens)) == [
        (OK, b"TLSv1.3"),
        (OK, b"localhost"),  # the SNI the client sent
        (OK, b"\x00"),  # no client certificate
        (OK, b"CN=localhost"),
        (OK, b"localhost"),
        (OK, b""),  # Envoy: the subject is "" without a peer certificate
        (NOT_FOUND, b""),
        (OK, b"https"),
        (NOT_FOUND, b""),  # the echo upstream is plain HTTP
    ]


def test_curl_and_openssl_trust_the_demo_certificate_by_its_ca(start_proxy, tmp_path, monkeypatch):
    need_tool("curl")
    need_tool("openssl")
    monkeypatch.setenv("WASMDESK_DATA_DIR", str(tmp_path / "data"))
    h = start_proxy(_yaml(_proxy_doc(tls="demo")))
    ca = tmp_path / "data" / "tls" / "demo-ca.pem"
    assert ca.is_file()
    info = h.admin("GET", "/server_info").json()
    assert info["listener_tls"]["demo_ca"] == str(ca)
    for host in ("127.0.0.1", "localhost"):
        out = subprocess.run(
            ["curl", "-sS", "--http1.1", "--cacert", str(ca), f"https://{host}:{h.port}/hello"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["path"] == "/hello"
    s_client = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{h.port}",
            "-servername",
            "localhost",
            "-CAfile",
            str(ca),
            "-verify_return_error",
            "-ign_eof",
        ],
        input="GET /s HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert "Verify return code: 0 (ok)" in s_client.stdout, s_client.stdout + s_client.stderr
    assert "HTTP/1.1 200" in s_client.stdout
    # without the CA, curl refuses the certificate
    bad = subprocess.run(
        ["curl", "-sS", f"https://127.0.0.1:{h.port}/"], capture_output=True, timeout=20
    )
    assert bad.returncode == 60
    assert _listener_stats(h)["ssl.handshake"] == 3


def test_the_demo_certificate_is_made_once_and_reused(tmp_path):
    first = ensure_demo_cert(tmp_path)
    assert first.created
    pems = {p: Path(p).read_bytes() for p in (first.ca, first.cert, first.key)}
    again = ensure_demo_cert(tmp_path)
    assert not again.created
    assert {p: Path(p).read_bytes() for p in (again.ca, again.cert, again.key)} == pems
    assert os.stat(first.key).st_mode & 0o777 == 0o600
    leaf = x509.load_pem_x509_certificate(pems[first.cert])
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc > dt.timedelta(days=364)
    facts = cert_facts(leaf.public_bytes(serialization.Encoding.DER))
    assert facts.dns_sans == ("localhost",)
    # near its end (a week before), a broken file, a key of another set: made anew
    later = ensure_demo_cert(tmp_path, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=360))
    assert later.created and Path(later.ca).read_bytes() != pems[first.ca]
    Path(later.cert).write_text("not a certificate")
    assert ensure_demo_cert(tmp_path).created
    other = ensure_demo_cert(tmp_path / "other")
    shutil.copy(other.key, later.key)
    assert ensure_demo_cert(tmp_path).created


def test_a_restarted_proxy_reuses_the_demo_certificate(start_proxy, tmp_path, monkeypatch):
    monkeypatch.setenv("WASMDESK_DATA_DIR", str(tmp_path))
    h1 = start_proxy(_yaml(_proxy_doc(tls="demo")))
    ca = tmp_path / "tls" / "demo-ca.pem"
    before = ca.read_bytes()
    h1.stop()
    h2 = start_proxy(_yaml(_proxy_doc(tls="demo")))
    assert ca.read_bytes() == before
    assert _tls_get(h2.port, _client_ctx(ca)).status_code == 200


# -- config -----------------------------------------------------------------------------------


def _tls_error(tmp_path: Path, tls: Any) -> str:
    text = _yaml(_proxy_doc(tls=tls))
    with pytest.raises(ConfigError) as e:
        parse_config(text, str(tmp_path / "wasmdesk.yaml"), str(tmp_path))
    return str(e.value)


def test_bad_listener_tls_files_are_config_errors_naming_the_field(tmp_path, pki):
    (tmp_path / "junk.pem").write_text("hello\n")
    enc_key = ec.generate_private_key(ec.SECP256R1())
    _write_key(tmp_path / "enc-key.pem", enc_key, password=b"secret")
    cert, key = str(pki.cert), str(pki.key)
    cases = [
        ({"cert": "missing.pem", "key": key}, "spec.tls.cert: cannot read"),
        ({"cert": "junk.pem", "key": key}, "spec.tls.cert: ", "is not a PEM certificate"),
        ({"cert": cert, "key": "junk.pem"}, "spec.tls.key: ", "is not a PEM private key"),
        ({"cert": cert, "key": str(pki.client_key)}, "is not the private key of the certificate"),
        ({"cert": cert, "key": "enc-key.pem"}, "spec.tls.key: ", "is encrypted"),
        ({"cert": cert}, "spec.tls.key: required field is missing"),
        ({"cert": cert, "key": key, "clientCa": "junk.pem"}, "spec.tls.clientCa: "),
        ({"cert": cert, "key": key, "ca": "x"}, "spec.tls.ca: unknown field"),
        ("yes", "spec.tls: expected demo or a mapping"),
    ]
    for tls, *needles in cases:
        message = _tls_error(tmp_path, tls)
        for needle in needles:
            assert needle in message, (tls, message)


def test_listener_tls_parses_relative_to_the_config_and_exports_back(tmp_path, pki):
    shutil.copy(pki.cert, tmp_path / "c.pem")
    shutil.copy(pki.key, tmp_path / "k.pem")
    text = _yaml(_proxy_doc(tls={"cert": "c.pem", "key": "k.pem"}))
    cfg = parse_config(text, str(tmp_path / "w.yaml"), str(tmp_path))
    assert cfg.tls == ListenerTls(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    demo = parse_config(_yaml(_proxy_doc(tls="demo")), "<t>", str(tmp_path))
    assert demo.tls == ListenerTls(demo=True)
    assert "tls: demo" in dump_config(demo)
    assert parse_config(dump_config(demo), "<t>", str(tmp_path)).tls == demo.tls


# -- upstreams --------------------------------------------------------------------------------


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "headers": dict(self.headers.items())}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@dataclass
class TlsUpstream:
    port: int
    sni: list[str]


@pytest.fixture
def tls_upstream(pki: Pki) -> Iterator[TlsUpstream]:
    """A real HTTPS server on 127.0.0.1 with the test CA's certificate; records the SNI."""
    seen: list[str] = []
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki.cert), str(pki.key))
    ctx.sni_callback = lambda _o, name, _c: seen.append(name or "")  # type: ignore[assignment]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield TlsUpstream(httpd.server_address[1], seen)
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(5)


def test_an_https_cluster_is_verified_with_its_ca_file_and_gets_sni(
    start_proxy, pki, tls_upstream, wasm_file
):
    module = wasm_file(wat_modules.make_property_probe_module(), "property_probe")
    tokens = [
        "s~upstream/tls_version",
        "s~upstream/subject_peer_certificate",
        "s~upstream/dns_san_peer_certificate",
        "s~connection/tls_version",
    ]
    probe = wasm_plugin("probe", f"file://{module}", root_id="probe", config={"#": tokens})
    url = f"https://localhost:{tls_upstream.port}"
    proxy = _proxy_doc(
        clusters=[{"name": "secure", "url": url, "caFile": str(pki.ca)}], defaultCluster="secure"
    )
    h = start_proxy(_yaml(proxy, probe))
    with h.client() as c:
        r = c.get("/through")
    assert r.status_code == 200, r.text
    assert r.json()["path"] == "/through"
    assert tls_upstream.sni == ["localhost"]
    assert h.stats()["cluster.secure.ssl.handshake"] == 1
    assert _probe_answers(h, "probe", len(tokens)) == [
        (OK, b"TLSv1.3"),
        (OK, b"CN=localhost"),
        (OK, b"localhost"),
        (NOT_FOUND, b""),  # the client came over plain HTTP
    ]


def test_an_untrusted_upstream_certificate_is_a_503_with_envoys_details(
    start_proxy, pki, tls_upstream, wasm_file
):
    module = wasm_file(wat_modules.make_property_probe_module(), "property_probe")
    tokens = ["l~response/code_details", "l~upstream/transport_failure_reason", "l~response/flags"]
    probe = wasm_plugin("probe", f"file://{module}", root_id="probe", config={"#": tokens})
    url = f"https://127.0.0.1:{tls_upstream.port}"
    # the system trust store does not know the test CA; another CA file does not either
    proxy = _proxy_doc(
        clusters=[
            {"name": "system", "url": url},
            {"name": "other", "url": url, "caFile": str(pki.other_ca)},
        ],
        routes=[{"name": "o", "match": {"prefix": "/other"}, "cluster": "other"}],
        defaultCluster="system",
    )
    h = start_proxy(_yaml(proxy, probe))
    reason = (
        "TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end"
    )
    with h.client() as c:
        for path in ("/", "/other"):
            r = c.get(path)
            assert r.status_code == 503
            assert r.text == (
                "upstream connect error or disconnect/reset before headers. reset reason: "
                f"connection failure, transport failure reason: {reason}\n"
            )
    got = _probe_answers(h, "probe", len(tokens))
    assert got == [
        (
            OK,
            b"upstream_reset_before_response_started{connection_failure|"
            + reason.replace(" ", "_").encode()
            + b"}",
        ),
        (OK, reason.encode()),
        (OK, (0x20).to_bytes(8, "little")),  # UF
    ]
    stats = h.stats()
    assert stats["cluster.system.upstream_rq_error"] == 1
    assert stats["cluster.system.ssl.connection_error"] == 1
    assert stats["cluster.other.ssl.fail_verify_error"] == 1


def test_tls_failure_reason_has_envoys_shape():
    err = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    err.reason = "WRONG_VERSION_NUMBER"  # type: ignore[misc]
    assert tls_failure_reason(err) == (
        "TLS_error:|268435703:SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER:TLS_error_end"
    )
    other = ssl.SSLError(1, "x")
    other.reason = "TLSV1_ALERT_PROTOCOL_VERSION"  # type: ignore[misc]
    assert tls_failure_reason(other) == (
        "TLS_error:|SSL routines:OPENSSL_internal:TLSV1_ALERT_PROTOCOL_VERSION:TLS_error_end"
    )
    assert tls_failure_reason(ConnectionResetError()) == ""


def test_http_call_to_an_https_cluster_trusts_its_ca_file(start_proxy, pki, tls_upstream):
    url = f"https://localhost:{tls_upstream.port}"
    conf = {"cluster": "auth", "path": "/check", "authority": "auth.local", "timeout_ms": 3000}
    callout = wasm_plugin("callout", plugin("callout"), root_id="callout", config=conf)
    proxy = _proxy_doc(clusters=[{"name": "auth", "url": url, "caFile": str(pki.ca)}])
    h = start_proxy(_yaml(proxy, callout))
    with h.client() as c:
        assert c.get("/api", headers={"authorization": "Bearer t"}).status_code == 200
    assert h.stats()["cluster.auth.callout_success"] == 1
    # the same cluster without its caFile: the system store refuses the test CA
    h.apply(
        parse_config(
            _yaml(_proxy_doc(clusters=[{"name": "auth", "url": url}]), callout), "<t>", "/"
        )
    )
    with h.client() as c:
        assert c.get("/api", headers={"authorization": "Bearer t"}).status_code != 200
    assert h.stats()["cluster.auth.callout_failure"] == 1


def test_serve_prints_the_demo_ca_and_serves_tls(tmp_path):
    """``wasmdesk serve`` (uvloop's event loop) with ``tls: demo``: the banner says https
    and names the CA; a client trusting it is served and the handshake is counted."""
    wasmdesk = Path(os.environ.get("VIRTUAL_ENV", "")) / "bin" / "wasmdesk"
    if not wasmdesk.exists():
        import sys

        wasmdesk = Path(sys.executable).parent / "wasmdesk"
    cfg = tmp_path / "w.yaml"
    cfg.write_text(_yaml(_proxy_doc(tls="demo")))
    env = dict(os.environ, WASMDESK_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.Popen(
        [str(wasmdesk), "serve", "--config", str(cfg), "--no-watch"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        banner = proc.stderr.readline()
        hint = proc.stderr.readline()
        m = re.search(
            r"proxy on https://127\.0\.0\.1:(\d+)\s+admin on http://127\.0\.0\.1:(\d+)", banner
        )
        assert m, banner + hint
        ca = tmp_path / "data" / "tls" / "demo-ca.pem"
        assert f"curl --cacert {ca} https://127.0.0.1:{m.group(1)}/" in hint
        version, data = _raw_tls(int(m.group(1)), _client_ctx(ca))
        assert version == "TLSv1.3" and data.startswith(b"HTTP/1.1 200 ")
        with socket.create_connection(("127.0.0.1", int(m.group(1))), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")  # plain HTTP: refused
            s.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                assert s.recv(100) == b""
        admin = f"http://127.0.0.1:{m.group(2)}"
        with httpx.Client(base_url=admin, trust_env=False, timeout=10) as c:
            stats = c.get("/stats?format=json").json()["stats"]
            by_name = {x["name"]: x["value"] for x in stats if "name" in x}
            prefix = f"listener.127.0.0.1_{m.group(1)}."
            assert by_name[prefix + "ssl.handshake"] == 1
            assert by_name[prefix + "ssl.connection_error"] == 1
            quit_ = c.post("/quitquitquit", json={})
            assert quit_.status_code == 200
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


def test_listener_files_gone_at_start_are_a_tls_startup_error(pki, tmp_path):
    shutil.copy(pki.cert, tmp_path / "c.pem")
    shutil.copy(pki.key, tmp_path / "k.pem")
    text = _yaml(_proxy_doc(tls={"cert": "c.pem", "key": "k.pem"}))
    cfg = parse_config(text, str(tmp_path / "w.yaml"), str(tmp_path))
    (tmp_path / "k.pem").unlink()  # between reading the config and starting

    async def start() -> None:
        server = ProxyServer(cfg)
        await server.start()

    with pytest.raises(StartupError) as e:
        asyncio.run(start())
    assert e.value.kind is StartupKind.TLS
    assert "listener TLS: cannot use" in str(e.value)


def test_an_https_cluster_on_a_plain_http_port_is_a_503_wrong_version_number(start_proxy, upstream):
    url = upstream.url.replace("http://", "https://")
    h = start_proxy(_yaml(_proxy_doc(clusters=[{"name": "p", "url": url}], defaultCluster="p")))
    with h.client() as c:
        r = c.get("/")
    assert r.status_code == 503
    assert r.text.endswith(
        "transport failure reason: TLS_error:|268435703:SSL routines:OPENSSL_internal:"
        "WRONG_VERSION_NUMBER:TLS_error_end\n"
    )
    assert h.stats()["cluster.p.upstream_rq_error"] == 1


def test_a_reload_keeps_an_unchanged_https_clusters_pooled_connections(
    start_proxy, pki, tls_upstream
):
    url = f"https://localhost:{tls_upstream.port}"
    doc = _proxy_doc(
        clusters=[{"name": "s", "url": url, "caFile": str(pki.ca)}], defaultCluster="s"
    )
    h = start_proxy(_yaml(doc))
    with h.client() as c:
        assert c.get("/1").status_code == 200
    before = h.sync(lambda: h.server.clusters["s"])
    h.apply(parse_config(_yaml(doc), "<t>", "/"))
    assert h.sync(lambda: h.server.clusters["s"]) is before
    doc["spec"]["clusters"][0].pop("caFile")  # the trust changed: a new cluster
    h.apply(parse_config(_yaml(doc), "<t>", "/"))
    assert h.sync(lambda: h.server.clusters["s"]) is not before
    with h.client() as c:
        assert c.get("/2").status_code == 503


def test_a_data_directory_that_cannot_hold_the_demo_certificate_is_a_tls_startup_error(
    tmp_path, monkeypatch
):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("WASMDESK_DATA_DIR", str(blocker))
    cfg = parse_config(_yaml(_proxy_doc(tls="demo")), "<t>", str(tmp_path))

    async def start() -> None:
        await ProxyServer(cfg).start()

    with pytest.raises(StartupError) as e:
        asyncio.run(start())
    assert e.value.kind is StartupKind.TLS
    assert "the demo certificate" in str(e.value)
