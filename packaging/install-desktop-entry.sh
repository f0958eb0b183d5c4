#!/bin/sh
# Add Wasmdesk to the desktop's application menu (freedesktop.org desktop entry) for
# the current user, pointing at this checkout's .venv. Run packaging/bootstrap.sh first.
# Remove it again with: packaging/install-desktop-entry.sh --uninstall
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
data=${XDG_DATA_HOME:-$HOME/.local/share}
entry="$data/applications/wasmdesk.desktop"
icon="$data/icons/hicolor/scalable/apps/wasmdesk.svg"
if [ "${1:-}" = "--uninstall" ]; then
    rm -f "$entry" "$icon"
    echo "removed $entry"
    exit 0
fi
if [ ! -x "$root/.venv/bin/wasmdesk" ]; then
    echo "install-desktop-entry: $root/.venv/bin/wasmdesk not found; run packaging/bootstrap.sh first" >&2
    exit 2
fi
mkdir -p "$(dirname "$entry")" "$(dirname "$icon")"
cp "$root/resources/icons/wasmdesk.svg" "$icon"
tmp="$entry.tmp.$$"
cat > "$tmp" <<DESKTOP
[Desktop Entry]
Type=Application
Name=Wasmdesk
GenericName=Proxy-Wasm workbench
Comment=Load, configure and watch Proxy-Wasm plugins on live local traffic
Exec="$root/.venv/bin/wasmdesk"
Icon=$icon
Terminal=false
Categories=Development;Network;
Keywords=wasm;envoy;istio;proxy;plugin;
DESKTOP
mv "$tmp" "$entry"
echo "installed $entry"
