"""Recording traffic under ``serve`` as a HAR 1.2 session (see ``host.lab.har``).

The recorder hangs off the plugin manager: the chain tells it when a plugin finished a
request (``hop_finished``: that VM's callouts and the clock values and random bytes
the guest obtained, via ``RecordingClock``) and when the whole request finished
(``exchange_finished``: the inspector's record, with every hop's headers and bodies
before and after). Every change replaces the file by rename (a kernel copy of it with
the new entry in place of the closing brackets), so a reader always finds valid HAR
and a crash of the process loses at most the requests in flight; nothing is
re-encoded, the copy costs about 2 ms per MB of session. Bounded by a count (1000)
and a size (16 MiB): past either, recording stops with a clear message (and the
reason in ``log._wasmdesk.stopped``).

Bodies come from the inspector's records, which keep the first 16 KiB of each; a
longer body is recorded cut, with ``_wasmdesk.truncated`` listing where.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from host.lab.env import RecordingClock
from host.lab.har import body_to_json, empty_log, pairs_to_json, write_text_atomically

if TYPE_CHECKING:
    from host.proxy.chain import ChainRun, HopRecord, RequestRecord
    from host.wasm.context import HttpCallout, HttpContext

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_ENTRIES", "Recorder", "client_view"]

DEFAULT_MAX_ENTRIES = 1000
DEFAULT_MAX_BYTES = 16 << 20  # each request copies the file: ~2 ms per MB

BPairs = list[tuple[bytes, bytes]]


def client_view(pairs: BPairs) -> BPairs:
    """The request headers as the client sent them: without what the proxy appends
    after the client's own (``x-forwarded-for`` with the client's address last,
    ``x-forwarded-proto``, a generated ``x-request-id``; ``http1.py``'s shape)."""
    out = list(pairs)
    # the proxy appends xff, then x-forwarded-proto, then (if it made one) x-request-id
    for i in range(len(out) - 2, -1, -1):
        if out[i][0] == b"x-forwarded-for" and out[i + 1][0] == b"x-forwarded-proto":
            xff = out[i][1]
            tail = out[i + 2 :]
            if tail and tail[0][0] == b"x-request-id":
                tail = tail[1:]
            head = out[:i]
            client_part, sep, _ip = xff.rpartition(b", ")
            if sep:
                head.append((b"x-forwarded-for", client_part))
            return head + tail
    return out


def _split(pairs: BPairs) -> tuple[dict[str, str], list[list[str]]]:
    pseudo: dict[str, str] = {}
    rest: list[list[str]] = []
    for k, v in pairs:
        if k.startswith(b":"):
            pseudo[k.decode("latin-1")] = v.decode("latin-1")
        else:
            rest.append([k.decode("latin-1"), v.decode("utf-8", "replace")])
    return pseudo, rest


def _har_headers(pairs: list[list[str]]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in pairs]


def _callout(plugin: str, c: HttpCallout) -> dict[str, Any]:
    resp: dict[str, Any] | None = None
    if c.failure is None and c.response_status is not None:
        resp = {
            "status": c.response_status,
            "headers": pairs_to_json(c.response_headers),
            "body": body_to_json(c.response_body),
        }
    return {
        "kind": "http",
        "plugin": plugin,
        "cluster": c.cluster,
        "request": {"headers": pairs_to_json(c.headers), "body": body_to_json(c.body)},
        "response": resp,
        "failure": c.failure,
        "elapsed_ms": round(c.elapsed_ms, 3),
    }


class Recorder:
    """Appends each finished request to a HAR file, atomically, within bounds."""

    def __init__(
        self,
        path: str | Path,
        clock: RecordingClock,
        *,
        chain: list[dict[str, Any]] | None = None,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        on_stop: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.clock = clock
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.on_stop = on_stop
        self.doc = empty_log()
        self.doc["log"]["_wasmdesk"] = {"version": 1, "chain": list(chain or [])}
        self.entries: list[dict[str, Any]] = []
        # each entry serialised once: a write joins these strings (no re-encoding)
        self._encoded: list[str] = []
        self._end = 0  # where the closing brackets start in the file
        self.prev_clock: Any = None  # the host's clock before recording (put back after)
        self.size = 0
        self.stopped: str | None = None
        self.active = True
        self._pending: dict[int, dict[str, Any]] = {}
        self._vm_order: dict[str, int] = {}
        self._write()

    # -- from the chain --

    def hop_finished(self, run: ChainRun, plugin: str, vm: Any, ctx: HttpContext) -> None:
        if not self.active:
            self.clock.take(vm, ctx.id)
            _take_grpc(vm, ctx.id)
            return
        p = self._pending.setdefault(id(run), {"callouts": [], "env": {}, "vm_order": {}})
        p["callouts"].extend(_callout(plugin, c) for c in ctx.callouts or ())
        p["callouts"].extend(_grpc_entry(plugin, c) for c in _take_grpc(vm, ctx.id))
        env = self.clock.take(vm, ctx.id)
        if env:
            p["env"][plugin] = env
        n = self._vm_order.get(plugin, 0) + 1
        self._vm_order[plugin] = n
        p["vm_order"][plugin] = n

    def exchange_finished(self, run: ChainRun, rec: RequestRecord) -> None:
        pending = self._pending.pop(id(run), None)
        if not self.active:
            return
        entry = entry_of(rec, pending)
        encoded = json.dumps(entry, ensure_ascii=False)
        size = len(encoded)
        if len(self.entries) >= self.max_entries:
            self.stop(f"recording stopped: the limit of {self.max_entries} requests was reached")
            return
        if self.size + size > self.max_bytes:
            self.stop(f"recording stopped: the size limit of {self.max_bytes} bytes was reached")
            return
        self.entries.append(entry)
        self._encoded.append(encoded)
        self.size += size
        self._append(encoded)

    _FOOTER = "\n]}}\n"

    def _write(self) -> None:
        """The whole file, rewritten atomically (at the start and when the header
        changes): valid HAR whenever a reader opens it. Entries are encoded once."""
        head = json.dumps(
            {k: v for k, v in self.doc["log"].items() if k != "entries"}, ensure_ascii=False
        )
        body = '{"log": ' + head[:-1] + ', "entries": ['
        if self._encoded:
            body += "\n" + ",\n".join(self._encoded)
        write_text_atomically(self.path, body + self._FOOTER, fsync=False)
        self._end = len(body.encode("utf-8"))

    def _append(self, encoded: str) -> None:
        """One more entry: a kernel copy of the file, the entry written in place of its
        closing brackets, and a rename over the old file. A reader never sees a file
        being written (an in-place append would show a half-written tail), a crash of
        the process loses at most the requests in flight, and nothing is re-encoded.
        (No fsync: a debugging session needs to survive the process, not the machine.)"""
        data = (",\n" if len(self._encoded) > 1 else "\n") + encoded
        raw = (data + self._FOOTER).encode("utf-8")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=str(self.path.parent))
        try:
            os.close(fd)
            shutil.copyfile(self.path, tmp)
            fd = os.open(tmp, os.O_WRONLY)
            try:
                os.pwrite(fd, raw, self._end)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._end += len(data.encode("utf-8"))

    def stop(self, reason: str = "") -> None:
        if not self.active:
            return
        self.active = False
        self._pending.clear()
        if reason:
            self.stopped = reason
            self.doc["log"]["_wasmdesk"]["stopped"] = reason
            self._write()
            if self.on_stop is not None:
                self.on_stop(f"{reason}; {len(self.entries)} requests are in {self.path}")


def entry_of(rec: RequestRecord, p: dict[str, Any] | None = None) -> dict[str, Any]:
    """One HAR entry from an inspector record (and what the recorder gathered)."""
    p = p or {"callouts": [], "env": {}, "vm_order": {}}
    ran: list[HopRecord] = [h for h in rec.hops if h.ran]
    truncated: list[str] = []
    first = next((h for h in ran if h.request_headers_before is not None), None)
    if first is not None and first.request_headers_before is not None:
        pseudo, headers = _split(client_view(first.request_headers_before))
        body = first.request_body_before or b""
        if (first.request_body_before_size or 0) > len(body):
            truncated.append("client_request.body")
    else:
        pseudo = {":method": rec.method, ":path": rec.path, ":authority": rec.authority}
        headers, body = [], b""
    client_request = {
        "headers": [[k, v] for k, v in pseudo.items()] + headers,
        "body": body_to_json(body),
    }
    upstream: dict[str, Any] | None = None
    replied = any(h.local_reply for h in ran if h.mode == "enforce")
    last = next((h for h in reversed(ran) if h.response_headers_before is not None), None)
    if not replied and last is not None and last.response_headers_before is not None:
        rbody = last.response_body_before or b""
        if (last.response_body_before_size or 0) > len(rbody):
            truncated.append("upstream_response.body")
        upstream = {
            "headers": pairs_to_json(last.response_headers_before),
            "body": body_to_json(rbody),
        }
    hops: dict[str, Any] = {}
    for h in ran:
        if h.request_headers_before is not None:
            hops[h.plugin] = {
                "headers": pairs_to_json(h.request_headers_before),
                "body": body_to_json(h.request_body_before or b""),
            }
    # what the client got: the first plugin's response after, else the status alone
    out_first = next((h for h in ran if h.response_headers_after is not None), None)
    resp_pseudo: dict[str, str] = {}
    resp_headers: list[list[str]] = []
    resp_body = b""
    if out_first is not None and out_first.response_headers_after is not None:
        resp_pseudo, resp_headers = _split(out_first.response_headers_after)
        resp_body = out_first.response_body_after or out_first.response_body_before or b""
    url = f"{pseudo.get(':scheme', 'http')}://{pseudo.get(':authority', rec.authority)}"
    url += pseudo.get(":path", rec.path)
    req_body = body_to_json(body)
    har_request: dict[str, Any] = {
        "method": pseudo.get(":method", rec.method),
        "url": url,
        "httpVersion": "HTTP/1.1",
        "cookies": [],
        "headers": _har_headers(headers),
        "queryString": [],
        "headersSize": -1,
        "bodySize": len(body),
    }
    if body:
        har_request["postData"] = {
            "mimeType": dict((k, v) for k, v in headers).get("content-type", ""),
            **req_body,
        }
    content = body_to_json(resp_body)
    content["size"] = len(resp_body)
    content["mimeType"] = dict((k, v) for k, v in resp_headers).get("content-type", "")
    status = int(resp_pseudo.get(":status", rec.status) or rec.status)
    ext: dict[str, Any] = {
        "request_id": rec.request_id,
        "client_request": client_request,
        "upstream_response": upstream,
        "hops": hops,
        "callouts": p["callouts"],
        "env": p["env"],
        "vm_order": p["vm_order"],
        "outcome": rec.outcome,
    }
    if truncated:
        ext["truncated"] = truncated
    started = datetime.fromtimestamp(rec.started or time.time(), UTC)
    return {
        "startedDateTime": started.isoformat().replace("+00:00", "Z"),
        "time": round(rec.duration_ms, 3),
        "request": har_request,
        "response": {
            "status": status,
            "statusText": "",
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": _har_headers(resp_headers),
            "content": content,
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": len(resp_body),
        },
        "cache": {},
        "timings": {"send": 0, "wait": round(rec.duration_ms, 3), "receive": 0},
        "_wasmdesk": ext,
    }


# -- switching recording on and off on a running server ---------------------------------


def chain_of(server: Any) -> list[dict[str, Any]]:
    """The plugin chain as a session records it: name, root id, module, config, mode."""
    out: list[dict[str, Any]] = []
    for slot in server.manager.ordered:
        spec = slot.spec
        inst = slot.instance
        out.append(
            {
                "name": slot.name,
                "root_id": spec.plugin_name,
                "module_sha256": inst.vm.module.sha256 if inst is not None else None,
                "config": spec.plugin_config_json.decode("utf-8", "replace"),
                "mode": slot.mode,
            }
        )
    return out


def start_recording(
    server: Any,
    path: str | Path,
    *,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Recorder:
    """Record every finished request of ``server`` (a running ``ProxyServer``) into
    ``path``; the guest clock becomes a recording one."""
    stop_recording(server)
    clock = RecordingClock()
    rec = Recorder(
        path,
        clock,
        chain=chain_of(server),
        max_entries=max_entries,
        max_bytes=max_bytes,
        on_stop=server.manager.log_error,
    )
    rec.prev_clock = server.host.clock
    server.host.clock = clock
    server.manager.recorder = rec
    return rec


def stop_recording(server: Any) -> Recorder | None:
    from host.wasm.plugin_host import Clock

    rec: Recorder | None = server.manager.recorder
    if rec is None:
        return None
    rec.stop()
    server.manager.recorder = None
    server.host.clock = rec.prev_clock if rec.prev_clock is not None else Clock()
    return rec


def new_recording_path() -> Path:
    """A fresh file in the data directory's ``recordings`` folder."""
    from host.datadir import user_data_dir

    folder = user_data_dir() / "recordings"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    n = 0
    while True:
        path = folder / f"session-{stamp}{f'-{n}' if n else ''}.har"
        if not path.exists():
            return path
        n += 1


def _take_grpc(vm: Any, context_id: int) -> list[dict[str, Any]]:
    """The gRPC calls a context made: mocked ones, and those the grpc.aio transport
    carried (behind the mocks, or alone)."""
    out: list[dict[str, Any]] = []
    grpc = vm.host.grpc
    for dispatcher in (grpc, getattr(grpc, "fallback", None)):
        take = getattr(dispatcher, "take", None)
        if take is not None:
            out.extend(take(vm, context_id))
    return out


def _grpc_entry(plugin: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A gRPC call as HAR JSON: bodies the transport kept as bytes become HAR text."""
    out = dict(entry, plugin=plugin)
    req = out.get("request")
    if isinstance(req, dict) and isinstance(req.get("message"), bytes):
        out["request"] = dict(req, message=body_to_json(req["message"]))
    resp = out.get("response")
    if isinstance(resp, dict) and isinstance(resp.get("body"), bytes):
        out["response"] = dict(resp, body=body_to_json(resp["body"]))
    return out
