"""Pulling a plugin module with Istio's rules, over a cache keyed by digest.

- ``sha256`` is the *manifest* digest for OCI (Istio's agent compares it with the image
  digest, not the module's bytes); an ``@sha256:`` in the reference must agree with it.
- ``imagePullPolicy``: unset means ``IfNotPresent``, except a ``:latest`` tag means
  ``Always``; a pinned digest (``@sha256:`` or ``sha256``) always uses the cache when
  the image is there. ``Always`` asks the registry for the manifest on every load (our
  stand-in for Istio's "whenever the resource changes"); the layers are downloaded only
  when that digest is not cached.
- The module bytes live in the same directory as downloaded http(s) modules,
  ``<module sha256>.wasm``, so the compiled-module cache (keyed by the module's sha256)
  serves them too; ``oci/manifests/<digest>.json`` maps an image digest to its module and
  ``oci/tags/…`` remembers the digest a tag resolved to.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host.oci.auth import load_credentials
from host.oci.errors import OciError
from host.oci.image import RuntimeConfig, parse_manifest, pick_from_index, unpack
from host.oci.reference import Reference, parse_reference
from host.oci.registry import INDEX_TYPES, Progress, RegistryClient


@dataclass(frozen=True)
class PulledModule:
    """A module from an image: bytes, the image digest (``sha256:hex``) and metadata."""

    wasm: bytes
    ref: Reference
    digest: str
    variant: str
    runtime_config: RuntimeConfig | None
    from_cache: bool

    @property
    def sha256(self) -> str:
        """The WasmPlugin ``sha256`` for this image: the manifest digest's hex."""
        return self.digest.removeprefix("sha256:")

    @property
    def pinned_url(self) -> str:
        """``oci://registry/repo:tag@sha256:…``: the reference pinned to what was pulled."""
        return self.ref.with_digest(self.digest).url()


def effective_policy(ref: Reference, policy: str) -> str:
    """``IfNotPresent`` or ``Always`` for a WasmPlugin ``imagePullPolicy`` value."""
    if policy in ("IfNotPresent", "Always"):
        return policy
    return "Always" if ref.tag == "latest" and not ref.digest else "IfNotPresent"


def pull_module(
    url: str,
    *,
    sha256: str = "",
    pull_policy: str = "UNSPECIFIED_POLICY",
    pull_secret: Path | None = None,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> PulledModule:
    """Fetch the module of image ``url``; raises :class:`OciError` with a clear message."""
    ref = parse_reference(url)
    expected = ""
    if ref.digest:
        expected = ref.digest
        if sha256 and f"sha256:{sha256}" != ref.digest:
            raise OciError(
                "digest-mismatch",
                f"{url}: sha256 {sha256} does not match the digest in the reference",
            )
    elif sha256:
        expected = f"sha256:{sha256}"
    cache = _Cache(cache_dir) if cache_dir is not None else None
    policy = effective_policy(ref, pull_policy)
    if cache is not None:
        known = expected or (cache.tag(ref) if policy == "IfNotPresent" else "")
        hit = cache.get(ref, known) if known else None
        if hit is not None:
            return hit
    creds = load_credentials(ref.registry, pull_secret)
    with RegistryClient(ref, creds) as client:
        manifest = client.get_manifest()
        index_digest = ""
        if manifest.media_type in INDEX_TYPES:
            # a multi-platform index (docker buildx adds one for attestations): the image
            # for linux/amd64, as go-containerregistry picks for Istio; its digest is the
            # image's (a sha256 naming the index itself is accepted too)
            index_digest = manifest.digest
            manifest = client.get_manifest(pick_from_index(manifest.data, str(ref)))
        if expected and expected not in (manifest.digest, index_digest):
            raise OciError(
                "digest-mismatch",
                f"{ref}: image digest is {manifest.digest}, expected {expected} (sha256)",
            )
        if cache is not None:
            hit = cache.get(ref, manifest.digest)
            if hit is not None:
                cache.set_tag(ref, manifest.digest)
                return hit
        doc = parse_manifest(manifest.data, str(ref))
        total = sum(int(ly.get("size", 0)) for ly in doc["layers"] if isinstance(ly, dict))
        done = 0

        def fetch(desc: dict[str, Any]) -> bytes:
            nonlocal done
            digest = str(desc.get("digest", ""))
            base = done

            def step(n: int, _size: int) -> None:
                if progress is not None:
                    progress(base + n, max(total, base + n))

            data = client.get_blob(digest, int(desc.get("size", 0)), step)
            done = base + len(data)
            return data

        unpacked = unpack(doc, manifest.media_type, fetch, str(ref))
    pulled = PulledModule(
        unpacked.wasm, ref, manifest.digest, unpacked.variant, unpacked.runtime_config, False
    )
    if cache is not None:
        cache.put(pulled)
    return pulled


class _Cache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _tag_file(self, ref: Reference) -> Path:
        key = hashlib.sha256(f"{ref.registry}/{ref.repository}:{ref.tag}".encode()).hexdigest()
        return self.root / "oci" / "tags" / key

    def _manifest_file(self, digest: str) -> Path:
        return self.root / "oci" / "manifests" / f"{digest.removeprefix('sha256:')}.json"

    def tag(self, ref: Reference) -> str:
        try:
            return self._tag_file(ref).read_text().strip()
        except OSError:
            return ""

    def set_tag(self, ref: Reference, digest: str) -> None:
        if not ref.digest:
            _write(self._tag_file(ref), digest.encode())

    def get(self, ref: Reference, digest: str) -> PulledModule | None:
        try:
            meta = json.loads(self._manifest_file(digest).read_text())
            wasm = (self.root / f"{meta['wasm_sha256']}.wasm").read_bytes()
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if hashlib.sha256(wasm).hexdigest() != meta["wasm_sha256"]:
            return None
        rc = meta.get("runtime_config")
        runtime_config = (
            RuntimeConfig(
                str(rc.get("type", "")),
                tuple(rc.get("abi_versions", ())),
                tuple(rc.get("root_ids", ())),
            )
            if isinstance(rc, dict)
            else None
        )
        return PulledModule(wasm, ref, digest, str(meta.get("variant", "")), runtime_config, True)

    def put(self, pulled: PulledModule) -> None:
        wasm_sha = hashlib.sha256(pulled.wasm).hexdigest()
        rc = pulled.runtime_config
        meta = {
            "wasm_sha256": wasm_sha,
            "variant": pulled.variant,
            "ref": str(pulled.ref),
            "runtime_config": None
            if rc is None
            else {"type": rc.type, "abi_versions": rc.abi_versions, "root_ids": rc.root_ids},
        }
        _write(self.root / f"{wasm_sha}.wasm", pulled.wasm)
        _write(self._manifest_file(pulled.digest), json.dumps(meta).encode())
        self.set_tag(pulled.ref, pulled.digest)


def _write(path: Path, data: bytes) -> None:
    """Atomic write; a cache that cannot be written is skipped, never an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError:
        pass
