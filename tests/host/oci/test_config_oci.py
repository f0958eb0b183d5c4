"""Config fields for images: the Proxy document's ``pullSecrets`` (imagePullSecret name ->
docker config file) and the WasmPlugin's ``imagePullSecret``."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.proxy.config import ConfigError, dump_config, parse_config

DOCS = """\
apiVersion: wasmdesk.dev/v1alpha1
kind: Proxy
spec:
  pullSecrets:
    regcred: secrets/docker.json
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: p}
spec:
  url: ghcr.io/org/p:1
  imagePullSecret: regcred
  imagePullPolicy: Always
"""


def test_pull_secrets_resolve_against_the_config_file(tmp_path: Path) -> None:
    cfg = parse_config(DOCS, str(tmp_path / "wasmdesk.yaml"))
    assert cfg.pull_secrets == (("regcred", str(tmp_path / "secrets" / "docker.json")),)
    (p,) = cfg.plugins
    assert (p.image_pull_secret, p.image_pull_policy, p.location_kind) == (
        "regcred",
        "Always",
        "oci",
    )
    again = parse_config(dump_config(cfg), str(tmp_path / "wasmdesk.yaml"))
    assert again.plugins[0].image_pull_secret == "regcred"
    assert again.pull_secrets == cfg.pull_secrets


def test_pull_secret_must_be_a_path() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(DOCS.replace("regcred: secrets/docker.json", "regcred: [1]"))
    assert "spec.pullSecrets.regcred" in str(e.value)
    assert ":5:" in str(e.value)  # the line of the value
