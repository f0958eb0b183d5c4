"""The lab tests reuse the proxy tests' harness (a real ProxyServer on loopback)."""

from tests.host.proxy.conftest import start_proxy  # noqa: F401
