"""Plugin errors as values: what failed, for which plugin, why, and what the plugin logged.

A ``PluginError`` is made where a plugin fails to load or start (``host.proxy.modules``
fetch/verify/compile, ``host.proxy.plugins`` start and configure in a scratch VM) and
travels as it is: ``PluginManager.apply``/``check``/``reload`` return it, the admin API
renders it with ``to_dict()``, ``gui.engine_service`` hands it to the window, which shows
it from its fields. ``str()`` is the one line the CLI and the engine's log print (the text
those printed before this type existed): nobody reads an error back out of that text.

A value module: the GUI may import it (pyproject's import-linter contract).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from host.wasm.types import FailState, Failure

__all__ = ["ErrorKind", "PluginError"]

# how many of the plugin's log lines ``str()`` appends (the value keeps more)
_LOG_IN_TEXT = 5


class ErrorKind(StrEnum):
    """What stage a plugin failed at."""

    FETCH = "fetch"  # the module could not be read, downloaded or pulled
    VERIFY = "verify"  # the module's sha256 is not the configured one
    COMPILE = "compile"  # wasmtime refused the module
    LOAD = "load"  # no VM: instantiation, a missing ABI function, a root id in use
    START = "start"  # proxy_on_vm_start refused or trapped
    CONFIGURE = "configure"  # proxy_on_configure refused or trapped
    TRAP = "trap"  # the plugin trapped while serving (RUNTIME_ERROR)
    TIMEOUT = "timeout"  # a callback ran over its time budget
    LISTEN = "listen"  # not a plugin's: a spec.tcp listener of the new config could not bind


_KIND_OF_STATE = {
    FailState.UNABLE_TO_CREATE_VM: ErrorKind.LOAD,
    FailState.UNABLE_TO_CLONE_VM: ErrorKind.LOAD,
    FailState.MISSING_FUNCTION: ErrorKind.LOAD,
    FailState.UNABLE_TO_INITIALIZE_CODE: ErrorKind.LOAD,
    FailState.START_FAILED: ErrorKind.START,
    FailState.CONFIGURE_FAILED: ErrorKind.CONFIGURE,
    FailState.RUNTIME_ERROR: ErrorKind.TRAP,
}


@dataclass(frozen=True)
class PluginError:
    """One plugin's failure to load, start, configure or run.

    ``message`` is the error itself; ``log`` the plugin's own log lines written while it
    failed (oldest first); ``state`` the Envoy/cpp-host fail state (``CONFIGURE_FAILED``
    ...; "" when no VM was involved) and ``reason`` the finer cause (a wasmtime trap code,
    ``root_id_in_use`` ...); ``at`` wall-clock seconds.
    """

    kind: ErrorKind
    plugin: str
    message: str
    log: tuple[str, ...] = field(default=())
    at: float = 0.0
    state: str = ""
    reason: str = ""

    @classmethod
    def from_failure(cls, plugin: str, failure: Failure, log: tuple[str, ...] = ()) -> PluginError:
        """The error a VM ``Failure`` means (its state decides the kind)."""
        kind = _KIND_OF_STATE.get(failure.state, ErrorKind.LOAD)
        if kind is ErrorKind.TRAP and failure.kind == "interrupt":
            kind = ErrorKind.TIMEOUT
        return cls(
            kind,
            plugin,
            failure.message,
            log=log,
            at=failure.at,
            state=failure.state.name,
            reason=failure.kind,
        )

    @property
    def text(self) -> str:
        """The error without the plugin's name: ``STATE: reason: message`` (when a VM was
        involved) and the plugin's last log lines, as ``(plugin log: a | b)``."""
        head = f"{self.state}: {self.reason}: {self.message}" if self.state else self.message
        if self.log:
            head += f" (plugin log: {' | '.join(self.log[-_LOG_IN_TEXT:])})"
        return head

    def __str__(self) -> str:
        return f"plugin {self.plugin}: {self.text}" if self.plugin else self.text

    def to_dict(self) -> dict[str, object]:
        """The admin API's JSON form (``text`` is ``str()`` without the plugin name)."""
        return {
            "kind": self.kind.value,
            "plugin": self.plugin,
            "message": self.message,
            "log": list(self.log),
            "at": self.at,
            "state": self.state,
            "reason": self.reason,
            "text": self.text,
        }
