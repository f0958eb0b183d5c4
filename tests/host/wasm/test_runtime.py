"""The wasmtime backend (host.wasm.runtime): loading and its errors, the on-disk compiled
module cache, guest memory access, the unchecked call path, and guards against the
wasmtime-py 50 hazards that abort the process instead of raising (run in a subprocess).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import wasmtime

from host.wasm.runtime import (
    WASM_PAGE,
    CallFailed,
    Engine,
    GuestFault,
    Instance,
    LoadError,
)

REPO = Path(__file__).resolve().parents[3]

ARITH = """(module
  (memory (export "memory") 1)
  (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  (func (export "poke") (param i32 i32) (i32.store8 (local.get 0) (local.get 1)))
  (func (export "peek") (param i32) (result i32) (i32.load8_u (local.get 0)))
  (func (export "nothing")))"""


@pytest.fixture(scope="module")
def arith_wasm() -> bytes:
    return bytes(wasmtime.wat2wasm(ARITH))


def instantiate(engine: Engine, wasm: bytes, limit: int = 16 << 20) -> Instance:
    module = engine.compile(wasm)
    return Instance(module, [], None, memory_limit_bytes=limit, stub_result=lambda _: 0)


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize(
    ("data", "kind", "says"),
    [
        (b"", "not_wasm", "file is empty"),
        (b"\x7fELF\x02\x01\x01\x00", "not_wasm", "missing \\0asm magic"),
        (b"\0as", "not_wasm", "missing \\0asm magic"),
        # a component-model binary: magic, then version 0x0d and layer 1
        (b"\0asm\x0d\x00\x01\x00" + b"\0" * 8, "not_wasm", "a component"),
        # a valid header, then a type section that ends early
        (b"\0asm\x01\x00\x00\x00\x01\x05\x01", "invalid", "invalid WebAssembly module"),
        (b"\0asm\x01\x00\x00\x00\xff\x00", "invalid", "invalid WebAssembly module"),
    ],
    ids=["empty", "elf", "short-magic", "component", "truncated", "bad-section"],
)
def test_compile_refuses_what_is_not_a_core_module(engine, data, kind, says):
    with pytest.raises(LoadError) as err:
        engine.compile(data)
    assert err.value.kind == kind
    assert says in err.value.message
    assert "\n" not in err.value.message  # one line, for the operator


def test_compile_refuses_non_bytes(engine):
    with pytest.raises(LoadError) as err:
        engine.compile("\0asm")  # type: ignore[arg-type]
    assert err.value.kind == "not_wasm"


def test_compile_describes_imports_and_exports(engine, arith_wasm):
    module = engine.compile(arith_wasm)
    add = module.export("add")
    assert add is not None
    assert (add.kind, add.params, add.results) == ("func", ("i32", "i32"), ("i32",))
    assert module.export("memory").kind == "memory"  # type: ignore[union-attr]
    assert module.imports == ()
    assert module.size == len(arith_wasm)


# --------------------------------------------------------------------------- cache


def test_second_compile_is_served_from_the_disk_cache(tmp_path, arith_wasm):
    with Engine(cache_dir=tmp_path) as engine:
        first = engine.compile(arith_wasm)
        second = engine.compile(arith_wasm)

        assert (first.from_cache, second.from_cache) == (False, True)
        assert engine.stats["compiled"] == 1 and engine.stats["cache_hits"] == 1
        [entry] = tmp_path.glob("*.cwasm")
        assert entry.name.startswith(first.sha256)
        inst = Instance(second, [], None, memory_limit_bytes=1 << 20, stub_result=lambda _: 0)
        assert inst.call(inst.func("add", ("i32", "i32"), ("i32",)), (40, 2), 100) == 42
        inst.close()

    with Engine(cache_dir=tmp_path) as another_process:
        assert another_process.compile(arith_wasm).from_cache


def test_corrupted_cache_entry_is_dropped_and_recompiled(tmp_path, arith_wasm):
    with Engine(cache_dir=tmp_path) as engine:
        engine.compile(arith_wasm)
    [entry] = tmp_path.glob("*.cwasm")
    scratch = tmp_path / "scratch"
    scratch.write_bytes(b"definitely not a serialized module")
    os.replace(scratch, entry)  # replaced as a whole: see the in-place hazard below

    with Engine(cache_dir=tmp_path) as engine:
        module = engine.compile(arith_wasm)
        assert not module.from_cache
        assert engine.stats["cache_errors"] == 1 and engine.stats["compiled"] == 1
        inst = Instance(module, [], None, memory_limit_bytes=1 << 20, stub_result=lambda _: 0)
        assert inst.call(inst.func("add", ("i32", "i32"), ("i32",)), (1, 2), 100) == 3
        inst.close()
        assert engine.compile(arith_wasm).from_cache  # the entry was rewritten


def test_engine_without_a_cache_writes_nothing(tmp_path, arith_wasm, monkeypatch):
    monkeypatch.setenv("WASMDESK_CACHE_DIR", str(tmp_path))
    with Engine(cache_dir=False) as engine:
        engine.compile(arith_wasm)
        assert engine.compile(arith_wasm).from_cache is False
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- memory and calls


def test_unchecked_call_passes_params_and_returns_unsigned_results(engine, arith_wasm):
    inst = instantiate(engine, arith_wasm)
    add = inst.func("add", ("i32", "i32"), ("i32",))
    assert add is not None

    assert inst.call(add, (2, 40), 100) == 42
    assert inst.call(add, (0xFFFFFFFF, 0), 100) == 0xFFFFFFFF  # i32 -1 comes back unsigned
    assert inst.call(add, (0xFFFFFFFF, 2), 100) == 1
    nothing = inst.func("nothing", (), ())
    assert nothing is not None and inst.call(nothing, (), 100) is None
    inst.close()


def test_export_resolution_requires_the_exact_signature(engine, arith_wasm):
    inst = instantiate(engine, arith_wasm)
    assert inst.func("add", ("i32",), ("i32",)) is None
    assert inst.func("add", ("i32", "i32"), ()) is None
    assert inst.func("memory", (), ()) is None
    assert inst.func("missing", (), ()) is None
    inst.close()


def test_memory_base_is_stable_across_growth_and_new_pages_are_visible(engine, arith_wasm):
    inst = instantiate(engine, arith_wasm)
    base, size = inst._mem_base, inst.mem_size
    assert size == WASM_PAGE and base != 0
    grow = inst.func("grow", ("i32",), ("i32",))
    poke = inst.func("poke", ("i32", "i32"), ())
    peek = inst.func("peek", ("i32",), ("i32",))
    assert grow and poke and peek

    assert inst.call(grow, (3,), 100) == 1  # old size in pages
    inst.call(poke, (3 * WASM_PAGE + 5, 0x7A), 100)

    assert inst.read(3 * WASM_PAGE + 5, 1) == b"z"  # read after growth sees guest bytes
    assert inst._mem_base == base  # memory_may_move = False
    assert inst.mem_size == 4 * WASM_PAGE
    inst.write(4 * WASM_PAGE - 1, b"\x11")
    assert inst.call(peek, (4 * WASM_PAGE - 1,), 100) == 0x11  # host writes reach the guest
    inst.close()


def test_check_faults_exactly_at_the_memory_boundary_and_sees_growth(engine, arith_wasm):
    inst = instantiate(engine, arith_wasm)
    end = WASM_PAGE
    inst.check(end - 4, 4)
    inst.check(end, 0)
    with pytest.raises(GuestFault):
        inst.check(end - 4, 5)
    with pytest.raises(GuestFault):
        inst.read(end, 1)
    with pytest.raises(GuestFault):
        inst.write_u32(end - 2, 1)

    inst.call(inst.func("grow", ("i32",), ("i32",)), (1,), 100)  # type: ignore[arg-type]

    assert inst.mem_size == end  # the cached size is refreshed lazily ...
    inst.check(end - 4, 8)  # ... by the first check past it
    assert inst.mem_size == 2 * end
    with pytest.raises(GuestFault):
        inst.check(2 * end - 4, 8)
    inst.close()


def test_memory_limit_refuses_growth_past_the_cap(engine, arith_wasm):
    inst = instantiate(engine, arith_wasm, limit=4 * WASM_PAGE)
    grow = inst.func("grow", ("i32",), ("i32",))
    assert inst.call(grow, (3,), 100) == 1  # type: ignore[arg-type]
    assert inst.call(grow, (1,), 100) == 0xFFFFFFFF  # type: ignore[arg-type]  # -1, no trap
    assert inst.memory_pages() == 4
    inst.close()


def test_call_after_close_raises_call_failed_closed(engine, arith_wasm):
    inst = instantiate(engine, arith_wasm)
    add = inst.func("add", ("i32", "i32"), ("i32",))
    inst.close()
    inst.close()  # idempotent

    with pytest.raises(CallFailed) as err:
        inst.call(add, (1, 2), 100)  # type: ignore[arg-type]
    assert err.value.kind == "closed"


def test_stream_call_on_a_closed_vm_answers_failed_instead_of_crashing(start_vm):
    from host.wasm import Action, HeaderMap
    from tests.fixtures import wat_modules as wm

    host, vm, root = start_vm(wm.make_hostcall_sequence_module())
    ctx = vm.new_http_context(root)
    vm.close()

    assert ctx.on_request_headers(HeaderMap([(":path", "/")]), True) == Action.FAILED
    assert vm.closed
    assert vm.memory_bytes() == 0


# --------------------------------------------------------------------------- crash guards

_PRELUDE = """
import gc
from host.wasm import Action, Engine, HeaderMap, PluginHost, VirtualClock, VmConfig
from tests.fixtures import wat_modules as wm

WASM = wm.make_hostcall_sequence_module()

def request(vm, root):
    headers = HeaderMap([(":method", "GET"), (":path", "/"), (":authority", "x")])
    ctx = vm.new_http_context(root)
    assert ctx.on_request_headers(headers, True) == Action.CONTINUE
    assert headers.get("x-typical") == b"1"
    ctx.finish()
"""


def run_isolated(body: str) -> subprocess.CompletedProcess[str]:
    """Run ``body`` in a fresh interpreter: a wasmtime abort must not take pytest down."""
    script = _PRELUDE + textwrap.dedent(body) + "\nprint('survived')\n"
    return subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=90,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )


def assert_survived(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip().endswith("survived")


def test_creating_and_closing_many_vms_while_calling_them_does_not_crash():
    assert_survived(run_isolated("""
        engine = Engine(cache_dir=False)
        host = PluginHost(engine, clock=VirtualClock())
        module = host.compile(WASM)
        previous = None
        for i in range(50):
            vm = host.create_vm(module, VmConfig(name=f"vm{i}"))
            root = vm.start_plugin("r", b"")
            request(vm, root)
            if previous is not None:
                request(*previous)   # the older VM is still called while a new one lives
                previous[0].close()
            previous = (vm, root)
            del vm, root
            gc.collect()
        previous[0].close()
        gc.collect()
        assert host.vms == []
        host.close()
        engine.close()
    """))


def test_two_engines_with_their_own_vms_called_alternately_do_not_crash():
    assert_survived(run_isolated("""
        engines = [Engine(cache_dir=False), Engine(cache_dir=False)]
        hosts = [PluginHost(e, clock=VirtualClock()) for e in engines]
        vms = []
        for h in hosts:
            for _ in range(2):
                vm = h.create_vm(h.compile(WASM), VmConfig())
                vms.append((vm, vm.start_plugin("r", b"")))
        for i in range(60):
            request(*vms[i % len(vms)])
            if i % 7 == 0:
                gc.collect()
        for h in hosts:
            h.close()
        for e in engines:
            e.close()
    """))


def test_guest_call_after_vm_close_raises_instead_of_crashing():
    assert_survived(run_isolated("""
        from host.wasm.runtime import CallFailed
        engine = Engine(cache_dir=False)
        host = PluginHost(engine, clock=VirtualClock())
        vm = host.create_vm(host.compile(WASM), VmConfig())
        root = vm.start_plugin("r", b"")
        request(vm, root)
        fn = vm.cb.proxy_on_request_headers
        vm.close()
        gc.collect()
        try:
            vm.instance.call(fn, (root.id, 0, 1), 10)
        except CallFailed as e:
            assert e.kind == "closed", e
        else:
            raise AssertionError("no CallFailed")
        try:
            vm.allocate(16)
        except CallFailed as e:
            assert e.kind == "closed", e
        else:
            raise AssertionError("no CallFailed from the allocator")
        try:
            vm.new_http_context(root)
        except ValueError as e:
            assert "removed" in str(e), e
        else:
            raise AssertionError("a stream on a closed VM's removed root was accepted")
        host.close()
        engine.close()
    """))


def test_gc_between_calls_and_failed_vms_do_not_crash():
    assert_survived(run_isolated("""
        engine = Engine(cache_dir=False)
        host = PluginHost(engine, clock=VirtualClock())
        good = host.create_vm(host.compile(WASM), VmConfig())
        good_root = good.start_plugin("r", b"")
        for kind in ("unreachable", "oob", "stack_overflow", "div_zero"):
            bad = host.create_vm(
                host.compile(wm.make_trap_module("proxy_on_request_headers", kind)), VmConfig())
            bad_root = bad.start_plugin("b", b"")
            ctx = bad.new_http_context(bad_root)
            gc.collect()
            assert ctx.on_request_headers(HeaderMap([(":path", "/")]), True) == Action.FAILED
            gc.collect()
            request(good, good_root)
            bad.close()
            del bad, bad_root, ctx
            gc.collect()
            request(good, good_root)
        host.close()
        engine.close()
    """))


def test_cache_file_rewritten_in_place_does_not_crash_a_loaded_module(tmp_path):
    proc = run_isolated(f"""
        from pathlib import Path
        from host.wasm.runtime import Engine as RawEngine
        cache = Path({str(tmp_path)!r})
        RawEngine(cache_dir=cache).compile(WASM)
        engine = RawEngine(cache_dir=cache)
        host = PluginHost(engine, clock=VirtualClock())
        module = host.compile(WASM)
        assert module.from_cache
        vm = host.create_vm(module, VmConfig())
        root = vm.start_plugin("r", b"")
        for entry in cache.glob("*.cwasm"):
            entry.write_bytes(b"truncated in place")
        request(vm, root)
    """)
    assert_survived(proc)
