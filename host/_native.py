"""The data path compiled with mypyc, when a build of exactly these sources exists.

``packaging/build_native.py`` (run by ``packaging/bootstrap.sh``) compiles the modules
in ``NATIVE_MODULES`` with mypyc into ``.native/`` at the checkout's root, apart from the
sources, with a stamp naming the SHA-256 of the sources it compiled and the interpreter
it compiled for. ``enable`` (called first thing by ``host`` and ``host.proxy``) puts the
compiled directory in front of the package's ``__path__`` only when that stamp matches
the sources on disk now, so an edited source is never shadowed by an older build: the
process then simply runs the Python source. ``WASMDESK_PURE=1`` forces the source too.
Without a compiler, a build, or in the packaged app, everything is plain Python: the
compiled modules are the same code, only faster.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path

__all__ = [
    "NATIVE_EXTENSIONS",
    "NATIVE_MODULES",
    "current",
    "enable",
    "native_dir",
    "sources_digest",
    "state",
]

# The data path's modules, as paths from the checkout's root; what they import from
# outside this list stays interpreted. Each must compile with mypyc (no class subclassed
# from interpreted code unless marked ``mypyc_attr(allow_interpreted_subclasses=True)``).
NATIVE_MODULES = (
    "host/headers.py",
    "host/proxy/core_api.py",
    "host/proxy/deadlines.py",
    "host/proxy/downstream.py",
    "host/proxy/edge.py",
    "host/proxy/exchange.py",
    "host/proxy/exchange_upstream.py",
    "host/proxy/framing.py",
    "host/proxy/grpc_reply.py",
    "host/proxy/halfstream.py",
    "host/proxy/http1.py",
    "host/proxy/stream.py",
    "host/proxy/upstream.py",
    "host/proxy/upstream_api.py",
    "host/proxy/write_batch.py",
    # the plugin chain around the host
    "host/proxy/canary.py",
    "host/proxy/chain.py",
    "host/proxy/hops.py",
    "host/proxy/inspector.py",
    "host/proxy/pause.py",
    "host/proxy/plugins_requests.py",
    "host/proxy/records.py",
    "host/proxy/routes.py",
    "host/proxy/server.py",
    "host/proxy/slots.py",
    "host/proxy/stats.py",
    "host/proxy/stream_attrs.py",
    # the Proxy-Wasm host's per-call glue
    "host/wasm/abi/_common.py",
    "host/wasm/abi/_validate.py",
    "host/wasm/abi/buffers.py",
    "host/wasm/abi/contexts.py",
    "host/wasm/abi/header_maps.py",
    "host/wasm/abi/logging.py",
    "host/wasm/abi/properties.py",
    "host/wasm/abi/stream_control.py",
    "host/wasm/context.py",
    "host/wasm/pairs.py",
    "host/wasm/plugin_host.py",
    "host/wasm/runtime.py",
    "host/wasm/vm.py",
)

# Hand-written C extension modules built beside them (see each file's header): only
# what has to be C, the crossing between Python and wasmtime; each has a pure-Python
# path its importer falls back to.
NATIVE_EXTENSIONS = ("host/wasm/_crossing.c",)

ROOT = Path(__file__).resolve().parents[1]
_state: str | None = None


def native_dir(root: Path = ROOT) -> Path:
    return root / ".native"


def interpreter_tag() -> str:
    """What a build is only good for: this interpreter's extension-module suffix."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    return f"{sys.implementation.cache_tag}{suffix}"


def sources_digest(root: Path = ROOT) -> str:
    h = hashlib.sha256()
    for rel in NATIVE_MODULES + NATIVE_EXTENSIONS:
        h.update(rel.encode() + b"\0")
        h.update((root / rel).read_bytes())
    return h.hexdigest()


def state(root: Path = ROOT) -> str:
    """``"compiled"`` when the build in ``.native`` matches the sources and this
    interpreter, else why not (``"pure: ..."``)."""
    if os.environ.get("WASMDESK_PURE"):
        return "pure: WASMDESK_PURE is set"
    stamp = native_dir(root) / "stamp.json"
    try:
        built = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return "pure: no build (packaging/build_native.py)"
    try:
        digest = sources_digest(root)
    except OSError:
        return "pure: sources not found"
    if built.get("interpreter") != interpreter_tag():
        return "pure: built for another interpreter"
    if built.get("sources") != digest:
        return "pure: sources changed since the build"
    return "compiled"


def enable(package: str, path: list[str]) -> None:
    """Put ``package``'s compiled modules in front of its ``__path__`` (a package's
    ``__init__`` calls this with its own name and ``__path__``) when the build matches."""
    global _state
    if _state is None:
        _state = state()
        if _state == "compiled":
            _load_runtime()
    if _state != "compiled":
        return
    compiled = native_dir() / "lib" / Path(*package.split("."))
    if compiled.is_dir() and str(compiled) not in path:
        path.insert(0, str(compiled))


def _load_runtime() -> None:
    """mypyc's shared library (one per build): every compiled module imports it by its
    top-level name, so it is loaded under that name from the build directory (rather
    than putting the directory on ``sys.path``)."""
    global _state
    lib = native_dir() / "lib"
    try:
        for so in lib.glob("*__mypyc*"):
            name = so.name.split(".", 1)[0]
            if name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(name, so)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {so}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
    except (ImportError, OSError) as e:
        _state = f"pure: the build does not load ({e})"


def current() -> str:
    """What this process runs: ``"compiled"`` or ``"pure: why"`` (for ``/server_info``
    and the benches)."""
    return _state if _state is not None else state()
