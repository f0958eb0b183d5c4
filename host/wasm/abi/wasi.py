"""The WASI preview-1 functions SDKs import (ABI §2.5), under both
``wasi_snapshot_preview1`` and ``wasi_unstable``.

Plugins get no filesystem and no network: stdout/stderr become plugin log lines
(fd 1 → info, fd 2 → error, one line per call, one trailing newline stripped;
lines are cut as proxy_log's are, and a callback's output beyond
``MAX_OUTPUT_PER_CALLBACK`` is counted as written but dropped, with one marker line),
the environment is only what the plugin's vmConfig.env configures, pre-opens do
not exist (``fd_prestat_get`` → BADF so wasi-libc's scan ends), ``poll_oneoff``
succeeds with no events (Go aborts otherwise). Everything else not listed here
gets a stub of the import's own signature returning NOSYS (``host.wasm.vm``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from host.wasm.abi._common import hostfn
from host.wasm.abi.logging import MAX_LOG_LINE, emit
from host.wasm.runtime import HostFunction, ProcExit
from host.wasm.types import LogLevel

if TYPE_CHECKING:
    from host.wasm.vm import PluginVM

SUCCESS = 0
BADF = 8
FAULT = 21
INVAL = 28
NOENT = 44
NOSYS = 52
NOTSUP = 58

STDOUT = 1
STDERR = 2
IOV_MAX = 1024  # as Linux; more iovecs answer INVAL
MAX_OUTPUT_PER_CALLBACK = 256 * 1024


def fd_write(vm: PluginVM, fd: int, iovs: int, iovs_len: int, ret_nwritten: int) -> int:
    if fd not in (STDOUT, STDERR):
        return BADF
    vm.check_budget()
    inst = vm.instance
    inst.check(iovs, 8 * iovs_len)
    if iovs_len > IOV_MAX:
        return INVAL
    spans = []
    total = 0
    for i in range(iovs_len):
        base = inst.read_u32(iovs + 8 * i)
        length = inst.read_u32(iovs + 8 * i + 4)
        inst.check(base, length)
        spans.append((base, length))
        total += length
    inst.check(ret_nwritten, 4)
    # What this callback may still print; what is over is reported written, not kept
    # (a guest that saw a short write would only retry).
    if vm.output_callback != vm.callback_count:
        vm.output_callback = vm.callback_count
        vm.output_left = MAX_OUTPUT_PER_CALLBACK
    keep = min(total, vm.output_left, MAX_LOG_LINE)
    parts = []
    want = keep
    for base, length in spans:
        if want <= 0:
            break
        n = min(length, want)
        parts.append(inst.read(base, n))
        want -= n
    data = b"".join(parts)
    inst.write_u32(ret_nwritten, min(total, 0xFFFFFFFF))
    if vm.output_left <= 0:
        return SUCCESS
    vm.output_left -= keep
    if keep == total and data.endswith(b"\n"):
        data = data[:-1]
    text = data.decode("utf-8", "replace" if keep == total else "ignore")
    if keep < total:
        text += f"... [truncated: {total - keep} more bytes]"
    emit(
        vm,
        LogLevel.INFO if fd == STDOUT else LogLevel.ERROR,
        text,
        "stdout" if fd == STDOUT else "stderr",
    )
    if vm.output_left <= 0:
        emit(
            vm,
            LogLevel.WARN,
            f"plugin output over {MAX_OUTPUT_PER_CALLBACK} bytes in one callback: "
            "the rest of this callback's output is dropped",
            "host",
        )
    return SUCCESS


def fd_pwrite(vm: PluginVM, fd: int, iovs: int, iovs_len: int, _offset: int, ret: int) -> int:
    return fd_write(vm, fd, iovs, iovs_len, ret)


def _env_block(vm: PluginVM) -> list[bytes]:
    return [f"{k}={v}".encode() + b"\0" for k, v in vm.config.env]


def environ_sizes_get(vm: PluginVM, ret_count: int, ret_buf_size: int) -> int:
    entries = _env_block(vm)
    vm.instance.check(ret_buf_size, 4)
    vm.instance.write_u32(ret_count, len(entries))
    vm.instance.write_u32(ret_buf_size, sum(len(e) for e in entries))
    return SUCCESS


def environ_get(vm: PluginVM, environ_ptrs: int, environ_buf: int) -> int:
    entries = _env_block(vm)
    inst = vm.instance
    inst.check(environ_ptrs, 4 * len(entries))
    inst.check(environ_buf, sum(len(e) for e in entries))
    pos = environ_buf
    for i, e in enumerate(entries):
        inst.write_u32(environ_ptrs + 4 * i, pos)
        inst.write(pos, e)
        pos += len(e)
    return SUCCESS


def args_sizes_get(vm: PluginVM, ret_argc: int, ret_buf_size: int) -> int:
    args = [a.encode() + b"\0" for a in vm.config.args]
    vm.instance.check(ret_buf_size, 4)
    vm.instance.write_u32(ret_argc, len(args))
    vm.instance.write_u32(ret_buf_size, sum(len(a) for a in args))
    return SUCCESS


def args_get(vm: PluginVM, argv: int, argv_buf: int) -> int:
    args = [a.encode() + b"\0" for a in vm.config.args]
    inst = vm.instance
    pos = argv_buf
    for i, a in enumerate(args):
        inst.write_u32(argv + 4 * i, pos)
        inst.write(pos, a)
        pos += len(a)
    return SUCCESS


def clock_time_get(vm: PluginVM, clock_id: int, _precision: int, ret_time: int) -> int:
    if clock_id == 0:
        vm.instance.write_u64(ret_time, vm.host.clock.guest_wall_ns(vm))
    elif clock_id == 1:
        vm.instance.write_u64(ret_time, vm.host.clock.guest_monotonic_ns(vm))
    else:
        return NOTSUP
    return SUCCESS


def clock_res_get(vm: PluginVM, clock_id: int, ret: int) -> int:
    if clock_id not in (0, 1):
        return NOTSUP
    vm.instance.write_u64(ret, 1)
    return SUCCESS


def random_get(vm: PluginVM, buf: int, length: int) -> int:
    if length > 65536:
        return INVAL
    if length:
        vm.instance.check(buf, length)
        vm.instance.write(buf, vm.host.clock.guest_random(vm, length))
    return SUCCESS


def proc_exit(vm: PluginVM, code: int) -> None:
    raise ProcExit(code)


def sched_yield(vm: PluginVM) -> int:
    return SUCCESS


def poll_oneoff(vm: PluginVM, _in: int, _out: int, _nsubs: int, ret_nevents: int) -> int:
    vm.instance.write_u32(ret_nevents, 0)
    return SUCCESS


def fd_prestat_get(vm: PluginVM, fd: int, ret: int) -> int:
    return BADF


def fd_fdstat_get(vm: PluginVM, fd: int, ret_stat: int) -> int:
    if fd not in (STDOUT, STDERR):
        return BADF
    stat = bytearray(24)
    stat[0] = 2  # character device
    stat[8:16] = (64).to_bytes(8, "little")  # rights: FD_WRITE
    vm.instance.write(ret_stat, bytes(stat))
    return SUCCESS


def fd_close(vm: PluginVM, fd: int) -> int:
    return SUCCESS if fd in (STDOUT, STDERR) else BADF


def fd_seek(vm: PluginVM, fd: int, _offset: int, _whence: int, ret: int) -> int:
    return BADF if fd not in (STDOUT, STDERR) else NOTSUP


def fd_read(vm: PluginVM, fd: int, iovs: int, iovs_len: int, ret: int) -> int:
    return NOSYS


def path_open(
    vm: PluginVM,
    fd: int,
    dirflags: int,
    path: int,
    path_len: int,
    oflags: int,
    rights_base: int,
    rights_inh: int,
    fdflags: int,
    ret_fd: int,
) -> int:
    return NOENT


def _both(
    name: str, params: str, results: str, impl: object, fault: int = FAULT
) -> tuple[HostFunction, ...]:
    return tuple(
        hostfn(name, params, results, impl, module=m, fault=fault)  # type: ignore[arg-type]
        for m in ("wasi_snapshot_preview1", "wasi_unstable")
    )


FUNCTIONS = (
    *_both("fd_write", "iiii", "i", fd_write),
    *_both("fd_pwrite", "iiiIi", "i", fd_pwrite),
    *_both("environ_sizes_get", "ii", "i", environ_sizes_get),
    *_both("environ_get", "ii", "i", environ_get),
    *_both("args_sizes_get", "ii", "i", args_sizes_get),
    *_both("args_get", "ii", "i", args_get),
    *_both("clock_time_get", "iIi", "i", clock_time_get),
    *_both("clock_res_get", "ii", "i", clock_res_get),
    *_both("random_get", "ii", "i", random_get),
    *_both("proc_exit", "i", "", proc_exit),
    *_both("sched_yield", "", "i", sched_yield),
    *_both("poll_oneoff", "iiii", "i", poll_oneoff),
    *_both("fd_prestat_get", "ii", "i", fd_prestat_get),
    *_both("fd_fdstat_get", "ii", "i", fd_fdstat_get),
    *_both("fd_close", "i", "i", fd_close),
    *_both("fd_seek", "iIii", "i", fd_seek),
    *_both("fd_read", "iiii", "i", fd_read),
    *_both("path_open", "iiiiiIIii", "i", path_open),
)
