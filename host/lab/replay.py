"""Deterministic replay: a recorded session through one plugin, on one VM, no network.

Each exchange runs in recorded order on the same VM (plugin state builds as it did):
the recorded upstream response is served, callouts are answered from the recording
(then from mocks), and the guest's clock and random bytes are the recorded ones, or a
fixed clock and seed. Nothing depends on the wall clock or on chance, so two replays of
one session print the same bytes. The output per request is ``try --json``'s shape.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from host.lab.env import ReplayClock
from host.lab.har import Exchange, Message
from host.lab.mocks import MockGrpcDispatcher, Mocks, answer_from_rule, call_target
from host.runner import CalloutClient, TryRequest, TryResult, _Run, _run_stream
from host.wasm import LogLevel, PluginHost, VmConfig, VmStartError
from host.wasm.context import HttpCallout
from host.wasm.module_info import describe
from host.wasm.profile import profile_json
from host.wasm.runtime import Engine

__all__ = ["ReplayDispatcher", "ReplayOptions", "replay"]

# between two requests the virtual clock moves this much (recorded values win)
STEP_MS = 1000.0


@dataclass
class ReplayOptions:
    root_id: str = ""
    configuration: bytes = b""
    vm_configuration: bytes = b""
    hop: str | None = None  # feed what plugin NAME received instead of the client request
    plugin: str | None = None  # whose recorded callouts and clock values to use
    mocks: Mocks | None = None
    seed: int = 0
    log_level: LogLevel = LogLevel.INFO
    callback_timeout_ms: float = 100.0
    env: list[tuple[str, str]] = field(default_factory=list)
    timing: bool = False  # per-callback time (varies run to run: off for golden files)


class ReplayDispatcher(CalloutClient):
    """Callouts answered from the recording (matched in order by cluster, method and
    path), then from mocks; anything else fails with a message naming the cluster."""

    def __init__(self, mocks: Mocks | None) -> None:
        super().__init__({})
        self.mocks = mocks or Mocks()
        self.recorded: list[dict[str, Any]] = []
        self.unanswered: list[str] = []

    def has_cluster(self, name: str) -> bool:
        return True  # a replay knows no cluster list; an unanswered call fails clearly

    def _perform(self, call: HttpCallout) -> None:
        method, path = call_target(call)
        for i, rec in enumerate(self.recorded):
            req = rec.get("request")
            hdr = dict(_pairs(req.get("headers") if isinstance(req, dict) else None))
            if (
                rec.get("kind", "http") == "http"
                and rec.get("cluster") == call.cluster
                and hdr.get(":method", method) == method
                and hdr.get(":path", path) == path
            ):
                self.recorded.pop(i)
                _answer_from_record(call, rec)
                return
        rule = self.mocks.find(call.cluster, method, path)
        if rule is not None:
            answer_from_rule(call, rule)
            return
        why = (
            f"cluster {call.cluster!r}: no recorded answer and no mock for {method} {path}"
            " (give --mocks FILE)"
        )
        self.unanswered.append(why)
        call.failure = "connect_failure"


def _pairs(obj: Any) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if not isinstance(obj, list):
        return out
    for item in obj:
        if isinstance(item, (list, tuple)) and len(item) == 2:
            out.append((str(item[0]), str(item[1])))
    return out


def _answer_from_record(call: HttpCallout, rec: dict[str, Any]) -> None:
    from host.lab.har import body_from_json

    elapsed = rec.get("elapsed_ms")
    call.elapsed_ms = float(elapsed) if isinstance(elapsed, (int, float)) else 0.0
    resp = rec.get("response")
    status = resp.get("status") if isinstance(resp, dict) else None
    if not isinstance(resp, dict) or not isinstance(status, int):
        call.failure = str(rec.get("failure") or "reset")
        return
    headers = _pairs(resp.get("headers"))
    call.response_status = status
    call.response_headers = [(k.encode("latin-1"), v.encode("utf-8")) for k, v in headers]
    if not any(k == ":status" for k, _ in headers) and call.response_status is not None:
        call.response_headers.insert(0, (b":status", str(call.response_status).encode()))
    call.response_body = body_from_json(resp.get("body"))


def _try_request(
    msg: Message, upstream: Message | None, opts: ReplayOptions, rid: str
) -> TryRequest:
    req = TryRequest(
        method=msg.method,
        path=msg.path,
        authority=msg.authority,
        scheme=msg.scheme,
        headers=list(msg.headers),
        body=msg.body,
        root_id=opts.root_id,
        plugin_name=opts.root_id,
        configuration=opts.configuration,
        log_level=opts.log_level,
        callback_timeout_ms=opts.callback_timeout_ms,
        request_id=rid,
    )
    if upstream is not None:
        req.status = upstream.status
        req.response_headers = [(k, v) for k, v in upstream.headers if k != "content-length"]
        req.response_body = upstream.body
    else:
        req.status = 502
        req.response_body = b"no upstream response was recorded for this request\n"
    return req


def _recorded_name(ex: Exchange, opts: ReplayOptions) -> str | None:
    if opts.plugin:
        return opts.plugin
    names = set(ex.env) | {str(c.get("plugin")) for c in ex.callouts} | set(ex.hops)
    if opts.root_id in names:
        return opts.root_id
    if len(names) == 1:
        return next(iter(names))
    return None


def replay(
    wasm: bytes,
    exchanges: list[Exchange],
    opts: ReplayOptions,
    *,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """Replay ``exchanges`` through ``wasm``; the JSON-ready outcome (``requests``: one
    ``try --json``-shaped object per exchange, ``failure``: the VM's, if it failed)."""
    clock = ReplayClock(opts.seed)
    ids = random.Random(f"request-ids:{opts.seed}")
    dispatcher = ReplayDispatcher(opts.mocks)
    grpc = MockGrpcDispatcher(opts.mocks or Mocks())
    host = PluginHost(engine, clock=clock, http=dispatcher, grpc=grpc, log_level=opts.log_level)
    out: dict[str, Any] = {
        "module": {
            "sha256": hashlib.sha256(wasm).hexdigest(),
            "root_id": opts.root_id,
            "config": opts.configuration.decode("utf-8", "replace"),
        },
        "requests": [],
        "failure": None,
    }
    requests: list[dict[str, Any]] = out["requests"]
    try:
        module = host.compile(wasm)
        info = describe(module)
        out["module"]["abi"] = info.abi
        config = VmConfig(
            name=opts.root_id or "plugin",
            vm_configuration=opts.vm_configuration,
            env=tuple(opts.env),
            callback_timeout_ms=opts.callback_timeout_ms,
            profile=opts.timing,
        )
        vm = host.create_vm(module, config)
        vm.trace_calls = True
        try:
            root = vm.start_plugin(opts.root_id, opts.configuration, opts.root_id)
        except VmStartError as e:
            out["failure"] = e.failure.to_dict()
            out["logs"] = [r.to_dict() for r in host.logs]
            return out
        host.run_pending()
        for ex in exchanges:
            clock.advance(STEP_MS)
            name = _recorded_name(ex, opts)
            clock.feed(ex.env.get(name, []) if name else [])
            dispatcher.recorded = [
                c for c in ex.callouts if name is None or c.get("plugin") in (name, None)
            ]
            dispatcher.unanswered = []
            grpc.recorded = [c for c in dispatcher.recorded if c.get("kind") == "grpc"]
            if opts.hop is not None:
                msg = ex.hops.get(opts.hop)
                if msg is None:
                    raise ValueError(
                        f"entry {ex.index}: no recorded hop named {opts.hop!r}"
                        f" (recorded: {', '.join(sorted(ex.hops)) or 'none'})"
                    )
            else:
                msg = ex.request
            rid = ex.request_id or str(uuid.UUID(int=ids.getrandbits(128), version=4))
            req = _try_request(msg, ex.response, opts, rid)
            n_logs, n_trace, n_calls = len(host.logs), len(vm.trace), len(dispatcher.completed)
            n_grpc = len(grpc.completed)
            n_prof = len(vm.profile)
            result = TryResult(abi=info.abi, sdk=info.sdk)
            if vm.failed:
                requests.append(
                    {"index": ex.index, "skipped": "the plugin VM failed on an earlier request"}
                )
                continue
            run = _Run(req, host, dispatcher, clock, result)
            _run_stream(vm, root, req, run, result)
            if vm.failed and vm.failure is not None:
                result.failure = vm.failure.to_dict()
                if out["failure"] is None:
                    out["failure"] = dict(result.failure, request_index=ex.index)
            result.logs = [r.to_dict() for r in list(host.logs)[n_logs:]]
            result.metrics = dict(host.metrics.snapshot())
            result.shared_data = dict(host.shared_data.snapshot())
            result.callouts = [_callout_json(c) for c in dispatcher.completed[n_calls:]]
            result.callouts += grpc.completed[n_grpc:]
            result.callbacks = [
                {"name": n, "context_id": cid, "result": r} for n, cid, r in vm.trace[n_trace:]
            ]
            result.profile = profile_json(vm.profile[n_prof:])
            result.notes.extend(dispatcher.unanswered)
            if ex.response is None and result.request_forwarded:
                result.notes.append(
                    "the recording has no upstream response for this request (it got a local "
                    "reply then); the replay served 502"
                )
            entry = {
                "index": ex.index,
                "request_id": rid,
                "method": msg.method,
                "path": msg.path,
            }
            entry.update(result.to_json())
            entry.pop("abi", None)
            entry.pop("sdk", None)
            if not opts.timing:
                entry.pop("profile", None)
            requests.append(entry)
    finally:
        host.close()
    return out


def _callout_json(c: HttpCallout) -> dict[str, Any]:
    return {
        "kind": "http",
        "cluster": c.cluster,
        "headers": [[k.decode("latin-1"), v.decode("utf-8", "replace")] for k, v in c.headers],
        "body": c.body.decode("utf-8", "replace"),
        "response_status": c.response_status,
        "response_body": c.response_body.decode("utf-8", "replace"),
        "failure": c.failure,
        "elapsed_ms": round(c.elapsed_ms, 2),
    }
