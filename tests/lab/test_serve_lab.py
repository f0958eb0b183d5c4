"""``wasmdesk serve --record FILE --mocks FILE`` as a subprocess: a mocked cluster
answers the plugin's callout (no spec.clusters entry, no network), and the session
file holds the request with the mocked callout."""

from __future__ import annotations

import json

import httpx

from tests.host.proxy.conftest import config_text, plugin, wasm_plugin
from tests.host.proxy.test_serve_cli import EPHEMERAL, serve  # noqa: F401


def test_serve_records_and_mocks(tmp_path, serve):  # noqa: F811
    cfg = tmp_path / "wasmdesk.yaml"
    cfg.write_text(
        config_text(
            wasm_plugin("callout", plugin("callout"), root_id="callout", config={"cluster": "auth"})
        )
    )
    mocks = tmp_path / "mocks.yaml"
    mocks.write_text("- {cluster: auth, path: /check, body: from-the-mock, delay_ms: 5}\n")
    har = tmp_path / "s.har"
    s = serve(
        "--config", str(cfg), *EPHEMERAL, "--no-watch", "--mocks", str(mocks), "--record", str(har)
    )
    s.wait_ready()
    with httpx.Client(trust_env=False, timeout=10) as c:
        r = c.get(f"http://127.0.0.1:{s.port}/hello")
        assert r.status_code == 200, r.text
        echoed = {k.lower(): v for k, v in r.json()["headers"].items()}
        assert echoed["x-auth-result"] == "from-the-mock"
        c.post(
            f"http://127.0.0.1:{s.admin_port}/quitquitquit",
            headers={"content-type": "application/json"},
            content="{}",
        )
    assert s.wait() == 0, s.stderr()
    (entry,) = json.loads(har.read_text())["log"]["entries"]
    (call,) = entry["_wasmdesk"]["callouts"]
    assert call["cluster"] == "auth"
    assert call["response"]["body"]["text"] == "from-the-mock"
    assert call["elapsed_ms"] == 5
