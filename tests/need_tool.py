"""A test's external command-line tool (curl, openssl ...): its path, or a skip on a
developer's machine without it. Under ``CI=true`` (set by ``.ci/run``, which installs
them) a missing tool fails the test instead of skipping it."""

from __future__ import annotations

import os
import shutil

import pytest


def need_tool(name: str, package: str | None = None) -> str:
    path = shutil.which(name)
    if path:
        return path
    why = f"{name} is not installed (apt-get install {package or name})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI: {why}")
    pytest.skip(why)
