"""The ``wasmdesk`` console script: no arguments opens the desktop app, anything else
is the engine's headless CLI (``host.cli``).

It lives in ``gui`` because ``gui`` may depend on ``host`` and never the reverse.
Qt is imported only when the window is actually opened, so ``wasmdesk try`` and
``wasmdesk inspect`` work where Qt cannot load.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from host import cli

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args:
        return cli.main(args)
    try:
        from gui.app import run  # type: ignore[import-not-found]
    except ImportError:
        return cli.main(["demo"])
    return int(run())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
