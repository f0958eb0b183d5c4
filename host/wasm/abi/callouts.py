"""HTTP and gRPC callouts and proxy_get_status (ABI §2.2 "HTTP callouts",
"gRPC callouts", §6.4).

Calls belong to the root context whatever context issued them; the dispatcher
the driver supplied carries them, and their results come back as posted
deliveries (``PluginVM.http_call_done`` / ``grpc_event``). A gRPC call's upstream is
a plain cluster name or a serialized ``GrpcService`` (``host.wasm.grpc_service``);
without a gRPC transport (``NoGrpcDispatcher``) gRPC calls answer INTERNAL_FAILURE.

A plugin chooses only the cluster *name*: the dispatcher builds the request from
the cluster's own scheme, host and port, so ``:path`` must be origin-form (``/``
first) and ``:authority`` travels only as the Host header. Header names and values
are checked as in every header-setting function (``_validate``). A VM has at most
``MAX_INFLIGHT_CALLOUTS`` calls (HTTP and gRPC) in flight; beyond that a call answers
INTERNAL_FAILURE, as Envoy's async client does on a cluster whose circuit breaker
is open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from host.wasm.abi._common import BAD_ARGUMENT, NOT_FOUND, OK, hostfn, read, return_bytes
from host.wasm.abi._validate import valid_headers, valid_origin_path
from host.wasm.context import GrpcCall, HttpCallout, RootContext
from host.wasm.grpc_service import parse_grpc_upstream
from host.wasm.pairs import PairsError, decode_pairs
from host.wasm.types import LogLevel, Status

if TYPE_CHECKING:
    from host.wasm.vm import PluginVM

MAX_INFLIGHT_CALLOUTS = 1000
"""HTTP and gRPC callouts one VM may have in flight (issued, not yet delivered)."""
INTERNAL_FAILURE = int(Status.INTERNAL_FAILURE)


def _warn(vm: PluginVM, message: str) -> None:
    from host.wasm.abi.logging import emit

    emit(vm, LogLevel.WARN, message, "host")


def inflight_callouts(vm: PluginVM) -> int:
    return sum(len(r.http_calls) + len(r.grpc_calls) for r in vm.roots.values())


def _over_cap(vm: PluginVM, what: str) -> bool:
    """True (and counted, one warning per callback) when the VM's callouts are at the cap."""
    if inflight_callouts(vm) < MAX_INFLIGHT_CALLOUTS:
        return False
    if vm.callouts_refused_at != vm.callback_count:  # one line per callback
        vm.callouts_refused_at = vm.callback_count
        _warn(
            vm,
            f"{what}: {MAX_INFLIGHT_CALLOUTS} calls already in flight on this VM: INTERNAL_FAILURE",
        )
    vm.callouts_refused += 1
    return True


def proxy_get_status(vm: PluginVM, ret_code: int, ret_msg_ptr: int, ret_msg_size: int) -> int:
    root = vm.ctx.root
    code, msg = root.last_status if isinstance(root, RootContext) else (0, b"")
    vm.instance.check(ret_code, 4)
    status = return_bytes(vm, msg, ret_msg_ptr, ret_msg_size)
    vm.instance.write_u32(ret_code, code)
    return status


def proxy_http_call(
    vm: PluginVM,
    upstream_ptr: int,
    upstream_len: int,
    headers_ptr: int,
    headers_len: int,
    body_ptr: int,
    body_len: int,
    trailers_ptr: int,
    trailers_len: int,
    timeout_ms: int,
    ret_token: int,
) -> int:
    cluster = read(vm, upstream_ptr, upstream_len).decode("utf-8", "replace")
    raw_headers = read(vm, headers_ptr, headers_len)
    body = read(vm, body_ptr, body_len)
    raw_trailers = read(vm, trailers_ptr, trailers_len)
    vm.instance.write_u32(ret_token, 0)  # validates the out-slot first (cpp-host)
    vm.check_budget()  # a loop of calls spends the callback's budget, not the loop's
    root = vm.ctx.root
    if not isinstance(root, RootContext):
        return BAD_ARGUMENT
    try:
        headers = [(k.lower(), v) for k, v in decode_pairs(raw_headers)]
        trailers = [(k.lower(), v) for k, v in decode_pairs(raw_trailers)]
    except PairsError:
        return BAD_ARGUMENT
    hdr = dict(headers)
    if b":method" not in hdr or b":path" not in hdr or not (b":authority" in hdr or b"host" in hdr):
        # Envoy requires :method, :path and :authority/host.
        return BAD_ARGUMENT
    if not valid_headers(headers) or not valid_headers(trailers):
        return BAD_ARGUMENT  # CR/LF/NUL in a value or a non-token name
    if not valid_origin_path(hdr[b":path"]):
        # "@127.0.0.1:9901/quitquitquit" appended to the cluster's address would make
        # the cluster userinfo and reach another port: only "/..." is a path.
        _warn(vm, f"http_call :path {hdr[b':path']!r} is not origin-form: BAD_ARGUMENT")
        return BAD_ARGUMENT
    if not vm.host.http.has_cluster(cluster):
        _warn(vm, f"http_call to unknown cluster {cluster!r}: BAD_ARGUMENT")
        return BAD_ARGUMENT
    if _over_cap(vm, f"http_call to {cluster!r}"):
        return INTERNAL_FAILURE
    ctx = vm.ctx
    token = vm.host.next_callout_token()
    call = HttpCallout(token, cluster, headers, body, trailers, timeout_ms, ctx.id)
    root.http_calls[token] = call
    ctx.record_callout(call)
    vm.host.http.dispatch(call, vm.http_call_done)
    vm.instance.write_u32(ret_token, token)
    return OK


class _GrpcEvents:
    def __init__(self, vm: PluginVM) -> None:
        self.vm = vm

    def initial_metadata(self, call: GrpcCall, pairs: list[tuple[bytes, bytes]]) -> None:
        self.vm.grpc_event(call, "initial_metadata", pairs)

    def message(self, call: GrpcCall, data: bytes) -> None:
        self.vm.grpc_event(call, "message", data)

    def trailing_metadata(self, call: GrpcCall, pairs: list[tuple[bytes, bytes]]) -> None:
        self.vm.grpc_event(call, "trailing_metadata", pairs)

    def close(self, call: GrpcCall, status: int, message: bytes) -> None:
        self.vm.grpc_event(call, "close", message, status)


_GRPC_KEY_CHARS = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyz_.-")


def _grpc_metadata_ok(pairs: list[tuple[bytes, bytes]]) -> bool:
    """gRPC's own metadata rules (stricter than HTTP's): keys of ``[0-9a-z_.-]``, values
    printable ASCII unless the key ends in ``-bin`` (binary, sent base64-encoded)."""
    for k, v in pairs:
        if not k or not set(k) <= _GRPC_KEY_CHARS:
            return False
        if not k.endswith(b"-bin") and not all(0x20 <= c <= 0x7E for c in v):
            return False
    return True


def _grpc_name_ok(name: bytes) -> bool:
    return bool(name) and b"/" not in name and valid_origin_path(b"/" + name)


def _grpc_start(
    vm: PluginVM,
    cluster: bytes,
    service: bytes,
    method: bytes,
    raw_md: bytes,
    message: bytes,
    timeout_ms: int,
    ret_token: int,
    stream: bool,
) -> int:
    vm.instance.write_u32(ret_token, 0)
    root = vm.ctx.root
    if not isinstance(root, RootContext):
        return BAD_ARGUMENT
    try:
        metadata = [(k.lower(), v) for k, v in decode_pairs(raw_md)]
    except PairsError:
        return BAD_ARGUMENT
    upstream = parse_grpc_upstream(cluster)
    # GrpcService.initial_metadata first, then the plugin's own (Envoy adds both)
    metadata = upstream.metadata + metadata
    text_md = [(k, v) for k, v in metadata if not k.endswith(b"-bin")]  # -bin: base64 on the wire
    if not _grpc_metadata_ok(metadata) or not valid_headers(text_md):
        # initial metadata is sent as HTTP/2 headers (never pseudo ones), by gRPC's rules
        _warn(vm, "grpc call: initial metadata is not valid gRPC metadata: BAD_ARGUMENT")
        return BAD_ARGUMENT
    if not (_grpc_name_ok(service) and _grpc_name_ok(method)):
        return BAD_ARGUMENT  # they become the :path "/service/method" of the call
    if not stream and timeout_ms == 0 and upstream.timeout_ms:
        timeout_ms = upstream.timeout_ms
    if _over_cap(vm, f"grpc call to {upstream.cluster!r}"):
        return INTERNAL_FAILURE
    # cpp-host token classes: unary calls ≡ 1, streams ≡ 2 (mod 4).
    token = (vm.host.next_callout_token() | (2 if stream else 1)) & 0xFFFFFFFF
    call = GrpcCall(
        token,
        upstream.cluster,
        service.decode("utf-8", "replace"),
        method.decode("utf-8", "replace"),
        metadata,
        message,
        timeout_ms,
        stream,
        vm.ctx.id,
        upstream.authority,
    )
    status = vm.host.grpc.start(call, _GrpcEvents(vm))
    if status != Status.OK:
        reason = getattr(vm.host.grpc, "reason", "gRPC dispatcher refused the call")
        _warn(vm, f"grpc call to {call.cluster}/{call.service}/{call.method}: {reason}")
        return int(status)
    root.grpc_calls[token] = call
    vm.instance.write_u32(ret_token, token)
    return OK


def proxy_grpc_call(
    vm: PluginVM,
    up_ptr: int,
    up_len: int,
    svc_ptr: int,
    svc_len: int,
    m_ptr: int,
    m_len: int,
    md_ptr: int,
    md_len: int,
    msg_ptr: int,
    msg_len: int,
    timeout_ms: int,
    ret_token: int,
) -> int:
    return _grpc_start(
        vm,
        read(vm, up_ptr, up_len),
        read(vm, svc_ptr, svc_len),
        read(vm, m_ptr, m_len),
        read(vm, md_ptr, md_len),
        read(vm, msg_ptr, msg_len),
        timeout_ms,
        ret_token,
        False,
    )


def proxy_grpc_stream(
    vm: PluginVM,
    up_ptr: int,
    up_len: int,
    svc_ptr: int,
    svc_len: int,
    m_ptr: int,
    m_len: int,
    md_ptr: int,
    md_len: int,
    ret_token: int,
) -> int:
    return _grpc_start(
        vm,
        read(vm, up_ptr, up_len),
        read(vm, svc_ptr, svc_len),
        read(vm, m_ptr, m_len),
        read(vm, md_ptr, md_len),
        b"",
        0,
        ret_token,
        True,
    )


def _grpc_lookup(vm: PluginVM, token: int) -> GrpcCall | None:
    root = vm.ctx.root
    if not isinstance(root, RootContext):
        return None
    return root.grpc_calls.get(token)


def proxy_grpc_send(vm: PluginVM, token: int, msg_ptr: int, msg_len: int, end_stream: int) -> int:
    msg = read(vm, msg_ptr, msg_len)
    call = _grpc_lookup(vm, token)
    if call is None:
        return NOT_FOUND
    if not call.stream:
        return BAD_ARGUMENT
    return int(vm.host.grpc.send(call, msg, bool(end_stream)))


def proxy_grpc_cancel(vm: PluginVM, token: int) -> int:
    call = _grpc_lookup(vm, token)
    if call is None:
        return NOT_FOUND
    vm.host.grpc.cancel(call)
    root = vm.ctx.root
    if isinstance(root, RootContext):
        root.grpc_calls.pop(token, None)  # no further callbacks after cancel
    return OK


def proxy_grpc_close(vm: PluginVM, token: int) -> int:
    call = _grpc_lookup(vm, token)
    if call is None:
        return NOT_FOUND
    if not call.stream:
        return proxy_grpc_cancel(vm, token)
    vm.host.grpc.close(call)
    return OK


FUNCTIONS = (
    hostfn("proxy_get_status", "iii", "i", proxy_get_status),
    hostfn("proxy_http_call", "iiiiiiiiii", "i", proxy_http_call),
    hostfn("proxy_grpc_call", "iiiiiiiiiiii", "i", proxy_grpc_call),
    hostfn("proxy_grpc_stream", "iiiiiiiii", "i", proxy_grpc_stream),
    hostfn("proxy_grpc_send", "iiii", "i", proxy_grpc_send),
    hostfn("proxy_grpc_cancel", "i", "i", proxy_grpc_cancel),
    hostfn("proxy_grpc_close", "i", "i", proxy_grpc_close),
)
