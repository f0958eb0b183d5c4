"""Benchmark: per-request cost of the Proxy-Wasm host against the raw-call floor.

Prints, in one run on this machine:

1. the per-request host overhead of a typical header plugin (request: read 2
   headers, add 1, log; response: add 1 header; every context created and
   deleted), through the full host (``PluginVM`` + ``HttpContext``);
2. the raw-call floor for the same call sequence: the same module driven by bare
   ``wasmtime_func_call_unchecked`` calls with minimal raw host callbacks (a dict
   lookup, the guest allocator, a list append) and nothing else, through the crossing
   the host uses (the C one when it is built, else ctypes; the ctypes floor is printed
   too);
3. their ratio (target ≤ 1.3), plus the same plugin through wasmtime-py's
   convenient API (``Func.__call__`` + ``Linker.define_func``) for reference;
4. the AssemblyScript-SDK build of the typical plugin through the full host;
5. the proxy's plugin chain (``ChainRun``) over the full host, in process and without
   sockets: what the chain's per-request bookkeeping adds to the host (contexts, hop
   records, stats, the inspector ring), with nobody watching the inspector and watched;
6. a cold compile and a cached load of a ~1 MB module (target < 50 ms cached).

Usage: ``.venv/bin/python bench/bench_host.py [--seconds S]``; ``--count N --only
host|floor|floor-ctypes|chain`` runs one of them N times untimed (for
``bench/instructions.py --host``).
Each figure is the median of several timed rounds; the machine is small and noisy, so
compare the ratios, not the absolute numbers, across runs.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import wasmtime

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from host.resources import demo_plugin  # noqa: E402
from host.wasm import Engine, HeaderMap, LogLevel, PluginHost, VmConfig  # noqa: E402
from host.wasm import runtime as rt  # noqa: E402
from tests.fixtures import wat_modules  # noqa: E402

REQ_HEADERS = [
    (b":method", b"GET"),
    (b":path", b"/bench"),
    (b":authority", b"localhost"),
    (b"user-agent", b"bench/1.0"),
    (b"accept", b"*/*"),
]
RESP_HEADERS = [(b":status", b"200"), (b"content-length", b"2")]


def timed(fn: Callable[[], None], seconds: float, rounds: int = 7) -> float:
    """Median µs per call of ``fn`` over ``rounds`` rounds of ~seconds/rounds each."""
    for _ in range(200):
        fn()
    n = 200
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    per = (time.perf_counter() - t0) / n
    batch = max(50, int(seconds / rounds / max(per, 1e-7)))
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter() - t0) / batch * 1e6)
    return statistics.median(samples)


# -- 1. the full host -------------------------------------------------------------------


def full_host(
    wasm: bytes, engine: Engine, root_id: str = "t"
) -> tuple[Callable[[], None], PluginHost]:
    host = PluginHost(engine, log_level=LogLevel.INFO)
    host.logs = __import__("collections").deque(maxlen=64)
    vm = host.create_vm(host.compile(wasm), VmConfig(name=root_id))
    root = vm.start_plugin(root_id, b"")

    def one() -> None:
        ctx = vm.new_http_context(root)
        ctx.on_request_headers(HeaderMap.from_pairs(REQ_HEADERS), True)
        ctx.on_response_headers(HeaderMap.from_pairs(RESP_HEADERS), True)
        ctx.finish()

    one()
    assert not vm.failed, vm.failure
    return one, host


# -- 2. the raw-call floor --------------------------------------------------------------

_CB = rt._RAW_CALLBACK


_ONE = ctypes.c_size_t(1)


class _FloorBase:
    """What both floors share: the engine (no epoch interruption), the module with three
    host functions, its memory as one view, the exports' addresses, the call sequence."""

    def __init__(self, wasm: bytes) -> None:
        cfg = wasmtime.Config()
        cfg.epoch_interruption = False
        cfg.memory_may_move = False
        self.engine = wasmtime.Engine(cfg)
        self.store = wasmtime.Store(self.engine)
        self.linker = wasmtime.Linker(self.engine)
        self.module = wasmtime.Module(self.engine, wasm)
        self.headers: dict[int, list[tuple[bytes, bytes]]] = {}
        self.logs: list[bytes] = []
        self.keep: list[object] = []
        self.ctx = ctypes.cast(self.store._context(), ctypes.c_void_p).value
        self.laddr = ctypes.cast(self.linker.ptr(), ctypes.c_void_p).value
        self.define_host()
        self.instance = self.linker.instantiate(self.store, self.module)
        ex = self.instance.exports(self.store)
        mem = ex["memory"]
        base = ctypes.cast(mem.data_ptr(self.store), ctypes.c_void_p).value
        size = mem.data_len(self.store)
        # memory_may_move=False and this module never grows past its initial pages
        # in the loop, so one view stays valid (the floor skips the host's checks).
        self.mem = memoryview((ctypes.c_ubyte * size).from_address(base)).cast("B")

        def addr(name: str) -> int:
            f = ex[name]
            self.keep.append(f)
            return ctypes.addressof(f._func)

        self.malloc_addr = addr("malloc")
        self.fns = {
            n: addr(n)
            for n in (
                "proxy_on_context_create",
                "proxy_on_request_headers",
                "proxy_on_response_headers",
                "proxy_on_done",
                "proxy_on_log",
                "proxy_on_delete",
                "proxy_on_vm_start",
                "proxy_on_configure",
            )
        }
        self.buf = (ctypes.c_uint32 * 64)()
        self.buf_addr = ctypes.addressof(self.buf)
        self.abuf = (ctypes.c_uint32 * 16)()
        self.abuf_addr = ctypes.addressof(self.abuf)
        self.trap = ctypes.c_void_p()
        self.trap_addr = ctypes.addressof(self.trap)
        self.prepare()
        self.call("proxy_on_context_create", 1, 0)
        self.call("proxy_on_vm_start", 1, 0)
        self.call("proxy_on_configure", 1, 0)

    def functype(self, nparams: int) -> int:
        """A FuncType of ``nparams`` i32 to one i32, kept alive; its address."""
        i32 = wasmtime.ValType.i32
        ft = wasmtime.FuncType([i32()] * nparams, [i32()])
        self.keep.append(ft)
        return int(ctypes.cast(ft.ptr(), ctypes.c_void_p).value or 0)

    def define_host(self) -> None:
        raise NotImplementedError

    def prepare(self) -> None:
        """After instantiation, before the first call."""

    def call(self, name: str, *args: int) -> int:
        raise NotImplementedError

    def one(self) -> None:
        call = self.call
        self.headers[0] = list(REQ_HEADERS)
        self.headers[2] = list(RESP_HEADERS)
        call("proxy_on_context_create", 2, 1)
        call("proxy_on_request_headers", 2, len(REQ_HEADERS), 1)
        call("proxy_on_response_headers", 2, len(RESP_HEADERS), 1)
        call("proxy_on_done", 2)
        call("proxy_on_log", 2)
        call("proxy_on_delete", 2)


class Floor(_FloorBase):
    """The same call sequence with nothing but raw ctypes calls and minimal host
    callbacks."""

    def define_host(self) -> None:
        def define(name: str, nparams: int, fn: Callable[..., int]) -> None:
            cb = _CB(fn)
            self.keep.append(cb)
            err = rt._DEFINE_UNCHECKED(
                self.laddr,
                b"env",
                3,
                name.encode(),
                len(name),
                self.functype(nparams),
                cb,
                None,
                None,
            )
            assert not err

        def get_value(env: int, caller: int, p: ctypes.Array, n: int) -> int:  # type: ignore[type-arg]
            mem = self.mem
            kp, kl = p[4], p[8]
            key = bytes(mem[kp : kp + kl])
            for k, v in self.headers[p[0]]:  # noqa: B007 - v is the match after break
                if k == key:
                    break
            else:
                p[0] = 1
                return 0
            buf = self.abuf
            buf[0] = len(v)
            rt._CALL_PREPARED(self.c_ctx, self.c_malloc, self.c_abuf, _ONE, self.c_trap)
            ptr = buf[0]
            mem[ptr : ptr + len(v)] = v
            rp, rs = p[12], p[16]
            mem[rp : rp + 4] = ptr.to_bytes(4, "little")
            mem[rs : rs + 4] = len(v).to_bytes(4, "little")
            p[0] = 0
            return 0

        def add_value(env: int, caller: int, p: ctypes.Array, n: int) -> int:  # type: ignore[type-arg]
            mem = self.mem
            kp, kl, vp, vl = p[4], p[8], p[12], p[16]
            self.headers[p[0]].append((bytes(mem[kp : kp + kl]), bytes(mem[vp : vp + vl])))
            p[0] = 0
            return 0

        def log(env: int, caller: int, p: ctypes.Array, n: int) -> int:  # type: ignore[type-arg]
            mem = self.mem
            self.logs.append(bytes(mem[p[4] : p[4] + p[8]]))
            if len(self.logs) > 64:
                self.logs.clear()
            p[0] = 0
            return 0

        define("proxy_get_header_map_value", 5, get_value)
        define("proxy_add_header_map_value", 5, add_value)
        define("proxy_log", 3, log)

    def prepare(self) -> None:
        # every call argument a ctypes object made once, as the host passed them through
        # ctypes (a plain int would be converted by ctypes on each call): the floor keeps
        # the cheapest call convention, so a host cannot beat it by calling better
        self.c_ctx = ctypes.c_void_p(self.ctx)
        self.c_buf = ctypes.c_void_p(self.buf_addr)
        self.c_abuf = ctypes.c_void_p(self.abuf_addr)
        self.c_trap = ctypes.c_void_p(self.trap_addr)
        self.c_malloc = ctypes.c_void_p(self.malloc_addr)
        self.c_fns = {n: ctypes.c_void_p(a) for n, a in self.fns.items()}
        self.c_sizes = [ctypes.c_size_t(max(k, 1)) for k in range(8)]

    def call(self, name: str, *args: int) -> int:
        b = self.buf
        for i, a in enumerate(args):
            b[4 * i] = a
        err = rt._CALL_PREPARED(
            self.c_ctx, self.c_fns[name], self.c_buf, self.c_sizes[len(args)], self.c_trap
        )
        assert not err and not self.trap.value
        return int(b[0])


class CFloor(_FloorBase):
    """The same floor through the C crossing (``host/wasm/_crossing.c``), as the compiled
    host now calls: bare guest calls, and host callbacks that get their i32 arguments as
    ints and return the status. The callbacks are the ctypes floor's, minus the array
    reads; the guest allocator is called without handing over the GIL, as the host does."""

    def define_host(self) -> None:
        c = rt._crossing
        assert c is not None
        self.c = c

        def on_error(name: str, exc: BaseException) -> int:
            raise AssertionError(f"{name}: {exc!r}")

        def define(name: str, nparams: int, fn: Callable[..., int]) -> None:
            err = c.define(
                self.laddr,
                b"env",
                name.encode(),
                self.functype(nparams),
                fn,
                None,
                on_error,
                name,
                rt.GuestFault,
                6,
                nparams,
                True,
            )
            assert not err

        def get_value(_o: object, mtype: int, kp: int, kl: int, rp: int, rs: int) -> int:
            mem = self.mem
            key = bytes(mem[kp : kp + kl])
            for k, v in self.headers[mtype]:  # noqa: B007 - v is the match after break
                if k == key:
                    break
            else:
                return 1
            ptr = c.call(
                self.ctx, self.malloc_addr, self.abuf_addr, 1, self.trap_addr, (len(v),), 0, True
            )
            mem[ptr : ptr + len(v)] = v
            mem[rp : rp + 4] = ptr.to_bytes(4, "little")
            mem[rs : rs + 4] = len(v).to_bytes(4, "little")
            return 0

        def add_value(_o: object, mtype: int, kp: int, kl: int, vp: int, vl: int) -> int:
            mem = self.mem
            self.headers[mtype].append((bytes(mem[kp : kp + kl]), bytes(mem[vp : vp + vl])))
            return 0

        def log(_o: object, level: int, p: int, n: int) -> int:
            self.logs.append(bytes(self.mem[p : p + n]))
            if len(self.logs) > 64:
                self.logs.clear()
            return 0

        define("proxy_get_header_map_value", 5, get_value)
        define("proxy_add_header_map_value", 5, add_value)
        define("proxy_log", 3, log)

    def call(self, name: str, *args: int) -> int:
        r = self.c.call(
            self.ctx,
            self.fns[name],
            self.buf_addr,
            max(len(args), 1),
            self.trap_addr,
            args,
            0,
            False,
        )
        assert not isinstance(r, tuple), r
        return int(r)


def floor_for(wat: bytes) -> Floor | CFloor:
    """The floor of the crossing the host uses: C when it is built, else ctypes."""
    return CFloor(wat) if rt.crossing() == "C" else Floor(wat)


# -- 3. the convenient API -------------------------------------------------------------


class Convenient:
    """The same sequence through Func.__call__, Linker.define_func and Memory.read/write."""

    def __init__(self, wasm: bytes) -> None:
        self.engine = wasmtime.Engine()
        self.store = wasmtime.Store(self.engine)
        linker = wasmtime.Linker(self.engine)
        i32 = wasmtime.ValType.i32
        self.headers: dict[int, list[tuple[bytes, bytes]]] = {}

        def get_value(caller: wasmtime.Caller, mt: int, kp: int, kl: int, rp: int, rs: int) -> int:
            mem = caller["memory"]
            key = mem.read(caller, kp, kp + kl)
            for k, v in self.headers[mt]:  # noqa: B007 - v is the match after break
                if k == key:
                    break
            else:
                return 1
            ptr = caller["malloc"](caller, len(v))
            mem.write(caller, v, ptr)
            mem.write(caller, ptr.to_bytes(4, "little"), rp)
            mem.write(caller, len(v).to_bytes(4, "little"), rs)
            return 0

        def add_value(caller: wasmtime.Caller, mt: int, kp: int, kl: int, vp: int, vl: int) -> int:
            mem = caller["memory"]
            self.headers[mt].append((mem.read(caller, kp, kp + kl), mem.read(caller, vp, vp + vl)))
            return 0

        def log(caller: wasmtime.Caller, lvl: int, p: int, n: int) -> int:
            caller["memory"].read(caller, p, p + n)
            return 0

        ft5 = wasmtime.FuncType([i32()] * 5, [i32()])
        linker.define_func("env", "proxy_get_header_map_value", ft5, get_value, access_caller=True)
        linker.define_func("env", "proxy_add_header_map_value", ft5, add_value, access_caller=True)
        linker.define_func(
            "env", "proxy_log", wasmtime.FuncType([i32()] * 3, [i32()]), log, access_caller=True
        )
        inst = linker.instantiate(self.store, wasmtime.Module(self.engine, wasm))
        self.ex = inst.exports(self.store)
        self.ex["proxy_on_context_create"](self.store, 1, 0)

    def one(self) -> None:
        s, ex = self.store, self.ex
        self.headers[0] = list(REQ_HEADERS)
        self.headers[2] = list(RESP_HEADERS)
        ex["proxy_on_context_create"](s, 2, 1)
        ex["proxy_on_request_headers"](s, 2, len(REQ_HEADERS), 1)
        ex["proxy_on_response_headers"](s, 2, len(RESP_HEADERS), 1)
        ex["proxy_on_done"](s, 2)
        ex["proxy_on_log"](s, 2)
        ex["proxy_on_delete"](s, 2)


# -- 5. the proxy chain ----------------------------------------------------------------


def chain_run(wasm: bytes, engine: Engine) -> tuple[Callable[[], None], Callable[[bool], None]]:
    """One request through ``ChainRun`` (headers both ways, a response body, complete) with
    the plugin applied by a real ``PluginManager``; and a switch for the inspector's watch."""
    import asyncio
    import collections

    from host.proxy.chain import ChainRun
    from host.proxy.config import parse_config
    from host.proxy.plugins import PluginManager
    from host.proxy.stats import StatsStore
    from host.proxy.stream import ExchangeInfo

    d = tempfile.mkdtemp()
    path = Path(d) / "typical.wasm"
    path.write_bytes(wasm)
    cfg = parse_config(
        "apiVersion: wasmdesk.dev/v1alpha1\nkind: Proxy\nspec:\n  listen: 127.0.0.1:1\n---\n"
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\n"
        f"metadata: {{name: typical}}\nspec:\n  url: {path}\n"
    )
    loop = asyncio.new_event_loop()
    host = PluginHost(engine, log_level=LogLevel.INFO)
    host.logs = collections.deque(maxlen=64)
    m = PluginManager(loop, host, StatsStore())
    errors = loop.run_until_complete(m.apply(cfg))
    assert not errors, errors

    def one() -> None:
        run = ChainRun(m, ExchangeInfo(("127.0.0.1", 50000), ("127.0.0.1", 10000), 1))
        run.request_headers(HeaderMap.from_pairs(REQ_HEADERS), True)
        run.response_headers(HeaderMap.from_pairs(RESP_HEADERS), False)
        run.response_data(b"ok\n", True)
        run.complete()

    def watch(on: bool) -> None:
        if on:
            m.inspector.watch()
        else:
            m.inspector.unwatch()

    one()
    return one, watch


# -- 6. module cache ---------------------------------------------------------------------


def big_module(target_bytes: int = 1 << 20) -> bytes:
    """A valid ~1 MB Proxy-Wasm module: many small functions (compile time scales)."""
    n = target_bytes // 52
    funcs = []
    for i in range(n):
        funcs.append(
            f"(func $f{i} (param i32) (result i32) local.get 0 i32.const {i} i32.add "
            f"i32.const 3 i32.mul i32.const {i * 7 % 1000} i32.xor local.get 0 i32.const 5 "
            f"i32.shl i32.add local.get 0 i32.const 11 i32.rotl i32.sub i32.const {i} "
            f"i32.and local.get 0 i32.add i32.const 17 i32.mul)"
        )
    wat = (
        '(module (memory (export "memory") 1)'
        ' (func (export "proxy_abi_version_0_2_1"))'
        ' (func (export "malloc") (param i32) (result i32) i32.const 1024)' + "".join(funcs) + ")"
    )
    return bytes(wasmtime.wat2wasm(wat))


def bench_cache() -> tuple[int, float, float]:
    wasm = big_module()
    with tempfile.TemporaryDirectory() as d:
        e1 = Engine(cache_dir=Path(d))
        t0 = time.perf_counter()
        m1 = e1.compile(wasm)
        cold = (time.perf_counter() - t0) * 1000
        assert not m1.from_cache
        e1.close()
        e2 = Engine(cache_dir=Path(d))  # a new process would start like this
        t0 = time.perf_counter()
        m2 = e2.compile(wasm)
        warm = (time.perf_counter() - t0) * 1000
        assert m2.from_cache
        e2.close()
    return len(wasm), cold, warm


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    ap.add_argument(
        "--count",
        type=int,
        help="untimed: run only --only's request this many times (after 200 to warm up), "
        "for an instruction count (bench/instructions.py --host)",
    )
    ap.add_argument("--only", choices=("host", "floor", "floor-ctypes", "chain"), default="host")
    args = ap.parse_args()
    wat = wat_modules.make_hostcall_sequence_module()
    engine = Engine(cache_dir=False)
    if args.count is not None:
        if args.only == "host":
            fn = full_host(wat, engine)[0]
        elif args.only == "floor":
            fn = floor_for(wat).one
        elif args.only == "floor-ctypes":
            fn = Floor(wat).one
        else:
            fn = chain_run(wat, engine)[0]
        for _ in range(200 + args.count):
            fn()
        return 0

    host_one, _ = full_host(wat, engine)
    floor = floor_for(wat)
    ctypes_floor = Floor(wat)
    conv = Convenient(wat)
    # Interleave the measurements so machine noise hits each alike.
    host_us, floor_us, ctf_us, conv_us = [], [], [], []
    for _ in range(3):
        floor_us.append(timed(floor.one, args.seconds / 3))
        host_us.append(timed(host_one, args.seconds / 3))
        ctf_us.append(timed(ctypes_floor.one, args.seconds / 6, rounds=3))
        conv_us.append(timed(conv.one, args.seconds / 6, rounds=3))
    h, f, c = statistics.median(host_us), statistics.median(floor_us), statistics.median(conv_us)
    ctf = statistics.median(ctf_us)
    as_one, _ = full_host(demo_plugin("typical").read_bytes(), engine, "typical")
    as_us = timed(as_one, args.seconds / 2)
    chain_one, watch = chain_run(wat, engine)
    quiet_us, watched_us, host2_us = [], [], []
    for _ in range(3):
        quiet_us.append(timed(chain_one, args.seconds / 6, rounds=3))
        watch(True)
        watched_us.append(timed(chain_one, args.seconds / 6, rounds=3))
        watch(False)
        host2_us.append(timed(host_one, args.seconds / 6, rounds=3))
    cq, cw = statistics.median(quiet_us), statistics.median(watched_us)
    h2 = statistics.median(host2_us)
    size, cold, warm = bench_cache()
    engine.close()

    print("Proxy-Wasm host: typical header plugin, per request (4 stream callbacks + create/")
    print("done/log/delete; 2 header reads, 1 add, 1 log, 1 response add)")
    print(f"  full host (PluginVM + HttpContext)      {h:8.1f} µs")
    print(f"  raw-call floor, same call sequence      {f:8.1f} µs   (crossing: {rt.crossing()})")
    print(f"  ratio host / floor                      {h / f:8.2f}   (target <= 1.3)")
    print(f"  the floor through ctypes                {ctf:8.1f} µs")
    print(f"  convenient wasmtime-py API, same calls  {c:8.1f} µs   ({c / f:.1f}x the floor)")
    print(f"  AssemblyScript SDK build, full host     {as_us:8.1f} µs")
    print("Proxy chain over the full host (ChainRun, in process, no sockets), per request")
    print(f"  nobody watching the inspector           {cq:8.1f} µs   (chain adds {cq - h2:.1f} µs)")
    print(f"  inspector watched (per-hop detail)      {cw:8.1f} µs   (chain adds {cw - h2:.1f} µs)")
    print("Compiled-module cache")
    print(f"  module size                             {size / 1e6:8.2f} MB")
    print(f"  cold compile                            {cold:8.1f} ms")
    print(f"  second load (on-disk cache)             {warm:8.1f} ms   (target < 50 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
