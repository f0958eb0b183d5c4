"""The local proxy: a reverse proxy for HTTP/1.1, HTTP/2 (h2c and TLS) and TCP that runs
a chain of Proxy-Wasm plugins the way Istio/Envoy would, with Istio-consistent
configuration, operator modes (canary, log-only, fail-open/closed/reload) and an
Envoy-compatible admin API.

Layout (docs/architecture.md): ``exchange`` is the protocol-independent stream state
machine (headers, data and trailers in and out, no sockets), driven by the socket
adapters ``http1`` and ``h2_downstream`` (``listener`` picks one per connection) and
talking to clusters through ``upstream_api`` (``upstream`` for HTTP/1.1,
``upstream_h2`` for HTTP/2); ``chain`` turns one request into plugin callbacks and
verdicts (no sockets) and reaches the plugins through its ``ChainHost`` protocol;
``plugins`` keeps the plugin slots (``slots``) and composes the parts around them:
``modules`` (fetch, verify, cache, compile), ``policy`` (the failure decision, pure),
``ticks``, ``inspector`` (the ring of finished requests), ``callouts``; ``tcp`` runs the
``spec.tcp`` listeners (bytes, half-closes, flow control) with ``network_chain`` (the
NETWORK plugins on one connection, no sockets) and ``tcp_records`` (the ring of
finished connections); ``tls`` the listener's and upstreams' TLS; ``config`` parses
and exports the YAML; ``stats`` the counters and their renderings; ``admin`` the
loopback admin API; ``server`` wires them onto one asyncio loop.
"""

from host import _native

_native.enable(__name__, __path__)  # the data path compiled with mypyc, when built
