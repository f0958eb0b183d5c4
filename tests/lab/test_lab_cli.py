"""The lab's commands end to end: A/B of two builds, golden files, browser HARs with
mocks, ``try --mocks``, a trap kept under ``serve`` and reproduced, an exported test
run by pytest, and ``POST /recording``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from host.cli import main
from host.lab.har import load_session
from host.lab.mocks import MockError, parse_mocks
from host.lab.replay import ReplayOptions, replay
from tests.host.proxy.conftest import make_config, plugin, wasm_plugin
from tests.lab.lab_wat import lab_probe

ROOT = Path(__file__).resolve().parents[2]


def _browser_har(path: Path, n: int = 2) -> Path:
    """A HAR as a browser's devtools save it: no _wasmdesk fields, HTTP/2 pseudo-headers."""
    entries = []
    for i in range(n):
        entries.append(
            {
                "startedDateTime": "2026-12-01T10:00:00.000Z",
                "time": 12.5,
                "request": {
                    "method": "GET",
                    "url": f"https://shop.example/api/items/{i}?page=1",
                    "httpVersion": "HTTP/2",
                    "headers": [
                        {"name": ":authority", "value": "shop.example"},
                        {"name": ":method", "value": "GET"},
                        {"name": "authorization", "value": f"Bearer b{i}"},
                        {"name": "accept", "value": "application/json"},
                    ],
                    "cookies": [],
                    "queryString": [{"name": "page", "value": "1"}],
                    "headersSize": -1,
                    "bodySize": 0,
                },
                "response": {
                    "status": 200,
                    "statusText": "",
                    "httpVersion": "HTTP/2",
                    "headers": [{"name": "content-type", "value": "application/json"}],
                    "cookies": [],
                    "content": {"size": 9, "mimeType": "application/json", "text": '{"id":1}\n'},
                    "redirectURL": "",
                    "headersSize": -1,
                    "bodySize": 9,
                },
                "cache": {},
                "timings": {"send": 0, "wait": 12, "receive": 0},
            }
        )
    path.write_text(json.dumps({"log": {"version": "1.2", "entries": entries}}))
    return path


def _builds(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a.wasm", tmp_path / "b.wasm"
    a.write_bytes(lab_probe("aaaaa"))
    b.write_bytes(lab_probe("bbbbb"))
    return a, b


def test_ab_of_two_builds_that_differ_in_one_header(tmp_path, capsys):
    har = _browser_har(tmp_path / "s.har", 3)
    a, b = _builds(tmp_path)
    rc = main(["replay", str(har), str(a), "--against", str(b), "--root-id", "lab_probe"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "- x-build: aaaaa" in out and "+ x-build: bbbbb" in out
    assert "3 requests: 0 identical, 3 different (request_headers 3)" in out
    # the same build against itself: identical, exit 0
    rc = main(["replay", str(har), str(a), "--against", str(a), "--root-id", "lab_probe"])
    assert rc == 0
    assert "3 requests: 3 identical, 0 different" in capsys.readouterr().out
    # JSON: per request a "differs" flag and the diff by kind
    rc = main(["replay", str(har), str(a), "--against", str(b), "--root-id", "lab_probe", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert [r["differs"] for r in doc["diff"]["requests"]] == [True, True, True]
    assert doc["diff"]["summary"]["by_kind"] == {"request_headers": 3}


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    a, _ = _builds(tmp_path)
    assert main(["replay", str(tmp_path / "nope.har"), str(a)]) == 2
    assert "session: no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.har"
    bad.write_text('{"entries": []}')
    assert main(["replay", str(bad), str(a)]) == 2
    assert "not a HAR file" in capsys.readouterr().err
    har = _browser_har(tmp_path / "s.har", 1)
    mocks = tmp_path / "m.yaml"
    mocks.write_text("- cluster: auth\n  failure: explode\n")
    assert main(["replay", str(har), str(a), "--mocks", str(mocks)]) == 2
    assert "failure: one of timeout, reset, connect_failure" in capsys.readouterr().err


def test_golden_file_written_then_checked_then_drift_exits_1(tmp_path, capsys):
    har = _browser_har(tmp_path / "s.har", 2)
    a, b = _builds(tmp_path)
    golden = tmp_path / "golden.json"
    args = ["replay", str(har), str(a), "--root-id", "lab_probe"]
    assert main([*args, "--write-expect", str(golden)]) == 0
    first = golden.read_bytes()
    assert main([*args, "--write-expect", str(golden)]) == 0
    assert golden.read_bytes() == first  # deterministic: the same bytes again
    capsys.readouterr()
    assert main([*args, "--expect", str(golden)]) == 0
    assert "2 requests match" in capsys.readouterr().out
    rc = main(["replay", str(har), str(b), "--root-id", "lab_probe", "--expect", str(golden)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "- x-build: aaaaa" in err and "+ x-build: bbbbb" in err


def test_browser_har_replayed_with_mocks(tmp_path, capsys):
    har = _browser_har(tmp_path / "s.har", 2)
    exchanges, ext = load_session(har)
    assert ext == {} and not exchanges[0].recorded
    assert exchanges[0].request.path == "/api/items/0?page=1"
    assert exchanges[0].request.authority == "shop.example"
    mocks = tmp_path / "mocks.yaml"
    mocks.write_text(
        "mocks:\n"
        "- cluster: auth\n  path: /check\n  method: GET\n  body: mocked-user\n  delay_ms: 7\n"
    )
    rc = main(["replay", str(har), plugin("callout"), "--mocks", str(mocks), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0
    for r in doc["requests"]:
        assert ["x-auth-result", "mocked-user"] in r["request"]["headers"]
        assert r["callouts"][0]["elapsed_ms"] == 7
        assert r["response"]["body"] == '{"id":1}\n'  # the HAR's response served
    # without a mock: the callout fails and the note names the cluster
    rc = main(["replay", str(har), plugin("callout"), "--json"])
    doc = json.loads(capsys.readouterr().out)
    r = doc["requests"][0]
    assert r["local_response"]["status"] == 503
    assert "cluster 'auth': no recorded answer and no mock for GET /check" in r["notes"][0]


def test_mock_failures_and_grpc_fields(tmp_path):
    m = parse_mocks(
        [
            {"cluster": "auth", "path": "/check*", "failure": "timeout"},
            {"cluster": "authz", "grpc_method": "pkg.Authz/Check", "grpc_status": 7},
        ]
    )
    assert m.find("auth", "GET", "/check/x").failure == "timeout"
    assert m.find("authz", "POST", "/", "pkg.Authz/Check").grpc_status == 7
    assert m.find("authz", "POST", "/", "pkg.Other/Call") is None
    with pytest.raises(MockError, match=r"mocks\[0\]\.cluster"):
        parse_mocks([{"path": "/x"}])
    har = _browser_har(tmp_path / "s.har", 1)
    exchanges, _ = load_session(har)
    out = replay(
        Path(plugin("callout")).read_bytes(),
        exchanges,
        ReplayOptions(root_id="callout", mocks=m),
    )
    r = out["requests"][0]
    assert r["callouts"][0]["failure"] == "timeout"
    assert r["local_response"]["body"] == "callout failed\n"


def test_try_with_mocks(tmp_path, capsys):
    mocks = tmp_path / "m.yaml"
    mocks.write_text("- {cluster: auth, path: /check, status: 403}\n")
    rc = main(["try", plugin("callout"), "--mocks", str(mocks), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert doc["local_response"]["status"] == 403
    assert doc["local_response"]["body"] == "denied by callout: 403\n"


def test_a_trap_under_serve_is_kept_and_reproduced_with_its_backtrace(
    tmp_path, start_proxy, monkeypatch, capsys
):
    monkeypatch.setenv("WASMDESK_DATA_DIR", str(tmp_path / "data"))
    wasm = tmp_path / "lab_probe.wasm"
    wasm.write_bytes(lab_probe())
    h = start_proxy(
        make_config(wasm_plugin("probe", str(wasm), root_id="lab_probe", fail="FAIL_OPEN"))
    )
    with h.client() as c:
        assert c.get("/one").status_code == 200
        assert c.get("/two").status_code == 200
        assert c.get("/boom", headers={"x-trap": "1"}).status_code == 200  # FAIL_OPEN
    failure = h.wait_for(
        lambda: h.admin("GET", "/plugins").json()["plugins"][0]["failure"], what="failure"
    )
    session = h.wait_for(
        lambda: h.admin("GET", "/plugins").json()["plugins"][0]["failure"].get("session"),
        what="session",
    )
    assert Path(session).parent == tmp_path / "data" / "crashes"
    exchanges, ext = load_session(session)
    assert [e.request.path for e in exchanges] == ["/one", "/two", "/boom"]
    assert ext["crash"]["plugin"] == "probe"
    rc = main(["replay", session, str(wasm), "--json"])  # root id from the session
    doc = json.loads(capsys.readouterr().out)
    assert rc == 1
    got = doc["failure"]
    assert got["kind"] == failure["kind"] == "unreachable"
    assert got["callback"] == failure["callback"] == "proxy_on_request_headers"
    assert got["backtrace"] == failure["backtrace"]
    assert any(line.startswith("boom") for line in got["backtrace"])
    assert got["request_index"] == 2
    # the requests before it ran as they did: the counter reached 2
    assert doc["requests"][1]["logs"][0]["message"].endswith("-00000002")


@pytest.mark.slow  # two pytest runs in subprocesses (~8 s on the 2-core machine)
def test_exported_test_passes_then_fails_after_config_change(tmp_path, capsys):
    repo = tmp_path / "plugin-repo"
    repo.mkdir()
    har = _browser_har(repo / "session.har", 2)
    wasm = repo / "add_header.wasm"
    wasm.write_bytes(Path(plugin("add_header")).read_bytes())
    config = '{"request_header": {"name": "x-a", "value": "1"}}'
    out = repo / "test_plugin.py"
    rc = main(["export-test", str(har), str(wasm), "--config", config, "-o", str(out)])
    assert rc == 0, capsys.readouterr()
    text = out.read_text()
    assert "def test_000_get_api_items_0_page_1(replayed):" in text
    assert "['x-a', '1']" in text
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(out.name)],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = run()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout
    out.write_text(text.replace('"value": "1"', '"value": "2"'))
    done = run()
    assert done.returncode == 1
    assert "2 failed, 1 passed" in done.stdout


def test_admin_recording_writes_into_the_data_directory(tmp_path, start_proxy, monkeypatch):
    monkeypatch.setenv("WASMDESK_DATA_DIR", str(tmp_path / "data"))
    h = start_proxy(
        make_config(wasm_plugin("add-header", plugin("add_header"), root_id="add_header"))
    )
    js = {"content-type": "application/json"}
    r = h.admin(
        "POST", "/recording", content='{"state": "on", "path": "/tmp/evil.har"}', headers=js
    )
    assert r.status_code == 200, r.text
    path = Path(r.json()["path"])
    assert path.parent == tmp_path / "data" / "recordings"
    assert not Path("/tmp/evil.har").exists()
    with h.client() as c:
        c.get("/x")
    h.wait_for(lambda: h.admin("GET", "/recording").json()["requests"] == 1, what="recorded")
    r = h.admin("POST", "/recording", content='{"state": "off"}', headers=js)
    assert r.json() == {"recording": False, "path": str(path), "requests": 1}
    assert len(json.loads(path.read_text())["log"]["entries"]) == 1
    # a form post is refused (JSON only), as every admin POST
    r = h.admin("POST", "/recording", content="state=on", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = h.admin("POST", "/recording", content='{"state": "maybe"}', headers=js)
    assert r.status_code == 400
