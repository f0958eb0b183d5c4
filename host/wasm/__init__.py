"""The Proxy-Wasm host on wasmtime: load plugins, run their callbacks, isolate failures.

Knows nothing of sockets or Qt. ``PluginHost`` owns what VMs share; ``PluginVM`` is
one module instance with its contexts; ``HttpContext`` is one plugin on one stream.
"""

from host import _native

# the host's per-call glue compiled with mypyc, when built (before the submodules load)
_native.enable(__name__, __path__)


from host.headers import HeaderMap
from host.wasm.context import (
    Action,
    HttpContext,
    LocalResponse,
    RootContext,
    StreamInfo,
    TcpContext,
)
from host.wasm.plugin_host import LogRecord, PluginHost, VirtualClock
from host.wasm.runtime import Engine, LoadError, Module
from host.wasm.types import FailState, Failure, LogLevel, Status
from host.wasm.vm import PluginVM, VmConfig, VmStartError, detect_abi

__all__ = [
    "Action",
    "Engine",
    "FailState",
    "Failure",
    "HeaderMap",
    "HttpContext",
    "LoadError",
    "LocalResponse",
    "LogLevel",
    "LogRecord",
    "Module",
    "PluginHost",
    "PluginVM",
    "RootContext",
    "Status",
    "StreamInfo",
    "TcpContext",
    "VirtualClock",
    "VmConfig",
    "VmStartError",
    "detect_abi",
]
