"""Pushing a module as an image Istio accepts (the ``oci`` or ``compat`` variant)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from host.oci.auth import load_credentials
from host.oci.errors import OciError
from host.oci.image import RuntimeConfig, build
from host.oci.reference import Reference, parse_reference
from host.oci.registry import Progress, RegistryClient


@dataclass(frozen=True)
class PushResult:
    """Where the image went: the reference and the manifest digest (``sha256:hex``)."""

    ref: Reference
    digest: str

    @property
    def sha256(self) -> str:
        return self.digest.removeprefix("sha256:")

    def wasm_plugin_snippet(self) -> str:
        """The two WasmPlugin lines to paste: ``url`` (by tag) and ``sha256``."""
        return f"  url: {self.ref.url()}\n  sha256: {self.sha256}\n"


def push_module(
    wasm: bytes,
    ref_text: str,
    *,
    variant: str = "oci",
    runtime_config: RuntimeConfig,
    docker_config: Path | None = None,
    progress: Progress | None = None,
) -> PushResult:
    """Build the image for ``wasm`` and push it to ``ref_text`` (a tag, not a digest)."""
    if wasm[:4] != b"\0asm":
        raise OciError("not-wasm", "not a WebAssembly module (no \\0asm magic)")
    ref = parse_reference(ref_text)
    if ref.digest:
        raise OciError("reference", f"push to a tag, not a digest: {ref_text}")
    image = build(wasm, variant, runtime_config)
    total = sum(len(b) for b in image.blobs)
    creds = load_credentials(ref.registry, docker_config)
    with RegistryClient(ref, creds) as client:
        done = 0
        for blob in image.blobs:
            base = done

            def step(n: int, _size: int, base: int = base) -> None:
                if progress is not None:
                    progress(base + n, total)

            client.push_blob(blob, step)
            done += len(blob)
        digest = client.put_manifest(image.manifest, image.media_type)
    return PushResult(ref, digest)
