"""Metrics: define, increment, record, get (ABI §2.2 "Metrics")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from host.wasm.abi._common import BAD_ARGUMENT, NOT_FOUND, OK, hostfn, read, signed64
from host.wasm.types import MetricType

if TYPE_CHECKING:
    from host.wasm.vm import PluginVM


def proxy_define_metric(vm: PluginVM, mtype: int, name_ptr: int, name_len: int, ret_id: int) -> int:
    if mtype > 2:
        return BAD_ARGUMENT
    name = read(vm, name_ptr, name_len).decode("utf-8", "replace")
    vm.instance.check(ret_id, 4)
    mid = vm.host.metrics.define(MetricType(mtype), name)
    vm.instance.write_u32(ret_id, mid)
    return OK


def proxy_increment_metric(vm: PluginVM, metric_id: int, offset: int) -> int:
    m = vm.host.metrics.get(metric_id)
    if m is None:
        return NOT_FOUND
    delta = signed64(offset)
    if m.type == MetricType.COUNTER:
        if delta <= 0:
            return BAD_ARGUMENT  # counters only go up (Envoy)
        m.value += delta
        return OK
    if m.type == MetricType.GAUGE:
        m.value += delta
        return OK
    return BAD_ARGUMENT


def proxy_record_metric(vm: PluginVM, metric_id: int, value: int) -> int:
    m = vm.host.metrics.get(metric_id)
    if m is None:
        return NOT_FOUND
    if m.type == MetricType.COUNTER:
        m.value += value
    elif m.type == MetricType.GAUGE:
        m.value = signed64(value)
    else:
        m.record(value)
    return OK


def proxy_get_metric(vm: PluginVM, metric_id: int, ret: int) -> int:
    m = vm.host.metrics.get(metric_id)
    if m is None:
        return NOT_FOUND
    if m.type == MetricType.HISTOGRAM:
        return BAD_ARGUMENT
    vm.instance.write_u64(ret, m.value)
    return OK


FUNCTIONS = (
    hostfn("proxy_define_metric", "iiii", "i", proxy_define_metric),
    hostfn("proxy_increment_metric", "iI", "i", proxy_increment_metric),
    hostfn("proxy_record_metric", "iI", "i", proxy_record_metric),
    hostfn("proxy_get_metric", "ii", "i", proxy_get_metric),
)
