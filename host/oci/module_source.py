"""The bridge from a WasmPlugin's module fields to a pull: used by the proxy's plugin
manager, ``wasmdesk try``/``inspect`` and the app, so each applies the same rules.

Runs the (blocking) registry client in a worker thread for async callers, turns
:class:`OciError` into the caller's error type, and reports what an image says about
itself: a runtime config naming ABI versions this host does not implement is a warning
(the module is still loaded; its exports decide), as are root ids that ``pluginName``
does not name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from host.oci.fetch import PulledModule, pull_module
from host.oci.registry import Progress

SUPPORTED_ABIS = ("0.1.0", "0.2.0", "0.2.1")


def image_warnings(pulled: PulledModule, plugin_name: str) -> list[str]:
    """What the image's runtime config says that the user should know."""
    rc = pulled.runtime_config
    out: list[str] = []
    if rc is None:
        return out
    abis = [normalize_abi(a) for a in rc.abi_versions]
    if abis and not any(a in SUPPORTED_ABIS for a in abis):
        out.append(
            f"{pulled.ref}: the image declares ABI {', '.join(rc.abi_versions)}; this host "
            f"implements {', '.join(SUPPORTED_ABIS)}"
        )
    if rc.root_ids and plugin_name and plugin_name not in rc.root_ids:
        out.append(
            f"{pulled.ref}: pluginName {plugin_name!r} is not one of the image's root ids "
            f"({', '.join(rc.root_ids)})"
        )
    return out


def normalize_abi(text: str) -> str:
    """``v0.2.1``, ``0.2.1`` or ``proxy_abi_version_0_2_1`` -> ``0.2.1``."""
    t = text.strip().removeprefix("proxy_abi_version_").removeprefix("v")
    return t.replace("_", ".")


def abi_mismatch(pulled: PulledModule, detected: str | None) -> str | None:
    """A warning when the image declares ABI versions and the module exports another."""
    rc = pulled.runtime_config
    if rc is None or not rc.abi_versions or detected is None:
        return None
    if detected in [normalize_abi(a) for a in rc.abi_versions]:
        return None
    return (
        f"ABI mismatch: the image declares {', '.join(rc.abi_versions)}, the module exports "
        f"proxy_abi_version_{detected.replace('.', '_')}"
    )


def default_root_id(pulled: PulledModule) -> str:
    """The root id an image names (its first ``rootIds`` entry), or ""."""
    rc = pulled.runtime_config
    return rc.root_ids[0] if rc is not None and rc.root_ids else ""


async def pull_async(
    url: str,
    *,
    sha256: str,
    pull_policy: str,
    pull_secret: Path | None,
    cache_dir: Path | None,
    progress: Progress | None = None,
) -> PulledModule:
    """:func:`pull_module` off the event loop."""
    return await asyncio.to_thread(
        pull_module,
        url,
        sha256=sha256,
        pull_policy=pull_policy,
        pull_secret=pull_secret,
        cache_dir=cache_dir,
        progress=progress,
    )


def progress_printer(write: Callable[[str], None], what: str) -> Progress:
    """A progress callback printing ``what: N/M KiB`` at most every 10 % (CLI use)."""
    last = [-1]

    def report(done: int, total: int) -> None:
        step = 100 * done // total if total else 100
        if step // 10 != last[0] // 10 or done == total:
            if step == last[0]:
                return
            last[0] = step
            write(f"{what}: {done // 1024}/{max(total, done) // 1024} KiB ({step}%)")

    return report
