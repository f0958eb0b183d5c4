"""WAT plugins for the lab tests.

``lab_probe(build)``: on each request it reads the guest clock
(``proxy_get_current_time_nanoseconds``) and 8 random bytes (WASI ``random_get``),
counts requests in a global (state across requests), and adds the request header
``x-lab: <time hex>-<random hex>-<count hex>`` plus ``x-build: <build>``; it logs the
same value. A request carrying ``x-trap`` makes it trap (``unreachable`` in
``$boom``), for crash reproduction. Two builds differ only in ``x-build``.
"""

from __future__ import annotations

from tests.fixtures.wat_modules import compile_wat

_LAB = """
(module
  (import "env" "proxy_get_current_time_nanoseconds" (func $now (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value"
    (func $add_hdr (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value"
    (func $get_hdr (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (global $count (mut i32) (i32.const 0))
  (data (i32.const 1024) "x-lab")
  (data (i32.const 1040) "x-trap")
  (data (i32.const 1056) "x-build")
  (data (i32.const 1072) "BUILD")
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func $hex (param $v i64) (param $out i32) (param $digits i32)
    (local $i i32) (local $d i32)
    (local.set $i (i32.sub (local.get $digits) (i32.const 1)))
    (loop $l
      (local.set $d (i32.wrap_i64 (i64.and (local.get $v) (i64.const 15))))
      (i32.store8 (i32.add (local.get $out) (local.get $i))
        (i32.add (local.get $d)
          (select (i32.const 48) (i32.const 87) (i32.lt_u (local.get $d) (i32.const 10)))))
      (local.set $v (i64.shr_u (local.get $v) (i64.const 4)))
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (br_if $l (i32.ge_s (local.get $i) (i32.const 0)))))
  (func $boom (unreachable))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (i32.eqz (call $get_hdr (i32.const 0) (i32.const 1040) (i32.const 6)
                               (i32.const 300) (i32.const 304)))
      (then (call $boom)))
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (drop (call $now (i32.const 256)))
    (drop (call $random (i32.const 264) (i32.const 8)))
    (call $hex (i64.load (i32.const 256)) (i32.const 2048) (i32.const 16))
    (i32.store8 (i32.const 2064) (i32.const 45))
    (call $hex (i64.load (i32.const 264)) (i32.const 2065) (i32.const 16))
    (i32.store8 (i32.const 2081) (i32.const 45))
    (call $hex (i64.extend_i32_u (global.get $count)) (i32.const 2082) (i32.const 8))
    (drop (call $add_hdr (i32.const 0) (i32.const 1024) (i32.const 5)
                         (i32.const 2048) (i32.const 42)))
    (drop (call $add_hdr (i32.const 0) (i32.const 1056) (i32.const 7)
                         (i32.const 1072) (i32.const 5)))
    (drop (call $log (i32.const 2) (i32.const 2048) (i32.const 42)))
    (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32))
)
"""


def lab_probe(build: str = "aaaaa") -> bytes:
    assert len(build) == 5
    return compile_wat(_LAB.replace('"BUILD"', f'"{build}"'), f"lab_probe[{build}]")


_GRPC = """
(module
  (import "env" "proxy_grpc_call" (func $grpc_call
    (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buf (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $set_eff (param i32) (result i32)))
  (import "env" "proxy_add_header_map_value"
    (func $add_hdr (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (global $stream (mut i32) (i32.const 0))
  (data (i32.const 1024) "authz")
  (data (i32.const 1040) "pkg.Authz")
  (data (i32.const 1056) "Check")
  (data (i32.const 1072) "ping")
  (data (i32.const 1088) "x-grpc-reply")
  (data (i32.const 1104) "x-grpc-status")
  (data (i32.const 1120) "x-grpc-refused")
  (data (i32.const 1136) "1")
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
    (global.set $stream (local.get $ctx))
    (if (call $grpc_call (i32.const 1024) (i32.const 5) (i32.const 1040) (i32.const 9)
                         (i32.const 1056) (i32.const 5) (i32.const 0) (i32.const 0)
                         (i32.const 1072) (i32.const 4) (i32.const 1000) (i32.const 300))
      (then
        (drop (call $add_hdr (i32.const 0) (i32.const 1120) (i32.const 14)
                             (i32.const 1136) (i32.const 1)))
        (return (i32.const 0))))
    (i32.const 1))
  (func (export "proxy_on_grpc_receive_initial_metadata") (param i32 i32 i32))
  (func (export "proxy_on_grpc_receive_trailing_metadata") (param i32 i32 i32))
  (func (export "proxy_on_grpc_receive") (param $root i32) (param $tok i32) (param $size i32)
    (drop (call $get_buf (i32.const 5) (i32.const 0) (local.get $size)
                         (i32.const 304) (i32.const 308)))
    (drop (call $set_eff (global.get $stream)))
    (drop (call $add_hdr (i32.const 0) (i32.const 1088) (i32.const 12)
                         (i32.load (i32.const 304)) (i32.load (i32.const 308))))
    ;; a unary reply completes the call (Envoy sends no close after it): resume here
    (drop (call $continue (i32.const 0))))
  (func (export "proxy_on_grpc_close") (param $root i32) (param $tok i32) (param $status i32)
    (drop (call $set_eff (global.get $stream)))
    (i32.store8 (i32.const 320) (i32.add (i32.const 48) (i32.rem_u (local.get $status)
                                                                   (i32.const 10))))
    (drop (call $add_hdr (i32.const 0) (i32.const 1104) (i32.const 13)
                         (i32.const 320) (i32.const 1)))
    (drop (call $continue (i32.const 0))))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32))
)
"""


def grpc_probe() -> bytes:
    """On each request: a unary gRPC call to authz pkg.Authz/Check ("ping"), paused;
    the reply message becomes ``x-grpc-reply`` (a unary call then is complete), or a
    failed call's close status ``x-grpc-status`` (last digit); either way the request
    continues. A refused call: ``x-grpc-refused: 1``."""
    return compile_wat(_GRPC, "grpc_probe")
