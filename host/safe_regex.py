"""Linear-time regular expressions for patterns that come from users and plugins.

Python's ``re`` backtracks: a pattern such as ``^(\\w+\\.?)+!`` runs for minutes on a
few dozen characters, and on the event loop that also carries traffic that freezes
the proxy. Envoy evaluates user patterns (``/stats?filter=``, string matchers) with
RE2, whose matching time is linear in the input; so do we, through ``google-re2``.
RE2 has no backreferences or lookaround: such a pattern is refused with a clear
error (as Envoy refuses it), never run with a backtracking engine.

``compile_pattern`` caches compiled patterns (a filter is usually asked for again and
again by a dashboard) and turns RE2's errors into :class:`PatternError`, a
``ValueError`` with a readable message. RE2's own error logging to stderr is off.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol

import re2

__all__ = ["MAX_PATTERN_LEN", "PatternError", "SafePattern", "compile_pattern"]

# Longer patterns are refused before RE2 sees them (RE2 also caps its program size).
MAX_PATTERN_LEN = 4096


class PatternError(ValueError):
    """A pattern RE2 cannot compile; the message says why."""


class SafeMatch(Protocol):
    def group(self, *args: int | str) -> str | None: ...
    def start(self, group: int = ...) -> int: ...
    def end(self, group: int = ...) -> int: ...


class SafePattern(Protocol):
    """The part of a compiled RE2 pattern Wasmdesk uses (``re.Pattern``-like)."""

    @property
    def pattern(self) -> str: ...
    def search(self, text: str) -> SafeMatch | None: ...
    def fullmatch(self, text: str) -> SafeMatch | None: ...


def _options() -> object:
    opts = re2.Options()
    opts.log_errors = False
    return opts


_OPTIONS = _options()


@lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> SafePattern:
    """Compile ``pattern`` with RE2 (partial matches via ``search``, as Envoy's
    ``filter=``). Raises :class:`PatternError` for a pattern RE2 refuses."""
    if not isinstance(pattern, str):
        raise PatternError(f"a pattern must be a string, not {type(pattern).__name__}")
    if len(pattern) > MAX_PATTERN_LEN:
        raise PatternError(f"pattern longer than {MAX_PATTERN_LEN} characters")
    try:
        compiled: SafePattern = re2.compile(pattern, _OPTIONS)
    except re2.error as e:
        raise PatternError(_message(e)) from None
    except (TypeError, ValueError, OverflowError) as e:  # e.g. an embedded NUL
        raise PatternError(str(e)) from None
    return compiled


def _message(e: BaseException) -> str:
    parts = []
    for a in e.args:
        parts.append(a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a))
    return "; ".join(parts) or "invalid pattern"
