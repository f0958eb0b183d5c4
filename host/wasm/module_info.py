"""What ``wasmdesk inspect`` reports about a module: ABI, likely SDK, callbacks, imports.

Reads the compiled module's import/export lists and the raw binary's custom
sections (``producers``, ``name``) to guess which SDK built it. No instantiation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from host.wasm.abi import FUNCTIONS
from host.wasm.runtime import Module
from host.wasm.vm import WASI_MODULES, detect_abi

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


def _guess_sdk(
    module: Module, producers: dict[str, list[str]], names: set[str]
) -> tuple[str, list[str]]:
    exports = {e.name for e in module.exports}
    imports = {(i.module, i.name) for i in module.imports}
    langs = " ".join(producers.get("language", []) + producers.get("processed-by", [])).lower()
    ev: list[str] = []
    if "tinygo" in langs:
        return "Go (TinyGo)", ["producers section names TinyGo"]
    if "go " in langs or langs.startswith("go") or any(n.startswith("runtime.") for n in names):
        if "_initialize" in exports:
            return "Go 1.24+ (wasip1, c-shared)", ["Go runtime symbols", "exports _initialize"]
    if "rust" in langs:
        return "Rust (proxy-wasm crate)", ["producers section names rustc"]
    if any(n.startswith("_ZN") or "proxy_wasm" in n for n in names):
        ev.append("Rust-mangled symbols in the name section")
        return "Rust (proxy-wasm crate)", ev
    if (
        ("wasi_unstable", "proc_exit") in imports
        and "malloc" in exports
        and (
            "__new" in exports
            or "abort_proc_exit" in names
            or "~lib" in " ".join(list(names)[:50])
            or ("env", "abort") not in imports
        )
        and not any(m == "wasi_snapshot_preview1" for m, _ in imports)
    ):
        return "AssemblyScript (solo-io/proxy-runtime)", [
            "imports wasi_unstable.proc_exit",
            "exports malloc",
        ]
    if ("env", "emscripten_notify_memory_growth") in imports:
        return "C++ (proxy-wasm-cpp-sdk, Emscripten)", ["imports emscripten_notify_memory_growth"]
    if "clang" in langs or langs.strip() == "c" or "c11" in langs or "c++" in langs:
        return "C/C++ (clang)", [f"producers: {langs}"]
    if "proxy_on_memory_allocate" in exports and "malloc" in exports and "_start" in exports:
        return "Go (TinyGo)", ["exports both allocators and _start"]
    if "proxy_on_memory_allocate" in exports and "_initialize" in exports:
        return "Rust or Go 1.24 (wasip1 reactor)", [
            "exports proxy_on_memory_allocate and _initialize"
        ]
    return "unknown", ["no SDK fingerprint matched"]


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
    abi = detect_abi(module)
    sdk, evidence = _guess_sdk(module, producers, fnames)
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
    warnings = []
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
            "no Proxy-Wasm ABI marker export: this host (like Envoy) refuses to load it"
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
