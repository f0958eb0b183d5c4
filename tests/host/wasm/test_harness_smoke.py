from host.wasm.abi import header_maps
from host.wasm.pairs import HeaderMap
from host.wasm.context import MapState
from host.wasm.types import Status


def test_get_header_value_through_real_memory(abi):
    ctx = abi.http_context()
    ctx.request.headers = HeaderMap([(":path", "/a"), ("X-Key", "v1")])
    ctx.request.headers_state = MapState.ACTIVE
    key = abi.put(b"x-key")
    rp, rs = abi.slot(4), abi.slot(4)
    with abi.on(ctx):
        st = header_maps.proxy_get_header_map_value(abi.vm, 0, key, 5, rp, rs)
    assert st == Status.OK
    assert abi.returned(rp, rs) == b"v1"
