"""Canned callout answers: a mocks file (YAML) and the dispatcher that uses it.

A mocks file is a list of rules (or ``{mocks: [...]}``), the first matching wins::

    - cluster: auth                # required
      path: /check                 # optional: exact, or a prefix ending in *
      method: GET                  # optional
      grpc_method: pkg.Svc/Check   # optional: a gRPC call's service/method
      status: 200                  # HTTP status (default 200)
      headers: {x-user: alice}     # or [[name, value], ...]
      body: "ok"
      grpc_status: 0               # gRPC: status code and message
      grpc_message: ""
      delay_ms: 20                 # reported as the call's time (no real sleep)
      failure: timeout             # or reset, connect_failure: no response at all

``try --mocks`` and ``replay --mocks`` answer callouts from it before any real cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from host.runner import CalloutClient
from host.wasm.context import HttpCallout

__all__ = [
    "MockError",
    "MockRule",
    "MockingClient",
    "MockingDispatcher",
    "Mocks",
    "load_mocks",
    "parse_mocks",
]

FAILURES = ("timeout", "reset", "connect_failure")


class MockError(Exception):
    """The mocks file is not usable (the message names the rule and the field)."""


@dataclass
class MockRule:
    cluster: str
    path: str | None = None
    method: str | None = None
    grpc_method: str | None = None
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    grpc_status: int = 0
    grpc_message: str = ""
    delay_ms: float = 0.0
    failure: str | None = None

    def matches(self, cluster: str, method: str, path: str, grpc_method: str = "") -> bool:
        if self.cluster != cluster:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.grpc_method is not None and self.grpc_method != grpc_method:
            return False
        if self.path is not None:
            if self.path.endswith("*"):
                return path.startswith(self.path[:-1])
            return path.split("?", 1)[0] == self.path or path == self.path
        return True


@dataclass
class Mocks:
    rules: list[MockRule] = field(default_factory=list)

    def find(self, cluster: str, method: str, path: str, grpc_method: str = "") -> MockRule | None:
        for r in self.rules:
            if r.matches(cluster, method, path, grpc_method):
                return r
        return None

    @property
    def clusters(self) -> set[str]:
        return {r.cluster for r in self.rules}


_FIELDS = {
    "cluster",
    "path",
    "method",
    "grpc_method",
    "status",
    "headers",
    "body",
    "grpc_status",
    "grpc_message",
    "delay_ms",
    "failure",
}


def parse_mocks(doc: Any, source: str = "mocks") -> Mocks:
    if isinstance(doc, dict) and "mocks" in doc:
        doc = doc["mocks"]
    if doc is None:
        return Mocks()
    if not isinstance(doc, list):
        raise MockError(f"{source}: expected a list of mock rules (or {{mocks: [...]}})")
    rules: list[MockRule] = []
    for i, item in enumerate(doc):
        where = f"{source}: mocks[{i}]"
        if not isinstance(item, dict):
            raise MockError(f"{where}: expected a mapping")
        unknown = set(item) - _FIELDS
        if unknown:
            raise MockError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
        cluster = item.get("cluster")
        if not isinstance(cluster, str) or not cluster:
            raise MockError(f"{where}.cluster: a cluster name is required")
        status = item.get("status", 200)
        if not isinstance(status, int) or not 100 <= status <= 999:
            raise MockError(f"{where}.status: an HTTP status 100-999, got {status!r}")
        failure = item.get("failure")
        if failure is not None and failure not in FAILURES:
            raise MockError(f"{where}.failure: one of {', '.join(FAILURES)}, got {failure!r}")
        raw_headers = item.get("headers") or []
        headers: list[tuple[str, str]] = []
        if isinstance(raw_headers, dict):
            headers = [(str(k).lower(), str(v)) for k, v in raw_headers.items()]
        elif isinstance(raw_headers, list):
            for h in raw_headers:
                if not (isinstance(h, (list, tuple)) and len(h) == 2):
                    raise MockError(f"{where}.headers: a mapping or a list of [name, value]")
                headers.append((str(h[0]).lower(), str(h[1])))
        else:
            raise MockError(f"{where}.headers: a mapping or a list of [name, value]")
        body = item.get("body", "")
        delay = item.get("delay_ms", 0)
        if not isinstance(delay, (int, float)) or delay < 0:
            raise MockError(f"{where}.delay_ms: a number >= 0, got {delay!r}")
        grpc_status = item.get("grpc_status", 0)
        if not isinstance(grpc_status, int) or not 0 <= grpc_status <= 16:
            raise MockError(f"{where}.grpc_status: a gRPC status code 0-16, got {grpc_status!r}")
        for opt in ("path", "method", "grpc_method", "grpc_message"):
            if item.get(opt) is not None and not isinstance(item[opt], str):
                raise MockError(f"{where}.{opt}: a string")
        rules.append(
            MockRule(
                cluster=cluster,
                path=item.get("path"),
                method=item.get("method"),
                grpc_method=item.get("grpc_method"),
                status=status,
                headers=headers,
                body=body.encode("utf-8") if isinstance(body, str) else str(body).encode(),
                grpc_status=grpc_status,
                grpc_message=item.get("grpc_message") or "",
                delay_ms=float(delay),
                failure=failure,
            )
        )
    return Mocks(rules)


def load_mocks(path: str | Path) -> Mocks:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MockError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MockError(f"cannot read {path}: {e}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise MockError(f"{path}: not YAML: {e}") from None
    return parse_mocks(doc, str(path))


def call_target(call: HttpCallout) -> tuple[str, str]:
    hdr = dict(call.headers)
    return (
        hdr.get(b":method", b"GET").decode("latin-1"),
        hdr.get(b":path", b"/").decode("latin-1"),
    )


def answer_from_rule(call: HttpCallout, rule: MockRule) -> None:
    call.elapsed_ms = rule.delay_ms
    if rule.failure is not None:
        call.failure = rule.failure
        return
    call.response_status = rule.status
    call.response_headers = [(b":status", str(rule.status).encode())] + [
        (k.encode("latin-1"), v.encode("utf-8")) for k, v in rule.headers
    ]
    call.response_body = rule.body


class MockingClient(CalloutClient):
    """``CalloutClient`` that answers from mocks first, then the real clusters."""

    def __init__(
        self, clusters: dict[str, str], mocks: Mocks, default_timeout_ms: float = 5000.0
    ) -> None:
        super().__init__(clusters, default_timeout_ms)
        self.mocks = mocks

    def has_cluster(self, name: str) -> bool:
        return name in self.mocks.clusters or super().has_cluster(name)

    def _perform(self, call: HttpCallout) -> None:
        method, path = call_target(call)
        rule = self.mocks.find(call.cluster, method, path)
        if rule is not None:
            answer_from_rule(call, rule)
            return
        if call.cluster in self.clusters:
            super()._perform(call)
            return
        call.failure = f"no mock matches {method} {path} on cluster {call.cluster!r}"


class MockingDispatcher:
    """Under ``serve --mocks``: an ``HttpDispatcher`` that answers calls a mock matches
    (after the mock's delay, on the proxy's loop) and passes the rest to the real
    clusters. A mocked cluster needs no ``spec.clusters`` entry."""

    def __init__(self, inner: Any, mocks: Mocks, loop: Any) -> None:
        self.inner = inner
        self.mocks = mocks
        self.loop = loop
        self._timers: dict[int, Any] = {}

    def has_cluster(self, name: str) -> bool:
        return name in self.mocks.clusters or bool(self.inner.has_cluster(name))

    def dispatch(self, call: HttpCallout, done: Callable[[HttpCallout], None]) -> None:
        method, path = call_target(call)
        rule = self.mocks.find(call.cluster, method, path)
        if rule is None:
            if call.cluster in self.mocks.clusters and not self.inner.has_cluster(call.cluster):
                call.failure = "connect_failure"
                done(call)
                return
            self.inner.dispatch(call, done)
            return
        answer_from_rule(call, rule)

        def fire() -> None:
            self._timers.pop(id(call), None)
            done(call)

        self._timers[id(call)] = self.loop.call_later(rule.delay_ms / 1000.0, fire)

    def cancel(self, call: HttpCallout) -> None:
        t = self._timers.pop(id(call), None)
        if t is not None:
            t.cancel()
        else:
            self.inner.cancel(call)


def install_mocks(server: Any, config_rules: Any = ()) -> None:
    """Make ``server`` (a ProxyServer) answer callouts from mocks: the rules given on the
    command line or in the app (``server.lab_mocks``) first, then the config's
    ``spec.mocks``; none: the clusters alone. Called whenever clusters are applied."""
    rules = [*server.lab_mocks, *(config_rules or ())]
    inner = server.manager.callouts
    inner_grpc = server.manager.grpc_callouts  # the grpc.aio transport
    if rules:
        mocks = parse_mocks(rules, "mocks")
        server.host.http = MockingDispatcher(inner, mocks, server.loop)
        server.host.grpc = MockGrpcDispatcher(mocks, bounded=True, fallback=inner_grpc)
    else:
        server.host.http = inner
        server.host.grpc = inner_grpc


# gRPC status codes for a mocked failure (no response at all)
_GRPC_FAILURE_STATUS = {"timeout": 4, "reset": 14, "connect_failure": 14}


class MockGrpcDispatcher:
    """A ``GrpcDispatcher`` answering gRPC calls from mocks (a rule with ``grpc_method``
    ``Service/Method``, or just the cluster): initial metadata (the rule's headers),
    the message (its body), empty trailers, then close with ``grpc_status`` and
    ``grpc_message`` for a stream; a unary call gets only its message when the status is
    OK and only the close otherwise, as Envoy delivers them. A failure closes with
    DEADLINE_EXCEEDED (timeout) or UNAVAILABLE. Unmatched calls go to ``fallback`` (the
    real grpc.aio transport) when there is one, else they are refused. Streams get the
    same answer once, to their first message."""

    # under serve (bounded=True) at most this many calls are kept for the recorder
    MAX_KEPT = 1000

    def __init__(self, mocks: Mocks, *, bounded: bool = False, fallback: Any = None) -> None:
        self.mocks = mocks
        self.bounded = bounded
        self.fallback = fallback
        self._passed: set[int] = set()  # ids of the calls the fallback carries
        self.reason = "gRPC callouts are not available in this host yet (no gRPC transport)"
        self.completed: list[dict[str, Any]] = []
        # recorded gRPC callouts a replay answers first (matched by cluster and method)
        self.recorded: list[dict[str, Any]] = []
        # for the recorder: calls by (VM, context id), taken when the request finishes
        self._by_context: dict[tuple[int, int], list[dict[str, Any]]] = {}

    def take(self, vm: Any, context_id: int) -> list[dict[str, Any]]:
        return self._by_context.pop((id(vm), context_id), [])

    def _from_recording(self, call: Any, events: Any, full: str) -> bool:
        from host.lab.har import body_from_json

        for i, rec in enumerate(self.recorded):
            if rec.get("cluster") == call.cluster and rec.get("grpc_method") == full:
                self.recorded.pop(i)
                resp = rec.get("response") if isinstance(rec.get("response"), dict) else {}
                status = rec.get("grpc_status")
                status = status if isinstance(status, int) else 2  # UNKNOWN
                self._note(call, events, full, status, rec.get("failure"), rec.get("elapsed_ms"))
                body = body_from_json(resp.get("body")) if isinstance(resp, dict) else b""
                self._answer(call, events, [], body, status, rec.get("grpc_message"), bool(resp))
                return True
        return False

    def _note(
        self,
        call: Any,
        events: Any,
        full: str,
        status: int,
        failure: Any,
        ms: Any,
        body: bytes = b"",
    ) -> None:
        from host.lab.har import body_to_json

        entry = {
            "kind": "grpc",
            "cluster": call.cluster,
            "grpc_method": full,
            "message": call.message.decode("utf-8", "replace"),
            "request": {
                "metadata": [
                    [k.decode("latin-1"), v.decode("utf-8", "replace")] for k, v in call.metadata
                ],
                "message": body_to_json(call.message),
            },
            "response": None if failure else {"body": body_to_json(body)},
            "grpc_status": status,
            "failure": failure,
            "elapsed_ms": ms if isinstance(ms, (int, float)) else 0.0,
        }
        self.completed.append(entry)
        if self.bounded:
            # a long-running proxy: keep the newest calls only (the recorder takes
            # its requests' calls as they finish)
            if len(self.completed) > self.MAX_KEPT:
                del self.completed[: len(self.completed) - self.MAX_KEPT]
            while len(self._by_context) >= self.MAX_KEPT:
                self._by_context.pop(next(iter(self._by_context)))
        vm = getattr(events, "vm", None)
        if vm is not None:
            got = self._by_context.setdefault((id(vm), call.context_id), [])
            if len(got) < 256:
                got.append(entry)

    def start(self, call: Any, events: Any) -> Any:
        from host.wasm.types import Status

        full = f"{call.service}/{call.method}"
        if self._from_recording(call, events, full):
            return Status.OK
        rule = self.mocks.find(call.cluster, "POST", f"/{full}", full)
        if rule is None:
            if self.fallback is not None:
                self._passed.add(id(call))
                status_ = self.fallback.start(call, events)
                self.reason = getattr(self.fallback, "reason", "")
                return status_
            self.reason = f"no mock for gRPC {full} on cluster {call.cluster!r}"
            return Status.INTERNAL_FAILURE
        status = _GRPC_FAILURE_STATUS.get(rule.failure or "", rule.grpc_status)
        self._note(call, events, full, status, rule.failure, rule.delay_ms, rule.body)
        if rule.failure is not None:
            events.close(call, _GRPC_FAILURE_STATUS[rule.failure], rule.failure.encode())
            return Status.OK
        metadata = [(k.encode("latin-1"), v.encode("utf-8")) for k, v in rule.headers]
        self._answer(call, events, metadata, rule.body, rule.grpc_status, rule.grpc_message)
        return Status.OK

    @staticmethod
    def _answer(
        call: Any,
        events: Any,
        metadata: list[tuple[bytes, bytes]],
        body: bytes,
        status: int,
        message: Any,
        has_body: bool = True,
    ) -> None:
        text = str(message or "").encode("utf-8")
        if not call.stream:
            # unary (Envoy): the reply alone on success, the close alone on an error
            if status == 0 and has_body:
                events.message(call, body)
            else:
                events.close(call, status, text)
            return
        if has_body:
            events.initial_metadata(call, metadata)
            events.message(call, body)
            events.trailing_metadata(call, [])
        events.close(call, status, text)

    def send(self, call: Any, message: bytes, end_stream: bool) -> Any:
        from host.wasm.types import Status

        if id(call) in self._passed:
            return self.fallback.send(call, message, end_stream)
        return Status.OK

    def cancel(self, call: Any) -> None:
        if id(call) in self._passed:
            self._passed.discard(id(call))
            self.fallback.cancel(call)

    def close(self, call: Any) -> None:
        if id(call) in self._passed:
            self.fallback.close(call)
