"""Proxy-Wasm enumerations and small value types (ABI doc §4).

Member names follow the Rust SDK's ``src/types.rs`` where it has them; numbers are
the ABI's. Pure data: no wasmtime, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

__all__ = [
    "ABI_MARKERS",
    "AbiVersion",
    "BufferType",
    "FailState",
    "Failure",
    "LogLevel",
    "MapType",
    "MetricType",
    "PeerType",
    "Status",
    "StreamType",
]


class Status(IntEnum):
    OK = 0
    NOT_FOUND = 1
    BAD_ARGUMENT = 2
    SERIALIZATION_FAILURE = 3
    PARSE_FAILURE = 4
    BAD_EXPRESSION = 5
    INVALID_MEMORY_ACCESS = 6
    EMPTY = 7
    CAS_MISMATCH = 8
    RESULT_MISMATCH = 9
    INTERNAL_FAILURE = 10
    BROKEN_CONNECTION = 11
    UNIMPLEMENTED = 12


class LogLevel(IntEnum):
    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4
    CRITICAL = 5

    @classmethod
    def parse(cls, text: str) -> LogLevel:
        t = text.strip().upper()
        if t == "WARNING":
            t = "WARN"
        try:
            return cls[t]
        except KeyError:
            raise ValueError(
                f"unknown log level {text!r} (expected trace, debug, info, warn, error, critical)"
            ) from None


class MapType(IntEnum):
    HTTP_REQUEST_HEADERS = 0
    HTTP_REQUEST_TRAILERS = 1
    HTTP_RESPONSE_HEADERS = 2
    HTTP_RESPONSE_TRAILERS = 3
    GRPC_RECEIVE_INITIAL_METADATA = 4
    GRPC_RECEIVE_TRAILING_METADATA = 5
    HTTP_CALL_RESPONSE_HEADERS = 6
    HTTP_CALL_RESPONSE_TRAILERS = 7


class BufferType(IntEnum):
    HTTP_REQUEST_BODY = 0
    HTTP_RESPONSE_BODY = 1
    DOWNSTREAM_DATA = 2
    UPSTREAM_DATA = 3
    HTTP_CALL_RESPONSE_BODY = 4
    GRPC_RECEIVE_BUFFER = 5
    VM_CONFIGURATION = 6
    PLUGIN_CONFIGURATION = 7
    CALL_DATA = 8


class StreamType(IntEnum):
    HTTP_REQUEST = 0
    HTTP_RESPONSE = 1
    DOWNSTREAM = 2
    UPSTREAM = 3


class PeerType(IntEnum):
    UNKNOWN = 0
    LOCAL = 1
    REMOTE = 2


class MetricType(IntEnum):
    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2


class AbiVersion(str):
    """One of "0.1.0", "0.2.0", "0.2.1"."""


ABI_MARKERS: dict[str, str] = {
    "proxy_abi_version_0_1_0": "0.1.0",
    "proxy_abi_version_0_2_0": "0.2.0",
    "proxy_abi_version_0_2_1": "0.2.1",
}


class FailState(IntEnum):
    """cpp-host's VM fail states (ABI doc §4.11); only RUNTIME_ERROR is reloadable."""

    OK = 0
    UNABLE_TO_CREATE_VM = 1
    UNABLE_TO_CLONE_VM = 2
    MISSING_FUNCTION = 3
    UNABLE_TO_INITIALIZE_CODE = 4
    START_FAILED = 5
    CONFIGURE_FAILED = 6
    RUNTIME_ERROR = 7


@dataclass(frozen=True)
class Failure:
    """Why a plugin VM stopped running guest code, kept for display.

    ``state`` is the Envoy/cpp-host fail state; ``kind`` the finer reason
    (a wasmtime trap code such as ``unreachable``, ``memory_out_of_bounds``,
    ``interrupt``, or ``proc_exit``, ``host_error``, ``start_failed`` ...).
    """

    state: FailState
    kind: str
    message: str
    callback: str = ""
    context_id: int = 0
    backtrace: tuple[str, ...] = field(default=())
    at: float = 0.0  # wall-clock seconds

    def to_dict(self) -> dict[str, object]:
        return {
            "state": self.state.name,
            "kind": self.kind,
            "message": self.message,
            "callback": self.callback,
            "context_id": self.context_id,
            "backtrace": list(self.backtrace),
        }
