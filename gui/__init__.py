"""Wasmdesk's desktop app (PySide6 + pyqtgraph). Reaches the engine through one facade."""
