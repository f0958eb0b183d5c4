"""Envoy's foreign functions set_envoy_filter_state, declare_property and the CEL
expressions (expr_create / expr_evaluate / expr_delete), called by a real plugin (the
WAT ``property_probe``) through ``wasmdesk try``'s runner on real wasmtime."""

from __future__ import annotations

import struct

from host.runner import TryRequest, run_try
from host.wasm.node import Node
from tests.fixtures import wat_modules

OK, NOT_FOUND, BAD_ARGUMENT, INTERNAL_FAILURE = 0, 1, 2, 10


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _str(field: int, s: str | bytes) -> bytes:
    data = s.encode() if isinstance(s, str) else s
    return bytes([field << 3 | 2]) + _varint(len(data)) + data


def _int(field: int, v: int) -> bytes:
    return bytes([field << 3]) + _varint(v)


def filter_state_args(path: str, value: str) -> str:
    """SetEnvoyFilterStateArguments {path = 1, value = 2} as hex."""
    return (_str(1, path) + _str(2, value)).hex()


def declare_args(name: str, readonly: bool, wasm_type: int = 0) -> str:
    """DeclarePropertyArguments {name = 1, readonly = 2, type = 3} as hex."""
    return (_str(1, name) + _int(2, int(readonly)) + _int(3, wasm_type)).hex()


def probe(tokens: list[str], **kw: object) -> dict[str, list[tuple[int, bytes]]]:
    """Run the probe with ``tokens``; token index -> [(status, value)] per callback letter
    keyed as "<letter><index>"."""
    req = TryRequest(
        root_id="probe",
        configuration=" ".join(tokens).encode(),
        headers=[("x-a", "1")],
        **kw,  # type: ignore[arg-type]
    )
    result = run_try(wat_modules.make_property_probe_module(), req)
    assert result.failure is None, result.failure
    out: dict[str, list[tuple[int, bytes]]] = {}
    for rec in result.logs:
        msg = str(rec["message"])
        if len(msg) < 7 or msg[3] != ":" or msg[6] != ":":
            continue
        out.setdefault(msg[:3], []).append((int(msg[4:6]), bytes.fromhex(msg[7:])))
    return out


# -- set_envoy_filter_state ---------------------------------------------------------------


def test_set_envoy_filter_state_stores_a_known_key_on_the_stream():
    got = probe(
        [
            "q~@set_envoy_filter_state=" + filter_state_args("envoy.tcp_proxy.cluster", "b-2"),
            "s~filter_state/envoy.tcp_proxy.cluster",
        ]
    )
    assert got["q00"] == [(OK, b"")]
    assert got["s01"] == [(OK, b"b-2")]


def test_set_envoy_filter_state_refuses_unknown_keys_bad_values_and_garbage():
    got = probe(
        [
            "q~@set_envoy_filter_state=" + filter_state_args("no.such.key", "x"),
            "q~@set_envoy_filter_state="
            + filter_state_args("envoy.network.transport_socket.original_dst_address", "nope"),
            "q~@set_envoy_filter_state="
            + filter_state_args(
                "envoy.network.transport_socket.original_dst_address", "10.1.2.3:80"
            ),
            "q~@set_envoy_filter_state=0aff",  # a length running past the end
            "c~@set_envoy_filter_state=" + filter_state_args("envoy.string", "x"),
        ]
    )
    assert got["q00"] == [(NOT_FOUND, b"")]
    assert got["q01"] == [(BAD_ARGUMENT, b"")]
    assert got["q02"] == [(OK, b"")]
    assert got["q03"] == [(BAD_ARGUMENT, b"")]
    assert got["c04"] == [(NOT_FOUND, b"")]  # no stream in the root context


# -- declare_property -------------------------------------------------------------------------


def test_a_declared_read_only_property_keeps_its_first_value():
    got = probe(
        [
            "c~@declare_property=" + declare_args("ro", readonly=True, wasm_type=1),
            "c~@declare_property=" + declare_args("ro", readonly=False),
            "q~!ro=6131",
            "q~!ro=6132",
            "s~ro",
            "q~!rw=6131",
            "q~!rw=6132",
            "s~rw",
        ]
    )
    assert got["c00"] == [(OK, b"")]
    assert got["c01"] == [(BAD_ARGUMENT, b"")]  # declared once; Envoy keeps the first
    assert got["q02"] == [(OK, b"")]
    assert got["q03"] == [(BAD_ARGUMENT, b"")]
    assert got["s04"] == [(OK, b"a1")]
    assert got["q06"] == [(OK, b"")]  # undeclared: writable
    assert got["s07"] == [(OK, b"a2")]


def test_declare_property_with_a_malformed_message_is_a_bad_argument():
    assert probe(["c~@declare_property=08"])["c00"] == [(BAD_ARGUMENT, b"")]


# -- CEL ----------------------------------------------------------------------------------------


def test_cel_expressions_evaluate_over_the_stream_attributes():
    exprs = [
        'request.method + ":" + request.headers["x-a"] + ":" + xds.node.metadata.NAMESPACE',
        "size(request.path) > 3 && connection.mtls == false",
        "response.code",
        "1 / 0",
        "plugin_root_id",
    ]
    tokens = [f"c~@expr_create={e.encode().hex()}" for e in exprs]
    tokens += [
        "c~@expr_create=" + b"1 +".hex(),  # 5: a parse error
        "q~@expr_evaluate=00000000",  # 6
        "q~@expr_evaluate=01000000",  # 7
        "s~@expr_evaluate=02000000",  # 8
        "q~@expr_evaluate=03000000",  # 9: division by zero
        "q~@expr_evaluate=04000000",  # 10
        "q~@expr_evaluate=ffffff7f",  # 11: unknown token
        "q~@expr_evaluate=000000",  # 12: not 4 bytes
        "l~@expr_delete=00000000",  # 13
        "l~@expr_evaluate=00000000",  # 14: deleted
    ]
    node = Node.parse({"id": "n", "metadata": {"NAMESPACE": "prod"}})
    got = probe(tokens, path="/long/path", node=node)
    assert [got[f"c{i:02d}"] for i in range(5)] == [[(OK, struct.pack("<I", i))] for i in range(5)]
    assert got["c05"] == [(BAD_ARGUMENT, b"")]
    assert got["q06"] == [(OK, b"GET:1:prod")]
    assert got["q07"] == [(OK, b"\x01")]
    assert got["s08"] == [(OK, struct.pack("<q", 200))]
    assert got["q09"] == [(INTERNAL_FAILURE, b"")]
    assert got["q10"] == [(OK, b"probe")]
    assert got["q11"] == [(NOT_FOUND, b"")]
    assert got["q12"] == [(BAD_ARGUMENT, b"")]
    assert got["l13"] == [(OK, b"")]
    assert got["l14"] == [(NOT_FOUND, b"")]


def test_cel_token_counts_from_zero_in_each_plugin():
    # Each plugin starts at token 0 (Envoy's per-root ExpressionContext).
    for _ in range(2):
        got = probe(["c~@expr_create=" + b"1 + 1".hex(), "q~@expr_evaluate=$"])
        assert got["c00"] == [(OK, b"\0\0\0\0")]
        assert got["q01"] == [(OK, struct.pack("<q", 2))]
