"""Images from the real registry in ``serve`` (the proxy's plugin manager), ``try``,
``inspect``, ``push``, ``pull`` and ``export --for-cluster``; the exported file is checked
against Istio's WasmPlugin schema (tests/host/oci/data, see its README)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from host.cli import main
from host.oci import RuntimeConfig, push_module
from host.proxy.config import parse_config
from tests.host.oci.conftest import PLUGINS, ROOT, Registry
from tests.host.proxy.conftest import ProxyHarness

AUTH_TOKEN = (PLUGINS / "auth_token.wasm").read_bytes()
RC = RuntimeConfig("envoy_proxy", ("v0.2.0",), ("auth_token",))
SCHEMA = json.loads(
    (Path(__file__).parent / "data" / "wasmplugin_v1alpha1.schema.json").read_text()
)


def _config(
    url: str,
    extra_spec: dict[str, Any] | None = None,
    proxy: dict[str, Any] | None = None,
    plugin_name: str = "auth_token",
) -> str:
    spec: dict[str, Any] = {"url": url, "pluginConfig": {"token": "t0k"}, **(extra_spec or {})}
    if plugin_name:
        spec["pluginName"] = plugin_name
    docs = [
        {
            "apiVersion": "wasmdesk.dev/v1alpha1",
            "kind": "Proxy",
            "spec": {"listen": "127.0.0.1:0", "admin": "127.0.0.1:0", **(proxy or {})},
        },
        {
            "apiVersion": "extensions.istio.io/v1alpha1",
            "kind": "WasmPlugin",
            "metadata": {"name": "auth"},
            "spec": spec,
        },
    ]
    return yaml.safe_dump_all(docs, sort_keys=False)


def _serve(text: str, tmp_path: Path) -> ProxyHarness:
    return ProxyHarness(parse_config(text, str(tmp_path / "wasmdesk.yaml")))


def test_serve_runs_a_plugin_from_the_registry(registry: Registry, tmp_path: Path) -> None:
    pushed = push_module(AUTH_TOKEN, registry.ref("serve/auth:1.0"), runtime_config=RC)
    h = _serve(
        _config(f"oci://{registry.ref('serve/auth:1.0')}", {"sha256": pushed.sha256}), tmp_path
    )
    try:
        with h.client() as c:
            assert c.get(h.url + "/private").status_code == 403
            assert (
                c.get(h.url + "/private", headers={"authorization": "Bearer t0k"}).status_code
                == 200
            )
        logs = [r.message for r in h.server.host.logs]
        assert any("pulled " + registry.ref("serve/auth:1.0") in m for m in logs), logs
    finally:
        h.stop()


def test_serve_with_pull_secret_from_the_proxy_document(
    auth_registry: Registry, tmp_path: Path
) -> None:
    ref = auth_registry.ref("serve/secured:1.0")
    push_module(AUTH_TOKEN, ref, runtime_config=RC, docker_config=auth_registry.docker_config)
    text = _config(
        ref,  # bare reference: Istio reads it as OCI
        {"imagePullSecret": "regcred"},
        {"pullSecrets": {"regcred": str(auth_registry.docker_config)}},
    )
    h = _serve(text, tmp_path)
    try:
        with h.client() as c:
            assert c.get(h.url + "/private").status_code == 403
    finally:
        h.stop()


def test_serve_refuses_a_digest_mismatch_with_a_clear_error(
    registry: Registry, tmp_path: Path
) -> None:
    from host.proxy.server import StartupError

    push_module(AUTH_TOKEN, registry.ref("serve/mismatch:1.0"), runtime_config=RC)
    wrong = hashlib.sha256(AUTH_TOKEN).hexdigest()  # the module's hash, not the image digest
    with pytest.raises(StartupError) as e:
        _serve(_config(registry.ref("serve/mismatch:1.0"), {"sha256": wrong}), tmp_path)
    assert "cannot pull" in str(e.value) and "expected sha256:" + wrong in str(e.value)


def test_cli_push_pull_try_inspect(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = registry.ref("cli/auth:2.0")
    assert main(["push", str(PLUGINS / "auth_token.wasm"), ref, "--variant", "compat"]) == 0
    out = capsys.readouterr().out
    digest = next(line.split()[1] for line in out.splitlines() if line.startswith("digest:"))
    assert f"url: oci://{ref}" in out and f"sha256: {digest.removeprefix('sha256:')}" in out
    assert "pluginName: auth_token" in out

    dest = tmp_path / "pulled.wasm"
    assert main(["pull", f"oci://{ref}", "-o", str(dest)]) == 0
    assert dest.read_bytes() == AUTH_TOKEN
    assert "root ids auth_token" in capsys.readouterr().out

    assert main(["inspect", f"oci://{ref}", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["image"]["digest"] == digest and info["image"]["variant"] == "compat"
    assert info["abi"] == "0.2.0"

    # root id from the image's runtime config; the plugin denies without a token
    assert main(["try", ref, "--config", '{"token": "x"}', "--path", "/private", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["local_response"]["status"] == 403


def test_cli_pull_errors_exit_1(registry: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pull", registry.ref("cli/none:0")]) == 1
    assert "manifest unknown" in capsys.readouterr().err
    assert main(["inspect", "oci://reg.example/Bad/Ref"]) == 2


def test_export_for_cluster(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = registry.ref("export/auth:1.0")
    pushed = push_module(AUTH_TOKEN, ref, runtime_config=RC)
    cfg = tmp_path / "ws.yaml"
    text = _config(f"oci://{ref}", {"phase": "AUTHN"}, plugin_name="")
    cfg.write_text(text)
    out = tmp_path / "cluster.yaml"
    rc = main(
        [
            "export",
            "--for-cluster",
            "--config",
            str(cfg),
            "-o",
            str(out),
            "--namespace",
            "shop",
            "--selector",
            "app=web",
        ]
    )
    assert rc == 0
    assert f"wrote 1 WasmPlugin document(s) to {out}" in capsys.readouterr().out
    docs = list(yaml.safe_load_all(out.read_text()))
    assert [d["kind"] for d in docs] == ["WasmPlugin"]  # no Proxy document
    (doc,) = docs
    assert doc["metadata"] == {"name": "auth", "namespace": "shop"}
    assert doc["spec"]["url"] == f"oci://{registry.ref('export/auth')}@{pushed.digest}"
    assert doc["spec"]["sha256"] == pushed.sha256
    assert doc["spec"]["pluginName"] == "auth_token"  # from the image's runtime config
    assert doc["spec"]["selector"] == {"matchLabels": {"app": "web"}}
    jsonschema.validate(doc, SCHEMA)
    # and the exported file loads back in wasmdesk
    assert parse_config(out.read_text(), str(out)).plugins[0].sha256 == pushed.sha256


def test_export_for_cluster_refuses_a_local_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "ws.yaml"
    cfg.write_text(
        (ROOT / "resources" / "default" / "wasmdesk.yaml")
        .read_text()
        .replace("../plugins/", str(PLUGINS) + "/")
    )
    out = tmp_path / "cluster.yaml"
    assert main(["export", "--for-cluster", "--config", str(cfg), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "auth-token" in err and "path-counter" in err and "wasmdesk push" in err
    assert not out.exists()


def test_schema_rejects_what_a_cluster_rejects() -> None:
    """The schema file is strict where Istio's CRD is (so the export test means something)."""
    good = {
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"url": "oci://r.io/p:1"},
    }
    jsonschema.validate(good, SCHEMA)
    for bad_spec in (
        {"url": ""},
        {"url": "oci://r.io/p", "sha256": "ABC"},
        {"url": "oci://r.io/p", "unknownField": 1},
        {"url": "oci://r.io/p", "phase": "LATE"},
        {
            "url": "oci://r.io/p",
            "selector": {"matchLabels": {}},
            "targetRefs": [{"kind": "Gateway", "name": "g"}],
        },
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**good, "spec": bad_spec}, SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good, "kind": "Proxy"}, SCHEMA)


def test_cli_pull_shows_progress_in_bytes(
    registry: Registry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref = registry.ref("cli/progress:1")
    push_module(AUTH_TOKEN, ref, runtime_config=RC)
    monkeypatch.setenv("WASMDESK_PROGRESS", "1")  # as on a terminal
    assert main(["pull", ref, "-o", str(tmp_path / "p.wasm")]) == 0
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("pulling ")]
    assert lines and lines[-1].endswith("(100%)")
    done = int(lines[-1].rsplit(": ", 1)[1].split("/")[0])  # KiB of the layers
    assert len(AUTH_TOKEN) // 1024 <= done <= len(AUTH_TOKEN) // 1024 + 1


def test_export_warns_about_fail_reload(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = registry.ref("export/reload:1")
    push_module(AUTH_TOKEN, ref, runtime_config=RC)
    cfg = tmp_path / "ws.yaml"
    cfg.write_text(_config(ref, {"failStrategy": "FAIL_RELOAD"}))
    out = tmp_path / "c.yaml"
    assert main(["export", "--for-cluster", "--config", str(cfg), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "FAIL_RELOAD needs a recent Istio" in err
    assert "no selector or targetRefs" in err


@pytest.mark.parametrize(("fail", "status"), [("FAIL_OPEN", 200), ("FAIL_CLOSE", 503)])
def test_serve_unreachable_registry_follows_the_fail_strategy(
    fail: str, status: int, tmp_path: Path
) -> None:
    """As Istio's agent: a module that cannot be fetched is bypassed (FAIL_OPEN) or makes
    requests fail (FAIL_CLOSE); the plugin's failure names the registry."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    text = _config(f"oci://127.0.0.1:{port}/gone/plugin:1", {"failStrategy": fail})
    h = ProxyHarness(parse_config(text, str(tmp_path / "w.yaml")), strict=False)
    try:
        with h.client() as c:
            assert c.get(h.url + "/private").status_code == status
        failure = h.admin("GET", "/plugins").json()
        assert f"127.0.0.1:{port} unreachable" in json.dumps(failure)
    finally:
        h.stop()


def test_inspect_warns_about_an_abi_mismatch(
    registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = registry.ref("cli/mismatch:1")
    lying = RuntimeConfig("envoy_proxy", ("v0.1.0",), ("auth_token",))
    push_module(AUTH_TOKEN, ref, runtime_config=lying)
    assert main(["inspect", ref, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["abi"] == "0.2.0"
    assert info["image"]["abi_versions"] == ["v0.1.0"]
    assert any("ABI mismatch" in w and "proxy_abi_version_0_2_0" in w for w in info["warnings"])
    assert main(["inspect", ref]) == 0
    out = capsys.readouterr().out
    assert "runtime-config: ABI v0.1.0, root ids auth_token" in out
    assert "warning: ABI mismatch" in out
