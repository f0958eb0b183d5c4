"""The local proxy: an HTTP/1.1 reverse proxy that runs a chain of Proxy-Wasm plugins
the way Istio/Envoy would, with Istio-consistent configuration, operator modes
(canary, log-only, fail-open/closed/reload) and an Envoy-compatible admin API.

Layout: ``http1`` is the data path (sockets, framing, pooling; no wasm);
``chain`` turns one request into plugin callbacks and verdicts (no sockets);
``plugins`` owns plugin VMs, failure policies and hot reload; ``config`` parses
and exports the YAML; ``stats`` the counters and their renderings; ``admin`` the
loopback admin API; ``server`` wires them onto one asyncio loop.
"""
