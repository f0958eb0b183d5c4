"""The operator knobs as types: each StrEnum is defined once and used by the config, the
plugin manager, the admin API and the desktop app. Members are ``str``: they compare equal
to (and format as) the strings written in YAML and JSON, so snapshots stay as they were."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Direction", "FailStrategy", "Mode", "Phase"]


class Mode(StrEnum):
    """``wasmdesk.dev/mode``: what the proxy does with a plugin's effects."""

    ENFORCE = "enforce"
    LOG_ONLY = "log-only"  # runs; its effects are recorded, not applied
    DISABLED = "disabled"  # keeps its place in the chain; skipped


class FailStrategy(StrEnum):
    """Istio's ``spec.failStrategy``: what a failed plugin does to traffic."""

    FAIL_CLOSE = "FAIL_CLOSE"
    FAIL_OPEN = "FAIL_OPEN"
    FAIL_RELOAD = "FAIL_RELOAD"


class Phase(StrEnum):
    """Istio's ``spec.phase``, in chain order (operator reference §1.2)."""

    AUTHN = "AUTHN"
    AUTHZ = "AUTHZ"
    STATS = "STATS"
    UNSPECIFIED = "UNSPECIFIED_PHASE"


class Direction(StrEnum):
    """The Proxy document's ``spec.direction``: the listener's side (Istio's match modes)."""

    SERVER = "SERVER"
    CLIENT = "CLIENT"
