"""Verdicts are a tagged union (host/proxy/stream.py): frozen values handled with ``match``."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from host import _native
from host.headers import HeaderMap
from host.proxy.stream import (
    CONTINUE,
    HOLD,
    RESET,
    Continue,
    Hold,
    LocalReply,
    PassThroughFilter,
    Reply,
    Reset,
    Verdict,
    Wait,
)


def describe(v: Verdict) -> str:
    match v:
        case Continue(data, trailers):
            return f"continue {len(data)} {'with' if trailers else 'no'} trailers"
        case Hold():
            return "hold"
        case Reply(reply):
            return f"reply {reply.status}"
        case Wait(future):
            return f"wait {future.done()}"
        case Reset():
            return "reset"


def test_each_verdict_is_matched_by_its_kind() -> None:
    loop = asyncio.new_event_loop()
    try:
        fut: asyncio.Future[Verdict] = loop.create_future()
        assert [
            describe(CONTINUE),
            describe(Continue(b"abc", HeaderMap([("x", "1")]))),
            describe(HOLD),
            describe(Reply(LocalReply(403))),
            describe(Wait(fut)),
            describe(RESET),
        ] == [
            "continue 0 no trailers",
            "continue 3 with trailers",
            "hold",
            "reply 403",
            "wait False",
            "reset",
        ]
    finally:
        loop.close()


def test_verdicts_are_frozen_values() -> None:
    # Continue's attributes are Final (a compiled class, made per body event): mypy refuses
    # the write below (hence the ignore) and the compiled class refuses it at run time
    if _native.state() == "compiled":
        with pytest.raises(AttributeError):
            CONTINUE.data = b"x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Reply(LocalReply(403)).reply = LocalReply(200)  # type: ignore[misc]
    assert Continue(b"a") == Continue(b"a") and Hold() == HOLD and Reset() == RESET


def test_the_pass_through_filter_forwards_every_event_as_is() -> None:
    f = PassThroughFilter()
    h = HeaderMap([(":path", "/")])
    assert f.request_headers(h, False) == CONTINUE
    assert f.request_data(b"body", True) == Continue(b"body")
    assert f.response_data(b"", True) == Continue(b"")
    assert f.request_trailers(h) == CONTINUE and f.response_trailers(h) == CONTINUE
