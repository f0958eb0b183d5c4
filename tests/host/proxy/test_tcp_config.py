"""``spec.tcp`` and ``tcp://`` clusters in the Proxy document: parsed, validated (a TCP
listener names a tcp:// cluster, HTTP may not use one, ports and names unique), exported
back unchanged and after an edit."""

from __future__ import annotations

import dataclasses

import pytest

from host.proxy.config import ConfigError, TcpListenerConfig, dump_config, parse_config

HEAD = """\
apiVersion: wasmdesk.dev/v1alpha1
kind: Proxy
spec:
  listen: 127.0.0.1:10000
  admin: 127.0.0.1:9901
  clusters:
  - {name: echo, url: "tcp://127.0.0.1:7000"}
  - {name: web, url: "http://127.0.0.1:8000"}
"""


def errors(extra: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(HEAD + extra, "cfg.yaml")
    return [str(e) for e in info.value.errors]


def test_tcp_listeners_parse_with_default_names() -> None:
    cfg = parse_config(
        HEAD
        + "  tcp:\n"
        + "  - {listen: '127.0.0.1:9000', cluster: echo}\n"
        + "  - {name: db, listen: '127.0.0.1:9001', cluster: echo}\n"
    )
    assert cfg.tcp == (
        TcpListenerConfig("127.0.0.1_9000", "127.0.0.1", 9000, "echo"),
        TcpListenerConfig("db", "127.0.0.1", 9001, "echo"),
    )
    echo = cfg.cluster("echo")
    assert echo is not None and echo.url == "tcp://127.0.0.1:7000"


def test_export_round_trips_and_carries_an_edit() -> None:
    text = HEAD + "  tcp:\n  - {name: db, listen: '127.0.0.1:9001', cluster: echo}\n"
    cfg = parse_config(text)
    assert parse_config(dump_config(cfg)).tcp == cfg.tcp
    edited = dataclasses.replace(
        cfg, tcp=(*cfg.tcp, TcpListenerConfig("127.0.0.1_9002", "127.0.0.1", 9002, "echo"))
    )
    out = dump_config(edited)
    assert parse_config(out).tcp == edited.tcp
    assert "name: 127.0.0.1_9002" not in out  # a default name is not written
    dropped = dump_config(dataclasses.replace(cfg, tcp=()))
    assert "  tcp:" not in dropped and parse_config(dropped).tcp == ()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "  tcp:\n  - {listen: '127.0.0.1:9000', cluster: web}\n",
            "cfg.yaml:10: spec.tcp[0].cluster: a TCP listener forwards to a tcp:// cluster; "
            "'web' is http://127.0.0.1:8000",
        ),
        (
            "  tcp:\n  - {listen: '127.0.0.1:9000', cluster: nope}\n",
            "spec.tcp[0].cluster: 'nope' is not a cluster in spec.clusters (defined: echo, web)",
        ),
        ("  tcp:\n  - {listen: '127.0.0.1:10000', cluster: echo}\n", "taken by spec.listen"),
        ("  tcp:\n  - {listen: '127.0.0.1:9901', cluster: echo}\n", "taken by spec.admin"),
        ("  tcp:\n  - {listen: '0.0.0.0:10000', cluster: echo}\n", "taken by spec.listen"),
        (
            "  tcp:\n  - {name: a, listen: '127.0.0.1:9000', cluster: echo}\n"
            "  - {name: b, listen: '127.0.0.1:9000', cluster: echo}\n",
            "spec.tcp[1].listen: port 9000 is already taken by spec.tcp[0]",
        ),
        (
            "  tcp:\n  - {name: a, listen: '127.0.0.1:0', cluster: echo}\n"
            "  - {name: a, listen: '127.0.0.1:0', cluster: echo}\n",
            "duplicate TCP listener name 'a'",
        ),
        ("  tcp:\n  - {listen: '127.0.0.1', cluster: echo}\n", "expected HOST:PORT"),
        ("  tcp:\n  - {listen: '127.0.0.1:9000'}\n", "spec.tcp[0].cluster: required"),
        ("  tcp:\n  - {listen: '127.0.0.1:9000', cluster: echo, tls: true}\n", "unknown field"),
        (
            "  routes:\n  - {match: {prefix: /}, cluster: echo}\n",
            "tcp://127.0.0.1:7000 is a tcp:// cluster: only a spec.tcp listener forwards to it",
        ),
        ("  defaultCluster: echo\n", "'echo' is a tcp:// cluster"),
    ],
)
def test_tcp_validation_errors(extra: str, expected: str) -> None:
    errs = errors(extra)
    assert any(expected in e for e in errs), errs


def test_a_tcp_cluster_needs_a_port_and_no_path() -> None:
    for url, expected in (
        ("tcp://127.0.0.1", "a tcp:// cluster needs a port"),
        ("tcp://127.0.0.1:7000/x", "drop the path"),
    ):
        with pytest.raises(ConfigError) as info:
            parse_config(HEAD.replace("tcp://127.0.0.1:7000", url))
        assert expected in str(info.value), info.value


def test_two_listeners_on_port_0_are_fine_when_named() -> None:
    cfg = parse_config(
        HEAD
        + "  tcp:\n"
        + "  - {name: a, listen: '127.0.0.1:0', cluster: echo}\n"
        + "  - {name: b, listen: '127.0.0.1:0', cluster: echo}\n"
    )
    assert [t.name for t in cfg.tcp] == ["a", "b"]
