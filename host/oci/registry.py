"""The OCI distribution API over httpx: manifests and blobs, pulled and pushed.

Authentication follows the registry's ``WWW-Authenticate`` challenge: Basic sends the
credentials, Bearer fetches a token from the realm (with the credentials, if any) for the
repository's scope. TLS always, except for a registry on loopback, where cleartext HTTP is
used when the server does not speak TLS (Istio's agent falls back the same way).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from host.oci.auth import Credentials, basic_header, parse_challenge
from host.oci.errors import OciError
from host.oci.reference import Reference

MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
Progress = Callable[[int, int], None]  # (bytes done, bytes total)
_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


@dataclass(frozen=True)
class Manifest:
    """A fetched manifest: its bytes, media type and digest (``sha256:hex``)."""

    data: bytes
    media_type: str
    digest: str


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class RegistryClient:
    """One registry, one repository's scope at a time; close it (or use ``with``)."""

    def __init__(self, ref: Reference, credentials: Credentials | None) -> None:
        self.ref = ref
        self.credentials = credentials
        self._client = httpx.Client(timeout=_TIMEOUT, trust_env=False, follow_redirects=True)
        self._scheme: str | None = None
        self._auth: str | None = None  # the Authorization header that worked last

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    # -- transport ------------------------------------------------------------------------

    def _base(self) -> str:
        if self._scheme is None:
            self._scheme = "https"
            if self.ref.loopback:
                try:
                    self._client.get(f"https://{self.ref.registry}/v2/", timeout=2.0)
                except httpx.TransportError:
                    self._scheme = "http"
        return f"{self._scheme}://{self.ref.registry}"

    def _send(
        self, method: str, url: str, headers: dict[str, str], content: bytes | None, stream: bool
    ) -> httpx.Response:
        if self._auth:
            headers = {**headers, "Authorization": self._auth}
        req = self._client.build_request(method, url, headers=headers, content=content)
        try:
            return self._client.send(req, stream=stream)
        except httpx.TimeoutException:
            raise OciError("unreachable", f"registry {self.ref.registry} timed out") from None
        except httpx.TransportError as e:
            raise OciError(
                "unreachable", f"registry {self.ref.registry} unreachable: {e or type(e).__name__}"
            ) from None

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        push: bool = False,
        stream: bool = False,
    ) -> httpx.Response:
        url = path_or_url if "://" in path_or_url else self._base() + path_or_url
        hdrs = headers or {}
        resp = self._send(method, url, hdrs, content, stream)
        if resp.status_code == 401:
            challenge = resp.headers.get("www-authenticate", "")
            resp.close()
            self._authenticate(challenge, push)
            resp = self._send(method, url, hdrs, content, stream)
        if resp.status_code in (401, 403):
            resp.close()
            who = "anonymous" if self.credentials is None else f"user {self.credentials.username!r}"
            what = "authentication required" if resp.status_code == 401 else "access denied"
            raise OciError(
                "auth",
                f"{what} by {self.ref.registry} for {self.ref.repository} ({who}); "
                "give an imagePullSecret or log in (docker config JSON)",
            )
        return resp

    def _authenticate(self, header: str, push: bool) -> None:
        ch = parse_challenge(header)
        if ch is None or ch.scheme not in ("basic", "bearer"):
            raise OciError("auth", f"{self.ref.registry}: unsupported auth challenge {header!r}")
        if ch.scheme == "basic":
            if self.credentials is None:
                raise OciError(
                    "auth",
                    f"authentication required by {self.ref.registry} (Basic) and no "
                    "credentials found; give an imagePullSecret or log in",
                )
            self._auth = basic_header(self.credentials)
            return
        realm = ch.params.get("realm")
        if not realm:
            raise OciError("auth", f"{self.ref.registry}: Bearer challenge without a realm")
        actions = "pull,push" if push else "pull"
        params = {"scope": f"repository:{self.ref.repository}:{actions}"}
        if "service" in ch.params:
            params["service"] = ch.params["service"]
        headers = {}
        if self.credentials is not None:
            headers["Authorization"] = basic_header(self.credentials)
        try:
            r = self._client.get(realm, params=params, headers=headers)
        except httpx.HTTPError as e:
            raise OciError("unreachable", f"token service {realm} unreachable: {e}") from None
        if r.status_code != 200:
            raise OciError("auth", f"token service {realm} refused: HTTP {r.status_code}")
        try:
            body = r.json()
            token = body.get("token") or body.get("access_token")
        except ValueError:
            token = None
        if not isinstance(token, str) or not token:
            raise OciError("auth", f"token service {realm} answered without a token")
        self._auth = f"Bearer {token}"

    @staticmethod
    def _error(resp: httpx.Response, what: str) -> OciError:
        try:
            errors = resp.json().get("errors") or []
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
        except (ValueError, AttributeError):
            detail = resp.text[:200]
        return OciError("registry", f"{what}: HTTP {resp.status_code} {detail}".rstrip())

    # -- pull -------------------------------------------------------------------------------

    def get_manifest(self, digest: str = "") -> Manifest:
        """The manifest the reference names (or, given, the one with ``digest``)."""
        ref = self.ref.with_digest(digest) if digest else self.ref
        resp = self.request(
            "GET",
            f"/v2/{ref.repository}/manifests/{ref.identifier}",
            headers={"Accept": ", ".join(MANIFEST_TYPES + INDEX_TYPES)},
        )
        if resp.status_code == 404:
            raise OciError("unknown-manifest", f"manifest unknown: {ref} (no such tag or digest)")
        if resp.status_code != 200:
            raise self._error(resp, f"cannot fetch the manifest of {ref}")
        data = resp.content
        media_type = resp.headers.get("content-type", "").split(";")[0].strip()
        digest = sha256_digest(data)
        if ref.digest and digest != ref.digest:
            raise OciError(
                "digest-mismatch",
                f"registry returned a manifest with digest {digest} for {ref}",
            )
        return Manifest(data, media_type, digest)

    def get_blob(self, digest: str, size: int, progress: Progress | None) -> bytes:
        resp = self.request("GET", f"/v2/{self.ref.repository}/blobs/{digest}", stream=True)
        try:
            if resp.status_code != 200:
                resp.read()
                raise self._error(resp, f"cannot fetch blob {digest[:19]}…")
            chunks: list[bytes] = []
            done = 0
            h = hashlib.sha256()
            for chunk in resp.iter_bytes():
                chunks.append(chunk)
                h.update(chunk)
                done += len(chunk)
                if size and done > size:  # the descriptor's size bounds what we accept
                    raise OciError(
                        "digest-mismatch", f"blob {digest} is larger than its {size} bytes"
                    )
                if progress is not None:
                    progress(done, size)
        except httpx.HTTPError as e:
            raise OciError("unreachable", f"download of {digest[:19]}… broke off: {e}") from None
        finally:
            resp.close()
        if "sha256:" + h.hexdigest() != digest:
            raise OciError("digest-mismatch", f"blob {digest} arrived with different content")
        return b"".join(chunks)

    # -- push -------------------------------------------------------------------------------

    def push_blob(self, data: bytes, progress: Progress | None) -> str:
        digest = sha256_digest(data)
        repo = self.ref.repository
        head = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", push=True)
        if head.status_code == 200:
            if progress is not None:
                progress(len(data), len(data))
            return digest
        start = self.request("POST", f"/v2/{repo}/blobs/uploads/", push=True)
        if start.status_code != 202 or "location" not in start.headers:
            raise self._error(start, f"cannot start an upload to {self.ref.registry}/{repo}")
        location = str(httpx.URL(str(start.url)).join(start.headers["location"]))
        sep = "&" if "?" in location else "?"
        put = self.request(
            "PUT",
            f"{location}{sep}digest={digest}",
            headers={"Content-Type": "application/octet-stream"},
            content=data,
            push=True,
        )
        if put.status_code != 201:
            raise self._error(put, f"upload of {digest[:19]}… refused")
        if progress is not None:
            progress(len(data), len(data))
        return digest

    def put_manifest(self, data: bytes, media_type: str) -> str:
        ref = self.ref
        resp = self.request(
            "PUT",
            f"/v2/{ref.repository}/manifests/{ref.tag}",
            headers={"Content-Type": media_type},
            content=data,
            push=True,
        )
        if resp.status_code != 201:
            raise self._error(resp, f"manifest for {ref} refused")
        return resp.headers.get("docker-content-digest") or sha256_digest(data)
