"""``wasmdesk push``, ``pull`` and ``export --for-cluster``, and OCI references as the
module argument of ``try``/``inspect``: the command-line side of :mod:`host.oci`.

Exit codes as the rest of the CLI: 0 done; 1 the registry or the image failed (unknown
manifest, not a Wasm image, digest mismatch, auth, unreachable); 2 bad arguments or input.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from host.cli_input import read_file
from host.oci import OciError, PulledModule, RuntimeConfig, parse_reference, pull_module

__all__ = [
    "add_parsers",
    "download_dir",
    "image_report",
    "is_image_ref",
    "load_plugin_arg",
    "run",
]

COMMANDS = ("push", "pull", "export")


class CommandError(Exception):
    """Exit with ``code`` and a one-line message."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def download_dir() -> Path:
    """Downloaded modules (http(s) and images): shared with ``wasmdesk serve``."""
    from host.wasm.runtime import user_cache_root

    return user_cache_root() / "downloads"


def is_image_ref(arg: str) -> bool:
    """``oci://…``, or a bare ``host[:port]/repo[:tag|@digest]`` that is not a file.

    Bare references must name their registry (a first component with a dot, a port or
    ``localhost``): ``plugins/typo`` is a missing file, not a Docker Hub image."""
    if arg.startswith("oci://"):
        return True
    if os.path.exists(arg) or arg.endswith(".wasm") or "/" not in arg:
        return False
    if arg.startswith(("/", ".", "~")) or "://" in arg:
        return False
    first = arg.split("/", 1)[0]
    if not ("." in first or ":" in first or first == "localhost"):
        return False
    try:
        parse_reference(arg)
    except OciError:
        return False
    return True


def _progress(what: str) -> Any:
    from host.oci.module_source import progress_printer

    if not sys.stderr.isatty() and os.environ.get("WASMDESK_PROGRESS") != "1":
        return None
    return progress_printer(lambda s: print(s, file=sys.stderr, flush=True), what)


def pull_for_cli(
    ref: str,
    *,
    sha256: str = "",
    policy: str = "UNSPECIFIED_POLICY",
    docker_config: Path | None = None,
) -> PulledModule:
    try:
        return pull_module(
            ref,
            sha256=sha256,
            pull_policy=policy,
            pull_secret=docker_config,
            cache_dir=download_dir(),
            progress=_progress(f"pulling {ref}"),
        )
    except OciError as e:
        raise CommandError(f"{ref}: {e.message}", 2 if e.kind == "reference" else 1) from None


def load_plugin_arg(arg: str) -> tuple[bytes, PulledModule | None]:
    """The module bytes for ``try``/``inspect``: a file, or an image pulled (cached)."""
    if not is_image_ref(arg):
        return read_file(arg, "plugin"), None  # UsageError (exit 2) when unreadable
    pulled = pull_for_cli(arg)
    print(
        f"pulled {pulled.ref} ({pulled.variant} image, digest {pulled.digest}"
        f"{', from the cache' if pulled.from_cache else ''})",
        file=sys.stderr,
    )
    return pulled.wasm, pulled


def image_report(
    pulled: PulledModule, detected_abi: str | None
) -> tuple[dict[str, Any], list[str], str]:
    """What ``inspect`` shows of an image: (JSON object, warnings, text lines)."""
    from host.oci.module_source import abi_mismatch, image_warnings

    rc = pulled.runtime_config
    data: dict[str, Any] = {
        "ref": str(pulled.ref),
        "digest": pulled.digest,
        "variant": pulled.variant,
        "abi_versions": list(rc.abi_versions) if rc else [],
        "root_ids": list(rc.root_ids) if rc else [],
    }
    mismatch = abi_mismatch(pulled, detected_abi)
    warnings = image_warnings(pulled, "") + ([mismatch] if mismatch else [])
    text = f"image       {pulled.ref}  ({pulled.variant} variant, {pulled.digest})"
    if rc is not None:
        text += (
            f"\n  runtime-config: ABI {', '.join(rc.abi_versions) or '-'}, "
            f"root ids {', '.join(rc.root_ids) or '-'}"
        )
    return data, warnings, text


def add_parsers(sub: Any) -> None:
    """Add ``push``, ``pull`` and ``export`` to the ``wasmdesk`` sub-command parsers."""
    ps = sub.add_parser(
        "push",
        help="push a .wasm module to an OCI registry as an image Istio accepts",
        description="Build an image (oci: Wasm artifact; compat: one tar+gzip layer with "
        "plugin.wasm) with runtime-config.json naming the ABI and root ids, push it, and "
        "print the digest and the WasmPlugin url/sha256 to paste.",
    )
    ps.add_argument("module", help="path to a .wasm module")
    ps.add_argument("ref", help="registry/repository:tag (oci:// optional)")
    ps.add_argument("--variant", choices=("oci", "compat"), default="oci")
    ps.add_argument(
        "--root-id",
        action="append",
        default=[],
        help="root id(s) the module serves (repeatable; default: the file name)",
    )
    ps.add_argument("--docker-config", help="docker config JSON with credentials")

    pl = sub.add_parser("pull", help="pull a plugin image and write its module")
    pl.add_argument("ref", help="oci://registry/repository[:tag|@sha256:…] or without oci://")
    pl.add_argument("-o", "--output", help="where to write the module (default: REPO.wasm)")
    pl.add_argument("--sha256", default="", help="expected image (manifest) digest, hex")
    pl.add_argument("--docker-config", help="docker config JSON with credentials")

    ex = sub.add_parser(
        "export",
        help="export the WasmPlugin documents of a config",
        description="With --for-cluster: write only WasmPlugin documents whose module URLs "
        "are oci:// references pinned by digest, ready for kubectl apply.",
    )
    ex.add_argument("--config", required=True, help="the wasmdesk config (workspace) file")
    ex.add_argument("-o", "--output", required=True, help="the YAML file to write")
    ex.add_argument(
        "--for-cluster", action="store_true", help="the form a cluster accepts (required)"
    )
    ex.add_argument("--namespace", help="metadata.namespace for every plugin")
    ex.add_argument(
        "--selector",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="selector.matchLabels for plugins that have neither selector nor targetRefs",
    )


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "push":
            return _cmd_push(args)
        if args.command == "pull":
            return _cmd_pull(args)
        return _cmd_export(args)
    except CommandError as e:
        print(f"wasmdesk: error: {e}", file=sys.stderr)
        return e.code


def _cmd_push(args: argparse.Namespace) -> int:
    from host.oci import push_module
    from host.wasm import Engine, LoadError
    from host.wasm.vm import detect_abi

    path = Path(args.module)
    try:
        wasm = path.read_bytes()
    except OSError as e:
        raise CommandError(f"module: cannot read {path}: {e.strerror}") from None
    engine = Engine(cache_dir=False)
    try:
        abi = detect_abi(engine.compile(wasm))
    except LoadError as e:
        raise CommandError(f"{path}: {e.message}") from None
    finally:
        engine.close()
    if abi is None:
        raise CommandError(f"{path}: not a Proxy-Wasm module (no proxy_abi_version_* export)")
    roots = tuple(args.root_id) or (path.name.removesuffix(".wasm"),)
    rc = RuntimeConfig("envoy_proxy", (f"v{abi}",), roots)
    try:
        result = push_module(
            wasm,
            args.ref,
            variant=args.variant,
            runtime_config=rc,
            docker_config=Path(args.docker_config) if args.docker_config else None,
            progress=_progress(f"pushing {args.ref}"),
        )
    except OciError as e:
        raise CommandError(f"{args.ref}: {e.message}", 2 if e.kind == "reference" else 1) from None
    print(f"pushed {result.ref} ({args.variant} image)")
    print(f"digest: {result.digest}")
    print("WasmPlugin spec:")
    print(result.wasm_plugin_snippet(), end="")
    print(f"  pluginName: {roots[0]}")
    return 0


def _cmd_pull(args: argparse.Namespace) -> int:
    from host.oci.module_source import image_warnings

    pulled = pull_for_cli(
        args.ref,
        sha256=args.sha256,
        docker_config=Path(args.docker_config) if args.docker_config else None,
    )
    out = Path(args.output or pulled.ref.repository.rsplit("/", 1)[-1] + ".wasm")
    try:
        out.write_bytes(pulled.wasm)
    except OSError as e:
        raise CommandError(f"-o: cannot write {out}: {e.strerror}") from None
    rc = pulled.runtime_config
    print(f"pulled {pulled.ref} ({pulled.variant} image{', cached' if pulled.from_cache else ''})")
    print(f"digest: {pulled.digest}")
    print(f"wrote {out} ({len(pulled.wasm)} bytes)")
    if rc is not None:
        print(
            f"runtime config: ABI {', '.join(rc.abi_versions) or '-'}; "
            f"root ids {', '.join(rc.root_ids) or '-'}"
        )
    print(f"WasmPlugin spec:\n  url: {pulled.ref.url()}\n  sha256: {pulled.sha256}")
    for w in image_warnings(pulled, ""):
        print(f"warning: {w}", file=sys.stderr)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from host.cluster_export import ExportError, export_for_cluster
    from host.proxy.config import ConfigError, load_config

    if not args.for_cluster:
        raise CommandError(
            "export: only --for-cluster is implemented (the workspace file "
            "itself is the wasmdesk export)"
        )
    labels: dict[str, str] = {}
    for item in args.selector:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise CommandError(f"--selector expects KEY=VALUE, got {item!r}")
        labels[k] = v
    try:
        config = load_config(args.config)
    except FileNotFoundError:
        raise CommandError(f"--config: no such file: {args.config}") from None
    except ConfigError as e:
        raise CommandError(f"invalid configuration:\n{e}") from None
    try:
        result = export_for_cluster(
            config,
            namespace=args.namespace,
            match_labels=labels or None,
            resolve=lambda spec: pull_for_cli(
                spec.location, sha256=spec.sha256, policy=spec.image_pull_policy
            ),
        )
    except ExportError as e:
        raise CommandError(str(e), 1) from None
    try:
        Path(args.output).write_text(result.yaml, encoding="utf-8")
    except OSError as e:
        raise CommandError(f"-o: cannot write {args.output}: {e.strerror}") from None
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {len(result.documents)} WasmPlugin document(s) to {args.output}")
    return 0
