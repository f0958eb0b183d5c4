"""``wasmdesk try --tcp``: one connection through a NETWORK plugin, offline (the C
``tcp_filter`` built with zig; a WAT module for the trap)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from host.cli import main
from tests.host.proxy.tcp_helpers import NET_HOLD_WAT, NET_TRAP_WAT, TCP_FILTER, wat_file


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_try_tcp_json_shows_each_step_and_what_each_direction_became(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    chunk = tmp_path / "chunk.txt"
    chunk.write_bytes(b"from a file")
    rc, out, _ = run(
        capsys,
        "try",
        "--tcp",
        TCP_FILTER,
        "--config",
        '{"upper": "downstream", "up_append": "!"}',
        "--downstream-data",
        "hello ",
        "--upstream-data",
        "pong",
        "--downstream-data",
        f"@{chunk}",
        "--json",
    )
    assert rc == 0
    r = json.loads(out)
    assert r["connected"] is True and r["failure"] is None
    assert r["to_upstream"] == "HELLO FROM A FILE"
    assert r["to_downstream"] == "pong!"
    steps = [(s["callback"], s["direction"], s["input"], s["result"]) for s in r["steps"]]
    assert steps[:4] == [
        ("proxy_on_new_connection", "downstream", "", "continue"),
        ("proxy_on_downstream_data", "downstream", "hello ", "continue"),
        ("proxy_on_upstream_data", "upstream", "pong", "continue"),
        ("proxy_on_downstream_data", "downstream", "from a file", "continue"),
    ]
    # then both half-closes
    assert [s["end_of_stream"] for s in r["steps"][4:]] == [True, True]
    assert r["close_peer"] == 2
    messages = [line["message"] for line in r["logs"]]
    assert "upstream close 2 peer=0" in messages
    assert "downstream close 2 peer=2 down=17 up=4" in messages
    assert r["metrics"]["tcp_filter.downstream_bytes"] == 17


def test_try_tcp_text_output_pause_from_a_tick_and_close(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, out, _ = run(
        capsys,
        "try",
        "--tcp",
        TCP_FILTER,
        "--config",
        '{"hold": "data", "close_marker": "QUIT"}',
        "--downstream-data",
        "one",
        "--downstream-data",
        "QUIT",
        "--downstream-data",
        "never sent",
    )
    assert rc == 0
    lines = out.splitlines()
    assert any("pause -> continue" in x and "in='one'" in x and "out='one'" in x for x in lines)
    assert any(x.split()[:2] == ["proxy_on_downstream_data", "close"] for x in lines)
    assert "closed    by the plugin (proxy_close_stream)" in lines
    assert "to upstream    'one'" in lines
    assert "never sent" not in out
    assert "ticks     1 while paused" in lines
    assert "  [info] downstream close 2 peer=1 down=7 up=0" in lines


def test_try_tcp_new_connection_paused_then_continued_by_a_tick(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, out, _ = run(
        capsys,
        "try",
        "--tcp",
        TCP_FILTER,
        "--raw-config",
        '{"hold": "connection"}',
        "--downstream-data",
        "x",
        "--json",
    )
    assert rc == 0
    r = json.loads(out)
    # the tick continues the connection: the data then flows
    assert r["connected"] is True and r["to_upstream"] == "x"
    assert r["steps"][0]["paused_first"] is True and r["steps"][0]["result"] == "continue"


def test_try_tcp_reports_data_the_plugin_never_continued(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    hold = wat_file(tmp_path, "hold", NET_HOLD_WAT)
    rc, out, _ = run(
        capsys, "try", "--tcp", hold, "--downstream-data", "a", "--downstream-data", "b", "--json"
    )
    assert rc == 0
    r = json.loads(out)
    assert r["to_upstream"] == "" and r["held"] == {"downstream": "ab"}
    assert [s["result"] for s in r["steps"][1:3]] == ["pause", "pause"]
    assert any("never continued" in n for n in r["notes"])


def test_try_tcp_trap_exits_1_with_the_failure(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    trap = wat_file(tmp_path, "trap", NET_TRAP_WAT)
    rc, out, _ = run(capsys, "try", "--tcp", trap, "--downstream-data", "x", "--json")
    assert rc == 1
    r = json.loads(out)
    assert r["failure"]["kind"] == "unreachable"
    assert r["failure"]["callback"] == "proxy_on_downstream_data"
    assert r["to_upstream"] == "" and r["steps"][-1]["result"] == "failed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tcp", "--body", "x"], "--body describes an HTTP request"),
        (["--tcp", "-H", "a: b"], "-H/--header describes an HTTP request"),
        (["--downstream-data", "x"], "need --tcp"),
        (["--tcp", "--downstream-data", "@/no/such/file"], "no such file"),
        (["--tcp", "--mocks", "/no/such/mocks.yaml"], "--mocks"),
    ],
)
def test_try_tcp_usage_errors(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    rc, _, err = run(capsys, "try", TCP_FILTER, *args)
    assert rc == 2 and message in err


def test_try_tcp_warns_about_a_module_with_no_network_callbacks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.host.proxy.conftest import plugin

    rc, out, _ = run(capsys, "try", "--tcp", plugin("add_header"), "--downstream-data", "x")
    assert rc == 0
    assert "WARNING   the module exports none of the network callbacks" in out
    assert "to upstream    'x'" in out  # nothing changed it
