"""What ``wasmdesk inspect`` reports about a module: ABI, likely SDK, callbacks, imports.

Reads the compiled module's import/export lists and the raw binary's custom
sections (``producers``, ``name``) to guess which SDK built it. No instantiation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from host.wasm.abi import FUNCTIONS
from host.wasm.runtime import Module
from host.wasm.vm import WASI_MODULES, export_signature_problems, load_abi

__all__ = ["ModuleInfo", "describe", "read_custom_sections"]

_CALLBACK_PREFIXES = ("proxy_on_", "proxy_validate_configuration")
_LIFECYCLE = ("_initialize", "_start", "main", "__main_void", "malloc", "free")

_PROVIDED_SIGS = {(f.module, f.name): (f.params, f.results) for f in FUNCTIONS}


def _leb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def read_custom_sections(wasm: bytes) -> dict[str, bytes]:
    """Custom sections by name (first of each); tolerant of truncation."""
    out: dict[str, bytes] = {}
    pos = 8
    n = len(wasm)
    try:
        while pos < n:
            sid = wasm[pos]
            size, pos = _leb(wasm, pos + 1)
            end = pos + size
            if sid == 0:
                nlen, p = _leb(wasm, pos)
                name = wasm[p : p + nlen].decode("utf-8", "replace")
                out.setdefault(name, wasm[p + nlen : end])
            pos = end
    except IndexError:
        pass
    return out


def _producers(section: bytes) -> dict[str, list[str]]:
    """Parse the tool-conventions ``producers`` section: field -> ["name version", ...]."""
    out: dict[str, list[str]] = {}
    try:
        count, pos = _leb(section, 0)
        for _ in range(count):
            flen, pos = _leb(section, pos)
            fname = section[pos : pos + flen].decode("utf-8", "replace")
            pos += flen
            vcount, pos = _leb(section, pos)
            vals = []
            for _ in range(vcount):
                nlen, pos = _leb(section, pos)
                name = section[pos : pos + nlen].decode("utf-8", "replace")
                pos += nlen
                vlen, pos = _leb(section, pos)
                ver = section[pos : pos + vlen].decode("utf-8", "replace")
                pos += vlen
                vals.append(f"{name} {ver}".strip())
            out[fname] = vals
    except IndexError:
        pass
    return out


@dataclass
class ImportInfo:
    module: str
    name: str
    kind: str
    signature: str
    provided: str  # "yes", "stub" (unknown: answers an error), "signature-mismatch", "no"

    def to_dict(self) -> dict[str, str]:
        return {
            "module": self.module,
            "name": self.name,
            "kind": self.kind,
            "signature": self.signature,
            "provided": self.provided,
        }


@dataclass
class ModuleInfo:
    sha256: str
    size: int
    abi: str | None
    sdk: str
    sdk_evidence: list[str]
    callbacks: list[str]
    lifecycle: list[str]
    other_exports: list[str]
    imports: list[ImportInfo]
    producers: dict[str, list[str]] = field(default_factory=dict)
    memory_export: bool = True
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "sha256": self.sha256,
            "size": self.size,
            "abi": self.abi,
            "sdk": self.sdk,
            "sdk_evidence": self.sdk_evidence,
            "callbacks": self.callbacks,
            "lifecycle_exports": self.lifecycle,
            "other_exports": self.other_exports,
            "imports": [i.to_dict() for i in self.imports],
            "producers": self.producers,
            "warnings": self.warnings,
        }


_EMSCRIPTEN_EXPORTS = (
    "stackSave",
    "stackRestore",
    "stackAlloc",
    "emscripten_stack_get_end",
    "emscripten_stack_init",
)
_AS_RUNTIME_EXPORTS = ("__new", "__pin", "__unpin", "__alloc", "__retain", "__release")
_SDK_NAMES = {
    "emscripten": "C++ (proxy-wasm-cpp-sdk, Emscripten)",
    "as": "AssemblyScript (solo-io/proxy-runtime)",
    "tinygo": "Go (TinyGo)",
    "go": "Go 1.24+ (wasip1, c-shared)",
    "rust": "Rust (proxy-wasm crate)",
}


def _guess_sdk(
    module: Module, producers: dict[str, list[str]], names: set[str], customs: dict[str, bytes]
) -> tuple[str, list[str]]:
    """The SDK that built ``module``, from evidence it carries, and that evidence.

    Only toolchain-specific evidence names an SDK (the producers section, runtime
    functions and symbols a toolchain always leaves, Emscripten's imports). When
    nothing specific is there, or two toolchains' evidence conflict, the answer is
    "unknown" with what was seen.
    """
    exports = {e.name for e in module.exports}
    imports = {(i.module, i.name) for i in module.imports}
    tools = [v.lower() for vals in producers.values() for v in vals]
    first_words = {t.split(" ", 1)[0] for t in tools}
    strong: dict[str, list[str]] = {}

    def add(sdk: str, why: str) -> None:
        strong.setdefault(sdk, []).append(why)

    # Emscripten (C++ SDK builds)
    em_imports = sorted(n for m, n in imports if m == "env" and n.startswith("emscripten_"))
    if em_imports:
        add("emscripten", f"imports env.{em_imports[0]}")
    em_exports = sorted(n for n in exports if n in _EMSCRIPTEN_EXPORTS)
    if em_exports:
        add("emscripten", f"exports {', '.join(em_exports)} (Emscripten runtime)")
    if any("emscripten" in t for t in tools):
        add("emscripten", "producers section names Emscripten")
    # AssemblyScript
    as_exports = sorted(n for n in exports if n in _AS_RUNTIME_EXPORTS)
    if as_exports and ("__collect" in exports or "__rtti_base" in exports):
        add("as", f"exports the AssemblyScript runtime ({', '.join(as_exports)})")
    if any(n.startswith("~lib/") for n in names):
        add("as", "~lib/ functions in the name section")
    # Go: TinyGo or the Go toolchain
    go_names = any(n.startswith("runtime.") for n in names)
    if any("tinygo" in t for t in tools):
        add("tinygo", "producers section names TinyGo")
    elif first_words & {"go", "cmd/compile"}:
        add("go", "producers section names the Go toolchain")
    elif go_names and "_initialize" in exports and "_start" not in exports:
        add("go", "Go runtime functions (runtime.*) in the name section; exports _initialize")
    elif go_names:
        add("tinygo", "Go runtime functions (runtime.*) in the name section; no _initialize")
    # Rust
    if first_words & {"rustc", "rust"}:
        add("rust", "producers section names rustc")
    elif any(n.startswith(("_ZN", "_R")) and "proxy_wasm" in n for n in names) or any(
        "proxy_wasm::" in n for n in names
    ):
        add("rust", "Rust symbols of the proxy_wasm crate in the name section")
    if "sourceMappingURL" in customs and (not strong or "as" in strong):
        # Supporting evidence only: other toolchains can emit source maps too.
        add("as", "custom section sourceMappingURL (asc --sourceMap)")
    if len(strong) > 1:
        seen = [f"{_SDK_NAMES[k]}: {w}" for k, ws in strong.items() for w in ws]
        return "unknown", ["conflicting evidence", *seen]
    if strong:
        ((key, why),) = strong.items()
        return _SDK_NAMES[key], why
    clang = [t for t in tools if t.startswith("clang")]
    if clang:
        return "C/C++ (clang: wasi-sdk or zig)", [f"producers: {clang[0]}", "no Emscripten traces"]
    wasi = any(m == "wasi_snapshot_preview1" for m, _ in imports)
    if {"_start", "malloc", "proxy_on_memory_allocate"} <= exports and wasi:
        # TinyGo's -target=wasi command: both allocators and _start; no other SDK has it.
        return "Go (TinyGo)", [
            "exports _start with both proxy_on_memory_allocate and malloc and imports "
            "wasi_snapshot_preview1 (TinyGo's WASI command shape; no producers section)"
        ]
    hints = []
    if "proxy_on_memory_allocate" in exports and "_initialize" in exports:
        hints.append(
            "exports proxy_on_memory_allocate and _initialize (the shape of Rust and Go 1.24 "
            "builds alike)"
        )
    if not producers:
        hints.append("no producers section")
    return "unknown", ["no toolchain-specific evidence", *hints]


def _function_names(name_section: bytes) -> set[str]:
    names: set[str] = set()
    pos = 0
    try:
        while pos < len(name_section):
            sub = name_section[pos]
            size, pos = _leb(name_section, pos + 1)
            end = pos + size
            if sub == 1:
                count, p = _leb(name_section, pos)
                for _ in range(min(count, 5000)):
                    _idx, p = _leb(name_section, p)
                    nlen, p = _leb(name_section, p)
                    names.add(name_section[p : p + nlen].decode("utf-8", "replace"))
                    p += nlen
            pos = end
    except IndexError:
        pass
    return names


def describe(module: Module) -> ModuleInfo:
    customs = read_custom_sections(module.wasm)
    producers = _producers(customs.get("producers", b""))
    fnames = _function_names(customs.get("name", b""))
    abi, abi_warnings = load_abi(module)
    sdk, evidence = _guess_sdk(module, producers, fnames, customs)
    callbacks, lifecycle, other = [], [], []
    memory = False
    for e in module.exports:
        if e.kind == "memory":
            memory = True
            continue
        if e.name.startswith(_CALLBACK_PREFIXES):
            callbacks.append(e.name)
        elif e.name in _LIFECYCLE or e.name.startswith("proxy_abi_version_"):
            lifecycle.append(e.name)
        else:
            other.append(e.name)
    imports = []
    warnings = [*abi_warnings, *export_signature_problems(module)]
    for i in module.imports:
        sig = f"({', '.join(i.params)}) -> ({', '.join(i.results)})" if i.kind == "func" else i.kind
        if i.kind != "func":
            provided = "no"
            warnings.append(f"imports a {i.kind} ({i.module}.{i.name}): no host provides one")
        else:
            want = _PROVIDED_SIGS.get((i.module, i.name))
            if want is None:
                provided = "stub"
                if i.module not in WASI_MODULES:
                    warnings.append(
                        f"{i.module}.{i.name} is not a function this host knows: it gets a stub "
                        "that returns an error if called"
                    )
            elif want != (i.params, i.results):
                provided = "signature-mismatch"
                warnings.append(
                    f"{i.module}.{i.name} is imported with signature {sig}; the ABI's is "
                    f"({', '.join(want[0])}) -> ({', '.join(want[1])}): it gets a stub"
                )
            else:
                provided = "yes"
        imports.append(ImportInfo(i.module, i.name, i.kind, sig, provided))
    if abi is None:
        warnings.append(
            "no Proxy-Wasm ABI marker export (and not the pre-0.1.0 shape): this host, like "
            "Envoy, refuses to load it"
        )
    if not memory:
        warnings.append("exports no memory")
    if "malloc" not in {e.name for e in module.exports} and "proxy_on_memory_allocate" not in {
        e.name for e in module.exports
    }:
        warnings.append("exports no allocator (malloc or proxy_on_memory_allocate): cannot start")
    return ModuleInfo(
        module.sha256,
        module.size,
        abi,
        sdk,
        evidence,
        sorted(callbacks),
        lifecycle,
        sorted(other),
        imports,
        producers,
        memory,
        warnings,
    )
