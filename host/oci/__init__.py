"""Wasm plugin images in OCI registries: pull (the three variants Istio accepts) and push.

One job per module: :mod:`reference` parses image references, :mod:`auth` reads docker
config files and answers registry challenges, :mod:`registry` speaks the distribution
API over httpx, :mod:`image` builds and unpacks the image variants, :mod:`fetch` applies
Istio's pull policy and digest rules over a cache keyed by digest.
"""

from host.oci.errors import OciError
from host.oci.fetch import PulledModule, pull_module
from host.oci.image import RuntimeConfig
from host.oci.push import PushResult, push_module
from host.oci.reference import Reference, parse_reference

__all__ = [
    "OciError",
    "PulledModule",
    "PushResult",
    "Reference",
    "RuntimeConfig",
    "parse_reference",
    "pull_module",
    "push_module",
]
