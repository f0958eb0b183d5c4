"""Registry credentials and challenges.

Credentials come from a docker config JSON (``auths`` keyed by registry host, each with
``auth`` = base64 ``user:password``, or ``username``/``password``, or ``identitytoken``),
the file Istio's ``imagePullSecret`` holds as ``.dockerconfigjson``. Without a secret the
usual file is read, as Istio's default keychain does: ``$DOCKER_CONFIG/config.json`` or
``~/.docker/config.json``. Challenges are the registry's ``WWW-Authenticate`` header:
``Basic realm=…`` or ``Bearer realm=…,service=…,scope=…`` (RFC 7235 auth-params).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from host.oci.errors import OciError

_DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io")
_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


@dataclass(frozen=True)
class Credentials:
    """A user name and password (or identity token as password with user ``<token>``)."""

    username: str
    password: str


@dataclass(frozen=True)
class Challenge:
    """One parsed ``WWW-Authenticate`` challenge."""

    scheme: str  # lower-case: basic, bearer
    params: dict[str, str]


def default_docker_config() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def load_credentials(registry: str, config_path: Path | None) -> Credentials | None:
    """Credentials for ``registry`` from a docker config JSON; None if it has none.

    A missing default file means anonymous; a missing or unreadable *named* file (an
    ``imagePullSecret``) is an error, as is a malformed one."""
    path = config_path or default_docker_config()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if config_path is None:
            return None
        raise OciError("auth", f"pull secret file not found: {path}") from None
    except OSError as e:
        raise OciError("auth", f"cannot read docker config {path}: {e.strerror}") from None
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise OciError("auth", f"{path}: not a docker config JSON: {e}") from None
    auths = doc.get("auths") if isinstance(doc, dict) else None
    if not isinstance(auths, dict):
        return None
    keys = [registry, f"https://{registry}", f"http://{registry}"]
    if registry == "index.docker.io":
        keys += list(_DOCKER_HUB_KEYS)
    entry = next((auths[k] for k in keys if isinstance(auths.get(k), dict)), None)
    if entry is None:
        return None
    if entry.get("identitytoken"):
        return Credentials("<token>", str(entry["identitytoken"]))
    if entry.get("username") is not None and entry.get("password") is not None:
        return Credentials(str(entry["username"]), str(entry["password"]))
    raw = entry.get("auth")
    if isinstance(raw, str) and raw:
        try:
            user, sep, password = base64.b64decode(raw, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise OciError("auth", f"{path}: auths[{registry}].auth is not base64") from None
        if not sep:
            raise OciError("auth", f"{path}: auths[{registry}].auth is not user:password")
        return Credentials(user, password)
    return None


def parse_challenge(header: str) -> Challenge | None:
    """The first challenge of a ``WWW-Authenticate`` value (registries send one)."""
    scheme, _, rest = header.strip().partition(" ")
    if not scheme:
        return None
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if m is None or m.end() == pos:
            break
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
        pos = m.end()
    return Challenge(scheme.lower(), params)


def basic_header(creds: Credentials) -> str:
    token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
    return f"Basic {token}"
