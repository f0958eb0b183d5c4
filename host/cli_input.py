"""Command-line input shared by the ``wasmdesk`` subcommands (``host.cli`` and the lab's
``host.lab.commands``): one usage error, and files or ``@FILE`` arguments read with a
one-line message when they cannot be. No argument parsing here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["UsageError", "json_or_file", "read_file", "text_or_file"]


class UsageError(Exception):
    """Bad arguments or unreadable input: exit 2 with a one-line message."""


def read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{what}: no such file: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{what}: is a directory: {path}") from None
    except OSError as e:
        raise UsageError(f"{what}: cannot read {path}: {e.strerror}") from None


def text_or_file(value: str | None, what: str) -> bytes:
    """``TEXT`` or ``@FILE`` (``@-`` reads stdin)."""
    if value is None:
        return b""
    if value.startswith("@"):
        if value == "@-":
            return sys.stdin.buffer.read()
        return read_file(value[1:], what)
    return value.encode("utf-8")


def json_or_file(value: str | None, what: str) -> bytes:
    """JSON text or ``@FILE``, checked to be JSON; the bytes are what plugins receive."""
    data = text_or_file(value, what)
    if data.strip():
        try:
            json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            # Plugins receive raw bytes; JSON is what Istio sends, so say it clearly
            # (try's --raw-config passes non-JSON text through).
            raise UsageError(f"{what} is not valid JSON: {e}") from None
    return data
