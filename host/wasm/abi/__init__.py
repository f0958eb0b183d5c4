"""The host-function table: every import the host provides, one module per spec section.

``FUNCTIONS`` is the single table ``host.wasm.runtime.Instance`` links from. Each
function is named exactly as its import so grepping the spec finds the code.
"""

from __future__ import annotations

from host import _native

# the host's per-call glue compiled with mypyc, when built (before the submodules load)
_native.enable(__name__, __path__)

from host.wasm.abi import (
    buffers,
    callouts,
    contexts,
    header_maps,
    logging,
    metrics,
    properties,
    shared_state,
    stream_control,
    wasi,
)
from host.wasm.runtime import HostFunction

__all__ = ["FUNCTIONS", "PROVIDED"]


def _emscripten_notify_memory_growth(vm: object, _index: int) -> None:
    return None


def _pthread_equal(vm: object, a: int, b: int) -> int:
    return 1 if a == b else 0


_EXTRA = (
    HostFunction(
        "env", "emscripten_notify_memory_growth", ("i32",), (), _emscripten_notify_memory_growth
    ),
    HostFunction("env", "pthread_equal", ("i32", "i32"), ("i32",), _pthread_equal),
)

FUNCTIONS: tuple[HostFunction, ...] = (
    *logging.FUNCTIONS,
    *buffers.FUNCTIONS,
    *header_maps.FUNCTIONS,
    *properties.FUNCTIONS,
    *stream_control.FUNCTIONS,
    *callouts.FUNCTIONS,
    *shared_state.FUNCTIONS,
    *metrics.FUNCTIONS,
    *contexts.FUNCTIONS,
    *wasi.FUNCTIONS,
    *_EXTRA,
)

PROVIDED: frozenset[tuple[str, str]] = frozenset((f.module, f.name) for f in FUNCTIONS)
