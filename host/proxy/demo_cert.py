"""The one-step local certificate for ``spec.tls: demo``: a private CA and a server
certificate for ``localhost``, ``127.0.0.1`` and ``::1``, made once with ``cryptography``
into the app's data directory (``<data dir>/tls/``) and reused on later runs, so a
client trusts it with ``curl --cacert <data dir>/tls/demo-ca.pem``.

The CA is limited by name constraints to the loopback DNS names (not the addresses:
BoringSSL, which grpcio and Envoy use, refuses IP-address constraints), and its private
key is never written down: once the server certificate nears its end (a year), both are made
anew and the new CA must be trusted again. A set whose files are missing, unreadable,
expired or do not belong together is made anew too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from host.datadir import user_data_dir

__all__ = ["DemoCert", "demo_cert_dir", "ensure_demo_cert"]

VALID_DAYS = 365
RENEW_BEFORE = dt.timedelta(days=7)
_NAMES = ("localhost",)
_IPS = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class DemoCert:
    """Where the demo set is: the CA certificate (give it to clients), the server's
    certificate and key (the listener's). ``created``: made by this call."""

    ca: str
    cert: str
    key: str
    created: bool = False


def demo_cert_dir() -> Path:
    return user_data_dir() / "tls"


def ensure_demo_cert(directory: Path | None = None, now: dt.datetime | None = None) -> DemoCert:
    """The demo certificate set in ``directory`` (default ``<data dir>/tls``), made if
    it is missing or no longer good. Raises ``OSError`` when the directory cannot be
    written."""
    d = directory if directory is not None else demo_cert_dir()
    now = now or dt.datetime.now(dt.UTC)
    ca, cert, key = d / "demo-ca.pem", d / "demo-server.pem", d / "demo-server-key.pem"
    if _still_good(ca, cert, key, now):
        return DemoCert(str(ca), str(cert), str(key))
    d.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(d, 0o700)
    ca_pem, cert_pem, key_pem = _make(now)
    _write(key, key_pem, 0o600)
    _write(cert, cert_pem, 0o644)
    _write(ca, ca_pem, 0o644)
    return DemoCert(str(ca), str(cert), str(key), created=True)


def _still_good(ca: Path, cert: Path, key: Path, now: dt.datetime) -> bool:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_pem_private_key,
    )

    try:
        ca_cert = x509.load_pem_x509_certificate(ca.read_bytes())
        leaf = x509.load_pem_x509_certificate(cert.read_bytes())
        private = load_pem_private_key(key.read_bytes(), password=None)
        leaf.verify_directly_issued_by(ca_cert)
    except Exception:  # unreadable, not PEM, encrypted, not issued by this CA
        return False
    spki = Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(*spki) != private.public_key().public_bytes(*spki):
        return False
    ends = min(leaf.not_valid_after_utc, ca_cert.not_valid_after_utc)
    return bool(leaf.not_valid_before_utc <= now and now + RENEW_BEFORE < ends)


def _make(now: dt.datetime) -> tuple[bytes, bytes, bytes]:
    """(CA certificate, server certificate, server key) as PEM."""
    import socket

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    start = now - dt.timedelta(hours=1)
    end = now + dt.timedelta(days=VALID_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Wasmdesk"),
            x509.NameAttribute(
                NameOID.COMMON_NAME, f"Wasmdesk local demo CA ({socket.gethostname()[:32]})"
            ),
        ]
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            # DNS names only: BoringSSL (grpcio's TLS, Envoy's) refuses a CA with IP-address
            # constraints ("unsupported name constraint type"); the key is never stored,
            # so nothing else can be signed with it anyway
            x509.NameConstraints(
                permitted_subtrees=[*(x509.DNSName(n) for n in _NAMES)],
                excluded_subtrees=None,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Wasmdesk"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
                ]
            )
        )
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    *(x509.DNSName(n) for n in _NAMES),
                    *(x509.IPAddress(ipaddress.ip_address(a)) for a in _IPS),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    return ca_cert.public_bytes(Encoding.PEM), leaf.public_bytes(Encoding.PEM), key_pem


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically: a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)
