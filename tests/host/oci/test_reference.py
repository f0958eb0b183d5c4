"""Image references as Istio reads a WasmPlugin url, docker config credentials and
WWW-Authenticate challenges (pure parsing: no registry needed)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from host.oci import OciError, parse_reference
from host.oci.auth import load_credentials, parse_challenge

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("text", "registry", "repo", "tag", "digest"),
    [
        ("oci://ghcr.io/org/plugin:1.2", "ghcr.io", "org/plugin", "1.2", ""),
        ("ghcr.io/org/plugin", "ghcr.io", "org/plugin", "latest", ""),
        ("localhost:5000/plugin:v1", "localhost:5000", "plugin", "v1", ""),
        ("127.0.0.1:5000/a/b/c@" + DIGEST, "127.0.0.1:5000", "a/b/c", "latest", DIGEST),
        ("reg.io/p:1.0@" + DIGEST, "reg.io", "p", "1.0", DIGEST),
        ("org/plugin:2", "index.docker.io", "org/plugin", "2", ""),
        ("plugin", "index.docker.io", "library/plugin", "latest", ""),
    ],
)
def test_parse_reference(text: str, registry: str, repo: str, tag: str, digest: str) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repo, tag, digest)


@pytest.mark.parametrize(
    "text", ["oci://", "reg.io/Upper/case:1", "reg.io/p@sha256:abc", "reg.io/p:bad tag", "a b"]
)
def test_parse_reference_errors(text: str) -> None:
    with pytest.raises(OciError) as e:
        parse_reference(text)
    assert e.value.kind == "reference"


def test_loopback_is_only_loopback() -> None:
    assert parse_reference("127.0.0.1:5000/p").loopback
    assert parse_reference("localhost:5000/p").loopback
    assert not parse_reference("10.0.0.1:5000/p").loopback
    assert not parse_reference("ghcr.io/p").loopback


def test_docker_config_forms(tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    token = base64.b64encode(b"bob:pa:ss").decode()
    f.write_text(
        json.dumps(
            {
                "auths": {
                    "https://reg.example": {"auth": token},
                    "other.example": {"username": "u", "password": "p"},
                    "https://index.docker.io/v1/": {"auth": token},
                }
            }
        )
    )
    c = load_credentials("reg.example", f)
    assert c is not None and (c.username, c.password) == ("bob", "pa:ss")
    c2 = load_credentials("other.example", f)
    assert c2 is not None and (c2.username, c2.password) == ("u", "p")
    assert load_credentials("index.docker.io", f) is not None
    assert load_credentials("unknown.example", f) is None


def test_docker_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(OciError, match="not a docker config JSON"):
        load_credentials("r", bad)
    bad.write_text(json.dumps({"auths": {"r": {"auth": "!!!"}}}))
    with pytest.raises(OciError, match="not base64"):
        load_credentials("r", bad)


def test_parse_challenge() -> None:
    ch = parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:org/p:pull"'
    )
    assert ch is not None and ch.scheme == "bearer"
    assert ch.params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:org/p:pull",
    }
    basic = parse_challenge('Basic realm="wasmdesk-test"')
    assert basic is not None and basic.scheme == "basic"


def test_tls_for_every_registry_but_loopback() -> None:
    """Cleartext only to loopback (after TLS failed there); anything else is https://,
    decided without a connection."""
    from host.oci.registry import RegistryClient

    with RegistryClient(parse_reference("registry.example/p:1"), None) as c:
        assert c._base() == "https://registry.example"
    with RegistryClient(parse_reference("10.1.2.3:5000/p:1"), None) as c:
        assert c._base() == "https://10.1.2.3:5000"


def test_cli_tells_files_from_images(tmp_path: Path) -> None:
    from host.cli_oci import is_image_ref

    assert is_image_ref("oci://ghcr.io/org/p:1")
    assert is_image_ref("ghcr.io/org/p:1")
    assert is_image_ref("localhost:5000/p")
    assert not is_image_ref("plugins/typo")  # a missing file, not a Docker Hub image
    assert not is_image_ref("resources/plugins/add_header.wasm")
    assert not is_image_ref("./ghcr.io/p")
    f = tmp_path / "reg.io" / "p"
    f.parent.mkdir()
    f.write_bytes(b"\0asm")
    assert not is_image_ref(str(f))  # an existing file wins
