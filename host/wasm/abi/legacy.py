"""Pre-0.1.0 modules (Istio 1.4/1.5 era): recognised and run as ABI 0.1.0.

Plugins built before the ABI was versioned export no ``proxy_abi_version_*``
marker. The host functions they import are 0.1.0's, the distinctive one being
``proxy_get_configuration(ret_ptr_ptr, ret_size_ptr)``, which only 0.1.0 (and its
drafts) had: it returns the plugin configuration during ``proxy_on_configure`` and
the VM configuration elsewhere (``buffers.proxy_get_configuration``, already in the
table). The Envoy of that time loaded such modules without a version check; this
host does the same, as 0.1.0, and says so (ABI doc §1.1, §1.2, §2.2).
"""

from __future__ import annotations

from host.wasm.runtime import Module

__all__ = ["LEGACY_IMPORT", "legacy_abi"]

# The import that marks a marker-less module as a pre-0.1.0 Proxy-Wasm plugin.
LEGACY_IMPORT = ("env", "proxy_get_configuration")


def legacy_abi(module: Module) -> tuple[str | None, list[str]]:
    """("0.1.0", [warning]) for a marker-less module of the pre-0.1.0 shape, else (None, [])."""
    for imp in module.imports:
        if (imp.module, imp.name) == LEGACY_IMPORT and imp.kind == "func":
            return "0.1.0", [
                "no proxy_abi_version_* export, but the module imports "
                "proxy_get_configuration: a pre-0.1.0 plugin (Istio 1.4/1.5 era), run as "
                "ABI 0.1.0 as the Envoy of its time did; current Envoy/Istio refuse it"
            ]
    return None, []
