"""The wheel (``python -m build``) installs the app with its resources: the demo plugins
and the default config are found in an environment that has no checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_installs_the_app_with_its_resources(tmp_path: Path) -> None:
    out = tmp_path / "wheel"
    r = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = out.glob("wasmdesk-*.whl")
    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "--quiet",
            "--no-deps",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    # dependencies from this environment's site-packages, the app only from the wheel
    # (PYTHONPATH entries are not site dirs: this venv's editable-install finder stays off)
    env = dict(os.environ, PYTHONPATH=sysconfig.get_paths()["purelib"])
    env.pop("WASMDESK_RESOURCES", None)
    r = subprocess.run(
        [
            str(py),
            "-c",
            "import host, host.resources as r; print(host.__file__); print(r.resources_dir()); "
            "print(r.demo_plugin('add_header'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    module_file, res_dir, plugin = r.stdout.split()
    assert Path(module_file).is_relative_to(env_dir)
    assert Path(res_dir) == env_dir / "share" / "wasmdesk" / "resources"
    assert (Path(res_dir) / "default" / "wasmdesk.yaml").is_file()
    assert Path(plugin).read_bytes() == (ROOT / "resources/plugins/add_header.wasm").read_bytes()
    r = subprocess.run(
        [str(env_dir / "bin" / "wasmdesk"), "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "+ x-wasmdesk: hello" in r.stdout
