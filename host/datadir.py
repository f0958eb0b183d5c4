"""Where the engine keeps user data (recordings, crash sessions): the platform's user
data directory for "wasmdesk" (platformdirs), ``WASMDESK_DATA_DIR`` overriding."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["user_data_dir"]


def user_data_dir() -> Path:
    env = os.environ.get("WASMDESK_DATA_DIR")
    if env:
        return Path(env)
    try:
        import platformdirs
    except ImportError:  # pragma: no cover - a dependency; keep working without it
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(base) / "wasmdesk"
    return Path(platformdirs.user_data_dir("wasmdesk"))
