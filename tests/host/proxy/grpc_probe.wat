;; The gRPC probe plugin of test_grpc_callouts.py (see its docstring).
(module
  (import "env" "proxy_grpc_call" (func $grpc_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_stream" (func $grpc_stream (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_send" (func $grpc_send (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_cancel" (func $grpc_cancel (param i32) (result i32)))
  (import "env" "proxy_grpc_close" (func $grpc_close (param i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buf (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $get_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_status" (func $get_status (param i32 i32 i32) (result i32)))
  (memory (export "memory") 4)
  (global $bump (mut i32) (i32.const 0x20000))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    global.get $bump local.set $p
    global.get $bump local.get $n i32.add i32.const 7 i32.add i32.const -8 i32.and global.set $bump
    local.get $p)
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_done") (param i32) (result i32) i32.const 1)
  (func (export "proxy_on_delete") (param i32))
  ;; parameters at 0x1000: op, up ptr/len, service ptr/len, method ptr/len, metadata ptr/len,
  ;; message ptr/len, timeout, token, end_stream; results: status 0x1038, token 0x103C
  (func $p (param $off i32) (result i32) (i32.load (i32.add (i32.const 0x1000) (local.get $off))))
  (func $do_op (local $op i32) (local $rc i32)
    (local.set $op (call $p (i32.const 0)))
    (local.set $rc (i32.const -1))
    (if (i32.eq (local.get $op) (i32.const 1)) (then
      (local.set $rc (call $grpc_call
        (call $p (i32.const 4)) (call $p (i32.const 8)) (call $p (i32.const 12)) (call $p (i32.const 16))
        (call $p (i32.const 20)) (call $p (i32.const 24)) (call $p (i32.const 28)) (call $p (i32.const 32))
        (call $p (i32.const 36)) (call $p (i32.const 40)) (call $p (i32.const 44)) (i32.const 0x103C)))))
    (if (i32.eq (local.get $op) (i32.const 2)) (then
      (local.set $rc (call $grpc_stream
        (call $p (i32.const 4)) (call $p (i32.const 8)) (call $p (i32.const 12)) (call $p (i32.const 16))
        (call $p (i32.const 20)) (call $p (i32.const 24)) (call $p (i32.const 28)) (call $p (i32.const 32))
        (i32.const 0x103C)))))
    (if (i32.eq (local.get $op) (i32.const 3)) (then
      (local.set $rc (call $grpc_send (call $p (i32.const 48))
        (call $p (i32.const 36)) (call $p (i32.const 40)) (call $p (i32.const 52))))))
    (if (i32.eq (local.get $op) (i32.const 4)) (then
      (local.set $rc (call $grpc_cancel (call $p (i32.const 48))))))
    (if (i32.eq (local.get $op) (i32.const 5)) (then
      (local.set $rc (call $grpc_close (call $p (i32.const 48))))))
    (i32.store (i32.const 0x1038) (local.get $rc)))
  (func (export "proxy_on_tick") (param $root i32) (call $do_op))
  ;; event log: count at 0x2000, entries of 32 bytes from 0x2010:
  ;; kind, token, arg, data ptr, data len, status code, read status
  (func $log (param $kind i32) (param $tok i32) (param $arg i32) (result i32) (local $n i32) (local $e i32)
    (local.set $n (i32.load (i32.const 0x2000)))
    (local.set $e (i32.add (i32.const 0x2010) (i32.mul (local.get $n) (i32.const 32))))
    (i32.store (i32.const 0x2000) (i32.add (local.get $n) (i32.const 1)))
    (i32.store (local.get $e) (local.get $kind))
    (i32.store offset=4 (local.get $e) (local.get $tok))
    (i32.store offset=8 (local.get $e) (local.get $arg))
    (local.get $e))
  ;; react: the callback of kind [0x1080] performs the prepared operation once
  (func $react (param $kind i32)
    (if (i32.eq (i32.load (i32.const 0x1080)) (local.get $kind)) (then
      (i32.store (i32.const 0x1080) (i32.const 0))
      (call $do_op))))
  (func (export "proxy_on_grpc_receive_initial_metadata") (param $root i32) (param $tok i32) (param $n i32) (local $e i32)
    (local.set $e (call $log (i32.const 1) (local.get $tok) (local.get $n)))
    (i32.store offset=24 (local.get $e) (call $get_pairs (i32.const 4)
      (i32.add (local.get $e) (i32.const 12)) (i32.add (local.get $e) (i32.const 16))))
    (call $react (i32.const 1)))
  (func (export "proxy_on_grpc_receive") (param $root i32) (param $tok i32) (param $n i32) (local $e i32)
    (local.set $e (call $log (i32.const 2) (local.get $tok) (local.get $n)))
    (i32.store offset=24 (local.get $e) (call $get_buf (i32.const 5) (i32.const 0) (local.get $n)
      (i32.add (local.get $e) (i32.const 12)) (i32.add (local.get $e) (i32.const 16))))
    (call $react (i32.const 2)))
  (func (export "proxy_on_grpc_receive_trailing_metadata") (param $root i32) (param $tok i32) (param $n i32) (local $e i32)
    (local.set $e (call $log (i32.const 3) (local.get $tok) (local.get $n)))
    (i32.store offset=24 (local.get $e) (call $get_pairs (i32.const 5)
      (i32.add (local.get $e) (i32.const 12)) (i32.add (local.get $e) (i32.const 16))))
    (call $react (i32.const 3)))
  (func (export "proxy_on_grpc_close") (param $root i32) (param $tok i32) (param $status i32) (local $e i32)
    (local.set $e (call $log (i32.const 4) (local.get $tok) (local.get $status)))
    (i32.store offset=24 (local.get $e) (call $get_status (i32.add (local.get $e) (i32.const 20))
      (i32.add (local.get $e) (i32.const 12)) (i32.add (local.get $e) (i32.const 16))))
    (call $react (i32.const 4)))
)
