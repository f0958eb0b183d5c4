"""One validator per rule, shared by the config parser, the plugin manager and the desktop
app (which calls these instead of restating them): module URLs, sha256 digests, env var
names, header names and the canary key.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

__all__ = [
    "CANARY_KEY_RULE",
    "canary_key",
    "http_url_error",
    "is_env_name",
    "is_header_name",
    "is_sha256",
    "module_url_error",
]

# What a canary key may be, as error messages word it.
CANARY_KEY_RULE = "random, client-ip or header:NAME"
_MAX_ENV_NAME = 256

_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_C_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# An RFC 9110 token, with an optional leading ":" for pseudo-headers.
_HEADER_NAME = re.compile(r":?[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_SHA256 = re.compile(r"[a-f0-9]{64}")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def _looks_like_path(url: str) -> bool:
    return (
        url.startswith(("/", "./", "../", "~", "\\", ".\\", "..\\"))
        or re.match(r"[A-Za-z]:[\\/]", url) is not None
        or url.lower().endswith(".wasm")
    )


def _classify_url(url: str, base_dir: str) -> tuple[str, str] | str:
    """(kind, location) for a module URL, or an error message.

    As Istio: ``file://`` (the rest is the path: ``strings.TrimPrefix``), ``http(s)://``,
    ``oci://``, and no scheme ⇒ an OCI reference (``registry:5000/repo:tag`` included).
    Wasmdesk extension: a scheme-less value that is clearly a path (``/…``, ``./…``, ``~/…``,
    ``…/x.wasm``) is a local file. Relative paths resolve against the config's directory."""
    m = _SCHEME.match(url)
    if m is None:
        if _looks_like_path(url):
            return "file", _resolve_path(url, base_dir)
        if not url.strip() or any(c.isspace() for c in url):
            return "expected a module URL (file://, http(s)://, oci://) or a path"
        return "oci", "oci://" + url
    scheme = m.group(1).lower()
    rest = url[m.end() :]
    if scheme == "file":
        if not rest:
            return "a file:// URL needs a path"
        return "file", _resolve_path(rest, base_dir)
    if scheme in ("http", "https"):
        err = http_url_error(url)
        return err if err else (scheme, url)
    if scheme == "oci":
        if not rest or rest.startswith("/"):
            return "an oci:// URL needs an image reference (oci://registry/repo:tag)"
        return "oci", url
    return (
        f"unsupported scheme {scheme + '://'!r}; "
        "expected file://, http://, https://, oci:// or a path"
    )


def _resolve_path(p: str, base_dir: str) -> str:
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(p)))


def http_url_error(url: str) -> str | None:
    """None when ``url`` (an http(s):// or grpc(s):// URL) has a host and a usable port,
    else what is wrong with it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        return f"invalid URL: {e}"
    if not parts.hostname:
        return f"the URL has no host: {url!r}"
    if port == 0:
        return "port 0 is not a valid destination port"
    return None


def is_sha256(text: str) -> bool:
    """A module digest as ``spec.sha256`` takes it: 64 lower-case hex digits."""
    return _SHA256.fullmatch(text) is not None


def is_env_name(name: str) -> bool:
    """A ``vmConfig.env`` name: a C identifier of at most 256 characters (istio/api)."""
    return len(name) <= _MAX_ENV_NAME and _C_IDENTIFIER.fullmatch(name) is not None


def is_header_name(name: str) -> bool:
    """An RFC 9110 field name (token), or a pseudo-header such as ``:authority``."""
    return _HEADER_NAME.fullmatch(name) is not None


def canary_key(text: str) -> str | None:
    """The canary key ``text`` names, normalised (the header name lower-cased), or None
    when it is not one: ``random``, ``client-ip`` or ``header:NAME``."""
    if text in ("random", "client-ip"):
        return text
    if text.startswith("header:") and is_header_name(text[7:]):
        return "header:" + text[7:].lower()
    return None


def module_url_error(url: str, base_dir: str = "") -> str | None:
    """None when ``url`` is a module location ``spec.url`` takes (file://, http(s)://,
    oci://, a bare image reference or a path), else what is wrong with it."""
    loc = _classify_url(url, base_dir or os.getcwd())
    return loc if isinstance(loc, str) else None
