"""The stages of a stream a plugin callback runs at, as a type.

``Stage`` names where a request's walk through the chain stands (the headers, data or
trailers of the request or the response): the chain records the stage a plugin paused
at and asks the stage, not its spelling, which direction and part that is. Members are
``str`` (``"request_headers"`` ...), so they compare and print as before.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Stage"]


class Stage(StrEnum):
    """One direction's headers, data or trailers."""

    REQUEST_HEADERS = "request_headers"
    REQUEST_DATA = "request_data"
    REQUEST_TRAILERS = "request_trailers"
    RESPONSE_HEADERS = "response_headers"
    RESPONSE_DATA = "response_data"
    RESPONSE_TRAILERS = "response_trailers"

    @property
    def request(self) -> bool:
        """The request's stage (else the response's)."""
        return self in _REQUEST

    @property
    def headers(self) -> bool:
        return self in _HEADERS

    @property
    def trailers(self) -> bool:
        return self in _TRAILERS


_REQUEST = frozenset({Stage.REQUEST_HEADERS, Stage.REQUEST_DATA, Stage.REQUEST_TRAILERS})
_HEADERS = frozenset({Stage.REQUEST_HEADERS, Stage.RESPONSE_HEADERS})
_TRAILERS = frozenset({Stage.REQUEST_TRAILERS, Stage.RESPONSE_TRAILERS})
