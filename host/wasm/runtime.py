"""The wasmtime backend: engine, compiled-module cache, instances, fast calls.

This is the only module that touches wasmtime below its public API. It drives
guest exports through ``wasmtime_func_call_unchecked`` with a preallocated
argument buffer, and registers host functions as raw "unchecked" callbacks that
read their arguments straight out of wasmtime's ``wasmtime_val_raw_t`` array.
Both crossings go through the C module ``_crossing`` when it is built (with the
compiled data path), else through ctypes; the epoch ticker likewise is a native
thread or a Python one. ``bench/bench_host.py`` measures them against bare calls.

Rules this module keeps so that misuse of the lower layer cannot crash the
process (wasmtime-py 50 aborts rather than raises on these):

* one ``FuncType`` per definition, created on the engine the linker belongs to,
  and kept alive with the instance;
* every ctypes callback is owned by the ``Instance`` and outlives its Store:
  ``Instance.close`` deletes the Store first and drops callbacks last (a C
  crossing's definition is owned by wasmtime, which releases its references
  when the definition goes);
* no pointer to a temporary crosses into the C API: argument buffers, trap
  slots and ``wasmtime_func_t`` structs are attributes of the instance.

Memory: the engine is configured with ``memory_may_move = False``, so a linear
memory's base address is stable for the instance's life and a single cached
ctypes view serves every access. Growth is tracked lazily: a bounds check
against the cached size that fails re-reads the size once before refusing.

It knows nothing of Proxy-Wasm: that is ``host.wasm.vm``.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import importlib.metadata
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi  # below the public API, see module docstring

__all__ = [
    "WASM_MAGIC",
    "CallFailed",
    "Engine",
    "Export",
    "GuestFault",
    "HostFunction",
    "Import",
    "Instance",
    "LoadError",
    "Module",
    "ProcExit",
    "RawFunc",
]

WASM_MAGIC = b"\0asm"
try:
    _WASMTIME_VERSION = importlib.metadata.version("wasmtime")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - vendored copy
    _WASMTIME_VERSION = "unknown"
WASM_PAGE = 65536

# --- raw C entry points, declared once with integer-address argument types -------------
_dll = ffi.dll

# Guest calls through ctypes, without argtypes: every argument is a ctypes object made
# once (``Instance``'s store context, buffers and trap slots, ``RawFunc.c_addr``/``c_n``),
# passed by value as is. With argtypes, each call runs a ``from_param`` per argument,
# which allocates a converted argument object for an int.
_CALL_PREPARED = _dll["wasmtime_func_call_unchecked"]  # a new function object, not shared
_CALL_PREPARED.restype = ctypes.c_void_p

_SET_EPOCH_DEADLINE = _dll["wasmtime_context_set_epoch_deadline"]
_SET_EPOCH_DEADLINE.restype = None
_SET_EPOCH_DEADLINE.argtypes = [ctypes.c_void_p, ctypes.c_uint64]

_MEMORY_DATA = _dll["wasmtime_memory_data"]
_MEMORY_DATA.restype = ctypes.c_void_p
_MEMORY_DATA.argtypes = [ctypes.c_void_p, ctypes.c_void_p]

_MEMORY_DATA_SIZE = _dll["wasmtime_memory_data_size"]
_MEMORY_DATA_SIZE.restype = ctypes.c_size_t
_MEMORY_DATA_SIZE.argtypes = [ctypes.c_void_p, ctypes.c_void_p]

_TRAP_NEW = _dll["wasmtime_trap_new"]
_TRAP_NEW.restype = ctypes.c_void_p
_TRAP_NEW.argtypes = [ctypes.c_char_p, ctypes.c_size_t]

_INCREMENT_EPOCH = _dll["wasmtime_engine_increment_epoch"]
_INCREMENT_EPOCH.restype = None
_INCREMENT_EPOCH.argtypes = [ctypes.c_void_p]

# (env, caller, args_and_results, len) -> trap pointer or 0. The array is declared
# as u32 words: slot i of the wasmtime_val_raw_t array starts at word 4*i, and an
# i32 read this way arrives already masked to unsigned (ABI doc, "Python note").
_RAW_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_size_t,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint32),
    ctypes.c_size_t,
)

_DEFINE_UNCHECKED = _dll["wasmtime_linker_define_func_unchecked"]
_DEFINE_UNCHECKED.restype = ctypes.c_void_p
_DEFINE_UNCHECKED.argtypes = [
    ctypes.c_void_p,
    ctypes.c_char_p,
    ctypes.c_size_t,
    ctypes.c_char_p,
    ctypes.c_size_t,
    ctypes.c_void_p,
    _RAW_CALLBACK,
    ctypes.c_void_p,
    ctypes.c_void_p,
]


def _entry_address(name: str) -> int:
    return int(ctypes.cast(_dll[name], ctypes.c_void_p).value or 0)


# The C crossing (``_crossing.c``), built with the compiled data path by
# ``packaging/build_native.py``: a guest call and a host function's callback without
# ctypes' per-call conversions and libffi. Without it (plain Python, or no compiler)
# the same crossings go through the ctypes entry points above.
_crossing: Any = None
try:
    # by name: a C module is no node of the import graph (tests/test_architecture.py)
    _crossing_c: Any = importlib.import_module("host.wasm._crossing")
    _crossing_c.bind(
        _entry_address("wasmtime_func_call_unchecked"),
        _entry_address("wasmtime_linker_define_func_unchecked"),
        _entry_address("wasmtime_trap_new"),
        _entry_address("wasmtime_context_set_epoch_deadline"),
        _entry_address("wasmtime_engine_increment_epoch"),
    )
    _crossing = _crossing_c
except ImportError:
    pass


def crossing() -> str:
    """How guest and host calls cross: ``"C"`` (the compiled crossing) or ``"ctypes"``."""
    return "C" if _crossing is not None else "ctypes"


class _PyMemory:
    """The plain-Python twin of ``_crossing.Memory``: checked access through a ctypes
    view of [base, base+size). Outside the window a read returns None and a write
    returns False, touching nothing."""

    def __init__(self) -> None:
        self._size = 0
        self._view: memoryview = memoryview(b"")
        self._chars: Any = b""  # a c_char array: its slice is a bytes copy at once

    def remap(self, base: int, size: int) -> None:
        if base and size:
            self._view = memoryview((ctypes.c_ubyte * size).from_address(base)).cast("B")
            self._chars = (ctypes.c_char * size).from_address(base)
            self._size = size
        else:
            self._view, self._chars, self._size = memoryview(b""), b"", 0

    def _inside(self, ptr: int, n: int) -> bool:
        return ptr >= 0 and n >= 0 and ptr + n <= self._size

    def read(self, ptr: int, n: int) -> bytes | None:
        if not self._inside(ptr, n):
            return None
        chars: bytes = self._chars[ptr : ptr + n]
        return chars

    def read_u32(self, ptr: int) -> int | None:
        if not self._inside(ptr, 4):
            return None
        return int.from_bytes(self._view[ptr : ptr + 4], "little")

    def write(self, ptr: int, data: bytes | bytearray | memoryview) -> bool:
        n = len(data)
        if not self._inside(ptr, n):
            return False
        self._view[ptr : ptr + n] = data
        return True

    def write_u32(self, ptr: int, value: int) -> bool:
        if not self._inside(ptr, 4):
            return False
        self._view[ptr : ptr + 4] = (value & 0xFFFFFFFF).to_bytes(4, "little")
        return True

    def write_u64(self, ptr: int, value: int) -> bool:
        if not self._inside(ptr, 8):
            return False
        self._view[ptr : ptr + 8] = (value & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")
        return True


_WORDS_PER_SLOT = 4  # sizeof(wasmtime_val_raw_t) == 16
_MAX_FRAMES = 32  # a stack overflow yields thousands; keep the top of the stack
_MAX_SLOTS = 16


_VALTYPES: dict[str, Callable[[], wasmtime.ValType]] = {
    "i32": wasmtime.ValType.i32,
    "i64": wasmtime.ValType.i64,
    "f32": wasmtime.ValType.f32,
    "f64": wasmtime.ValType.f64,
}


class LoadError(Exception):
    """The bytes are not a module this host can load (bad magic, invalid, unlinkable)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class GuestFault(Exception):
    """A pointer or length from the guest points outside its linear memory.

    Host functions raise it from the memory helpers; the trampoline turns it into
    the function's fault status (INVALID_MEMORY_ACCESS, or WASI's FAULT) so it
    never becomes a Python exception in the process.
    """


class ProcExit(Exception):
    """The guest called WASI ``proc_exit``; unwinds the guest as a trap."""

    def __init__(self, code: int) -> None:
        super().__init__(f"proc_exit({code})")
        self.code = code


class CallFailed(Exception):
    """A guest call trapped (or a host function raised): the VM must be failed.
    (A plain class, not a dataclass: mypyc compiles no dataclass exception.)"""

    def __init__(self, kind: str, message: str, backtrace: tuple[str, ...] = ()) -> None:
        super().__init__(kind, message, backtrace)
        # wasmtime trap code name ("unreachable", "interrupt", ...) or host kind
        self.kind = kind
        self.message = message
        self.backtrace = backtrace

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CallFailed) and (self.kind, self.message, self.backtrace) == (
            other.kind,
            other.message,
            other.backtrace,
        )

    def __hash__(self) -> int:
        return hash((self.kind, self.message, self.backtrace))


# --- engine -------------------------------------------------------------------------


def user_cache_root() -> Path:
    """Wasmdesk's cache directory: ``WASMDESK_CACHE_DIR``, else the platform's user cache
    directory (``platformdirs``: ``~/.cache/wasmdesk`` on Linux, honouring XDG)."""
    base = os.environ.get("WASMDESK_CACHE_DIR")
    if base:
        return Path(base)
    import platformdirs

    return platformdirs.user_cache_path("wasmdesk", appauthor=False)


def _default_cache_dir() -> Path:
    if os.environ.get("WASMDESK_CACHE_DIR"):
        return user_cache_root()
    return user_cache_root() / "modules"


class Engine:
    """A wasmtime engine with epoch interruption and an on-disk compiled-module cache.

    One engine serves every VM of a process. A daemon thread bumps the engine's
    epoch every ``tick_ms``; each outermost guest call gets a deadline of
    ``ceil(callback_timeout_ms / tick_ms)`` ticks, so a runaway callback traps with
    ``interrupt`` within about one tick of its budget.
    """

    TICK_MS = 5

    def __init__(self, cache_dir: Path | bool | None = None, c_ticker: bool = True) -> None:
        cfg = wasmtime.Config()
        cfg.epoch_interruption = True
        cfg.memory_may_move = False
        cfg.cranelift_opt_level = "speed"
        self._wt = wasmtime.Engine(cfg)
        self._engine_addr = ctypes.cast(self._wt.ptr(), ctypes.c_void_p).value
        if cache_dir is False:
            self.cache_dir: Path | None = None
        else:
            self.cache_dir = cache_dir if isinstance(cache_dir, Path) else _default_cache_dir()
        self._epoch = 0  # the Python ticker's count of the engine's epoch
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._c_ticker: Any = None  # the C crossing's ticker thread, when it is built
        self._c_ticker_wanted = c_ticker  # False: the Python thread (for tests)
        # the C ticker's count: a u64 it bumps, read through a memoryview (a memory
        # read, not a call: the epoch is read 2-3 times per guest call)
        self._c_cell = (ctypes.c_uint64 * 1)()
        self._c_ticks: Any = memoryview(self._c_cell).cast("B").cast("Q")
        self._lock = threading.Lock()
        self.stats = {"compiled": 0, "cache_hits": 0, "cache_misses": 0, "cache_errors": 0}
        # Outermost guest calls keep the GIL when this is set and the native ticker runs
        # (it enforces deadlines without the GIL): for a process where no other Python
        # thread must run while a plugin does (``wasmdesk serve``). The app leaves it
        # off, so its window stays responsive while a slow plugin runs.
        self.hold_gil = False

    @property
    def wasmtime_engine(self) -> wasmtime.Engine:
        return self._wt

    def deadline_ticks(self, timeout_ms: float) -> int:
        return max(1, int(-(-timeout_ms // self.TICK_MS)) + 1)

    @property
    def native_ticker(self) -> bool:
        """Whether the C ticker runs (it needs no GIL to interrupt a guest)."""
        return self._c_ticker is not None

    @property
    def calls_keep_gil(self) -> bool:
        """Whether an outermost guest call keeps the GIL (``hold_gil`` and a native
        ticker); a nested one keeps it whenever the native ticker runs."""
        return self.hold_gil and self._c_ticker is not None

    @property
    def epoch(self) -> int:
        """The engine's epoch, as far as its ticker has bumped it."""
        if self._c_ticker is not None:
            ticks: int = self._c_ticks[0]  # a checked cast; int() would be a generic call
            return ticks
        return self._epoch

    def ensure_ticker(self) -> None:
        """Start the epoch ticker: a native thread from the C crossing when it is built
        (it needs no GIL, so it never takes the interpreter from the data path), else a
        Python daemon thread."""
        with self._lock:
            if self._ticker is not None or self._c_ticker is not None or self._stop.is_set():
                return
            if _crossing is not None and self._c_ticker_wanted:
                self._c_ticker = _crossing.ticker_start(
                    self._engine_addr,
                    self.TICK_MS * 1000,
                    ctypes.addressof(self._c_cell),
                    (self._wt, self._c_cell),
                )
                return
            t = threading.Thread(target=self._tick_loop, name="wasmdesk-epoch", daemon=True)
            self._ticker = t
            t.start()

    def _tick_loop(self) -> None:
        interval = self.TICK_MS / 1000.0
        addr = self._engine_addr
        while not self._stop.wait(interval):
            _INCREMENT_EPOCH(addr)
            self._epoch += 1

    def close(self) -> None:
        with self._lock:
            self._stop.set()
            c = self._c_ticker
        if c is not None:
            _crossing.ticker_stop(c)  # its count stays readable
        t = self._ticker
        if t is not None:
            t.join(timeout=1.0)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- modules --

    def compile(self, wasm: object) -> Module:
        """Validate and compile ``wasm`` (cached on disk by sha256); anything but bytes is
        refused as ``not_wasm``."""
        if not isinstance(wasm, (bytes, bytearray)):
            raise LoadError("not_wasm", "module must be given as bytes")
        wasm = bytes(wasm)
        if len(wasm) < 8 or wasm[:4] != WASM_MAGIC:
            raise LoadError(
                "not_wasm",
                "not a WebAssembly module (missing \\0asm magic)"
                + (f"; starts with {wasm[:4]!r}" if wasm else "; file is empty"),
            )
        if wasm[4:8] != b"\x01\x00\x00\x00":
            raise LoadError(
                "not_wasm",
                f"unsupported WebAssembly binary version {int.from_bytes(wasm[4:8], 'little')}"
                " (a component, or not a core module)",
            )
        digest = hashlib.sha256(wasm).hexdigest()
        cached = self._load_cached(digest)
        if cached is not None:
            return Module(self, cached, wasm, digest, from_cache=True)
        try:
            wasmtime.Module.validate(self._wt, wasm)
            wt_module = wasmtime.Module(self._wt, wasm)
        except wasmtime.WasmtimeError as e:
            raise LoadError("invalid", f"invalid WebAssembly module: {_first_line(str(e))}") from e
        self.stats["compiled"] += 1
        self._store_cached(digest, wt_module)
        return Module(self, wt_module, wasm, digest, from_cache=False)

    def _cache_path(self, digest: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{digest}-wasmtime{_WASMTIME_VERSION}.cwasm"

    def _load_cached(self, digest: str) -> wasmtime.Module | None:
        path = self._cache_path(digest)
        if path is None or not path.is_file():
            if path is not None:
                self.stats["cache_misses"] += 1
            return None
        try:
            # Read into memory rather than deserialize_file: that maps the file, and a
            # cache file truncated or rewritten by another tool while the module is in
            # use would then kill the process with SIGBUS.
            module = wasmtime.Module.deserialize(self._wt, path.read_bytes())
        except Exception:
            # A stale or truncated entry (another wasmtime build, a crash mid-write):
            # drop it and compile again.
            self.stats["cache_errors"] += 1
            try:
                path.unlink()
            except OSError:
                pass
            return None
        self.stats["cache_hits"] += 1
        return module

    def _store_cached(self, digest: str, module: wasmtime.Module) -> None:
        path = self._cache_path(digest)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            data = module.serialize()
            tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError:
            self.stats["cache_errors"] += 1


def trap_reason(message: str) -> str:
    """The cause of a wasmtime trap/error message, without its backtrace block."""
    if "Caused by:" in message:
        tail = message.split("Caused by:", 1)[1]
        parts = []
        for ln in tail.strip().splitlines():
            ln = ln.strip()
            head, sep, rest = ln.partition(": ")
            parts.append(rest if sep and head.isdigit() else ln)
        return "; ".join(p for p in parts if p)
    return _first_line(message)


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return text
    # wasmtime's errors read "error: ...\n\nCaused by:\n    0: ..."; keep the cause too.
    causes = [ln.split(":", 1)[1].strip() for ln in lines[1:] if ln[:1].isdigit() and ":" in ln]
    return "; ".join([lines[0], *causes]) if causes else lines[0]


@dataclass(frozen=True)
class Import:
    module: str
    name: str
    kind: str  # "func", "memory", "table", "global"
    params: tuple[str, ...] = ()
    results: tuple[str, ...] = ()


@dataclass(frozen=True)
class Export:
    name: str
    kind: str
    params: tuple[str, ...] = ()
    results: tuple[str, ...] = ()


def _valtype_name(v: wasmtime.ValType) -> str:
    return str(v)


def _kind_of(ty: object) -> str:
    if isinstance(ty, wasmtime.FuncType):
        return "func"
    if isinstance(ty, wasmtime.MemoryType):
        return "memory"
    if isinstance(ty, wasmtime.TableType):
        return "table"
    if isinstance(ty, wasmtime.GlobalType):
        return "global"
    return "other"


class Module:
    """A compiled module plus what ``inspect`` needs to know about it."""

    def __init__(
        self, engine: Engine, wt: wasmtime.Module, wasm: bytes, sha256: str, *, from_cache: bool
    ) -> None:
        self.engine = engine
        self.wt = wt
        self.size = len(wasm)
        self.sha256 = sha256
        self.from_cache = from_cache
        self.imports: tuple[Import, ...] = tuple(self._imports())
        self.exports: tuple[Export, ...] = tuple(self._exports())
        self._wasm = wasm

    @property
    def wasm(self) -> bytes:
        return self._wasm

    def _imports(self) -> Iterable[Import]:
        for imp in self.wt.imports:
            ty = imp.type
            if isinstance(ty, wasmtime.FuncType):
                yield Import(
                    imp.module,
                    imp.name or "",
                    "func",
                    tuple(_valtype_name(p) for p in ty.params),
                    tuple(_valtype_name(r) for r in ty.results),
                )
            else:
                yield Import(imp.module, imp.name or "", _kind_of(ty))

    def _exports(self) -> Iterable[Export]:
        for exp in self.wt.exports:
            ty = exp.type
            if isinstance(ty, wasmtime.FuncType):
                yield Export(
                    exp.name,
                    "func",
                    tuple(_valtype_name(p) for p in ty.params),
                    tuple(_valtype_name(r) for r in ty.results),
                )
            else:
                yield Export(exp.name, _kind_of(ty))

    def export(self, name: str) -> Export | None:
        for e in self.exports:
            if e.name == name:
                return e
        return None


# --- host functions -----------------------------------------------------------------


@dataclass(frozen=True)
class HostFunction:
    """One import the host provides: its signature and its Python implementation.

    ``impl(owner, *args)`` receives i32 arguments as unsigned ints and i64 ones as
    unsigned 64-bit ints; it returns an int for a function with one result, None for
    none. ``fault`` is the status returned when the implementation raises
    ``GuestFault`` (a bad guest pointer).
    """

    module: str
    name: str
    params: tuple[str, ...]
    results: tuple[str, ...]
    impl: Callable[..., int | None]
    fault: int = 6


def _trampoline_source(params: Sequence[str], results: Sequence[str]) -> str:
    args = []
    for i, kind in enumerate(params):
        w = i * _WORDS_PER_SLOT
        if kind in ("i32", "f32"):
            args.append(f"p[{w}]")
        else:
            args.append(f"(p[{w}] | (p[{w + 1}] << 32))")
    call = f"impl(owner{''.join(', ' + a for a in args)})"
    lines = [
        "def make(impl, owner, fault, on_error, name):",
        "    def cb(env, caller, p, n):",
        "        try:",
    ]
    if not results:
        lines.append(f"            {call}")
    elif results[0] in ("i32", "f32"):
        lines.append(f"            p[0] = {call} & 0xFFFFFFFF")
    else:
        lines += [
            f"            r = {call} & 0xFFFFFFFFFFFFFFFF",
            "            p[0] = r & 0xFFFFFFFF",
            "            p[1] = r >> 32",
        ]
    lines.append("            return 0")
    lines.append("        except GuestFault:")
    if results:
        lines.append("            p[0] = fault")
    lines.append("            return 0")
    lines.append("        except BaseException as e:")
    lines.append("            return on_error(name, e)")
    lines.append("    return cb")
    return "\n".join(lines)


_TRAMPOLINE_FACTORIES: dict[tuple[tuple[str, ...], tuple[str, ...]], Callable[..., Any]] = {}


class _I32Trampoline:
    """The raw callback of a host function whose parameters are all i32 (up to six) and
    which returns one i32 or nothing: every per-request Proxy-Wasm host function. The
    same as the generated ``cb`` of ``_trampoline_source``, but a compiled class (with
    the data path compiled, the generated one is an interpreted frame per host call)."""

    def __init__(
        self,
        impl: Callable[..., int | None],
        owner: object,
        fault: int,
        on_error: Callable[[str, BaseException], int],
        name: str,
        nparams: int,
        returns: bool,
    ) -> None:
        self.impl: Callable[..., Any] = impl  # its int result is masked, None ignored
        self.owner = owner
        self.fault = fault
        self.on_error = on_error
        self.name = name
        self.nparams = nparams
        self.returns = returns

    def __call__(self, env: object, caller: object, p: Any, n: int) -> int:
        impl = self.impl
        owner = self.owner
        k = self.nparams
        try:
            # slot i of the args-and-results array starts at u32 word 4*i
            if k == 5:
                r = impl(owner, p[0], p[4], p[8], p[12], p[16])
            elif k == 3:
                r = impl(owner, p[0], p[4], p[8])
            elif k == 4:
                r = impl(owner, p[0], p[4], p[8], p[12])
            elif k == 2:
                r = impl(owner, p[0], p[4])
            elif k == 1:
                r = impl(owner, p[0])
            elif k == 6:
                r = impl(owner, p[0], p[4], p[8], p[12], p[16], p[20])
            else:
                r = impl(owner)
            if self.returns:
                p[0] = r & 0xFFFFFFFF
            return 0
        except GuestFault:
            if self.returns:
                p[0] = self.fault
            return 0
        except BaseException as e:
            return self.on_error(self.name, e)


def _trampoline(
    hf: HostFunction, owner: object, on_error: Callable[[str, BaseException], int]
) -> Callable[..., int]:
    """The Python callable behind ``hf``'s raw ctypes callback."""
    if _all_i32(hf) and len(hf.params) <= 6:
        return _I32Trampoline(
            hf.impl, owner, hf.fault, on_error, hf.name, len(hf.params), bool(hf.results)
        )
    fac = _trampoline_factory(hf.params, hf.results)
    cb: Callable[..., int] = fac(hf.impl, owner, hf.fault, on_error, hf.name)
    return cb


def _all_i32(hf: HostFunction) -> bool:
    """Up to 8 i32 parameters and one i32 result or none: every Proxy-Wasm host
    function of the per-request path (the C crossing's shape)."""
    return (
        len(hf.params) <= 8
        and all(p == "i32" for p in hf.params)
        and (hf.results == () or hf.results == ("i32",))
    )


def _trampoline_factory(params: tuple[str, ...], results: tuple[str, ...]) -> Callable[..., Any]:
    key = (params, results)
    fac = _TRAMPOLINE_FACTORIES.get(key)
    if fac is None:
        ns: dict[str, Any] = {"GuestFault": GuestFault}
        exec(_trampoline_source(params, results), ns)  # generated per signature shape
        fac = ns["make"]
        _TRAMPOLINE_FACTORIES[key] = fac
    return fac


# --- instances ----------------------------------------------------------------------


@dataclass
class RawFunc:
    """A guest export resolved for the unchecked call path."""

    name: str
    addr: int  # address of the wasmtime_func_t struct (kept alive by ``holder``)
    nparams: int
    nresults: int
    holder: Any = field(repr=False, default=None)
    n: int = 0  # length of the args-and-results array
    # ``addr`` and ``n`` as the ctypes arguments of ``_CALL_PREPARED``
    c_addr: Any = field(repr=False, compare=False, default=None)
    c_n: Any = field(repr=False, compare=False, default=None)
    # ``addr`` and ``n`` as Python ints made once, for the C crossing (compiled code
    # would make a new int object from a native one per call)
    addr_obj: Any = field(repr=False, compare=False, default=None)
    n_obj: Any = field(repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        self.n = max(self.nparams, self.nresults)
        self.c_addr = ctypes.c_void_p(self.addr)
        self.c_n = ctypes.c_size_t(self.n)
        self.addr_obj = self.addr
        self.n_obj = self.n


def _u32_view(arr: Any) -> memoryview:
    """A u32 memoryview over a ctypes array (it keeps the array alive)."""
    return memoryview(arr).cast("B").cast("I")


class Instance:
    """One module instantiated in its own Store, with its host functions bound to ``owner``.

    ``owner`` is what every host function receives first (the Proxy-Wasm VM object).
    """

    def __init__(
        self,
        module: Module,
        functions: Iterable[HostFunction],
        owner: object,
        *,
        memory_limit_bytes: int,
        stub_result: Callable[[Import], int],
        start_deadline_ticks: int = 1000,
        c_crossing: bool = True,
    ) -> None:
        self.module = module
        # the C crossing's call (None: ctypes); c_crossing=False is for tests
        self._fast: Any = _crossing.call if (_crossing is not None and c_crossing) else None
        self.engine = module.engine
        self._closed = False
        self._mem_struct_addr = 0
        self._mem_base = 0
        self.mem_size = 0
        self.mem: memoryview = memoryview(b"")
        # every host function's accesses go through the window's bound methods (a C
        # call each with the C crossing); _map_memory keeps it on the memory
        window: Any = (
            _crossing.Memory() if (_crossing is not None and c_crossing) else _PyMemory()
        )
        self._window = window
        self._win_read: Callable[[int, int], bytes | None] = window.read
        self._win_read_u32: Callable[[int], int | None] = window.read_u32
        self._win_write: Callable[[int, bytes | bytearray | memoryview], bool] = window.write
        self._win_write_u32: Callable[[int, int], bool] = window.write_u32
        self._win_write_u64: Callable[[int, int], bool] = window.write_u64
        self._callbacks: list[Any] = []
        self._functypes: list[wasmtime.FuncType] = []
        self.host_error: BaseException | None = None
        self.proc_exit_code: int | None = None
        self.stubbed: list[Import] = []
        self.stub_calls: list[str] = []
        self.missing: list[Import] = []

        wt_engine = self.engine.wasmtime_engine
        self.store = wasmtime.Store(wt_engine)
        self.store.set_limits(memory_size=memory_limit_bytes)
        # A module's start section runs inside instantiate: give it a budget too.
        self.store.set_epoch_deadline(start_deadline_ticks)
        self._ctx = ctypes.cast(self.store._context(), ctypes.c_void_p).value
        self.linker = wasmtime.Linker(wt_engine)
        self.linker.allow_shadowing = True
        linker_addr = ctypes.cast(self.linker.ptr(), ctypes.c_void_p).value

        by_name = {(f.module, f.name): f for f in functions}
        for imp in module.imports:
            if imp.kind != "func":
                if imp.kind == "memory":
                    self.missing.append(imp)
                    continue
                self.missing.append(imp)
                continue
            hf = by_name.get((imp.module, imp.name))
            if hf is not None and (hf.params, hf.results) == (imp.params, imp.results):
                self._define(linker_addr, hf, owner)
                continue
            # Unknown import, or a known name with another signature (the AS SDK's
            # 10-param proxy_grpc_call, cpp-host's arity bugs): a stub of the import's
            # own type that answers an error, so an unused import never blocks loading.
            self.stubbed.append(imp)
            self._define(linker_addr, self._stub(imp, stub_result(imp)), owner)
        if self.missing:
            names = ", ".join(f"{m.module}.{m.name} ({m.kind})" for m in self.missing)
            self._delete_store()
            raise LoadError(
                "unsatisfiable_import", f"module imports what no host provides: {names}"
            )
        try:
            self.wt_instance = self.linker.instantiate(self.store, module.wt)
        except wasmtime.Trap as e:
            self._delete_store()
            raise LoadError(
                "start_trap", f"module start function trapped: {_first_line(e.message)}"
            ) from e
        except wasmtime.WasmtimeError as e:
            self._delete_store()
            raise LoadError(
                "instantiate", f"cannot instantiate module: {_first_line(str(e))}"
            ) from e

        exports = self.wt_instance.exports(self.store)
        self._exports = exports
        mem = exports.get("memory")
        if not isinstance(mem, wasmtime.Memory):
            mem = None
            for _name, item in exports.items():
                if isinstance(item, wasmtime.Memory):
                    mem = item
                    break
        self._memory = mem
        self._mem_struct_addr = ctypes.addressof(mem._memory) if mem is not None else 0
        self._mem_limit = memory_limit_bytes
        if mem is not None:
            self._map_memory()
        # call buffers (args and results; a spare one for re-entrant calls), trap slot
        self._buf = (ctypes.c_uint32 * (_WORDS_PER_SLOT * _MAX_SLOTS))()
        self._buf2 = (ctypes.c_uint32 * (_WORDS_PER_SLOT * _MAX_SLOTS))()
        self._buf2_addr = ctypes.addressof(self._buf2)
        self._trap_slot2 = ctypes.c_void_p()
        self._deadline_epoch = -1
        self._buf_addr = ctypes.addressof(self._buf)
        self._trap_slot = ctypes.c_void_p()
        self._trap_addr = ctypes.addressof(self._trap_slot)
        # the same addresses as ctypes arguments (see _CALL_PREPARED)
        self._c_ctx = ctypes.c_void_p(self._ctx)
        self._c_buf = ctypes.c_void_p(self._buf_addr)
        self._c_trap = ctypes.c_void_p(self._trap_addr)
        self._c_buf2 = ctypes.c_void_p(self._buf2_addr)
        self._trap2_addr = ctypes.addressof(self._trap_slot2)
        self._c_trap2 = ctypes.c_void_p(self._trap2_addr)
        # the buffers as u32 memoryviews: an item access is several times cheaper than a
        # ctypes array's (which goes through the field's set/get functions)
        self._words = _u32_view(self._buf)
        self._words2 = _u32_view(self._buf2)
        self._deep: list[tuple[Any, Any]] = []  # buffers of calls nested deeper than 1
        # the addresses the C crossing takes, as Python ints made once (see RawFunc)
        self._ctx_obj: object = self._ctx
        self._buf_obj: object = self._buf_addr
        self._trap_obj: object = self._trap_addr
        self._buf2_obj: object = self._buf2_addr
        self._trap2_obj: object = self._trap2_addr
        self.depth = 0

    # -- linking --

    def _define(self, linker_addr: int | None, hf: HostFunction, owner: object) -> None:
        ft = wasmtime.FuncType(
            [_VALTYPES[p]() for p in hf.params], [_VALTYPES[r]() for r in hf.results]
        )
        self._functypes.append(ft)
        mod_b = hf.module.encode()
        name_b = hf.name.encode()
        ft_addr = ctypes.cast(ft.ptr(), ctypes.c_void_p).value
        if self._fast is not None and _all_i32(hf):
            # wasmtime owns the C callback's references from here (it drops them
            # with the definition)
            err = _crossing.define(
                linker_addr or 0,
                mod_b,
                name_b,
                ft_addr or 0,
                hf.impl,
                owner,
                self._on_host_error,
                hf.name,
                GuestFault,
                hf.fault,
                len(hf.params),
                bool(hf.results),
            )
        else:
            cb = _RAW_CALLBACK(_trampoline(hf, owner, self._on_host_error))
            self._callbacks.append(cb)
            err = _DEFINE_UNCHECKED(
                linker_addr, mod_b, len(mod_b), name_b, len(name_b), ft_addr, cb, None, None
            )
        if err:
            raise LoadError(
                "link",
                f"cannot define {hf.module}.{hf.name}: "
                + str(
                    wasmtime.WasmtimeError._from_ptr(
                        ctypes.cast(err, ctypes.POINTER(ffi.wasmtime_error_t))
                    )
                ),
            )

    def _stub(self, imp: Import, result: int) -> HostFunction:
        label = f"{imp.module}.{imp.name}"
        calls = self.stub_calls

        def stub(_owner: object, *_args: int) -> int | None:
            calls.append(label)
            return result if imp.results else None

        return HostFunction(imp.module, imp.name, imp.params, imp.results, stub, result)

    def _on_host_error(self, name: str, exc: BaseException) -> int:
        if isinstance(exc, ProcExit):
            self.proc_exit_code = exc.code
            msg = f"proc_exit({exc.code})"
        else:
            self.host_error = exc
            msg = f"host function {name} failed: {type(exc).__name__}: {exc}"
        raw = msg.encode("utf-8", "replace")
        return int(_TRAP_NEW(raw, len(raw)) or 0)

    # -- exports --

    def func(self, name: str, params: Sequence[str], results: Sequence[str]) -> RawFunc | None:
        """Resolve export ``name`` if it exists with exactly this signature."""
        exp = self.module.export(name)
        if exp is None or exp.kind != "func":
            return None
        if exp.params != tuple(params) or exp.results != tuple(results):
            return None
        item = self._exports.get(name)
        if not isinstance(item, wasmtime.Func):
            return None
        return RawFunc(name, ctypes.addressof(item._func), len(params), len(results), item)

    def has_export(self, name: str) -> bool:
        return self.module.export(name) is not None

    # -- calls --

    def call(self, fn: RawFunc, args: Sequence[int], deadline_ticks: int) -> int | None:
        """Call ``fn`` on the unchecked path; raises ``CallFailed`` on a trap.

        ``deadline_ticks`` is applied to an outermost call: by the C crossing before
        each one (a C call from C is cheap); through ctypes, refreshed only when the
        engine's epoch moved since it was last set (the budget is exact to one tick,
        and the common case costs no extra C call). A re-entrant call (the guest
        allocator from inside a host function) shares its caller's budget.
        """
        if self.depth:
            return self._call_nested(fn, args)
        if self._closed:
            raise CallFailed("closed", "instance is closed")
        fast = self._fast
        if fast is not None:
            self.depth = 1
            r = fast(
                self._ctx_obj,
                fn.addr_obj,
                self._buf_obj,
                fn.n_obj,
                self._trap_obj,
                args,
                deadline_ticks,
                self.engine.calls_keep_gil,
            )
            self.depth = 0
            if isinstance(r, tuple):  # (error, trap): the trap slot is already cleared
                raise self._failure(fn.name, r[0], r[1])
            result: int = r  # a checked cast; int() would be a generic call
            return result if fn.nresults else None
        epoch = self.engine.epoch
        if epoch != self._deadline_epoch:
            _SET_EPOCH_DEADLINE(self._ctx, deadline_ticks)
            self._deadline_epoch = epoch
        buf = self._words
        w = 0
        for a in args:
            buf[w] = a & 0xFFFFFFFF  # what a c_uint32 store keeps
            w += 4
        self.depth = 1
        err = _CALL_PREPARED(self._c_ctx, fn.c_addr, self._c_buf, fn.c_n, self._c_trap)
        self.depth = 0
        if err or self._trap_slot.value:
            trap = self._trap_slot.value
            self._trap_slot.value = None
            self._deadline_epoch = -1
            raise self._failure(fn.name, err, trap)
        return buf[0] if fn.nresults else None

    def _call_nested(self, fn: RawFunc, args: Sequence[int]) -> int | None:
        # Depth 1 → the spare buffer; deeper (an allocator calling a host function that
        # allocates) → a fresh one. The outer call's slots are never touched.
        fast = self._fast
        if fast is not None:
            if self.depth == 1:
                r = self._nested_fast(fast, fn, args, self._buf2_obj, self._trap2_obj)
            else:
                fresh = (ctypes.c_uint32 * (_WORDS_PER_SLOT * _MAX_SLOTS))()
                slot = ctypes.c_void_p()
                # held for the call: compiled code drops a local after its last use, and
                # only the addresses are used below
                self._deep.append((fresh, slot))
                try:
                    r = self._nested_fast(
                        fast, fn, args, ctypes.addressof(fresh), ctypes.addressof(slot)
                    )
                finally:
                    self._deep.pop()
            if isinstance(r, tuple):
                raise self._failure(fn.name, r[0], r[1])
            nested: int = r
            return nested if fn.nresults else None
        if self.depth == 1:
            buf, c_buf, trap_slot = self._words2, self._c_buf2, self._trap_slot2
            c_trap = self._c_trap2
        else:
            fresh = (ctypes.c_uint32 * (_WORDS_PER_SLOT * _MAX_SLOTS))()
            buf = _u32_view(fresh)
            c_buf = ctypes.c_void_p(ctypes.addressof(fresh))
            trap_slot = ctypes.c_void_p()
            c_trap = ctypes.c_void_p(ctypes.addressof(trap_slot))
        w = 0
        for a in args:
            buf[w] = a & 0xFFFFFFFF
            w += 4
        self.depth += 1
        try:
            err = _CALL_PREPARED(self._c_ctx, fn.c_addr, c_buf, fn.c_n, c_trap)
        finally:
            self.depth -= 1
        if err or trap_slot.value:
            trap = trap_slot.value
            trap_slot.value = None
            raise self._failure(fn.name, err, trap)
        return buf[0] if fn.nresults else None

    def _nested_fast(
        self, fast: Any, fn: RawFunc, args: Sequence[int], buf_addr: object, trap_addr: object
    ) -> Any:
        self.depth += 1
        try:
            # the GIL stays held when a native ticker enforces the deadline without it
            return fast(
                self._ctx_obj,
                fn.addr_obj,
                buf_addr,
                fn.n_obj,
                trap_addr,
                args,
                0,
                self.engine.native_ticker,
            )
        finally:
            self.depth -= 1

    def _failure(self, fname: str, err: int | None, trap: int | None) -> CallFailed:
        host_error, self.host_error = self.host_error, None
        frames: list[str] = []
        code = None
        if err:
            e = wasmtime.WasmtimeError._from_ptr(
                ctypes.cast(err, ctypes.POINTER(ffi.wasmtime_error_t))
            )
            message = str(e)
        else:
            t = wasmtime.Trap._from_ptr(ctypes.cast(trap or 0, ctypes.POINTER(ffi.wasm_trap_t)))
            message = t.message
            code = t.trap_code
            try:
                all_frames = t.frames
                keep = all_frames
                if len(all_frames) > _MAX_FRAMES:
                    # Keep both ends: the crash site and the callback the host entered.
                    keep = all_frames[: _MAX_FRAMES // 2] + all_frames[-_MAX_FRAMES // 2 :]
                for i, fr in enumerate(keep):
                    name = fr.func_name or f"func[{fr.func_index}]"
                    off = fr.module_offset
                    frames.append(f"{name} @0x{off:x}" if off < (1 << 63) else name)
                    if i == _MAX_FRAMES // 2 - 1 and len(all_frames) > _MAX_FRAMES:
                        frames.append(f"... {len(all_frames) - _MAX_FRAMES} more frames ...")
            except Exception:  # frames are best effort (no name section, etc.)
                pass
        reason = trap_reason(message)
        if isinstance(host_error, CallFailed):
            # The guest allocator trapped while a host function was copying data out.
            return CallFailed(
                host_error.kind,
                f"{fname}: guest allocator failed: {host_error.message}",
                host_error.backtrace or tuple(frames),
            )
        if host_error is not None:
            return CallFailed(
                "host_error", f"{fname}: {type(host_error).__name__}: {host_error}", tuple(frames)
            )
        if self.proc_exit_code is not None and "proc_exit" in message:
            return CallFailed(
                "proc_exit",
                f"{fname}: guest called proc_exit({self.proc_exit_code})",
                tuple(frames),
            )
        if code is not None:
            kind = code.name.lower()
            if kind == "interrupt":
                reason = "callback exceeded its time budget (epoch deadline)"
            return CallFailed(kind, f"{fname}: {reason}", tuple(frames))
        return CallFailed("trap" if trap else "error", f"{fname}: {reason}", tuple(frames))

    # -- memory --

    def _map_memory(self) -> None:
        if not self._mem_struct_addr:  # no memory export, or the store is gone
            return
        size = int(_MEMORY_DATA_SIZE(self._ctx, self._mem_struct_addr))
        base = int(_MEMORY_DATA(self._ctx, self._mem_struct_addr) or 0)
        if base != self._mem_base or size != self.mem_size:
            self._unmap_memory()
            self._mem_base = base
            self.mem_size = size
            if base and size:
                self.mem = memoryview((ctypes.c_ubyte * size).from_address(base)).cast("B")
            self._window.remap(base, size)

    def _unmap_memory(self) -> None:
        self._mem_base = 0
        self.mem_size = 0
        self.mem = memoryview(b"")
        self._window.remap(0, 0)

    def check(self, ptr: int, size: int) -> None:
        """Raise ``GuestFault`` unless [ptr, ptr+size) is inside linear memory."""
        end = ptr + size
        if ptr < 0 or size < 0 or end > self.mem_size:
            self._map_memory()
            if ptr < 0 or size < 0 or end > self.mem_size:
                raise GuestFault(f"range [{ptr}, {end}) outside memory of {self.mem_size} bytes")

    # Each access tries the window first; one outside it maps the memory again (the
    # guest may have grown it) and tries once more, or raises GuestFault.

    def read(self, ptr: int, size: int) -> bytes:
        data = self._win_read(ptr, size)
        if data is None:
            self.check(ptr, size)
            data = self._win_read(ptr, size)
            if data is None:
                raise GuestFault(f"range [{ptr}, {ptr + size}) outside memory")
        return data

    def write(self, ptr: int, data: bytes | bytearray | memoryview) -> None:
        if not self._win_write(ptr, data):
            self.check(ptr, len(data))
            if not self._win_write(ptr, data):
                raise GuestFault(f"range [{ptr}, {ptr + len(data)}) outside memory")

    def write_u32(self, ptr: int, value: int) -> None:
        if not self._win_write_u32(ptr, value):
            self.check(ptr, 4)
            if not self._win_write_u32(ptr, value):
                raise GuestFault(f"range [{ptr}, {ptr + 4}) outside memory")

    def write_u64(self, ptr: int, value: int) -> None:
        if not self._win_write_u64(ptr, value):
            self.check(ptr, 8)
            if not self._win_write_u64(ptr, value):
                raise GuestFault(f"range [{ptr}, {ptr + 8}) outside memory")

    def read_u32(self, ptr: int) -> int:
        value = self._win_read_u32(ptr)
        if value is None:
            self.check(ptr, 4)
            value = self._win_read_u32(ptr)
            if value is None:
                raise GuestFault(f"range [{ptr}, {ptr + 4}) outside memory")
        return value

    def memory_pages(self) -> int:
        self._map_memory()
        return self.mem_size // WASM_PAGE

    # -- lifecycle --

    def _delete_store(self) -> None:
        store = getattr(self, "store", None)
        if store is not None:
            # nothing reads or writes the freed memory, nor asks the gone store for it
            self._mem_struct_addr = 0
            self._unmap_memory()
            store.close()
        self.linker.close()

    def close(self) -> None:
        """Delete the Store, then the linker, then (last) the callbacks it references."""
        if self._closed:
            return
        self._closed = True
        self._exports = None  # type: ignore[assignment]
        self.wt_instance = None  # type: ignore[assignment]
        self._delete_store()
        self._callbacks.clear()
        self._functypes.clear()

    def __enter__(self) -> Instance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
