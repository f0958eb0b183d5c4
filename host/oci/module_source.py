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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from host.oci.errors import OciError
from host.oci.fetch import PulledModule, pull_module
from host.oci.registry import Progress

if TYPE_CHECKING:
    from host.proxy.config import PluginSpec

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


async def pull_for_plugin(
    spec: PluginSpec,
    pull_secrets: Mapping[str, str],
    cache_dir: Path | None,
    log: Callable[[str], None],
) -> bytes:
    """The module of a WasmPlugin whose ``url`` is an image, for the proxy's plugin
    manager: ``imagePullSecret`` resolved through the Proxy document's ``pullSecrets``
    (a name it does not list falls back to the default docker config, with a log line),
    what was pulled and the image's warnings logged. ValueError with the reason."""
    name = spec.image_pull_secret
    secret = pull_secrets.get(name) if name else None
    if name and secret is None:
        log(
            f"plugin {spec.name}: imagePullSecret {name!r} is not in the Proxy document's "
            "spec.pullSecrets; using the default docker config"
        )
    try:
        pulled = await pull_async(
            spec.location,
            sha256=spec.sha256,
            pull_policy=spec.image_pull_policy,
            pull_secret=Path(secret) if secret else None,
            cache_dir=cache_dir,
        )
    except OciError as e:
        raise ValueError(f"cannot pull {spec.url}: {e.message}") from None
    how = "from the cache" if pulled.from_cache else f"({pulled.variant} image)"
    log(f"plugin {spec.name}: pulled {pulled.ref} {pulled.digest[:19]}… {how}")
    for w in image_warnings(pulled, spec.plugin_name):
        log(f"plugin {spec.name}: warning: {w}")
    return pulled.wasm


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
