"""A real gRPC server on 127.0.0.1 for the gRPC callout tests (grpcio, generic handlers,
raw bytes; runs in its own threads, started and stopped by the test).

Service ``test.Echo``:

* ``Unary``: replies ``b"echo:" + request``; request ``b"fail"`` aborts with NOT_FOUND
  and message ``"no such thing"``; request ``b"slow"`` sleeps 2 s first. Sends initial
  metadata ``x-srv: unary`` and echoes the caller's ``x-*`` metadata back as trailing
  metadata (``seen-<key>: value``, not the binary ``-bin`` ones), so a test sees what
  was sent.
* ``Chat``: bidirectional; initial metadata ``x-srv: chat``; replies ``b"re:" + msg`` per
  message; a message ``b"abort"`` ends the call with PERMISSION_DENIED ``"go away"``;
  when the client half-closes it sends ``b"bye"`` and ends OK with trailing metadata
  ``x-count: <messages received>``.
* ``Hold``: bidirectional; sends initial metadata ``x-srv: hold`` and then nothing, until
  the client goes away (at most 5 s).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc


class EchoServer:
    def __init__(self, credentials: grpc.ServerCredentials | None = None) -> None:
        self.seen_metadata: list[dict[str, str]] = []
        self.seen_authority: list[str] = []
        self.cancelled = threading.Event()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handler = grpc.method_handlers_generic_handler(
            "test.Echo",
            {
                "Unary": grpc.unary_unary_rpc_method_handler(self._unary),
                "Chat": grpc.stream_stream_rpc_method_handler(self._chat),
                "Hold": grpc.stream_stream_rpc_method_handler(self._hold),
            },
        )
        self.server.add_generic_rpc_handlers((handler,))
        if credentials is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        self.server.start()

    def _note(self, context: Any) -> dict[str, str]:
        md = {k: (v if isinstance(v, str) else v.hex()) for k, v in context.invocation_metadata()}
        self.seen_metadata.append(md)
        # grpcio has no public API for the request's :authority; its call details carry it
        host = getattr(
            getattr(getattr(context, "_rpc_event", None), "call_details", None), "host", b""
        )
        self.seen_authority.append(host.decode() if isinstance(host, bytes) else str(host))
        return md

    def _unary(self, request: bytes, context: Any) -> bytes:
        md = self._note(context)
        context.send_initial_metadata((("x-srv", "unary"),))
        context.set_trailing_metadata(
            tuple(
                (f"seen-{k}", v)
                for k, v in md.items()
                if k.startswith("x-") and not k.endswith("-bin")
            )
        )
        if request == b"fail":
            context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        if request == b"slow":
            for _ in range(40):
                if not context.is_active():
                    self.cancelled.set()
                    break
                time.sleep(0.05)
        return b"echo:" + request

    def _chat(self, requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        self._note(context)
        context.add_callback(self.cancelled.set)
        context.send_initial_metadata((("x-srv", "chat"),))
        n = 0
        for msg in requests:
            n += 1
            if msg == b"abort":
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "go away")
            yield b"re:" + msg
        context.set_trailing_metadata((("x-count", str(n)),))
        yield b"bye"

    def _hold(self, requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        context.send_initial_metadata((("x-srv", "hold"),))
        t0 = time.monotonic()
        while context.is_active() and time.monotonic() - t0 < 5:
            time.sleep(0.05)
        yield from ()

    def stop(self) -> None:
        self.server.stop(grace=None).wait(5)
