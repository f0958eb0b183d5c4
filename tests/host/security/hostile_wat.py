"""Hostile Proxy-Wasm plugins, written in WebAssembly text for the security tests.

``hostile_module(**parts)`` fills one 0.2.1 skeleton: a bump allocator over the
whole memory (grows it), a decimal writer, and a callback for every HTTP event
whose body a test supplies. Strings live at fixed addresses given to ``data``.
``callout_headers(...)`` serializes a callout's header list (ABI pairs encoding).
"""

from __future__ import annotations

from host.wasm.pairs import encode_pairs
from tests.fixtures.wat_modules import compile_wat

IMPORTS = """
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call"
    (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value"
    (func $rep_hdr (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value"
    (func $add_hdr (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response"
    (func $local_reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $set_tick (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
"""

SKELETON = """
(module
{imports}
  (memory (export "memory") {pages})
{data}
  (global $heap (mut i32) (i32.const {heap}))
  (global $n (mut i32) (i32.const 0))
  (func $malloc (export "malloc") (param $size i32) (result i32)
    (local $p i32) (local $end i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $p) (local.get $size)))
    (if (i32.gt_u (local.get $end) (i32.shl (memory.size) (i32.const 16)))
      (then
        (if (i32.eq (memory.grow (i32.add (i32.shr_u (i32.sub (local.get $end)
                      (i32.shl (memory.size) (i32.const 16))) (i32.const 16)) (i32.const 1)))
                    (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $p))
  ;; decimal of $v at 512.., returns its length
  (func $utoa (param $v i32) (result i32)
    (local $len i32) (local $t i32) (local $i i32)
    (local.set $t (local.get $v)) (local.set $len (i32.const 1))
    (block $d (loop $c
      (br_if $d (i32.lt_u (local.get $t) (i32.const 10)))
      (local.set $t (i32.div_u (local.get $t) (i32.const 10)))
      (local.set $len (i32.add (local.get $len) (i32.const 1))) (br $c)))
    (local.set $i (local.get $len)) (local.set $t (local.get $v))
    (loop $w
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i32.store8 (i32.add (i32.const 512) (local.get $i))
                  (i32.add (i32.const 48) (i32.rem_u (local.get $t) (i32.const 10))))
      (local.set $t (i32.div_u (local.get $t) (i32.const 10)))
      (br_if $w (local.get $i)))
    (local.get $len))
  ;; request header NAME (at $k, $klen) := decimal $v
  (func $set_num (param $k i32) (param $klen i32) (param $v i32)
    (drop (call $rep_hdr (i32.const 0) (local.get $k) (local.get $klen)
                         (i32.const 512) (call $utoa (local.get $v)))))
{funcs}
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) {vm_start})
  (func (export "proxy_on_configure") (param i32 i32) (result i32) {configure})
  (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
    {request_headers})
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_tick") (param i32) {tick})
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32) {call_response})
  (func (export "proxy_on_done") (param i32) (result i32) {done})
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32))
)
"""


def wat_bytes(data: bytes) -> str:
    """``data`` as a WAT string literal body."""
    return "".join(f"\\{b:02x}" for b in data)


def hostile_module(
    *,
    request_headers: str = "(i32.const 0)",
    configure: str = "(i32.const 1)",
    vm_start: str = "(i32.const 1)",
    tick: str = "",
    call_response: str = "",
    done: str = "(i32.const 1)",
    data: dict[int, bytes] | None = None,
    funcs: str = "",
    pages: int = 2,
    heap: int = 65536,
    imports: str = IMPORTS,
    name: str = "hostile",
) -> bytes:
    segs = "\n".join(
        f'  (data (i32.const {addr}) "{wat_bytes(b)}")' for addr, b in (data or {}).items()
    )
    text = SKELETON.format(
        imports=imports,
        pages=pages,
        data=segs,
        heap=heap,
        funcs=funcs,
        vm_start=vm_start,
        configure=configure,
        request_headers=request_headers,
        tick=tick,
        call_response=call_response,
        done=done,
    )
    return compile_wat(text, name)


def callout_headers(path: bytes, method: bytes = b"GET", authority: bytes = b"target") -> bytes:
    return encode_pairs([(b":method", method), (b":path", path), (b":authority", authority)])


# fixed addresses of the strings the modules below use
CLUSTER, HEADERS, STATUS_NAME = 1024, 2048, 1536


def http_call(cluster_len: int, headers_len: int) -> str:
    """The WAT expression: proxy_http_call(cluster @CLUSTER, headers @HEADERS), 1 s."""
    return (
        f"(call $http_call (i32.const {CLUSTER}) (i32.const {cluster_len})"
        f" (i32.const {HEADERS}) (i32.const {headers_len}) (i32.const 0) (i32.const 0)"
        " (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 256))"
    )


def callout_module(cluster: str, headers: bytes, *, repeat: int = 1) -> bytes:
    """on_request_headers issues ``repeat`` callouts and sets request headers
    ``x-call-status`` (the last call's status) and ``x-calls-ok`` (how many were OK);
    continues without waiting for the responses."""
    c = cluster.encode()
    return hostile_module(
        data={CLUSTER: c, HEADERS: headers, STATUS_NAME: b"x-call-status", 1600: b"x-calls-ok"},
        funcs="  (global $ok (mut i32) (i32.const 0))\n  (global $last (mut i32) (i32.const 0))",
        request_headers=f"""
    (global.set $ok (i32.const 0))
    (global.set $n (i32.const 0))
    (block $d (loop $l
      (br_if $d (i32.ge_u (global.get $n) (i32.const {repeat})))
      (global.set $last {http_call(len(c), len(headers))})
      (if (i32.eqz (global.get $last))
        (then (global.set $ok (i32.add (global.get $ok) (i32.const 1)))))
      (global.set $n (i32.add (global.get $n) (i32.const 1)))
      (br $l)))
    (call $set_num (i32.const {STATUS_NAME}) (i32.const 13) (global.get $last))
    (call $set_num (i32.const 1600) (i32.const 10) (global.get $ok))
    (i32.const 0)""",
        name=f"callout[{repeat}]",
    )


_ARG_PATTERNS = (
    lambda i: 0xFFFFFFF0,  # every pointer past the end of memory
    lambda i: (1024, 0xFFFFFFFF)[i % 2],  # valid pointers, lengths to 4 GiB
    lambda i: (0xFFFFFFFF, 1024)[i % 2],
)


def _const(kind: str, v: int) -> str:
    """A WAT constant; i64 arguments (offsets, metric values) get all bits set."""
    if kind == "i64":
        return "(i64.const -16)"
    return f"(i32.const {v - (1 << 32) if v >= 1 << 31 else v})"


def bad_pointers_module() -> bytes:
    """on_request_headers calls every host function the host provides with
    out-of-bounds pointers, huge lengths and nulls, ignoring the results, then
    continues. Left out: ``proc_exit`` (ends the guest on purpose) and
    ``proxy_close_stream`` (stream type 0 is a valid request to reset the stream)."""
    from host.wasm.abi import FUNCTIONS

    imports, calls = [], []
    for n, f in enumerate(FUNCTIONS):
        if f.name in ("proc_exit", "proxy_close_stream"):
            continue
        params = "".join(f" {p}" for p in f.params)
        results = "".join(f" {r}" for r in f.results)
        imports.append(
            f'  (import "{f.module}" "{f.name}" (func $f{n} (param{params}) (result{results})))'
        )
        for pattern in _ARG_PATTERNS:
            args = " ".join(_const(p, pattern(i)) for i, p in enumerate(f.params))
            call = f"(call $f{n} {args})"
            calls.append(f"    (drop {call})" if f.results else f"    {call}")
    return hostile_module(
        imports="\n".join(imports),
        request_headers="\n".join(calls) + "\n    (i32.const 0)",
        funcs="  (func $log (param i32 i32 i32) (result i32) (i32.const 0))\n"
        "  (func $rep_hdr (param i32 i32 i32 i32 i32) (result i32) (i32.const 0))",
        name="bad_pointers",
    )
