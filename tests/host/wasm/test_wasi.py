"""WASI preview-1 functions a proxy host provides (ABI doc §2.5, §4.10)."""

from __future__ import annotations

import pytest

from host.wasm import Action, HeaderMap, LogLevel
from host.wasm.abi import wasi
from host.wasm.runtime import GuestFault, ProcExit
from host.wasm.types import FailState
from tests.fixtures import wat_modules
from tests.host.wasm.conftest import AbiHarness

SENTINEL = 0xAAAAAAAA


def records(host):
    return [(r.source, r.level, r.message) for r in host.logs]


# -- the wasi_probe fixture end to end ------------------------------------------------------


def test_wasi_probe_logs_exactly_what_a_correct_host_produces(start_vm):
    host, vm, root = start_vm(wat_modules.make_wasi_probe_module(), env=(("FOO", "bar"),))
    assert records(host) == [
        ("stdout", LogLevel.INFO, "hello stdout"),
        ("stderr", LogLevel.ERROR, "hello stderr"),
        ("plugin", LogLevel.INFO, "fd_write: errno=0,0 nwritten=13,13"),
        ("plugin", LogLevel.INFO, "environ: count=1 size=8"),
        ("plugin", LogLevel.INFO, "FOO=bar"),
        ("plugin", LogLevel.INFO, "clock ok"),
        ("plugin", LogLevel.INFO, "random status=0"),
        ("plugin", LogLevel.INFO, "prestat=8"),
        ("plugin", LogLevel.INFO, "args: errno=0 argc=0 size=0"),
        ("plugin", LogLevel.INFO, "sched_yield=0"),
        ("plugin", LogLevel.INFO, "poll_oneoff=0 nevents=0"),
    ]


def test_wasi_probe_sees_no_host_environment_without_configured_variables(start_vm):
    host, vm, root = start_vm(wat_modules.make_wasi_probe_module())
    lines = [m for s, _, m in records(host) if s == "plugin"]
    i = lines.index("environ: count=0 size=0")
    assert lines[i + 1] == "clock ok"  # no KEY=VALUE lines in between


def test_wasi_probe_proc_exit_fails_the_vm_with_its_exit_code(start_vm):
    host, vm, root = start_vm(wat_modules.make_wasi_probe_module())
    ctx = vm.new_http_context(root)
    headers = HeaderMap([(f"h{i}", "v") for i in range(77)])
    assert ctx.on_request_headers(headers, True) == Action.FAILED
    assert vm.failure is not None
    assert vm.failure.state == FailState.RUNTIME_ERROR
    assert vm.failure.kind == "proc_exit"
    assert "proc_exit(3)" in vm.failure.message


# -- direct calls -----------------------------------------------------------------------------


@pytest.fixture
def wabi(start_vm):
    host, vm, root = start_vm(
        wat_modules.make_missing_callbacks_module(), env=(("A", "1"), ("LONGER", "two words"))
    )
    return AbiHarness(host, vm, root)


def _iovecs(abi, *chunks: bytes) -> int:
    table = b""
    for c in chunks:
        table += abi.put(c or b"\0").to_bytes(4, "little") + len(c).to_bytes(4, "little")
    return abi.put(table)


@pytest.mark.parametrize("fd", [0, 3, 100])
def test_fd_write_to_anything_but_stdout_or_stderr_is_badf(wabi, fd):
    iovs, ret = _iovecs(wabi, b"x"), wabi.put(SENTINEL.to_bytes(4, "little"))
    assert wasi.fd_write(wabi.vm, fd, iovs, 1, ret) == wasi.BADF == 8
    assert wabi.u32(ret) == SENTINEL
    assert [r for r in wabi.host.logs if r.source in ("stdout", "stderr")] == []


def test_fd_write_joins_iovecs_into_one_line_and_strips_one_newline(wabi):
    iovs, ret = _iovecs(wabi, b"one ", b"two\n\n"), wabi.put(SENTINEL.to_bytes(4, "little"))
    assert wasi.fd_write(wabi.vm, 2, iovs, 2, ret) == wasi.SUCCESS
    assert wabi.u32(ret) == 9
    assert records(wabi.host)[-1] == ("stderr", LogLevel.ERROR, "one two\n")


def test_fd_write_of_non_utf8_bytes_does_not_raise(wabi):
    iovs, ret = _iovecs(wabi, b"\xff\xfebad"), wabi.put(b"\0" * 4)
    assert wasi.fd_write(wabi.vm, 1, iovs, 1, ret) == wasi.SUCCESS
    assert wabi.u32(ret) == 5
    assert records(wabi.host)[-1][0] == "stdout"
    assert records(wabi.host)[-1][2].endswith("bad")


def test_fd_write_below_the_host_log_level_is_counted_but_not_logged(wabi):
    wabi.host.log_level = LogLevel.WARN
    iovs, ret = _iovecs(wabi, b"quiet\n"), wabi.put(b"\0" * 4)
    assert wasi.fd_write(wabi.vm, 1, iovs, 1, ret) == wasi.SUCCESS
    assert wabi.u32(ret) == 6
    assert [r for r in wabi.host.logs if r.source == "stdout"] == []


@pytest.mark.parametrize(
    "bad",
    ["iovs_pointer", "iovec_buffer", "iovec_wraps_2_32", "ret_nwritten", "huge_iovs_len"],
)
def test_fd_write_with_a_bad_pointer_raises_guest_fault_and_logs_nothing(wabi, bad):
    iovs = _iovecs(wabi, b"data")
    ret = wabi.put(b"\0" * 4)
    n = 1
    if bad == "iovs_pointer":
        iovs = 0xFFFFFFF0
    elif bad == "iovec_buffer":
        iovs = wabi.put((0xFFFFFF00).to_bytes(4, "little") + (16).to_bytes(4, "little"))
    elif bad == "iovec_wraps_2_32":
        # buf + len wraps to a small in-bounds address in 32-bit arithmetic
        iovs = wabi.put((0x100).to_bytes(4, "little") + (0xFFFFFF80).to_bytes(4, "little"))
    elif bad == "ret_nwritten":
        ret = 0xFFFFFFFE
    else:
        n = 0x20000000  # 8 * n == 2**32
    with pytest.raises(GuestFault):
        wasi.fd_write(wabi.vm, 1, iovs, n, ret)
    assert [r for r in wabi.host.logs if r.source == "stdout"] == []


def test_environ_functions_expose_only_configured_variables(wabi):
    count, size = wabi.put(b"\0" * 4), wabi.put(b"\0" * 4)
    assert wasi.environ_sizes_get(wabi.vm, count, size) == wasi.SUCCESS
    assert (wabi.u32(count), wabi.u32(size)) == (2, len(b"A=1\0LONGER=two words\0"))
    ptrs, buf = wabi.put(b"\0" * 8), wabi.put(b"\0" * wabi.u32(size))
    assert wasi.environ_get(wabi.vm, ptrs, buf) == wasi.SUCCESS
    assert wabi.u32(ptrs) == buf
    assert wabi.u32(ptrs + 4) == buf + 4
    assert wabi.vm.instance.read(buf, 21) == b"A=1\0LONGER=two words\0"


def test_args_are_empty_by_default(wabi):
    argc, size = wabi.put(SENTINEL.to_bytes(4, "little")), wabi.put(SENTINEL.to_bytes(4, "little"))
    assert wasi.args_sizes_get(wabi.vm, argc, size) == wasi.SUCCESS
    assert (wabi.u32(argc), wabi.u32(size)) == (0, 0)


def test_clock_time_get_reads_the_hosts_clock(wabi):
    ret = wabi.put(b"\0" * 8)
    assert wasi.clock_time_get(wabi.vm, 0, 1, ret) == wasi.SUCCESS
    assert wabi.u64(ret) == wabi.host.clock.wall_ns()
    assert wasi.clock_time_get(wabi.vm, 1, 1, ret) == wasi.SUCCESS
    assert wabi.u64(ret) == wabi.host.clock.monotonic_ns()
    wabi.host.clock.advance(5)
    assert wasi.clock_time_get(wabi.vm, 1, 1, ret) == wasi.SUCCESS
    assert wabi.u64(ret) == wabi.host.clock.monotonic_ns()


@pytest.mark.parametrize("clock", [2, 3, 0xFFFFFFFF])
def test_cpu_clocks_are_not_supported(wabi, clock):
    ret = wabi.put(b"\xaa" * 8)
    assert wasi.clock_time_get(wabi.vm, clock, 0, ret) == wasi.NOTSUP == 58
    assert wasi.clock_res_get(wabi.vm, clock, ret) == wasi.NOTSUP
    assert wabi.vm.instance.read(ret, 8) == b"\xaa" * 8


def test_clock_resolution_is_one_nanosecond(wabi):
    ret = wabi.put(b"\0" * 8)
    assert wasi.clock_res_get(wabi.vm, 1, ret) == wasi.SUCCESS
    assert wabi.u64(ret) == 1


def test_random_get_limits(wabi):
    buf = wabi.put(b"\0" * 65536)
    assert wasi.random_get(wabi.vm, buf, 65537) == wasi.INVAL == 28
    assert wabi.vm.instance.read(buf, 65536) == b"\0" * 65536
    assert wasi.random_get(wabi.vm, buf, 0) == wasi.SUCCESS
    assert wasi.random_get(wabi.vm, buf, 65536) == wasi.SUCCESS
    assert wabi.vm.instance.read(buf, 65536) != b"\0" * 65536


def test_fd_prestat_get_is_badf_so_the_preopen_scan_ends(wabi):
    ret = wabi.put(b"\0" * 8)
    for fd in (3, 4, 0):
        assert wasi.fd_prestat_get(wabi.vm, fd, ret) == wasi.BADF


def test_fd_fdstat_get_describes_stdout_as_a_writable_character_device(wabi):
    ret = wabi.put(b"\xaa" * 24)
    assert wasi.fd_fdstat_get(wabi.vm, 1, ret) == wasi.SUCCESS
    stat = wabi.vm.instance.read(ret, 24)
    assert stat[0] == 2
    assert int.from_bytes(stat[8:16], "little") == 64
    assert wasi.fd_fdstat_get(wabi.vm, 5, ret) == wasi.BADF


def test_poll_oneoff_succeeds_with_no_events(wabi):
    ret = wabi.put(SENTINEL.to_bytes(4, "little"))
    assert wasi.poll_oneoff(wabi.vm, 0, 0, 1, ret) == wasi.SUCCESS
    assert wabi.u32(ret) == 0


def test_proc_exit_raises_proc_exit_with_its_code(wabi):
    with pytest.raises(ProcExit) as e:
        wasi.proc_exit(wabi.vm, 42)
    assert e.value.code == 42


# -- the wasi_unstable module name ---------------------------------------------------------

_UNSTABLE_WAT = r"""
(module
  (import "wasi_unstable" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_unstable" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_unstable" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_unstable" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "hi from wasi_unstable\n")
  (global $heap (mut i32) (i32.const 65536))
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap
      (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "write_hello") (result i32)
    (i32.store (i32.const 512) (i32.const 1024))
    (i32.store (i32.const 516) (i32.const 22))
    (call $fd_write (i32.const 1) (i32.const 512) (i32.const 1) (i32.const 256)))
  (func (export "nwritten") (result i32) (i32.load (i32.const 256)))
  (func (export "write_bad_iovs") (result i32)
    (call $fd_write (i32.const 1) (i32.const 0xFFFFFFF0) (i32.const 1) (i32.const 256)))
  (func (export "write_wrapping_iovec") (result i32)
    (i32.store (i32.const 520) (i32.const 0x100))
    (i32.store (i32.const 524) (i32.const 0xFFFFFF80))
    (call $fd_write (i32.const 1) (i32.const 520) (i32.const 1) (i32.const 256)))
  (func (export "write_fd3") (result i32)
    (call $fd_write (i32.const 3) (i32.const 512) (i32.const 1) (i32.const 256)))
  (func (export "random_too_big") (result i32)
    (call $random_get (i32.const 4096) (i32.const 65537)))
  (func (export "random_bad_buffer") (result i32)
    (call $random_get (i32.const 0xFFFFFF00) (i32.const 512)))
  (func (export "clock_cpu") (result i32)
    (call $clock (i32.const 2) (i64.const 0) (i32.const 256)))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $proc_exit (i32.const 7))
    (unreachable))
)
"""


@pytest.fixture
def unstable(start_vm):
    host, vm, root = start_vm(wat_modules.compile_wat(_UNSTABLE_WAT, "wasi_unstable_probe"))
    return AbiHarness(host, vm, root)


def guest(abi, name):
    fn = abi.vm.instance.func(name, (), ("i32",))
    assert fn is not None, name
    return abi.vm.instance.call(fn, (), 1000)


def test_wasi_unstable_fd_write_logs_through_the_host(unstable):
    assert unstable.vm.stubbed_imports == []
    assert guest(unstable, "write_hello") == wasi.SUCCESS
    assert guest(unstable, "nwritten") == 22
    assert records(unstable.host)[-1] == ("stdout", LogLevel.INFO, "hi from wasi_unstable")


@pytest.mark.parametrize(
    ("export", "errno"),
    [
        ("write_bad_iovs", wasi.FAULT),
        ("write_wrapping_iovec", wasi.FAULT),
        ("write_fd3", wasi.BADF),
        ("random_too_big", wasi.INVAL),
        ("random_bad_buffer", wasi.FAULT),
        ("clock_cpu", wasi.NOTSUP),
    ],
)
def test_wasi_unstable_errors_reach_the_guest_as_errno(unstable, export, errno):
    assert guest(unstable, export) == errno
    assert unstable.vm.failure is None
    assert [r for r in unstable.host.logs if r.source == "stdout"] == []


def test_wasi_unstable_proc_exit_fails_the_vm(unstable):
    ctx = unstable.vm.new_http_context(unstable.root)
    assert ctx.on_request_headers(HeaderMap([(":path", "/")]), True) == Action.FAILED
    assert unstable.vm.failure.kind == "proc_exit"
    assert "proc_exit(7)" in unstable.vm.failure.message
