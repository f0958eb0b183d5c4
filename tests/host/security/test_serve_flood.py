"""Issue 13 item 6 with the real ``wasmdesk serve`` process: a plugin issuing 10,000
callouts in one request (to a cluster that answers slowly) leaves the data path
answering and SIGTERM stopping the process at once. Before: the data path, the
admin API and SIGTERM were stuck for more than 9 minutes."""

from __future__ import annotations

import signal
import time

import httpx

from tests.host.proxy.conftest import config_text, wasm_plugin
from tests.host.proxy.test_serve_cli import serve  # noqa: F401  (fixture)
from tests.host.security.hostile_wat import callout_headers, callout_module


def test_serve_survives_ten_thousand_slow_callouts_and_stops_on_sigterm(serve, tmp_path):  # noqa: F811
    mod = callout_module("wasmdesk-demo-upstream", callout_headers(b"/delay/2000"), repeat=10_000)
    (tmp_path / "flood.wasm").write_bytes(mod)
    cfg = tmp_path / "wasmdesk.yaml"
    cfg.write_text(
        config_text(
            wasm_plugin(
                "flood", "./flood.wasm", annotations={"wasmdesk.dev/callback-timeout": "5s"}
            )
        )
    )
    s = serve("--config", str(cfg), "--no-watch")
    s.wait_ready()
    with httpx.Client(base_url=f"http://127.0.0.1:{s.port}", trust_env=False, timeout=10) as c:
        r = c.get("/flood")
        assert r.status_code == 200, s.stderr()
        assert r.json()["headers"]["x-calls-ok"] == "1000"  # the per-VM cap
        # every request floods again (refused at the cap): the proxy keeps answering
        worst = 0.0
        for i in range(3):
            t0 = time.monotonic()
            assert c.get(f"/again/{i}").status_code == 200
            worst = max(worst, time.monotonic() - t0)
    assert worst < 1.0, worst
    a = httpx.get(f"http://127.0.0.1:{s.admin_port}/ready", trust_env=False, timeout=2)
    assert a.status_code == 200
    t0 = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait(timeout=10) == 0, s.stderr()
    assert time.monotonic() - t0 < 5.0
