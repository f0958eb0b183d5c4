"""VM and context lifecycle (ABI doc §1.2-1.5, §6.0, §6.9): ABI detection, start-up
order, allocator choice, plugin start/configure, context ids, stream and root endings.

The WAT fixtures cover the refusals; small inline modules log each callback they
receive (``host.logs``) or store its arguments in guest memory (``recorded``).
"""

from __future__ import annotations

import pytest
import wasmtime

from host.wasm import Action, FailState, HeaderMap, LogLevel, VmConfig, VmStartError, detect_abi
from host.wasm.types import Status
from tests.fixtures import wat_modules as wm

REC_BASE = 8192  # guest-memory record slots, 4 bytes each
RET_PTR, RET_SIZE = 256, 260
OUT = f"(i32.const {RET_PTR}) (i32.const {RET_SIZE})"  # (ret_ptr, ret_size) out-slots
LOG_RETURNED = (  # proxy_log the bytes a hostcall just returned through OUT
    f"(drop (call $proxy_log (i32.const 2) (i32.load (i32.const {RET_PTR}))"
    f" (i32.load (i32.const {RET_SIZE}))))"
)


def get_buffer(buffer_type: int, size: str = "(i32.const 100)") -> str:
    return f"(call $proxy_get_buffer_bytes (i32.const {buffer_type}) (i32.const 0) {size} {OUT})"

_SIGS = {
    "proxy_log": "(param i32 i32 i32) (result i32)",
    "proxy_get_buffer_bytes": "(param i32 i32 i32 i32 i32) (result i32)",
    "proxy_done": "(result i32)",
}


class Module:
    """A hand-written plugin: memory, an internal bump allocator ``$alloc`` (exported as
    ``malloc`` unless told otherwise), the given ABI markers, string constants and the
    functions added with ``func``."""

    def __init__(
        self, markers: tuple[str, ...] = ("proxy_abi_version_0_2_1",), malloc: bool = True
    ) -> None:
        self.markers = markers
        self.malloc = malloc
        self.funcs: list[str] = []
        self.data: list[str] = []
        self.wasi: list[str] = []
        self._next = 1024

    def s(self, text: str | bytes) -> str:
        raw = text.encode() if isinstance(text, str) else text
        addr = self._next
        self._next += (len(raw) + 8) & ~7
        escaped = "".join("\\%02x" % c for c in raw)
        self.data.append(f'(data (i32.const {addr}) "{escaped}")')
        return f"(i32.const {addr}) (i32.const {len(raw)})"

    def log(self, text: str, level: int = 2) -> str:
        return f"(drop (call $proxy_log (i32.const {level}) {self.s(text)}))"

    @staticmethod
    def rec_at(index_expr: str, expr: str) -> str:
        """Store ``expr`` in record slot ``index_expr`` (a WAT i32 expression)."""
        return (
            f"(i32.store (i32.add (i32.const {REC_BASE}) (i32.shl {index_expr} (i32.const 2)))"
            f" {expr})"
        )

    @staticmethod
    def rec(slot: int, expr: str) -> str:
        return f"(i32.store (i32.const {REC_BASE + 4 * slot}) {expr})"

    def func(self, text: str) -> Module:
        self.funcs.append(text)
        return self

    def import_proc_exit(self) -> Module:
        self.wasi.append(
            '(import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))'
        )
        return self

    def build(self) -> bytes:
        body = "\n".join(self.funcs)
        imports = [
            f'(import "env" "{n}" (func ${n} {sig}))'
            for n, sig in _SIGS.items()
            if n == "proxy_log" or f"${n})" in body or f"${n} " in body
        ] + self.wasi
        markers = "\n".join(f'(func (export "{m}"))' for m in self.markers)
        export_malloc = '(export "malloc")' if self.malloc else ""
        text = f"""(module
  {chr(10).join(imports)}
  (memory (export "memory") 2)
  {chr(10).join(self.data)}
  (global $heap (mut i32) (i32.const 65536))
  (func $alloc {export_malloc} (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (global.set $heap (i32.add (local.get $p) (local.get $n)))
    (if (i32.gt_u (global.get $heap) (i32.shl (memory.size) (i32.const 16)))
      (then (drop (memory.grow (i32.add (i32.const 1) (i32.shr_u
                  (i32.sub (global.get $heap) (i32.shl (memory.size) (i32.const 16)))
                  (i32.const 16)))))))
    (local.get $p))
  {markers}
  {body}
)"""
        return bytes(wasmtime.wat2wasm(text))


def recorded(vm, slot: int) -> int:
    return vm.instance.read_u32(REC_BASE + 4 * slot)


def messages(host, source: str | None = "plugin") -> list[str]:
    return [r.message for r in host.logs if source is None or r.source == source]


def headers() -> HeaderMap:
    return HeaderMap([(":method", "GET"), (":path", "/"), (":authority", "example")])


def lifecycle_module(done_result: int = 1) -> bytes:
    """Every lifecycle callback appends (callback code, context id, other argument) to a
    record log in guest memory (see ``events``).
    Codes: 1 create, 2 vm_start, 3 configure, 4 request_headers, 5 done, 6 log,
    7 delete, 8 tick. proxy_on_tick calls proxy_done and records its status (slot 1)."""
    m = Module()

    def event(code: int, ctx: str, arg: str) -> str:
        # slots from 16 on: triples (code, ctx, arg); slot 0 = number of events
        def slot(k: int) -> str:
            count = f"(i32.load (i32.const {REC_BASE}))"
            return f"(i32.add (i32.const {16 + k}) (i32.mul {count} (i32.const 3)))"

        return f"""
    {m.rec_at(slot(0), f"(i32.const {code})")}
    {m.rec_at(slot(1), ctx)}
    {m.rec_at(slot(2), arg)}
    {m.rec(0, f"(i32.add (i32.load (i32.const {REC_BASE})) (i32.const 1))")}"""

    m.func(f"""
  (func (export "proxy_on_context_create") (param $c i32) (param $p i32)
    {event(1, "(local.get $c)", "(local.get $p)")})
  (func (export "proxy_on_vm_start") (param $c i32) (param $n i32) (result i32)
    {event(2, "(local.get $c)", "(local.get $n)")} (i32.const 1))
  (func (export "proxy_on_configure") (param $c i32) (param $n i32) (result i32)
    {event(3, "(local.get $c)", "(local.get $n)")} (i32.const 1))
  (func (export "proxy_on_request_headers") (param $c i32) (param $n i32) (param i32) (result i32)
    {event(4, "(local.get $c)", "(local.get $n)")} (i32.const 0))
  (func (export "proxy_on_done") (param $c i32) (result i32)
    {event(5, "(local.get $c)", "(i32.const 0)")} (i32.const {done_result}))
  (func (export "proxy_on_log") (param $c i32)
    {event(6, "(local.get $c)", "(i32.const 0)")})
  (func (export "proxy_on_delete") (param $c i32)
    {event(7, "(local.get $c)", "(i32.const 0)")})
  (func (export "proxy_on_tick") (param $c i32)
    {event(8, "(local.get $c)", "(i32.const 0)")}
    {m.rec(1, "(call $proxy_done)")})""")
    return m.build()


_EVENT_NAMES = {
    1: "create", 2: "vm_start", 3: "configure", 4: "request_headers", 5: "done", 6: "log",
    7: "delete", 8: "tick",
}


def events(vm) -> list[tuple[str, int, int]]:
    """The (callback, context id, argument) log the lifecycle module keeps in memory."""
    n = recorded(vm, 0)
    out = []
    for i in range(n):
        code, ctx, arg = (recorded(vm, 16 + 3 * i + j) for j in range(3))
        out.append((_EVENT_NAMES[code], ctx, arg))
    return out


# --------------------------------------------------------------------------- ABI detection


@pytest.mark.parametrize(
    ("marker", "abi"),
    [
        ("proxy_abi_version_0_1_0", "0.1.0"),
        ("proxy_abi_version_0_2_0", "0.2.0"),
        ("proxy_abi_version_0_2_1", "0.2.1"),
    ],
)
def test_abi_version_comes_from_the_marker_export(make_host, marker, abi):
    host = make_host()
    module = host.compile(Module(markers=(marker,)).build())

    assert detect_abi(module) == abi
    assert host.create_vm(module, VmConfig()).abi == abi


@pytest.mark.parametrize(
    ("markers", "abi"),
    [
        (("proxy_abi_version_0_2_0", "proxy_abi_version_0_2_1"), "0.2.0"),
        (("proxy_abi_version_0_2_1", "proxy_abi_version_0_1_0"), "0.2.1"),
        (("proxy_abi_version_9_9_9", "proxy_abi_version_0_1_0"), "0.1.0"),
    ],
)
def test_first_marker_function_export_wins(make_host, markers, abi):
    host = make_host()
    assert host.create_vm(host.compile(Module(markers=markers).build()), VmConfig()).abi == abi


@pytest.mark.parametrize("variant", ["none", "global_decoy", "unknown_version"])
def test_module_without_a_known_marker_function_is_refused(make_host, variant):
    host = make_host()
    module = host.compile(wm.make_no_marker_module(variant))

    with pytest.raises(VmStartError) as err:
        host.create_vm(module, VmConfig())

    f = err.value.failure
    assert f.state == FailState.UNABLE_TO_CREATE_VM
    assert "Missing or unknown Proxy-Wasm ABI version" in f.message
    assert "proxy_abi_version_0_1_0" in f.message
    assert "no_marker module started" not in messages(host)
    assert host.vms == []


@pytest.mark.parametrize("variant", ["none", "wrong_signature"])
def test_module_without_a_usable_allocator_is_refused_as_missing_function(make_host, variant):
    host = make_host()

    with pytest.raises(VmStartError) as err:
        host.create_vm(host.compile(wm.make_no_allocator_module(variant)), VmConfig())

    f = err.value.failure
    assert f.state == FailState.MISSING_FUNCTION
    assert "malloc" in f.message and "proxy_on_memory_allocate" in f.message
    assert "no_allocator module started" not in messages(host)


# --------------------------------------------------------------------------- start-up


def _startup_module(*, initialize: bool, main: bool, main_void: bool, start: bool) -> Module:
    m = Module()
    if initialize:
        m.func(f'(func (export "_initialize") {m.log("_initialize")})')
    if main:
        m.func(f"""(func (export "main") (param $a i32) (param $b i32) (result i32)
          {m.log("main")} {m.rec(40, "(local.get $a)")} {m.rec(41, "(local.get $b)")}
          (i32.const 0))""")
    if main_void:
        m.func(f'(func (export "__main_void") (result i32) {m.log("__main_void")} (i32.const 0))')
    if start:
        m.func(f'(func (export "_start") {m.log("_start")})')
    m.func(f"""
  (func (export "proxy_on_context_create") (param $c i32) (param $p i32)
    {m.log("context_create")} {m.rec(0, "(local.get $c)")} {m.rec(1, "(local.get $p)")})
  (func (export "proxy_on_vm_start") (param $c i32) (param $n i32) (result i32)
    {m.log("vm_start")} {m.rec(2, "(local.get $c)")} {m.rec(3, "(local.get $n)")} (i32.const 1))
  (func (export "proxy_on_configure") (param $c i32) (param $n i32) (result i32)
    {m.log("configure")} {m.rec(4, "(local.get $c)")} {m.rec(5, "(local.get $n)")}
    {m.rec(6, get_buffer(7, "(local.get $n)"))}
    {LOG_RETURNED}
    (i32.const 1))
  (func (export "proxy_on_tick") (param i32)
    {m.rec(7, get_buffer(7))}
    {m.rec(8, get_buffer(6))}
    {LOG_RETURNED})""")
    return m


def test_startup_runs_initialize_main_then_root_create_vm_start_configure(make_host):
    host = make_host()
    wasm = _startup_module(initialize=True, main=True, main_void=True, start=True).build()
    vm = host.create_vm(host.compile(wasm), VmConfig(vm_configuration=b"vm-conf"))
    vm.trace_calls = True

    root = vm.start_plugin("p", b"hello-config")

    # _start is not run when _initialize exists; main wins over __main_void;
    # the configuration is readable during configure (PLUGIN_CONFIGURATION = 7)
    assert messages(host) == [
        "_initialize", "main", "context_create", "vm_start", "configure", "hello-config",
    ]
    assert (recorded(vm, 40), recorded(vm, 41)) == (0, 0)  # main(0, 0)
    assert root.id == 1
    assert (recorded(vm, 0), recorded(vm, 1)) == (root.id, 0)  # context_create(root, 0)
    assert (recorded(vm, 2), recorded(vm, 3)) == (root.id, len(b"vm-conf"))
    assert (recorded(vm, 4), recorded(vm, 5)) == (root.id, len(b"hello-config"))
    assert recorded(vm, 6) == Status.OK
    assert [(name, cid) for name, cid, _ in vm.trace] == [
        ("proxy_on_context_create", root.id),
        ("proxy_on_vm_start", root.id),
        ("proxy_on_configure", root.id),
    ]


def test_main_void_runs_after_initialize_when_main_is_absent(make_host):
    host = make_host()
    wasm = _startup_module(initialize=True, main=False, main_void=True, start=False).build()
    host.create_vm(host.compile(wasm), VmConfig())
    assert messages(host) == ["_initialize", "__main_void"]


def test_start_runs_only_when_initialize_is_absent(make_host):
    host = make_host()
    wasm = _startup_module(initialize=False, main=True, main_void=False, start=True).build()
    host.create_vm(host.compile(wasm), VmConfig())
    assert messages(host) == ["_start"]  # main belongs to reactors only


def test_plugin_configuration_is_readable_only_during_configure(make_host):
    host = make_host()
    wasm = _startup_module(initialize=False, main=False, main_void=False, start=False).build()
    vm = host.create_vm(host.compile(wasm), VmConfig(vm_configuration=b"vm-conf"))
    root = vm.start_plugin("p", b"hello-config")

    vm.tick(root)

    assert recorded(vm, 6) == Status.OK  # during configure
    assert recorded(vm, 7) == Status.NOT_FOUND  # plugin configuration, later
    assert recorded(vm, 8) == Status.OK  # the VM configuration is always there
    assert messages(host)[-1] == "vm-conf"


def test_reconfigure_runs_on_configure_with_the_new_configuration(make_host):
    host = make_host()
    wasm = _startup_module(initialize=False, main=False, main_void=False, start=False).build()
    vm = host.create_vm(host.compile(wasm), VmConfig())
    root = vm.start_plugin("p", b"first")

    assert vm.configure(root, b"second, longer") is True

    assert (recorded(vm, 4), recorded(vm, 5)) == (root.id, len(b"second, longer"))
    assert messages(host)[-1] == "second, longer"
    assert root.configuration == b"second, longer"
    assert not vm.failed


def _proc_exit_in_start(code: int) -> bytes:
    m = Module().import_proc_exit()
    m.func(f"""(func (export "_start") {m.log("_start")}
      (call $proc_exit (i32.const {code})) {m.log("after proc_exit")})""")
    m.func('(func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))')
    return m.build()


def test_proc_exit_zero_at_the_end_of_start_is_a_clean_exit(make_host):
    host = make_host()
    vm = host.create_vm(host.compile(_proc_exit_in_start(0)), VmConfig())

    assert vm.failure is None
    assert messages(host) == ["_start"]  # proc_exit unwinds the guest
    root = vm.start_plugin("p", b"")
    assert vm.new_http_context(root).on_request_headers(headers(), True) == Action.CONTINUE


def test_proc_exit_zero_at_the_end_of_start_reports_no_failure(make_host):
    host = make_host()
    vm = host.create_vm(host.compile(_proc_exit_in_start(0)), VmConfig())

    assert [r.message for r in host.logs if r.level >= LogLevel.ERROR] == []
    assert vm.trap_count == 0


def test_proc_exit_nonzero_during_start_fails_initialization(make_host):
    host = make_host()

    with pytest.raises(VmStartError) as err:
        host.create_vm(host.compile(_proc_exit_in_start(2)), VmConfig())

    f = err.value.failure
    assert f.state == FailState.UNABLE_TO_INITIALIZE_CODE
    assert (f.kind, f.callback) == ("proc_exit", "_start")
    assert "proc_exit(2)" in f.message


def test_failed_vm_start_skips_configure_and_refuses_traffic(make_host):
    host = make_host()
    vm = host.create_vm(host.compile(wm.make_start_fails_module()), VmConfig())
    vm.trace_calls = True

    with pytest.raises(VmStartError) as err:
        vm.start_plugin("p", b"conf")

    assert err.value.failure.state == FailState.START_FAILED
    assert [name for name, _, _ in vm.trace] == ["proxy_on_context_create", "proxy_on_vm_start"]
    assert "configure called after failed start" not in messages(host)
    ctx = vm.new_http_context(vm.roots["p"])
    assert ctx.on_request_headers(headers(), True) == Action.FAILED
    assert "request headers on failed plugin" not in messages(host)
    with pytest.raises(VmStartError):
        vm.start_plugin("another", b"")


def test_rejected_configuration_fails_the_plugin_and_refuses_traffic(make_host):
    host = make_host()
    vm = host.create_vm(host.compile(wm.make_configure_fails_module()), VmConfig())

    with pytest.raises(VmStartError) as err:
        vm.start_plugin("p", b"conf")

    assert err.value.failure.state == FailState.CONFIGURE_FAILED
    assert messages(host) == ["bad config"]
    ctx = vm.new_http_context(vm.roots["p"])
    assert ctx.on_request_headers(headers(), True) == Action.FAILED
    assert messages(host) == ["bad config"]


# --------------------------------------------------------------------------- allocator


def _two_allocators() -> bytes:
    m = Module(malloc=False)
    m.func(f"""
  (func (export "malloc") (param $n i32) (result i32)
    {m.log("malloc")} (call $alloc (local.get $n)))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    {m.log("proxy_on_memory_allocate")} (call $alloc (local.get $n)))
  (func (export "proxy_on_configure") (param i32) (param $n i32) (result i32)
    {m.rec(0, get_buffer(7, "(local.get $n)"))}
    (i32.const 1))""")
    return m.build()


@pytest.mark.parametrize(
    ("allocator", "expected"),
    [("spec", "proxy_on_memory_allocate"), ("envoy", "malloc")],
)
def test_allocator_preference_follows_the_vm_config(make_host, allocator, expected):
    host = make_host()
    vm = host.create_vm(host.compile(_two_allocators()), VmConfig(allocator=allocator))

    vm.start_plugin("p", b"some configuration")

    assert recorded(vm, 0) == Status.OK
    assert messages(host) == [expected]


def test_allocator_is_not_called_for_an_empty_result(make_host):
    host = make_host()
    vm = host.create_vm(host.compile(_two_allocators()), VmConfig())
    vm.start_plugin("p", b"")
    assert recorded(vm, 0) == Status.OK
    assert messages(host) == []


# --------------------------------------------------------------------------- callbacks


def test_callbacks_with_an_unexpected_signature_are_treated_as_absent(make_host):
    m = Module()
    m.func(f"""
  (func (export "proxy_on_vm_start") (param i32) (result i32) {m.log("vm_start")} (i32.const 0))
  (func (export "proxy_on_request_headers") (param i32 i32 i32 i32) (result i32)
    {m.log("4-arg request headers")} (i32.const 1))
  (func (export "proxy_on_done") (param i32) {m.log("done")})""")
    host = make_host()
    vm = host.create_vm(host.compile(m.build()), VmConfig())
    # never called, but reported (inspect, try, /plugins) instead of ignored
    assert len(vm.warnings) == 3
    assert any(
        "proxy_on_request_headers has signature (i32, i32, i32, i32) -> (i32)" in w
        and "(i32, i32, i32) -> (i32) or (i32, i32) -> (i32)" in w
        for w in vm.warnings
    )

    root = vm.start_plugin("p", b"")  # a vm_start returning 0 would fail here
    ctx = vm.new_http_context(root)
    assert ctx.on_request_headers(headers(), True) == Action.CONTINUE
    ctx.finish()

    assert messages(host) == []
    assert set(vm.cb.mismatched) == {
        "proxy_on_vm_start", "proxy_on_request_headers", "proxy_on_done",
    }


def test_abi_0_1_0_two_argument_headers_callbacks_are_called(make_host):
    host = make_host()
    vm = host.create_vm(host.compile(wm.make_abi_0_1_0_module()), VmConfig())
    root = vm.start_plugin("p", b"zero-one")
    ctx = vm.new_http_context(root)
    req = headers()

    assert ctx.on_request_headers(req, True) == Action.CONTINUE
    assert ctx.on_response_headers(HeaderMap([(":status", "200"), ("a", "b")]), True) == (
        Action.CONTINUE
    )

    assert messages(host) == [
        "config: zero-one", "missing: status=0 size=0", "response headers: n=2",
    ]
    assert req.get("x-abi") == b"0.1.0"


# --------------------------------------------------------------------------- contexts


def test_every_plugin_on_a_vm_gets_its_own_root_vm_start_and_configure(make_host):
    host = make_host()
    vm = host.create_vm(host.compile(lifecycle_module()), VmConfig(vm_configuration=b"vm"))

    a = vm.start_plugin("a", b"conf-a")
    b = vm.start_plugin("b", b"conf-bb")

    assert (a.id, b.id) == (1, 2)
    assert events(vm) == [
        ("create", a.id, 0), ("vm_start", a.id, 2), ("configure", a.id, 6),
        ("create", b.id, 0), ("vm_start", b.id, 2), ("configure", b.id, 7),
    ]
    assert vm.roots == {"a": a, "b": b}


def test_context_ids_are_monotonic_and_stream_contexts_are_created_lazily(make_host):
    host = make_host()
    vm = host.create_vm(host.compile(lifecycle_module()), VmConfig())
    a = vm.start_plugin("a", b"")
    s1 = vm.new_http_context(a)
    b = vm.start_plugin("b", b"")
    s2 = vm.new_http_context(b)
    s3 = vm.new_http_context(a)

    assert [a.id, s1.id, b.id, s2.id, s3.id] == [1, 2, 3, 4, 5]
    before = len(events(vm))
    assert before == 6  # roots only: nothing for streams without an event

    s3.on_request_headers(headers(), True)
    s2.on_request_headers(headers(), False)
    s3.on_request_headers(headers(), True)  # created once

    assert events(vm)[before:] == [
        ("create", s3.id, a.id), ("request_headers", s3.id, 3),
        ("create", s2.id, b.id), ("request_headers", s2.id, 3),
        ("request_headers", s3.id, 3),
    ]


def test_finishing_a_stream_calls_done_log_delete_once(make_host):
    host = make_host()
    vm = host.create_vm(host.compile(lifecycle_module()), VmConfig())
    root = vm.start_plugin("a", b"")
    ctx = vm.new_http_context(root)
    ctx.on_request_headers(headers(), True)
    before = len(events(vm))

    ctx.finish()
    ctx.finish()  # a second finish is a no-op

    assert events(vm)[before:] == [("done", ctx.id, 0), ("log", ctx.id, 0), ("delete", ctx.id, 0)]
    assert ctx.deleted and ctx.id not in vm.contexts


def test_finishing_a_stream_that_never_had_an_event_calls_nothing(make_host):
    host = make_host()
    vm = host.create_vm(host.compile(lifecycle_module()), VmConfig())
    root = vm.start_plugin("a", b"")
    before = len(events(vm))

    vm.new_http_context(root).finish()

    assert len(events(vm)) == before


def test_no_callback_reaches_a_stream_after_on_delete(make_host):
    host = make_host()
    vm = host.create_vm(host.compile(lifecycle_module()), VmConfig())
    root = vm.start_plugin("a", b"")
    ctx = vm.new_http_context(root)
    ctx.on_request_headers(headers(), False)
    ctx.finish()
    before = len(events(vm))

    ctx.on_request_headers(headers(), True)
    ctx.on_request_body(b"late", True)

    assert len(events(vm)) == before


def test_removing_a_plugin_calls_done_then_delete_on_its_root(make_host):
    host = make_host()
    vm = host.create_vm(host.compile(lifecycle_module()), VmConfig())
    a = vm.start_plugin("a", b"")
    b = vm.start_plugin("b", b"")
    before = len(events(vm))

    vm.remove_plugin(a)

    assert events(vm)[before:] == [("done", a.id, 0), ("delete", a.id, 0)]
    assert a.deleted and vm.roots == {"b": b}
    vm.remove_plugin(a)  # already gone: nothing more
    assert len(events(vm)) == before + 2


def test_root_returning_false_from_on_done_is_deleted_after_proxy_done(make_host):
    host = make_host()
    vm = host.create_vm(host.compile(lifecycle_module(done_result=0)), VmConfig())
    root = vm.start_plugin("a", b"")
    vm.tick(root)
    assert recorded(vm, 1) == Status.NOT_FOUND  # proxy_done with nothing pending
    before = len(events(vm))

    vm.remove_plugin(root)
    assert root.pending_done and not root.deleted
    assert events(vm)[before:] == [("done", root.id, 0)]

    vm.tick(root)  # the plugin finishes its work and calls proxy_done
    assert recorded(vm, 1) == Status.OK
    assert events(vm)[-1] == ("tick", root.id, 0)  # on_delete is not run inside the call

    host.run_pending()

    assert events(vm)[-1] == ("delete", root.id, 0)
    assert root.deleted and not root.pending_done and vm.roots == {}


def test_closing_a_vm_runs_stream_then_root_endings_in_order(make_host):
    host = make_host()
    vm = host.create_vm(host.compile(lifecycle_module(done_result=0)), VmConfig())
    vm.trace_calls = True
    root = vm.start_plugin("a", b"")
    ctx = vm.new_http_context(root)
    ctx.on_request_headers(headers(), False)
    vm.trace.clear()

    vm.close()

    # a root that answers "not yet" from on_done is deleted anyway when the VM goes
    assert [(name, cid) for name, cid, _ in vm.trace] == [
        ("proxy_on_done", ctx.id), ("proxy_on_log", ctx.id), ("proxy_on_delete", ctx.id),
        ("proxy_on_done", root.id), ("proxy_on_delete", root.id),
    ]
    assert vm not in host.vms


def test_no_stream_context_is_created_under_a_removed_plugin(make_host):
    host = make_host()
    vm = host.create_vm(host.compile(lifecycle_module()), VmConfig())
    root = vm.start_plugin("a", b"")
    vm.remove_plugin(root)
    before = len(events(vm))

    try:
        vm.new_http_context(root).on_request_headers(headers(), True)
    except Exception:  # refusing loudly is fine too; calling the guest is not
        pass

    assert len(events(vm)) == before


def test_starting_a_root_id_twice_is_refused_and_close_still_ends_the_first(make_host):
    host = make_host()
    vm = host.create_vm(host.compile(lifecycle_module()), VmConfig())
    first = vm.start_plugin("a", b"one")
    with pytest.raises(ValueError, match="already runs on this VM"):
        vm.start_plugin("a", b"two")
    vm.trace_calls = True

    vm.close()

    deleted = {cid for name, cid, _ in vm.trace if name == "proxy_on_delete"}
    assert first.id in deleted
    assert first.deleted and first.id not in vm.contexts