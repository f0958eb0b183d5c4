"""The SDK guess of ``inspect`` (host/wasm/module_info.py): named only from evidence the
module carries, "unknown" otherwise, the evidence reported.

Modules: the AssemblyScript-built demo plugins, the zig-built C plugins, and WAT modules
with exactly the imports, exports, function names and custom sections each toolchain
leaves (WAT: no SDK of these toolchains can be installed here).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from host.wasm.module_info import describe
from host.wasm.runtime import Engine
from tests.fixtures.wat_modules import compile_wat

ROOT = Path(__file__).resolve().parents[3]


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _name(s: str) -> bytes:
    raw = s.encode()
    return _leb(len(raw)) + raw


def custom_section(name: str, payload: bytes) -> bytes:
    body = _name(name) + payload
    return b"\x00" + _leb(len(body)) + body


def producers(**fields: list[tuple[str, str]]) -> bytes:
    """A tool-conventions producers section: field -> [(name, version)]."""
    payload = _leb(len(fields))
    for field, values in fields.items():
        payload += _name(field.replace("_", "-")) + _leb(len(values))
        for name, version in values:
            payload += _name(name) + _name(version)
    return custom_section("producers", payload)


def module(
    *,
    imports: tuple[tuple[str, str, str], ...] = (),
    exports: tuple[str, ...] = (),
    funcs: tuple[str, ...] = (),
    customs: tuple[bytes, ...] = (),
) -> bytes:
    """A 0.2.1 plugin with ``imports`` (module, name, signature), extra no-op exported
    functions ``exports`` (`() -> ()` unless listed with a signature below), named
    internal functions ``funcs`` (they land in the name section), then custom sections."""
    sigs = {
        "malloc": "(param i32) (result i32) (i32.const 0)",
        "proxy_on_memory_allocate": "(param i32) (result i32) (i32.const 0)",
        "stackSave": "(result i32) (i32.const 0)",
        "stackAlloc": "(param i32) (result i32) (i32.const 0)",
        "stackRestore": "(param i32)",
        "__new": "(param i32 i32) (result i32) (i32.const 0)",
        "__pin": "(param i32) (result i32) (i32.const 0)",
        "__alloc": "(param i32 i32) (result i32) (i32.const 0)",
        "__retain": "(param i32) (result i32) (i32.const 0)",
        "__release": "(param i32)",
    }
    text = "(module\n"
    text += "\n".join(f'(import "{m}" "{n}" (func {sig}))' for m, n, sig in imports)
    text += '\n(memory (export "memory") 1)\n(func (export "proxy_abi_version_0_2_1"))\n'
    text += "\n".join(f'(func (export "{e}") {sigs.get(e, "")})' for e in exports)
    text += "\n" + "\n".join(f"(func ${f})" for f in funcs) + ")"
    return compile_wat(text, "module_info") + b"".join(customs)


@pytest.fixture(scope="module")
def engine() -> Engine:
    e = Engine()
    yield e
    e.close()


def guess(engine: Engine, wasm: bytes) -> tuple[str, list[str]]:
    info = describe(engine.compile(wasm))
    return info.sdk, info.sdk_evidence


EMSCRIPTEN_CPP = module(
    # the shape the old guess called AssemblyScript: wasi_unstable.proc_exit, malloc,
    # no env.abort, no wasi_snapshot_preview1
    imports=(
        ("env", "emscripten_notify_memory_growth", "(param i32)"),
        ("wasi_unstable", "proc_exit", "(param i32)"),
        ("env", "proxy_log", "(param i32 i32 i32) (result i32)"),
    ),
    exports=("malloc", "free", "stackSave", "stackRestore", "stackAlloc", "_initialize"),
    customs=(producers(language=[("C++", "")], processed_by=[("clang", "11.0.0")]),),
)


def test_emscripten_cpp_module_is_not_called_assemblyscript(engine: Engine) -> None:
    sdk, evidence = guess(engine, EMSCRIPTEN_CPP)
    assert sdk == "C++ (proxy-wasm-cpp-sdk, Emscripten)"
    assert "imports env.emscripten_notify_memory_growth" in evidence
    assert "exports stackAlloc, stackRestore, stackSave (Emscripten runtime)" in evidence


def test_the_assemblyscript_demo_plugins_are_named_from_their_runtime_exports(
    engine: Engine,
) -> None:
    sdk, evidence = guess(engine, (ROOT / "resources/plugins/add_header.wasm").read_bytes())
    assert sdk == "AssemblyScript (solo-io/proxy-runtime)"
    assert evidence == ["exports the AssemblyScript runtime (__alloc, __release, __retain)"]


def test_assemblyscript_of_today_from_lib_names_and_source_map(engine: Engine) -> None:
    wasm = module(
        imports=(("env", "abort", "(param i32 i32 i32 i32)"),),
        exports=("__new", "__pin", "__collect", "malloc"),
        funcs=("~lib/rt/itcms/__new", "~lib/string/String#concat"),
        customs=(custom_section("sourceMappingURL", _name("plugin.wasm.map")),),
    )
    sdk, evidence = guess(engine, wasm)
    assert sdk == "AssemblyScript (solo-io/proxy-runtime)"
    assert evidence == [
        "exports the AssemblyScript runtime (__new, __pin)",
        "~lib/ functions in the name section",
        "custom section sourceMappingURL (asc --sourceMap)",
    ]


@pytest.mark.parametrize(
    "wasm, sdk, why",
    [
        (
            module(
                exports=("proxy_on_memory_allocate", "_initialize"),
                customs=(producers(language=[("Rust", "")], processed_by=[("rustc", "1.79")]),),
            ),
            "Rust (proxy-wasm crate)",
            "producers section names rustc",
        ),
        (
            module(
                exports=("proxy_on_memory_allocate", "_initialize"),
                funcs=("_ZN10proxy_wasm10dispatcher10Dispatcher3new17h0123456789abcdefE",),
            ),
            "Rust (proxy-wasm crate)",
            "Rust symbols of the proxy_wasm crate in the name section",
        ),
        (
            module(
                imports=(("wasi_snapshot_preview1", "fd_write", "(param i32 i32 i32 i32) (result i32)"),),
                exports=("_start", "malloc", "proxy_on_memory_allocate"),
                customs=(producers(processed_by=[("TinyGo", "0.33.0")]),),
            ),
            "Go (TinyGo)",
            "producers section names TinyGo",
        ),
        (
            module(
                imports=(("wasi_snapshot_preview1", "fd_write", "(param i32 i32 i32 i32) (result i32)"),),
                exports=("_initialize", "malloc"),
                funcs=("runtime.schedinit", "runtime.mallocgc"),
            ),
            "Go 1.24+ (wasip1, c-shared)",
            "Go runtime functions (runtime.*) in the name section; exports _initialize",
        ),
        (
            module(
                exports=("malloc", "_initialize"),
                customs=(producers(language=[("C11", "")], processed_by=[("clang", "19.1")]),),
            ),
            "C/C++ (clang: wasi-sdk or zig)",
            "producers: clang 19.1",
        ),
    ],
    ids=["rust-producers", "rust-symbols", "tinygo", "go-1.24", "clang"],
)
def test_each_toolchain_is_named_from_its_own_evidence(
    engine: Engine, wasm: bytes, sdk: str, why: str
) -> None:
    got, evidence = guess(engine, wasm)
    assert got == sdk
    assert why in evidence


def test_a_module_without_toolchain_evidence_is_unknown(engine: Engine) -> None:
    # zig-built C in the Rust SDK's module shape: no producers, no names; the shape alone
    # (proxy_on_memory_allocate + _initialize) fits Rust and Go 1.24 alike.
    sdk, evidence = guess(engine, (ROOT / "resources/plugins/c/rust_strict.wasm").read_bytes())
    assert sdk == "unknown"
    assert evidence[0] == "no toolchain-specific evidence"
    assert any("Rust and Go 1.24" in e for e in evidence)


def test_conflicting_evidence_is_unknown_and_lists_both(engine: Engine) -> None:
    wasm = module(
        imports=(("env", "emscripten_notify_memory_growth", "(param i32)"),),
        exports=("__new", "__pin", "__collect", "malloc"),
    )
    sdk, evidence = guess(engine, wasm)
    assert sdk == "unknown"
    assert evidence[0] == "conflicting evidence"
    assert any(e.startswith("C++ (proxy-wasm-cpp-sdk, Emscripten): ") for e in evidence)
    assert any(e.startswith("AssemblyScript (solo-io/proxy-runtime): ") for e in evidence)
