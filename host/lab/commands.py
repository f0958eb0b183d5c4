"""The lab's commands: ``wasmdesk replay`` and ``wasmdesk export-test`` (parsers and
implementations; ``host.cli`` only wires them in).

Exit codes, as the rest of the CLI: 0 ok (A/B: the two behave the same; --expect: no
drift), 1 the plugin failed, the two differ, or the output drifted from the golden
file; 2 bad input (one-line error)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from host.cli_input import UsageError
from host.cli_input import json_or_file as _json_or_file
from host.cli_input import read_file as _read_file

__all__ = ["UsageError", "add_parsers", "cmd_export_test", "cmd_replay"]


def add_parsers(sub: Any) -> None:
    r = sub.add_parser(
        "replay",
        help="replay a recorded session (HAR) through a plugin, deterministically, offline",
        description="Run each request of SESSION.har through the plugin in recorded order on "
        "one VM: recorded upstream responses, recorded callout answers (then --mocks), the "
        "recorded clock and random bytes (or a fixed clock and seed). No network.",
    )
    r.add_argument("session", help="a HAR file (ours, or any browser's or mitmproxy's)")
    r.add_argument("plugin", help="path to a .wasm module")
    _plugin_args(r)
    r.add_argument("--hop", metavar="NAME", help="feed what plugin NAME received in the recording")
    r.add_argument("--mocks", metavar="FILE", help="YAML callout mocks (see README)")
    r.add_argument("--seed", type=int, default=0, help="seed for random bytes and ids (default 0)")
    r.add_argument("--against", metavar="B.wasm", help="A/B: replay through this module too")
    r.add_argument("--against-config", metavar="JSON|@FILE", help="B's configuration")
    r.add_argument("--expect", metavar="GOLDEN.json", help="compare with a saved output")
    r.add_argument("--write-expect", metavar="GOLDEN.json", help="save the output as golden")
    r.add_argument(
        "--timing",
        action="store_true",
        help="add per-callback time (guest, host calls by name); varies from run to run",
    )
    r.add_argument("--json", action="store_true", help="print one JSON object")

    e = sub.add_parser(
        "export-test",
        help="write a pytest file that replays a session and asserts its recorded outcome",
    )
    e.add_argument("session")
    e.add_argument("plugin")
    _plugin_args(e)
    e.add_argument("--mocks", metavar="FILE", help="YAML callout mocks to embed")
    e.add_argument("-o", "--output", required=True, metavar="test_plugin.py")


def _plugin_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="plugin configuration: JSON text or @FILE")
    p.add_argument("--root-id", help="root id; default: the module's file name without .wasm")
    p.add_argument("--plugin-name", help="whose recorded callouts and clock values to use")
    p.add_argument("--log-level", default="info")
    p.add_argument(
        "--timeout-ms",
        type=float,
        default=100.0,
        help="time budget per guest callback in ms (default 100, as try)",
    )


def _recorded_plugin(ext: dict[str, Any], plugin: str) -> dict[str, Any] | None:
    """The session's chain entry for this module (same sha256), if exactly one."""
    import hashlib

    try:
        sha = hashlib.sha256(Path(plugin).read_bytes()).hexdigest()
    except OSError:
        return None
    chain = ext.get("chain")
    if not isinstance(chain, list):
        return None
    found = [c for c in chain if isinstance(c, dict) and c.get("module_sha256") == sha]
    return found[0] if len(found) == 1 else None


def _options(
    args: argparse.Namespace,
    plugin: str,
    config_arg: str | None,
    recorded: dict[str, Any] | None = None,
) -> Any:
    from host.lab.mocks import MockError, load_mocks
    from host.lab.replay import ReplayOptions
    from host.wasm import LogLevel

    try:
        level = LogLevel.parse(args.log_level)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.timeout_ms <= 0:
        raise UsageError("--timeout-ms must be > 0")
    mocks = None
    if getattr(args, "mocks", None):
        try:
            mocks = load_mocks(args.mocks)
        except MockError as e:
            raise UsageError(f"--mocks: {e}") from None
    # the module the session recorded: its root id, config and name are the defaults
    rec = recorded or {}
    root_id = args.root_id
    if root_id is None:
        root_id = str(rec.get("root_id") or Path(plugin).name.removesuffix(".wasm"))
    if config_arg is None and isinstance(rec.get("config"), str):
        configuration = rec["config"].encode("utf-8")
    else:
        configuration = _json_or_file(config_arg, "--config")
    return ReplayOptions(
        root_id=root_id,
        configuration=configuration,
        hop=getattr(args, "hop", None),
        plugin=args.plugin_name or (str(rec["name"]) if rec.get("name") else None),
        mocks=mocks,
        seed=getattr(args, "seed", 0),
        log_level=level,
        timing=bool(getattr(args, "timing", False)),
        callback_timeout_ms=float(args.timeout_ms),
    )


def _session(path: str) -> Any:
    from host.lab.har import HarError, load_session

    try:
        return load_session(path)
    except HarError as e:
        raise UsageError(f"session: {e}") from None


def _run(wasm_path: str, exchanges: Any, opts: Any) -> dict[str, Any]:
    from host.lab.replay import replay
    from host.wasm import LoadError

    wasm = _read_file(wasm_path, "plugin")
    try:
        return replay(wasm, exchanges, opts)
    except LoadError as e:
        raise UsageError(f"{wasm_path}: {e.message}") from None
    except ValueError as e:
        raise UsageError(str(e)) from None


def _dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)


def cmd_replay(args: argparse.Namespace) -> int:
    from host.lab.abdiff import compare, render

    exchanges, ext = _session(args.session)
    opts = _options(args, args.plugin, args.config, _recorded_plugin(ext, args.plugin))
    out = _run(args.plugin, exchanges, opts)
    if args.against or args.against_config is not None:
        b_path = args.against or args.plugin
        b_opts = _options(
            args, b_path, args.against_config or args.config, _recorded_plugin(ext, b_path)
        )
        # B is "the same plugin, another version": A's root id, recorded name and
        # (unless --against-config) A's configuration
        if args.root_id is None:
            b_opts.root_id = opts.root_id
        b_opts.plugin = opts.plugin
        if args.against_config is None:
            b_opts.configuration = opts.configuration
        out_b = _run(b_path, exchanges, b_opts)
        labels = (
            (Path(args.plugin).name, Path(b_path).name)
            if args.against
            else ("config A", "config B")
        )
        cmp = compare(out["requests"], out_b["requests"], labels)
        if args.json:
            print(_dumps({"a": out, "b": out_b, "diff": cmp}))
        else:
            print(render(cmp, labels))
        return 0 if cmp["summary"]["different"] == 0 else 1
    if args.write_expect:
        Path(args.write_expect).write_text(_dumps(out) + "\n", encoding="utf-8")
    if args.expect:
        try:
            golden = json.loads(Path(args.expect).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"--expect: no such file: {args.expect}") from None
        except (OSError, ValueError) as e:
            raise UsageError(f"--expect: {args.expect}: {e}") from None
        if not isinstance(golden, dict) or not isinstance(golden.get("requests"), list):
            raise UsageError(f"--expect: {args.expect}: not a replay output (no 'requests')")
        cmp = compare(golden["requests"], out["requests"], ("expected", "got"))
        if cmp["summary"]["different"]:
            print(render(cmp, ("expected", "got")), file=sys.stderr)
            return 1
        print(f"{len(out['requests'])} requests match {args.expect}")
        return 0
    if args.json:
        print(_dumps(out))
    elif not args.write_expect:
        from host.lab.report import render_replay

        print(render_replay(out))
    return 1 if out["failure"] else 0


def cmd_export_test(args: argparse.Namespace) -> int:
    from host.lab.export_test import render_test

    exchanges, ext = _session(args.session)
    opts = _options(args, args.plugin, args.config, _recorded_plugin(ext, args.plugin))
    out = _run(args.plugin, exchanges, opts)
    mocks_text = Path(args.mocks).read_text(encoding="utf-8") if args.mocks else None
    text = render_test(
        session=Path(args.session),
        plugin=Path(args.plugin),
        output=Path(args.output),
        opts=opts,
        outcome=out,
        mocks_text=mocks_text,
    )
    Path(args.output).write_text(text, encoding="utf-8")
    print(f"wrote {args.output}: {len(out['requests'])} requests")
    return 0
