"""How the whole suite runs on every CPU (pytest-xdist; hooks registered by tests/conftest.py).

pyproject's addopts are ``-n auto --dist loadfile --no-loadscope-reorder``:

- ``-n auto`` starts one worker per CPU when the whole suite runs (the README's
  ``pytest -q``, no paths named); a run that names tests stays in-process, where starting
  workers would cost more than the few files take. ``-n 0`` forces in-process,
  PYTEST_XDIST_AUTO_NUM_WORKERS sets the count.
- Whole files go to a worker, in collection order, so a module-scoped fixture is set up
  once. Modules marked ``early`` come first: the PyInstaller bundle (a ~40-60 s build)
  overlaps the rest of the suite instead of being its tail. Modules with an ``alone``
  test come last, long after that build (an ``alone`` test waits for the tests running
  elsewhere to end, and the build is one test's set-up).
- Tests marked ``alone`` measure the machine (GUI event-loop lag, throughput with and
  without a feature): while one runs, no other worker runs a test, as in an in-process
  run. A writer-preferring lock over two ``flock`` files: every test holds the "room"
  shared, an ``alone`` test holds it exclusively; it first closes the "gate", which the
  others pass on their way in, so they cannot keep the room taken forever.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    import fcntl
except ImportError:  # Windows: no lock, the alone tests share the machine
    fcntl = None  # type: ignore[assignment]

_LOCK_DIR = "wasmdesk_alone_lock_dir"
_lock_dir: Path | None = None  # the controller's, removed at its end


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    if config.args_source is not pytest.Config.ArgsSource.TESTPATHS:
        return 0  # tests named on the command line: in-process
    return None  # xdist's count (one per CPU)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # On workers only (an in-process run keeps the plain order). Stable and the same on
    # every worker: xdist checks that they all collected alike.
    if hasattr(config, "workerinput"):
        with_alone = {item.path for item in items if item.get_closest_marker("alone")}

        def rank(item: pytest.Item) -> int:
            if item.get_closest_marker("early"):
                return 0
            return 2 if item.path in with_alone else 1

        items.sort(key=rank)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Controller: give every worker the same lock directory."""
    global _lock_dir
    if _lock_dir is None:
        _lock_dir = Path(tempfile.mkdtemp(prefix="wasmdesk-pytest-lock-"))
        (_lock_dir / "gate").touch()
        (_lock_dir / "room").touch()
    node.workerinput[_LOCK_DIR] = str(_lock_dir)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _lock_dir is not None and not hasattr(config, "workerinput"):
        shutil.rmtree(_lock_dir, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Setup, call and teardown of one test, under the lock when workers run."""
    workerinput = getattr(item.config, "workerinput", None)
    if workerinput is None or _LOCK_DIR not in workerinput or fcntl is None:
        return (yield)
    lock_dir = Path(workerinput[_LOCK_DIR])
    alone = item.get_closest_marker("alone") is not None
    with open(lock_dir / "gate", "rb") as gate, open(lock_dir / "room", "rb") as room:
        if alone:
            fcntl.flock(gate, fcntl.LOCK_EX)  # no test starts elsewhere from now on
            fcntl.flock(room, fcntl.LOCK_EX)  # and the running ones have ended
        else:
            fcntl.flock(gate, fcntl.LOCK_SH)
            fcntl.flock(room, fcntl.LOCK_SH)
            fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            return (yield)
        finally:
            fcntl.flock(room, fcntl.LOCK_UN)
            if alone:
                fcntl.flock(gate, fcntl.LOCK_UN)
