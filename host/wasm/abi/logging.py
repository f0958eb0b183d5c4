"""Logging and time: proxy_log, proxy_get_log_level, clocks, tick period (ABI §2.2).

A log line is at most ``MAX_LOG_LINE`` bytes: longer ones are cut with a marker
saying how much was dropped (the log rings keep thousands of lines; 8 MiB lines
would make them hold gigabytes). Only the kept prefix is copied from the guest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from host.wasm.abi._common import BAD_ARGUMENT, OK, hostfn, read
from host.wasm.context import HttpContext, RootContext
from host.wasm.types import LogLevel

if TYPE_CHECKING:
    from host.wasm.plugin_host import LogRecord
    from host.wasm.vm import PluginVM

MAX_LOG_LINE: Final = 16 * 1024


def truncated(data: bytes, total: int) -> str:
    """``data`` (a prefix of ``total`` bytes) as a log message, marked when cut."""
    if total <= MAX_LOG_LINE:
        return data.decode("utf-8", "replace")
    text = data[:MAX_LOG_LINE].decode("utf-8", "ignore")  # no half character at the cut
    return f"{text}... [truncated: {total - MAX_LOG_LINE} more bytes]"


def emit(vm: PluginVM, level: LogLevel, message: str, source: str = "plugin") -> None:
    if level < vm.host.log_level:
        return
    if len(message) > MAX_LOG_LINE + 64:  # not yet cut (64: room for the marker)
        raw = message.encode("utf-8", "replace")
        message = truncated(raw[:MAX_LOG_LINE], len(raw))
    ctx = vm.ctx
    root = ctx.root
    request_id = ctx.request_id if isinstance(ctx, HttpContext) else ""
    vm.host.log(
        _log_record()(
            level,
            message,
            vm.name,
            root.root_id if isinstance(root, RootContext) else "",
            ctx.id,
            request_id,
            source,
        )
    )


_LEVELS: Final = tuple(LogLevel)
_RECORD: list[type[LogRecord]] = []


def _log_record() -> type[LogRecord]:
    """``plugin_host.LogRecord``, imported on first use (plugin_host imports the VM, which
    installs this module: importing it at module level would close that circle) and kept
    (an import statement per log line costs a sys.modules lookup on the hot path)."""
    if not _RECORD:
        from host.wasm.plugin_host import LogRecord

        _RECORD.append(LogRecord)
    return _RECORD[0]


def proxy_log(vm: PluginVM, level: int, ptr: int, size: int) -> int:
    if level > 5:
        return BAD_ARGUMENT
    if level < vm.host.log_level:
        # Filtered: still the guest's pointer must be valid, but nothing is copied or
        # decoded (SDKs log a lot at debug level; this is the hot path).
        if ptr + size > vm.instance.mem_size:
            vm.instance.check(ptr, size)
        return OK
    vm.check_budget()
    if size > MAX_LOG_LINE:
        vm.instance.check(ptr, size)  # the whole range must be valid; copy what is kept
        emit(vm, _LEVELS[level], truncated(read(vm, ptr, MAX_LOG_LINE), size))
        return OK
    msg = read(vm, ptr, size)
    emit(vm, _LEVELS[level], msg.decode("utf-8", "replace"))
    return OK


def proxy_get_log_level(vm: PluginVM, ret: int) -> int:
    # Never 6 ("off"): the Rust SDK reads it into an enum without that value.
    vm.instance.write_u32(ret, min(int(vm.host.log_level), 5))
    return OK


def proxy_get_current_time_nanoseconds(vm: PluginVM, ret: int) -> int:
    vm.instance.write_u64(ret, vm.host.clock.guest_wall_ns(vm))
    return OK


def proxy_set_tick_period_milliseconds(vm: PluginVM, period_ms: int) -> int:
    root = vm.ctx.root
    if isinstance(root, RootContext):
        root.tick_period_ms = period_ms
        root.next_tick_ms = vm.host.clock.now_ms() + period_ms if period_ms else None
    return OK


FUNCTIONS = (
    hostfn("proxy_log", "iii", "i", proxy_log),
    hostfn("proxy_get_log_level", "i", "i", proxy_get_log_level),
    hostfn("proxy_get_current_time_nanoseconds", "i", "i", proxy_get_current_time_nanoseconds),
    hostfn("proxy_set_tick_period_milliseconds", "i", "i", proxy_set_tick_period_milliseconds),
)
