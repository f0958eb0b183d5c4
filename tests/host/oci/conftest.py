"""A real OCI registry on 127.0.0.1 for the tests: Debian's ``docker-registry`` (the CNCF
distribution server), one instance without auth and one with bcrypt htpasswd (Basic)
auth, each on a free port with its own temp storage and config YAML, started once per
session. ``skopeo`` is the independent client that pushes images we did not build and
inspects the ones we pushed.

When a binary is missing the tests skip with the reason, except in CI (``CI=true``),
where a missing binary fails: ``.ci/run`` installs them.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]
PLUGINS = ROOT / "resources" / "plugins"


def need_binary(*names: str) -> str:
    for n in names:
        path = shutil.which(n)
        if path:
            return path
    why = (
        f"{' or '.join(names)} not installed (apt-get install docker-registry skopeo apache2-utils)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI: {why}")
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    user: str = ""
    password: str = ""
    docker_config: Path | None = None

    def ref(self, repo: str) -> str:
        return f"{self.host}/{repo}"

    @property
    def creds(self) -> list[str]:
        return [f"--creds={self.user}:{self.password}"] if self.user else []

    @property
    def dest_creds(self) -> list[str]:
        return [f"--dest-creds={self.user}:{self.password}"] if self.user else []


def _start_registry(tmp: Path, auth: bool) -> tuple[subprocess.Popen[bytes], Registry]:
    binary = need_binary("docker-registry", "registry")
    port = _free_port()
    reg = Registry(f"127.0.0.1:{port}")
    cfg = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(tmp / "data")},
            "delete": {"enabled": True},
        },
        "http": {"addr": reg.host},
    }
    if auth:
        htpasswd = need_binary("htpasswd")
        reg.user, reg.password = "alice", "wonder-land-42"
        out = subprocess.run(
            [htpasswd, "-Bbn", reg.user, reg.password], check=True, capture_output=True
        ).stdout
        (tmp / "htpasswd").write_bytes(out)
        cfg["auth"] = {"htpasswd": {"realm": "wasmdesk-test", "path": str(tmp / "htpasswd")}}
        token = base64.b64encode(f"{reg.user}:{reg.password}".encode()).decode()
        reg.docker_config = tmp / "docker-config.json"
        reg.docker_config.write_text(json.dumps({"auths": {reg.host: {"auth": token}}}))
    (tmp / "config.yml").write_text(json.dumps(cfg))  # JSON is YAML
    log = open(tmp / "registry.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([binary, "serve", str(tmp / "config.yml")], stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while True:
        try:
            r = httpx.get(f"http://{reg.host}/v2/", timeout=1)
            if r.status_code in (200, 401):
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"registry did not start: {(tmp / 'registry.log').read_text()}")
        time.sleep(0.05)
    return proc, reg


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    proc, reg = _start_registry(tmp_path_factory.mktemp("registry"), auth=False)
    yield reg
    proc.terminate()
    proc.wait(5)


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    proc, reg = _start_registry(tmp_path_factory.mktemp("registry-auth"), auth=True)
    yield reg
    proc.terminate()
    proc.wait(5)


@pytest.fixture(scope="session")
def skopeo() -> str:
    return need_binary("skopeo")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own module cache and no docker config of the machine."""
    monkeypatch.setenv("WASMDESK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))


def run_skopeo(skopeo: str, *args: str) -> str:
    r = subprocess.run(
        [skopeo, "--insecure-policy", *args], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


# -- images built by hand and pushed with skopeo (not with our client) ------------------------


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_gz(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue())


def write_dir_image(dest: Path, manifest: dict[str, Any], blobs: list[bytes]) -> Path:
    """skopeo's ``dir:`` transport layout: manifest.json, blobs by hex digest, version."""
    dest.mkdir(parents=True)
    (dest / "version").write_text("Directory Transport Version: 1.1\n")
    for b in blobs:
        (dest / _digest(b).removeprefix("sha256:")).write_bytes(b)
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": _digest(data), "size": len(data)}


def skopeo_push_image(
    skopeo: str,
    reg: Registry,
    repo: str,
    tmp: Path,
    variant: str,
    wasm: bytes,
    *,
    runtime_config: bytes | None = None,
    layer_files: dict[str, bytes] | None = None,
) -> str:
    """Build a ``docker``, ``compat`` or ``oci`` variant image by hand and push it with
    skopeo; returns the reference."""
    rc = (
        runtime_config
        or json.dumps(
            {"type": "envoy_proxy", "abiVersions": ["v0.2.0"], "rootIds": ["add_header"]}
        ).encode()
    )
    if variant in ("docker", "compat"):
        files = (
            layer_files
            if layer_files is not None
            else {"plugin.wasm": wasm, "runtime-config.json": rc}
        )
        layer = tar_gz(files)
        diff_id = _digest(gzip.decompress(layer))
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                "config": {},
            }
        ).encode()
        if variant == "docker":
            manifest = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": descriptor("application/vnd.docker.container.image.v1+json", config),
                "layers": [descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip", layer)],
            }
        else:
            manifest = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": descriptor("application/vnd.oci.image.config.v1+json", config),
                "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer)],
                "annotations": {"module.wasm.image/variant": "compat"},
            }
        blobs = [config, layer]
    else:
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor("application/vnd.module.wasm.config.v1+json", rc),
            "layers": [
                descriptor("application/vnd.module.wasm.config.v1+json", rc),
                descriptor("application/vnd.module.wasm.content.layer.v1+wasm", wasm),
            ],
        }
        blobs = [rc, wasm]
    src = write_dir_image(tmp / f"img-{variant}-{repo.replace('/', '-')}", manifest, blobs)
    ref = reg.ref(repo)
    run_skopeo(
        skopeo,
        "copy",
        "--dest-tls-verify=false",
        *reg.dest_creds,
        "--preserve-digests",
        f"dir:{src}",
        f"docker://{ref}",
    )
    return ref


# -- a registry with token (Bearer) auth and its token service ---------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _TokenService:
    """Docker's token auth: checks Basic credentials and answers an RS256 JWT (signed with
    the openssl CLI) whose x5c certificate is the registry's rootcertbundle."""

    def __init__(self, tmp: Path, user: str, password: str, service: str, issuer: str) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs, urlsplit

        openssl = need_binary("openssl")
        self.key, self.cert = tmp / "token.key", tmp / "token.pem"
        subprocess.run(
            [
                openssl,
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                str(self.key),
                "-out",
                str(self.cert),
                "-subj",
                "/CN=wasmdesk-test-token",
                "-days",
                "2",
            ],
            check=True,
            capture_output=True,
        )
        der = subprocess.run(
            [openssl, "x509", "-in", str(self.cert), "-outform", "der"],
            check=True,
            capture_output=True,
        ).stdout
        self.scopes: list[str] = []
        svc = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                q = parse_qs(urlsplit(self.path).query)
                expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
                given = self.headers.get("authorization")
                if given is not None and given != expected:
                    self.send_response(401)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                access = []
                for scope in q.get("scope", []):
                    svc.scopes.append(scope)
                    kind, name, actions = scope.split(":")
                    if given is not None:  # anonymous users get a token that allows nothing
                        access.append({"type": kind, "name": name, "actions": actions.split(",")})
                now = int(time.time())
                header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
                claims = {
                    "iss": issuer,
                    "sub": user if given else "",
                    "aud": service,
                    "exp": now + 300,
                    "nbf": now - 10,
                    "iat": now,
                    "jti": str(now),
                    "access": access,
                }
                signing = (
                    f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
                )
                sig = subprocess.run(
                    [openssl, "dgst", "-sha256", "-sign", str(svc.key)],
                    input=signing.encode(),
                    check=True,
                    capture_output=True,
                ).stdout
                body = json.dumps({"token": f"{signing}.{_b64url(sig)}"}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Registry, _TokenService]]:
    tmp = tmp_path_factory.mktemp("registry-token")
    binary = need_binary("docker-registry", "registry")
    user, password = "carol", "t0ken-pass"
    tokens = _TokenService(tmp, user, password, "wasmdesk-test", "wasmdesk-issuer")
    port = _free_port()
    reg = Registry(f"127.0.0.1:{port}", user, password, tmp / "docker-config.json")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    assert reg.docker_config is not None
    reg.docker_config.write_text(json.dumps({"auths": {reg.host: {"auth": token}}}))
    cfg = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(tmp / "data")}},
        "http": {"addr": reg.host},
        "auth": {
            "token": {
                "realm": tokens.url,
                "service": "wasmdesk-test",
                "issuer": "wasmdesk-issuer",
                "rootcertbundle": str(tokens.cert),
            }
        },
    }
    (tmp / "config.yml").write_text(json.dumps(cfg))
    log = open(tmp / "registry.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([binary, "serve", str(tmp / "config.yml")], stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while True:
        try:
            if httpx.get(f"http://{reg.host}/v2/", timeout=1).status_code == 401:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            tokens.close()
            raise RuntimeError(f"registry did not start: {(tmp / 'registry.log').read_text()}")
        time.sleep(0.05)
    yield reg, tokens
    proc.terminate()
    proc.wait(5)
    tokens.close()


def skopeo_push_index(
    skopeo: str, reg: Registry, repo: str, tmp: Path, wasm: bytes
) -> tuple[str, str, str]:
    """A compat image for linux/amd64 inside an OCI index with a docker-buildx-style
    attestation entry, pushed with ``skopeo copy --all``; (ref, index digest, image digest)."""
    layer = tar_gz({"plugin.wasm": wasm})
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    image = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor("application/vnd.oci.image.config.v1+json", config),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer)],
        }
    ).encode()
    statement = b'{"_type": "https://in-toto.io/Statement/v0.1"}'
    att_config = b"{}"
    attestation = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor("application/vnd.oci.image.config.v1+json", att_config),
            "layers": [descriptor("application/vnd.in-toto+json", statement)],
        }
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    **descriptor("application/vnd.oci.image.manifest.v1+json", attestation),
                    "platform": {"os": "unknown", "architecture": "unknown"},
                    "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
                },
                {
                    **descriptor("application/vnd.oci.image.manifest.v1+json", image),
                    "platform": {"os": "linux", "architecture": "amd64"},
                },
            ],
        }
    ).encode()
    src = tmp / f"index-{repo.replace('/', '-')}"
    src.mkdir()
    (src / "version").write_text("Directory Transport Version: 1.1\n")
    for b in (layer, config, statement, att_config):
        (src / _digest(b).removeprefix("sha256:")).write_bytes(b)
    for m in (image, attestation):
        (src / f"{_digest(m).removeprefix('sha256:')}.manifest.json").write_bytes(m)
    (src / "manifest.json").write_bytes(index)
    ref = reg.ref(repo)
    run_skopeo(
        skopeo,
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        *reg.dest_creds,
        f"dir:{src}",
        f"docker://{ref}",
    )
    return ref, _digest(index), _digest(image)
