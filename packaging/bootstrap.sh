#!/bin/sh
# Set up everything Wasmdesk needs on a fresh machine: a virtual environment at
# .venv in the checkout with the app, its dependencies and the test tools.
# Idempotent and quick when nothing changed (keyed on pyproject.toml's hash).
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.wasmdesk-installed
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[test]'
    echo "$want" > "$stamp"
fi
# The data path compiled with mypyc (about 30 s once; plain Python when it cannot be
# built, and whenever its sources changed since: see host/_native.py).
.venv/bin/python packaging/build_native.py || echo "data path: pure Python (the build script failed)"
