"""Warnings about a running plugin that its own output would not make obvious.

Shared by ``wasmdesk try`` (``host.runner``) and ``/plugins`` (``host.proxy.plugins``):
the VM's load-time warnings (a pre-0.1.0 module run as 0.1.0, exports whose
signature the host cannot call) and a plugin that evidently found no context for
its root id. SDKs register their contexts under a root id; Envoy and Istio pass
``""`` unless ``root_id`` / ``pluginName`` is set, and an SDK that finds no
factory for the id says so in its own words (matched below) or, as the C++ SDK
does for a root context, silently runs its default contexts, which answer
everything with Continue.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from host.wasm.types import LogLevel

if TYPE_CHECKING:
    from host.wasm.plugin_host import LogRecord
    from host.wasm.vm import PluginVM

__all__ = [
    "MISSING_ROOT_CONTEXT_LOGS",
    "missing_root_context",
    "plugin_warnings",
    "root_id_warning",
    "silent_plugin_warning",
]

# What each SDK logs when no context factory is registered under the root id:
# the C++ SDK (proxy_wasm_intrinsics.cc ensureContext: logError, for a stream
# context), the AssemblyScript SDK (@solo-io/proxy-runtime runtime.ts
# ensureRootContext: an Error, logged critical by abort_proc_exit before proc_exit(255)).
MISSING_ROOT_CONTEXT_LOGS = (
    "no context factory for root_id",
    "Missing root context factory for root id",
)

_HINT = (
    "set the root id the plugin registers its contexts under (Istio pluginName, Envoy "
    "root_id; wasmdesk try --root-id NAME)"
)


def _shown(root_id: str) -> str:
    return repr(root_id) if root_id else '"" (unset)'


def missing_root_context(message: str) -> bool:
    """Whether a plugin log line is an SDK saying it has no context for its root id."""
    return any(m in message for m in MISSING_ROOT_CONTEXT_LOGS)


def root_id_warning(root_id: str, sdk_line: str) -> str:
    return (
        f"the plugin found no context for root id {_shown(root_id)} (its SDK logged: "
        f"{sdk_line.strip()[:160]}): {_HINT}"
    )


def silent_plugin_warning(root_id: str) -> str:
    return (
        f"the plugin's callbacks ran but changed nothing and logged nothing with root id "
        f"{_shown(root_id)}; if it registers its contexts under a name, the SDK's default "
        f"contexts answered instead: {_HINT}"
    )


def sdk_missing_root_line(logs: Iterable[LogRecord], plugin: str | None = None) -> str | None:
    """The first SDK log line (error or worse) saying the root id has no context."""
    for r in logs:
        if (
            r.level >= LogLevel.ERROR
            and r.source != "host"
            and (plugin is None or r.plugin == plugin)
            and missing_root_context(r.message)
        ):
            return r.message
    return None


def plugin_warnings(
    vm: PluginVM | None, logs: Iterable[LogRecord], plugin: str, root_id: str
) -> list[str]:
    """The VM's load-time warnings, then the missing-root-context one if the SDK said so."""
    out = list(vm.warnings) if vm is not None else []
    line = sdk_missing_root_line(logs, plugin)
    if line is not None:
        out.append(root_id_warning(root_id, line))
    return out
