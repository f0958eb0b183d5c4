"""HTTP/2 clusters in the Proxy document: ``grpc://`` / ``grpcs://`` URLs and the
``protocol`` field (``http1`` | ``h2``) -- parsed, validated with file:line errors,
written back by ``dump_config``, usable by routes and as the default cluster, and
turned into the data path's ``Cluster`` by the server."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from host.proxy.config import ConfigError, dump_config, parse_config
from host.proxy.server import _grpc_url

from .conftest import ROOT


def _proxy(clusters: str, extra: str = "") -> str:
    return (
        "apiVersion: wasmdesk.dev/v1alpha1\nkind: Proxy\nspec:\n"
        "  listen: 127.0.0.1:0\n  admin: 127.0.0.1:0\n  clusters:\n" + clusters + extra
    )


def test_protocol_h2_on_an_http_cluster_parses_and_round_trips() -> None:
    cfg = parse_config(
        _proxy(
            "  - {name: web, url: 'http://127.0.0.1:8080', protocol: h2}\n"
            "  - {name: old, url: 'http://127.0.0.1:8081', protocol: http1}\n"
            "  - {name: g, url: 'grpc://127.0.0.1:50051'}\n",
            "  defaultCluster: web\n",
        ),
        "<test>",
        str(ROOT),
    )
    by = {c.name: c for c in cfg.clusters}
    assert by["web"].protocol == "h2" and by["web"].forwards
    assert by["old"].protocol == "http1"
    assert by["g"].protocol is None and by["g"].forwards  # h2 from its scheme
    assert parse_config(dump_config(cfg), "<again>", str(ROOT)).clusters == cfg.clusters
    # a protocol set in code is written into the document
    changed = dataclasses.replace(
        cfg, clusters=(dataclasses.replace(by["old"], protocol="h2"), by["web"], by["g"])
    )
    spec = next(iter(yaml.safe_load_all(dump_config(changed))))["spec"]
    assert {c["name"]: c.get("protocol") for c in spec["clusters"]} == {
        "old": "h2",
        "web": "h2",
        "g": None,
    }


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "{name: a, url: 'http://127.0.0.1:1', protocol: http2}",
            "spec.clusters[0].protocol: expected http1 (HTTP/1.1, the default) or h2 (HTTP/2), "
            "got 'http2'",
        ),
        (
            "{name: a, url: 'http://127.0.0.1:1', protocol: 2}",
            "spec.clusters[0].protocol: expected http1",
        ),
        (
            "{name: a, url: 'grpc://127.0.0.1:1', protocol: http1}",
            "spec.clusters[0].protocol: grpc:// clusters speak HTTP/2",
        ),
        ("{name: a, url: 'http://127.0.0.1:1', proto: h2}", "expected one of name, url, "),
    ],
)
def test_bad_protocol_is_a_config_error_at_its_line(entry: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(_proxy(f"  - {entry}\n"), "c.yaml", str(ROOT))
    assert message in str(e.value)
    assert "c.yaml:7:" in str(e.value)


def test_routes_may_send_to_grpc_and_https_clusters_but_not_to_tcp_ones() -> None:
    routes = (
        "  routes:\n"
        "  - {name: rpc, match: {prefix: /test.Echo/}, cluster: g}\n"
        "  - {name: web, match: {prefix: /}, cluster: h}\n"
    )
    for first in ("grpcs://127.0.0.1:50051", "https://127.0.0.1:50051"):
        cfg = parse_config(
            _proxy(
                f"  - {{name: g, url: '{first}'}}\n  - {{name: h, url: 'http://127.0.0.1:1'}}\n",
                routes,
            ),
            "<test>",
            str(ROOT),
        )
        assert [r.cluster for r in cfg.routes] == ["g", "h"]
    with pytest.raises(ConfigError) as e:
        parse_config(
            _proxy(
                "  - {name: g, url: 'tcp://127.0.0.1:50051'}\n"
                "  - {name: h, url: 'http://127.0.0.1:1'}\n",
                routes,
            ),
            "<test>",
            str(ROOT),
        )
    assert "only a spec.tcp listener forwards to it, not an HTTP route" in str(e.value)


def test_an_h2_http_cluster_also_serves_grpc_callouts() -> None:
    cfg = parse_config(
        _proxy(
            "  - {name: a, url: 'http://127.0.0.1:9000', protocol: h2}\n"
            "  - {name: b, url: 'http://127.0.0.1:9001'}\n"
            "  - {name: c, url: 'grpcs://127.0.0.1:9002'}\n"
        ),
        "<test>",
        str(ROOT),
    )
    assert [_grpc_url(c) for c in cfg.clusters] == [
        "grpc://127.0.0.1:9000",
        "http://127.0.0.1:9001",  # HTTP/1.1: not a gRPC target (the callout says so)
        "grpcs://127.0.0.1:9002",
    ]
