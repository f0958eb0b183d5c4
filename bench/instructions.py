"""Benchmark: instructions per request of the data path, counted, not timed.

On a small shared machine a 3 % change in CPU time is below the noise of
``bench_datapath.py``; an instruction count is not. This runs ``bench_datapath.py`` under
valgrind's callgrind twice, with a small and a larger number of requests, and prints the
difference in instructions divided by the difference in requests: what one more request
costs, start-up and warm-up cancelled out. Deterministic to a few hundred instructions,
so levers of ~1 % can be compared (A/B: ``--tree`` another checkout, same interpreter).
``--plugin`` (and ``--root-id``) are passed to ``bench_datapath.py``: one WasmPlugin on
the path (``typical``, ``wat`` or a .wasm path); the figure then includes the plugin, and
the same run without ``--plugin`` gives what the plugin adds.

Needs ``valgrind`` (Debian: ``apt-get install valgrind``); about a minute per tree.
``--host`` counts ``bench_host.py``'s full host and raw-call floor instead (its ratio).

Usage: .venv/bin/python bench/instructions.py [--tree PATH ...] [--small N] [--large N]
       [--plugin typical|wat|PATH] [--root-id ID] [--host]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _callgrind(tree: Path, script: str, args: Sequence[str]) -> int:
    """Instructions callgrind counted for ``tree``'s ``bench/<script>`` run with ``args``."""
    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={d}/cg.out",
                sys.executable,
                str(tree / "bench" / script),
                *args,
            ],
            capture_output=True,
            text=True,
            # a fixed hash seed: str hashes (dict and set probing) then repeat run to run
            env={"PYTHONHASHSEED": "0", **os.environ, "PYTHONPATH": str(tree)},
            timeout=900,
        )
    m = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or not m:
        raise RuntimeError(f"callgrind run failed: {out.stderr[-2000:]}")
    return int(m.group(1))


def instructions(tree: Path, requests: int, extra: Sequence[str] = ()) -> int:
    """Instructions callgrind counted for ``bench_datapath.py`` serving ``requests``
    (after its warm-up of min(requests, 2000)); ``extra``: more of its arguments.
    --no-ticker: no wasm epoch thread waking on wall time (slowed and load-dependent
    under valgrind)."""
    args = ["--rounds", "1", "--requests", str(requests), "--no-ticker", *extra]
    return _callgrind(tree, "bench_datapath.py", args)


def host_instructions(tree: Path, which: str, count: int) -> int:
    """Instructions callgrind counted for ``bench_host.py --count`` running ``which``."""
    return _callgrind(tree, "bench_host.py", ["--count", str(count), "--only", which])


def host_ratio(tree: Path, small: int, large: int) -> None:
    """bench_host.py's ratio, counted: the full host's and the raw-call floor's
    instructions per request of the typical call sequence."""
    per = {}
    for which in ("host", "floor"):
        a = host_instructions(tree, which, small)
        b = host_instructions(tree, which, large)
        per[which] = (b - a) / (large - small)
    print(
        f"{tree}: host {per['host']:,.0f}, raw-call floor {per['floor']:,.0f} instructions "
        f"per request: {per['host'] / per['floor']:.2f}x (bench_host.py's ratio, counted)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, action="append", help="checkout(s) to measure")
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--large", type=int, default=6000)
    ap.add_argument("--plugin", help="bench_datapath.py's --plugin: typical, wat or a .wasm path")
    ap.add_argument("--root-id", help="bench_datapath.py's --root-id")
    ap.add_argument(
        "--host",
        action="store_true",
        help="instead: bench_host.py's full host against its raw-call floor (--small and "
        "--large then count its requests)",
    )
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    if args.host:
        for tree in args.tree or [ROOT]:
            host_ratio(tree.resolve(), args.small, args.large)
        return 0
    extra: list[str] = []
    if args.plugin:
        plugin = args.plugin
        if plugin not in ("typical", "wat"):
            plugin = str(Path(plugin).resolve())  # the run's cwd is not ours
        extra += ["--plugin", plugin]
    if args.root_id is not None:
        extra += ["--root-id", args.root_id]
    what = f"plugin {args.plugin}" if args.plugin else "no plugin"
    if args.small < 2000:
        ap.error("--small must be at least 2000 (bench_datapath's warm-up is min(N, 2000))")
    for tree in args.tree or [ROOT]:
        a = instructions(tree.resolve(), args.small, extra)
        b = instructions(tree.resolve(), args.large, extra)
        per = (b - a) / (args.large - args.small)
        print(f"{tree}: {per:,.0f} instructions per request ({what}, data path)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
