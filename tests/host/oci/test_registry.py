"""Pull and push against a real registry (docker-registry on 127.0.0.1), each side checked
with skopeo: every image variant Istio accepts, Basic auth, pull policy, Istio's digest
semantics and the error cases."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from host.oci import OciError, RuntimeConfig, pull_module, push_module
from tests.host.oci.conftest import (
    PLUGINS,
    Registry,
    run_skopeo,
    skopeo_push_image,
    skopeo_push_index,
)

ADD_HEADER = (PLUGINS / "add_header.wasm").read_bytes()
AUTH_TOKEN = (PLUGINS / "auth_token.wasm").read_bytes()
RC = RuntimeConfig("envoy_proxy", ("v0.2.0",), ("add_header",))


def _cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


# -- pull: each variant, pushed by skopeo ------------------------------------------------------


@pytest.mark.parametrize("variant", ["docker", "compat", "oci"])
def test_pull_each_variant_pushed_by_skopeo(
    variant: str, registry: Registry, skopeo: str, tmp_path: Path
) -> None:
    ref = skopeo_push_image(skopeo, registry, f"pull/{variant}", tmp_path, variant, ADD_HEADER)
    progress: list[tuple[int, int]] = []
    pulled = pull_module(
        f"oci://{ref}:latest",
        cache_dir=_cache(tmp_path),
        progress=lambda d, t: progress.append((d, t)),
    )
    assert pulled.wasm == ADD_HEADER
    assert pulled.variant == variant
    assert pulled.runtime_config is not None
    assert pulled.runtime_config.root_ids == ("add_header",)
    assert pulled.runtime_config.abi_versions == ("v0.2.0",)
    # the digest is the manifest's, as skopeo sees it
    raw = run_skopeo(skopeo, "inspect", "--raw", "--tls-verify=false", f"docker://{ref}")
    assert pulled.digest == "sha256:" + hashlib.sha256(raw.encode()).hexdigest()
    assert progress and progress[-1][0] == progress[-1][1] > 0


def test_pull_bare_reference_without_scheme(
    registry: Registry, skopeo: str, tmp_path: Path
) -> None:
    ref = skopeo_push_image(skopeo, registry, "pull/bare", tmp_path, "compat", ADD_HEADER)
    assert pull_module(f"{ref}:latest", cache_dir=None).wasm == ADD_HEADER


def test_not_a_wasm_image(registry: Registry, skopeo: str, tmp_path: Path) -> None:
    ref = skopeo_push_image(
        skopeo,
        registry,
        "pull/notwasm",
        tmp_path,
        "compat",
        ADD_HEADER,
        layer_files={"etc/hostname": b"box\n"},
    )
    with pytest.raises(OciError) as e:
        pull_module(ref, cache_dir=None)
    assert e.value.kind == "not-wasm"
    assert "plugin.wasm not in the layer" in e.value.message


def test_layer_with_non_wasm_bytes_is_refused(
    registry: Registry, skopeo: str, tmp_path: Path
) -> None:
    ref = skopeo_push_image(
        skopeo, registry, "pull/garbage", tmp_path, "oci", b"#!/bin/sh\necho not wasm\n"
    )
    with pytest.raises(OciError) as e:
        pull_module(ref, cache_dir=None)
    assert e.value.kind == "not-wasm" and "\\0asm" in e.value.message


def test_unknown_manifest(registry: Registry) -> None:
    with pytest.raises(OciError) as e:
        pull_module(registry.ref("nothing/here:1.0"), cache_dir=None)
    assert e.value.kind == "unknown-manifest"
    assert "nothing/here:1.0" in e.value.message


def test_registry_unreachable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OciError) as e:
        pull_module(f"oci://127.0.0.1:{port}/a/b:1", cache_dir=None)
    assert e.value.kind == "unreachable"
    assert f"127.0.0.1:{port}" in e.value.message


# -- push: checked with skopeo -----------------------------------------------------------------


def test_push_oci_variant_read_back_by_skopeo(
    registry: Registry, skopeo: str, tmp_path: Path
) -> None:
    result = push_module(ADD_HEADER, registry.ref("push/oci:1.0"), variant="oci", runtime_config=RC)
    raw = run_skopeo(
        skopeo, "inspect", "--raw", "--tls-verify=false", f"docker://{registry.ref('push/oci:1.0')}"
    )
    assert result.digest == "sha256:" + hashlib.sha256(raw.encode()).hexdigest()
    manifest = json.loads(raw)
    assert manifest["config"]["mediaType"] == "application/vnd.module.wasm.config.v1+json"
    assert [ly["mediaType"] for ly in manifest["layers"]] == [
        "application/vnd.module.wasm.config.v1+json",
        "application/vnd.module.wasm.content.layer.v1+wasm",
    ]
    out = tmp_path / "copy"
    run_skopeo(
        skopeo,
        "copy",
        "--src-tls-verify=false",
        f"docker://{registry.ref('push/oci:1.0')}",
        f"dir:{out}",
    )
    wasm_hex = manifest["layers"][1]["digest"].removeprefix("sha256:")
    assert (out / wasm_hex).read_bytes() == ADD_HEADER
    rc = json.loads((out / manifest["config"]["digest"].removeprefix("sha256:")).read_bytes())
    assert rc == {"type": "envoy_proxy", "abiVersions": ["v0.2.0"], "rootIds": ["add_header"]}
    assert "url: oci://" + registry.ref("push/oci:1.0") in result.wasm_plugin_snippet()


def test_push_compat_variant_read_back_by_skopeo(
    registry: Registry, skopeo: str, tmp_path: Path
) -> None:
    ref = registry.ref("push/compat:1.0")
    result = push_module(ADD_HEADER, ref, variant="compat", runtime_config=RC)
    out = tmp_path / "copy"
    run_skopeo(skopeo, "copy", "--src-tls-verify=false", f"docker://{ref}", f"dir:{out}")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["annotations"] == {"module.wasm.image/variant": "compat"}
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    with tarfile.open(out / layer["digest"].removeprefix("sha256:"), "r:gz") as tar:
        names = tar.getnames()
        wasm = tar.extractfile("plugin.wasm").read()  # type: ignore[union-attr]
    assert sorted(names) == ["plugin.wasm", "runtime-config.json"]
    assert wasm == ADD_HEADER
    # skopeo reads it as an ordinary image (the compat variant's point)
    info = json.loads(run_skopeo(skopeo, "inspect", "--tls-verify=false", f"docker://{ref}"))
    assert info["Digest"] == result.digest


def test_push_then_pull_round_trip_both_variants(registry: Registry, tmp_path: Path) -> None:
    for variant in ("oci", "compat"):
        ref = registry.ref(f"roundtrip/{variant}:v1")
        pushed = push_module(AUTH_TOKEN, ref, variant=variant, runtime_config=RC)
        pulled = pull_module(ref, cache_dir=None)
        assert (pulled.wasm, pulled.digest, pulled.variant) == (AUTH_TOKEN, pushed.digest, variant)
        # pushing the same bytes again gives the same digest (reproducible layers)
        assert (
            push_module(AUTH_TOKEN, ref, variant=variant, runtime_config=RC).digest == pushed.digest
        )


# -- auth --------------------------------------------------------------------------------------


def test_auth_required_without_credentials(auth_registry: Registry) -> None:
    with pytest.raises(OciError) as e:
        pull_module(auth_registry.ref("any/thing:1"), cache_dir=None)
    assert e.value.kind == "auth"
    assert "authentication required" in e.value.message


def test_auth_push_and_pull_with_docker_config(
    auth_registry: Registry, skopeo: str, tmp_path: Path
) -> None:
    ref = auth_registry.ref("secured/plugin:1.0")
    pushed = push_module(
        ADD_HEADER,
        ref,
        variant="compat",
        runtime_config=RC,
        docker_config=auth_registry.docker_config,
    )
    # skopeo with the same credentials sees what we pushed
    info = json.loads(
        run_skopeo(skopeo, "inspect", "--tls-verify=false", *auth_registry.creds, f"docker://{ref}")
    )
    assert info["Digest"] == pushed.digest
    pulled = pull_module(ref, pull_secret=auth_registry.docker_config, cache_dir=None)
    assert pulled.wasm == ADD_HEADER


def test_auth_from_default_docker_config(
    auth_registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No imagePullSecret: ``$DOCKER_CONFIG/config.json`` as Istio's default keychain."""
    ref = auth_registry.ref("secured/default:1.0")
    push_module(ADD_HEADER, ref, runtime_config=RC, docker_config=auth_registry.docker_config)
    home = tmp_path / "dockerhome"
    home.mkdir()
    assert auth_registry.docker_config is not None
    (home / "config.json").write_bytes(auth_registry.docker_config.read_bytes())
    monkeypatch.setenv("DOCKER_CONFIG", str(home))
    assert pull_module(ref, cache_dir=None).wasm == ADD_HEADER


def test_auth_wrong_password(auth_registry: Registry, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"auths": {auth_registry.host: {"username": "alice", "password": "nope"}}})
    )
    with pytest.raises(OciError) as e:
        pull_module(auth_registry.ref("secured/plugin:1.0"), pull_secret=bad, cache_dir=None)
    assert e.value.kind == "auth"
    assert "'alice'" in e.value.message


def test_missing_pull_secret_file_is_an_error(auth_registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(OciError) as e:
        pull_module(
            auth_registry.ref("secured/plugin:1.0"),
            pull_secret=tmp_path / "nope.json",
            cache_dir=None,
        )
    assert e.value.kind == "auth" and "not found" in e.value.message


# -- digests (Istio: sha256 is the manifest digest for OCI) -------------------------------------


def test_sha256_is_compared_with_the_manifest_digest(registry: Registry, tmp_path: Path) -> None:
    ref = registry.ref("digest/plugin:1.0")
    pushed = push_module(ADD_HEADER, ref, runtime_config=RC)
    assert pull_module(ref, sha256=pushed.sha256, cache_dir=None).wasm == ADD_HEADER
    # the module's own sha256 is *not* what Istio compares for OCI
    module_sha = hashlib.sha256(ADD_HEADER).hexdigest()
    with pytest.raises(OciError) as e:
        pull_module(ref, sha256=module_sha, cache_dir=None)
    assert e.value.kind == "digest-mismatch"
    assert pushed.digest in e.value.message


def test_reference_digest_must_agree_with_sha256(registry: Registry) -> None:
    ref = registry.ref("digest/plugin@sha256:" + "a" * 64)
    with pytest.raises(OciError) as e:
        pull_module(ref, sha256="b" * 64, cache_dir=None)
    assert e.value.kind == "digest-mismatch"


def test_pull_by_digest(registry: Registry) -> None:
    pushed = push_module(ADD_HEADER, registry.ref("digest/bydigest:1.0"), runtime_config=RC)
    pulled = pull_module(registry.ref(f"digest/bydigest@{pushed.digest}"), cache_dir=None)
    assert pulled.wasm == ADD_HEADER and pulled.digest == pushed.digest


# -- pull policy -------------------------------------------------------------------------------


def test_if_not_present_keeps_the_cached_image_when_the_tag_moves(
    registry: Registry, tmp_path: Path
) -> None:
    ref = registry.ref("policy/moving:stable")
    first = push_module(ADD_HEADER, ref, runtime_config=RC)
    a = pull_module(ref, cache_dir=_cache(tmp_path))
    assert (a.wasm, a.from_cache) == (ADD_HEADER, False)
    second = push_module(AUTH_TOKEN, ref, runtime_config=RC)
    assert second.digest != first.digest
    b = pull_module(ref, cache_dir=_cache(tmp_path))  # unspecified -> IfNotPresent
    assert (b.wasm, b.from_cache, b.digest) == (ADD_HEADER, True, first.digest)
    c = pull_module(ref, cache_dir=_cache(tmp_path), pull_policy="Always")
    assert (c.wasm, c.digest) == (AUTH_TOKEN, second.digest)


def test_latest_tag_means_always(registry: Registry, tmp_path: Path) -> None:
    ref = registry.ref("policy/latest")
    push_module(ADD_HEADER, ref, runtime_config=RC)
    assert pull_module(ref, cache_dir=_cache(tmp_path)).wasm == ADD_HEADER
    push_module(AUTH_TOKEN, ref, runtime_config=RC)
    assert pull_module(ref, cache_dir=_cache(tmp_path)).wasm == AUTH_TOKEN
    # ... unless IfNotPresent is asked for explicitly
    push_module(ADD_HEADER, ref, runtime_config=RC)
    again = pull_module(ref, cache_dir=_cache(tmp_path), pull_policy="IfNotPresent")
    assert again.wasm == AUTH_TOKEN and again.from_cache


def test_pinned_digest_uses_the_cache_even_with_always(registry: Registry, tmp_path: Path) -> None:
    pushed = push_module(ADD_HEADER, registry.ref("policy/pinned:1"), runtime_config=RC)
    pull_module(registry.ref("policy/pinned:1"), cache_dir=_cache(tmp_path))
    # a registry that does not exist: only the cache can answer
    gone = f"oci://127.0.0.1:1/policy/pinned@{pushed.digest}"
    hit = pull_module(gone, cache_dir=_cache(tmp_path), pull_policy="Always")
    assert hit.from_cache and hit.wasm == ADD_HEADER
    hit2 = pull_module(
        "oci://127.0.0.1:1/policy/pinned:1",
        sha256=pushed.sha256,
        cache_dir=_cache(tmp_path),
        pull_policy="Always",
    )
    assert hit2.from_cache


def test_cached_module_shares_the_download_cache(registry: Registry, tmp_path: Path) -> None:
    """The module lands as <sha256>.wasm beside http(s) downloads (one cache by digest)."""
    push_module(ADD_HEADER, registry.ref("cache/shared:1"), runtime_config=RC)
    pull_module(registry.ref("cache/shared:1"), cache_dir=_cache(tmp_path))
    sha = hashlib.sha256(ADD_HEADER).hexdigest()
    assert (_cache(tmp_path) / f"{sha}.wasm").read_bytes() == ADD_HEADER


def test_token_auth_push_and_pull(token_registry: tuple[Registry, Any], skopeo: str) -> None:
    """Bearer: the registry's challenge names the token service; we fetch a token for the
    repository scope with the docker-config credentials."""
    reg, tokens = token_registry
    ref = reg.ref("bearer/plugin:1.0")
    pushed = push_module(ADD_HEADER, ref, runtime_config=RC, docker_config=reg.docker_config)
    assert "repository:bearer/plugin:pull,push" in tokens.scopes
    raw = run_skopeo(
        skopeo, "inspect", "--raw", "--tls-verify=false", *reg.creds, f"docker://{ref}"
    )
    assert pushed.digest == "sha256:" + hashlib.sha256(raw.encode()).hexdigest()
    pulled = pull_module(ref, pull_secret=reg.docker_config, cache_dir=None)
    assert pulled.wasm == ADD_HEADER
    assert "repository:bearer/plugin:pull" in tokens.scopes
    with pytest.raises(OciError) as e:  # anonymous: a token that allows nothing
        pull_module(ref, cache_dir=None)
    assert e.value.kind == "auth"


def test_pull_from_an_image_index(registry: Registry, skopeo: str, tmp_path: Path) -> None:
    """docker buildx pushes an index (the image plus an attestation manifest): the
    linux/amd64 image is used, and its digest is the image digest."""
    ref, index_digest, image_digest = skopeo_push_index(
        skopeo, registry, "index/plugin:1", tmp_path, ADD_HEADER
    )
    pulled = pull_module(ref, cache_dir=None)
    assert (pulled.wasm, pulled.digest, pulled.variant) == (ADD_HEADER, image_digest, "compat")
    assert pull_module(ref, sha256=image_digest[7:], cache_dir=None).wasm == ADD_HEADER
    pinned = registry.ref(f"index/plugin@{index_digest}")
    assert pull_module(pinned, cache_dir=None).wasm == ADD_HEADER
