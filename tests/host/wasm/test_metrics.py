"""Plugin metrics: proxy_define/increment/record/get_metric (ABI doc §2.2 "Metrics", §4.7)."""

from __future__ import annotations

import pytest

from host.wasm.abi import metrics as mx
from host.wasm.metrics import ENVOY_BUCKETS
from host.wasm.types import MetricType, Status
from tests.fixtures import wat_modules
from tests.host.wasm.conftest import AbiHarness

SENTINEL = 0xAAAAAAAA
COUNTER, GAUGE, HISTOGRAM = 0, 1, 2
U64 = (1 << 64) - 1


def as_u64(v: int) -> int:
    """An i64 as wasmtime hands it to the host: its unsigned 64-bit pattern."""
    return v & U64


def define(abi, mtype: int, name: bytes):
    n, r = abi.put(name), abi.put(SENTINEL.to_bytes(4, "little"))
    st = mx.proxy_define_metric(abi.vm, mtype, n, len(name), r)
    return st, abi.u32(r)


def get(abi, mid: int):
    r = abi.put(b"\xaa" * 8)
    st = mx.proxy_get_metric(abi.vm, mid, r)
    return st, abi.u64(r)


UNTOUCHED = int.from_bytes(b"\xaa" * 8, "little")


# -- define ------------------------------------------------------------------------------


@pytest.mark.parametrize("mtype", [COUNTER, GAUGE, HISTOGRAM])
def test_metric_ids_encode_their_type_in_the_low_two_bits(abi, mtype):
    ids = set()
    for i in range(3):
        st, mid = define(abi, mtype, f"m{mtype}_{i}".encode())
        assert st == Status.OK
        assert mid != 0
        assert mid & 3 == mtype
        ids.add(mid)
    assert len(ids) == 3


@pytest.mark.parametrize("mtype", [3, 4, 0xFFFFFFFF])
def test_metric_type_above_2_is_bad_argument_and_writes_no_id(abi, mtype):
    assert define(abi, mtype, b"x") == (Status.BAD_ARGUMENT, SENTINEL)
    assert abi.host.metrics.snapshot() == {}


def test_redefining_a_name_gives_a_new_id_bound_to_the_same_metric(abi):
    _, id1 = define(abi, COUNTER, b"requests")
    _, id2 = define(abi, COUNTER, b"requests")
    assert id1 != id2
    assert mx.proxy_increment_metric(abi.vm, id1, 3) == Status.OK
    assert mx.proxy_increment_metric(abi.vm, id2, 4) == Status.OK
    assert get(abi, id1) == (Status.OK, 7)
    assert get(abi, id2) == (Status.OK, 7)
    assert abi.host.metrics.snapshot() == {"requests": 7}


def test_metrics_are_shared_by_name_across_vms(abi, start_vm):
    host2, vm2, root2 = start_vm(wat_modules.make_missing_callbacks_module(), host=abi.host)
    other = AbiHarness(host2, vm2, root2)
    _, id1 = define(abi, GAUGE, b"g")
    _, id2 = define(other, GAUGE, b"g")
    mx.proxy_record_metric(abi.vm, id1, 42)
    assert get(other, id2) == (Status.OK, 42)


def test_a_same_named_metric_of_another_type_does_not_reset_the_first(abi):
    # Envoy keeps counters, gauges and histograms in separate stores: defining gauge
    # "x" must not detach a later definition of counter "x" from the existing counter.
    _, c1 = define(abi, COUNTER, b"x")
    mx.proxy_increment_metric(abi.vm, c1, 5)
    _, g = define(abi, GAUGE, b"x")
    mx.proxy_record_metric(abi.vm, g, 9)
    _, c2 = define(abi, COUNTER, b"x")
    assert get(abi, c2) == (Status.OK, 5)
    mx.proxy_increment_metric(abi.vm, c2, 1)
    assert get(abi, c1) == (Status.OK, 6)
    assert get(abi, g) == (Status.OK, 9)


# -- increment ----------------------------------------------------------------------------


def test_counter_increment_adds_positive_deltas(abi):
    _, c = define(abi, COUNTER, b"c")
    assert mx.proxy_increment_metric(abi.vm, c, 1) == Status.OK
    assert mx.proxy_increment_metric(abi.vm, c, 10) == Status.OK
    assert get(abi, c) == (Status.OK, 11)


@pytest.mark.parametrize("delta", [0, -1, -(1 << 63)])
def test_counter_increment_by_zero_or_a_negative_is_bad_argument(abi, delta):
    _, c = define(abi, COUNTER, b"c")
    mx.proxy_increment_metric(abi.vm, c, 2)
    assert mx.proxy_increment_metric(abi.vm, c, as_u64(delta)) == Status.BAD_ARGUMENT
    assert get(abi, c) == (Status.OK, 2)


def test_gauge_increment_is_signed(abi):
    _, g = define(abi, GAUGE, b"g")
    assert mx.proxy_increment_metric(abi.vm, g, 10) == Status.OK
    assert mx.proxy_increment_metric(abi.vm, g, as_u64(-3)) == Status.OK
    assert get(abi, g) == (Status.OK, 7)
    assert mx.proxy_increment_metric(abi.vm, g, as_u64(-10)) == Status.OK
    st, v = get(abi, g)
    assert st == Status.OK
    assert v == as_u64(-3)  # written as the u64 pattern of -3
    assert abi.host.metrics.snapshot()["g"] == -3


def test_histogram_increment_is_bad_argument(abi):
    _, h = define(abi, HISTOGRAM, b"h")
    assert mx.proxy_increment_metric(abi.vm, h, 1) == Status.BAD_ARGUMENT
    assert abi.host.metrics.snapshot()["h"]["count"] == 0


# -- record -------------------------------------------------------------------------------


def test_record_on_a_counter_adds(abi):
    _, c = define(abi, COUNTER, b"c")
    mx.proxy_increment_metric(abi.vm, c, 2)
    assert mx.proxy_record_metric(abi.vm, c, 5) == Status.OK
    assert get(abi, c) == (Status.OK, 7)


def test_record_on_a_gauge_sets(abi):
    _, g = define(abi, GAUGE, b"g")
    mx.proxy_increment_metric(abi.vm, g, 100)
    assert mx.proxy_record_metric(abi.vm, g, 7) == Status.OK
    assert get(abi, g) == (Status.OK, 7)


def test_record_on_a_histogram_fills_envoys_buckets_count_and_sum(abi):
    _, h = define(abi, HISTOGRAM, b"latency")
    samples = [0, 1, 3, 10, 11, 3600000, 3600001, 10**9]
    for v in samples:
        assert mx.proxy_record_metric(abi.vm, h, v) == Status.OK
    snap = abi.host.metrics.snapshot()["latency"]
    assert snap["count"] == len(samples)
    assert snap["sum"] == sum(samples)
    buckets = snap["buckets"]
    assert len(buckets) == len(ENVOY_BUCKETS) + 1
    # Upper bounds are inclusive: 0 -> 0.5, 1 -> 1, 3 -> 5, 10 -> 10, 11 -> 25,
    # 3600000 -> 3600000, anything above the last bound -> the overflow bucket.
    expected = [0] * (len(ENVOY_BUCKETS) + 1)
    for bound in (0.5, 1, 5, 10, 25, 3600000):
        expected[ENVOY_BUCKETS.index(bound)] += 1
    expected[-1] = 2
    assert buckets == expected


def test_get_on_a_histogram_is_bad_argument_and_writes_nothing(abi):
    _, h = define(abi, HISTOGRAM, b"h")
    mx.proxy_record_metric(abi.vm, h, 5)
    assert get(abi, h) == (Status.BAD_ARGUMENT, UNTOUCHED)


# -- unknown ids ---------------------------------------------------------------------------


@pytest.mark.parametrize("mid", [0, 1, 4, 0xFFFFFFFF])
def test_unknown_metric_id_is_not_found_everywhere(abi, mid):
    assert mx.proxy_increment_metric(abi.vm, mid, 1) == Status.NOT_FOUND
    assert mx.proxy_record_metric(abi.vm, mid, 1) == Status.NOT_FOUND
    assert get(abi, mid) == (Status.NOT_FOUND, UNTOUCHED)


# -- the registry snapshot -----------------------------------------------------------------


def test_registry_snapshot_lists_every_metric_by_name(abi):
    _, c = define(abi, COUNTER, b"b_counter")
    _, g = define(abi, GAUGE, b"a_gauge")
    _, h = define(abi, HISTOGRAM, b"c_hist")
    mx.proxy_increment_metric(abi.vm, c, 3)
    mx.proxy_record_metric(abi.vm, g, 8)
    mx.proxy_record_metric(abi.vm, h, 2)
    snap = abi.host.metrics.snapshot()
    assert list(snap) == ["a_gauge", "b_counter", "c_hist"]
    assert snap["a_gauge"] == 8
    assert snap["b_counter"] == 3
    assert snap["c_hist"]["count"] == 1
    assert snap["c_hist"]["sum"] == 2


def test_metric_type_enum_matches_the_abi_numbers():
    assert [m.value for m in MetricType] == [0, 1, 2]


# -- i64 arguments through the real trampoline ----------------------------------------------

# Guest functions that pass i64 constants exactly as compiled code would.
_I64_WAT = r"""
(module
  (import "env" "proxy_increment_metric" (func $inc (param i32 i64) (result i32)))
  (import "env" "proxy_record_metric" (func $rec (param i32 i64) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap
      (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "inc_minus_5") (param $id i32) (result i32)
    (call $inc (local.get $id) (i64.const -5)))
  (func (export "inc_plus_big") (param $id i32) (result i32)
    (call $inc (local.get $id) (i64.const 0x100000001)))
  (func (export "record_u64_max") (param $id i32) (result i32)
    (call $rec (local.get $id) (i64.const -1)))
)
"""


@pytest.fixture
def i64_abi(start_vm):
    host, vm, root = start_vm(wat_modules.compile_wat(_I64_WAT, "i64_metrics"))
    return AbiHarness(host, vm, root)


def guest(abi, name: str, mid: int) -> int:
    fn = abi.vm.instance.func(name, ("i32",), ("i32",))
    assert fn is not None
    return abi.vm.instance.call(fn, (mid,), 1000)


def test_negative_gauge_increment_from_the_guest_subtracts(i64_abi):
    _, g = define(i64_abi, GAUGE, b"g")
    mx.proxy_record_metric(i64_abi.vm, g, 100)
    assert guest(i64_abi, "inc_minus_5", g) == Status.OK
    assert get(i64_abi, g) == (Status.OK, 95)


def test_negative_counter_increment_from_the_guest_is_bad_argument(i64_abi):
    _, c = define(i64_abi, COUNTER, b"c")
    assert guest(i64_abi, "inc_minus_5", c) == Status.BAD_ARGUMENT
    assert get(i64_abi, c) == (Status.OK, 0)


def test_i64_increment_above_32_bits_arrives_whole(i64_abi):
    _, c = define(i64_abi, COUNTER, b"c")
    assert guest(i64_abi, "inc_plus_big", c) == Status.OK
    assert get(i64_abi, c) == (Status.OK, 0x100000001)


def test_record_of_u64_max_from_the_guest_round_trips_through_get(i64_abi):
    _, g = define(i64_abi, GAUGE, b"g")
    assert guest(i64_abi, "record_u64_max", g) == Status.OK
    assert get(i64_abi, g) == (Status.OK, U64)
