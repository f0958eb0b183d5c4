"""Writes held to the end of the event loop's tick, then sent together.

A saturated proxy handles several sockets' events per loop iteration. Writing each
response (and each upstream request) as soon as it is framed wakes the reading peer
once per write; on a small machine, where the client, the proxy and the upstream share
two cores, those wake-ups (an inter-processor interrupt each, dearer still in a VM) were
a third of the proxy's kernel time. Held until the tick's I/O callbacks have run, the
writes of that tick go out back to back: a peer woken by the first finds the others
waiting. Envoy's connections do the same (a write is buffered and flushed from the
dispatcher, not from the filter that made it).

Under light load a tick holds one event, so a write waits only for the rest of its own
callback. Each HTTP/1.1 adapter (``http1.DownstreamProtocol``, ``upstream
.UpstreamProtocol``) keeps its pending bytes and asks the loop's ``WriteBatch`` for one
flush; before it closes its transport it flushes (or, aborting, drops) them itself.
"""

from __future__ import annotations

import asyncio

from mypy_extensions import trait

__all__ = ["BatchedWriter", "WriteBatch"]


@trait
class BatchedWriter:
    """A connection whose writes a ``WriteBatch`` flushes: ``hold`` keeps bytes for the
    end of the tick, ``flush_out`` sends them (nothing to a transport gone meanwhile),
    ``close_held`` sends them, then closes. A trait: the adapters also derive from
    ``ReadGate`` and asyncio's ``Protocol``; they set the three attributes."""

    transport: asyncio.Transport | None
    batch: WriteBatch
    _out: list[bytes]  # written in this tick, not yet sent

    def hold(self, data: bytes) -> None:
        out = self._out
        if not out:
            self.batch.hold(self)
        out.append(data)

    def flush_out(self) -> None:
        out = self._out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            if self.transport is not None:
                self.transport.write(data)

    def close_held(self) -> None:
        """Send what this tick wrote, then close (asyncio drops writes after close)."""
        self.flush_out()
        if self.transport is not None:
            self.transport.close()


class WriteBatch:
    """The writers with bytes held in this tick of ``loop``; one ``call_soon`` per tick
    flushes them all, in the order they first wrote (uvloop and asyncio run it after the
    tick's I/O callbacks)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: list[BatchedWriter] = []
        # bound once: a call by name looks the method up every time
        self._call_soon = loop.call_soon
        self._flush = self.flush

    def hold(self, writer: BatchedWriter) -> None:
        """``writer`` holds bytes now (it calls this once until its next flush)."""
        if not self.waiting:
            self._call_soon(self._flush)
        self.waiting.append(writer)

    def flush(self) -> None:
        waiting = self.waiting
        self.waiting = []
        for w in waiting:
            w.flush_out()

