"""The data path compiled with mypyc (host/_native.py, packaging/build_native.py): a
build is used only when it matches the sources and the interpreter, the plain-Python
modules are the fallback and serve the same traffic, and a changed source is never
shadowed by an older build."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from host import _native

ROOT = Path(__file__).resolve().parents[2]

# A whole request through a real proxy (no plugin) to a real upstream, on loopback,
# in a fresh interpreter; prints which module file served and the response.
_SMOKE = r"""
import asyncio, json, socket, sys
import host._native as n

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

from host.proxy.config import parse_config
from host.proxy.server import ProxyServer
import host.proxy.exchange as ex
from host.wasm.runtime import crossing

async def main():
    async def upstream(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
        await writer.drain()
        writer.close()
    up = await asyncio.start_server(upstream, "127.0.0.1", 0)
    up_port = up.sockets[0].getsockname()[1]
    port, admin = free_port(), free_port()
    cfg = parse_config(
        "apiVersion: wasmdesk.dev/v1alpha1\nkind: Proxy\nspec:\n"
        f"  listen: 127.0.0.1:{port}\n  admin: 127.0.0.1:{admin}\n"
        f"  clusters: [{{name: up, url: 'http://127.0.0.1:{up_port}'}}]\n"
        "  defaultCluster: up\n",
        "<smoke>", ".")
    server = ProxyServer(cfg)
    await server.start()
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n")
        head = await r.readuntil(b"\r\n\r\n")
        body = await r.readexactly(3)
        w.close()
    finally:
        await server.stop()
        up.close()
    print(json.dumps({"state": n.current(), "file": ex.__file__, "crossing": crossing(),
                      "status": head.split(b" ")[1].decode(), "body": body.decode()}))

asyncio.run(main())
"""


def _smoke(env: dict[str, str]) -> dict[str, str]:
    r = subprocess.run(
        [sys.executable, "-c", _SMOKE],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, **env),
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


def test_the_plain_python_data_path_serves_when_asked_to() -> None:
    got = _smoke({"WASMDESK_PURE": "1"})
    assert got["state"] == "pure: WASMDESK_PURE is set"
    assert got["file"].endswith("exchange.py")
    assert got["crossing"] == "ctypes"  # the C crossing is part of the build
    assert (got["status"], got["body"]) == ("200", "ok\n")


def test_the_compiled_data_path_is_used_when_built_and_serves_the_same() -> None:
    state = _native.state(ROOT)
    if state != "compiled":
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the compiled data path (bootstrap builds it): {state}")
        pytest.skip(state)
    got = _smoke({})
    assert got["state"] == "compiled"
    assert ".native" in got["file"] and not got["file"].endswith(".py")
    assert got["crossing"] == "C"
    assert (got["status"], got["body"]) == ("200", "ok\n")


def test_a_changed_source_is_never_shadowed_by_an_older_build(tmp_path: Path) -> None:
    # a checkout with a matching stamp, then one source edited
    for rel in _native.NATIVE_MODULES + _native.NATIVE_EXTENSIONS:
        dest = tmp_path / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest)
    stamp = tmp_path / ".native" / "stamp.json"
    stamp.parent.mkdir()
    stamp.write_text(
        json.dumps(
            {"sources": _native.sources_digest(tmp_path), "interpreter": _native.interpreter_tag()}
        )
    )
    env_pure = os.environ.pop("WASMDESK_PURE", None)
    try:
        assert _native.state(tmp_path) == "compiled"
        edited = tmp_path / "host" / "proxy" / "framing.py"
        edited.write_text(edited.read_text() + "\n# edited\n")
        assert _native.state(tmp_path) == "pure: sources changed since the build"
        # so does a C extension's source
        stamp.write_text(
            json.dumps(
                {"sources": _native.sources_digest(tmp_path), "interpreter": _native.interpreter_tag()}
            )
        )
        assert _native.state(tmp_path) == "compiled"
        c_source = tmp_path / "host" / "wasm" / "_crossing.c"
        c_source.write_text(c_source.read_text() + "\n/* edited */\n")
        assert _native.state(tmp_path) == "pure: sources changed since the build"
        stamp.write_text(
            json.dumps(
                {"sources": _native.sources_digest(tmp_path), "interpreter": "cpython-299.so"}
            )
        )
        assert _native.state(tmp_path) == "pure: built for another interpreter"
        stamp.write_text("{not json")
        assert _native.state(tmp_path) == "pure: no build (packaging/build_native.py)"
    finally:
        if env_pure is not None:
            os.environ["WASMDESK_PURE"] = env_pure


def test_every_compiled_module_is_a_source_of_this_checkout() -> None:
    for rel in _native.NATIVE_MODULES:
        assert (ROOT / rel).is_file(), rel
    assert len(set(_native.NATIVE_MODULES)) == len(_native.NATIVE_MODULES)
