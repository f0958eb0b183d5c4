"""Render the main window after some demo traffic to a PNG (offscreen is fine):

    QT_QPA_PLATFORM=offscreen python -m gui.screenshot docs/screenshots/main_window.png

Uses the real engine on ephemeral loopback ports and a throwaway workspace.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from gui.app import build
from gui.workspace import Workspace

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "docs/screenshots/main_window.png")
    seconds = float(args[1]) if len(args) > 1 else 6.0
    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        window, service = build(
            Workspace.at(Path(tmp) / "workspace.yaml"),
            listen=("127.0.0.1", 0),
            admin=("127.0.0.1", 0),
        )
        window.resize(1600, 1000)
        window.show()
        ok = {"saved": False}

        def on_started() -> None:
            window.plugin_list.select("auth-token")
            window._on_generate_button_clicked()
            QTimer.singleShot(int(seconds * 1000), snap)

        def snap() -> None:
            out.parent.mkdir(parents=True, exist_ok=True)
            ok["saved"] = window.grab().save(str(out))
            window.close()
            app.quit()

        service.started.connect(on_started)
        service.start_failed.connect(lambda msg: (print(msg, file=sys.stderr), app.quit()))
        QTimer.singleShot(int((seconds + 20) * 1000), app.quit)
        service.start()
        app.exec()
        service.close()
    if ok["saved"]:
        print(f"wrote {out}")
    return 0 if ok["saved"] else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
