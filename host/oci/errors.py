"""The one error type of :mod:`host.oci`: a message a user can act on, and a kind."""

from __future__ import annotations


class OciError(Exception):
    """A pull or push failed. ``kind`` is one of ``reference``, ``unknown-manifest``,
    ``not-wasm``, ``digest-mismatch``, ``auth``, ``unreachable``, ``registry``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
