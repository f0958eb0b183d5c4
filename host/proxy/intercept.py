"""Intercept: hold a request at a chosen plugin hop, let the user edit it, resume.

The app arms a rule (a plugin name, a stage, optionally a path substring). Before that
plugin's callback for that stage runs, ``ChainRun`` asks ``Interceptor.check``; on a
match the stream waits (a ``Wait`` verdict) on a future, and the held request is published
(``held()``) with its headers. ``resume`` replaces the headers (and the request body, at
the ``request_body`` stage) with the edited ones and the chain goes on from that same
hop, which now runs on the edited stream. Bounded: a held request resumes unchanged
after ``timeout_s`` (60 s by default), and at most ``MAX_HELD`` are held at once (later
matches pass through). With no rule armed the chain's cost is one attribute check
(``manager.intercept is None``): the server sets it only while a rule is armed.

Stages: ``request_headers``, ``response_headers`` (headers editable) and
``request_body`` (the request body's last chunk, editable, before the plugin's
``proxy_on_request_body``). No sockets and no Qt here; engine-thread only.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from host.proxy.chain import REQUEST, RESPONSE
from host.proxy.request_views import HeldView
from host.proxy.stream import CONTINUE, LocalReply, Reply, Verdict, Wait

if TYPE_CHECKING:
    from host.proxy.chain import ChainRun

__all__ = ["MAX_HELD", "STAGES", "HeldRequest", "InterceptRule", "Interceptor"]

STAGES = ("request_headers", "request_body", "response_headers")
MAX_HELD = 16
DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class InterceptRule:
    """Which requests to hold: at ``plugin``'s hop, before its ``stage`` callback, when
    the path contains ``path_contains``; ``once``: disarm after the first catch."""

    plugin: str
    stage: str = "request_headers"
    path_contains: str = ""
    once: bool = True

    def __post_init__(self) -> None:
        if not self.plugin:
            raise ValueError("intercept: choose a plugin")
        if self.stage not in STAGES:
            raise ValueError(f"intercept: stage must be one of {', '.join(STAGES)}")


@dataclass
class HeldRequest:
    """One held request (engine thread); ``view()`` is what the app sees, ``to_dict``
    its JSON."""

    id: int
    plugin: str
    stage: str
    method: str
    path: str
    request_id: str
    headers: list[tuple[str, str]]
    body: str | None
    held_at: float
    timeout_s: float
    future: asyncio.Future[Verdict] = field(repr=False)
    resume_with: Callable[[list[tuple[bytes, bytes]] | None, bytes | None], Verdict] = field(
        repr=False
    )
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    def view(self) -> HeldView:
        """What the app sees of it: a frozen copy, safe to hand to another thread."""
        return HeldView(
            self.id,
            self.plugin,
            self.stage,
            self.method,
            self.path,
            self.request_id,
            tuple(self.headers),
            self.body,
            self.held_at,
            self.timeout_s,
        )

    def to_dict(self) -> dict[str, Any]:
        return self.view().to_dict()


def _value(run: ChainRun, name: bytes) -> str:
    v = run.headers.get(name) if run.headers is not None else None
    return v.decode("latin-1") if v is not None else ""


def _path(run: ChainRun) -> str:
    return _value(run, b":path")


def _decode(items: Sequence[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("utf-8", "replace")) for k, v in items]


def encode_headers(pairs: Sequence[Sequence[str]]) -> list[tuple[bytes, bytes]]:
    """Edited headers back to bytes; raises ValueError naming a bad name or value."""
    out: list[tuple[bytes, bytes]] = []
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"intercept: a header is a [name, value] pair, got {pair!r}")
        k, v = str(pair[0]), str(pair[1])
        if not k or any(c.isspace() or c == ":" for c in k.lstrip(":")):
            raise ValueError(f"intercept: bad header name {k!r}")
        if any(c in v for c in "\r\n\0"):
            raise ValueError(f"intercept: the value of {k} contains a control character")
        out.append((k.lower().encode("latin-1"), v.encode("utf-8")))
    return out


class Interceptor:
    """The armed rules and the held requests of one plugin manager."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.loop = loop
        self.timeout_s = timeout_s
        self.on_change = on_change  # called when a request is held or released
        self.rules: list[InterceptRule] = []
        self.held: dict[int, HeldRequest] = {}
        self._ids = itertools.count(1)
        # (run seq, stage, hop index) that already passed their intercept
        self._passed: set[tuple[int, str, int]] = set()
        self.caught = 0
        self.timed_out = 0

    @property
    def armed(self) -> bool:
        return bool(self.rules)

    def arm(self, rule: InterceptRule) -> None:
        self.rules = [r for r in self.rules if (r.plugin, r.stage) != (rule.plugin, rule.stage)]
        self.rules.append(rule)

    def disarm(self) -> None:
        self.rules = []

    def check(self, run: ChainRun, index: int, stage: str, data: bytes = b"") -> Verdict | None:
        """Before hop ``index`` runs its ``stage`` callback: a WAIT step if the request
        is to be held, else None (the chain goes on)."""
        key = (run.seq, stage, index)
        if key in self._passed:
            self._passed.discard(key)
            return None
        hop = run.hops[index]
        plugin = hop.slot.name
        rule = next(
            (
                r
                for r in self.rules
                if r.plugin == plugin
                and r.stage == stage
                and (not r.path_contains or r.path_contains in _path(run))
            ),
            None,
        )
        if rule is None or len(self.held) >= MAX_HELD:
            return None
        if rule.once:
            self.rules.remove(rule)
        return self._hold(run, index, stage, plugin, data)

    def _hold(self, run: ChainRun, index: int, stage: str, plugin: str, data: bytes) -> Verdict:
        headers = run.resp_headers if stage == "response_headers" else run.headers
        assert headers is not None
        fut: asyncio.Future[Verdict] = self.loop.create_future()
        key = (run.seq, stage, index)

        def resume_with(
            new_headers: list[tuple[bytes, bytes]] | None, body: bytes | None
        ) -> Verdict:
            if run.completed or not run.hops:
                return CONTINUE  # the client went away meanwhile
            if new_headers is not None and stage != "request_body":
                headers.set_all(new_headers)  # (at the body: routed, the head may be sent)
            self._passed.add(key)
            try:
                if stage == "request_headers":
                    return run._iterate_headers(REQUEST, index)
                if stage == "response_headers":
                    return run._iterate_headers(RESPONSE, index)
                return run._iterate_data(REQUEST, index, data if body is None else body, True)
            finally:
                self._passed.discard(key)

        held = HeldRequest(
            id=next(self._ids),
            plugin=plugin,
            stage=stage,
            method=_value(run, b":method"),
            path=_path(run),
            request_id=run.info.request_id,
            headers=_decode(headers.items()),
            body=data.decode("utf-8", "replace") if stage == "request_body" else None,
            held_at=time.time(),
            timeout_s=self.timeout_s,
            future=fut,
            resume_with=resume_with,
        )
        held.timer = self.loop.call_later(self.timeout_s, self._expired, held.id)
        self.held[held.id] = held
        self.caught += 1
        self._changed()
        return Wait(fut)

    def _expired(self, held_id: int) -> None:
        if held_id in self.held:
            self.timed_out += 1
            self.resume(held_id)

    def resume(
        self,
        held_id: int,
        headers: Sequence[Sequence[str]] | None = None,
        body: str | None = None,
    ) -> bool:
        """Let a held request go on, with edited headers (at the headers stages) or body
        (at the request_body stage, where the route is chosen and the head may have gone
        upstream: the headers are shown, not applied), or
        unchanged (None). False if it is not held (any more). Raises
        ValueError for a malformed header, leaving the request held."""
        held = self.held.get(held_id)
        if held is None:
            return False
        new_headers = encode_headers(headers) if headers is not None else None
        del self.held[held_id]
        if held.timer is not None:
            held.timer.cancel()
        new_body = None
        if body is not None and held.stage == "request_body":
            new_body = body.encode("utf-8")
        if not held.future.done():
            try:
                step = held.resume_with(new_headers, new_body)
            except Exception as e:  # never strand a request on a host bug
                step = Reply(
                    LocalReply(
                        500,
                        f"wasmdesk: intercept resume failed: {type(e).__name__}\n".encode(),
                        details="wasmdesk_internal_error",
                    ),
                )
            held.future.set_result(step)
        self._changed()
        return True

    def release_all(self) -> None:
        """Resume every held request unchanged (the app closes, or disarms)."""
        for held_id in list(self.held):
            self.resume(held_id)

    def held_dicts(self) -> list[dict[str, Any]]:
        return [h.to_dict() for h in self.held.values()]

    def held_views(self) -> tuple[HeldView, ...]:
        """The held requests, oldest first, as frozen values (what the app is sent)."""
        return tuple(h.view() for h in self.held.values())

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
