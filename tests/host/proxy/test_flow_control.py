"""Bounded memory and time on the data path (issue 13 §8): reading pauses while the
other side cannot take the data (upload to a stalled upstream, a client that does not
read its response, pipelined requests nobody reads the answers to), request-header and
idle timeouts close slowloris connections, the connection cap closes connections over
it, and the route timeout starts once the request was sent.

Sizes are bounded (64 MB at most) and every wait has a deadline; the RSS test runs
``wasmdesk serve`` as a subprocess and reads its /proc/PID/status.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
import yaml

from host.proxy.config import ConfigError, parse_config

from .conftest import ROOT, ScriptedUpstream, connect, is_closed, read_response
from .test_serve_cli import Serve

MB = 1024 * 1024


def _config(upstream_url: str | None = None, timeout: str | None = None, **spec: object) -> str:
    s: dict[str, object] = {"listen": "127.0.0.1:0", "admin": "127.0.0.1:0", **spec}
    if upstream_url:
        cluster: dict[str, object] = {"name": "backend", "url": upstream_url}
        if timeout:
            cluster["timeout"] = timeout
        s["clusters"] = [cluster]
        s["defaultCluster"] = "backend"
    return yaml.safe_dump({"apiVersion": "wasmdesk.dev/v1alpha1", "kind": "Proxy", "spec": s})


class _Sender(threading.Thread):
    """Sends ``total`` bytes (after ``head``) in 64 KiB pieces; ``sent`` is its progress."""

    def __init__(self, sock: socket.socket, head: bytes, total: int, piece: bytes = b"") -> None:
        super().__init__(daemon=True)
        self.sock, self.head, self.total = sock, head, total
        self.piece = piece or b"x" * 65536
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.sock.sendall(self.head)
            while self.sent < self.total:
                n = min(len(self.piece), self.total - self.sent)
                self.sock.sendall(self.piece[:n])
                self.sent += n
        except OSError as e:
            self.error = e


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _small_buffers(s: socket.socket) -> socket.socket:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    return s


# -- uploads ---------------------------------------------------------------------------------


def test_upload_to_a_stalled_then_fast_upstream_keeps_serve_rss_bounded(
    scripted_upstream, tmp_path
):
    """64 MB through ``wasmdesk serve``: while the upstream does not read, the client is
    held back (the proxy stops reading it); once it reads, all 64 MB arrive; the serve
    process's RSS grows by far less than the upload at any time."""
    total = 64 * MB
    got = {"n": 0}

    def script(conn: socket.socket, up: ScriptedUpstream) -> None:
        buf = bytearray()
        head = up.read_head(conn, buf)
        if head is None:
            return
        if head.startswith(b"GET"):  # the warm-up request
            conn.sendall(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
            return
        up.event("go").wait(10)
        n = len(buf)
        while n < total:
            data = conn.recv(1 << 20)
            if not data:
                return
            n += len(data)
        got["n"] = n
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    up = scripted_upstream(script)
    cfg = tmp_path / "proxy.yaml"
    cfg.write_text(_config(up.url, timeout="30s"))
    serve = Serve("--config", str(cfg), "--no-watch")
    try:
        serve.wait_ready()
        pid = serve.proc.pid
        # warm up the code paths, then take the baseline
        with socket.create_connection(("127.0.0.1", serve.port), timeout=10) as w:
            w.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            w.recv(65536)
        time.sleep(0.2)
        base = _rss_kb(pid)
        peak = [base]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _rss_kb(pid))
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        s = _small_buffers(socket.create_connection(("127.0.0.1", serve.port), timeout=20))
        with s:
            head = b"POST /up HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % total
            sender = _Sender(s, head, total)
            sender.start()
            time.sleep(1.5)
            stalled_at = sender.sent
            up.event("go").set()
            sender.join(30)
            r = read_response(s.makefile("rb"))
        stop.set()
        sampler.join(2)
        growth_mb = (peak[0] - base) / 1024
        print(
            f"\n64 MB upload: client held at {stalled_at / MB:.1f} MB while the upstream "
            f"stalled; serve RSS {base / 1024:.0f} MB, peak +{growth_mb:.1f} MB"
        )
        assert sender.error is None
        assert r.status == 200 and r.body == b"ok"
        assert got["n"] == total
        assert stalled_at < 24 * MB, "the proxy kept reading while the upstream stalled"
        assert growth_mb < 24, f"serve RSS grew by {growth_mb:.1f} MB for a 64 MB upload"
    finally:
        serve.proc.terminate()
        try:
            serve.wait(10)
        finally:
            serve.kill()


def test_client_that_does_not_read_stops_the_proxy_reading_the_upstream(
    start_proxy, scripted_upstream
):
    total = 64 * MB
    progress = {"sent": 0}

    def script(conn: socket.socket, up: ScriptedUpstream) -> None:
        buf = bytearray()
        if up.read_head(conn, buf) is None:
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        piece = b"y" * 65536
        while progress["sent"] < total:
            conn.sendall(piece)
            progress["sent"] += len(piece)

    up = scripted_upstream(script)
    h = start_proxy(_config(up.url, timeout="30s"))
    with _small_buffers(connect(h, timeout=20)) as s:
        s.sendall(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
        time.sleep(1.5)
        held = progress["sent"]
        f = s.makefile("rb")
        r = read_response(f)
    print(f"\nclient not reading a 64 MB response: upstream held at {held / MB:.1f} MB")
    assert held < 24 * MB, "the proxy kept reading the upstream for a client that does not read"
    assert r.status == 200 and len(r.body) == total


def test_pipelined_requests_nobody_reads_stop_being_read(start_proxy):
    """32 MB of pipelined requests from a client that reads no answer: the proxy stops
    reading it (bounded queue, own write buffer full) instead of parsing everything."""
    h = start_proxy(_config())
    one = b"GET /p HTTP/1.1\r\nhost: x\r\nx-pad: " + b"p" * 1000 + b"\r\n\r\n"
    piece = one * 64
    with _small_buffers(connect(h, timeout=20)) as s:
        sender = _Sender(s, b"", 32 * MB // len(piece) * len(piece), piece)
        sender.start()
        time.sleep(1.5)
        held = sender.sent
        # wakes the sender blocked in sendall (a close alone leaves it there until join's
        # timeout)
        s.shutdown(socket.SHUT_RDWR)
    sender.join(5)
    assert not sender.is_alive()
    print(f"\n32 MB pipelined, answers unread: client held at {held / MB:.1f} MB")
    assert held < 16 * MB


def test_slow_upload_to_a_healthy_upstream_is_not_a_504(start_proxy, upstream):
    """The route timeout (1 s here) runs from the end of the request, not from connect:
    a 1.5 s upload gets its answer."""
    h = start_proxy(_config(upstream.url, timeout="1s"))
    with connect(h) as s:
        s.sendall(b"POST /slow-up HTTP/1.1\r\nhost: x\r\ncontent-length: 6\r\n\r\n")
        for part in (b"ab", b"cd", b"ef"):
            time.sleep(0.5)
            s.sendall(part)
        r = read_response(s.makefile("rb"))
    assert r.status == 200, r.body
    assert upstream.requests[-1]["body"] == "abcdef"


def test_route_timeout_still_bounds_the_upstream_answer(start_proxy, upstream):
    h = start_proxy(_config(upstream.url, timeout="300ms"))
    with connect(h) as s:
        s.sendall(b"GET /slow?ms=1500 HTTP/1.1\r\nhost: x\r\n\r\n")
        t = time.monotonic()
        r = read_response(s.makefile("rb"))
    assert r.status == 504
    assert time.monotonic() - t < 1.2


# -- timeouts and the connection cap -----------------------------------------------------------


def test_slowloris_connections_are_closed_at_the_header_timeout(start_proxy):
    h = start_proxy(_config(timeouts={"requestHeaders": "1s", "idle": "30s"}))
    socks = [connect(h) for _ in range(20)]
    try:
        for s in socks:
            s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n")
        t0 = time.monotonic()
        for _ in range(3):  # one byte now and then: never the end of the headers
            time.sleep(0.3)
            for s in socks:
                s.sendall(b"x")
        # a normal client is served meanwhile
        with h.client() as c:
            assert c.get("/ok").status_code == 200
        for s in socks:
            s.settimeout(3)
            data = s.recv(65536)
            assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data
            assert is_closed(s, 2)
        elapsed = time.monotonic() - t0
        assert 0.9 < elapsed < 2.5
    finally:
        for s in socks:
            s.close()
    h.wait_for(lambda: h.stats()["http.downstream_cx_active"] == 0, what="all closed")


def test_idle_connection_is_closed_after_the_idle_timeout(start_proxy):
    h = start_proxy(_config(timeouts={"idle": "500ms", "requestHeaders": "5s"}))
    with connect(h) as fresh, connect(h) as used:
        used.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        assert read_response(used.makefile("rb")).status == 200
        t = time.monotonic()
        assert is_closed(fresh, 3) and is_closed(used, 3)
        assert time.monotonic() - t < 2


def test_connections_over_the_cap_are_closed_at_once(start_proxy):
    h = start_proxy(_config(maxConnections=5))
    held = [connect(h) for _ in range(5)]
    try:
        h.wait_for(lambda: h.stats()["http.downstream_cx_active"] == 5, what="5 open")
        extra = connect(h)
        with extra:
            extra.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            assert is_closed(extra, 3)
        assert h.stats()["listener.downstream_cx_overflow"] == 1
        held.pop().close()
        h.wait_for(lambda: h.stats()["http.downstream_cx_active"] == 4, what="one closed")
        with h.client() as c:
            assert c.get("/again").status_code == 200
    finally:
        for s in held:
            s.close()


# -- configuration -------------------------------------------------------------------------


def test_listener_limits_parse_and_default():
    cfg = parse_config(_config(), "<t>", str(ROOT))
    assert (cfg.request_headers_timeout_s, cfg.idle_timeout_s, cfg.max_connections) == (
        10.0,
        300.0,
        1024,
    )
    cfg = parse_config(
        _config(timeouts={"requestHeaders": "2s", "idle": "1m"}, maxConnections=64),
        "<t>",
        str(ROOT),
    )
    assert (cfg.request_headers_timeout_s, cfg.idle_timeout_s, cfg.max_connections) == (
        2.0,
        60.0,
        64,
    )


@pytest.mark.parametrize(
    "spec,needle",
    [
        ({"timeouts": {"idle": "soon"}}, "spec.timeouts.idle"),
        ({"timeouts": {"requestHeaders": -1}}, "spec.timeouts.requestHeaders"),
        ({"timeouts": {"header": "1s"}}, "spec.timeouts.header"),
        ({"maxConnections": 0}, "spec.maxConnections"),
        ({"maxConnections": "many"}, "spec.maxConnections"),
    ],
)
def test_listener_limits_reject_bad_values(spec, needle):
    with pytest.raises(ConfigError) as e:
        parse_config(_config(**spec), "<t>", str(ROOT))
    assert needle in str(e.value)


def test_header_timeout_of_a_pipelined_head_does_not_kill_the_request_in_flight(
    start_proxy, upstream
):
    """The next request's head, started while a slow request is in flight, is timed
    from the moment that one ends: the slow request gets its answer."""
    h = start_proxy(_config(upstream.url, timeout="5s", timeouts={"requestHeaders": "500ms"}))
    with connect(h) as s:
        s.sendall(b"GET /slow?ms=1200 HTTP/1.1\r\nhost: x\r\n\r\nGET /next HTTP/1.1\r\n")
        f = s.makefile("rb")
        first = read_response(f)
        assert first.status == 200 and first.body == b"slow\n"
        t = time.monotonic()
        second = read_response(f)  # its head never completes: 408 once its own time is up
        assert second.status == 408
        assert 0.3 < time.monotonic() - t < 2
