"""The Wasm image variants Istio accepts, unpacked in Istio's order and built for push.

Istio (``pkg/wasm/imagefetcher.go``) reads a Docker-schema-2 manifest as a Docker image
whose *last* layer (``application/vnd.docker.image.rootfs.diff.tar.gzip``) holds
``plugin.wasm``; otherwise it tries the *compat* variant (last layer
``application/vnd.oci.image.layer.v1.tar+gzip`` holding ``plugin.wasm``, optional
``runtime-config.json``), then the *oci* variant (exactly two layers, one of them
``application/vnd.module.wasm.content.layer.v1+wasm``, the raw module; the config blob
``application/vnd.module.wasm.config.v1+json`` is the runtime config).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from host.oci.errors import OciError

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
WASM_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
VARIANT_ANNOTATION = "module.wasm.image/variant"
PLUGIN_FILE = "plugin.wasm"
RUNTIME_CONFIG_FILE = "runtime-config.json"

BlobFetcher = Callable[[dict[str, Any]], bytes]  # a layer/config descriptor -> its bytes


@dataclass(frozen=True)
class RuntimeConfig:
    """``runtime-config.json`` (or the oci variant's config blob): ABI and root ids."""

    type: str = ""
    abi_versions: tuple[str, ...] = ()
    root_ids: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: bytes) -> RuntimeConfig | None:
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(doc, dict):
            return None
        # wasme wrote ``abi_version``/``root_ids`` (and nested under ``config``);
        # the spec names ``abiVersions``/``rootIds``. Accept each.
        inner = doc.get("config")
        merged: dict[str, Any] = {**(inner if isinstance(inner, dict) else {}), **doc}
        abis = merged.get("abiVersions") or merged.get("abi_versions") or merged.get("abi_version")
        roots = merged.get("rootIds") or merged.get("root_ids") or []
        if isinstance(abis, str):
            abis = [abis]
        return cls(
            type=str(merged.get("type", "")),
            abi_versions=tuple(str(a) for a in abis or [] if a),
            root_ids=tuple(str(r) for r in roots if isinstance(r, str | int)),
        )

    def to_json(self) -> bytes:
        doc = {
            "type": self.type or "envoy_proxy",
            "abiVersions": list(self.abi_versions),
            "rootIds": list(self.root_ids),
        }
        return json.dumps(doc, sort_keys=True).encode()


@dataclass
class Unpacked:
    """What an image held: the module, its variant and the runtime config, if any."""

    wasm: bytes
    variant: str  # docker | compat | oci
    runtime_config: RuntimeConfig | None = None
    annotations: dict[str, str] = field(default_factory=dict)


def parse_manifest(data: bytes, ref: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise OciError("not-wasm", f"{ref}: the manifest is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("layers"), list):
        raise OciError("not-wasm", f"{ref}: not an image manifest (no layers)")
    if doc.get("schemaVersion") != 2:
        raise OciError("not-wasm", f"{ref}: manifest schemaVersion must be 2")
    return doc


def pick_from_index(data: bytes, ref: str) -> str:
    """The digest of the image an index holds for linux/amd64 (go-containerregistry's
    default platform, so Istio's), else for wasm, else its only image; attestation
    manifests are not images."""
    try:
        doc = json.loads(data)
        entries = [m for m in doc["manifests"] if isinstance(m, dict) and m.get("digest")]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise OciError("not-wasm", f"{ref}: malformed image index") from None
    images = [
        m
        for m in entries
        if (m.get("annotations") or {}).get("vnd.docker.reference.type") != "attestation-manifest"
    ]

    def platform(m: dict[str, Any]) -> tuple[str, str]:
        p = m.get("platform") or {}
        return str(p.get("os", "")), str(p.get("architecture", ""))

    for want in (("linux", "amd64"), ("wasip1", "wasm"), ("wasi", "wasm")):
        for m in images:
            if platform(m) == want:
                return str(m["digest"])
    if len(images) == 1:
        return str(images[0]["digest"])
    found = ", ".join("/".join(platform(m)) for m in images) or "none"
    raise OciError(
        "not-wasm", f"{ref}: an image index without a linux/amd64 or wasm image ({found})"
    )


def unpack(manifest: dict[str, Any], media_type: str, fetch: BlobFetcher, ref: str) -> Unpacked:
    """The module from a manifest, trying the variants in Istio's order."""
    layers = [ly for ly in manifest["layers"] if isinstance(ly, dict)]
    annotations = (
        {str(k): str(v) for k, v in (manifest.get("annotations") or {}).items()}
        if isinstance(manifest.get("annotations"), dict)
        else {}
    )
    mtype = media_type or str(manifest.get("mediaType", ""))
    if not layers:
        raise OciError("not-wasm", f"{ref}: not a Wasm image: the image has no layers")
    last = layers[-1]
    if mtype == DOCKER_MANIFEST:
        if last.get("mediaType") != DOCKER_LAYER:
            raise OciError(
                "not-wasm",
                f"{ref}: not a Wasm image: Docker image whose last layer is "
                f"{last.get('mediaType')} (expected {DOCKER_LAYER})",
            )
        wasm, rc = _from_tar(fetch(last), ref)
        return Unpacked(wasm, "docker", rc, annotations)
    errors = []
    if last.get("mediaType") == OCI_LAYER:
        wasm, rc = _from_tar(fetch(last), ref)
        return Unpacked(wasm, "compat", rc, annotations)
    errors.append(f"compat: last layer is {last.get('mediaType')}, not {OCI_LAYER}")
    if len(layers) == 2 or any(ly.get("mediaType") == WASM_LAYER for ly in layers):
        wasm_layer = next((ly for ly in layers if ly.get("mediaType") == WASM_LAYER), None)
        if wasm_layer is not None:
            rc = None
            cfg = manifest.get("config")
            if isinstance(cfg, dict) and cfg.get("mediaType") == WASM_CONFIG:
                rc = RuntimeConfig.from_json(fetch(cfg))
            for ly in layers:
                if ly is not wasm_layer and ly.get("mediaType") == WASM_CONFIG:
                    rc = RuntimeConfig.from_json(fetch(ly))
            return Unpacked(_check_magic(fetch(wasm_layer), ref), "oci", rc, annotations)
        errors.append(f"oci: no layer of type {WASM_LAYER}")
    else:
        errors.append(f"oci: {len(layers)} layers (expected 2 with one {WASM_LAYER})")
    raise OciError("not-wasm", f"{ref}: not a Wasm image ({'; '.join(errors)})")


def _from_tar(blob: bytes, ref: str) -> tuple[bytes, RuntimeConfig | None]:
    wasm: bytes | None = None
    rc: RuntimeConfig | None = None
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if not member.isfile() or base not in (PLUGIN_FILE, RUNTIME_CONFIG_FILE):
                    continue
                f = tar.extractfile(member)
                if f is None:
                    continue
                if base == PLUGIN_FILE and wasm is None:
                    wasm = f.read()
                elif base == RUNTIME_CONFIG_FILE and rc is None:
                    rc = RuntimeConfig.from_json(f.read())
    except (tarfile.TarError, OSError, EOFError) as e:
        raise OciError("not-wasm", f"{ref}: the layer is not a tar+gzip archive: {e}") from None
    if wasm is None:
        raise OciError("not-wasm", f"{ref}: not a Wasm image: {PLUGIN_FILE} not in the layer")
    return _check_magic(wasm, ref), rc


def _check_magic(wasm: bytes, ref: str) -> bytes:
    if wasm[:4] != b"\0asm":
        raise OciError("not-wasm", f"{ref}: the module is not WebAssembly (no \\0asm magic)")
    return wasm


# -- building images for push ----------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    """An image ready to push: blobs (config first) and the manifest."""

    blobs: tuple[bytes, ...]
    manifest: bytes
    media_type: str


def _descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }


def _tar_gz(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    # mtime 0: the same module gives the same layer digest every time.
    return gzip.compress(raw.getvalue(), mtime=0)


def build(wasm: bytes, variant: str, rc: RuntimeConfig) -> Built:
    """The ``oci`` (Wasm artifact) or ``compat`` (tar+gzip layer) image for a module.

    oci: the config blob is the runtime config (``…wasm.config.v1+json``) and the layers are
    that runtime config and the module, the two layers Istio requires. compat: one
    tar+gzip layer with ``plugin.wasm`` and ``runtime-config.json``, an OCI image config,
    and the ``module.wasm.image/variant=compat`` annotation."""
    rc_json = rc.to_json()
    annotations: dict[str, str] = {}
    if variant == "oci":
        cfg_desc = _descriptor(WASM_CONFIG, rc_json)
        layers = [_descriptor(WASM_CONFIG, rc_json), _descriptor(WASM_LAYER, wasm)]
        blobs: tuple[bytes, ...] = (rc_json, wasm)
    elif variant == "compat":
        tar = _tar_gz({PLUGIN_FILE: wasm, RUNTIME_CONFIG_FILE: rc_json})
        diff_id = "sha256:" + hashlib.sha256(gzip.decompress(tar)).hexdigest()
        img_config = json.dumps(
            {
                "architecture": "wasm",
                "os": "wasip1",
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                "config": {},
            },
            sort_keys=True,
        ).encode()
        cfg_desc = _descriptor(OCI_CONFIG, img_config)
        layers = [_descriptor(OCI_LAYER, tar)]
        blobs = (img_config, tar)
        annotations = {VARIANT_ANNOTATION: "compat"}
    else:
        raise ValueError(f"unknown image variant {variant!r} (oci or compat)")
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": cfg_desc,
        "layers": layers,
    }
    if annotations:
        manifest["annotations"] = annotations
    return Built(blobs, json.dumps(manifest, sort_keys=True).encode(), OCI_MANIFEST)
