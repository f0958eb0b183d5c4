"""A refused start says why as a value (``StartupError.kind`` and the address it could not
bind), so callers such as the app's port fallback never read the message text."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from host.proxy.server import StartupError, StartupKind
from tests.fixtures.wat_modules import make_configure_fails_module

from .conftest import make_config, plugin, wasm_plugin


@pytest.mark.parametrize("taken", ["listen", "admin"])
def test_a_taken_port_is_a_listen_or_admin_startup_error_with_its_address(start_proxy, taken):
    cfg = make_config(wasm_plugin("add", plugin("add_header"), root_id="add_header"))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        port = s.getsockname()[1]
        ports = {"listen_port": 0, "admin_port": 0, f"{taken}_port": port}
        with pytest.raises(StartupError) as ei:
            start_proxy(dataclasses.replace(cfg, **ports))
    finally:
        s.close()
    assert ei.value.kind is StartupKind(taken) and ei.value.kind == taken
    assert ei.value.address == ("127.0.0.1", port)
    assert str(ei.value).startswith("cannot listen on")  # the message is unchanged


def test_a_plugin_that_fails_at_a_strict_start_is_a_plugins_startup_error(start_proxy, wasm_file):
    path = wasm_file(make_configure_fails_module(), "bad")
    with pytest.raises(StartupError) as ei:
        start_proxy(make_config(wasm_plugin("bad", path)))
    assert ei.value.kind is StartupKind.PLUGINS and ei.value.address is None
    assert "bad" in str(ei.value)
