"""Entry point of the PyInstaller bundle: the ``wasmdesk`` console script's ``main``."""

import sys

from gui.launcher import main

if __name__ == "__main__":
    sys.exit(main())
