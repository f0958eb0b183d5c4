"""Fixtures for the security tests: the proxy harness (real ``ProxyServer`` on loopback)
and the direct host-function harness, shared with tests/host/proxy and tests/host/wasm.
The engine here is per test, so the no-leaked-threads check holds for every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from host.wasm import Engine
from tests.host.proxy.conftest import (  # noqa: F401  (pytest fixtures)
    _no_leaked_threads,
    probe,
    scripted_upstream,
    start_proxy,
    wasm_file,
)
from tests.host.wasm.conftest import abi, make_host, start_vm  # noqa: F401


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = Engine(cache_dir=False)
    yield eng
    eng.close()
