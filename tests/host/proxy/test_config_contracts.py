"""host.proxy.config's contracts as types: the StrEnums of the operator knobs and the one
validator per rule that the config, the plugin manager (admin API) and the app share."""

from __future__ import annotations

import dataclasses
import json
import textwrap

import pytest
import yaml

from host.proxy.config import (
    CANARY_KEY_RULE,
    MODES,
    PHASES,
    ConfigError,
    Direction,
    FailStrategy,
    Mode,
    Phase,
    canary_key,
    dump_config,
    http_url_error,
    is_env_name,
    is_header_name,
    is_sha256,
    module_url_error,
    parse_config,
    with_changes,
)
from tests.host.proxy.conftest import make_config, plugin, wasm_plugin

DOC = textwrap.dedent(
    """\
    apiVersion: wasmdesk.dev/v1alpha1
    kind: Proxy
    spec:
      direction: CLIENT
    ---
    apiVersion: extensions.istio.io/v1alpha1
    kind: WasmPlugin
    metadata:
      name: auth
      annotations:
        wasmdesk.dev/mode: log-only
        wasmdesk.dev/canary-key: header:X-User
    spec:
      url: /plugins/auth.wasm
      phase: AUTHN
      failStrategy: FAIL_OPEN
    """
)


def test_parsed_knobs_are_enum_members_equal_to_the_strings_written() -> None:
    cfg = parse_config(DOC, "<t>", "/")
    p = cfg.plugins[0]
    assert p.mode is Mode.LOG_ONLY and p.mode == "log-only"
    assert p.phase is Phase.AUTHN and p.phase == "AUTHN"
    assert p.fail_strategy is FailStrategy.FAIL_OPEN and p.fail_strategy == "FAIL_OPEN"
    assert cfg.direction is Direction.CLIENT and cfg.direction == "CLIENT"
    assert p.canary_key == "header:x-user"
    # JSON and f-strings see the plain value, as they did when these were str
    assert (
        json.dumps({"mode": p.mode, "phase": p.phase}) == '{"mode": "log-only", "phase": "AUTHN"}'
    )
    assert f"{p.fail_strategy}" == "FAIL_OPEN"
    # the tuples of choices are the enums' values, in the enums' order
    assert MODES == ("enforce", "log-only", "disabled")
    assert PHASES == ("AUTHN", "AUTHZ", "STATS", "UNSPECIFIED_PHASE")


def test_export_writes_the_enums_as_plain_yaml_strings() -> None:
    cfg = parse_config(DOC, "<t>", "/")
    changed = with_changes(
        cfg.plugins[0], mode="disabled", phase="STATS", fail_strategy="FAIL_RELOAD"
    )
    assert changed.mode is Mode.DISABLED and changed.phase is Phase.STATS
    text = dump_config(dataclasses.replace(cfg, plugins=(changed,)))
    assert "!!python" not in text
    docs = list(yaml.safe_load_all(text))
    assert docs[0]["spec"]["direction"] == "CLIENT"
    spec = docs[1]["spec"]
    assert (spec["phase"], spec["failStrategy"]) == ("STATS", "FAIL_RELOAD")
    assert docs[1]["metadata"]["annotations"]["wasmdesk.dev/mode"] == "disabled"
    # and reads back to the same values
    again = parse_config(text, "<t>", "/").plugins[0]
    assert (again.mode, again.phase, again.fail_strategy) == (
        Mode.DISABLED,
        Phase.STATS,
        FailStrategy.FAIL_RELOAD,
    )


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("random", "random"),
        ("client-ip", "client-ip"),
        ("header:X-User-Id", "header:x-user-id"),
        ("header::authority", "header::authority"),
        ("header:", None),
        ("header:x user", None),
        ("header:x\tuser", None),
        ("cookie", None),
        ("Random", None),
    ],
)
def test_canary_key_rule(text: str, want: str | None) -> None:
    assert canary_key(text) == want
    doc = DOC.replace("header:X-User", json.dumps(text))
    if want is None:
        with pytest.raises(ConfigError) as e:
            parse_config(doc, "<t>", "/")
        assert f"expected {CANARY_KEY_RULE}" in str(e.value)
    else:
        assert parse_config(doc, "<t>", "/").plugins[0].canary_key == want


def test_sha256_env_name_header_name_and_url_rules() -> None:
    assert is_sha256("0123456789abcdef" * 4)
    assert not is_sha256("0123456789ABCDEF" * 4)  # lower-case only, as spec.sha256
    assert not is_sha256("a" * 63) and not is_sha256("a" * 65)
    assert is_env_name("_A1") and is_env_name("A" * 256)
    assert not is_env_name("A" * 257) and not is_env_name("1A") and not is_env_name("A-B")
    assert is_header_name("x-user") and is_header_name(":path")
    assert not is_header_name("x user") and not is_header_name("")
    assert module_url_error("oci://registry/repo:tag") is None
    assert module_url_error("./p.wasm", "/tmp") is None
    assert module_url_error("http:///p.wasm") == "the URL has no host: 'http:///p.wasm'"
    assert "unsupported scheme" in (module_url_error("ftp://x/p.wasm") or "")
    assert http_url_error("http://x:0/") == "port 0 is not a valid destination port"
    assert http_url_error("https://x:8443/p") is None


def test_admin_api_refuses_a_canary_header_the_config_would_refuse(start_proxy) -> None:
    # Regression: the plugin manager had its own, looser canary-key rule ("header:" and any
    # text), so the admin API took "header:x user", which the exported config then failed on.
    h = start_proxy(make_config(wasm_plugin("add", plugin("add_header"), root_id="add_header")))
    r = h.admin("POST", "/plugins/add/mode", json={"canary-key": "header:x user"})
    assert r.status_code == 400, r.text
    assert CANARY_KEY_RULE in r.text
    assert h.slot("add").canary_key == "random"
    r = h.admin("POST", "/plugins/add/mode", json={"canary-key": "header:X-Id", "mode": "log-only"})
    assert r.status_code == 200, r.text
    assert r.json()["canary_key"] == "header:x-id"
    assert h.slot("add").spec.mode is Mode.LOG_ONLY
    dump = h.admin("GET", "/config_dump", params={"format": "yaml"}).text
    assert "wasmdesk.dev/mode: log-only" in dump
    assert parse_config(dump, "<dump>", "/").plugins[0].canary_key == "header:x-id"
