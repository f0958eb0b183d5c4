"""Module fetching on its own (host.proxy.modules.ModuleSource): a real HTTP server on
127.0.0.1 serves a real plugin; downloads are checked against the sha256, cached by digest
and read back from the cache (never a cache file whose digest no longer matches); every
failure is a ModuleError that says why; compiling uses the real wasmtime engine."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from host.proxy.config import PluginSpec, new_plugin
from host.proxy.modules import ModuleError, ModuleSource
from host.wasm import PluginHost

from .conftest import plugin

WASM = Path(plugin("add_header")).read_bytes()
DIGEST = hashlib.sha256(WASM).hexdigest()


class _Server:
    """Serves ``body`` with ``status`` for every GET, counting them."""

    def __init__(self) -> None:
        self.body = WASM
        self.status = 200
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                self.send_response(outer.status)
                self.send_header("content-length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *_args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/add_header.wasm"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.close()


@pytest.fixture
def host() -> Iterator[PluginHost]:
    h = PluginHost()
    yield h
    h.close()


def _spec(url: str, sha256: str = "") -> PluginSpec:
    return new_plugin("add", url, plugin_name="add_header", sha256=sha256)


def _fetch(src: ModuleSource, spec: PluginSpec) -> bytes:
    return asyncio.run(src.fetch(spec))


def test_a_download_is_verified_cached_and_then_read_from_the_cache(
    server: _Server, host: PluginHost, tmp_path: Path
) -> None:
    src = ModuleSource(host, tmp_path, lambda _m: None)
    assert _fetch(src, _spec(server.url, DIGEST)) == WASM
    assert server.hits == 1
    assert (tmp_path / f"{DIGEST}.wasm").read_bytes() == WASM
    server.close()  # the second fetch must not need the server
    assert _fetch(src, _spec(server.url, DIGEST)) == WASM
    assert server.hits == 1
    # and what it fetched compiles with the real engine
    assert src.compile(WASM, server.url).sha256 == DIGEST


def test_a_cache_file_whose_digest_no_longer_matches_is_downloaded_again(
    server: _Server, host: PluginHost, tmp_path: Path
) -> None:
    (tmp_path / f"{DIGEST}.wasm").write_bytes(b"tampered")
    src = ModuleSource(host, tmp_path, lambda _m: None)
    assert _fetch(src, _spec(server.url, DIGEST)) == WASM
    assert server.hits == 1
    assert (tmp_path / f"{DIGEST}.wasm").read_bytes() == WASM  # rewritten


def test_a_sha256_mismatch_is_refused_and_nothing_is_cached(
    server: _Server, host: PluginHost, tmp_path: Path
) -> None:
    src = ModuleSource(host, tmp_path, lambda _m: None)
    with pytest.raises(ModuleError, match=f"sha256 mismatch .* expected {'0' * 64}, got {DIGEST}"):
        _fetch(src, _spec(server.url, "0" * 64))
    assert list(tmp_path.iterdir()) == []


def test_download_errors_say_why(server: _Server, host: PluginHost, tmp_path: Path) -> None:
    src = ModuleSource(host, tmp_path, lambda _m: None)
    server.status = 404
    with pytest.raises(ModuleError, match=r"cannot download .*: HTTP 404"):
        _fetch(src, _spec(server.url))
    url = server.url
    server.close()
    with pytest.raises(ModuleError, match=r"cannot download .*: ConnectError"):
        _fetch(src, _spec(url))


def test_a_missing_file_and_a_module_that_does_not_compile_say_why(
    host: PluginHost, tmp_path: Path
) -> None:
    src = ModuleSource(host, None, lambda _m: None)
    missing = tmp_path / "nope.wasm"
    with pytest.raises(ModuleError, match=f"cannot read {missing}"):
        _fetch(src, _spec(str(missing)))
    junk = tmp_path / "junk.wasm"
    junk.write_bytes(b"not wasm")
    data = _fetch(src, _spec(str(junk)))
    with pytest.raises(ModuleError, match=r"^junk\.wasm: "):
        src.compile(data, "junk.wasm")
