"""The packaged desktop app (packaging/build_app.py, PyInstaller one-folder): built once
per module, then its binary runs ``inspect`` and ``try`` on a bundled demo plugin,
``serve`` answers a request, and the window opens offscreen. Slow (a build takes about
45-105 s on the 2-core reference machine, 265 MiB); CI runs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
# early: in a parallel run one worker builds the bundle first while the others run the rest
pytestmark = [pytest.mark.slow, pytest.mark.early]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("bundle")
    env = dict(os.environ, PYINSTALLER_CONFIG_DIR=str(tmp / "pyi-config"))  # no ~/.cache
    start = time.monotonic()
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "packaging" / "build_app.py"),
            "--dist",
            str(tmp / "dist"),
            "--work",
            str(tmp / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    folder = tmp / "dist" / "wasmdesk"
    size = sum(f.lstat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())
    print(f"\nbundle: {size / 2**20:.0f} MiB, built in {time.monotonic() - start:.0f} s")
    yield folder / "wasmdesk"


def _env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "WASMDESK_RESOURCES", "VIRTUAL_ENV")
    }
    env["WASMDESK_CACHE_DIR"] = str(tmp_path / "cache")
    env["WASMDESK_WORKSPACE"] = str(tmp_path / "workspace.yaml")
    return env


def _run(binary: Path, tmp_path: Path, *args: str, **kw: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**_env(tmp_path), **kw},
    )


def _demo(binary: Path, name: str) -> str:
    path = binary.parent / "_internal" / "resources" / "plugins" / f"{name}.wasm"
    assert path.is_file(), path
    return str(path)


def test_bundle_inspect_and_try(bundle: Path, tmp_path: Path) -> None:
    r = _run(bundle, tmp_path, "inspect", _demo(bundle, "add_header"), "--json")
    assert r.returncode == 0, r.stderr
    assert '"abi": "0.2.0"' in r.stdout
    r = _run(bundle, tmp_path, "try", _demo(bundle, "auth_token"), "--path", "/private")
    assert r.returncode == 0, r.stderr
    assert "local reply 403" in r.stdout


def test_bundle_serve_answers_a_request(bundle: Path, tmp_path: Path) -> None:
    port, admin = _free_port(), _free_port()
    proc = subprocess.Popen(
        [
            str(bundle),
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--admin",
            f"127.0.0.1:{admin}",
            "--no-watch",
        ],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/hello", timeout=2)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "serve did not come up"
                time.sleep(0.2)
        assert r.status_code == 200
        assert r.headers["server"] == "wasmdesk-demo-upstream"
        assert r.headers.get("x-wasmdesk-plugin") == "add_header"  # the bundled default config
        httpx.post(f"http://127.0.0.1:{admin}/quitquitquit", json={}, timeout=5)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bundle_window_opens_offscreen(bundle: Path, tmp_path: Path) -> None:
    r = _run(bundle, tmp_path, QT_QPA_PLATFORM="offscreen", WASMDESK_QUIT_AFTER_MS="3000")
    assert r.returncode == 0, r.stderr[-3000:]
    # the window saved its workspace: the app really ran its engine and Qt
    assert (tmp_path / "workspace.yaml").is_file()
