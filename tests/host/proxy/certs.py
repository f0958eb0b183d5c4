"""A throwaway self-signed certificate for 127.0.0.1 (openssl), for tests that run a
TLS server on loopback: gRPC clusters (grpcs://) and a TLS listener's ALPN."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """Write a key and a one-day certificate for CN/IP 127.0.0.1 into ``tmp``; their paths."""
    key, crt = tmp / "key.pem", tmp / "crt.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(crt),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return key, crt
