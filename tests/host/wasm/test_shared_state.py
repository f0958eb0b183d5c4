"""Shared data with CAS and shared queues, scoped by vm_id (ABI doc §2.2, §6.5, §6.7)."""

from __future__ import annotations

import pytest

from host.wasm.abi import shared_state as ss
from host.wasm.types import Status
from tests.fixtures import wat_modules
from tests.host.wasm.conftest import AbiHarness

SENTINEL = 0xAAAAAAAA

# A receiver: proxy_on_queue_ready dequeues once and logs "item: <bytes>", or
# "queue_ready: empty" (EMPTY) / "queue_ready: status=other" (anything else).
_QUEUE_RECEIVER_WAT = r"""
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_dequeue_shared_queue" (func $deq (param i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "queue_ready: empty")
  (data (i32.const 1088) "queue_ready: status=other")
  (data (i32.const 1152) "item: ")
  (global $heap (mut i32) (i32.const 65536))
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap
      (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_queue_ready") (param $root i32) (param $token i32)
    (local $s i32) (local $n i32)
    (local.set $s (call $deq (local.get $token) (i32.const 256) (i32.const 260)))
    (if (i32.eqz (local.get $s))
      (then
        (local.set $n (i32.load (i32.const 260)))
        (memory.copy (i32.const 16384) (i32.const 1152) (i32.const 6))
        (memory.copy (i32.const 16390) (i32.load (i32.const 256)) (local.get $n))
        (drop (call $log (i32.const 2) (i32.const 16384) (i32.add (i32.const 6) (local.get $n)))))
      (else
        (if (i32.eq (local.get $s) (i32.const 7))
          (then (drop (call $log (i32.const 2) (i32.const 1024) (i32.const 18))))
          (else (drop (call $log (i32.const 2) (i32.const 1088) (i32.const 25))))))))
)
"""


@pytest.fixture(scope="module")
def receiver_wasm():
    return wat_modules.compile_wat(_QUEUE_RECEIVER_WAT, "queue_receiver")


@pytest.fixture
def vms(start_vm, make_host, receiver_wasm):
    """Three VMs on one host: a and a2 share vm_id "shared", b has vm_id "other"."""
    host = make_host()
    out = {}
    for name, vm_id in (("a", "shared"), ("a2", "shared"), ("b", "other")):
        h, vm, root = start_vm(receiver_wasm, root_id=f"root-{name}", host=host, vm_id=vm_id)
        out[name] = AbiHarness(h, vm, root)
    return out


def _u32_slot(abi):
    return abi.put(SENTINEL.to_bytes(4, "little"))


def sget(abi, key: bytes):
    k = abi.put(key)
    rp, rs, rc = _u32_slot(abi), _u32_slot(abi), _u32_slot(abi)
    with abi.on(abi.root):
        st = ss.proxy_get_shared_data(abi.vm, k, len(key), rp, rs, rc)
    if st != Status.OK:
        assert (abi.u32(rp), abi.u32(rs), abi.u32(rc)) == (SENTINEL,) * 3
        return st, None, None
    return st, abi.returned(rp, rs), abi.u32(rc)


def sset(abi, key: bytes, value: bytes, cas: int):
    k, v = abi.put(key), abi.put(value or b"\0")
    with abi.on(abi.root):
        return ss.proxy_set_shared_data(abi.vm, k, len(key), v, len(value), cas)


def register(abi, name: bytes):
    n, rt = abi.put(name), _u32_slot(abi)
    with abi.on(abi.root):
        st = ss.proxy_register_shared_queue(abi.vm, n, len(name), rt)
    return st, abi.u32(rt)


def resolve(abi, vm_id: bytes, name: bytes):
    v, n, rt = abi.put(vm_id or b"\0"), abi.put(name), _u32_slot(abi)
    with abi.on(abi.root):
        st = ss.proxy_resolve_shared_queue(abi.vm, v, len(vm_id), n, len(name), rt)
    return st, (abi.u32(rt) if abi.u32(rt) != SENTINEL else None)


def enqueue(abi, token: int, value: bytes):
    v = abi.put(value or b"\0")
    with abi.on(abi.root):
        return ss.proxy_enqueue_shared_queue(abi.vm, token, v, len(value))


def dequeue(abi, token: int):
    rp, rs = _u32_slot(abi), _u32_slot(abi)
    with abi.on(abi.root):
        st = ss.proxy_dequeue_shared_queue(abi.vm, token, rp, rs)
    if (abi.u32(rp), abi.u32(rs)) == (SENTINEL, SENTINEL):
        return st, None
    return st, abi.returned(rp, rs)


def plugin_lines(host):
    return [(r.root_id, r.context_id, r.message) for r in host.logs if r.source == "plugin"]


# -- shared data and CAS (§6.5) ----------------------------------------------------------


def test_cas_counter_starts_at_1_and_is_bumped_by_every_successful_set(vms):
    a = vms["a"]
    assert sset(a, b"k1", b"v1", 0) == Status.OK
    assert sget(a, b"k1") == (Status.OK, b"v1", 1)
    assert sset(a, b"k2", b"v2", 0) == Status.OK
    assert sget(a, b"k2") == (Status.OK, b"v2", 2)
    assert sset(a, b"k1", b"v1b", 0) == Status.OK
    assert sget(a, b"k1") == (Status.OK, b"v1b", 3)


def test_cas_0_overwrites_unconditionally(vms):
    a = vms["a"]
    sset(a, b"k", b"one", 0)
    sset(a, b"k", b"two", 0)
    assert sget(a, b"k") == (Status.OK, b"two", 2)


def test_matching_cas_succeeds_and_yields_a_new_cas(vms):
    a = vms["a"]
    sset(a, b"k", b"one", 0)
    _, _, cas = sget(a, b"k")
    assert sset(a, b"k", b"two", cas) == Status.OK
    assert sget(a, b"k") == (Status.OK, b"two", cas + 1)


def test_stale_cas_is_a_mismatch_and_leaves_value_and_cas_unchanged(vms):
    a = vms["a"]
    sset(a, b"k", b"one", 0)
    _, _, cas = sget(a, b"k")
    sset(a, b"k", b"two", cas)
    assert sset(a, b"k", b"three", cas) == Status.CAS_MISMATCH
    assert sget(a, b"k") == (Status.OK, b"two", cas + 1)
    assert sset(a, b"k", b"four", 12345) == Status.CAS_MISMATCH
    assert sget(a, b"k") == (Status.OK, b"two", cas + 1)


def test_non_zero_cas_on_a_missing_key_creates_it(vms):
    a = vms["a"]
    assert sset(a, b"fresh", b"v", 777) == Status.OK
    assert sget(a, b"fresh") == (Status.OK, b"v", 1)


def test_missing_key_is_not_found_and_no_slot_is_written(vms):
    assert sget(vms["a"], b"absent") == (Status.NOT_FOUND, None, None)


def test_empty_value_is_stored_and_read_back_as_ok_empty(vms):
    a = vms["a"]
    assert sset(a, b"e", b"", 0) == Status.OK
    assert sget(a, b"e") == (Status.OK, b"", 1)


def test_keys_and_values_are_raw_bytes(vms):
    a = vms["a"]
    assert sset(a, b"\xff\x00k", b"\x00\x01\xfe", 0) == Status.OK
    assert sget(a, b"\xff\x00k")[:2] == (Status.OK, b"\x00\x01\xfe")


def test_shared_data_is_scoped_by_vm_id(vms):
    a, a2, b = vms["a"], vms["a2"], vms["b"]
    assert sset(a, b"k", b"from-a", 0) == Status.OK
    assert sget(a2, b"k") == (Status.OK, b"from-a", 1)
    assert sget(b, b"k") == (Status.NOT_FOUND, None, None)
    assert sset(b, b"k", b"from-b", 0) == Status.OK
    assert sget(b, b"k") == (Status.OK, b"from-b", 2)  # counter is process-wide
    assert sget(a, b"k") == (Status.OK, b"from-a", 1)


def test_shared_data_survives_until_the_last_vm_of_its_vm_id_closes(vms):
    a, a2 = vms["a"], vms["a2"]
    host = a.host
    sset(a, b"k", b"v", 0)
    a.vm.close()
    assert sget(a2, b"k")[:2] == (Status.OK, b"v")
    a2.vm.close()
    assert host.shared_data.get("shared", b"k") is None


# -- shared queues (§6.7) ---------------------------------------------------------------


def test_register_returns_a_non_zero_token_and_the_same_one_on_re_register(vms):
    a = vms["a"]
    st, t1 = register(a, b"q")
    assert st == Status.OK
    assert t1 != 0
    assert register(a, b"q") == (Status.OK, t1)
    st, t2 = register(a, b"other")
    assert st == Status.OK
    assert t2 not in (0, t1)


def test_same_queue_name_under_another_vm_id_is_another_queue(vms):
    _, ta = register(vms["a"], b"q")
    _, tb = register(vms["b"], b"q")
    assert ta != tb
    assert register(vms["a2"], b"q") == (Status.OK, ta)


def test_resolve_with_empty_vm_id_finds_the_own_vm_ids_queue(vms):
    _, t = register(vms["a"], b"q")
    assert resolve(vms["a"], b"", b"q") == (Status.OK, t)
    assert resolve(vms["a2"], b"", b"q") == (Status.OK, t)
    assert resolve(vms["b"], b"", b"q") == (Status.NOT_FOUND, None)


def test_resolve_with_an_explicit_vm_id_finds_another_vm_ids_queue(vms):
    _, t = register(vms["a"], b"q")
    assert resolve(vms["b"], b"shared", b"q") == (Status.OK, t)
    assert resolve(vms["b"], b"shared", b"nope") == (Status.NOT_FOUND, None)
    assert resolve(vms["b"], b"no-such-vm", b"q") == (Status.NOT_FOUND, None)


def test_enqueue_to_an_unknown_token_is_not_found_and_posts_nothing(vms):
    a = vms["a"]
    assert enqueue(a, 0xDEAD, b"x") == Status.NOT_FOUND
    assert enqueue(a, 0, b"x") == Status.NOT_FOUND
    assert len(a.host.pending) == 0


def test_dequeue_is_fifo_then_empty_and_unknown_is_not_found(vms):
    a = vms["a"]
    _, t = register(a, b"q")
    for item in (b"1", b"22", b"333"):
        assert enqueue(a, t, item) == Status.OK
    assert dequeue(a, t) == (Status.OK, b"1")
    assert dequeue(a, t) == (Status.OK, b"22")
    assert dequeue(a, t) == (Status.OK, b"333")
    assert dequeue(a, t) == (Status.EMPTY, None)
    assert dequeue(a, 0xDEAD) == (Status.NOT_FOUND, None)


def test_re_register_keeps_queued_items(vms):
    a = vms["a"]
    _, t = register(a, b"q")
    enqueue(a, t, b"kept")
    register(a, b"q")
    assert dequeue(a, t) == (Status.OK, b"kept")


def test_enqueue_posts_one_delivery_that_runs_the_receivers_queue_ready(vms):
    a, b = vms["a"], vms["b"]
    host = a.host
    _, t = register(a, b"q")
    _, resolved = resolve(b, b"shared", b"q")
    assert resolved == t
    host.pending.clear()
    assert enqueue(b, t, b"hello") == Status.OK
    assert len(host.pending) == 1
    assert plugin_lines(host) == []  # never delivered inside the enqueue hostcall
    assert host.run_pending() == 1
    assert plugin_lines(host) == [("root-a", a.root.id, "item: hello")]


def test_each_enqueue_is_one_notification_and_late_ones_find_the_queue_empty(vms):
    a = vms["a"]
    host = a.host
    _, t = register(a, b"q")
    host.pending.clear()
    enqueue(a, t, b"first")
    enqueue(a, t, b"second")
    assert len(host.pending) == 2
    dequeue(a, t)  # someone else drains one item first
    host.run_pending()
    assert [m for _, _, m in plugin_lines(host)] == ["item: second", "queue_ready: empty"]


def test_the_latest_registering_root_receives_notifications(vms):
    a, a2 = vms["a"], vms["a2"]
    host = a.host
    _, t = register(a, b"q")
    assert register(a2, b"q") == (Status.OK, t)
    host.pending.clear()
    enqueue(a, t, b"x")
    host.run_pending()
    assert plugin_lines(host) == [("root-a2", a2.root.id, "item: x")]


def test_queues_are_dropped_with_the_last_vm_of_their_vm_id(vms):
    a, a2, b = vms["a"], vms["a2"], vms["b"]
    _, t = register(a, b"q")
    a.vm.close()
    assert resolve(b, b"shared", b"q") == (Status.OK, t)
    a2.vm.close()
    assert resolve(b, b"shared", b"q") == (Status.NOT_FOUND, None)
    assert enqueue(b, t, b"x") == Status.NOT_FOUND
