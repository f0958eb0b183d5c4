"""What the desktop app reads from the engine for issue 9 §5: each plugin snapshot says
its ``type`` (the HTTP chain first, then the NETWORK (TCP) plugins, which the HTTP chain
never runs), and the inspector's hop records carry the trailers each plugin's trailers
callback was given and left (``grpc-status`` is a trailer)."""

from __future__ import annotations

from typing import Any

from tests.host.proxy.test_trailers import _REQUEST, _chunked_upstream, _read_chunked, trailers_wasm

from .conftest import connect, make_config, wasm_plugin


def _network(doc: dict[str, Any]) -> dict[str, Any]:
    doc["spec"]["type"] = "NETWORK"
    return doc


def test_plugin_snapshots_say_their_type_http_chain_first(start_proxy, wasm_file) -> None:
    path = wasm_file(trailers_wasm(False), "trailers")
    h = start_proxy(
        make_config(
            _network(wasm_plugin("tcp-a", path, root_id="tr", priority=5)),
            wasm_plugin("http-a", path, root_id="tr"),
            _network(wasm_plugin("tcp-b", path, root_id="tr", priority=9)),
        )
    )
    snap = h.server.plugins_snapshot()
    assert [(p["name"], p["type"]) for p in snap] == [
        ("http-a", "HTTP"),
        ("tcp-b", "NETWORK"),  # priority 9 before 5, as in the HTTP chain
        ("tcp-a", "NETWORK"),
    ]
    # the HTTP chain itself still leaves them out
    assert [s.name for s in h.server.manager.ordered] == ["http-a"]


def test_hop_records_carry_the_trailers_before_and_after_each_plugin(
    start_proxy, scripted_upstream, wasm_file
) -> None:
    path = wasm_file(trailers_wasm(False), "trailers")
    up = _chunked_upstream(scripted_upstream, b"x-added: req\r\n\r\n")
    h = start_proxy(
        make_config(wasm_plugin("tr", path, root_id="tr"), clusters={"backend": up.url})
    )
    with connect(h) as s:
        s.sendall(_REQUEST)
        _read_chunked(s.makefile("rb"))
    rec = h.wait_for(lambda: h.records(), what="a request record")[-1].to_dict()
    hop = rec["hops"][0]
    assert hop["request_trailers_before"] == [["x-t", "1"]]
    assert hop["request_trailers_after"] == [["x-t", "1"], ["x-added", "req"]]
    assert hop["response_trailers_before"] == [["x-rt", "2"]]
    assert hop["response_trailers_after"] == [["x-rt", "2"], ["x-added", "resp"]]
