"""TLS for the proxy: the listener's and the upstreams' ``ssl.SSLContext``, the TLS facts
of a connection (``TlsInfo``, what the ``connection.*`` / ``upstream.*`` attributes
read), the listener's handshake counters (Envoy's ``listener.<address>.ssl.*``) and
Envoy's shape of a TLS failure reason.

Contexts: TLS 1.2 at least on both sides. The listener offers ALPN ``h2`` and
``http/1.1`` (``ALPN_H2``; ``host.proxy.listener`` hands an ``h2`` connection to the
HTTP/2 adapter); with a ``clientCa`` it asks for
and verifies a client certificate (mTLS). Upstream contexts always verify the server's
certificate and host name, against the system trust store or the cluster's ``caFile``
(the same rule as ``grpcs://`` callouts in ``grpc_callouts.py``); Envoy without a
``validation_context`` does not verify at all, which we never do.

The listener's files are checked when the config is read (``listener_files_error``):
missing files, PEM that does not parse, an encrypted key, a key that does not match
the certificate each give a clear message, never a crash at start-up.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from host.tls_info import CertFacts, TlsInfo

__all__ = [
    "ALPN_H2",
    "ALPN_HTTP1",
    "CertFacts",
    "ListenerTlsRuntime",
    "TlsInfo",
    "ca_file_error",
    "cert_facts",
    "client_context",
    "listener_files_error",
    "listener_stat_prefix",
    "server_context",
    "tls_failure_reason",
    "tls_info_of",
]

ALPN_HTTP1: tuple[str, ...] = ("http/1.1",)
ALPN_H2: tuple[str, ...] = ("h2", "http/1.1")  # the listener's

# our own certificate, by server context (the ssl module does not expose it per connection)
_LOCAL: weakref.WeakKeyDictionary[ssl.SSLContext, CertFacts] = weakref.WeakKeyDictionary()


# -- certificates as Envoy describes them ------------------------------------------------


def cert_facts(der: bytes) -> CertFacts:
    """Subject (RFC 2253), DNS and URI SANs, SHA-256 and the URL-encoded PEM of one
    DER certificate, as Envoy's ``Ssl::ConnectionInfo`` gives them."""
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    dns: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        pass
    else:
        dns = tuple(san.get_values_for_type(x509.DNSName))
        uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
    pem = ssl.DER_cert_to_PEM_cert(der)
    return CertFacts(
        subject=cert.subject.rfc4514_string(),
        dns_sans=dns,
        uri_sans=uris,
        sha256=hashlib.sha256(der).hexdigest(),
        pem_url_encoded=quote(pem, safe="-_.~"),
    )


def _first_cert_der(path: str) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificates(Path(path).read_bytes())[0].public_bytes(Encoding.DER)


def tls_info_of(transport: asyncio.BaseTransport) -> TlsInfo | None:
    """The TLS facts of a connection whose handshake completed; None for plain TCP."""
    obj = transport.get_extra_info("ssl_object")
    if obj is None:
        return None
    if obj.server_side:
        sni = getattr(obj, "sni", "")
        local = _LOCAL.get(obj.context)
    else:
        sni = obj.server_hostname or ""
        local = None
    der = obj.getpeercert(binary_form=True)
    cipher = obj.cipher()
    return TlsInfo(
        version=obj.version() or "",
        server_name=sni,
        alpn=obj.selected_alpn_protocol() or "",
        cipher=cipher[0] if cipher else "",
        local=local,
        peer=cert_facts(der) if der else None,
    )


def _remember_sni(obj: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
    if server_name:
        obj.sni = server_name


# -- contexts -----------------------------------------------------------------------------


def server_context(
    cert: str, key: str, client_ca: str | None = None, alpn: tuple[str, ...] = ALPN_HTTP1
) -> ssl.SSLContext:
    """The listener's context; raises ``ssl.SSLError``/``OSError`` on bad files (the config
    checks them first, see ``listener_files_error``)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.load_verify_locations(cafile=client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(list(alpn))
    ctx.sni_callback = _remember_sni
    _LOCAL[ctx] = cert_facts(_first_cert_der(cert))
    return ctx


def client_context(
    ca_file: str | None = None, alpn: tuple[str, ...] = ALPN_HTTP1
) -> ssl.SSLContext:
    """An upstream context that verifies the server's certificate and host name: against
    ``ca_file`` when given (instead of the system store, as ``grpcs://``'s ``caFile``),
    else the system trust store."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(list(alpn))
    return ctx


# -- Envoy's failure reason --------------------------------------------------------------

# BoringSSL's packed error codes (ERR_LIB_SSL << 24 | reason) for the reasons one meets
# most, so the text is Envoy's own; other reasons go without the number (Python's ssl
# does not expose OpenSSL's, and OpenSSL's numbers differ from BoringSSL's anyway).
_BORINGSSL_CODES = {
    "CERTIFICATE_VERIFY_FAILED": 268435581,
    "WRONG_VERSION_NUMBER": 268435703,
}


def tls_failure_reason(exc: BaseException) -> str:
    """Envoy's transport failure reason for a failed handshake, e.g.
    ``TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end``
    (newer Envoy's format); "" when ``exc`` is not a TLS error."""
    if not isinstance(exc, ssl.SSLError):
        return ""
    reason = getattr(exc, "reason", None) or type(exc).__name__
    code = _BORINGSSL_CODES.get(reason)
    head = f"{code}:" if code is not None else ""
    return f"TLS_error:|{head}SSL routines:OPENSSL_internal:{reason}:TLS_error_end"


# -- config-time checks of the listener's files ----------------------------------------


def listener_files_error(
    cert: str, key: str, client_ca: str | None = None
) -> list[tuple[str, str]]:
    """Problems with the listener's certificate, key and client CA, as (field, message):
    unreadable files, PEM that does not parse, an encrypted key, a key that is not the
    certificate's. Empty when the files would load."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_pem_private_key,
    )

    problems: list[tuple[str, str]] = []

    def read(field: str, path: str) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except OSError as e:
            problems.append((field, f"cannot read {path!r}: {e.strerror or e}"))
            return None

    cert_obj = None
    data = read("cert", cert)
    if data is not None:
        try:
            cert_obj = x509.load_pem_x509_certificates(data)[0]
        except ValueError:
            problems.append(
                (
                    "cert",
                    f"{cert!r} is not a PEM certificate (expected -----BEGIN CERTIFICATE-----)",
                )
            )
    key_obj = None
    data = read("key", key)
    if data is not None:
        try:
            key_obj = load_pem_private_key(data, password=None)
        except TypeError:
            problems.append(("key", f"{key!r} is encrypted; give an unencrypted PEM key"))
        except Exception:  # ValueError, or a key type the library does not know
            problems.append(
                (
                    "key",
                    f"{key!r} is not a PEM private key (expected -----BEGIN ... PRIVATE KEY-----)",
                )
            )
    if cert_obj is not None and key_obj is not None:
        spki = Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        if cert_obj.public_key().public_bytes(*spki) != key_obj.public_key().public_bytes(*spki):
            problems.append(("key", f"{key!r} is not the private key of the certificate {cert!r}"))
        else:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
            except (ssl.SSLError, OSError) as e:
                problems.append(("cert", f"TLS cannot use {cert!r} with {key!r}: {e}"))
    if client_ca is not None:
        problem = ca_file_error(client_ca)
        if problem:
            problems.append(("clientCa", problem))
    return problems


def ca_file_error(path: str) -> str | None:
    """Why ``path`` cannot serve as a CA bundle (a listener's ``clientCa``, a cluster's
    ``caFile``), or None."""
    from cryptography import x509

    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return f"cannot read {path!r}: {e.strerror or e}"
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        return f"{path!r} is not a PEM certificate bundle (-----BEGIN CERTIFICATE-----)"
    return None


# -- the listener's handshake -------------------------------------------------------------


class _Counters(Protocol):
    """What the listener's counters go to (``stats.StatsStore``; not imported, so the
    config's file checks above do not pull the stats in)."""

    def counter(self, name: str) -> Any: ...


@dataclass
class ListenerTlsRuntime:
    """The listener's TLS as it runs: the context, where the files are, the stats."""

    context: ssl.SSLContext
    cert: str
    key: str
    client_ca: str | None
    demo_ca: str | None  # the demo CA's certificate (spec.tls: demo), for curl --cacert
    stats: _Counters
    stat_prefix: str = "listener.unbound."  # listener.<address>. once bound
    handshake_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        self.context.sslobject_class = _ListenerSSLObject
        _RUNTIMES[self.context] = self

    def count(self, name: str) -> None:
        self.stats.counter(self.stat_prefix + name).inc()

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cert": self.cert, "key": self.key}
        if self.client_ca:
            out["client_ca"] = self.client_ca
        if self.demo_ca:
            out["demo_ca"] = self.demo_ca
        return out


def listener_stat_prefix(host: str, port: int) -> str:
    """Envoy's per-listener stat prefix: ``listener.127.0.0.1_10000.``."""
    return f"listener.{host}_{port}."


class _ListenerSSLObject(ssl.SSLObject):
    """The listener's TLS sessions (``SSLContext.sslobject_class``): asyncio and uvloop
    drive the handshake through ``do_handshake``, so this is where it is counted, on
    either loop, with Envoy's names: ``ssl.handshake``, ``ssl.versions.<version>``,
    ``ssl.ciphers.<cipher>`` and ``ssl.no_certificate`` (no client certificate) when it
    completes; ``ssl.connection_error`` when it fails (the loop then closes the
    connection; nothing else notices), with ``ssl.fail_verify_no_cert`` (a required
    client certificate missing) or ``ssl.fail_verify_error`` (one that did not verify).
    ``sni`` is what the client asked for."""

    sni = ""

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as e:
            runtime = _RUNTIMES.get(self.context)
            if runtime is not None:
                runtime.count("ssl.connection_error")
                why = _VERIFY_FAILURES.get(getattr(e, "reason", None) or "")
                if why:
                    runtime.count(why)
            raise
        runtime = _RUNTIMES.get(self.context)
        if runtime is not None:
            runtime.count("ssl.handshake")
            runtime.count(f"ssl.versions.{self.version()}")
            cipher = self.cipher()
            if cipher:
                runtime.count(f"ssl.ciphers.{cipher[0]}")
            if self.getpeercert(binary_form=True) is None:
                runtime.count("ssl.no_certificate")


# OpenSSL's reasons for a client certificate refused in the handshake -> Envoy's counter
_VERIFY_FAILURES = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "ssl.fail_verify_no_cert",
    "CERTIFICATE_VERIFY_FAILED": "ssl.fail_verify_error",
}


# the running listener of each server context, for the counters
_RUNTIMES: weakref.WeakKeyDictionary[ssl.SSLContext, ListenerTlsRuntime] = (
    weakref.WeakKeyDictionary()
)
