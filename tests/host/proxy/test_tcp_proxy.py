"""The TCP proxy with NETWORK plugins, end to end: a raw TCP echo server on 127.0.0.1, raw
socket clients through a ``spec.tcp`` listener, plugins built from source (the C
``tcp_filter`` via zig; WAT for a trap and a plugin that never continues)."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.host.proxy.tcp_helpers import (
    NET_HOLD_WAT,
    NET_PROPS_WAT,
    NET_TICK_TRAP_WAT,
    NET_TRAP_WAT,
    connect,
    echo_server,
    network_plugin,
    read_exactly,
    read_until_eof,
    tcp_config,
    tcp_port,
    wat_file,
)

Start = Callable[..., Any]


def logs(h: Any) -> list[str]:
    return h.sync(lambda: [r.message for r in h.server.host.logs])


def connections(h: Any, n: int) -> list[dict[str, Any]]:
    """The connection records once ``n`` connections have finished."""
    h.wait_for(lambda: len(h.sync(lambda: h.server.recent_connections(100))) >= n, what="records")
    return h.sync(lambda: h.server.recent_connections(100))


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_data_both_ways_transformed_and_half_close(start_proxy: Start) -> None:
    with echo_server(goodbye=b"bye") as up:
        h = start_proxy(
            tcp_config(up.url, network_plugin("shout", {"upper": "downstream", "up_append": "!"}))
        )
        s = connect(tcp_port(h))
        s.sendall(b"hello ")
        assert read_exactly(s, 7) == b"HELLO !"  # echoed upper-cased, the upstream chunk + "!"
        s.sendall(b"world")
        s.shutdown(socket.SHUT_WR)  # half-close: the upstream sees EOF, answers, closes
        rest = read_until_eof(s)
        s.close()
        assert rest.replace(b"!", b"") == b"WORLDbye"
        (rec,) = connections(h, 1)
        assert up.received == [b"HELLO WORLD"]
        assert rec["outcome"] == "closed" and rec["close_peer"] == 2
        assert rec["rx_bytes"] == 11 and rec["upstream_tx_bytes"] == 11
        hop = rec["hops"][0]
        assert hop["downstream"]["before"] == "hello world"
        assert hop["downstream"]["after"] == "HELLO WORLD"
        names = [c["name"] for c in hop["callbacks"]]
        assert names[0] == "proxy_on_new_connection"
        # the upstream's half-close fires the upstream close (peer Unknown), as Envoy
        assert names.index("proxy_on_upstream_connection_close") < names.index(
            "proxy_on_downstream_connection_close"
        )
        lines = logs(h)
        assert any(line.startswith("downstream eos ") for line in lines)
        assert any(line.endswith("peer=0") and "upstream close" in line for line in lines)
        assert any("downstream close" in line and "peer=2 down=11" in line for line in lines)


def test_chain_order_downstream_in_order_upstream_in_reverse(start_proxy: Start) -> None:
    with echo_server() as up:
        h = start_proxy(
            tcp_config(
                up.url,
                network_plugin("a", {"down_append": "[A]", "up_append": "(A)"}, priority=20),
                network_plugin("b", {"down_append": "[B]", "up_append": "(B)"}, priority=10),
            )
        )
        s = connect(tcp_port(h))
        s.sendall(b"x")
        got = read_exactly(s, len(b"x[A][B](B)(A)"))
        s.close()
        assert got == b"x[A][B](B)(A)"
        assert up.received == [b"x[A][B]"] or h.wait_for(lambda: up.received == [b"x[A][B]"])
        (rec,) = connections(h, 1)
        a, b = rec["hops"]
        # each plugin sees what the one before it released
        assert (a["downstream"]["before"], b["downstream"]["before"]) == ("x", "x[A]")
        assert (b["upstream"]["before"], a["upstream"]["before"]) == ("x[A][B]", "x[A][B](B)")


def test_plugin_closes_the_connection_on_a_marker(start_proxy: Start) -> None:
    with echo_server() as up:
        h = start_proxy(tcp_config(up.url, network_plugin("guard", {"close_marker": "QUIT"})))
        s = connect(tcp_port(h))
        s.sendall(b"hello")
        assert read_exactly(s, 5) == b"hello"
        s.sendall(b"please QUIT now")
        assert read_until_eof(s) == b""  # closed by the proxy; the chunk never went up
        s.close()
        (rec,) = connections(h, 1)
        assert rec["outcome"] == "plugin_closed" and rec["close_peer"] == 1
        assert rec["hops"][0]["closed"] is True
        h.wait_for(lambda: up.received, what="upstream closed")
        assert up.received == [b"hello"]
        assert h.stats()["wasm.guard.closed_connection"] == 1
        assert any("downstream close" in m and "peer=1" in m for m in logs(h))


def test_upstream_refused_closes_the_client(start_proxy: Start) -> None:
    h = start_proxy(tcp_config(f"tcp://127.0.0.1:{free_port()}", network_plugin("p")))
    s = connect(tcp_port(h))
    t0 = time.monotonic()
    assert read_until_eof(s) == b""
    assert time.monotonic() - t0 < 3
    s.close()
    (rec,) = connections(h, 1)
    assert rec["outcome"] == "upstream_connect_failed" and rec["close_peer"] == 1
    stats = h.stats()
    assert stats["cluster.echo.upstream_cx_connect_fail"] == 1
    assert stats["tcp.t1.downstream_cx_total"] == 1 and stats["tcp.t1.downstream_cx_active"] == 0
    assert any("downstream close" in m and "peer=1" in m for m in logs(h))


def test_pause_then_continue_from_a_tick(start_proxy: Start) -> None:
    with echo_server() as up:
        h = start_proxy(tcp_config(up.url, network_plugin("slow", {"hold": "data"})))
        s = connect(tcp_port(h))
        s.sendall(b"abc")
        assert read_exactly(s, 3) == b"abc"
        s.sendall(b"def")
        assert read_exactly(s, 3) == b"def"
        s.close()
        (rec,) = connections(h, 1)
        hop = rec["hops"][0]
        assert hop["paused_ms"] > 0
        results = [(c["name"], c["result"]) for c in hop["callbacks"]]
        assert ("proxy_on_downstream_data", 1) in results  # paused
        assert h.stats()["wasm.slow.paused"] >= 2
        assert any(m.startswith("continue ") and m.endswith("status=OK") for m in logs(h))


def test_pause_on_new_connection_holds_the_upstream_until_continued(start_proxy: Start) -> None:
    with echo_server() as up:
        h = start_proxy(tcp_config(up.url, network_plugin("gate", {"hold": "connection"})))
        s = connect(tcp_port(h))
        s.sendall(b"early")
        assert read_exactly(s, 5) == b"early"  # flows once the tick continued the connection
        s.close()
        (rec,) = connections(h, 1)
        hop = rec["hops"][0]
        assert hop["callbacks"][0] == {**hop["callbacks"][0], "name": "proxy_on_new_connection"}
        assert hop["callbacks"][0]["result"] == 1
        assert hop["paused_ms"] > 0
        assert up.connections == 1


def test_back_pressure_while_a_plugin_holds_the_data(start_proxy: Start, tmp_path: Path) -> None:
    with echo_server() as up:
        hold = wat_file(tmp_path, "hold", NET_HOLD_WAT)
        h = start_proxy(tcp_config(up.url, network_plugin("hold", url=hold)))
        h.server.manager.pause_timeout_s = 1.0  # then the connection is closed: the record
        s = connect(tcp_port(h))
        s.settimeout(0.5)
        sent = 0
        chunk = b"x" * 65536
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:  # until the proxy stops reading (bounded)
            try:
                sent += s.send(chunk)
            except TimeoutError:
                break
        assert sent > 1 << 20  # the plugin held a full buffer ...
        held = h.sync(lambda: next(iter(h.server.tcp.listeners["t1"].connections)).chain.held)
        # ... and then the proxy stopped reading: what it holds stays near the limit
        from host.wasm.types import StreamType

        n = h.sync(lambda: held(StreamType.DOWNSTREAM))
        assert (1 << 20) <= n < (1 << 20) + (1 << 19)
        assert sent - n > 0  # the rest waits in the kernel's buffers, not in the proxy
        (rec,) = connections(h, 1)  # the pause timeout closes it
        s.close()
        assert rec["outcome"] == "pause_timeout"
        assert rec["upstream_tx_bytes"] == 0 and rec["hops"][0]["downstream"]["after"] is None
        assert rec["hops"][0]["downstream"]["before_size"] == n
        assert h.stats()["wasm.hold.pause_timeout"] == 1


def test_canary_runs_a_share_of_connections(start_proxy: Start) -> None:
    with echo_server() as up:
        h = start_proxy(
            tcp_config(
                up.url,
                network_plugin("half", {"upper": "downstream"}, canary=50),
                network_plugin("sticky", {"up_append": "!"}, canary=50, canary_key="client-ip"),
            )
        )
        port = tcp_port(h)
        outputs = []
        for _ in range(24):
            s = connect(port)
            s.sendall(b"ab")
            s.shutdown(socket.SHUT_WR)
            outputs.append(read_until_eof(s))
            s.close()
        connections(h, 24)
        stats = h.stats()
        ran = stats.get("wasm.half.invocations", 0)
        assert ran + stats["wasm.half.canary_skipped"] == 24
        assert 0 < ran < 24  # a random draw per connection: both sides (p of failure 2^-23)
        assert {o.replace(b"!", b"") for o in outputs} == {b"ab", b"AB"}
        # keyed by the client address: every connection from 127.0.0.1 lands on one side
        sticky = stats.get("wasm.sticky.invocations", 0)
        assert sticky in (0, 24)
        assert all(o.endswith(b"!") for o in outputs) == (sticky == 24)


def test_log_only_applies_nothing_and_records_intent(start_proxy: Start) -> None:
    with echo_server() as up:
        h = start_proxy(
            tcp_config(
                up.url,
                network_plugin(
                    "dry", {"upper": "downstream", "close_marker": "QUIT"}, mode="log-only"
                ),
            )
        )
        s = connect(tcp_port(h))
        s.sendall(b"QUIT and more")
        assert read_exactly(s, 13) == b"QUIT and more"  # not upper-cased, not closed
        s.shutdown(socket.SHUT_WR)
        assert read_until_eof(s) == b""
        s.close()
        (rec,) = connections(h, 1)
        assert rec["outcome"] == "closed"
        hop = rec["hops"][0]
        assert hop["mode"] == "log-only" and "close" in hop["would"]
        assert up.received == [b"QUIT and more"]
        stats = h.stats()
        assert stats["wasm.dry.log_only.would_close"] == 1
        assert stats["wasm.dry.log_only.requests_would_act"] == 1


def test_log_only_would_mutate_is_recorded_with_what_it_would_have_sent(start_proxy: Start) -> None:
    with echo_server() as up:
        h = start_proxy(
            tcp_config(up.url, network_plugin("dry", {"upper": "downstream"}, mode="log-only"))
        )
        s = connect(tcp_port(h))
        s.sendall(b"quiet")
        assert read_exactly(s, 5) == b"quiet"
        s.close()
        (rec,) = connections(h, 1)
        hop = rec["hops"][0]
        assert hop["downstream"]["after"] == "QUIET" and "mutate_downstream_data" in hop["would"]
        assert up.received == [b"quiet"] or h.wait_for(lambda: up.received == [b"quiet"])


def test_fail_close_trap_closes_the_connection_and_later_ones(
    start_proxy: Start, tmp_path: Path
) -> None:
    with echo_server() as up:
        trap = wat_file(tmp_path, "trap", NET_TRAP_WAT)
        h = start_proxy(tcp_config(up.url, network_plugin("boom", url=trap, fail="FAIL_CLOSE")))
        port = tcp_port(h)
        s = connect(port)
        s.sendall(b"data")
        assert read_until_eof(s) == b""
        s.close()
        s2 = connect(port)
        assert read_until_eof(s2) == b""  # refused at once: the plugin is failed
        s2.close()
        first, second = connections(h, 2)
        assert first["outcome"] == "plugin_failed" and first["close_peer"] == 1
        assert first["hops"][0]["failure"]["kind"] == "unreachable"
        assert first["hops"][0]["callbacks"][-1]["result"] == "trap"
        assert second["outcome"] == "failed_closed" and second["hops"][0]["ran"] is False
        stats = h.stats()
        assert stats["wasm.boom.traps"] == 1 and stats["wasm.boom.fail_closed_rejected"] == 1
        ready = h.admin("GET", "/ready")  # a NETWORK plugin failing closed: not ready
        assert ready.status_code == 503 and "boom" in ready.text
        assert up.received == [] or up.received == [b""]


def test_a_connection_refused_by_a_failed_plugin_runs_no_plugin(
    start_proxy: Start, tmp_path: Path
) -> None:
    with echo_server() as up:
        trap = wat_file(tmp_path, "trap", NET_TRAP_WAT)
        h = start_proxy(
            tcp_config(
                up.url,
                network_plugin("first", {"upper": "downstream"}, priority=10),
                network_plugin("boom", url=trap, fail="FAIL_CLOSE", priority=1),
            )
        )
        port = tcp_port(h)
        s = connect(port)
        s.sendall(b"x")
        assert read_until_eof(s) == b""
        s.close()
        connections(h, 1)
        before = sum(1 for m in logs(h) if m.startswith("new connection"))
        s = connect(port)
        assert read_until_eof(s) == b""
        s.close()
        _, refused = connections(h, 2)
        assert refused["outcome"] == "failed_closed"
        first, boom = refused["hops"]
        assert first["ran"] is False and first["skipped_reason"] == "connection refused by boom"
        assert boom["ran"] is False and boom["failure"]["kind"] == "unreachable"
        assert sum(1 for m in logs(h) if m.startswith("new connection")) == before
        assert h.stats()["wasm.first.invocations"] == 1


def test_fail_open_trap_skips_the_plugin(start_proxy: Start, tmp_path: Path) -> None:
    with echo_server() as up:
        trap = wat_file(tmp_path, "trap", NET_TRAP_WAT)
        h = start_proxy(
            tcp_config(
                up.url,
                network_plugin("boom", url=trap, fail="FAIL_OPEN", priority=10),
                network_plugin("shout", {"upper": "downstream"}, priority=1),
            )
        )
        port = tcp_port(h)
        for text in (b"first", b"second"):
            s = connect(port)
            s.sendall(text)
            assert read_exactly(s, len(text)) == text.upper()  # the data went on without it
            s.close()
        first, second = connections(h, 2)
        assert first["outcome"] in ("client_closed", "closed")
        assert first["hops"][0]["failure"]["kind"] == "unreachable"
        assert second["hops"][0]["ran"] is False
        assert "FAIL_OPEN: skipped" in second["hops"][0]["skipped_reason"]
        assert h.stats()["wasm.boom.fail_open_skipped"] == 1


def test_client_reset_closes_the_upstream(start_proxy: Start) -> None:
    with echo_server() as up:
        h = start_proxy(tcp_config(up.url, network_plugin("p")))
        s = connect(tcp_port(h))
        s.sendall(b"hi")
        assert read_exactly(s, 2) == b"hi"
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST
        (rec,) = connections(h, 1)
        assert rec["outcome"] == "client_closed" and rec["close_peer"] == 2
        h.wait_for(lambda: up.received == [b"hi"], what="upstream connection closed")


def test_upstream_reset_closes_the_client_locally(start_proxy: Start) -> None:
    with echo_server(reset=True) as up:
        h = start_proxy(tcp_config(up.url, network_plugin("p")))
        s = connect(tcp_port(h))
        s.sendall(b"x")
        assert read_until_eof(s) == b""
        s.close()
        (rec,) = connections(h, 1)
        assert rec["outcome"] == "upstream_closed" and rec["close_peer"] == 1
        names = [c["name"] for c in rec["hops"][0]["callbacks"]]
        assert "proxy_on_upstream_connection_close" not in names  # no end of stream was seen
        assert any("downstream close" in m and "peer=1" in m for m in logs(h))


def test_admin_and_snapshots_show_listeners_plugins_and_connections(start_proxy: Start) -> None:
    with echo_server() as up:
        h = start_proxy(
            tcp_config(
                up.url,
                network_plugin("counted", {"up_append": "!"}),
                network_plugin("elsewhere", match=[{"ports": [{"number": 1}]}]),
                listeners=2,
            )
        )
        for name in ("t1", "t2"):
            s = connect(tcp_port(h, name))
            s.sendall(b"12345")
            assert read_exactly(s, 6) == b"12345!"
            s.close()
        connections(h, 2)
        r = h.admin("GET", "/connections?limit=10")
        assert r.status_code == 200
        conns = r.json()["connections"]
        assert [c["listener"] for c in conns] == ["t1", "t2"] or sorted(
            c["listener"] for c in conns
        ) == ["t1", "t2"]
        assert all(c["rx_bytes"] == 5 and c["tx_bytes"] == 6 for c in conns)
        assert [h_["plugin"] for h_ in conns[0]["hops"]] == ["counted"]
        stats = h.stats()
        assert stats["tcp.downstream_cx_total"] == 2
        assert stats["tcp.t1.downstream_cx_rx_bytes_total"] == 5
        assert stats["tcp.t2.downstream_cx_tx_bytes_total"] == 6
        assert stats["tcp.downstream_cx_tx_bytes_total"] == 12
        assert stats["wasm.counted.invocations"] == 2
        assert "wasm.elsewhere.invocations" not in stats or stats["wasm.elsewhere.invocations"] == 0
        plugins = h.admin("GET", "/plugins").json()["plugins"]
        assert {p["name"]: p["type"] for p in plugins} == {
            "counted": "NETWORK",
            "elsewhere": "NETWORK",
        }
        dump = h.admin("GET", "/config_dump").json()
        t1 = next(t for t in dump["tcp"] if t["name"] == "t1")
        assert t1["cluster"] == "echo" and t1["upstream"] == f"127.0.0.1:{up.port}"
        applied = {p["name"]: p["applied"] for p in t1["plugins"]}
        assert applied == {"counted": True, "elsewhere": False}
        assert "/connections" in h.admin("GET", "/help").text
        assert all("NETWORK: runs on the TCP listeners" in line for line in dump["order"])


def test_fail_reload_closes_until_a_fresh_vm_serves(start_proxy: Start, tmp_path: Path) -> None:
    from host.proxy.policy import ReloadPolicy

    with echo_server() as up:
        trap = wat_file(tmp_path, "trap", NET_TRAP_WAT)
        h = start_proxy(tcp_config(up.url, network_plugin("boom", url=trap, fail="FAIL_RELOAD")))
        h.server.manager.reload_policy = ReloadPolicy(base_s=0.3)
        port = tcp_port(h)
        s = connect(port)
        s.sendall(b"x")
        assert read_until_eof(s) == b""
        s.close()
        s = connect(port)  # while it reloads: closed, as HTTP answers 503 meanwhile
        assert read_until_eof(s) == b""
        s.close()
        h.wait_for(lambda: h.slot("boom").state == "running", what="reloaded")
        s = connect(port)
        s.shutdown(socket.SHUT_WR)  # no data: the fresh VM lets it through
        assert read_until_eof(s) == b""
        s.close()
        first, second, third = connections(h, 3)
        assert first["outcome"] == "plugin_failed"
        assert second["outcome"] == "failed_closed"
        assert "FAIL_RELOAD" in second["hops"][0]["skipped_reason"]
        assert third["outcome"] == "closed" and third["hops"][0]["ran"] is True
        assert h.stats()["wasm.boom.vm_reload_success"] == 1


@pytest.mark.parametrize("policy", ["FAIL_OPEN", "FAIL_CLOSE"])
def test_a_tick_trap_while_paused_applies_the_policy_at_once(
    start_proxy: Start, tmp_path: Path, policy: str
) -> None:
    with echo_server() as up:
        wasm = wat_file(tmp_path, "ticktrap", NET_TICK_TRAP_WAT)
        h = start_proxy(tcp_config(up.url, network_plugin("tt", url=wasm, fail=policy)))
        s = connect(tcp_port(h))
        s.sendall(b"held")
        t0 = time.monotonic()
        if policy == "FAIL_OPEN":
            assert read_exactly(s, 4) == b"held"  # released past the failed plugin
        else:
            assert read_until_eof(s) == b""
        assert time.monotonic() - t0 < 2  # not the 30 s pause timeout
        s.close()
        (rec,) = connections(h, 1)
        assert rec["hops"][0]["failure"]["callback"] == "proxy_on_tick"
        assert rec["outcome"] == ("plugin_failed" if policy == "FAIL_CLOSE" else "closed")


def test_live_reload_keeps_a_listener_and_opens_a_new_one(start_proxy: Start) -> None:
    from host.proxy.config import parse_config
    from tests.host.proxy.conftest import ROOT

    with echo_server() as up, echo_server(goodbye=b"2") as up2:
        h = start_proxy(tcp_config(up.url, network_plugin("p", {"up_append": "!"})))
        port1 = tcp_port(h)
        kept = connect(port1)  # open across the reload
        kept.sendall(b"a")
        assert read_exactly(kept, 2) == b"a!"
        text = tcp_config(up2.url, network_plugin("p", {"up_append": "!"}), listeners=2)
        # t1 keeps its port (the file says port 0: the bound one is kept by name and address)
        errors = h.apply(parse_config(text, "<test>", str(ROOT)))
        assert errors == []
        assert tcp_port(h) == port1
        kept.sendall(b"b")  # the open connection still goes to the old upstream
        assert read_exactly(kept, 2) == b"b!"
        kept.close()
        s = connect(tcp_port(h, "t2"))
        s.shutdown(socket.SHUT_WR)
        assert read_until_eof(s) == b"2!"  # the new listener, to the new cluster
        s.close()
        assert up2.connections == 1


def test_on_uvloop_data_sent_at_once_reaches_the_upstream(
    start_proxy: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``wasmdesk serve`` runs uvloop, which may deliver client bytes before the upstream
    connection is up (pause_reading in connection_made comes before its reading starts):
    they were written to no upstream and lost."""
    import asyncio

    import uvloop

    with echo_server() as up:
        with monkeypatch.context() as m:
            m.setattr(asyncio, "new_event_loop", uvloop.new_event_loop)
            h = start_proxy(tcp_config(up.url, network_plugin("p", {"upper": "downstream"})))
        assert "uvloop" in type(h.loop).__module__
        port = tcp_port(h)
        for i in range(8):
            s = connect(port)
            s.sendall(b"early %d" % i)  # before the proxy has connected upstream
            assert read_exactly(s, 7) == b"EARLY %d" % i
            s.close()
        assert len(connections(h, 8)) == 8


def test_serve_prints_the_tcp_listeners_and_proxies_on_them(tmp_path: Path) -> None:
    """``wasmdesk serve`` as a process (on uvloop, as users run it)."""
    from tests.host.proxy.test_serve_cli import Serve

    banner = re.compile(r"tcp t1 on 127\.0\.0\.1:(\d+) -> echo \((.*?)\); NETWORK plugins: shout")
    with echo_server() as up:
        cfg = tmp_path / "tcp.yaml"
        cfg.write_text(tcp_config(up.url, network_plugin("shout", {"upper": "downstream"})))
        s = Serve("--config", str(cfg))
        try:
            s.wait_ready()
            deadline = time.monotonic() + 10
            while (m := banner.search(s.stderr())) is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert m is not None, s.stderr()
            assert m.group(2) == f"127.0.0.1:{up.port}"
            c = connect(int(m.group(1)))
            c.sendall(b"via serve")
            assert read_exactly(c, 9) == b"VIA SERVE"
            c.close()
        finally:
            s.kill()


def test_a_network_plugin_reads_the_connection_attributes(
    start_proxy: Start, tmp_path: Path
) -> None:
    with echo_server() as up:
        wasm = wat_file(tmp_path, "props", NET_PROPS_WAT)
        h = start_proxy(tcp_config(up.url, network_plugin("props", url=wasm)))
        port = tcp_port(h)
        s = connect(port)
        s.sendall(b"x")
        assert read_exactly(s, 1) == b"x"
        client = s.getsockname()
        s.close()
        connections(h, 1)
        lines = set(logs(h))
        assert f"source.address={client[0]}:{client[1]}" in lines
        assert f"destination.address=127.0.0.1:{port}" in lines
        assert f"upstream.address=127.0.0.1:{up.port}" in lines
        assert "xds.cluster_name=echo" in lines


def test_bulk_data_both_ways_arrives_whole_and_in_order(start_proxy: Start) -> None:
    """4 MiB each way through a transforming plugin while both socket buffers fill: flow
    control pauses and resumes reading, nothing is lost or reordered."""
    import threading

    with echo_server() as up:
        h = start_proxy(tcp_config(up.url, network_plugin("shout", {"upper": "downstream"})))
        s = connect(tcp_port(h))
        s.settimeout(10)
        data = bytes(range(97, 123)) * (4 * 1024 * 1024 // 26)
        received = bytearray()

        def reader() -> None:
            received.extend(read_until_eof(s, limit=len(data) + 1))

        t = threading.Thread(target=reader)
        t.start()
        view = memoryview(data)
        for i in range(0, len(data), 100_000):  # uneven chunks
            s.sendall(view[i : i + 100_000])
        s.shutdown(socket.SHUT_WR)
        t.join(20)
        s.close()
        assert len(received) == len(data)
        assert bytes(received) == data.upper()
        (rec,) = connections(h, 1)
        assert rec["rx_bytes"] == rec["tx_bytes"] == len(data)
        hop = rec["hops"][0]
        assert hop["downstream"]["before_size"] == len(data)
        assert len(hop["downstream"]["before"]) == 16 * 1024  # capped as bodies are


def test_log_only_pause_never_holds_and_disabled_never_runs(
    start_proxy: Start, tmp_path: Path
) -> None:
    with echo_server() as up:
        hold = wat_file(tmp_path, "hold", NET_HOLD_WAT)
        h = start_proxy(
            tcp_config(
                up.url,
                network_plugin("dryhold", url=hold, mode="log-only", priority=2),
                network_plugin("off", {"upper": "downstream"}, mode="disabled", priority=1),
            )
        )
        s = connect(tcp_port(h))
        s.sendall(b"flows")
        assert read_exactly(s, 5) == b"flows"  # not held, not upper-cased
        s.close()
        (rec,) = connections(h, 1)
        dry, off = rec["hops"]
        assert dry["ran"] is True and "pause" in dry["would"] and dry["paused_ms"] == 0
        assert off["ran"] is False and off["skipped_reason"] == "disabled"
        stats = h.stats()
        assert stats["wasm.dryhold.log_only.would_pause"] >= 1
        assert stats.get("wasm.dryhold.paused", 0) == 0


def test_a_taken_tcp_port_refuses_to_start_with_a_clear_error() -> None:
    from host.proxy.config import parse_config
    from host.proxy.server import StartupError, StartupKind
    from tests.host.proxy.conftest import ROOT, ProxyHarness

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        text = tcp_config("tcp://127.0.0.1:9", network_plugin("p")).replace(
            "listen: 127.0.0.1:0\n    cluster: echo", f"listen: 127.0.0.1:{port}\n    cluster: echo"
        )
        assert f"127.0.0.1:{port}" in text
        with pytest.raises(StartupError) as info:
            ProxyHarness(parse_config(text, "<test>", str(ROOT)))
        assert info.value.kind is StartupKind.LISTEN
        assert info.value.address == ("127.0.0.1", port)
        assert f"cannot listen on 127.0.0.1:{port} (spec.tcp t1)" in str(info.value)
    finally:
        taken.close()


def test_an_authz_callout_decides_whether_the_connection_goes_on(start_proxy: Start) -> None:
    """An ext-authz style network filter: the new connection waits for an http_call to a
    real HTTP server on 127.0.0.1; 200 lets it through, 403 closes it."""
    import http.server
    import threading

    seen: list[str] = []
    verdict = {"status": 200}

    class Authz(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(f"{self.path} {self.headers.get('x-client')}")
            self.send_response(verdict["status"])
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    authz = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Authz)
    threading.Thread(
        target=authz.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    try:
        with echo_server() as up:
            h = start_proxy(
                tcp_config(
                    up.url,
                    network_plugin("authz", {"authz": "auth"}),
                    clusters={"auth": f"http://127.0.0.1:{authz.server_address[1]}"},
                )
            )
            port = tcp_port(h)
            s = connect(port)
            s.sendall(b"allowed")
            assert read_exactly(s, 7) == b"allowed"
            client = s.getsockname()
            s.close()
            verdict["status"] = 403
            s = connect(port)
            s.sendall(b"denied")
            assert read_until_eof(s) == b""
            s.close()
            ok, denied = connections(h, 2)
            assert seen[0] == f"/check {client[0]}:{client[1]}"
            assert ok["outcome"] == "closed" and ok["hops"][0]["paused_ms"] > 0
            assert denied["outcome"] == "plugin_closed" and denied["upstream_tx_bytes"] == 0
            assert "authz 2 status=200" in logs(h)
            assert any(m.endswith("status=403") for m in logs(h))
            assert up.connections == 1  # the denied client never reached the upstream
    finally:
        authz.shutdown()
        authz.server_close()


def test_a_new_tcp_listener_that_cannot_bind_is_an_apply_error_of_its_own_kind(
    start_proxy: Start,
) -> None:
    """A config applied while traffic flows whose new spec.tcp listener's port is taken:
    the apply reports a LISTEN error (no plugin named) and the running listener stays."""
    from host.proxy.config import parse_config
    from host.proxy.errors import ErrorKind
    from tests.host.proxy.conftest import ROOT

    with echo_server() as up:
        h = start_proxy(tcp_config(up.url))
        port1 = tcp_port(h)
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        try:
            docs = list(yaml.safe_load_all(tcp_config(up.url, listeners=2)))
            docs[0]["spec"]["tcp"][1]["listen"] = f"127.0.0.1:{busy}"
            text = yaml.safe_dump_all(docs, sort_keys=False)
            errors = h.apply(parse_config(text, "<test>", str(ROOT)))
        finally:
            taken.close()
        assert [e.kind for e in errors] == [ErrorKind.LISTEN]
        assert errors[0].plugin == "" and not str(errors[0]).startswith("plugin ")
        assert f"127.0.0.1:{busy}" in str(errors[0]), str(errors[0])
        assert tcp_port(h) == port1  # the running listener still serves
        s = connect(port1)
        s.sendall(b"still here")
        s.shutdown(socket.SHUT_WR)
        assert read_until_eof(s) == b"still here"
        s.close()


def test_tcp_and_http_connections_take_ids_from_one_sequence(start_proxy: Start) -> None:
    # Envoy's connection.id is unique across all listeners: a TCP connection and an HTTP
    # one never share an id (the TCP listeners once counted on their own from 1).
    import httpx

    from host.proxy.downstream import next_connection_id

    with echo_server() as up:
        h = start_proxy(tcp_config(up.url, network_plugin("shout", {"upper": "downstream"})))
        before = next_connection_id()
        s = connect(tcp_port(h))
        s.sendall(b"a")
        assert read_exactly(s, 1) == b"A"
        s.close()
        connections(h, 1)
        with httpx.Client(trust_env=False) as c:
            c.get(h.url + "/x")  # a new HTTP connection, whatever the answer
        after = next_connection_id()
        # the TCP connection and the HTTP connection each took the next id of the one sequence
        assert after == before + 3
