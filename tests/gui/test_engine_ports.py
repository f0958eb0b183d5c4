"""The app's engine falls back to a free port when the configured one is taken, deciding on
``StartupError.kind`` (not on the message's wording): real sockets on 127.0.0.1."""

from __future__ import annotations

import socket

import pytest

from gui.engine_service import EngineService
from host.proxy.config import ProxyConfig


@pytest.mark.parametrize("taken", ["listen", "admin"])
def test_a_taken_port_falls_back_to_a_free_one_with_a_note(qtbot, taken) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    ports = {"listen": ("127.0.0.1", 0), "admin": ("127.0.0.1", 0)}
    ports[taken] = ("127.0.0.1", port)
    service = EngineService(ProxyConfig(), **ports)
    try:
        with qtbot.waitSignal(service.started, timeout=10_000):
            service.start()
        word = "proxy" if taken == "listen" else "admin"
        assert service.notes == [f"{word} port {port} is taken; using a free port"]
        bound = service.listen_address if taken == "listen" else service.admin_address
        assert bound[1] not in (0, port)
    finally:
        s.close()
        assert service.close()
