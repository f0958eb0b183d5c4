"""The system libraries Qt's xcb (X11) platform plugin loads, checked before Qt starts.

PySide6's wheels carry Qt but not the X11/xcb libraries its ``xcb`` platform plugin links
against. When one is missing (``libxcb-cursor0`` is the usual one since Qt 6.5) Qt prints
"Could not load the Qt platform plugin "xcb"" and aborts the process (exit 134), which
no ``try`` can catch. The launcher asks :func:`missing_xcb_packages` first and prints the
``apt-get install`` line instead. The table is ``ldd`` of PySide6's ``libqxcb.so`` and
``libQt6XcbQpa.so`` with the Debian/Ubuntu package of each library.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping

__all__ = ["XCB_LIBRARIES", "apt_install_line", "missing_xcb_packages", "uses_xcb"]

# soname -> Debian package
XCB_LIBRARIES: dict[str, str] = {
    "libxcb.so.1": "libxcb1",
    "libX11.so.6": "libx11-6",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
}


def uses_xcb(env: Mapping[str, str] | None = None) -> bool:
    """Whether Qt will pick its xcb platform: asked for, or an X display without Wayland."""
    e = os.environ if env is None else env
    if not sys.platform.startswith("linux"):
        return False
    platform = e.get("QT_QPA_PLATFORM", "")
    if platform:
        return platform.split(":", 1)[0] == "xcb"
    return bool(e.get("DISPLAY")) and not e.get("WAYLAND_DISPLAY")


def missing_xcb_packages(libraries: Mapping[str, str] | None = None) -> list[str]:
    """The packages whose library the dynamic loader cannot load (dlopen by soname)."""
    missing: list[str] = []
    for soname, package in (XCB_LIBRARIES if libraries is None else libraries).items():
        try:
            ctypes.CDLL(soname)
        except OSError:
            if package not in missing:
                missing.append(package)
    return missing


def apt_install_line(packages: list[str]) -> str:
    return "sudo apt-get install " + " ".join(packages)
