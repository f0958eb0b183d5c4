"""The TCP tests' echo upstream (tcp_helpers.EchoServer) itself: what it received is on
record by the time its client sees the end of the connection, so a test may assert on it
at once (before, the record came after the close: test_tcp_proxy's log-only test failed
now and then on a loaded machine)."""

from __future__ import annotations

import socket

from tests.host.proxy.tcp_helpers import echo_server


def test_what_the_echo_server_received_is_recorded_before_its_half_close() -> None:
    with echo_server() as up:
        for i in range(20):
            with socket.create_connection(("127.0.0.1", up.port), timeout=5) as s:
                s.sendall(b"piece %d" % i)
                s.shutdown(socket.SHUT_WR)
                echoed = b""
                while data := s.recv(65536):
                    echoed += data
                assert echoed == b"piece %d" % i
                assert up.received[-1:] == [b"piece %d" % i] and len(up.received) == i + 1
