"""The launcher looks for Qt's xcb libraries before starting Qt (a missing one makes Qt
abort with exit 134) and prints the apt-get line instead."""

from __future__ import annotations

import ctypes

import pytest

from gui import launcher
from gui.qt_system_libs import XCB_LIBRARIES, missing_xcb_packages, uses_xcb


def test_uses_xcb() -> None:
    assert uses_xcb({"DISPLAY": ":0"})
    assert not uses_xcb({"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"})
    assert uses_xcb({"QT_QPA_PLATFORM": "xcb", "WAYLAND_DISPLAY": "wayland-0"})
    assert not uses_xcb({"QT_QPA_PLATFORM": "offscreen", "DISPLAY": ":0"})
    assert not uses_xcb({})


def test_missing_packages_come_from_the_real_loader() -> None:
    table = {"libc.so.6": "libc6", "libwasmdesk-absent.so.7": "wasmdesk-absent"}
    assert missing_xcb_packages(table) == ["wasmdesk-absent"]
    # what it reports for the real table agrees with dlopen, library by library
    for soname, package in XCB_LIBRARIES.items():
        try:
            ctypes.CDLL(soname)
            present = True
        except OSError:
            present = False
        assert (package in missing_xcb_packages({soname: package})) is not present


def test_launcher_prints_the_apt_line_instead_of_letting_qt_abort(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(XCB_LIBRARIES, "libwasmdesk-absent.so.7", "wasmdesk-absent")
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", ":77")
    assert launcher.main([]) == 2
    err = capsys.readouterr().err
    assert "sudo apt-get install" in err and "wasmdesk-absent" in err
    assert "wasmdesk serve" in err
