"""The inspector records each hop's detail (headers before and after, bodies, callbacks)
only while someone watches it (the app's inspector, a recent read of ``/requests``); the
summary, a failed plugin's record and the client's request headers are kept always."""

from __future__ import annotations

from typing import Any

from .conftest import make_config, wasm_plugin


def _last(h: Any) -> dict[str, Any]:
    return h.wait_for(lambda: h.records(), what="a request record")[-1].to_dict()


def test_unwatched_requests_keep_the_summary_and_skip_the_per_hop_detail(start_proxy, probe):
    h = start_proxy(make_config(wasm_plugin("p", probe())), inspect=False)
    with h.client() as c:
        assert c.get("/quiet", headers={"x-client": "1"}).status_code == 200
    rec = _last(h)
    assert (rec["method"], rec["path"], rec["status"]) == ("GET", "/quiet", 200)
    hop = rec["hops"][0]
    assert (hop["plugin"], hop["mode"], hop["ran"]) == ("p", "enforce", True)
    assert ["x-client", "1"] in hop["request_headers_before"]  # the client's request
    assert hop["request_headers_after"] is None
    assert hop["response_headers_before"] is None
    assert hop["callbacks"] == []
    # the Overview's time per request is still counted
    assert len(h.slot("p").callback_us) == 1


def test_a_read_of_requests_turns_the_detail_on(start_proxy, probe):
    h = start_proxy(make_config(wasm_plugin("p", probe())), inspect=False)
    r = h.admin("GET", "/requests")
    assert r.status_code == 200
    with h.client() as c:
        assert c.get("/watched").status_code == 200
    hop = _last(h)["hops"][0]
    assert hop["response_headers_after"] is not None
    names = [cb["name"] for cb in hop["callbacks"]]
    assert "proxy_on_request_headers" in names and "proxy_on_response_headers" in names


def test_a_failure_is_recorded_whole_while_nobody_watches(start_proxy, probe):
    h = start_proxy(
        make_config(wasm_plugin("t", probe(trap_path="/boom"), fail="FAIL_CLOSE")),
        inspect=False,
    )
    with h.client() as c:
        assert c.get("/boom").status_code == 503
    hop = _last(h)["hops"][0]
    assert hop["failure"] is not None
    assert hop["failure"]["request"]["path"] == "/boom"
    assert [cb["result"] for cb in hop["callbacks"]][-1] == "trap"
