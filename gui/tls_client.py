"""The app's side of a TLS listener (``spec.tls``): what the composer, the load
generator and Send again trust when they talk to the proxy over TLS.

The trust anchor is never "no verification": the demo CA (``spec.tls: demo``), or the
configured certificate file itself when its chain ends in a self-signed certificate (a
self-signed certificate, or a chain that carries its root), else the system trust store
(a certificate from a public or locally installed CA). No Qt and no engine here: plain
values in, ``ssl.SSLContext`` out.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

__all__ = ["ListenerTls", "client_context", "trust_anchor"]


@dataclass(frozen=True)
class ListenerTls:
    """The proxy's listener speaks TLS: the file to trust (None: the system store) and
    whether it asks for a client certificate (``clientCa``, which the app has none of)."""

    ca_file: str | None
    client_certificate_required: bool = False

    def context(self, alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
        return client_context(self.ca_file, alpn)


def trust_anchor(cert_file: str, demo_ca: str | None = None) -> str | None:
    """The CA file a client of this listener should trust: the demo CA when there is one,
    the certificate file when its last certificate is self-signed, else None (the
    system store). A file that cannot be read also gives None (the listener loaded it
    at start, so this is a race with an edit, and verification then says what is wrong)."""
    if demo_ca:
        return demo_ca
    try:
        certs = x509.load_pem_x509_certificates(Path(cert_file).read_bytes())
    except (OSError, ValueError):
        return None
    last = certs[-1]
    return cert_file if last.issuer == last.subject else None


def client_context(ca_file: str | None, alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
    """A verifying client context (hostname checked) trusting ``ca_file``, or the system
    store when None, offering ``alpn``."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.set_alpn_protocols(list(alpn))
    return ctx
