"""gRPC clusters in configuration (``grpc://``, ``grpcs://``, ``caFile``), ``try --cluster``,
the GrpcService upstream parser, channel lifetime and the lazy grpcio import."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from host.cli import UsageError, _cluster
from host.proxy.config import ConfigError, parse_config
from host.proxy.demo_cert import ensure_demo_cert
from host.proxy.grpc_callouts import GrpcCalloutDispatcher, GrpcCluster
from host.wasm.grpc_service import parse_grpc_upstream
from host.wasm.proto import field_bytes, field_message, field_varint

from .conftest import ROOT, config_text


def _proxy(clusters: str) -> str:
    return (
        "apiVersion: wasmdesk.dev/v1alpha1\nkind: Proxy\nspec:\n"
        "  listen: 127.0.0.1:0\n  admin: 127.0.0.1:0\n  clusters:\n" + clusters
    )


def test_grpc_and_grpcs_cluster_urls_parse_with_an_optional_ca_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(_a_ca_pem(tmp_path))
    cfg = parse_config(
        _proxy(
            "  - {name: authz, url: 'grpc://127.0.0.1:50051'}\n"
            f"  - {{name: tls, url: 'grpcs://127.0.0.1:50052', caFile: '{ca}'}}\n"
        ),
        "<test>",
        str(ROOT),
    )
    by_name = {c.name: c for c in cfg.clusters}
    assert by_name["authz"].url == "grpc://127.0.0.1:50051" and by_name["authz"].ca_file is None
    assert by_name["tls"].ca_file == str(ca)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{name: a, url: 'grpc://127.0.0.1:1', caFile: '/etc/hosts'}", "only an https:// or grpcs"),
        ("{name: a, url: 'grpcs://127.0.0.1:1', caFile: '/no/such.pem'}", "no such file"),
        ("{name: a, url: 'grpc://127.0.0.1:1/pkg'}", "drop the path"),
        ("{name: a, url: 'grpc+h2://127.0.0.1:1'}", "grpc://, grpcs:// or tcp://"),
    ],
)
def test_bad_grpc_cluster_entries_are_config_errors(entry: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(_proxy(f"  - {entry}\n"), "<test>", str(ROOT))
    assert message in str(e.value)


def test_a_grpc_cluster_can_be_the_default_cluster() -> None:
    # the data path forwards over HTTP/2 to grpc:// clusters (host/proxy/upstream_h2.py)
    text = config_text(clusters={"g": "grpc://127.0.0.1:50051"}, default_cluster="g")
    cfg = parse_config(text, "<test>", str(ROOT))
    assert cfg.default_cluster == "g"
    assert cfg.clusters[0].forwards


def test_try_cluster_flag_takes_grpc_urls() -> None:
    assert _cluster("authz=grpc://127.0.0.1:50051") == ("authz", "grpc://127.0.0.1:50051")
    assert _cluster("t=grpcs://example.test:443") == ("t", "grpcs://example.test:443")
    with pytest.raises(UsageError, match="grpc://"):
        _cluster("x=tcp://127.0.0.1:1")


# -- the upstream argument -----------------------------------------------------------------


def test_upstream_is_a_plain_name_or_a_grpc_service() -> None:
    assert parse_grpc_upstream(b"authz").cluster == "authz"
    assert not parse_grpc_upstream(b"authz").from_proto
    md = field_bytes(1, "X-Tenant") + field_bytes(2, "t1")
    raw_md = field_bytes(1, "x-raw") + field_bytes(3, b"\x01\x02")
    service = (
        field_message(1, field_bytes(1, "authz") + field_bytes(2, "authz.internal"))
        + field_message(3, field_varint(1, 2) + field_varint(2, 500_000_000))
        + field_message(5, md)
        + field_message(5, raw_md)
    )
    up = parse_grpc_upstream(service)
    assert (up.cluster, up.authority, up.timeout_ms, up.from_proto) == (
        "authz",
        "authz.internal",
        2500,
        True,
    )
    assert up.metadata == [(b"x-tenant", b"t1"), (b"x-raw", b"\x01\x02")]


def test_upstream_that_parses_as_protobuf_but_names_no_cluster_is_a_plain_name() -> None:
    # b"\x12\x01a": field 2 (google_grpc), length 1 -- valid protobuf, no envoy_grpc
    assert parse_grpc_upstream(b"\x12\x01a").cluster == "\x12\x01a"
    # "b2": 'b' is field 12, wire type 2 with length '2' (50) past the end -> not protobuf
    assert parse_grpc_upstream(b"b2").cluster == "b2"
    # a GrpcService whose HeaderValue has no key is malformed: taken as a name, not half-used
    bad = field_message(1, field_bytes(1, "authz")) + field_message(5, field_bytes(2, "v"))
    assert not parse_grpc_upstream(bad).from_proto


# -- channels --------------------------------------------------------------------------------


def test_channels_are_cached_and_closed_when_the_cluster_changes_or_goes() -> None:
    loop = asyncio.new_event_loop()
    try:
        disp = GrpcCalloutDispatcher(loop, {"a": GrpcCluster("grpc://127.0.0.1:1")})
        from host.wasm.context import GrpcCall

        call = GrpcCall(1, "a", "s", "m", [], b"", 0, False, 1)

        async def channel() -> object:
            return disp._channel(call)

        first = loop.run_until_complete(channel())
        assert loop.run_until_complete(channel()) is first  # cached
        disp.set_clusters({"a": GrpcCluster("grpc://127.0.0.1:2")})  # changed address
        loop.run_until_complete(asyncio.sleep(0.05))
        second = loop.run_until_complete(channel())
        assert second is not first
        assert first._channel.check_connectivity_state(False) == 4  # SHUTDOWN: closed
        disp.set_clusters({})  # removed
        loop.run_until_complete(asyncio.sleep(0.05))
        assert second._channel.check_connectivity_state(False) == 4
        assert not disp.has_cluster("a")
        loop.run_until_complete(disp.aclose())
    finally:
        loop.close()


def test_serve_and_try_do_not_import_grpcio_without_a_grpc_cluster() -> None:
    code = (
        "import sys, asyncio\n"
        "import host.cli, host.runner, host.proxy.server\n"
        "from host.proxy.grpc_callouts import GrpcCalloutDispatcher, GrpcCluster\n"
        "d = GrpcCalloutDispatcher(asyncio.new_event_loop(), {'h': GrpcCluster('http://a:1')})\n"
        "print('grpc' in sys.modules)\n"
        "d.set_clusters({'g': GrpcCluster('grpc://127.0.0.1:1')})\n"
        "print('grpc' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "True"]


def test_a_relative_ca_file_is_found_next_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(_a_ca_pem(tmp_path))
    text = _proxy("  - {name: t, url: 'grpcs://127.0.0.1:1', caFile: ca.pem}\n")
    cfg = parse_config(text, str(tmp_path / "proxy.yaml"))
    assert cfg.clusters[0].ca_file == str(tmp_path / "ca.pem")


def test_a_ca_file_that_is_not_pem_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    for scheme in ("grpcs", "https"):
        text = _proxy(f"  - {{name: t, url: '{scheme}://127.0.0.1:1', caFile: ca.pem}}\n")
        with pytest.raises(ConfigError) as e:
            parse_config(text, str(tmp_path / "proxy.yaml"))
        assert "spec.clusters[0].caFile: " in str(e.value)
        assert "is not a PEM certificate bundle" in str(e.value)


def _a_ca_pem(tmp_path: Path) -> bytes:
    return Path(ensure_demo_cert(tmp_path / "demo").ca).read_bytes()
