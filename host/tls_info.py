"""What a TLS connection is, as plain values: the facts Envoy's ``connection.*`` and
``upstream.*`` TLS attributes report (ABI doc §5.4). The proxy fills them in when a
connection's handshake completes (``host.proxy.tls.tls_info_of``); the Wasm host's
attribute table reads them (``host.wasm.attributes``). Shared by both, like
``host.headers``, so ``host.wasm`` never imports ``host.proxy``. No I/O, no ssl.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CertFacts", "TlsInfo"]


@dataclass(frozen=True, slots=True)
class CertFacts:
    """One certificate as Envoy's ``Ssl::ConnectionInfo`` describes it."""

    subject: str = ""  # RFC 2253 (OpenSSL's XN_FLAG_RFC2253, as Envoy), e.g. "CN=localhost"
    dns_sans: tuple[str, ...] = ()
    uri_sans: tuple[str, ...] = ()
    sha256: str = ""  # hex digest of the DER certificate, lower case
    pem_url_encoded: str = ""  # Envoy's urlEncodedPemEncodedPeerCertificate()


@dataclass(frozen=True, slots=True)
class TlsInfo:
    """One side's TLS session: the protocol version, the SNI the client asked for, the
    ALPN protocol chosen, our certificate and the peer's (None: none presented)."""

    version: str  # "TLSv1.2", "TLSv1.3" (OpenSSL's SSL_get_version, as Envoy's tlsVersion())
    server_name: str = ""  # SNI: on a listener what the client sent, upstream what we sent
    alpn: str = ""  # the negotiated ALPN protocol ("h2", "http/1.1"), "" when none
    cipher: str = ""
    local: CertFacts | None = None
    peer: CertFacts | None = None

    @property
    def mtls(self) -> bool:
        """Envoy's ``connection.mtls``: TLS and the peer presented a certificate."""
        return self.peer is not None
