"""Image references as Istio reads a WasmPlugin ``url``: ``oci://REF`` or a bare
``host[:port]/repo[:tag|@sha256:hex]`` (go-containerregistry's ``name.ParseReference``
rules: a first component with a dot, a colon or ``localhost`` is the registry, otherwise
Docker Hub with ``library/`` for one-component names; no tag means ``latest``)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from host.oci.errors import OciError

DOCKER_HUB = "index.docker.io"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


@dataclass(frozen=True)
class Reference:
    """A parsed image reference. ``digest`` is ``sha256:hex`` or empty."""

    registry: str
    repository: str
    tag: str = "latest"
    digest: str = ""

    @property
    def pinned(self) -> bool:
        return bool(self.digest)

    @property
    def loopback(self) -> bool:
        """The registry is on this machine: cleartext HTTP is allowed (and tried)."""
        host = (
            self.registry.rsplit(":", 1)[0]
            if not self.registry.startswith("[")
            else (self.registry[1:].split("]", 1)[0])
        )
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @property
    def identifier(self) -> str:
        """What the manifest endpoint is asked for: the digest if pinned, else the tag."""
        return self.digest or self.tag

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        s = f"{self.registry}/{self.repository}"
        if self.tag and not (self.digest and self.tag == "latest"):
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s

    def url(self) -> str:
        """The WasmPlugin ``url`` for this reference (``oci://…``)."""
        return f"oci://{self}"


def parse_reference(text: str) -> Reference:
    """Parse ``oci://REF`` or a bare reference; :class:`OciError` (kind ``reference``)."""
    ref = text.strip()
    if ref.startswith("oci://"):
        ref = ref[len("oci://") :]
    if not ref or any(c.isspace() for c in ref):
        raise OciError("reference", f"invalid image reference {text!r}")
    digest = ""
    if "@" in ref:
        ref, digest = ref.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            raise OciError(
                "reference", f"invalid digest in {text!r}: expected @sha256: and 64 hex digits"
            )
    registry = DOCKER_HUB
    first, sep, rest = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, ref = first, rest
    tag = "latest"
    last_slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > last_slash:
        ref, tag = ref[:colon], ref[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise OciError("reference", f"invalid tag {tag!r} in {text!r}")
    if registry == DOCKER_HUB and "/" not in ref:
        ref = f"library/{ref}"
    if not _REPO.fullmatch(ref):
        raise OciError(
            "reference",
            f"invalid repository {ref!r} in {text!r} (lower-case letters, digits, . _ - /)",
        )
    return Reference(registry, ref, tag, digest)
