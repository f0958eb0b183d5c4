"""The local proxy: an HTTP/1.1 reverse proxy that runs a chain of Proxy-Wasm plugins
the way Istio/Envoy would, with Istio-consistent configuration, operator modes
(canary, log-only, fail-open/closed/reload) and an Envoy-compatible admin API.

Layout: ``http1`` is the data path (sockets, framing, pooling; no wasm);
``chain`` turns one request into plugin callbacks and verdicts (no sockets) and
reaches the plugins through its ``ChainHost`` protocol; ``plugins`` keeps the
plugin slots (``slots``) and composes the parts around them: ``modules`` (fetch,
verify, cache, compile), ``policy`` (the failure decision, pure), ``ticks``,
``inspector`` (the ring of finished requests), ``callouts``; ``tcp`` runs the
``spec.tcp`` listeners (bytes, half-closes, flow control) with ``network_chain``
(the NETWORK plugins on one connection, no sockets) and ``tcp_records`` (the ring of
finished connections); ``config`` parses
and exports the YAML; ``stats`` the counters and their renderings; ``admin`` the
loopback admin API; ``server`` wires them onto one asyncio loop.
"""
