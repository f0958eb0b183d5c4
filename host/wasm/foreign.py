"""Envoy's foreign functions beyond compress/uncompress (ABI doc §2.2 "Foreign
functions"; Envoy's ``source/extensions/common/wasm/foreign.cc``):

* ``set_envoy_filter_state``: ``SetEnvoyFilterStateArguments {path = 1, value = 2,
  span = 3}``; stores an object for one of Envoy's known filter-state keys on the
  current stream (readable as ``filter_state.<key>``). Unknown key or no stream:
  NOT_FOUND; a value the key's factory rejects or an unparsable message: BAD_ARGUMENT.
* ``declare_property``: ``DeclarePropertyArguments {name = 1, readonly = 2, type = 3,
  schema = 4, span = 5}``; declares a property on the plugin (root context) that
  ``proxy_set_property`` then honours (read-only after its first value). A second
  declaration of the same name: BAD_ARGUMENT.
* ``expr_create`` (CEL source text → uint32 token), ``expr_evaluate`` (token → the
  value in the property encoding), ``expr_delete`` (token): CEL over the current
  context's attributes, tokens per plugin from 0. Parse error: BAD_ARGUMENT; unknown
  token: NOT_FOUND; an evaluation error: INTERNAL_FAILURE; arguments not 4 bytes:
  BAD_ARGUMENT.

CEL comes from the ``common-expression-language`` package (Rust bindings of the
``cel`` crate): its compiled extension is loaded on the first ``expr_create`` only, so
CEL costs nothing unless a plugin calls it.
"""

from __future__ import annotations

import datetime
import ipaddress
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from host.wasm import attributes
from host.wasm.context import HttpContext, TcpContext
from host.wasm.proto import ProtoError, read_message
from host.wasm.types import LogLevel, Status

if TYPE_CHECKING:
    from host.wasm.plugin_host import PluginHost
    from host.wasm.vm import PluginVM

__all__ = ["ENVOY_FILTER_STATE_KEYS", "DeclaredProperty", "WasmType", "register"]

_U32 = struct.Struct("<I")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


class WasmType:
    """DeclarePropertyArguments.type (Envoy's WasmType)."""

    BYTES = 0
    STRING = 1
    FLATBUFFERS = 2
    PROTOBUF = 3


@dataclass(frozen=True)
class DeclaredProperty:
    name: bytes
    readonly: bool
    type: int
    schema: bytes
    span: int


# -- set_envoy_filter_state ---------------------------------------------------------------


def _string(v: bytes) -> bytes | None:
    return v


def _addr_port(v: bytes) -> bytes | None:
    """An ``ip:port`` (``[v6]:port``) address; None when it is not one."""
    text = v.decode("ascii", "replace")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        return None
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return v


def _uint(v: bytes) -> bytes | None:
    return v if v.isdigit() else None


#: Envoy's registered filter-state object factories that take bytes (key -> factory;
#: None from a factory means the value is rejected, as ``createFromBytes`` failing).
ENVOY_FILTER_STATE_KEYS: dict[str, Callable[[bytes], bytes | None]] = {
    "envoy.string": _string,
    "envoy.hashable_string": _string,
    "envoy.tcp_proxy.cluster": _string,
    "envoy.network.upstream_server_name": _string,
    "envoy.network.application_protocols": _string,
    "envoy.network.upstream_subject_alt_names": _string,
    "envoy.network.transport_socket.original_dst_address": _addr_port,
    "envoy.filters.listener.original_dst.local_ip": _addr_port,
    "envoy.filters.listener.original_dst.remote_ip": _addr_port,
    "envoy.tcp_proxy.per_connection_idle_timeout_ms": _uint,
}

_SET_FILTER_STATE = {1: "bytes", 2: "bytes", 3: "varint"}
_DECLARE_PROPERTY = {1: "bytes", 2: "varint", 3: "varint", 4: "bytes", 5: "varint"}


def _stream_ctx(vm: PluginVM | None) -> HttpContext | TcpContext | None:
    ctx = vm.ctx if vm is not None else None
    return ctx if isinstance(ctx, (HttpContext, TcpContext)) else None


def set_envoy_filter_state(vm: PluginVM | None, args: bytes) -> tuple[Status, bytes]:
    try:
        fields = read_message(args, _SET_FILTER_STATE)
    except ProtoError:
        return Status.BAD_ARGUMENT, b""
    path = bytes(fields.get(1, b""))
    value = bytes(fields.get(2, b""))
    factory = ENVOY_FILTER_STATE_KEYS.get(path.decode("utf-8", "replace"))
    if factory is None:
        return Status.NOT_FOUND, b""
    obj = factory(value)
    if obj is None:
        return Status.BAD_ARGUMENT, b""
    ctx = _stream_ctx(vm)
    if ctx is None:
        return Status.NOT_FOUND, b""  # no stream info (root context)
    ctx.filter_state[path] = obj
    return Status.OK, b""


# -- declare_property ---------------------------------------------------------------------


def declare_property(vm: PluginVM | None, args: bytes) -> tuple[Status, bytes]:
    try:
        fields = read_message(args, _DECLARE_PROPERTY)
    except ProtoError:
        return Status.BAD_ARGUMENT, b""
    if vm is None:
        return Status.NOT_FOUND, b""
    name = bytes(fields.get(1, b""))
    kind = int(fields.get(3, 0))
    prop = DeclaredProperty(
        name=name,
        readonly=bool(fields.get(2, 0)),
        type=kind if kind in (0, 1, 2, 3) else WasmType.BYTES,
        schema=bytes(fields.get(4, b"")),
        span=int(fields.get(5, 0)),
    )
    declared: dict[bytes, DeclaredProperty] = vm.ctx.root.foreign_data.setdefault("properties", {})
    if name in declared:
        return Status.BAD_ARGUMENT, b""  # Envoy keeps the first schema
    declared[name] = prop
    return Status.OK, b""


# -- CEL ------------------------------------------------------------------------------------

_cel_module: Any = None


def _cel() -> Any:
    """The CEL extension module, loaded once. ``import cel`` would also import the
    package's command line (typer, rich, prompt_toolkit: ~350 ms); the compiled
    module alone loads in a few milliseconds, inside a guest's callback budget."""
    global _cel_module
    if _cel_module is None:
        import importlib.machinery
        import importlib.util
        import sys
        from pathlib import Path

        spec = importlib.util.find_spec("cel")
        mod: Any = None
        if spec is not None and spec.submodule_search_locations:
            for d in spec.submodule_search_locations:
                for so in sorted(Path(d).glob("cel.*")):
                    if so.suffix not in (".so", ".pyd"):
                        continue
                    loader = importlib.machinery.ExtensionFileLoader("cel.cel", str(so))
                    s = importlib.util.spec_from_file_location("cel.cel", so, loader=loader)
                    if s is None:
                        continue
                    mod = importlib.util.module_from_spec(s)
                    loader.exec_module(mod)
                    sys.modules.setdefault("cel.cel", mod)
                    break
        if mod is None:  # pragma: no cover - another layout of the package
            import cel

            mod = cel
        _cel_module = mod
    return _cel_module


def to_cel(v: Any) -> Any:
    """An attribute value as the CEL library takes it."""
    if isinstance(v, attributes.Timestamp):
        return _EPOCH + datetime.timedelta(microseconds=int(v) // 1000)
    if isinstance(v, attributes.Duration):
        return datetime.timedelta(microseconds=int(v) // 1000)
    if isinstance(v, (bool, str, float)):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")  # header values and strings are CEL strings
        except UnicodeDecodeError:
            return v
    if isinstance(v, attributes.Message):
        return to_cel(dict(v.fields))
    if isinstance(v, Mapping):
        return {
            (k.decode("utf-8", "replace") if isinstance(k, bytes) else k): to_cel(x)
            for k, x in v.items()
        }
    if isinstance(v, (list, tuple)):
        return [to_cel(x) for x in v]
    return v


def from_cel(v: Any) -> Any:
    """A CEL result as an attribute value (then ``attributes.encode``)."""
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.UTC)
        delta = v - _EPOCH
        return attributes.Timestamp(
            (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000
        )
    if isinstance(v, datetime.timedelta):
        return attributes.Duration((v.days * 86400 + v.seconds) * 10**9 + v.microseconds * 1000)
    if isinstance(v, Mapping):
        return {from_cel(k): from_cel(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [from_cel(x) for x in v]
    return v


def _exprs(vm: PluginVM) -> dict[str, Any]:
    state: dict[str, Any] = vm.ctx.root.foreign_data.setdefault("cel", {"next": 0, "exprs": {}})
    return state


def expr_create(vm: PluginVM | None, args: bytes) -> tuple[Status, bytes]:
    if vm is None:
        return Status.NOT_FOUND, b""
    try:
        program = _cel().compile(args.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        vm._host_log(LogLevel.INFO, f"expr_create: {e}")
        return Status.BAD_ARGUMENT, b""
    state = _exprs(vm)
    exprs: dict[int, Any] = state["exprs"]
    token = state["next"]
    while token in exprs:
        token = (token + 1) & 0xFFFFFFFF
    state["next"] = (token + 1) & 0xFFFFFFFF
    exprs[token] = program
    return Status.OK, _U32.pack(token)


def expr_evaluate(vm: PluginVM | None, args: bytes) -> tuple[Status, bytes]:
    if vm is None:
        return Status.NOT_FOUND, b""
    if len(args) != 4:
        return Status.BAD_ARGUMENT, b""
    program = _exprs(vm)["exprs"].get(_U32.unpack(args)[0])
    if program is None:
        return Status.NOT_FOUND, b""
    ctx = vm.ctx
    cel = _cel()
    activation = cel.Context()

    def variable(name: str) -> Any:
        v = attributes.resolve_top(ctx, name)
        return None if v is None else to_cel(v)

    activation.set_variable_resolver(variable)
    try:
        value = program.execute(activation)
    except Exception as e:  # the library raises KeyError, TypeError, ZeroDivisionError ...
        vm._host_log(LogLevel.DEBUG, f"expr_evaluate: {type(e).__name__}: {e}")
        return Status.INTERNAL_FAILURE, b""
    try:
        return Status.OK, attributes.encode(from_cel(value))
    except attributes.SerializationFailure:
        return Status.SERIALIZATION_FAILURE, b""


def expr_delete(vm: PluginVM | None, args: bytes) -> tuple[Status, bytes]:
    if vm is None:
        return Status.NOT_FOUND, b""
    if len(args) != 4:
        return Status.BAD_ARGUMENT, b""
    _exprs(vm)["exprs"].pop(_U32.unpack(args)[0], None)
    return Status.OK, b""


def register(host: PluginHost) -> None:
    """Add Envoy's filter-state, property and CEL foreign functions to ``host``; each
    runs on the VM whose guest called it (``host.foreign_caller``)."""

    def bind(
        fn: Callable[[PluginVM | None, bytes], tuple[Status, bytes]],
    ) -> Callable[[bytes], tuple[Status, bytes]]:
        return lambda args: fn(host.foreign_caller, args)

    for name, fn in (
        ("set_envoy_filter_state", set_envoy_filter_state),
        ("declare_property", declare_property),
        ("expr_create", expr_create),
        ("expr_evaluate", expr_evaluate),
        ("expr_delete", expr_delete),
    ):
        host.foreign_functions[name] = bind(fn)
