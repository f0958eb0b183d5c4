"""The ``wasmdesk`` command line.

``wasmdesk inspect``, ``wasmdesk try`` and ``wasmdesk demo`` run headless on the host
alone. (``wasmdesk`` with no arguments, the desktop app, is ``gui.launcher``.)

Exit codes: 0 success; 1 the plugin failed (start-up, configure, trap);
2 bad arguments or an unreadable/invalid input file (one-line error on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypedDict, TypeVar

from host import __version__
from host.cli_input import UsageError
from host.cli_input import json_or_file as _json_or_file
from host.cli_input import text_or_file as _text_or_file

if TYPE_CHECKING:
    from host.oci import PulledModule
    from host.wasm import Engine, LogLevel, Module
    from host.wasm.node import Node

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _node(value: str | None) -> Node:
    """``--node JSON|@FILE`` as a Node (Envoy's bootstrap node; Istio's node metadata)."""
    from host.wasm.node import DEFAULT_NODE, Node, NodeError

    data = _json_or_file(value, "--node")
    if not data.strip():
        return DEFAULT_NODE
    try:
        return Node.parse(json.loads(data))
    except NodeError as e:
        raise UsageError(f"--node: {e}") from None


def _header(value: str, flag: str) -> tuple[str, str]:
    if ":" not in value[1:]:
        raise UsageError(f"{flag} expects 'name: value', got {value!r}")
    # Allow pseudo-header style names (':authority: x') by splitting after the 1st char.
    idx = value.index(":", 1)
    name, val = value[:idx].strip(), value[idx + 1 :].strip()
    if not name:
        raise UsageError(f"{flag} expects 'name: value', got {value!r}")
    return name, val


def _cluster(value: str) -> tuple[str, str]:
    name, sep, url = value.partition("=")
    if not sep or not name or not url:
        raise UsageError(f"--cluster expects NAME=URL, got {value!r}")
    if not url.startswith(("http://", "https://", "grpc://", "grpcs://")):
        raise UsageError(
            f"--cluster {name}: URL must start with http://, https://, grpc:// or grpcs://, "
            f"got {url!r}"
        )
    return name, url


class _Chunk(argparse.Action):
    """``--downstream-data`` / ``--upstream-data``: one list of (direction, TEXT), in the
    order given on the command line (try --tcp runs them in that order)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        chunks = list(getattr(namespace, self.dest, None) or [])
        chunks.append((self.const, str(values)))
        setattr(namespace, self.dest, chunks)


def _build_parser() -> _Parser:
    p = _Parser(
        prog="wasmdesk",
        description="A desktop workbench for Proxy-Wasm plugins.",
    )
    p.add_argument("--version", action="version", version=f"wasmdesk {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    sub.add_parser("demo", help="run the bundled demo plugins on sample requests (headless)")

    sv = sub.add_parser(
        "serve",
        help="run the local proxy with a plugin chain and the admin API",
        description="Run the local HTTP proxy. Without --config it runs the embedded default: "
        "the bundled demo plugins in front of the built-in demo upstream.",
    )
    sv.add_argument(
        "--config", help="multi-document YAML: WasmPlugin documents and one Proxy document"
    )
    sv.add_argument(
        "--listen", metavar="HOST:PORT", help="override spec.listen (default 127.0.0.1:10000)"
    )
    sv.add_argument(
        "--admin", metavar="HOST:PORT", help="override spec.admin (default 127.0.0.1:9901)"
    )
    sv.add_argument("--log-level", default="info", help="plugin log level (default info)")
    sv.add_argument(
        "--no-watch",
        action="store_true",
        help="do not reload when the config file or a module file changes",
    )
    sv.add_argument(
        "--record",
        metavar="FILE.har",
        help="record every request as HAR 1.2 with what a replay needs (wasmdesk replay)",
    )
    sv.add_argument(
        "--mocks",
        metavar="FILE",
        help="YAML callout mocks answered in place of the clusters they name",
    )
    sv.add_argument(
        "--lenient",
        action="store_true",
        help="start even if a plugin fails to load (it is failed per its failStrategy); "
        "by default, as Envoy at start-up, the proxy refuses to start",
    )

    ins = sub.add_parser("inspect", help="show a module's ABI, SDK, callbacks and imports")
    ins.add_argument("plugin", help="a .wasm module: a path, or an image (oci://REGISTRY/REPO:TAG)")
    ins.add_argument("--json", action="store_true", help="print one JSON object")

    t = sub.add_parser(
        "try",
        help="run one request and response through a plugin, offline",
        description="Start the plugin, run one request and then the given upstream response "
        "through it, and show what the plugin changed.",
    )
    t.add_argument("plugin", help="a .wasm module: a path, or an image (oci://REGISTRY/REPO:TAG)")
    t.add_argument("--config", help="plugin configuration: JSON text or @FILE (Istio pluginConfig)")
    t.add_argument("--raw-config", help="plugin configuration passed as-is (not checked as JSON)")
    t.add_argument("--vm-config", help="VM configuration: JSON text or @FILE")
    t.add_argument(
        "--root-id",
        help="root id the plugin registers its contexts under (Istio pluginName, Envoy "
        'root_id); default: "" as Envoy and Istio when unset',
    )
    t.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment variable for the plugin (vmConfig.env), repeatable",
    )
    t.add_argument("--method", default="GET")
    t.add_argument("--path", default="/")
    t.add_argument("--authority", default="localhost")
    t.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="request header, repeatable",
    )
    t.add_argument("--body", help="request body: TEXT or @FILE")
    t.add_argument(
        "--trailer",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="request trailer, repeatable",
    )
    t.add_argument("--status", type=int, default=200, help="upstream response status (default 200)")
    t.add_argument(
        "-R",
        "--response-header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="upstream response header, repeatable",
    )
    t.add_argument("--response-body", help="upstream response body: TEXT or @FILE")
    t.add_argument("--response-trailer", action="append", default=[], metavar="'NAME: VALUE'")
    t.add_argument(
        "--cluster",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="a cluster http_call (http://, https://) or a gRPC call (grpc://, grpcs://) "
        "can reach, repeatable",
    )
    t.add_argument("--ticks", type=int, default=0, help="fire N tick periods after start-up")
    t.add_argument(
        "--log-level",
        default="info",
        help="plugin log level: trace, debug, info, warn, error, critical (default info, as Envoy)",
    )
    t.add_argument(
        "--timeout-ms",
        type=float,
        default=100.0,
        help="time budget per guest callback in ms (default 100)",
    )
    t.add_argument(
        "--node",
        metavar="JSON|@FILE",
        help="the proxy's node: {id, cluster, metadata, locality} (xds.node; Istio's "
        "WORKLOAD_NAME, NAMESPACE, LABELS ... go in metadata)",
    )
    t.add_argument("--json", action="store_true", help="print one JSON object")
    t.add_argument("--mocks", metavar="FILE", help="YAML callout mocks, answered before --cluster")
    t.add_argument(
        "--tcp",
        action="store_true",
        help="run one TCP connection through a NETWORK plugin instead of an HTTP request",
    )
    for flag, direction, who in (
        ("--downstream-data", "downstream", "the client sends"),
        ("--upstream-data", "upstream", "the upstream sends"),
    ):
        t.add_argument(
            flag,
            dest="tcp_chunks",
            action=_Chunk,
            const=direction,
            default=[],
            metavar="TEXT|@FILE",
            help=f"with --tcp: a chunk {who}, repeatable (chunks run in the order given)",
        )
    t.add_argument(
        "--no-half-close",
        action="store_true",
        help="with --tcp: leave both directions open after the chunks (no end_of_stream)",
    )

    from host import cli_oci

    cli_oci.add_parsers(sub)
    from host.lab.commands import add_parsers

    add_parsers(sub)  # replay, export-test (the debugging lab)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    try:
        args = parser.parse_args(args_list)
        if args.command is None:
            parser.print_help()
            return 2
        if args.command == "demo":
            return _cmd_demo()
        if args.command == "serve":
            return _cmd_serve(args)
        if args.command == "inspect":
            return _cmd_inspect(args)
        if args.command == "try":
            return _cmd_try(args)
        if args.command in ("push", "pull", "export"):
            from host import cli_oci

            return cli_oci.run(args)
        if args.command in ("replay", "export-test"):
            from host.lab import commands

            if args.command == "replay":
                return commands.cmd_replay(args)
            return commands.cmd_export_test(args)
        raise UsageError(f"unknown command {args.command!r}")
    except UsageError as e:
        print(f"wasmdesk: error: {e}", file=sys.stderr)
        return 2
    except PluginFetchError as e:
        print(f"wasmdesk: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _cmd_demo() -> int:
    """The headless demo: two bundled plugins on one request each, no set-up needed."""
    from host.resources import demo_plugin

    print("== add_header: adds a request and a response header ==")
    rc = main(
        [
            "try",
            str(demo_plugin("add_header")),
            "--path",
            "/demo",
            "-H",
            "user-agent: wasmdesk-demo",
            "--log-level",
            "info",
        ]
    )
    print()
    print("== auth_token: a request without a token gets the plugin's local 403 ==")
    rc2 = main(["try", str(demo_plugin("auth_token")), "--path", "/private", "--log-level", "info"])
    return rc or rc2


def _host_port(value: str, flag: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"{flag} expects HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _cmd_serve(args: argparse.Namespace) -> int:
    import asyncio
    import dataclasses
    import signal

    from host.proxy.config import ConfigError, load_config
    from host.proxy.server import ProxyServer, StartupError
    from host.resources import resources_dir
    from host.wasm import LogLevel

    path = args.config or str(resources_dir() / "default" / "wasmdesk.yaml")
    try:
        config = load_config(path)
    except FileNotFoundError:
        raise UsageError(f"--config: no such file: {path}") from None
    except ConfigError as e:
        print(f"wasmdesk: invalid configuration:\n{e}", file=sys.stderr)
        return 2
    try:
        level = LogLevel.parse(args.log_level)
    except ValueError as e:
        raise UsageError(str(e)) from None
    changes: dict[str, object] = {}
    if args.listen:
        changes["listen_host"], changes["listen_port"] = _host_port(args.listen, "--listen")
    if args.admin:
        host, port = _host_port(args.admin, "--admin")
        if not (host.startswith("127.") or host in ("localhost", "::1")):
            raise UsageError("--admin: the admin API listens on loopback only")
        changes["admin_host"], changes["admin_port"] = host, port
    if changes:
        config = dataclasses.replace(config, **changes)  # type: ignore[arg-type]

    mocks = None
    if args.mocks:
        from host.lab.mocks import MockError, load_mocks

        try:
            load_mocks(args.mocks)  # checked here: a bad file is exit 2
            import yaml

            doc = yaml.safe_load(Path(args.mocks).read_text(encoding="utf-8"))
            mocks = list(doc["mocks"] if isinstance(doc, dict) else doc or [])
        except MockError as e:
            raise UsageError(f"--mocks: {e}") from None

    def show(rec: object) -> None:
        r = rec  # LogRecord
        print(f"[{r.level.name.lower():8}] {r.plugin}: {r.message}", file=sys.stderr, flush=True)  # type: ignore[attr-defined]

    async def run() -> int:
        server = ProxyServer(
            config,
            strict=not args.lenient,
            log_level=level,
            on_log=show,
            watch=not args.no_watch,
            hold_gil=True,  # headless: no other Python thread waits while a plugin runs
        )
        try:
            await server.start()
        except StartupError as e:
            print(f"wasmdesk: the proxy did not start: {e}", file=sys.stderr)
            return 1
        if mocks is not None:
            from host.lab.mocks import install_mocks

            server.lab_mocks = mocks
            install_mocks(server, server.config.mocks)
        if args.record:
            from host.lab.record import start_recording

            try:
                start_recording(server, args.record)
            except OSError as e:
                await server.stop()
                raise UsageError(f"--record: cannot write {args.record}: {e.strerror}") from None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, server.request_stop)
            except (NotImplementedError, RuntimeError):
                pass
        lh, lp = server.listen_address
        ah, ap = server.admin_address
        tls = server.listener_tls
        print(
            f"wasmdesk: proxy on {'https' if tls else 'http'}://{lh}:{lp}  "
            f"admin on http://{ah}:{ap}  config {config.source}",
            file=sys.stderr,
            flush=True,
        )
        if tls is not None and tls.demo_ca:
            print(
                f"  TLS with the demo certificate; trust its CA: "
                f"curl --cacert {tls.demo_ca} https://{lh}:{lp}/",
                file=sys.stderr,
            )
        for line in server.config_dump()["order"]:
            print(f"  {line}", file=sys.stderr)
        for t in server.tcp_snapshot():  # spec.tcp listeners and the NETWORK plugins on each
            plugins = ", ".join(p["name"] for p in t["plugins"] if p["applied"]) or "none"
            print(
                f"wasmdesk: tcp {t['name']} on {t['listen']} -> {t['cluster']} "
                f"({t['upstream']}); NETWORK plugins: {plugins}",
                file=sys.stderr,
                flush=True,
            )
        try:
            await server.run_until_stopped()
        finally:
            await server.stop()
        return 0

    try:
        import uvloop

        return int(uvloop.run(run()))
    except ImportError:
        return asyncio.run(run())


def _plugin_bytes(arg: str) -> tuple[bytes, PulledModule | None]:
    """A module file, or an OCI image (pulled through the download cache)."""
    from host.cli_oci import CommandError, load_plugin_arg

    try:
        return load_plugin_arg(arg)
    except CommandError as e:
        if e.code == 2:
            raise UsageError(str(e)) from None
        raise PluginFetchError(str(e)) from None


class PluginFetchError(Exception):
    """An image could not be pulled (registry, auth, digest, not Wasm): exit 1."""


def _load_module(
    path: str, image: list[PulledModule] | None = None
) -> tuple[bytes, tuple[Engine, Module]]:
    """Compile a module (a file or an image); an image's pull is appended to ``image``."""
    from host.wasm import Engine, LoadError

    wasm, pulled = _plugin_bytes(path)
    if pulled is not None and image is not None:
        image.append(pulled)
    engine = Engine()
    try:
        module = engine.compile(wasm)
    except LoadError as e:
        engine.close()
        raise UsageError(f"{path}: {e.message}") from None
    return wasm, (engine, module)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from host.wasm.module_info import describe

    image: list[PulledModule] = []
    _wasm, (engine, module) = _load_module(args.plugin, image)
    try:
        info = describe(module)
    finally:
        engine.close()
    if image:
        from host.cli_oci import image_report

        info.warnings.extend(image_report(image[0], info.abi)[1])
    if args.json:
        out = info.to_dict()
        out["file"] = args.plugin
        if image:
            out["image"] = image_report(image[0], info.abi)[0]
        print(json.dumps(out, indent=2))
        return 0
    print(f"module      {args.plugin}  ({info.size} bytes, sha256 {info.sha256[:16]}…)")
    if image:
        print(image_report(image[0], info.abi)[2])
    print(f"ABI         {info.abi or 'none (no proxy_abi_version_* export: not loadable)'}")
    print(f"likely SDK  {info.sdk}  [{'; '.join(info.sdk_evidence)}]")
    if info.producers:
        for k, v in info.producers.items():
            print(f"  producers.{k}: {', '.join(v)}")
    print(f"callbacks   ({len(info.callbacks)})")
    for c in info.callbacks:
        print(f"  {c}")
    if info.lifecycle:
        print(f"lifecycle   {', '.join(info.lifecycle)}")
    print(f"imports     ({len(info.imports)})")
    width = max((len(f"{i.module}.{i.name}") for i in info.imports), default=10)
    for i in info.imports:
        mark = {
            "yes": "provided",
            "stub": "STUB (unknown: returns an error if called)",
            "signature-mismatch": "STUB (signature differs from the ABI)",
            "no": "MISSING",
        }[i.provided]
        print(f"  {f'{i.module}.{i.name}':<{width}}  {i.signature:<36} {mark}")
    for w in info.warnings:
        print(f"warning: {w}")
    return 0


_HTTP_ONLY_TRY: tuple[tuple[str, object, str], ...] = (
    ("method", "GET", "--method"),
    ("path", "/", "--path"),
    ("authority", "localhost", "--authority"),
    ("header", [], "-H/--header"),
    ("body", None, "--body"),
    ("trailer", [], "--trailer"),
    ("status", 200, "--status"),
    ("response_header", [], "-R/--response-header"),
    ("response_body", None, "--response-body"),
    ("response_trailer", [], "--response-trailer"),
)


class _TryCommon(TypedDict):
    """What ``try`` and ``try --tcp`` take alike: fields of both TryRequest and TcpTryRequest."""

    root_id: str
    plugin_name: str
    configuration: bytes
    vm_configuration: bytes
    env: list[tuple[str, str]]
    clusters: dict[str, str]
    ticks: int
    log_level: LogLevel
    callback_timeout_ms: float
    node: Node


def _try_common(args: argparse.Namespace) -> tuple[bytes, _TryCommon]:
    """The plugin's bytes and the settings both ``try`` forms check and read alike."""
    from host.wasm import LogLevel

    if args.ticks < 0:
        raise UsageError("--ticks must be >= 0")
    if args.timeout_ms <= 0:
        raise UsageError("--timeout-ms must be > 0")
    try:
        level = LogLevel.parse(args.log_level)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.config is not None and args.raw_config is not None:
        raise UsageError("give --config or --raw-config, not both")
    config = (
        _text_or_file(args.raw_config, "--raw-config")
        if args.raw_config is not None
        else _json_or_file(args.config, "--config")
    )
    env = []
    for item in args.env:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise UsageError(f"--env expects NAME=VALUE, got {item!r}")
        env.append((k, v))
    wasm, pulled = _plugin_bytes(args.plugin)
    root_id = args.root_id if args.root_id is not None else ""  # Envoy/Istio's default
    plugin_name = Path(args.plugin).name.removesuffix(".wasm")  # names its log lines
    if pulled is not None:
        plugin_name = pulled.ref.repository.rsplit("/", 1)[-1]
        if args.root_id is None:
            from host.oci.module_source import default_root_id

            # the image's runtime-config.json names its root ids (Istio prefills pluginName)
            root_id = default_root_id(pulled) or ""
    return wasm, _TryCommon(
        root_id=root_id,
        plugin_name=plugin_name,
        configuration=config,
        vm_configuration=_json_or_file(args.vm_config, "--vm-config"),
        env=env,
        clusters=dict(_cluster(c) for c in args.cluster),
        ticks=args.ticks,
        log_level=level,
        callback_timeout_ms=args.timeout_ms,
        node=_node(args.node),
    )


class _TryOutcome(Protocol):
    @property
    def ok(self) -> bool: ...

    def to_json(self) -> dict[str, object]: ...


_Out = TypeVar("_Out", bound=_TryOutcome)


def _try_run(
    args: argparse.Namespace,
    wasm: bytes,
    req: object,
    clusters: dict[str, str],
    callout_timeout_ms: float,
    run: Callable[..., _Out],
    render: Callable[[str, _Out], str],
) -> int:
    """Run ``req`` with ``run`` (behind ``--mocks`` when given), print the result as JSON
    or with ``render``; the exit code (0 ok, 1 the plugin failed)."""
    from host.wasm import LoadError

    callouts = grpc = None
    if args.mocks:
        from host.lab.mocks import MockError, MockGrpcDispatcher, MockingClient, load_mocks

        try:
            mocks = load_mocks(args.mocks)
        except MockError as e:
            raise UsageError(f"--mocks: {e}") from None
        callouts = MockingClient(clusters, mocks, callout_timeout_ms)
        grpc = MockGrpcDispatcher(mocks)
    try:
        result = run(wasm, req, callouts=callouts, grpc=grpc)
    except LoadError as e:
        raise UsageError(f"{args.plugin}: {e.message}") from None
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(render(args.plugin, result))
    return 0 if result.ok else 1


def _cmd_try_tcp(args: argparse.Namespace) -> int:
    """``try --tcp``: one connection through a NETWORK plugin (host.runner_tcp)."""
    from host.report import render_try_tcp
    from host.runner_tcp import TcpTryRequest, run_try_tcp

    for dest, default, flag in _HTTP_ONLY_TRY:
        if getattr(args, dest) != default:
            raise UsageError(
                f"{flag} describes an HTTP request; with --tcp give --downstream-data / "
                "--upstream-data"
            )
    wasm, common = _try_common(args)
    chunks = [
        (direction, _text_or_file(text, f"--{direction}-data"))
        for direction, text in args.tcp_chunks
    ]
    req = TcpTryRequest(chunks=chunks, half_close=not args.no_half_close, **common)
    return _try_run(
        args, wasm, req, req.clusters, req.callout_timeout_ms, run_try_tcp, render_try_tcp
    )


def _cmd_try(args: argparse.Namespace) -> int:
    from host.report import render_try
    from host.runner import TryRequest, run_try

    if args.tcp:
        return _cmd_try_tcp(args)
    if args.tcp_chunks or args.no_half_close:
        raise UsageError("--downstream-data, --upstream-data and --no-half-close need --tcp")

    if not 100 <= args.status <= 999:
        raise UsageError(f"--status must be an HTTP status code (100-999), got {args.status}")
    wasm, common = _try_common(args)
    req = TryRequest(
        method=args.method,
        path=args.path,
        authority=args.authority,
        headers=[_header(h, "-H") for h in args.header],
        body=_text_or_file(args.body, "--body"),
        trailers=[_header(h, "--trailer") for h in args.trailer],
        status=args.status,
        response_headers=[_header(h, "-R") for h in args.response_header],
        response_body=_text_or_file(args.response_body, "--response-body"),
        response_trailers=[_header(h, "--response-trailer") for h in args.response_trailer],
        **common,
    )
    return _try_run(args, wasm, req, req.clusters, req.callout_timeout_ms, run_try, render_try)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
