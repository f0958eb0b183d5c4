"""The gRPC transport for ``proxy_grpc_call``/``proxy_grpc_stream`` (a ``GrpcDispatcher``).

Calls go out over grpcio's asyncio API (``grpc.aio``) with generic method handlers:
no serializers, so the plugin's bytes are the message on the wire and the reply's
bytes are what ``GRPC_CALL_MESSAGE`` reads. One channel per (cluster, authority),
cached, closed when the cluster goes away or changes and at shutdown. Only
``grpc://`` (cleartext HTTP/2) and ``grpcs://`` (TLS, system trust store or the
cluster's ``caFile``) clusters are gRPC targets; the channel's target is built
from the cluster's own host and port only.

Events come back as Envoy delivers them (ABI doc §2.2, §3.4):

* unary call: ``proxy_on_grpc_receive`` with the reply (the call is then over), or
  ``proxy_on_grpc_close`` with the status and message on failure (a timeout is
  DEADLINE_EXCEEDED, 4);
* stream: ``..._initial_metadata`` once the server answered, one ``proxy_on_grpc_receive``
  per message, ``..._trailing_metadata`` (with ``grpc-status``/``grpc-message`` as in
  the HTTP/2 trailers), then ``proxy_on_grpc_close``; a call the server never answered
  (connection failure) gets only the close, as Envoy's stream reset does.

``close`` half-closes a stream's send side (replies still arrive); ``cancel`` ends the
call with no further callbacks. grpcio is imported once a gRPC cluster is configured
(or on the first call), so a proxy without gRPC clusters never loads it. The proxy
passes its own loop; the offline runner (``wasmdesk try``) passes a private loop and
``pump``s it between callbacks.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from host.wasm.context import GrpcCall
from host.wasm.types import Status

__all__ = ["GRPC_SCHEMES", "GrpcCalloutDispatcher", "GrpcCluster"]

GRPC_SCHEMES = ("grpc", "grpcs")
# gRPC status codes the transport itself produces
_CANCELLED, _UNKNOWN, _INTERNAL, _UNAVAILABLE, _DEADLINE = 1, 2, 13, 14, 4
_NO_ANSWER = {_UNAVAILABLE, _DEADLINE, _CANCELLED}


class GrpcEvents(Protocol):
    def initial_metadata(self, call: GrpcCall, pairs: list[tuple[bytes, bytes]]) -> None: ...

    def message(self, call: GrpcCall, data: bytes) -> None: ...

    def trailing_metadata(self, call: GrpcCall, pairs: list[tuple[bytes, bytes]]) -> None: ...

    def close(self, call: GrpcCall, status: int, message: bytes) -> None: ...


@dataclass(frozen=True)
class GrpcCluster:
    """A cluster as the gRPC transport sees it."""

    url: str
    timeout_s: float = 5.0  # a unary call's deadline when the plugin gave none
    ca_file: str | None = None  # grpcs://: trust these CAs instead of the system store


@dataclass
class _Active:
    call: GrpcCall
    events: GrpcEvents
    outbox: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    rpc: Any = None
    half_closed: bool = False
    cancelled: bool = False
    started: float = field(default_factory=time.perf_counter)
    replies: list[bytes] = field(default_factory=list)  # the first few, for the recorder


def _to_grpc_metadata(pairs: list[tuple[bytes, bytes]]) -> tuple[tuple[str, str | bytes], ...]:
    out: list[tuple[str, str | bytes]] = []
    for k, v in pairs:
        key = k.decode("latin-1").lower()
        out.append((key, v if key.endswith("-bin") else v.decode("latin-1")))
    return tuple(out)


def _from_grpc_metadata(md: Any) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for k, v in md or ():
        out.append((str(k).encode("latin-1"), v if isinstance(v, bytes) else str(v).encode()))
    return out


def _code_number(code: Any) -> int:
    try:
        return int(code.value[0])
    except (AttributeError, IndexError, TypeError, ValueError):
        return _UNKNOWN


_MAX_RECORDED_CONTEXTS = 1000


class GrpcCalloutDispatcher:
    """``GrpcDispatcher`` over grpc.aio; every method runs on the loop's thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        clusters: Mapping[str, GrpcCluster] | None = None,
        *,
        on_finished: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.loop = loop
        self.reason = ""
        self.on_finished = on_finished
        self._clusters: dict[str, GrpcCluster] = {}
        self._channels: dict[tuple[str, str], tuple[GrpcCluster, Any]] = {}
        self._active: dict[int, _Active] = {}
        self._grpc: Any = None
        self._events = 0  # events emitted (the runner's pump watches it)
        self._wake: asyncio.Event | None = None
        self._stalled: set[int] = set()  # tokens a pump already waited for in vain
        # the newest finished calls: (call, gRPC status, message)
        self.finished: deque[tuple[GrpcCall, int, str]] = deque(maxlen=100)
        # finished calls by (id(vm), context id) until the recorder takes them (bounded)
        self._by_context: dict[tuple[int, int], list[dict[str, Any]]] = {}
        self.set_clusters(clusters or {})

    # -- clusters and channels --------------------------------------------------------

    def set_clusters(self, clusters: Mapping[str, GrpcCluster]) -> None:
        """The gRPC clusters now configured; channels of removed or changed ones close."""
        self._clusters = {
            n: c for n, c in clusters.items() if urlsplit(c.url).scheme.lower() in GRPC_SCHEMES
        }
        for key, (cluster, channel) in list(self._channels.items()):
            if self._clusters.get(key[0]) != cluster:
                del self._channels[key]
                self.loop.create_task(channel.close())
        if self._clusters:
            self._module()  # import grpcio now (~0.2 s), not inside the first call

    def has_cluster(self, name: str) -> bool:
        return name in self._clusters

    def _module(self) -> Any:
        if self._grpc is None:
            self._grpc = importlib.import_module("grpc")
            importlib.import_module("grpc.aio")
        return self._grpc

    def _channel(self, call: GrpcCall) -> Any:
        cluster = self._clusters[call.cluster]
        authority = call.authority or call.cluster  # Envoy's default :authority
        key = (call.cluster, authority)
        cached = self._channels.get(key)
        if cached is not None and cached[0] == cluster:
            return cached[1]
        grpc = self._module()
        parts = urlsplit(cluster.url)
        tls = parts.scheme.lower() == "grpcs"
        host = parts.hostname or ""
        port = parts.port or (443 if tls else 80)
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        options: list[tuple[str, Any]] = [
            ("grpc.default_authority", authority),
            ("grpc.enable_http_proxy", 0),  # the cluster's own address, never a proxy
            ("grpc.enable_retries", 0),  # Envoy's async client does not retry either
        ]
        if tls:
            roots = Path(cluster.ca_file).read_bytes() if cluster.ca_file else None
            # the certificate is checked against the cluster's host, whatever :authority says
            options.append(("grpc.ssl_target_name_override", host))
            creds = grpc.ssl_channel_credentials(root_certificates=roots)
            channel = grpc.aio.secure_channel(target, creds, options=options)
        else:
            channel = grpc.aio.insecure_channel(target, options=options)
        self._channels[key] = (cluster, channel)
        return channel

    # -- GrpcDispatcher ---------------------------------------------------------------

    def start(self, call: GrpcCall, events: object) -> Status:
        if call.cluster not in self._clusters:
            self.reason = (
                f"unknown gRPC cluster {call.cluster!r} (a grpc:// or grpcs:// cluster is "
                "needed): PARSE_FAILURE, as Envoy answers"
            )
            return Status.PARSE_FAILURE
        active = _Active(call, events)  # type: ignore[arg-type]
        self._active[call.token] = active
        run = self._stream(active) if call.stream else self._unary(active)
        active.task = self.loop.create_task(run)
        return Status.OK

    def send(self, call: GrpcCall, message: bytes, end_stream: bool) -> Status:
        active = self._active.get(call.token)
        if active is None:
            return Status.NOT_FOUND
        if active.half_closed:
            return Status.BAD_ARGUMENT  # the send side was closed already
        active.outbox.put_nowait(message)
        if end_stream:
            active.half_closed = True
            active.outbox.put_nowait(None)
        return Status.OK

    def close(self, call: GrpcCall) -> None:
        active = self._active.get(call.token)
        if active is not None and not active.half_closed:
            active.half_closed = True
            active.outbox.put_nowait(None)

    def cancel(self, call: GrpcCall) -> None:
        active = self._active.pop(call.token, None)
        if active is None:
            return
        active.cancelled = True
        if active.rpc is not None:
            active.rpc.cancel()
        if active.task is not None:
            active.task.cancel()
        self._finished(active, _CANCELLED, "cancelled by the plugin", count=False)

    # -- the calls ---------------------------------------------------------------------

    def _emit(self, active: _Active, fn: Callable[[], None]) -> None:
        if active.cancelled:
            return
        fn()
        self._events += 1
        if self._wake is not None:
            self._wake.set()

    def take(self, vm: object, context_id: int) -> list[dict[str, Any]]:
        """The calls a context made that finished since, for the lab's recorder (the same
        shape as its mocks' records; bodies as bytes)."""
        return self._by_context.pop((id(vm), context_id), [])

    def _finished(self, active: _Active, status: int, message: str, count: bool = True) -> None:
        self._stalled.discard(active.call.token)
        self.finished.append((active.call, status, message))
        vm = getattr(active.events, "vm", None)
        if vm is not None:
            call = active.call
            while len(self._by_context) >= _MAX_RECORDED_CONTEXTS:  # nobody takes them
                self._by_context.pop(next(iter(self._by_context)))
            got = self._by_context.setdefault((id(vm), call.context_id), [])
            if len(got) < 256:
                got.append(
                    {
                        "kind": "grpc",
                        "cluster": call.cluster,
                        "grpc_method": f"{call.service}/{call.method}",
                        "message": call.message.decode("utf-8", "replace"),
                        "request": {
                            "metadata": [
                                [k.decode("latin-1"), v.decode("utf-8", "replace")]
                                for k, v in call.metadata
                            ],
                            "message": call.message,
                        },
                        "response": {"body": b"".join(active.replies[:1])}
                        if active.replies
                        else None,
                        "grpc_status": status,
                        "grpc_message": message,
                        "failure": None if status == 0 else message or f"grpc status {status}",
                        "elapsed_ms": round((time.perf_counter() - active.started) * 1000, 3),
                    }
                )
        if count and self.on_finished is not None:  # a cancel is neither success nor failure
            self.on_finished(active.call.cluster, status == 0)

    def _close(self, active: _Active, status: int, message: str) -> None:
        if self._active.pop(active.call.token, None) is None:
            return  # cancelled meanwhile
        self._finished(active, status, message)
        self._emit(active, lambda: active.events.close(active.call, status, message.encode()))

    def _path(self, call: GrpcCall) -> str:
        return f"/{call.service}/{call.method}"

    async def _unary(self, active: _Active) -> None:
        call = active.call
        grpc = self._module()
        try:
            channel = self._channel(call)
            method = channel.unary_unary(
                self._path(call), request_serializer=None, response_deserializer=None
            )
            timeout = call.timeout_ms / 1000.0 if call.timeout_ms else None
            if timeout is None:
                timeout = self._clusters[call.cluster].timeout_s
            reply = await method(
                call.message, metadata=_to_grpc_metadata(call.metadata), timeout=timeout
            )
        except asyncio.CancelledError:
            raise
        except Exception as e:  # AioRpcError, bad metadata, unreadable caFile
            if isinstance(e, grpc.aio.AioRpcError):
                self._close(active, _code_number(e.code()), e.details() or "")
            else:
                self._close(active, _INTERNAL, f"{type(e).__name__}: {e}")
            return
        if self._active.pop(call.token, None) is None:
            return
        data = bytes(reply)
        active.replies.append(data)
        self._finished(active, 0, "")
        self._emit(active, lambda: active.events.message(call, data))

    async def _write(self, active: _Active, rpc: Any) -> None:
        try:
            while True:
                msg = await active.outbox.get()
                if msg is None:
                    await rpc.done_writing()
                    return
                await rpc.write(msg)
        except asyncio.CancelledError:
            raise
        except Exception:  # the call ended meanwhile; its status says why
            return

    async def _stream(self, active: _Active) -> None:
        call = active.call
        writer: asyncio.Task[None] | None = None
        try:
            grpc = self._module()
            channel = self._channel(call)
            method = channel.stream_stream(
                self._path(call), request_serializer=None, response_deserializer=None
            )
            rpc = active.rpc = method(metadata=_to_grpc_metadata(call.metadata))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._close(active, _INTERNAL, f"{type(e).__name__}: {e}")
            return
        writer = self.loop.create_task(self._write(active, rpc))
        answered = False

        def metadata_once(md: list[tuple[bytes, bytes]]) -> None:
            nonlocal answered
            if not answered:
                answered = True
                self._emit(active, lambda: active.events.initial_metadata(call, md))

        try:
            try:
                md = _from_grpc_metadata(await rpc.initial_metadata())
                if md:
                    metadata_once(md)
                while True:
                    msg = await rpc.read()
                    if msg is grpc.aio.EOF:
                        break
                    metadata_once([])
                    data = bytes(msg)
                    if len(active.replies) < 16:
                        active.replies.append(data)
                    self._emit(active, lambda d=data: active.events.message(call, d))  # type: ignore[misc]
            except grpc.aio.AioRpcError:
                pass  # the status below says what happened
            code = _code_number(await rpc.code())
            details = await rpc.details() or ""
            trailing = _from_grpc_metadata(await rpc.trailing_metadata())
        except asyncio.CancelledError:
            raise
        except Exception as e:  # never leave the plugin without its close callback
            rpc.cancel()
            self._close(active, _INTERNAL, f"{type(e).__name__}: {e}")
            return
        finally:
            if not writer.done():
                writer.cancel()
        if answered or trailing or code not in _NO_ANSWER:
            metadata_once([])
            trailers = [*trailing, (b"grpc-status", str(code).encode())]
            if details:
                trailers.append((b"grpc-message", details.encode()))
            self._emit(active, lambda: active.events.trailing_metadata(call, trailers))
        self._close(active, code, details)

    # -- the offline runner and shutdown ------------------------------------------------

    @property
    def busy(self) -> bool:
        """Calls in flight."""
        return bool(self._active)

    def pump(self, timeout_s: float) -> int:
        """Run the (not running) loop until an event is emitted or ``timeout_s`` passes;
        the number of events emitted. For the offline runner only. Calls a pump already
        waited ``timeout_s`` for in vain (a stream the server keeps open) are not waited
        for again: later pumps only collect what is ready."""
        if not self._active:
            return 0
        before = self._events
        if set(self._active) <= self._stalled:
            timeout_s = 0.01

        async def wait() -> None:
            self._wake = asyncio.Event()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout_s)
            except TimeoutError:
                pass
            finally:
                self._wake = None
            await asyncio.sleep(0)  # let the other finished calls emit too

        self.loop.run_until_complete(wait())
        if self._events == before:
            self._stalled |= set(self._active)
        return self._events - before

    async def aclose(self) -> None:
        """Cancel what is in flight (no callbacks) and close every channel."""
        for active in list(self._active.values()):
            self.cancel(active.call)
        channels = [ch for _c, ch in self._channels.values()]
        self._channels.clear()
        for ch in channels:
            await ch.close()
