"""The per-call glue made cheaper for the plugin path (issue 8): guest calls with prepared
ctypes arguments and u32 buffer views, host calls through the compiled all-i32 trampoline,
guest memory reached through a checked window (``_crossing.Memory``, or its ctypes twin),
and the header-name check's memo. Each keeps
the behaviour of the code it replaced; these pin it on a real engine and module.

The guest-call and host-call tests run on both crossings: the C one (``_crossing.c``,
built with the compiled data path) and ctypes (the plain-Python path), which must agree.
"""

from __future__ import annotations

import pytest
import wasmtime

from host import _native
from host.wasm import runtime, vm
from host.wasm.abi import FUNCTIONS, _validate
import gc
import threading
import time
import weakref

from host.wasm.runtime import (
    CallFailed,
    Engine,
    GuestFault,
    HostFunction,
    Instance,
    _I32Trampoline,
    _trampoline,
)

GUEST = """(module
  (import "env" "f" (func $f (param i32 i32) (result i32)))
  (import "env" "g" (func $g (param i32 i64) (result i32)))
  (import "env" "h8" (func $h8 (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "h9" (func $h9 (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "note" (func $note (param i32)))
  (memory (export "memory") 1)
  (func (export "call_f") (param i32 i32) (result i32) (call $f (local.get 0) (local.get 1)))
  (func (export "call_g") (param i32 i64) (result i32) (call $g (local.get 0) (local.get 1)))
  (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  (func (export "call_h8") (result i32)
    (call $h8 (i32.const 1) (i32.const 2) (i32.const 3) (i32.const 4) (i32.const 5)
              (i32.const 6) (i32.const 7) (i32.const -1)))
  (func (export "call_h9") (result i32)
    (call $h9 (i32.const 1) (i32.const 2) (i32.const 3) (i32.const 4) (i32.const 5)
              (i32.const 6) (i32.const 7) (i32.const 8) (i32.const 9)))
  (func (export "call_note") (param i32) (call $note (local.get 0)))
  (func (export "boom") (result i32) unreachable)
  (func (export "spin") (loop $l (br $l)))
  (func (export "poke") (param i32 i32) (i32.store8 (local.get 0) (local.get 1))))"""


class Host:
    """What the host functions of GUEST do, set per test."""

    def __init__(self) -> None:
        self.f_result: object = 0
        self.f_raises: BaseException | None = None
        self.seen: list[tuple[int, ...]] = []

    def f(self, owner: object, a: int, b: int) -> object:
        self.seen.append((a, b))
        if self.f_raises is not None:
            raise self.f_raises
        return self.f_result

    def g(self, owner: object, a: int, b: int) -> int:
        self.seen.append((a, b))
        return 7

    def many(self, owner: object, *args: int) -> int:
        self.seen.append(args)
        return sum(args)

    def note(self, owner: object, a: int) -> None:
        self.seen.append((a,))


def functions(host: Host) -> list[HostFunction]:
    return [
        HostFunction("env", "f", ("i32", "i32"), ("i32",), host.f, fault=6),
        HostFunction("env", "g", ("i32", "i64"), ("i32",), host.g, fault=6),
        HostFunction("env", "h8", ("i32",) * 8, ("i32",), host.many),
        HostFunction("env", "h9", ("i32",) * 9, ("i32",), host.many),
        HostFunction("env", "note", ("i32",), (), host.note),
    ]


CROSSINGS = ["C", "ctypes"]


def instance(engine: Engine, host: Host, crossing: str, owner: object = None) -> Instance:
    if crossing == "C" and runtime.crossing() != "C":
        pytest.skip(f"no C crossing in this process (data path: {_native.current()})")
    module = engine.compile(bytes(wasmtime.wat2wasm(GUEST)))
    return Instance(
        module,
        functions(host),
        owner,
        memory_limit_bytes=1 << 20,
        stub_result=lambda _: 0,
        c_crossing=crossing == "C",
    )


@pytest.fixture(params=CROSSINGS)
def world(engine: Engine, request: pytest.FixtureRequest):
    host = Host()
    inst = instance(engine, host, request.param)
    yield host, inst
    inst.close()


def fn(inst: Instance, name: str, params: tuple[str, ...], results: tuple[str, ...] = ("i32",)):
    f = inst.func(name, params, results)
    assert f is not None
    return f


def test_call_arguments_keep_their_low_32_bits_as_a_c_uint32_store_did(world):
    _, inst = world
    add = fn(inst, "add", ("i32", "i32"))
    assert inst.call(add, (-1, 0), 100) == 0xFFFFFFFF  # -1 is i32 0xFFFFFFFF
    assert inst.call(add, ((1 << 32) + 5, 2), 100) == 7  # bits above 32 are dropped
    assert inst.call(add, (0xFFFFFFFF, 1), 100) == 0  # results come back unsigned


def test_the_all_i32_host_functions_get_the_compiled_trampoline():
    """Every per-request Proxy-Wasm host function is all-i32 (so it takes the compiled
    path); a signature with an i64 falls back to the generated trampoline."""
    hot = {"proxy_get_header_map_value", "proxy_add_header_map_value", "proxy_log"}
    by_name = {hf.name: hf for hf in FUNCTIONS}
    for name in hot:
        assert isinstance(_trampoline(by_name[name], None, lambda n, e: 0), _I32Trampoline)
    wide = HostFunction("env", "g", ("i32", "i64"), ("i32",), lambda *a: 0)
    assert not isinstance(_trampoline(wide, None, lambda n, e: 0), _I32Trampoline)


def test_host_calls_pass_arguments_and_mask_results_on_both_trampolines(world):
    host, inst = world
    call_f = fn(inst, "call_f", ("i32", "i32"))
    call_g = fn(inst, "call_g", ("i32", "i64"))
    host.f_result = -1
    assert inst.call(call_f, (3, 0xFFFFFFFE), 100) == 0xFFFFFFFF  # the i32 result, masked
    host.f_result = (1 << 40) + 9
    assert inst.call(call_f, (4, 5), 100) == 9
    assert inst.call(call_g, (6, 0xFFFFFFFF), 100) == 7  # the generated one, i64 argument
    assert host.seen == [(3, 0xFFFFFFFE), (4, 5), (6, 0xFFFFFFFF)]


def test_a_guest_fault_in_a_host_call_returns_the_fault_status(world):
    host, inst = world
    host.f_raises = GuestFault("bad pointer")
    assert inst.call(fn(inst, "call_f", ("i32", "i32")), (1, 2), 100) == 6


def test_any_other_exception_in_a_host_call_traps_the_guest_call(world):
    host, inst = world
    host.f_raises = RuntimeError("boom")
    with pytest.raises(CallFailed) as e:
        inst.call(fn(inst, "call_f", ("i32", "i32")), (1, 2), 100)
    assert e.value.kind == "host_error" and "RuntimeError: boom" in e.value.message
    host.f_raises = None
    host.f_result = 5
    assert inst.call(fn(inst, "call_f", ("i32", "i32")), (1, 2), 100) == 5  # usable again


def test_eight_i32_arguments_cross_and_a_ninth_takes_the_generated_trampoline(world):
    host, inst = world
    assert inst.call(fn(inst, "call_h8", ()), (), 100) == (28 + 0xFFFFFFFF) & 0xFFFFFFFF
    assert inst.call(fn(inst, "call_h9", ()), (), 100) == 45
    assert host.seen == [(1, 2, 3, 4, 5, 6, 7, 0xFFFFFFFF), (1, 2, 3, 4, 5, 6, 7, 8, 9)]


def test_a_host_function_without_a_result_is_called_and_its_result_ignored(world):
    host, inst = world
    assert inst.call(fn(inst, "call_note", ("i32",), ()), (77,), 100) is None
    assert host.seen == [(77,)]


def test_a_non_int_result_traps_as_a_host_error(world):
    host, inst = world
    host.f_result = None
    with pytest.raises(CallFailed) as e:
        inst.call(fn(inst, "call_f", ("i32", "i32")), (1, 2), 100)
    assert e.value.kind == "host_error" and "TypeError" in e.value.message


def test_a_base_exception_in_a_host_call_traps_and_keeps_its_traceback(world):
    host, inst = world
    host.f_raises = KeyboardInterrupt()
    with pytest.raises(CallFailed) as e:
        inst.call(fn(inst, "call_f", ("i32", "i32")), (1, 2), 100)
    assert e.value.kind == "host_error" and "KeyboardInterrupt" in e.value.message


def test_a_guest_trap_fails_the_call_with_its_kind_and_frames(world):
    _, inst = world
    with pytest.raises(CallFailed) as e:
        inst.call(fn(inst, "boom", ()), (), 100)
    assert e.value.kind == "unreachable" and e.value.backtrace
    assert inst.call(fn(inst, "add", ("i32", "i32")), (2, 3), 100) == 5  # usable again


@pytest.mark.parametrize("crossing", CROSSINGS)
def test_calls_nested_in_host_functions_keep_each_level_apart(engine: Engine, crossing):
    """A host function calling back into the guest (as the guest allocator is called),
    two and three levels deep: each level's arguments and result stay its own (depth 1
    has a spare buffer, deeper levels a fresh one)."""
    host = Host()
    holder: list[Instance] = []

    def f(owner: object, a: int, b: int) -> int:
        inst = holder[0]
        add = fn(inst, "add", ("i32", "i32"))
        if inst.depth == 1:
            inner = inst.call(fn(inst, "call_f", ("i32", "i32")), (a + 1, b + 1), 100)
            return (inst.call(add, (a, b), 100) or 0) + 1000 * (inner or 0)
        return (inst.call(add, (a, b), 100) or 0) + 100 * inst.depth

    host.f = f  # type: ignore[method-assign]
    inst = instance(engine, host, crossing)
    holder.append(inst)
    try:
        # outer f(1, 2) = add(1, 2) + 1000 * f(2, 3) at depth 2 = 3 + 1000 * (5 + 200)
        assert inst.call(fn(inst, "call_f", ("i32", "i32")), (1, 2), 100) == 3 + 205_000
        assert inst.depth == 0
        assert inst.call(fn(inst, "add", ("i32", "i32")), (4, 5), 100) == 9
    finally:
        inst.close()


@pytest.mark.parametrize("crossing", CROSSINGS)
def test_closing_an_instance_releases_what_its_host_functions_hold(engine: Engine, crossing):
    """The C crossing hands wasmtime references to the owner and the functions; closing
    the instance must give them back (no leak per plugin reload)."""

    class Owner:
        pass

    owner = Owner()
    gone = weakref.ref(owner)
    inst = instance(engine, Host(), crossing, owner=owner)
    assert inst.call(fn(inst, "add", ("i32", "i32")), (1, 1), 100) == 2
    inst.close()
    del owner, inst
    gc.collect()
    assert gone() is None


@pytest.mark.parametrize("ticker", ["C", "Python"])
def test_the_epoch_ticker_runs_until_the_engine_closes(ticker):
    if ticker == "C" and runtime.crossing() != "C":
        pytest.skip(f"no C crossing in this process (data path: {_native.current()})")
    engine = Engine(cache_dir=False, c_ticker=ticker == "C")
    try:
        assert engine.epoch == 0
        engine.ensure_ticker()
        engine.ensure_ticker()  # one ticker, however often asked
        time.sleep(0.1)
        assert 5 <= engine.epoch <= 40  # every TICK_MS (5 ms): ~20, loosely on a busy box
    finally:
        engine.close()
    stopped = engine.epoch
    time.sleep(0.03)
    assert engine.epoch == stopped
    engine.ensure_ticker()  # a closed engine does not start again
    time.sleep(0.03)
    assert engine.epoch == stopped


@pytest.mark.parametrize("ticker", ["C", "Python"])
@pytest.mark.parametrize("crossing", CROSSINGS)
def test_a_runaway_guest_call_is_interrupted_at_its_deadline(ticker, crossing):
    if "C" in (ticker, crossing) and runtime.crossing() != "C":
        pytest.skip(f"no C crossing in this process (data path: {_native.current()})")
    engine = Engine(cache_dir=False, c_ticker=ticker == "C")
    engine.ensure_ticker()
    try:
        inst = instance(engine, Host(), crossing)
        started = time.monotonic()
        with pytest.raises(CallFailed) as e:
            inst.call(fn(inst, "spin", (), ()), (), 4)  # 4 ticks: ~20 ms
        assert e.value.kind == "interrupt"
        assert time.monotonic() - started < 2.0
        assert inst.call(fn(inst, "add", ("i32", "i32")), (1, 2), 4) == 3  # a fresh budget
        inst.close()
    finally:
        engine.close()


@pytest.mark.parametrize("hold", [False, True])
def test_an_engine_that_holds_the_gil_keeps_other_threads_waiting_during_a_guest_call(hold):
    """``Engine.hold_gil`` (``wasmdesk serve``): an outermost guest call keeps the GIL, so
    another Python thread makes no progress while it runs; without it (the app), the
    other thread runs meanwhile. A runaway call is interrupted at its deadline either
    way: the native ticker needs no GIL."""
    if runtime.crossing() != "C":
        pytest.skip(f"no C crossing in this process (data path: {_native.current()})")
    engine = Engine(cache_dir=False)
    engine.hold_gil = hold
    engine.ensure_ticker()
    counter = [0]
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            counter[0] += 1

    t = threading.Thread(target=count, daemon=True)
    try:
        assert engine.calls_keep_gil is hold
        inst = instance(engine, Host(), "C")
        spin = fn(inst, "spin", (), ())
        t.start()
        while counter[0] == 0:
            time.sleep(0.001)
        start = counter[0]
        time.sleep(0.05)
        per_50ms = counter[0] - start  # the other thread alone, for 50 ms
        before = counter[0]
        with pytest.raises(CallFailed) as e:
            inst.call(spin, (), 80)  # 80 ticks: ~400 ms
        during = counter[0] - before
        assert e.value.kind == "interrupt"
        # held: at most the switch interval it had before the call began; released: a
        # good part of the 400 ms
        if hold:
            assert during < per_50ms, (during, per_50ms)
        else:
            assert during > 2 * per_50ms, (during, per_50ms)
        inst.close()
    finally:
        stop.set()
        t.join(5)
        engine.close()
    assert not Engine(cache_dir=False, c_ticker=False).calls_keep_gil  # no native ticker


def test_every_callback_of_the_table_is_a_declared_attribute_of_callbacks(world):
    """``vm.Callbacks`` lists its attributes one by one (a compiled class): a callback
    added to ``_CALLBACKS`` without its line there would be missing at run time."""
    _, inst = world
    cb = vm.Callbacks(inst, "0.2.1")
    for name in (*vm._CALLBACKS, *vm._HEADERS):
        assert getattr(cb, name) is None, name  # GUEST exports none of them
    assert cb.mismatched == []


def test_reads_are_bytes_copies_and_follow_memory_growth(world):
    _, inst = world
    poke = fn(inst, "poke", ("i32", "i32"), ())
    inst.call(poke, (10, 0x41), 100)
    got = inst.read(10, 2)
    assert type(got) is bytes and got == b"A\0"
    inst.call(poke, (10, 0x42), 100)
    assert got == b"A\0"  # a copy, not a view of guest memory
    assert inst.read(10, 0) == b""
    inst.call(fn(inst, "grow", ("i32",)), (2,), 100)
    inst.call(poke, (2 * 65536 + 1, 0x43), 100)
    assert inst.read(2 * 65536, 2) == b"\0C"  # pages added after the first read
    with pytest.raises(GuestFault):
        inst.read(3 * 65536 - 1, 2)


def test_writes_and_word_reads_follow_memory_growth_and_refuse_what_is_outside(world):
    _, inst = world
    inst.write(100, b"abc")
    inst.write(103, bytearray(b"de"))
    inst.write(105, memoryview(b"xfx")[1:2])
    assert inst.read(100, 6) == b"abcdef"
    inst.write_u32(200, 0x1_8786_8584)  # the low 32 bits, little-endian
    assert inst.read(200, 4) == b"\x84\x85\x86\x87"
    assert inst.read_u32(200) == 0x87868584
    inst.write_u64(300, -1)
    assert inst.read(300, 9) == b"\xff" * 8 + b"\0"
    end = inst.mem_size
    inst.write(end - 3, b"xyz")  # up to the last byte
    assert inst.read(end - 3, 3) == b"xyz"
    for bad in (
        lambda: inst.write(end - 2, b"xyz"),
        lambda: inst.write_u32(end - 3, 1),
        lambda: inst.write_u64(end - 7, 1),
        lambda: inst.read_u32(end - 3),
        lambda: inst.read(end, 1),
        lambda: inst.read(-1, 1),
        lambda: inst.read(0, -1),
        lambda: inst.write(-4, b"a"),
        lambda: inst.read(1 << 40, 1),
        lambda: inst.read(4, 1 << 70),
    ):
        with pytest.raises(GuestFault):
            bad()
    assert inst.read(end - 3, 3) == b"xyz"  # a refused access wrote nothing
    inst.call(fn(inst, "grow", ("i32",)), (1,), 100)
    inst.write_u32(end + 10, 7)  # in the page the guest just added
    assert inst.read_u32(end + 10) == 7 and inst.mem_size == end + 65536
    with pytest.raises(TypeError):
        inst.write(0, "text")  # type: ignore[arg-type]


def test_a_closed_instance_refuses_every_access_without_touching_freed_memory(world):
    _, inst = world
    inst.write(8, b"kept")
    inst.close()
    assert inst.mem_size == 0
    for access in (
        lambda: inst.read(8, 4),
        lambda: inst.read_u32(8),
        lambda: inst.write(8, b"x"),
        lambda: inst.write_u32(8, 1),
        lambda: inst.write_u64(8, 1),
    ):
        with pytest.raises(GuestFault):
            access()
    assert inst.read(0, 0) == b""  # an empty range is inside even no memory


@pytest.mark.parametrize("crossing", CROSSINGS)
def test_a_module_without_memory_has_an_empty_window(engine: Engine, crossing):
    if crossing == "C" and runtime.crossing() != "C":
        pytest.skip(f"no C crossing in this process (data path: {_native.current()})")
    module = engine.compile(bytes(wasmtime.wat2wasm('(module (func (export "f")))')))
    inst = Instance(
        module, [], None, memory_limit_bytes=1 << 20, stub_result=lambda _: 0,
        c_crossing=crossing == "C",
    )
    try:
        assert inst.read(0, 0) == b""
        with pytest.raises(GuestFault):
            inst.read(0, 1)
        with pytest.raises(GuestFault):
            inst.write_u32(0, 1)
    finally:
        inst.close()


def test_valid_name_memo_never_admits_an_invalid_name_and_stays_bounded():
    assert _validate.valid_name(b"x-typical")
    assert _validate.valid_name(b"x-typical")  # from the memo
    for bad in (b"", b"x typical", b"x:y", b"x\r\n", b"x\0", b"\xff"):
        assert not _validate.valid_name(bad)
        assert not _validate.valid_name(bad)  # refused again: invalid names are not kept
    for i in range(3000):
        assert _validate.valid_name(b"n-%d" % i)
    assert len(_validate._VALID_NAMES) <= 1024
    assert _validate.valid_name(b":path") and not _validate.valid_name(b":nope")


@pytest.mark.parametrize("byte", [b"\r", b"\n", b"\0"])
def test_values_with_cr_lf_or_nul_are_refused_wherever_the_byte_is(byte):
    for value in (byte, b"a" + byte, byte + b"a", b"ab" + byte + b"cd"):
        assert not _validate.valid_value(value)
        assert not _validate.valid_header(b"x", value)
    assert _validate.valid_value(b"a\tb c")
    assert not _validate.valid_origin_path(b"/a b") and not _validate.valid_origin_path(b"/a#b")
    assert _validate.valid_origin_path(b"/a?b=c")
