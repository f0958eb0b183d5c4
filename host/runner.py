"""The offline runner behind ``wasmdesk try``: one request through one plugin, no proxy.

It starts the plugin (start-up, vm_start, configure), optionally fires tick
periods, runs the request (headers, body, trailers) and then the given upstream
response (or the plugin's local reply) through it, and finishes the stream
(done, log, delete). ``http_call``s really go out over HTTP (httpx) to the
``--cluster`` URLs, performed between guest callbacks, never inside one.
Everything it saw comes back as a ``TryResult``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

from host.callout_request import build_callout_request, callout_failure, record_callout_response
from host.proxy.grpc_callouts import GRPC_SCHEMES, GrpcCalloutDispatcher, GrpcCluster
from host.wasm import (
    Action,
    HeaderMap,
    HttpContext,
    LogLevel,
    PluginHost,
    StreamInfo,
    VirtualClock,
    VmConfig,
    VmStartError,
)
from host.wasm.context import Context, HttpCallout, RootContext, StreamListener
from host.wasm.diagnosis import root_id_warning, sdk_missing_root_line, silent_plugin_warning
from host.wasm.module_info import describe
from host.wasm.node import DEFAULT_NODE, Node
from host.wasm.plugin_host import GrpcDispatcher
from host.wasm.profile import profile_json
from host.wasm.runtime import Engine
from host.wasm.types import StreamType
from host.wasm.vm import PluginVM

__all__ = [
    "CalloutClient",
    "Driver",
    "RunOutcome",
    "RunSettings",
    "TryRequest",
    "TryResult",
    "WaitListener",
    "callout_summary",
    "fire_ticks",
    "offline_host",
    "run_try",
    "settle",
    "start_plugin",
]


@dataclass
class RunSettings:
    """How one offline run starts the plugin and what it may call out to; ``TryRequest``
    and ``TcpTryRequest`` add the traffic."""

    root_id: str = ""
    plugin_name: str = ""
    configuration: bytes = b""
    vm_configuration: bytes = b""
    env: list[tuple[str, str]] = field(default_factory=list)
    clusters: dict[str, str] = field(default_factory=dict)
    ticks: int = 0
    log_level: LogLevel = LogLevel.TRACE
    callback_timeout_ms: float = 100.0
    callout_timeout_ms: float = 5000.0
    node: Node = DEFAULT_NODE  # xds.node (--node)


@dataclass
class TryRequest(RunSettings):
    method: str = "GET"
    path: str = "/"
    authority: str = "localhost"
    scheme: str = "http"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    status: int = 200
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_body: bytes = b""
    response_trailers: list[tuple[str, str]] = field(default_factory=list)
    request_id: str = ""  # x-request-id and the stream's id; "" draws a random one


@dataclass
class RunOutcome:
    """What every offline run reports besides its traffic; ``TryResult`` and
    ``TcpTryResult`` add theirs."""

    abi: str | None = None
    sdk: str = ""
    logs: list[dict[str, object]] = field(default_factory=list)
    metrics: dict[str, object] = field(default_factory=dict)
    callouts: list[dict[str, object]] = field(default_factory=list)
    failure: dict[str, object] | None = None
    notes: list[str] = field(default_factory=list)
    # ABI and root-id problems (host.wasm.diagnosis): the plugin may not have run as meant
    warnings: list[str] = field(default_factory=list)
    ticks_fired: int = 0
    ticks_while_paused: int = 0

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass
class TryResult(RunOutcome):
    request_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    original_request_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    request_body: bytes = b""
    request_forwarded: bool = False
    response_status: int | None = None
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    original_response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    response_body: bytes = b""
    # the trailers after the plugin's trailers callback (None: the message had none)
    request_trailers: list[tuple[bytes, bytes]] | None = None
    response_trailers: list[tuple[bytes, bytes]] | None = None
    local_response: dict[str, object] | None = None
    callbacks: list[dict[str, object]] = field(default_factory=list)
    shared_data: dict[str, object] = field(default_factory=dict)
    # per guest callback: total, guest and host-call time (host/wasm/profile.py)
    profile: list[dict[str, object]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        def text(pairs: list[tuple[bytes, bytes]]) -> list[list[str]]:
            return [[k.decode("latin-1"), v.decode("utf-8", "replace")] for k, v in pairs]

        request: dict[str, object] = {
            "headers": text(self.request_headers),
            "body": self.request_body.decode("utf-8", "replace"),
            "forwarded": self.request_forwarded,
        }
        response: dict[str, object] = {
            "status": self.response_status,
            "headers": text(self.response_headers),
            "body": self.response_body.decode("utf-8", "replace"),
        }
        if self.request_trailers is not None:
            request["trailers"] = text(self.request_trailers)
        if self.response_trailers is not None:
            response["trailers"] = text(self.response_trailers)
        return {
            "abi": self.abi,
            "sdk": self.sdk,
            "request": request,
            "response": response,
            "local_response": self.local_response,
            "logs": self.logs,
            "metrics": self.metrics,
            "callouts": self.callouts,
            "callbacks": self.callbacks,
            "failure": self.failure,
            "ticks_fired": self.ticks_fired,
            "ticks_while_paused": self.ticks_while_paused,
            "shared_data": self.shared_data,
            "profile": self.profile,
            "notes": self.notes,
            "warnings": self.warnings,
        }


class CalloutClient:
    """An ``HttpDispatcher`` over httpx that performs calls when the runner asks.

    ``dispatch`` only queues (it runs inside a host function, with the guest's
    deadline ticking); ``perform_pending`` makes the requests between callbacks.
    """

    def __init__(self, clusters: dict[str, str], default_timeout_ms: float = 5000.0) -> None:
        self.clusters = dict(clusters)
        self.default_timeout_ms = default_timeout_ms
        self._queue: deque[tuple[HttpCallout, Callable[[HttpCallout], None]]] = deque()
        self.completed: list[HttpCallout] = []
        self._client: httpx.Client | None = None

    def has_cluster(self, name: str) -> bool:
        return name in self.clusters

    def dispatch(self, call: HttpCallout, done: Callable[[HttpCallout], None]) -> None:
        self._queue.append((call, done))

    def cancel(self, call: HttpCallout) -> None:
        self._queue = deque((c, d) for c, d in self._queue if c is not call)

    @property
    def busy(self) -> bool:
        return bool(self._queue)

    def perform_pending(self) -> int:
        n = 0
        while self._queue:
            call, done = self._queue.popleft()
            self._perform(call)
            self.completed.append(call)
            done(call)
            n += 1
        return n

    def _perform(self, call: HttpCallout) -> None:
        timeout = (call.timeout_ms or self.default_timeout_ms) / 1000.0
        if self._client is None:
            self._client = httpx.Client(follow_redirects=False, trust_env=False)
        t0 = time.perf_counter()
        try:
            # The cluster's own address; the plugin's :path is only a path (issue 13).
            req = build_callout_request(self.clusters[call.cluster], call)
            resp = self._client.request(
                req.method, req.url, headers=req.headers, content=call.body or None, timeout=timeout
            )
        except (ValueError, httpx.HTTPError) as e:
            call.failure = callout_failure(e)
        else:
            record_callout_response(call, resp)
        call.elapsed_ms = (time.perf_counter() - t0) * 1000.0

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


@contextmanager
def offline_host(
    req: RunSettings,
    result: RunOutcome,
    *,
    engine: Engine | None = None,
    callouts: CalloutClient | None = None,
    grpc: GrpcDispatcher | None = None,
    callout_requests: bool = False,
) -> Iterator[tuple[PluginHost, CalloutClient, VirtualClock]]:
    """A plugin host for one offline run (``try``, ``try --tcp``): a virtual clock,
    ``callouts`` (else a ``CalloutClient`` on ``req.clusters``) and ``grpc`` (else the
    grpc.aio transport to the clusters' grpc:// URLs; mocks get it as their fallback).
    On exit the plugin's logs, metrics and callouts (``callout_requests``: with what was
    sent) go to ``result``, then everything is closed."""
    clusters, callout_timeout_ms = req.clusters, req.callout_timeout_ms
    clock = VirtualClock(start_wall_ns=time.time_ns())
    if callouts is None:
        callouts = CalloutClient(clusters, callout_timeout_ms)
    grpc_loop = asyncio.new_event_loop()  # grpc.aio calls, pumped between callbacks
    transport = GrpcCalloutDispatcher(
        grpc_loop,
        {
            name: GrpcCluster(url, callout_timeout_ms / 1000.0)
            for name, url in clusters.items()
            if url.split(":", 1)[0].lower() in GRPC_SCHEMES
        },
    )
    if grpc is None:
        grpc = transport
    elif getattr(grpc, "fallback", False) is None:
        grpc.fallback = transport  # type: ignore[attr-defined]  # mocks first, then the clusters
    host = PluginHost(engine, clock=clock, http=callouts, grpc=grpc, log_level=req.log_level)
    host.node = req.node
    try:
        yield host, callouts, clock
    finally:
        result.logs = [r.to_dict() for r in host.logs]
        result.metrics = dict(host.metrics.snapshot())
        result.callouts = [callout_summary(c, request=callout_requests) for c in callouts.completed]
        callouts.close()
        host.close()
        grpc_loop.run_until_complete(transport.aclose())
        grpc_loop.close()


def settle(host: PluginHost, callouts: CalloutClient, callout_timeout_ms: float) -> None:
    """Run everything posted (callout responses, queue deliveries) until quiet (bounded)."""
    for _ in range(1000):
        n = callouts.perform_pending() + host.run_pending()
        grpc = host.grpc
        grpc = getattr(grpc, "fallback", None) or grpc  # mocks in front of the transport
        if n == 0 and isinstance(grpc, GrpcCalloutDispatcher):
            # gRPC calls in flight: run their loop until one answers (bounded)
            n = grpc.pump(callout_timeout_ms / 1000.0)
        if n == 0:
            return


def start_plugin(
    host: PluginHost,
    wasm: bytes,
    req: RunSettings,
    result: RunOutcome,
    *,
    trace: bool = False,
) -> tuple[PluginVM, RootContext] | None:
    """Compile ``wasm`` (``LoadError`` propagates: bad input), create the VM and start
    the plugin; ABI, SDK and warnings go to ``result``, a start-up failure too (then
    None). ``trace``: profile and record every guest call from the plugin's start on."""
    module = host.compile(wasm)
    info = describe(module)
    result.abi, result.sdk = info.abi, info.sdk
    config = VmConfig(
        name=req.plugin_name or req.root_id or "plugin",
        vm_configuration=req.vm_configuration,
        env=tuple(req.env),
        callback_timeout_ms=req.callback_timeout_ms,
        profile=trace,
    )
    try:
        vm = host.create_vm(module, config)
        result.warnings += vm.warnings
        if trace:
            vm.trace_calls = True
        root = vm.start_plugin(req.root_id, req.configuration, req.plugin_name or req.root_id)
    except VmStartError as e:
        result.failure = e.failure.to_dict()
        return None
    return vm, root


def fire_ticks(
    vm: PluginVM,
    root: RootContext,
    clock: VirtualClock,
    ticks: int,
    result: RunOutcome,
    between: Callable[[], None] | None = None,
) -> None:
    """``--ticks``: fire up to ``ticks`` tick periods on the virtual clock (``between``
    runs after each); stops at a trap, says so when the plugin set no period."""
    for _ in range(ticks):
        if not root.tick_period_ms:
            result.notes.append("--ticks given but the plugin set no tick period; no tick fired")
            break
        clock.advance(root.tick_period_ms)
        vm.tick(root)
        result.ticks_fired += 1
        if between is not None:
            between()
        if vm.failed:
            break


def callout_summary(c: HttpCallout, *, request: bool = False) -> dict[str, object]:
    """One finished callout as a result lists it; ``request``: with its headers and body."""
    d: dict[str, object] = {"cluster": c.cluster}
    if request:
        d["headers"] = [[k.decode("latin-1"), v.decode("utf-8", "replace")] for k, v in c.headers]
        d["body"] = c.body.decode("utf-8", "replace")
    return d | {
        "response_status": c.response_status,
        "failure": c.failure,
        "elapsed_ms": round(c.elapsed_ms, 2),
    }


class WaitListener(StreamListener):
    """Hears the plugin continue or close a context's streams: what a paused driver
    waits for."""

    def __init__(self) -> None:
        self.resumed: list[StreamType] = []
        self.closed: list[StreamType] = []

    def on_resume(self, ctx: object, stream: StreamType) -> None:
        self.resumed.append(stream)

    def on_close(self, ctx: object, stream: StreamType) -> None:
        self.closed.append(stream)


class Driver:
    """Drives one context of an offline run (``try``'s stream, ``try --tcp``'s
    connection) between guest callbacks: runs posted work, and waits out a pause."""

    # While a request waits, ticks keep firing as in Envoy (a plugin may resume it from
    # proxy_on_tick, like the Go SDK's postpone_requests); bounded in virtual time.
    MAX_WAIT_MS = 30_000.0

    def __init__(
        self,
        req: RunSettings,
        host: PluginHost,
        callouts: CalloutClient,
        clock: VirtualClock,
        result: RunOutcome,
        listener: WaitListener,
    ) -> None:
        self.req = req
        self.host = host
        self.callouts = callouts
        self.clock = clock
        self.result = result
        self.listener = listener

    def settle(self) -> None:
        """Run everything posted (callout responses, queue deliveries) until quiet."""
        settle(self.host, self.callouts, self.req.callout_timeout_ms)

    def stopped(self, ctx: Context) -> Action | None:
        """What ends a wait whatever the stream: the plugin closed the context."""
        return Action.CLOSE if self.listener.closed else None

    def wait(self, ctx: Context, stream: StreamType, action: Action) -> Action:
        """After PAUSE: let callouts, queues and ticks run; CONTINUE once the plugin
        continued ``stream``, what ``stopped`` says, FAILED, else still PAUSE."""
        if action != Action.PAUSE:
            return action
        before = len(self.listener.resumed)
        waited = 0.0
        root = ctx.root
        assert isinstance(root, RootContext)  # a stream's context has a plugin root
        while True:
            self.settle()
            stop = self.stopped(ctx)
            if stop is not None:
                return stop
            if stream in self.listener.resumed[before:]:
                return Action.CONTINUE
            if ctx.vm.failed:
                return Action.FAILED
            period = root.tick_period_ms
            if not period or waited >= self.MAX_WAIT_MS:
                return Action.PAUSE
            self.clock.advance(period)
            waited += period
            ctx.vm.tick(root)
            self.result.ticks_while_paused += 1


class _Listener(WaitListener):
    def __init__(self) -> None:
        super().__init__()
        self.local_replies = 0

    def on_local_reply(self, ctx: HttpContext) -> None:
        self.local_replies += 1


def _pairs(items: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.strip().lower().encode(), v.strip().encode()) for k, v in items]


class _Run(Driver):
    listener: _Listener

    def __init__(
        self,
        req: TryRequest,
        host: PluginHost,
        callouts: CalloutClient,
        clock: VirtualClock,
        result: TryResult,
    ) -> None:
        super().__init__(req, host, callouts, clock, result, _Listener())

    def stopped(self, ctx: Context) -> Action | None:
        if isinstance(ctx, HttpContext) and ctx.local_response is not None:
            if self.listener.local_replies:
                return Action.LOCAL_REPLY
        return super().stopped(ctx)


def run_try(
    wasm: bytes,
    req: TryRequest,
    *,
    engine: Engine | None = None,
    callouts: CalloutClient | None = None,
    grpc: GrpcDispatcher | None = None,
) -> TryResult:
    """Run one request and response through the plugin in ``wasm``. ``callouts``
    replaces the HTTP client, ``grpc`` the grpc.aio transport: the lab's mocks."""
    result = TryResult()
    with offline_host(
        req, result, engine=engine, callouts=callouts, grpc=grpc, callout_requests=True
    ) as (host, callouts, clock):
        try:
            _run(wasm, req, host, callouts, clock, result)
        finally:
            result.shared_data = dict(host.shared_data.snapshot())
    _root_id_warnings(req, result, host)
    return result


def _root_id_warnings(req: TryRequest, result: TryResult, host: PluginHost) -> None:
    """Say so when the plugin evidently found no context for its root id."""
    line = sdk_missing_root_line(host.logs)
    if line is not None:
        result.warnings.append(root_id_warning(req.root_id, line))
        return
    if result.failure is not None or result.local_response is not None:
        return
    ran = {c["name"] for c in result.callbacks}
    if not ran & {"proxy_on_request_headers", "proxy_on_response_headers"}:
        return  # it has no stream callbacks: silence proves nothing
    unchanged = (
        result.request_forwarded
        and result.request_headers == result.original_request_headers
        and result.request_body == req.body
        and result.response_headers == result.original_response_headers
        and result.response_body == req.response_body
    )
    silent = not any(r.source != "host" for r in host.logs)
    if unchanged and silent and not result.metrics and not result.callouts:
        result.warnings.append(silent_plugin_warning(req.root_id))


def _run(
    wasm: bytes,
    req: TryRequest,
    host: PluginHost,
    callouts: CalloutClient,
    clock: VirtualClock,
    result: TryResult,
) -> None:
    started = start_plugin(host, wasm, req, result, trace=True)  # LoadError: exit 2
    if started is None:
        _collect_trace(host, result)
        return
    vm, root = started
    run = _Run(req, host, callouts, clock, result)
    run.settle()
    # -- ticks (virtual clock: one period each) --
    fire_ticks(vm, root, clock, req.ticks, result, run.settle)
    if vm.failed:
        result.failure = vm.failure.to_dict()  # type: ignore[union-attr]
        _collect_trace(host, result)
        return
    _run_stream(vm, root, req, run, result)
    if vm.failed:
        result.failure = vm.failure.to_dict() if vm.failure else None
    _collect_trace(host, result)


def _run_stream(vm: object, root: object, req: TryRequest, run: _Run, result: TryResult) -> None:
    from host.wasm.vm import PluginVM

    assert isinstance(vm, PluginVM)
    request_id = req.request_id or str(uuid.uuid4())
    # Sizes count the body bytes that went through so far and request.duration exists
    # from proxy_on_log on, as in Envoy; the one (unnamed) route sends to no cluster.
    started = time.monotonic_ns()
    info = StreamInfo(
        request_id=request_id,
        start_time_ns=run.clock.wall_ns(),
        scheme=req.scheme,
        route_name="",
    )
    ctx = vm.new_http_context(root, info, run.listener)  # type: ignore[arg-type]
    headers = HeaderMap(
        [
            (":method", req.method),
            (":path", req.path),
            (":authority", req.authority),
            (":scheme", req.scheme),
        ]
    )
    for k, v in _pairs(req.headers):
        headers.add(k, v)
    if req.body and headers.get("content-length") is None:
        headers.add("content-length", str(len(req.body)))
    if headers.get("x-request-id") is None:
        headers.add("x-request-id", request_id)
    result.original_request_headers = headers.items()
    trailers = HeaderMap(_pairs(req.trailers)) if req.trailers else None
    forwarded_body = b""
    try:
        action = ctx.on_request_headers(headers, not req.body and trailers is None)
        action = run.wait(ctx, StreamType.HTTP_REQUEST, action)
        if action == Action.CONTINUE and (req.body or trailers is not None):
            buffered = False
            if req.body:
                info.request_size = len(req.body)
                action = ctx.on_request_body(req.body, trailers is None)
                # A plugin that buffers (StopIterationAndBuffer) before trailers gets its
                # trailers callback, which releases the body when it continues (Envoy).
                buffered = _buffering(ctx, StreamType.HTTP_REQUEST, action, trailers)
                if not buffered:
                    action = run.wait(ctx, StreamType.HTTP_REQUEST, action)
                if action == Action.CONTINUE:
                    forwarded_body = ctx.take_body(StreamType.HTTP_REQUEST)
            if (action == Action.CONTINUE or buffered) and trailers is not None:
                action = ctx.on_request_trailers(trailers)
                action = run.wait(ctx, StreamType.HTTP_REQUEST, action)
                if action == Action.CONTINUE and buffered:
                    forwarded_body = ctx.take_body(StreamType.HTTP_REQUEST)
            result.request_trailers = trailers.items() if trailers is not None else None
        result.request_headers = headers.items()
        result.request_body = forwarded_body if action == Action.CONTINUE else req.body
        if action == Action.FAILED:
            return
        if action == Action.PAUSE:
            result.notes.append(
                "the request stayed paused: the plugin never called continue_stream, so it "
                "would not reach the upstream (Envoy would hold it until its timeout)"
            )
            return
        if action == Action.CLOSE:
            result.notes.append("the plugin reset the stream (proxy_close_stream)")
            return
        if action == Action.CONTINUE:
            result.request_forwarded = True
        # -- response: the upstream's, or the plugin's local reply --
        lr = ctx.local_response
        if lr is not None:
            result.local_response = lr.to_dict()
            rheaders = lr.response_headers()
            rbody = lr.body
            rtrailers = None
        else:
            rheaders = HeaderMap([(":status", str(req.status))])
            for k, v in _pairs(req.response_headers):
                rheaders.add(k, v)
            rbody = req.response_body
            if rbody and rheaders.get("content-length") is None:
                rheaders.add("content-length", str(len(rbody)))
            rtrailers = HeaderMap(_pairs(req.response_trailers)) if req.response_trailers else None
        result.original_response_headers = rheaders.items()
        info.response_code_details = lr.details if lr is not None else "via_upstream"
        out_body = b""
        action = ctx.on_response_headers(rheaders, not rbody and rtrailers is None)
        action = run.wait(ctx, StreamType.HTTP_RESPONSE, action)
        if action == Action.LOCAL_REPLY and lr is None and ctx.local_response is not None:
            # A local reply sent from the response path replaces the upstream response.
            lr = ctx.local_response
            result.local_response = lr.to_dict()
            rheaders = lr.response_headers()
            rbody, rtrailers = lr.body, None
            info.response_code_details = lr.details
            action = Action.CONTINUE
        if action == Action.CONTINUE and (rbody or rtrailers is not None):
            buffered = False
            if rbody:
                action = ctx.on_response_body(rbody, rtrailers is None)
                buffered = _buffering(ctx, StreamType.HTTP_RESPONSE, action, rtrailers)
                if not buffered:
                    action = run.wait(ctx, StreamType.HTTP_RESPONSE, action)
                if action == Action.CONTINUE:
                    out_body = ctx.take_body(StreamType.HTTP_RESPONSE)
                    info.response_size = len(out_body)
            if (action == Action.CONTINUE or buffered) and rtrailers is not None:
                action = ctx.on_response_trailers(rtrailers)
                action = run.wait(ctx, StreamType.HTTP_RESPONSE, action)
                if action == Action.CONTINUE and buffered:
                    out_body = ctx.take_body(StreamType.HTTP_RESPONSE)
                    info.response_size = len(out_body)
            result.response_trailers = rtrailers.items() if rtrailers is not None else None
        if action == Action.PAUSE:
            result.notes.append("the response stayed paused: the plugin never resumed it")
        status = rheaders.get(":status")
        result.response_status = int(status) if status and status.isdigit() else None
        result.response_headers = rheaders.items()
        result.response_body = out_body if action == Action.CONTINUE else rbody
    finally:
        info.request_complete = True
        info.duration_ns = time.monotonic_ns() - started
        ctx.finish()
        run.settle()


def _buffering(
    ctx: HttpContext, stream: StreamType, action: Action, trailers: HeaderMap | None
) -> bool:
    """The body callback stopped to buffer, and trailers follow (so no end of stream yet)."""
    return action == Action.PAUSE and trailers is not None and ctx.direction(stream).buffering


def _collect_trace(host: PluginHost, result: TryResult) -> None:
    for vm in host.vms:
        result.callbacks = [
            {"name": name, "context_id": cid, "result": r} for name, cid, r in vm.trace
        ]
        result.profile = profile_json(vm.profile)
