"""Istio's stats-plugin name encoding, turned into Prometheus names and labels.

Istio's Wasm stats plugin (istio/proxy ``extensions/stats``) cannot give Envoy
labels: the proxy-wasm ABI has names only. It encodes each dimension into the
metric's name, ``<tag>=.=<value>;.;`` per dimension, then the metric name with the
prefix ``_istio_`` (the leading ``_`` opted out of Envoy's ``envoy_`` Prometheus
namespace, envoyproxy/envoy#11808)::

    reporter=.=destination;.;source_workload=.=productpage-v1;.;response_code=.=200;.;_istio_requests_total

Istio's bootstrap (``tools/packaging/common/envoy_bootstrap.json``, ``stats_tags``)
has one tag-extraction regex per dimension, ``(reporter=\\.=(.*?);\\.;)``: Envoy
cuts each matched field out of the name and keeps its value as a tag, so
``/stats/prometheus`` shows ``istio_requests_total{reporter="destination",...}`` and
the dashboards query that. ``split_istio_name`` does the same for any tag name (Istio
lists its standard dimensions and ``extraStatTags``; we take every field in this
encoding, so a custom dimension needs no extra configuration). The plain ``/stats``
text and JSON keep the flat name, as Envoy's do.

Also understood: Istio's ``istio_build`` gauge, whose name uses the SDK's default
``.`` separators: ``component.proxy.tag.1.20;._istio_build`` (bootstrap tags
``(component\\.(.+?)\\.)`` and ``(tag\\.(.+?);\\.)``).

Pure functions, no I/O.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["FIELD_SEPARATOR", "VALUE_SEPARATOR", "split_istio_name"]

FIELD_SEPARATOR: Final = ";.;"
VALUE_SEPARATOR: Final = "=.="

_LABEL_KEY = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_BUILD = re.compile(r"component\.(?P<component>.+?)\.tag\.(?P<tag>.+?);\.(?P<name>_istio_build)")


def split_istio_name(name: str) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    """``(metric name, labels)`` of a name in Istio's encoding, else ``None``.

    The metric name loses the one leading ``_`` Istio puts before its prefix
    (``_istio_requests_total`` -> ``istio_requests_total``). Labels keep the order
    of the fields. ``None`` when the name is not in the encoding or could not be
    exported faithfully (a field without ``=.=``, a tag that is not a valid
    Prometheus label name, a tag given twice, no metric name after the fields):
    the caller then exports the flat name, sanitised, as for any other metric.
    """
    m = _BUILD.fullmatch(name)
    if m is not None:
        return "istio_build", (("component", m["component"]), ("tag", m["tag"]))
    if VALUE_SEPARATOR not in name:
        return None
    *fields, base = name.split(FIELD_SEPARATOR)
    if not fields or not base or VALUE_SEPARATOR in base:
        return None
    labels: list[tuple[str, str]] = []
    seen: set[str] = set()
    for f in fields:
        key, sep, value = f.partition(VALUE_SEPARATOR)
        if not sep or key in seen or _LABEL_KEY.fullmatch(key) is None:
            return None
        seen.add(key)
        labels.append((key, value))
    if base.startswith("_"):
        base = base[1:]
    if not base:
        return None
    return base, tuple(labels)
