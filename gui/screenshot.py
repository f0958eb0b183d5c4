"""Render the main views after some demo traffic to PNGs (offscreen is fine):

    QT_QPA_PLATFORM=offscreen python -m gui.screenshot docs/screenshots

writes ``main_window.png`` (the graphs), ``inspector.png`` (one request's plugin hops),
``logs.png``, ``config_form.png`` (a schema form with an inline error) and
``composer.png`` into the directory, at 1400x900 (the default window size), and the same
views at 1024x700 as ``<name>_1024x700.png`` (``--sizes 1400x900,1024x700`` picks
others; the first size gets the plain names). A path ending in ``.png`` writes only the
main window there, at the first size. Uses the real engine on ephemeral loopback ports
and a throwaway workspace; closes itself.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PySide6.QtWidgets import QApplication

from gui.app import build
from gui.event_wait import pump, pump_until
from gui.workspace import Workspace

__all__ = ["main"]


SIZES = ((1400, 900), (1024, 700))


def _sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        w, _, h = part.strip().lower().partition("x")
        out.append((int(w), int(h)))
    return out


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    sizes = list(SIZES)
    if "--sizes" in args:
        i = args.index("--sizes")
        sizes = _sizes(args[i + 1])
        del args[i : i + 2]
    target = Path(args[0] if args else "docs/screenshots")
    seconds = float(args[1]) if len(args) > 1 else 6.0
    only_main = target.suffix == ".png"
    out_dir = target.parent if only_main else target
    out_dir.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication([])
    app.setApplicationName("Wasmdesk")
    written: list[Path] = []
    for n, size in enumerate(sizes[:1] if only_main else sizes):
        suffix = "" if n == 0 else f"_{size[0]}x{size[1]}"
        if not _shoot(target, out_dir, only_main, seconds, size, suffix, written):
            return 1
    for p in written:
        print(f"wrote {p}")
    return 0 if written else 1


def _shoot(
    target: Path,
    out_dir: Path,
    only_main: bool,
    seconds: float,
    size: tuple[int, int],
    suffix: str,
    written: list[Path],
) -> bool:
    """One pass of every view at one window size; False if the engine did not start."""
    with tempfile.TemporaryDirectory() as tmp:
        window, service = build(
            Workspace.at(Path(tmp) / "workspace.yaml"),
            listen=("127.0.0.1", 0),
            admin=("127.0.0.1", 0),
        )
        window.resize(*size)
        window.show()
        service.start()
        if not pump_until(lambda: service.running, 15):
            print("the engine did not start", file=sys.stderr)
            return False

        def shot(name: str) -> None:
            # the status bar shows the worst lag of the last second: let the previous
            # grab (a full offscreen render) age out of it
            pump(1300)
            stem, ext = name.rsplit(".", 1)
            path = target if only_main else out_dir / f"{stem}{suffix}.{ext}"
            if window.grab().save(str(path)):
                written.append(path)

        pump_until(lambda: bool(window.plugin_list.names()), 5)
        window.plugin_list.select("auth-token")
        window._on_generate_button_clicked()
        pump(int(seconds * 600))
        # a mode change under load: its marker shows where it happened
        window._on_plugin_details_mode_changed("body-rewrite", {"canary_percent": 50.0})
        pump(int(seconds * 400))
        window.stats_panel.window_combo.setCurrentIndex(2)  # 15 seconds: lines, not dots
        shot("main_window.png")
        if not only_main:
            # Stop the load first, so the request below stays among the inspector's most
            # recent ones. It is one every demo plugin acts on (forced into body-rewrite's
            # canary).
            window.service.stop_traffic()
            pump(400)
            c = window.composer_panel
            c.method_combo.setCurrentText("GET")
            c.path_edit.setText("/hello?from=screenshot")
            c.headers_edit.setPlainText("x-wasmdesk-canary: always\nx-user-id: 42")
            window.tabs.setCurrentWidget(c)
            c.send_button.click()
            pump_until(lambda: c.status_label.text()[:1].isdigit(), 5)
            shot("composer.png")
            insp = window.inspector_panel
            window.tabs.setCurrentWidget(insp)
            pump(300)
            for rid in insp.request_ids():
                row = next(r for r in insp.rows() if r[0] == str(rid))
                if row[3].startswith("/hello?from=screenshot"):
                    insp.set_paused(True)
                    insp.select_request(rid)
                    break
            pump_until(lambda: "body-rewrite" in insp.detail_view.toPlainText(), 5)
            shot("inspector.png")
            window.tabs.setCurrentWidget(window.logs_panel)
            window.logs_panel.set_filters(search="denied")
            shot("logs.png")
            window.logs_panel.set_filters()
            window.plugin_list.select("add-header")
            d = window.plugin_details
            d.sections.setCurrentIndex(1)
            if d.form is not None:
                f = d.form.field("request_header.name")
                f.line.setText("x team")
                f.edited()
                d.form.field("response_header.value").line.setText("wasmdesk")
                d.form.field("response_header.value").edited()
            window.tabs.setCurrentWidget(window.stats_panel)
            shot("config_form.png")
        window.close()
        service.close()
    return True


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
