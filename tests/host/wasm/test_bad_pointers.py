"""Out-of-bounds guest pointers (ABI doc §2: "if any (ptr, len) range or out-slot lies
outside linear memory → INVALID_MEMORY_ACCESS (6)"; WASI: FAULT (21)).

Every host function in ``host.wasm.abi.FUNCTIONS`` that dereferences a guest pointer is
called three ways with a bad pointer: directly (it must raise ``GuestFault``, never write
or read anything), through wasmtime and the real raw-call trampoline from a generated
guest module that re-exports every import (the guest must get the function's fault
status, the VM must stay healthy), and, for (ptr, len) ranges, with a length that wraps
around 2**32 (must fault, not read from the start of memory).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from host.wasm import Action, LogLevel, PluginHost, VirtualClock, VmConfig
from host.wasm.abi import FUNCTIONS
from host.wasm.context import MapState
from host.wasm.pairs import HeaderMap, encode_pairs
from host.wasm.runtime import GuestFault, HostFunction
from host.wasm.types import MetricType, Status
from tests.fixtures import wat_modules
from tests.host.wasm.conftest import AbiHarness

BAD = 0xFFFFFFF0
IMA = int(Status.INVALID_MEMORY_ACCESS)
WASI_FAULT = 21
WASI_MODULES = ("wasi_snapshot_preview1", "wasi_unstable")


# -- the bad_pointer fixture end to end ---------------------------------------------------


def test_bad_pointer_fixture_gets_invalid_memory_access_from_every_call(start_vm):
    host, vm, root = start_vm(wat_modules.make_bad_pointer_module())
    ctx = vm.new_http_context(root)
    headers = HeaderMap([(":path", "/x"), ("a", "1")])
    assert ctx.on_request_headers(headers, False) == Action.CONTINUE
    assert [r.message for r in host.logs if r.source == "plugin"] == ["statuses: 6,6,6,6,6"]
    assert vm.failure is None
    assert headers.items() == [(b":path", b"/x"), (b"a", b"1")]


# -- a guest module that forwards to every host function -----------------------------------


def _export_name(hf: HostFunction) -> str:
    return f"fwd:{hf.module}.{hf.name}"


def _forwarder_wat() -> str:
    lines = ["(module"]
    for i, hf in enumerate(FUNCTIONS):
        params = " ".join(hf.params)
        results = " ".join(hf.results)
        sig = (f" (param {params})" if params else "") + (f" (result {results})" if results else "")
        lines.append(f'  (import "{hf.module}" "{hf.name}" (func $f{i}{sig}))')
    lines += [
        "  (memory (export \"memory\") 2)",
        "  (global $heap (mut i32) (i32.const 65536))",
        "  (func (export \"malloc\") (param $n i32) (result i32)",
        "    (local $p i32) (local $end i32)",
        "    (local.set $p (global.get $heap))",
        "    (local.set $end (i32.add (local.get $p)",
        "      (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))",
        "    (if (i32.gt_u (local.get $end) (i32.shl (memory.size) (i32.const 16)))",
        "      (then (if (i32.eq (memory.grow (i32.add (i32.shr_u (i32.sub (local.get $end)",
        "              (i32.shl (memory.size) (i32.const 16))) (i32.const 16)) (i32.const 1)))",
        "            (i32.const -1)) (then (return (i32.const 0))))))",
        "    (global.set $heap (local.get $end))",
        "    (local.get $p))",
        "  (func (export \"proxy_abi_version_0_2_1\"))",
    ]
    for i, hf in enumerate(FUNCTIONS):
        # i64 parameters arrive as two i32 (lo, hi): the raw call path writes one u32
        # per argument slot.
        exp_params, call_args, local = [], [], 0
        for p in hf.params:
            if p == "i64":
                exp_params += ["i32", "i32"]
                call_args.append(
                    f"(i64.or (i64.extend_i32_u (local.get {local})) "
                    f"(i64.shl (i64.extend_i32_u (local.get {local + 1})) (i64.const 32)))"
                )
                local += 2
            else:
                exp_params.append("i32")
                call_args.append(f"(local.get {local})")
                local += 1
        sig = (f" (param {' '.join(exp_params)})" if exp_params else "") + (
            f" (result {' '.join(hf.results)})" if hf.results else ""
        )
        lines.append(
            f'  (func (export "{_export_name(hf)}"){sig} (call $f{i} {" ".join(call_args)}))'
        )
    lines.append(")")
    return "\n".join(lines)


@dataclass
class World:
    """One VM of the forwarder module with state in which every valid call gets past its
    availability checks to the memory accesses (maps active, body current, a shared-data
    key, a queue, a gauge, configured env and args)."""

    host: PluginHost
    abi: AbiHarness
    queue_token: int
    gauge_id: int

    def stream(self):
        ctx = self.abi.http_context()
        ctx.request.headers = HeaderMap([(":path", "/"), ("k", "v")])
        ctx.request.headers_state = MapState.ACTIVE
        ctx.request.body += b"body bytes"
        ctx.request.body_active = True
        return ctx

    def call_guest(self, hf: HostFunction, args: list[int]) -> int | None:
        inst = self.abi.vm.instance
        expanded: list[int] = []
        for kind, a in zip(hf.params, args, strict=True):
            if kind == "i64":
                expanded += [a & 0xFFFFFFFF, (a >> 32) & 0xFFFFFFFF]
            else:
                expanded.append(a)
        fn = inst.func(_export_name(hf), ("i32",) * len(expanded), hf.results)
        assert fn is not None
        return inst.call(fn, expanded, 1000)


@pytest.fixture(scope="module")
def forwarder_wasm():
    return wat_modules.compile_wat(_forwarder_wat(), "forwarder")


@pytest.fixture(scope="module")
def world(engine, forwarder_wasm):
    host = PluginHost(engine, clock=VirtualClock(), log_level=LogLevel.TRACE)
    vm = host.create_vm(
        host.compile(forwarder_wasm),
        VmConfig(name="bp", vm_id="bp", env=(("K", "V"),), args=("prog", "--x")),
    )
    root = vm.start_plugin("bp", b"")
    abi = AbiHarness(host, vm, root)
    host.shared_data.set("bp", b"key", b"value", 0)
    q = host.queues.register("bp", "q", root)
    host.queues.enqueue(q.token, b"item")
    gauge = host.metrics.define(MetricType.GAUGE, "bp_gauge")
    yield World(host, abi, q.token, gauge)
    host.close()


@pytest.fixture(autouse=True)
def _clean(request):
    yield
    if "world" in request.fixturenames:
        w = request.getfixturevalue("world")
        w.abi.vm._actions.clear()
        w.host.pending.clear()


# -- the table: a valid call per function, and which arguments are guest pointers ----------

Ptr = tuple[int, int | None]  # (pointer argument index, its length argument index or None)


@dataclass
class Case:
    build: Callable[[World, AbiHarness], list[int]]
    pointers: tuple[Ptr, ...]
    on_stream: bool = True


def _s(abi, n=8):
    return abi.put(b"\0" * n)


def _b(abi, data: bytes):
    return abi.put(data)


HDRS = encode_pairs([(b":method", b"GET"), (b":path", b"/"), (b":authority", b"c")])

CASES: dict[str, Case] = {
    # logging and time
    "proxy_log": Case(lambda w, a: [2, _b(a, b"msg"), 3], ((1, 2),)),
    "proxy_get_log_level": Case(lambda w, a: [_s(a)], ((0, None),)),
    "proxy_get_current_time_nanoseconds": Case(lambda w, a: [_s(a)], ((0, None),)),
    # buffers
    "proxy_get_buffer_bytes": Case(lambda w, a: [0, 0, 4, _s(a), _s(a)], ((3, None), (4, None))),
    "proxy_set_buffer_bytes": Case(lambda w, a: [0, 0, 0, _b(a, b"pre"), 3], ((3, 4),)),
    "proxy_get_buffer_status": Case(lambda w, a: [0, _s(a), _s(a)], ((1, None), (2, None))),
    "proxy_get_configuration": Case(lambda w, a: [_s(a), _s(a)], ((0, None), (1, None))),
    # header maps
    "proxy_get_header_map_pairs": Case(lambda w, a: [0, _s(a), _s(a)], ((1, None), (2, None))),
    "proxy_set_header_map_pairs": Case(lambda w, a: [0, _b(a, HDRS), len(HDRS)], ((1, 2),)),
    "proxy_get_header_map_value": Case(
        lambda w, a: [0, _b(a, b"k"), 1, _s(a), _s(a)], ((1, 2), (3, None), (4, None))
    ),
    "proxy_add_header_map_value": Case(
        lambda w, a: [0, _b(a, b"x"), 1, _b(a, b"y"), 1], ((1, 2), (3, 4))
    ),
    "proxy_replace_header_map_value": Case(
        lambda w, a: [0, _b(a, b"k"), 1, _b(a, b"z"), 1], ((1, 2), (3, 4))
    ),
    "proxy_remove_header_map_value": Case(lambda w, a: [0, _b(a, b"x"), 1], ((1, 2),)),
    "proxy_get_header_map_size": Case(lambda w, a: [0, _s(a)], ((1, None),)),
    # properties
    "proxy_get_property": Case(
        lambda w, a: [_b(a, b"plugin_root_id"), 14, _s(a), _s(a)], ((0, 1), (2, None), (3, None))
    ),
    "proxy_set_property": Case(lambda w, a: [_b(a, b"p"), 1, _b(a, b"v"), 1], ((0, 1), (2, 3))),
    # stream control
    "proxy_send_local_response": Case(
        lambda w, a: [403, _b(a, b"d"), 1, _b(a, b"b"), 1, _b(a, HDRS), len(HDRS), 0xFFFFFFFF],
        ((1, 2), (3, 4), (5, 6)),
    ),
    # callouts
    "proxy_get_status": Case(
        lambda w, a: [_s(a), _s(a), _s(a)], ((0, None), (1, None), (2, None))
    ),
    "proxy_http_call": Case(
        lambda w, a: [_b(a, b"c"), 1, _b(a, HDRS), len(HDRS), _b(a, b"B"), 1,
                      _b(a, b"\0\0\0\0"), 4, 100, _s(a)],
        ((0, 1), (2, 3), (4, 5), (6, 7), (8 + 1, None)),
    ),
    "proxy_grpc_call": Case(
        lambda w, a: [_b(a, b"c"), 1, _b(a, b"svc"), 3, _b(a, b"m"), 1, _b(a, b"\0\0\0\0"), 4,
                      _b(a, b"msg"), 3, 100, _s(a)],
        ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (11, None)),
    ),
    "proxy_grpc_stream": Case(
        lambda w, a: [_b(a, b"c"), 1, _b(a, b"svc"), 3, _b(a, b"m"), 1, _b(a, b"\0\0\0\0"), 4,
                      _s(a)],
        ((0, 1), (2, 3), (4, 5), (6, 7), (8, None)),
    ),
    "proxy_grpc_send": Case(lambda w, a: [5, _b(a, b"msg"), 3, 0], ((1, 2),)),
    # shared data and queues
    "proxy_get_shared_data": Case(
        lambda w, a: [_b(a, b"key"), 3, _s(a), _s(a), _s(a)],
        ((0, 1), (2, None), (3, None), (4, None)),
    ),
    "proxy_set_shared_data": Case(
        lambda w, a: [_b(a, b"key2"), 4, _b(a, b"v"), 1, 0], ((0, 1), (2, 3))
    ),
    "proxy_register_shared_queue": Case(lambda w, a: [_b(a, b"q2"), 2, _s(a)], ((0, 1), (2, None))),
    "proxy_resolve_shared_queue": Case(
        lambda w, a: [_b(a, b"bp"), 2, _b(a, b"q"), 1, _s(a)], ((0, 1), (2, 3), (4, None))
    ),
    "proxy_enqueue_shared_queue": Case(lambda w, a: [w.queue_token, _b(a, b"i"), 1], ((1, 2),)),
    "proxy_dequeue_shared_queue": Case(
        lambda w, a: [w.queue_token, _s(a), _s(a)], ((1, None), (2, None))
    ),
    # metrics
    "proxy_define_metric": Case(lambda w, a: [0, _b(a, b"bp_c"), 4, _s(a)], ((1, 2), (3, None))),
    "proxy_get_metric": Case(lambda w, a: [w.gauge_id, _s(a)], ((1, None),)),
    # foreign functions
    "proxy_call_foreign_function": Case(
        lambda w, a: [_b(a, b"compress"), 8, _b(a, b"args"), 4, _s(a), _s(a)],
        ((0, 1), (2, 3), (4, None), (5, None)),
    ),
    # WASI
    "fd_write": Case(lambda w, a: [1, _iov(a, b"x"), 1, _s(a)], ((1, None), (3, None))),
    "fd_pwrite": Case(lambda w, a: [1, _iov(a, b"x"), 1, 0, _s(a)], ((1, None), (4, None))),
    "environ_sizes_get": Case(lambda w, a: [_s(a), _s(a)], ((0, None), (1, None))),
    "environ_get": Case(lambda w, a: [_s(a, 16), _s(a, 64)], ((0, None), (1, None))),
    "args_sizes_get": Case(lambda w, a: [_s(a), _s(a)], ((0, None), (1, None))),
    "args_get": Case(lambda w, a: [_s(a, 16), _s(a, 64)], ((0, None), (1, None))),
    "clock_time_get": Case(lambda w, a: [0, 1, _s(a)], ((2, None),)),
    "clock_res_get": Case(lambda w, a: [1, _s(a)], ((1, None),)),
    "random_get": Case(lambda w, a: [_s(a, 16), 16], ((0, 1),)),
    "poll_oneoff": Case(lambda w, a: [_s(a, 48), _s(a, 32), 1, _s(a)], ((3, None),)),
    "fd_fdstat_get": Case(lambda w, a: [1, _s(a, 24)], ((1, None),)),
}


def _iov(abi, data: bytes) -> int:
    return abi.put(abi.put(data).to_bytes(4, "little") + len(data).to_bytes(4, "little"))


# Pointer-typed parameters these functions never dereference, like cpp-host's versions:
# they answer a fixed errno first (the test pins that a bad value there is harmless).
NOT_DEREFERENCED: dict[str, Case] = {
    "fd_prestat_get": Case(lambda w, a: [3, BAD], ()),  # always BADF
    "fd_seek": Case(lambda w, a: [1, 0, 0, BAD], ()),  # NOTSUP / BADF
    "fd_read": Case(lambda w, a: [0, BAD, 1, BAD], ()),  # NOSYS
    "path_open": Case(lambda w, a: [3, 0, BAD, 4, 0, 0, 0, 0, BAD], ()),  # NOENT
    "poll_oneoff": Case(lambda w, a: [BAD, BAD, 1, _s(a)], ()),  # subscriptions unread
}

NO_POINTERS = {
    "proxy_set_tick_period_milliseconds", "proxy_continue_stream", "proxy_close_stream",
    "proxy_continue_request", "proxy_continue_response", "proxy_clear_route_cache",
    "proxy_grpc_cancel", "proxy_grpc_close", "proxy_increment_metric", "proxy_record_metric",
    "proxy_set_effective_context", "proxy_done", "emscripten_notify_memory_growth",
    "pthread_equal", "proc_exit", "sched_yield", "fd_close",
}


def _fault(hf: HostFunction) -> int:
    return WASI_FAULT if hf.module in WASI_MODULES else IMA


def _params():
    out = []
    for hf in FUNCTIONS:
        case = CASES.get(hf.name)
        if case is None:
            continue
        for ptr_idx, len_idx in case.pointers:
            ident = f"{hf.module}.{hf.name}[arg{ptr_idx}]"
            out.append(pytest.param(hf, ptr_idx, len_idx, id=ident))
    return out


def _functions_with_pointers():
    return [pytest.param(hf, id=f"{hf.module}.{hf.name}") for hf in FUNCTIONS if hf.name in CASES]


def _ranges():
    return [p for p in _params() if p.values[2] is not None and p.values[0].name != "random_get"]


def test_every_host_function_is_classified():
    names = {hf.name for hf in FUNCTIONS}
    classified = set(CASES) | NO_POINTERS | (set(NOT_DEREFERENCED) - {"poll_oneoff"})
    assert names == classified


@pytest.mark.parametrize("hf", [pytest.param(hf, id=f"{hf.module}.{hf.name}") for hf in FUNCTIONS])
def test_fault_status_is_invalid_memory_access_or_wasi_fault(hf):
    assert hf.fault == _fault(hf)


# -- valid calls do not fault (the table is meaningful) ------------------------------------


@pytest.mark.parametrize("hf", _functions_with_pointers())
def test_the_valid_call_does_not_fault_directly_or_through_the_trampoline(world, hf):
    a = world.abi
    case = CASES[hf.name]
    with a.on(world.stream() if case.on_stream else a.root):
        direct = hf.impl(a.vm, *case.build(world, a))
        guest = world.call_guest(hf, case.build(world, a))
    assert direct != _fault(hf)
    assert guest == direct or hf.name in ("proxy_dequeue_shared_queue", "proxy_send_local_response")
    assert a.vm.failure is None


# -- a bad pointer in every pointer argument -----------------------------------------------


@pytest.mark.parametrize(("hf", "ptr_idx", "len_idx"), _params())
def test_out_of_bounds_pointer_raises_guest_fault_when_called_directly(world, hf, ptr_idx, len_idx):
    a = world.abi
    case = CASES[hf.name]
    with a.on(world.stream() if case.on_stream else a.root):
        args = case.build(world, a)
        args[ptr_idx] = BAD
        with pytest.raises(GuestFault):
            hf.impl(a.vm, *args)


@pytest.mark.parametrize(("hf", "ptr_idx", "len_idx"), _params())
def test_out_of_bounds_pointer_returns_the_fault_status_through_the_trampoline(
    world, hf, ptr_idx, len_idx
):
    a = world.abi
    case = CASES[hf.name]
    ctx = world.stream() if case.on_stream else a.root
    with a.on(ctx):
        args = case.build(world, a)
        args[ptr_idx] = BAD
        assert world.call_guest(hf, args) == _fault(hf)
    assert a.vm.failure is None
    assert a.vm.instance.host_error is None
    assert getattr(ctx, "local_response", None) is None


@pytest.mark.parametrize(("hf", "ptr_idx", "len_idx"), _ranges())
def test_a_range_wrapping_around_2_32_faults_instead_of_reading(world, hf, ptr_idx, len_idx):
    a = world.abi
    case = CASES[hf.name]
    with a.on(world.stream() if case.on_stream else a.root):
        args = case.build(world, a)
        p = args[ptr_idx]
        args[len_idx] = (1 << 32) - p + 8  # p + len == 2**32 + 8: wraps to address 8
        with pytest.raises(GuestFault):
            hf.impl(a.vm, *args)
        args = case.build(world, a)
        p = args[ptr_idx]
        args[len_idx] = (1 << 32) - p + 8
        assert world.call_guest(hf, args) == _fault(hf)
    assert a.vm.failure is None


@pytest.mark.parametrize("name", sorted(NOT_DEREFERENCED))
def test_pointer_arguments_that_are_never_read_do_not_fault(world, name):
    a = world.abi
    for hf in (f for f in FUNCTIONS if f.name == name):
        args = NOT_DEREFERENCED[name].build(world, a)
        with a.on(a.root):
            assert world.call_guest(hf, list(args)) != WASI_FAULT
            assert hf.impl(a.vm, *args) != WASI_FAULT


# -- the memory boundary ------------------------------------------------------------------


def test_ranges_at_the_end_of_memory(world):
    a = world.abi
    from host.wasm.abi import logging as lg

    size = a.vm.instance.memory_pages() * 65536
    with a.on(a.root):
        assert lg.proxy_log(a.vm, 2, size - 4, 4) == Status.OK
        assert lg.proxy_log(a.vm, 2, size, 0) == Status.OK  # empty range at the end
        with pytest.raises(GuestFault):
            lg.proxy_log(a.vm, 2, size - 3, 4)
        with pytest.raises(GuestFault):
            lg.proxy_log(a.vm, 2, size + 1, 0)


def test_bad_out_slot_leaves_no_side_effects_on_the_map(world):
    a = world.abi
    from host.wasm.abi import header_maps as hm

    ctx = world.stream()
    before = ctx.request.headers.items()
    key = a.put(b"k")
    with a.on(ctx):
        with pytest.raises(GuestFault):
            hm.proxy_add_header_map_value(a.vm, 0, key, 1, BAD, 1)
    assert ctx.request.headers.items() == before
