"""``proxy_http_call``'s transport: httpx requests to the configured clusters.

The plugin host hands each callout to ``CalloutDispatcher.dispatch``; it runs as a
task on the proxy's loop, bounded per cluster, and reports back through ``done``.
The owner (``host.proxy.plugins.PluginManager``) provides the loop, the cluster
addresses and the stats counter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

import httpx

from host.callout_request import build_callout_request, callout_failure, record_callout_response
from host.proxy.tls import client_context
from host.wasm.context import HttpCallout

__all__ = ["CLUSTER_CONCURRENCY", "CalloutDispatcher", "CalloutOwner"]


class CalloutOwner(Protocol):
    """What the dispatcher reads of its owner: the loop, the clusters, the stats."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def cluster_urls(self) -> dict[str, tuple[str, float]]: ...

    def stat_inc(self, name: str, n: int = 1) -> None: ...


CLUSTER_CONCURRENCY = 32
"""Callouts one cluster carries at once; the rest wait their turn (FIFO)."""


class CalloutDispatcher:
    """``proxy_http_call`` over httpx to the configured clusters (off the hot path).

    Requests go to the cluster's own address (``host.callout_request``); each
    cluster carries at most ``CLUSTER_CONCURRENCY`` at once, the rest queue.
    """

    def __init__(self, owner: CalloutOwner) -> None:
        self.m = owner
        self._client: httpx.AsyncClient | None = None
        # https:// clusters with a caFile (cluster -> file): verified against it, not the
        # system store, each CA file with its own client
        self.ca_files: dict[str, str] = {}
        self._ca_clients: dict[str, httpx.AsyncClient] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._queues: dict[str, asyncio.Semaphore] = {}

    def has_cluster(self, name: str) -> bool:
        return name in self.m.cluster_urls

    def dispatch(self, call: HttpCallout, done: Callable[[HttpCallout], None]) -> None:
        task = self.m.loop.create_task(self._run(call, done))
        self._tasks[id(call)] = task
        task.add_done_callback(lambda _t: self._tasks.pop(id(call), None))

    def cancel(self, call: HttpCallout) -> None:
        t = self._tasks.pop(id(call), None)
        if t is not None:
            t.cancel()

    async def _run(self, call: HttpCallout, done: Callable[[HttpCallout], None]) -> None:
        base, default_timeout = self.m.cluster_urls[call.cluster]
        timeout = call.timeout_ms / 1000.0 if call.timeout_ms else default_timeout
        ca_file = self.ca_files.get(call.cluster)
        client = self._client if ca_file is None else self._ca_clients.get(ca_file)
        t0 = time.perf_counter()
        if client is None:
            # The per-cluster semaphores bound what the pool sees: httpx's pool does
            # work proportional to its queue on every change (quadratic in the queue).
            try:
                client = httpx.AsyncClient(
                    follow_redirects=False,
                    trust_env=False,
                    limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
                    verify=client_context(ca_file) if ca_file else True,
                )
            except OSError as e:  # an unreadable caFile (ssl.SSLError too)
                call.failure = callout_failure(httpx.ConnectError(f"caFile {ca_file}: {e}"))
                call.elapsed_ms = (time.perf_counter() - t0) * 1000
                self.m.stat_inc(f"cluster.{call.cluster}.callout_failure")
                done(call)
                return
            if ca_file is None:
                self._client = client
            else:
                self._ca_clients[ca_file] = client
        sem = self._queues.get(call.cluster)
        if sem is None:
            sem = self._queues[call.cluster] = asyncio.Semaphore(CLUSTER_CONCURRENCY)
        try:
            req = build_callout_request(base, call)
            async with sem:  # FIFO per cluster; the timeout covers the wait, as Envoy's
                left = timeout - (time.perf_counter() - t0)
                if left <= 0:
                    raise httpx.PoolTimeout("queued past the callout timeout")
                resp = await client.request(
                    req.method,
                    req.url,
                    headers=req.headers,
                    content=call.body or None,
                    timeout=left,
                )
        except (ValueError, httpx.HTTPError) as e:
            call.failure = callout_failure(e)
        else:
            record_callout_response(call, resp)
        call.elapsed_ms = (time.perf_counter() - t0) * 1000
        self.m.stat_inc(
            f"cluster.{call.cluster}.callout_" + ("failure" if call.failure else "success")
        )
        done(call)

    async def aclose(self) -> None:
        for t in list(self._tasks.values()):
            t.cancel()
        if self._client is not None:
            await self._client.aclose()
        for c in self._ca_clients.values():
            await c.aclose()
