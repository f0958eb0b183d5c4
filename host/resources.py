"""One locator for files under ``resources/``: works from a checkout, an installed
wheel (shared data) and a frozen bundle (PyInstaller's ``sys._MEIPASS``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["demo_plugin", "resources_dir"]


def resources_dir() -> Path:
    env = os.environ.get("WASMDESK_RESOURCES")
    if env:
        return Path(env)
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen) / "resources"
    here = Path(__file__).resolve().parent.parent / "resources"
    if here.is_dir():
        return here
    installed = Path(sys.prefix) / "share" / "wasmdesk" / "resources"
    if not installed.is_dir():  # a ``pip install --user`` wheel: under the user base
        import site

        user = Path(site.getuserbase()) / "share" / "wasmdesk" / "resources"
        if user.is_dir():
            return user
    return installed


def demo_plugin(name: str) -> Path:
    """Path of a bundled plugin module, e.g. ``demo_plugin("add_header")``."""
    path = resources_dir() / "plugins" / f"{name}.wasm"
    if not path.is_file():
        raise FileNotFoundError(f"bundled plugin {name!r} not found at {path}")
    return path
