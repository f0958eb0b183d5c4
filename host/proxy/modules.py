"""Plugin modules: fetch (file, http(s), oci), verify (sha256), cache and compile.

``ModuleSource`` turns a plugin's ``url`` into compiled wasm: a file is read; an
http(s) download is checked against the spec's sha256 and cached by digest (a
cached copy is used only while its digest still matches); an oci image goes to
``host.oci`` (Istio's variants, pull policy and digest rules). Every failure is a
``ModuleError`` whose message says why; nothing here starts a VM.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from host.proxy.errors import ErrorKind
from host.wasm import PluginHost
from host.wasm.runtime import LoadError, Module

if TYPE_CHECKING:
    from host.proxy.config import PluginSpec

__all__ = ["ModuleError", "ModuleSource"]


class ModuleError(Exception):
    """A module could not be fetched, verified or compiled: the message says why,
    ``kind`` at which of the three (``ErrorKind.FETCH``, ``VERIFY`` or ``COMPILE``)."""

    def __init__(self, message: str, kind: ErrorKind = ErrorKind.FETCH) -> None:
        super().__init__(message)
        self.kind = kind


class ModuleSource:
    """Fetches, verifies, caches (``cache_dir``) and compiles plugin modules."""

    def __init__(
        self, host: PluginHost, cache_dir: Path | None, log_info: Callable[[str], None]
    ) -> None:
        self.host = host
        self.cache_dir = cache_dir
        self.pull_secrets: dict[str, str] = {}  # imagePullSecret name -> docker config file
        self._log_info = log_info

    async def fetch(self, spec: PluginSpec) -> bytes:
        kind = spec.location_kind
        loc = spec.location
        if kind == "file":
            try:
                data = Path(loc).read_bytes()
            except OSError as e:
                raise ModuleError(f"cannot read {loc}: {e.strerror or e}") from None
        elif kind in ("http", "https"):
            cached = self._cache_get(spec.sha256)
            if cached is not None:
                return cached
            try:
                async with httpx.AsyncClient(follow_redirects=True, trust_env=False) as client:
                    resp = await client.get(loc, timeout=30.0)
            except httpx.HTTPError as e:
                raise ModuleError(f"cannot download {loc}: {type(e).__name__}: {e}") from None
            if resp.status_code != 200:
                raise ModuleError(f"cannot download {loc}: HTTP {resp.status_code}")
            data = resp.content
        else:  # oci: Istio's variants, pull policy and digest rules (host/oci)
            from host.oci.module_source import pull_for_plugin

            try:
                return await pull_for_plugin(
                    spec, self.pull_secrets, self.cache_dir, self._log_info
                )
            except ValueError as e:
                raise ModuleError(str(e)) from None
        digest = hashlib.sha256(data).hexdigest()
        if spec.sha256 and digest != spec.sha256:
            raise ModuleError(
                f"sha256 mismatch for {spec.url}: expected {spec.sha256}, got {digest}",
                ErrorKind.VERIFY,
            )
        if kind in ("http", "https"):
            self._cache_put(digest, data)
        return data

    def _cache_get(self, sha256: str) -> bytes | None:
        if not sha256 or self.cache_dir is None:
            return None
        p = self.cache_dir / f"{sha256}.wasm"
        try:
            data = p.read_bytes()
        except OSError:
            return None
        return data if hashlib.sha256(data).hexdigest() == sha256 else None

    def _cache_put(self, sha256: str, data: bytes) -> None:
        if self.cache_dir is None:
            return
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_dir / f".{sha256}.tmp"
            tmp.write_bytes(data)
            tmp.replace(self.cache_dir / f"{sha256}.wasm")
        except OSError:
            pass

    def compile(self, data: bytes, what: str) -> Module:
        try:
            return self.host.compile(data)
        except LoadError as e:
            raise ModuleError(f"{what}: {e.message}", ErrorKind.COMPILE) from None
