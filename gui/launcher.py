"""The ``wasmdesk`` console script: no arguments opens the desktop app, anything else
is the engine's headless CLI (``host.cli``).

It lives in ``gui`` because ``gui`` may depend on ``host`` and never the reverse.
Qt is imported only when the window is actually opened, so ``wasmdesk try`` and
``wasmdesk inspect`` work where Qt cannot load.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from host import cli

__all__ = ["main"]


_NO_WINDOW_HINT = """\
  wasmdesk serve      the proxy with the demo plugins, headless (admin API on 127.0.0.1:9901)
  wasmdesk demo       the bundled plugins on sample requests, printed
  wasmdesk --help     every command
or set QT_QPA_PLATFORM=offscreen to run the window without a screen."""


def no_display_reason(env: dict[str, str] | None = None) -> str | None:
    """Why a window cannot open here, or None. On Linux, Qt aborts the process (it does
    not raise) when it finds no X11 or Wayland display, so look before starting it."""
    e = os.environ if env is None else env
    if not sys.platform.startswith("linux") or e.get("QT_QPA_PLATFORM"):
        return None
    if e.get("DISPLAY") or e.get("WAYLAND_DISPLAY"):
        return None
    return "no display to open the window on (neither DISPLAY nor WAYLAND_DISPLAY is set)"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args:
        return cli.main(args)
    reason = no_display_reason()
    if reason is not None:
        print(f"wasmdesk: {reason}. Instead:\n{_NO_WINDOW_HINT}", file=sys.stderr)
        return 2
    from gui.qt_system_libs import apt_install_line, missing_xcb_packages, uses_xcb

    missing = missing_xcb_packages() if uses_xcb() else []
    if missing:
        print(
            "wasmdesk: Qt's X11 (xcb) platform needs system libraries that are missing: "
            f"{', '.join(missing)}. Install them with:\n  {apt_install_line(missing)}\n"
            f"Meanwhile:\n{_NO_WINDOW_HINT}",
            file=sys.stderr,
        )
        return 2
    try:
        from gui.app import run
    except ImportError as e:  # e.g. Qt's system libraries are missing
        print(f"wasmdesk: the desktop app cannot start: {e}. Instead:\n{_NO_WINDOW_HINT}",
              file=sys.stderr)
        return 2
    return int(run())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
