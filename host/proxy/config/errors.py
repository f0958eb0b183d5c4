"""Config errors: :class:`ConfigIssue` (file, line, field path, message) and
:class:`ConfigError` listing every issue of a config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

_Path = tuple[str | int, ...]


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config: where (file, line, field path) and what was expected."""

    file: str
    line: int
    path: str
    message: str
    column: int | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line > 0:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(ValueError):
    """The config is invalid. ``errors`` lists every issue; ``str()`` shows one per line."""

    def __init__(self, errors: Sequence[ConfigIssue]) -> None:
        self.errors: list[ConfigIssue] = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))
