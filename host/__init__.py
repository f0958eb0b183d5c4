"""Wasmdesk's engine: the Proxy-Wasm host, the offline runner and the CLI.

Never imports Qt (PySide6, shiboken6, pyqtgraph) or ``gui``: the engine runs
headless (``wasmdesk try``, ``wasmdesk inspect``) and under the desktop app alike.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
