"""Wasmdesk's engine: the Proxy-Wasm host, the offline runner and the CLI.

Never imports Qt (PySide6, shiboken6, pyqtgraph) or ``gui``: the engine runs
headless (``wasmdesk try``, ``wasmdesk inspect``) and under the desktop app alike.
"""

from host import _native

_native.enable(__name__, __path__)  # the data path compiled with mypyc, when built

__version__ = "0.1.0"
__all__ = ["__version__"]
