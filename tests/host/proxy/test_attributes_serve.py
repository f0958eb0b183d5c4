"""Envoy's attribute table (ABI doc §5.4) walked through a real plugin under ``serve``.

The WAT plugin ``property_probe`` reads every path the table below names in each of its
callbacks (c configure, q request headers, s response headers, l log) and logs what the
host answered; the test checks each value against what Envoy gives at that callback,
with a real client, the proxy and the built-in echo upstream on 127.0.0.1.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import yaml

from host.proxy.server import DEMO_CLUSTER
from host.wasm.node import Node
from host.wasm.pairs import decode_pairs
from tests.fixtures import wat_modules
from tests.host.proxy.conftest import config_text, plugin, wasm_plugin

OK, NOT_FOUND, SERIALIZATION_FAILURE = 0, 1, 3

NODE = {
    "id": "sidecar~10.0.0.7~reviews-v1-7d4b.default~default.svc.cluster.local",
    "cluster": "reviews.default",
    "metadata": {
        "WORKLOAD_NAME": "reviews-v1",
        "NAMESPACE": "default",
        "LABELS": {"app": "reviews", "version": "v1"},
    },
}


def i64(b: bytes) -> int:
    assert len(b) == 8, b
    return int(struct.unpack("<q", b)[0])


def u64(b: bytes) -> int:
    assert len(b) == 8, b
    return int(struct.unpack("<Q", b)[0])


Check = bytes | int | Callable[[bytes, dict[str, Any]], bool]
NF: Check = NOT_FOUND
SF: Check = SERIALIZATION_FAILURE


def pos_int(b: bytes, env: dict[str, Any]) -> bool:
    return i64(b) > 0


def zero(b: bytes, env: dict[str, Any]) -> bool:
    return i64(b) == 0


def eq_int(name: str) -> Callable[[bytes, dict[str, Any]], bool]:
    return lambda b, env: i64(b) == env[name]


def eq_str(name: str) -> Callable[[bytes, dict[str, Any]], bool]:
    return lambda b, env: b.decode() == env[name]


def now_ns(b: bytes, env: dict[str, Any]) -> bool:
    return abs(i64(b) - env["now_ns"]) < 60 * 10**9


ALL = "qsl"


def every(check: Check, phases: str = ALL) -> dict[str, Check]:
    return dict.fromkeys(phases, check)


# path (/ for NUL) -> callback letter -> expected: exact bytes, a status (NF, SF) or a check
TABLE: dict[str, dict[str, Check]] = {
    # Wasm
    "plugin_name": every(b"probe"),
    "plugin_root_id": every(b"probe_root"),
    "plugin_vm_id": every(b""),
    "connection_id": every(lambda b, env: u64(b) > 0),
    # request.*
    "request/path": every(b"/probe/a?x=1&y=2"),
    "request/url_path": every(b"/probe/a"),
    "request/query": every(b"x=1&y=2"),
    "request/host": every(eq_str("authority")),
    "request/scheme": every(b"http"),
    "request/method": every(b"POST"),
    "request/headers/x-probe": every(b"a,b"),
    "request/headers": every(lambda b, env: (b"x-probe", b"a,b") in decode_pairs(b)),
    "request/headers_bytes": every(pos_int),
    "request/referer": every(b"https://ref.example/"),
    "request/useragent": every(b"probe-agent/1"),
    "request/time": every(now_ns),
    "request/id": every(lambda b, env: len(b) >= 16),
    "request/protocol": every(b"HTTP/1.1"),
    "request/duration": {"q": NF, "s": NF, "l": pos_int},
    "request/size": every(lambda b, env: i64(b) == 5),  # content-length
    "request/total_size": {
        "q": lambda b, env: i64(b) > 0,
        "s": lambda b, env: i64(b) > 5,
        "l": lambda b, env: i64(b) > 5,
    },
    # response.*
    "response/code": {"q": NF, "s": b"\xc8" + b"\0" * 7, "l": b"\xc8" + b"\0" * 7},
    "response/code_details": {"q": NF, "s": b"via_upstream", "l": b"via_upstream"},
    "response/flags": every(zero),
    "response/grpc_status": every(NF),
    "response/headers/content-type": {"q": NF, "s": b"application/json", "l": b"application/json"},
    "response/headers": {
        "q": NF,
        "s": lambda b, env: (b":status", b"200") in decode_pairs(b),
        "l": lambda b, env: (b":status", b"200") in decode_pairs(b),
    },
    "response/headers_bytes": {"q": NF, "s": pos_int, "l": pos_int},
    "response/size": {"q": zero, "s": zero, "l": eq_int("response_body_size")},
    "response/total_size": {
        "q": zero,
        "s": pos_int,
        "l": lambda b, env: i64(b) > env["response_body_size"],
    },
    "response/backend_latency": {"q": NF, "s": pos_int, "l": pos_int},
    # connection
    "source/address": every(eq_str("client")),
    "source/port": every(eq_int("client_port")),
    "destination/address": every(eq_str("listener")),
    "destination/port": every(eq_int("listener_port")),
    "connection/id": every(lambda b, env: u64(b) > 0),
    "connection/mtls": every(b"\x00"),
    "connection/requested_server_name": every(b""),
    "connection/tls_version": every(NF),
    "connection/subject_peer_certificate": every(NF),
    # upstream: chosen after the request headers went through the filters
    "upstream/address": {"q": NF, "s": eq_str("upstream"), "l": eq_str("upstream")},
    "upstream/port": {"q": NF, "s": eq_int("upstream_port"), "l": eq_int("upstream_port")},
    "upstream/request_attempt_count": {"q": NF, "s": b"\x01" + b"\0" * 7, "l": b"\x01" + b"\0" * 7},
    "upstream/tls_version": every(NF),
    # metadata and state
    "metadata": every(b""),  # empty envoy.config.core.v3.Metadata
    "metadata/filter_metadata": every(lambda b, env: decode_pairs(b) == []),
    "filter_state": every(SF),
    "filter_state/wasm.k": {"q": b"v", "s": b"v", "l": b"v"},
    "k": {"q": b"v", "s": b"v", "l": b"v"},
    "upstream_filter_state": every(SF),
    # xds.*
    "xds/cluster_name": every(DEMO_CLUSTER.encode()),
    "xds/route_name": every(b"default"),
    "xds/virtual_host_name": every(b""),
    "xds/cluster_metadata": every(b""),
    "xds/route_metadata": every(b""),
    "xds/listener_direction": every(b"\x01" + b"\0" * 7),
    "xds/listener_metadata": every(b""),
    "xds/upstream_host_metadata": {"q": NF, "s": b"", "l": b""},
    "xds/filter_chain_name": every(b""),
    "xds/node": every(Node.parse(NODE).message()),
    "xds/node/id": every(NODE["id"].encode()),
    "xds/node/cluster": every(b"reviews.default"),
    "xds/node/metadata/WORKLOAD_NAME": every(b"reviews-v1"),
    "xds/node/metadata/NAMESPACE": every(b"default"),
    "xds/node/metadata/LABELS/app": every(b"reviews"),
    "xds/node/metadata/LABELS": every(
        lambda b, env: sorted(decode_pairs(b)) == [(b"app", b"reviews"), (b"version", b"v1")]
    ),
    "xds/node/metadata/MISSING": every(NF),
    # legacy top-level spellings
    "node/metadata/WORKLOAD_NAME": every(b"reviews-v1"),
    "cluster_name": every(DEMO_CLUSTER.encode()),
    "route_name": every(b"default"),
    "listener_direction": every(b"\x01" + b"\0" * 7),
}

# in the root context (Istio's plugins read the node in on_configure)
CONFIGURE: dict[str, Check] = {
    "xds/node/metadata/WORKLOAD_NAME": b"reviews-v1",
    "xds/node/metadata/LABELS/version": b"v1",
    "plugin_root_id": b"probe_conf",
    "request/path": NF,
    "source/address": NF,
    "response/code": NF,
}


def _probe_config(paths: list[str]) -> dict[str, Any]:
    # the set_property "k" = "v" happens in request headers, before anything reads it
    return {"#": ["q~!k=76", *paths]}


def _parse(lines: list[str]) -> dict[tuple[str, int], tuple[int, bytes]]:
    out: dict[tuple[str, int], tuple[int, bytes]] = {}
    for line in lines:
        phase, idx, rest = line[0], int(line[1:3]), line[4:]
        status, _, hexval = rest.partition(":")
        out[(phase, idx)] = (int(status), bytes.fromhex(hexval))
    return out


def _verify(
    got: dict[tuple[str, int], tuple[int, bytes]],
    paths: list[str],
    table: dict[str, dict[str, Check]],
    env: dict[str, Any],
) -> list[str]:
    problems = []
    for idx, path in enumerate(paths, start=1):  # token 0 is the set_property
        for phase, check in table[path].items():
            key = (phase, idx)
            if key not in got:
                problems.append(f"{phase} {path}: no answer logged")
                continue
            status, value = got[key]
            if isinstance(check, int):
                if status != check:
                    problems.append(f"{phase} {path}: status {status}, want {check} ({value!r})")
            elif status != OK:
                problems.append(f"{phase} {path}: status {status}, want OK")
            elif isinstance(check, bytes):
                if value != check:
                    problems.append(f"{phase} {path}: {value!r}, want {check!r}")
            else:
                try:
                    good = check(value, env)
                except Exception as e:
                    good = False
                    value = f"{value!r} ({e})".encode()
                if not good:
                    problems.append(f"{phase} {path}: {value!r} fails its check")
    return problems


def test_serve_gives_every_attribute_of_the_table_at_each_callback(start_proxy, wasm_file):
    paths = list(TABLE)
    conf_paths = list(CONFIGURE)
    module = wasm_file(wat_modules.make_property_probe_module(), "property_probe")
    plugin = wasm_plugin(
        "probe", f"file://{module}", root_id="probe_root", config=_probe_config(paths)
    )
    conf_plugin = wasm_plugin(
        "probe-configure",
        f"file://{module}",
        root_id="probe_conf",
        config={"#": [f"c~{p}" for p in conf_paths]},
    )
    proxy_doc = {
        "apiVersion": "wasmdesk.dev/v1alpha1",
        "kind": "Proxy",
        "spec": {"listen": "127.0.0.1:0", "admin": "127.0.0.1:0", "node": NODE},
    }
    h = start_proxy(yaml.safe_dump_all([proxy_doc, plugin, conf_plugin], sort_keys=False))
    port = h.port
    # a raw client socket, so the test knows its port (source.address)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        client_port = sock.getsockname()[1]
        sock.sendall(
            b"POST /probe/a?x=1&y=2 HTTP/1.1\r\n"
            + f"host: 127.0.0.1:{port}\r\n".encode()
            + b"x-probe: a\r\nx-probe: b\r\nreferer: https://ref.example/\r\n"
            b"user-agent: probe-agent/1\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"
            b"hello"
        )
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    h.wait_for(
        lambda: any(rec.message.startswith("l") for _, rec in h.server.logs),
        what="proxy_on_log ran",
    )
    lines = [rec.message for _, rec in h.server.logs if rec.root_id == "probe_root"]
    upstream = h.server.default_cluster
    assert upstream is not None
    env = {
        "now_ns": time.time_ns(),
        "authority": f"127.0.0.1:{port}",
        "client": f"127.0.0.1:{client_port}",
        "client_port": client_port,
        "listener": f"127.0.0.1:{port}",
        "listener_port": port,
        "upstream": f"{upstream.host}:{upstream.port}",
        "upstream_port": upstream.port,
        "response_body_size": len(body),
    }
    problems = _verify(_parse(lines), paths, TABLE, env)
    conf_lines = [rec.message for _, rec in h.server.logs if rec.root_id == "probe_conf"]
    got = _parse(conf_lines)
    for idx, path in enumerate(conf_paths):
        want = CONFIGURE[path]
        status, value = got.get(("c", idx), (-1, b""))
        if isinstance(want, int):
            if status != want:
                problems.append(f"c {path}: status {status}, want {want}")
        elif (status, value) != (OK, want):
            problems.append(f"c {path}: {(status, value)!r}, want {want!r}")
    assert problems == [], "\n".join(problems)


def test_a_refused_upstream_connection_shows_in_response_flags_and_code_details(
    start_proxy, wasm_file
):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    module = wasm_file(wat_modules.make_property_probe_module(), "property_probe")
    tokens = [
        "l~response/flags",
        "l~response/code_details",
        "l~response/code",
        "l~xds/cluster_name",
    ]
    plugin = wasm_plugin("probe", f"file://{module}", root_id="probe", config={"#": tokens})
    proxy_doc = {
        "apiVersion": "wasmdesk.dev/v1alpha1",
        "kind": "Proxy",
        "spec": {
            "listen": "127.0.0.1:0",
            "admin": "127.0.0.1:0",
            "clusters": [{"name": "dead", "url": f"http://127.0.0.1:{dead_port}"}],
            "defaultCluster": "dead",
        },
    }
    h = start_proxy(yaml.safe_dump_all([proxy_doc, plugin], sort_keys=False))
    with h.client() as c:
        assert c.get("/").status_code == 503
    h.wait_for(lambda: any(r.message.startswith("l03") for _, r in h.server.logs), what="log")
    got = _parse([r.message for _, r in h.server.logs if r.root_id == "probe"])
    assert got[("l", 0)] == (OK, struct.pack("<q", 0x20))  # UF: upstream connection failure
    assert got[("l", 1)] == (
        OK,
        b"upstream_reset_before_response_started{connection_failure}",
    )
    assert got[("l", 2)] == (OK, struct.pack("<q", 503))
    assert got[("l", 3)] == (OK, b"dead")


def test_a_plugins_local_reply_gives_its_details_to_the_response_path(start_proxy, wasm_file):
    # probe (AUTHN, priority 10) runs before auth_token, which denies the request with
    # details "auth_token_denied"; the reply travels back through the probe.
    module = wasm_file(wat_modules.make_property_probe_module(), "property_probe")
    tokens = ["s~response/code_details", "s~response/code", "l~response/flags", "l~request/size"]
    probe = wasm_plugin(
        "probe", f"file://{module}", root_id="probe", config={"#": tokens}, phase="AUTHN"
    )
    probe["spec"]["priority"] = 10
    auth = wasm_plugin(
        "auth", plugin("auth_token"), root_id="auth_token", config={"token": "t"}, phase="AUTHN"
    )
    h = start_proxy(config_text(probe, auth))
    with h.client() as c:
        assert c.get("/private").status_code == 403
    h.wait_for(lambda: any(r.message.startswith("l02") for _, r in h.server.logs), what="log")
    got = _parse([r.message for _, r in h.server.logs if r.root_id == "probe"])
    assert got[("s", 0)] == (OK, b"auth_token_denied")
    assert got[("s", 1)] == (OK, struct.pack("<q", 403))
    assert got[("l", 2)] == (OK, struct.pack("<q", 0))  # a filter's local reply sets no flag
    assert got[("l", 3)] == (OK, struct.pack("<q", 0))
