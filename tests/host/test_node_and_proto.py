"""The proxy's node (the Proxy document's ``spec.node``, ``try --node``) and the tiny
protobuf reader/writer behind it and behind the foreign-function arguments."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import yaml

from host.cli import main
from host.proxy.config import ConfigError, dump_config, parse_config
from host.wasm.node import DEFAULT_NODE, Node, NodeError
from host.wasm.proto import ProtoError, read_fields, read_message, struct_message
from tests.fixtures import wat_modules

# -- the wire format -------------------------------------------------------------------------


def test_struct_is_serialized_as_protobuf_does():
    # google.protobuf.Struct {fields: {"a": Value{string_value: "x"}}}, written by hand:
    # Struct.fields (1) = entry {key (1) = "a", value (2) = Value {string_value (3) = "x"}}
    entry = b"\x0a\x01a" + b"\x12\x03" + b"\x1a\x01x"
    assert struct_message({"a": "x"}) == b"\x0a" + bytes([len(entry)]) + entry
    # a number is a double (number_value = 2, fixed64), a bool a varint (bool_value = 4)
    value = b"\x11" + struct.pack("<d", 2.0)
    entry = b"\x0a\x01n" + b"\x12" + bytes([len(value)]) + value
    assert struct_message({"n": 2}) == b"\x0a" + bytes([len(entry)]) + entry
    assert struct_message({"b": True}).endswith(b"\x12\x02\x20\x01")


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x0a\x05ab", "runs past the end"),
        (b"\x08\xff\xff", "truncated varint"),
        (b"\x08" + b"\xff" * 11, "longer than 10 bytes"),
        (b"\x0b", "unsupported wire type"),
        (b"\x00\x01", "field number 0"),
    ],
)
def test_malformed_messages_are_errors(data, why):
    with pytest.raises(ProtoError, match=why):
        list(read_fields(data))


def test_read_message_keeps_the_last_value_and_checks_wire_types():
    assert read_message(b"\x0a\x01a\x0a\x01b\x10\x01\x18\x05", {1: "bytes", 2: "varint"}) == {
        1: b"b",
        2: 1,
    }
    with pytest.raises(ProtoError, match="wire type"):
        read_message(b"\x08\x01", {1: "bytes"})


# -- Node -------------------------------------------------------------------------------------


def test_node_message_has_id_cluster_metadata_and_user_agent():
    node = Node.parse({"id": "n1", "cluster": "c1", "metadata": {"NAMESPACE": "default"}})
    fields = list(read_fields(node.message()))
    assert fields[0] == (1, 2, b"n1")
    assert fields[1] == (2, 2, b"c1")
    assert fields[2] == (3, 2, struct_message({"NAMESPACE": "default"}))
    assert fields[3] == (6, 2, b"wasmdesk")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("reviews", "expected a mapping"),
        ({"id": 5}, "id: expected a string, got a number"),
        ({"metadata": ["a"]}, "metadata: expected a mapping"),
        ({"metadata": {"LABELS": {"app": object()}}}, "metadata.LABELS.app: expected a string"),
        ({"name": "x"}, "name: unknown field"),
        ({"locality": {"planet": "mars"}}, "locality.planet: unknown field"),
    ],
)
def test_bad_node_descriptions_name_the_field(data, message):
    with pytest.raises(NodeError, match=message.replace(".", r"\.")):
        Node.parse(data)


# -- spec.node in the Proxy document ---------------------------------------------------------

PROXY = """\
apiVersion: wasmdesk.dev/v1alpha1
kind: Proxy
spec:
  listen: 127.0.0.1:10000
  node:
    id: sidecar~10.0.0.7~reviews-v1.default~default.svc.cluster.local
    cluster: reviews.default
    metadata:
      WORKLOAD_NAME: reviews-v1
      NAMESPACE: default
      LABELS: {app: reviews, version: v1}
"""


def test_proxy_document_node_is_parsed_and_exported_unchanged():
    cfg = parse_config(PROXY)
    assert cfg.node.id.startswith("sidecar~")
    assert cfg.node.metadata["LABELS"] == {"app": "reviews", "version": "v1"}
    assert parse_config(dump_config(cfg)) == cfg
    assert next(yaml.safe_load_all(dump_config(cfg)))["spec"]["node"]["cluster"] == (
        "reviews.default"
    )


def test_without_spec_node_the_default_node_is_used():
    assert parse_config("apiVersion: wasmdesk.dev/v1alpha1\nkind: Proxy\nspec: {}\n").node == (
        DEFAULT_NODE
    )


def test_a_bad_spec_node_is_a_config_error_at_its_line():
    text = PROXY.replace("cluster: reviews.default", "cluster: [reviews]")
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "cfg.yaml")
    (issue,) = exc.value.errors
    assert issue.path == "spec.node"
    assert "cluster: expected a string, got a list" in issue.message
    assert issue.line == 5  # the node: line


# -- try --node --------------------------------------------------------------------------------


def _probe_file(tmp_path: Path) -> str:
    p = tmp_path / "probe.wasm"
    p.write_bytes(wat_modules.make_property_probe_module())
    return str(p)


def test_try_node_reaches_the_plugin_and_request_duration_exists_in_on_log(capsys, tmp_path):
    node = tmp_path / "node.json"
    node.write_text(json.dumps({"id": "n-1", "metadata": {"WORKLOAD_NAME": "reviews-v1"}}))
    rc = main(
        [
            "try",
            _probe_file(tmp_path),
            "--root-id",
            "probe",
            "--raw-config",
            "xds/node/metadata/WORKLOAD_NAME request/duration request/size response/size",
            "--body",
            "hello",
            "--response-body",
            "0123456789",
            "--node",
            f"@{node}",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    lines = {str(r["message"])[:3]: str(r["message"])[4:] for r in out["logs"]}
    assert lines["q00"] == "00:" + b"reviews-v1".hex()
    assert lines["q01"] == "01:"  # request.duration: NOT_FOUND before the request completed
    status, _, value = lines["l01"].partition(":")
    assert status == "00" and struct.unpack("<q", bytes.fromhex(value))[0] > 0
    assert lines["l02"] == "00:" + struct.pack("<q", 5).hex()  # request.size
    assert lines["s03"] == "00:" + struct.pack("<q", 0).hex()  # nothing sent yet
    assert lines["l03"] == "00:" + struct.pack("<q", 10).hex()  # response.size


def test_try_with_a_bad_node_exits_2_naming_the_field(capsys, tmp_path):
    rc = main(["try", _probe_file(tmp_path), "--node", '{"id": 1}'])
    assert rc == 2
    assert "--node: id: expected a string" in capsys.readouterr().err
