"""``spec.mocks`` in the Proxy document: checked like a mocks file (errors name the
rule and field), and served in place of the cluster, also after a live reload."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from host.proxy.config import ConfigError, parse_config
from tests.host.proxy.conftest import ROOT, config_text, plugin, wasm_plugin


def _config(mocks: object) -> str:
    docs = list(
        yaml.safe_load_all(
            config_text(
                wasm_plugin(
                    "callout", plugin("callout"), root_id="callout", config={"cluster": "auth"}
                )
            )
        )
    )
    docs[0]["spec"]["mocks"] = mocks
    return yaml.safe_dump_all(docs, sort_keys=False)


def test_bad_mocks_are_a_config_error_naming_the_field() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(_config([{"cluster": "auth", "failure": "boom"}]), "<t>", str(ROOT))
    assert "spec.mocks: mocks[0].failure: one of timeout, reset, connect_failure" in str(e.value)


def test_spec_mocks_answer_callouts_and_follow_a_reload(start_proxy) -> None:
    cfg = parse_config(
        _config([{"cluster": "auth", "path": "/check", "body": "one"}]), "<t>", str(ROOT)
    )
    assert cfg.mocks == ({"cluster": "auth", "path": "/check", "body": "one"},)
    h = start_proxy(cfg)
    with h.client() as c:
        headers = c.get("/x").json()["headers"]
        assert headers["x-auth-result"] == "one"
        h.apply(dataclasses.replace(cfg, mocks=({"cluster": "auth", "body": "two"},)))
        assert c.get("/x").json()["headers"]["x-auth-result"] == "two"
        h.apply(dataclasses.replace(cfg, mocks=()))
        assert c.get("/x").status_code == 503  # no mock, no cluster "auth"
