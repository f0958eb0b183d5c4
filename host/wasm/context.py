"""Proxy-Wasm contexts: root (plugin) contexts and HTTP / TCP stream contexts.

A context object holds what the host functions read and write while a callback
runs on it: header maps, body buffers, the local reply, pause state, filter
state. The HTTP context's ``on_*`` methods are the sans-IO face of one plugin on
one stream (Envoy's Wasm filter ``decodeHeaders`` ... ``encodeTrailers``): they run
a callback and return an ``Action``; what to do with it (forward, hold, reply) is
the caller's business (``host.wasm.runner`` offline, the proxy's chain live).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mypy_extensions import mypyc_attr

from host.headers import HeaderMap
from host.tls_info import TlsInfo
from host.wasm.node import Node
from host.wasm.types import StreamType

if TYPE_CHECKING:
    from host.wasm.vm import PluginVM

__all__ = [
    "Action",
    "Context",
    "HttpCallout",
    "HttpContext",
    "LocalResponse",
    "MapState",
    "RootContext",
    "StreamInfo",
    "StreamListener",
    "TcpContext",
]

MAX_CALLOUT_RECORDS = 100
"""Callouts a context keeps for display (the newest); older ones are only counted."""


class Action(enum.Enum):
    CONTINUE = "continue"
    PAUSE = "pause"  # wait for proxy_continue_stream (or a local reply / close)
    LOCAL_REPLY = "local_reply"  # the plugin sent a local response; stop this direction
    CLOSE = "close"  # the plugin reset the stream (proxy_close_stream)
    FAILED = "failed"  # the VM trapped or is failed: apply the failure policy


class MapState(enum.IntEnum):
    """Whether a stream's header map is reachable from host functions (Envoy model)."""

    ABSENT = 0  # not arrived yet
    ACTIVE = 1  # inside its callback, or held because the plugin paused
    RELEASED = 2  # forwarded: Envoy dropped its pointer (reads → BAD_ARGUMENT)


@dataclass
class LocalResponse:
    status: int
    details: str
    body: bytes
    headers: list[tuple[bytes, bytes]]
    grpc_status: int | None

    def to_dict(self) -> dict[str, object]:
        return {
            "status": self.status,
            "details": self.details,
            "headers": [
                [k.decode("latin-1"), v.decode("utf-8", "replace")] for k, v in self.headers
            ],
            "body": self.body.decode("utf-8", "replace"),
            "grpc_status": self.grpc_status,
        }

    def response_headers(self) -> HeaderMap:
        """The headers the response path sees for this reply (ABI doc §6.2)."""
        m = HeaderMap([(b":status", str(self.status).encode())])
        if self.body:
            m.add(b"content-length", str(len(self.body)).encode())
            if not any(k.lower() == b"content-type" for k, _ in self.headers):
                m.add(b"content-type", b"text/plain")
        else:
            m.add(b"content-length", b"0")
        for k, v in self.headers:
            m.add(k, v)
        if self.grpc_status is not None:
            m.replace(b"grpc-status", str(self.grpc_status).encode())
            if self.body:
                m.replace(b"grpc-message", self.body)
        return m


@mypyc_attr(native_class=False)  # (weak references: a callout dies with its context)
@dataclass
class HttpCallout:
    """An ``proxy_http_call`` in flight; owned by the root context."""

    token: int
    cluster: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    trailers: list[tuple[bytes, bytes]]
    timeout_ms: int
    context_id: int  # the context that issued it (for display)
    response_status: int | None = None
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    response_body: bytes = b""
    response_trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    failure: str | None = None  # "timeout", "connect_failure", "reset", ...
    elapsed_ms: float = 0.0

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


@dataclass
class GrpcCall:
    token: int
    cluster: str
    service: str
    method: str
    metadata: list[tuple[bytes, bytes]]
    message: bytes
    timeout_ms: int
    stream: bool
    context_id: int
    authority: str | None = None  # GrpcService envoy_grpc.authority, when the plugin gave one


@dataclass
class StreamInfo:
    """What the proxy knows about a stream/connection, for properties (ABI doc §5.4).

    ``refresh``, when set, is called before an attribute is read, so a driver can copy
    in what changed since (bytes counted, the upstream chosen, the request completed).
    """

    source_address: str = "127.0.0.1:50000"
    destination_address: str = "127.0.0.1:10000"
    connection_id: int = 1
    protocol: str = "HTTP/1.1"
    scheme: str = "http"
    start_time_ns: int = 0
    request_id: str = ""
    route_name: str | None = None  # None: no route matched; "": an unnamed route
    virtual_host_name: str = ""
    cluster_name: str = ""
    upstream_address: str = ""
    upstream_local_address: str = ""
    upstream_transport_failure_reason: str = ""
    attempt_count: int = 0
    listener_direction: int = 1  # INBOUND
    filter_chain_name: str = ""
    node: Node | None = None  # None: the host's node (PluginHost.node)
    response_code: int = 0
    response_code_details: str = ""
    response_flags: int = 0
    termination_details: str = ""
    request_size: int = 0
    response_size: int = 0
    request_complete: bool = False  # request.duration exists from then on (proxy_on_log)
    duration_ns: int = 0
    backend_latency_ns: int = 0
    dynamic_metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    tls: TlsInfo | None = None  # the client connection's TLS (None: plain TCP)
    upstream_tls: TlsInfo | None = None  # the upstream connection's TLS
    refresh: Callable[[StreamInfo], None] | None = None


@mypyc_attr(allow_interpreted_subclasses=True)  # (the proxy's hops, the runner, tests)
class StreamListener:
    """What a stream's driver hears about things that happen outside its own calls.

    Called after the guest callback that caused them has returned (ABI doc §6.0).
    """

    def on_resume(self, ctx: HttpContext, stream: StreamType) -> None:  # pragma: no cover
        pass

    def on_local_reply(self, ctx: HttpContext) -> None:  # pragma: no cover
        pass

    def on_close(
        self, ctx: HttpContext | TcpContext, stream: StreamType
    ) -> None:  # pragma: no cover
        pass


class Context:
    kind = "vm"
    # The callouts this context issued, for display (the inspector, ``try``): made on
    # the first one, dropped with the context. ``callouts_issued`` counts them all.
    callouts: deque[HttpCallout] | None = None
    callouts_issued = 0

    def __init__(self, vm: PluginVM, context_id: int, root: RootContext | None) -> None:
        self.vm = vm
        self.id = context_id
        # the plugin's root context; the VM context (id 0) is its own root
        self.root: Context = root if root is not None else self
        # host extensions' data (declared properties, CEL expressions), read through
        # ``root``: a plugin's root context's, or the VM context's own
        self.foreign_data: dict[str, Any] = {}
        self.created = False  # proxy_on_context_create delivered
        self.deleted = False
        # proxy_set_property values. A stream driver may put one mapping shared by the
        # stream's contexts here (Envoy's per-stream filter state); by default each
        # context has its own.
        self.filter_state: MutableMapping[bytes, bytes] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id}>"

    def record_callout(self, call: HttpCallout) -> None:
        if self.callouts is None:
            self.callouts = deque(maxlen=MAX_CALLOUT_RECORDS)
        self.callouts.append(call)
        self.callouts_issued += 1


class RootContext(Context):
    kind = "root"

    def __init__(
        self, vm: PluginVM, context_id: int, root_id: str, plugin_name: str, configuration: bytes
    ) -> None:
        super().__init__(vm, context_id, None)
        self.root_id = root_id
        self.plugin_name = plugin_name
        self.configuration = configuration
        self.configuring: bytes | None = None  # PLUGIN_CONFIGURATION is readable only then
        self.configured = False  # a first on_configure succeeded
        self.tick_period_ms = 0
        self.next_tick_ms: float | None = None
        self.http_calls: dict[int, HttpCallout] = {}
        self.grpc_calls: dict[int, GrpcCall] = {}
        self.last_status: tuple[int, bytes] = (0, b"")
        self.pending_done = False
        # Filled only while a callout callback runs on this root
        self.callout_response: HttpCallout | None = None
        self.grpc_initial_metadata: list[tuple[bytes, bytes]] | None = None
        self.grpc_trailing_metadata: list[tuple[bytes, bytes]] | None = None
        self.grpc_message: bytes | None = None
        self.call_data: bytes | None = None


class _Direction:
    """One direction (request or response) of an HTTP stream as one plugin sees it."""

    __slots__ = (
        "body",
        "body_active",
        "buffering",
        "end_of_stream",
        "headers",
        "headers_state",
        "paused",
        "trailers",
        "trailers_writable",
    )

    def __init__(self) -> None:
        self.headers: HeaderMap | None = None
        self.headers_state = MapState.ABSENT
        self.trailers: HeaderMap | None = None
        self.trailers_writable = False
        self.body = bytearray()  # current chunk or held buffer
        self.body_active = False  # inside a body callback (buffer readable/writable)
        self.buffering = False  # last body callback asked to buffer
        self.paused = False  # headers/body/trailers held until continue_stream
        self.end_of_stream = False


class HttpContext(Context):
    kind = "http"

    def __init__(
        self, vm: PluginVM, context_id: int, root: RootContext, info: StreamInfo | None = None
    ) -> None:
        super().__init__(vm, context_id, root)
        self._info = info
        self.info_factory: Callable[[], StreamInfo] | None = None
        # the request id a driver knows before the StreamInfo is made (see request_id)
        self.known_request_id: str | None = None
        self.request = _Direction()
        self.response = _Direction()
        self.local_response: LocalResponse | None = None
        self.local_response_during: str = ""
        self.listener: StreamListener | None = None
        self.access_log_phase = False
        self.done = False
        self.route_cache_dirty = False
        # per-callback accounting for the inspector: (callback, result, µs)
        self.callbacks: list[tuple[str, int | None, float]] = []

    @property
    def info(self) -> StreamInfo:
        """Made on first use (most requests never read a property)."""
        if self._info is None:
            self._info = self.info_factory() if self.info_factory is not None else StreamInfo()
        return self._info

    @property
    def request_id(self) -> str:
        """The stream's request id (log records carry it): without making the
        StreamInfo when the driver told it (``known_request_id``)."""
        if self._info is None:
            if self.known_request_id is not None:
                return self.known_request_id
            if self.info_factory is None:
                return ""  # what the default StreamInfo would say: no need to make it
        return self.info.request_id

    def direction(self, stream: StreamType) -> _Direction:
        return self.request if stream == StreamType.HTTP_REQUEST else self.response

    # -- the sans-IO stream API ---------------------------------------------------------

    def on_request_headers(self, headers: HeaderMap, end_of_stream: bool) -> Action:
        return self.vm.http_headers(self, StreamType.HTTP_REQUEST, headers, end_of_stream)

    def on_request_body(self, chunk: bytes, end_of_stream: bool) -> Action:
        return self.vm.http_body(self, StreamType.HTTP_REQUEST, chunk, end_of_stream)

    def on_request_trailers(self, trailers: HeaderMap) -> Action:
        return self.vm.http_trailers(self, StreamType.HTTP_REQUEST, trailers)

    def on_response_headers(self, headers: HeaderMap, end_of_stream: bool) -> Action:
        return self.vm.http_headers(self, StreamType.HTTP_RESPONSE, headers, end_of_stream)

    def on_response_body(self, chunk: bytes, end_of_stream: bool) -> Action:
        return self.vm.http_body(self, StreamType.HTTP_RESPONSE, chunk, end_of_stream)

    def on_response_trailers(self, trailers: HeaderMap) -> Action:
        return self.vm.http_trailers(self, StreamType.HTTP_RESPONSE, trailers)

    def take_body(self, stream: StreamType) -> bytes:
        """The body bytes this plugin releases (after Continue or a resume)."""
        d = self.direction(stream)
        out = bytes(d.body)
        d.body.clear()
        d.buffering = False
        return out

    def finish(self) -> None:
        """End of stream: on_done, on_log, on_delete (skipped on a failed VM)."""
        self.vm.finish_stream(self)


class TcpContext(Context):
    kind = "tcp"

    def __init__(
        self, vm: PluginVM, context_id: int, root: RootContext, info: StreamInfo | None = None
    ) -> None:
        super().__init__(vm, context_id, root)
        self.info = info or StreamInfo()
        self.downstream = bytearray()
        self.upstream = bytearray()
        self.data_active: StreamType | None = None
        self.paused: set[StreamType] = set()
        self.closed_streams: set[StreamType] = set()
        self.listener: StreamListener | None = None
        self.callbacks: list[tuple[str, int | None, float]] = []

    def on_new_connection(self) -> Action:
        return self.vm.tcp_new_connection(self)

    def on_downstream_data(self, data: bytes, end_of_stream: bool) -> Action:
        return self.vm.tcp_data(self, StreamType.DOWNSTREAM, data, end_of_stream)

    def on_upstream_data(self, data: bytes, end_of_stream: bool) -> Action:
        return self.vm.tcp_data(self, StreamType.UPSTREAM, data, end_of_stream)

    def on_downstream_close(self, peer: int = 2) -> None:
        self.vm.tcp_close(self, StreamType.DOWNSTREAM, peer)

    def on_upstream_close(self, peer: int = 0) -> None:
        self.vm.tcp_close(self, StreamType.UPSTREAM, peer)

    def take_data(self, stream: StreamType) -> bytes:
        buf = self.downstream if stream == StreamType.DOWNSTREAM else self.upstream
        out = bytes(buf)
        buf.clear()
        return out

    def finish(self) -> None:
        self.vm.finish_stream(self)


Deferred = Callable[[], None]
