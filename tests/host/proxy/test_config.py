"""host.proxy.config: the Istio-shaped YAML config, its validation, ordering and export."""

from __future__ import annotations

import dataclasses
import json
import os
import textwrap
from pathlib import Path

import pytest
import yaml

from host.proxy.config import (
    ClusterConfig,
    ConfigError,
    ConfigIssue,
    EnvVar,
    PluginSpec,
    ProxyConfig,
    TrafficSelector,
    dump_config,
    effective_order,
    explain_order,
    load_config,
    new_plugin,
    parse_config,
    plugin_to_document,
    with_changes,
)

SHA_A = "a" * 64
SHA_B = "0123456789abcdef" * 4

FULL = textwrap.dedent(
    f"""\
    # A realistic workbench config: one Proxy document, four plugins.
    apiVersion: wasmdesk.dev/v1alpha1
    kind: Proxy
    metadata:
      name: local
    spec:
      listen: 0.0.0.0:8080
      admin: 127.0.0.1:9902
      clusters:
        - name: backend
          url: http://127.0.0.1:8000
          timeout: 250ms
        - name: auth
          url: https://auth.example.com:8443
          timeout: 1m
          connectTimeout: 2
      defaultCluster: backend
    ---
    apiVersion: extensions.istio.io/v1alpha1
    kind: WasmPlugin
    metadata:
      name: jwt-check
      namespace: edge
      labels:
        team: security
      annotations:
        wasmdesk.dev/mode: log-only
        wasmdesk.dev/canary-percent: "25.5"
        wasmdesk.dev/canary-key: header:X-User-ID
        wasmdesk.dev/vm-id: shared-auth
        wasmdesk.dev/callback-timeout: 250ms
        wasmdesk.dev/memory-limit: 64Mi
        kubectl.kubernetes.io/last-applied-configuration: "{{}}"
    spec:
      selector:
        matchLabels:
          app: web
      url: file://plugins/jwt.wasm
      sha256: {SHA_A}
      imagePullPolicy: IfNotPresent
      imagePullSecret: regcred
      pluginName: jwt_root
      pluginConfig:
        issuer: https://issuer.example.com
        audiences: [web, api]
        leeway_s: 30
        strict: true
        extra: null
      phase: AUTHN
      priority: 1000
      failStrategy: FAIL_CLOSE
      vmConfig:
        env:
          - name: JWT_MODE
            value: strict
          - name: WASMDESK_TEST_TOKEN
            valueFrom: HOST
          - name: WASMDESK_TEST_ABSENT
            valueFrom: HOST
      type: HTTP
      match:
        - mode: SERVER
          ports:
            - number: 8080
            - number: 8443
        - mode: CLIENT
    ---
    apiVersion: extensions.istio.io/v1alpha1
    kind: WasmPlugin
    metadata:
      name: acl
      annotations:
        wasmdesk.dev/canary-percent: "25"
        wasmdesk.dev/canary-key: client-ip
    spec:
      targetRefs:
        - kind: Gateway
          group: gateway.networking.k8s.io
          name: edge-gw
      url: https://plugins.example.com/acl.wasm
      sha256: {SHA_B}
      pluginConfig:
        allow: ["10.0.0.0/8"]
      phase: AUTHZ
      priority: -5
      failStrategy: FAIL_OPEN
      type: UNSPECIFIED_PLUGIN_TYPE
      match:
        - mode: UNDEFINED
    ---
    apiVersion: extensions.istio.io/v1alpha1
    kind: WasmPlugin
    metadata:
      name: add-header
      annotations:
        wasmdesk.dev/mode: disabled
    spec:
      url: ./plugins/add_header.wasm
      pluginConfig: {{}}
      phase: STATS
      failStrategy: FAIL_RELOAD
      vmConfig: {{}}
    ---
    apiVersion: extensions.istio.io/v1alpha1
    kind: WasmPlugin
    metadata:
      name: tcp-meter
    spec:
      url: ghcr.io/example/tcp-meter:v1
      imagePullPolicy: Always
      type: NETWORK
      verificationKey: reserved-for-later
    """
)


def line_of(text: str, needle: str, after: str | None = None) -> int:
    """1-based line of the first line holding ``needle`` (after the line holding ``after``)."""
    lines = text.splitlines()
    start = 0
    if after is not None:
        start = next(i for i, line in enumerate(lines) if after in line) + 1
    for i in range(start, len(lines)):
        if needle in lines[i]:
            return i + 1
    raise AssertionError(f"{needle!r} not in text")


def plugin_doc(spec: str = "url: /plugins/p.wasm", name: str = "p", meta: str = "") -> str:
    body = textwrap.indent(textwrap.dedent(spec).strip(), "  ")
    extra = textwrap.indent(textwrap.dedent(meta).strip(), "  ") + "\n" if meta.strip() else ""
    return (
        "apiVersion: extensions.istio.io/v1alpha1\n"
        "kind: WasmPlugin\n"
        f"metadata:\n  name: {name}\n{extra}"
        f"spec:\n{body}\n"
    )


def errors_of(text: str, source: str = "cfg.yaml", **kw: object) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source, base_dir="/srv", **kw)  # type: ignore[arg-type]
    return info.value.errors


def single_error(text: str, source: str = "cfg.yaml") -> ConfigIssue:
    errs = errors_of(text, source)
    assert len(errs) == 1, "\n".join(map(str, errs))
    return errs[0]


@pytest.fixture
def full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ProxyConfig:
    monkeypatch.setenv("WASMDESK_TEST_TOKEN", "s3cret")
    monkeypatch.delenv("WASMDESK_TEST_ABSENT", raising=False)
    path = tmp_path / "wasmdesk.yaml"
    path.write_text(FULL)
    return load_config(path)


# -- a full, valid config ----------------------------------------------------------------------


def test_full_config_proxy_document(full: ProxyConfig, tmp_path: Path) -> None:
    assert full.source == str(tmp_path / "wasmdesk.yaml")
    assert (full.listen_host, full.listen_port) == ("0.0.0.0", 8080)
    assert (full.admin_host, full.admin_port) == ("127.0.0.1", 9902)
    assert full.listen == "0.0.0.0:8080"
    assert full.clusters == (
        ClusterConfig("backend", "http://127.0.0.1:8000", 0.25),
        ClusterConfig("auth", "https://auth.example.com:8443", 60.0, 2.0),
    )
    assert full.default_cluster == "backend"
    assert full.cluster("auth") == full.clusters[1]
    assert full.line == line_of(FULL, "apiVersion: wasmdesk.dev")
    assert [p.name for p in full.plugins] == ["jwt-check", "acl", "add-header", "tcp-meter"]


def test_full_config_plugin_with_every_field(full: ProxyConfig, tmp_path: Path) -> None:
    jwt = full.plugins[0]
    assert jwt.name == "jwt-check"
    assert jwt.namespace == "edge"
    assert jwt.filter_name == "edge.jwt-check"
    assert jwt.url == "file://plugins/jwt.wasm"
    assert jwt.location_kind == "file"
    assert jwt.location == str(tmp_path / "plugins" / "jwt.wasm")
    assert jwt.sha256 == SHA_A
    assert jwt.image_pull_policy == "IfNotPresent"
    assert jwt.plugin_name == "jwt_root"
    assert jwt.plugin_config == {
        "issuer": "https://issuer.example.com",
        "audiences": ["web", "api"],
        "leeway_s": 30,
        "strict": True,
        "extra": None,
    }
    assert jwt.plugin_config_json == (
        b'{"audiences":["web","api"],"extra":null,"issuer":"https://issuer.example.com",'
        b'"leeway_s":30,"strict":true}'
    )
    assert jwt.phase == "AUTHN"
    assert jwt.priority == 1000
    assert jwt.fail_strategy == "FAIL_CLOSE"
    assert jwt.env == (
        EnvVar("JWT_MODE", "INLINE", "strict"),
        EnvVar("WASMDESK_TEST_TOKEN", "HOST", ""),
        EnvVar("WASMDESK_TEST_ABSENT", "HOST", ""),
    )
    assert jwt.vm_env == (("JWT_MODE", "strict"), ("WASMDESK_TEST_TOKEN", "s3cret"))
    assert jwt.type == "HTTP"
    assert jwt.match == (
        TrafficSelector("SERVER", (8080, 8443)),
        TrafficSelector("CLIENT", ()),
    )
    assert jwt.selector == {"matchLabels": {"app": "web"}}
    assert jwt.target_refs == ()
    assert jwt.mode == "log-only"
    assert jwt.canary_percent == 25.5
    assert jwt.canary_key == "header:x-user-id"
    assert jwt.vm_id == "shared-auth"
    assert jwt.callback_timeout_ms == 250.0
    assert jwt.memory_limit_bytes == 64 * 1024 * 1024
    assert jwt.line == line_of(FULL, "apiVersion: extensions.istio.io", after="defaultCluster")
    assert jwt.raw["metadata"]["labels"] == {"team": "security"}


def test_full_config_other_plugins_and_defaults(full: ProxyConfig, tmp_path: Path) -> None:
    acl, add_header, tcp = full.plugins[1:]
    assert acl.namespace == "default"
    assert acl.location_kind == "https"
    assert acl.location == "https://plugins.example.com/acl.wasm"
    assert acl.priority == -5
    assert acl.fail_strategy == "FAIL_OPEN"
    assert acl.type == "HTTP"  # UNSPECIFIED_PLUGIN_TYPE means HTTP
    assert acl.match == (TrafficSelector("CLIENT_AND_SERVER", ()),)  # UNDEFINED ≡ CLIENT_AND_SERVER
    assert acl.target_refs == (
        {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "edge-gw"},
    )
    assert acl.selector is None
    assert (acl.mode, acl.canary_percent, acl.canary_key) == ("enforce", 25.0, "client-ip")

    assert add_header.location == str(tmp_path / "plugins" / "add_header.wasm")
    assert add_header.plugin_config == {}
    assert add_header.plugin_config_json == b""
    assert add_header.priority is None
    assert add_header.fail_strategy == "FAIL_RELOAD"
    assert add_header.mode == "disabled"
    assert add_header.env == () and add_header.vm_env == ()

    assert tcp.location_kind == "oci"
    assert tcp.location == "oci://ghcr.io/example/tcp-meter:v1"
    assert tcp.type == "NETWORK"
    assert tcp.phase == "UNSPECIFIED_PHASE"
    assert tcp.fail_strategy == "FAIL_CLOSE"
    assert (tcp.mode, tcp.canary_percent, tcp.canary_key) == ("enforce", 100.0, "random")
    assert tcp.plugin_name == ""
    assert tcp.sha256 == ""
    assert tcp.vm_id == "" and tcp.callback_timeout_ms == 100.0
    assert tcp.memory_limit_bytes == 256 * 1024 * 1024


def test_missing_proxy_document_gives_defaults() -> None:
    cfg = parse_config(plugin_doc())
    assert (cfg.listen_host, cfg.listen_port) == ("127.0.0.1", 10000)
    assert (cfg.admin_host, cfg.admin_port) == ("127.0.0.1", 9901)
    assert cfg.clusters == ()
    assert cfg.default_cluster is None
    assert cfg.raw is None
    assert len(cfg.plugins) == 1


def test_empty_text_and_empty_documents_are_skipped() -> None:
    assert parse_config("") == ProxyConfig()
    assert parse_config("# nothing here\n") == ProxyConfig()
    text = "---\n---\n# just a comment\n---\n" + plugin_doc() + "---\n"
    assert [p.name for p in parse_config(text).plugins] == ["p"]


def test_proxy_document_with_empty_spec_gives_defaults() -> None:
    cfg = parse_config("apiVersion: wasmdesk.dev/v1alpha1\nkind: Proxy\n")
    assert cfg.listen == "127.0.0.1:10000" and cfg.admin == "127.0.0.1:9901"


def test_cluster_timeouts_accept_units_and_numbers() -> None:
    text = textwrap.dedent(
        """\
        apiVersion: wasmdesk.dev/v1alpha1
        kind: Proxy
        spec:
          clusters:
            - {name: a, url: "http://a:1", timeout: 250ms}
            - {name: b, url: "http://b:1", timeout: 5s}
            - {name: c, url: "http://c:1", timeout: 1m}
            - {name: d, url: "http://d:1", timeout: 1.5}
            - {name: e, url: "http://e:1", timeout: "1m30s"}
            - {name: f, url: "http://f:1"}
        """
    )
    cfg = parse_config(text)
    assert [c.timeout_s for c in cfg.clusters] == [0.25, 5.0, 60.0, 1.5, 90.0, 5.0]


def test_listen_and_admin_accept_ipv6_and_localhost() -> None:
    text = textwrap.dedent(
        """\
        apiVersion: wasmdesk.dev/v1alpha1
        kind: Proxy
        spec:
          listen: "[::]:10001"
          admin: "[::1]:9000"
        """
    )
    cfg = parse_config(text)
    assert (cfg.listen_host, cfg.listen_port, cfg.admin_host, cfg.admin_port) == (
        "::",
        10001,
        "::1",
        9000,
    )
    assert cfg.listen == "[::]:10001"
    for admin in ("localhost:9901", "127.3.2.1:9901"):
        cfg = parse_config(
            f"apiVersion: wasmdesk.dev/v1alpha1\nkind: Proxy\nspec:\n  admin: {admin}\n"
        )
        assert cfg.admin == admin


def test_port_zero_means_any_free_port() -> None:
    cfg = parse_config(
        "apiVersion: wasmdesk.dev/v1alpha1\nkind: Proxy\n"
        "spec:\n  listen: 127.0.0.1:0\n  admin: 127.0.0.1:0\n"
    )
    assert (cfg.listen_port, cfg.admin_port) == (0, 0)


# -- pluginConfig as the plugin receives it -----------------------------------------------------


def test_plugin_config_json_matches_istio_jsonpb_output() -> None:
    cfg = parse_config(
        plugin_doc(
            """\
            url: /p.wasm
            pluginConfig:
              z: 1
              a: {y: [1, 2.5, -0.0, 10.0], x: "é"}
              big: 12345678901234567890
              tiny: 1.0e-7
              huge: 1.0e+21
              html: "<a href='x'>&</a>"
              sep: "line\\u2028break\\ttab"
              when: 2024-01-02
            """
        )
    )
    data = cfg.plugins[0].plugin_config_json
    # Keys sorted (Struct fields are a map), numbers are doubles printed like Go.
    assert (
        data
        == (
            '{"a":{"x":"é","y":[1,2.5,-0,10]},"big":12345678901234567000,'
            '"html":"\\u003ca href=\'x\'\\u003e\\u0026\\u003c/a\\u003e","huge":1e+21,'
            '"sep":"line\\u2028break\\ttab","tiny":1e-7,"when":"2024-01-02","z":1}'
        ).encode()
    )
    # Whatever the formatting, it is JSON carrying the same values.
    assert json.loads(data)["a"]["y"] == [1, 2.5, 0, 10]


def test_plugin_config_absent_or_empty_is_no_configuration() -> None:
    for spec in ("url: /p.wasm", "url: /p.wasm\npluginConfig: {}", "url: /p.wasm\npluginConfig:"):
        p = parse_config(plugin_doc(spec)).plugins[0]
        assert p.plugin_config == {}
        assert p.plugin_config_json == b""


# -- module locations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kind", "location"),
    [
        ("file:///opt/p.wasm", "file", "/opt/p.wasm"),
        ("file://rel/p.wasm", "file", "{base}/rel/p.wasm"),
        ("p.wasm", "file", "{base}/p.wasm"),
        ("./sub/../p.wasm", "file", "{base}/p.wasm"),
        ("../up/p.wasm", "file", "{parent}/up/p.wasm"),
        ("/abs/p.wasm", "file", "/abs/p.wasm"),
        ("http://host:8080/p.wasm", "http", "http://host:8080/p.wasm"),
        ("https://host/p.wasm", "https", "https://host/p.wasm"),
        ("oci://ghcr.io/org/p:v1", "oci", "oci://ghcr.io/org/p:v1"),
        ("ghcr.io/org/p:v1", "oci", "oci://ghcr.io/org/p:v1"),
        ("registry:5000/repo:tag", "oci", "oci://registry:5000/repo:tag"),
    ],
)
def test_url_kinds_and_relative_paths_resolve_against_the_config_dir(
    tmp_path: Path, url: str, kind: str, location: str
) -> None:
    base = tmp_path / "conf"
    base.mkdir()
    path = base / "wasmdesk.yaml"
    path.write_text(plugin_doc(f"url: {url}"))
    p = load_config(path).plugins[0]
    assert p.location_kind == kind
    assert p.location == location.format(base=base, parent=tmp_path)


def test_relative_paths_use_base_dir_when_parsing_text(tmp_path: Path) -> None:
    p = parse_config(plugin_doc("url: mods/p.wasm"), base_dir=tmp_path).plugins[0]
    assert p.location == str(tmp_path / "mods" / "p.wasm")


def test_home_relative_paths_expand(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    p = parse_config(plugin_doc("url: ~/p.wasm")).plugins[0]
    assert p.location == str(tmp_path / "p.wasm")


# -- vmConfig.env ------------------------------------------------------------------------------


def test_env_inline_and_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WD_HOST_VAR", "from-host")
    monkeypatch.delenv("WD_MISSING_VAR", raising=False)
    p = parse_config(
        plugin_doc(
            """\
            url: /p.wasm
            vmConfig:
              env:
                - name: A
                  value: one
                - name: WD_HOST_VAR
                  valueFrom: HOST
                - name: WD_MISSING_VAR
                  valueFrom: HOST
                - name: EMPTY
                - name: B
                  valueFrom: INLINE
                  value: two
            """
        )
    ).plugins[0]
    assert p.vm_env == (("A", "one"), ("WD_HOST_VAR", "from-host"), ("EMPTY", ""), ("B", "two"))
    assert [e.value_from for e in p.env] == ["INLINE", "HOST", "HOST", "INLINE", "INLINE"]


def test_env_host_values_are_read_at_load_time(monkeypatch: pytest.MonkeyPatch) -> None:
    text = plugin_doc("url: /p.wasm\nvmConfig:\n  env:\n    - {name: WD_LATER, valueFrom: HOST}")
    monkeypatch.setenv("WD_LATER", "first")
    cfg = parse_config(text)
    monkeypatch.setenv("WD_LATER", "second")
    assert cfg.plugins[0].vm_env == (("WD_LATER", "first"),)
    assert parse_config(text).plugins[0].vm_env == (("WD_LATER", "second"),)
    assert parse_config(text, environ={"WD_LATER": "given"}).plugins[0].vm_env == (
        ("WD_LATER", "given"),
    )


def test_env_host_entry_with_value_is_an_error() -> None:
    text = plugin_doc(
        "url: /p.wasm\nvmConfig:\n  env:\n    - name: X\n      valueFrom: HOST\n      value: nope"
    )
    err = single_error(text)
    assert err.path == "spec.vmConfig.env[0].value"
    assert err.line == line_of(text, "value: nope")
    assert "value may only be set when valueFrom is INLINE" in err.message


def test_env_name_must_be_a_c_identifier_and_unique() -> None:
    text = plugin_doc(
        """\
        url: /p.wasm
        vmConfig:
          env:
            - name: 1BAD
            - name: GOOD
            - name: GOOD
              valueFrom: HOST
            - value: nameless
            - name: Y
              valueFrom: SOMEWHERE
        """
    )
    errs = errors_of(text)
    by_path = {e.path: e for e in errs}
    assert set(by_path) == {
        "spec.vmConfig.env[0].name",
        "spec.vmConfig.env[2].name",
        "spec.vmConfig.env[3].name",
        "spec.vmConfig.env[4].valueFrom",
    }
    assert "C identifier" in by_path["spec.vmConfig.env[0].name"].message
    assert by_path["spec.vmConfig.env[0].name"].line == line_of(text, "1BAD")
    assert "duplicate env name 'GOOD'" in by_path["spec.vmConfig.env[2].name"].message
    assert by_path["spec.vmConfig.env[2].name"].line == line_of(
        text, "- name: GOOD", after="- name: GOOD"
    )
    assert "required field is missing" in by_path["spec.vmConfig.env[3].name"].message
    assert by_path["spec.vmConfig.env[3].name"].line == line_of(text, "value: nameless")
    assert (
        "expected one of HOST, INLINE, got 'SOMEWHERE'"
        in by_path["spec.vmConfig.env[4].valueFrom"].message
    )


def test_env_at_most_256_entries() -> None:
    entries = "\n".join(f"    - name: V{i}" for i in range(257))
    text = plugin_doc("url: /p.wasm\nvmConfig:\n  env:\n" + entries)
    err = single_error(text)
    assert err.path == "spec.vmConfig.env"
    assert "at most 256 entries, got 257" in err.message
    entries = "\n".join(f"    - name: V{i}" for i in range(256))
    assert (
        len(parse_config(plugin_doc("url: /p.wasm\nvmConfig:\n  env:\n" + entries)).plugins[0].env)
        == 256
    )


# -- annotations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"25"', 25.0),
        ('"25.5"', 25.5),
        ("25", 25.0),
        ("0", 0.0),
        ('"100"', 100.0),
        ("12.25", 12.25),
    ],
)
def test_canary_percent_accepts_strings_and_numbers(value: str, expected: float) -> None:
    p = parse_config(
        plugin_doc(meta=f"annotations:\n  wasmdesk.dev/canary-percent: {value}")
    ).plugins[0]
    assert p.canary_percent == expected


@pytest.mark.parametrize("value", ['"150"', '"-1"', '"abc"', "true", '"nan"', '""'])
def test_canary_percent_out_of_range_or_not_a_number(value: str) -> None:
    text = plugin_doc(meta=f"annotations:\n  wasmdesk.dev/canary-percent: {value}")
    err = single_error(text)
    assert err.path == "metadata.annotations['wasmdesk.dev/canary-percent']"
    assert err.line == line_of(text, "canary-percent")
    assert "expected a number from 0 to 100" in err.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("random", "random"),
        ("client-ip", "client-ip"),
        ("header:X-User-ID", "header:x-user-id"),
        ("header:cookie", "header:cookie"),
        ("header::authority", "header::authority"),
    ],
)
def test_canary_key_grammar_and_header_lower_casing(value: str, expected: str) -> None:
    p = parse_config(
        plugin_doc(meta=f'annotations:\n  wasmdesk.dev/canary-key: "{value}"')
    ).plugins[0]
    assert p.canary_key == expected


@pytest.mark.parametrize("value", ["header:", "header:bad name", "ip", "Random", "cookie:x"])
def test_canary_key_invalid(value: str) -> None:
    text = plugin_doc(meta=f'annotations:\n  wasmdesk.dev/canary-key: "{value}"')
    err = single_error(text)
    assert err.path == "metadata.annotations['wasmdesk.dev/canary-key']"
    assert err.line == line_of(text, "canary-key")
    assert "expected random, client-ip or header:NAME" in err.message


def test_mode_annotation_values() -> None:
    for mode in ("enforce", "log-only", "disabled"):
        p = parse_config(plugin_doc(meta=f"annotations:\n  wasmdesk.dev/mode: {mode}")).plugins[0]
        assert p.mode == mode
    text = plugin_doc(meta="annotations:\n  wasmdesk.dev/mode: dry-run")
    err = single_error(text)
    assert str(err) == (
        f"cfg.yaml:{line_of(text, 'wasmdesk.dev/mode')}: "
        "metadata.annotations['wasmdesk.dev/mode']: "
        "expected one of disabled, enforce, log-only, got 'dry-run'"
    )


def test_unknown_wasmdesk_annotation_is_an_error_but_others_are_ignored() -> None:
    text = plugin_doc(
        meta="annotations:\n  wasmdesk.dev/canary-percentage: '5'\n  example.com/whatever: '1'"
    )
    err = single_error(text)
    assert err.path == "metadata.annotations['wasmdesk.dev/canary-percentage']"
    assert "unknown wasmdesk annotation" in err.message


def test_runtime_limit_annotations() -> None:
    p = parse_config(
        plugin_doc(
            meta="annotations:\n  wasmdesk.dev/callback-timeout: 2s\n"
            "  wasmdesk.dev/memory-limit: 1Gi"
        )
    ).plugins[0]
    assert (p.callback_timeout_ms, p.memory_limit_bytes) == (2000.0, 1024**3)
    text = plugin_doc(
        meta="annotations:\n  wasmdesk.dev/callback-timeout: soon\n  wasmdesk.dev/memory-limit: 8Gi"
    )
    errs = errors_of(text)
    assert [e.path for e in errs] == [
        "metadata.annotations['wasmdesk.dev/callback-timeout']",
        "metadata.annotations['wasmdesk.dev/memory-limit']",
    ]


# -- validation errors: file, line, field path --------------------------------------------------


def test_phase_error_names_file_line_path_and_choices() -> None:
    text = plugin_doc("url: /p.wasm\nphase: AUTHZZ")
    err = single_error(text)
    assert str(err) == (
        f"cfg.yaml:{line_of(text, 'AUTHZZ')}: spec.phase: "
        "expected one of AUTHN, AUTHZ, STATS, UNSPECIFIED_PHASE, got 'AUTHZZ'"
    )


@pytest.mark.parametrize(
    ("spec", "path", "needle", "message"),
    [
        (
            "url: /p.wasm\nfailStrategy: FAIL_SOFT",
            "spec.failStrategy",
            "FAIL_SOFT",
            "expected one of FAIL_CLOSE, FAIL_OPEN, FAIL_RELOAD, got 'FAIL_SOFT'",
        ),
        (
            "url: /p.wasm\ntype: GRPC",
            "spec.type",
            "GRPC",
            "expected one of HTTP, NETWORK, UNSPECIFIED_PLUGIN_TYPE, got 'GRPC'",
        ),
        (
            "url: /p.wasm\nimagePullPolicy: Never",
            "spec.imagePullPolicy",
            "Never",
            "expected one of Always, IfNotPresent, UNSPECIFIED_POLICY, got 'Never'",
        ),
        (
            "url: /p.wasm\nmatch:\n  - mode: INBOUND",
            "spec.match[0].mode",
            "INBOUND",
            "expected one of CLIENT, CLIENT_AND_SERVER, SERVER, UNDEFINED, got 'INBOUND'",
        ),
        (
            "url: /p.wasm\nmatch:\n  - ports:\n      - number: 70000",
            "spec.match[0].ports[0].number",
            "70000",
            "expected a port number 1..65535, got 70000",
        ),
        (
            "url: /p.wasm\npriority: '10'",
            "spec.priority",
            "priority",
            "expected an integer (remove the quotes), got '10'",
        ),
        (
            "url: /p.wasm\npriority: 1.5",
            "spec.priority",
            "priority",
            "expected an integer, got 1.5",
        ),
        (
            "url: /p.wasm\npriority: 2147483648",
            "spec.priority",
            "priority",
            "expected a 32-bit integer, got 2147483648",
        ),
        (
            "url: /p.wasm\nsha256: abc",
            "spec.sha256",
            "sha256",
            "expected 64 lower-case hex digits or empty, got 'abc'",
        ),
        (
            f"url: /p.wasm\nsha256: {'A' * 64}",
            "spec.sha256",
            "sha256",
            "expected 64 lower-case hex digits or empty (lower-case only)",
        ),
        ("url: ftp://host/p.wasm", "spec.url", "url", "unsupported scheme 'ftp://'"),
        ("url: http:///p.wasm", "spec.url", "url", "the URL has no host"),
        ("url: ''", "spec.url", "url", "must not be empty"),
        ("phase: AUTHN", "spec.url", "spec:", "required field is missing"),
        (
            "url: /p.wasm\npluginConfig: [1, 2]",
            "spec.pluginConfig",
            "pluginConfig",
            "expected a mapping, got a list",
        ),
        (
            "url: /p.wasm\npluginConfig:\n  x: .nan",
            "spec.pluginConfig.x",
            "x: .nan",
            "nan has no JSON representation",
        ),
        (
            "url: /p.wasm\npluginName: " + "r" * 257,
            "spec.pluginName",
            "pluginName",
            "at most 256 characters",
        ),
        (
            "url: /p.wasm\nvmConfig: []",
            "spec.vmConfig",
            "vmConfig",
            "expected a mapping, got a list",
        ),
        (
            "url: /p.wasm\nselector: {matchLabels: {app: web}}\n"
            "targetRefs: [{kind: Gateway, name: gw}]",
            "spec.targetRefs",
            "targetRefs",
            "only one of targetRefs or selector can be set",
        ),
        (
            "url: /p.wasm\nmatch:\n  - ports: [{number: 80}, {number: 80}]",
            "spec.match[0].ports[1].number",
            "ports",
            "duplicate port 80",
        ),
    ],
)
def test_spec_validation_errors(spec: str, path: str, needle: str, message: str) -> None:
    text = plugin_doc(spec)
    err = single_error(text)
    assert err.file == "cfg.yaml"
    assert err.path == path
    assert err.line == line_of(text, needle)
    assert message in err.message
    assert str(err).startswith(f"cfg.yaml:{err.line}: {path}: ")


def test_sha256_must_match_a_digest_pinned_in_the_url() -> None:
    text = plugin_doc(f"url: oci://ghcr.io/org/p@sha256:{SHA_A}\nsha256: {SHA_B}")
    err = single_error(text)
    assert err.path == "spec.sha256"
    assert "does not match the digest in spec.url" in err.message
    ok = parse_config(plugin_doc(f"url: oci://ghcr.io/org/p@sha256:{SHA_A}\nsha256: {SHA_A}"))
    assert ok.plugins[0].sha256 == SHA_A


@pytest.mark.parametrize(
    ("meta_name", "message"),
    [("My_Plugin", "expected a lower-case RFC 1123 name"), ("", "required field is missing")],
)
def test_metadata_name_is_required_and_a_kubernetes_name(meta_name: str, message: str) -> None:
    text = (
        plugin_doc(name=f"'{meta_name}'") if meta_name else plugin_doc().replace("  name: p\n", "")
    )
    err = single_error(text)
    assert err.path == "metadata.name"
    assert message in err.message


def test_duplicate_plugin_names_in_the_same_namespace() -> None:
    text = plugin_doc(name="dup") + "---\n" + plugin_doc(name="dup")
    err = single_error(text)
    assert err.path == "metadata.name"
    assert err.line == line_of(text, "name: dup", after="---")
    assert (
        "duplicate plugin name 'dup' in namespace 'default' (first defined at line 1)"
        in err.message
    )
    # Istio allows the same name in two namespaces; one wasmdesk config names its
    # plugins by metadata.name alone (stats, admin API), so it refuses that too.
    other_ns = plugin_doc(name="dup") + "---\n" + plugin_doc(name="dup", meta="namespace: other")
    err = single_error(other_ns)
    assert err.path == "metadata.name" and "already used in another namespace" in err.message


def test_unknown_kind_wrong_api_version_and_missing_kind() -> None:
    text = textwrap.dedent(
        """\
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        ---
        apiVersion: extensions.istio.io/v1beta1
        kind: WasmPlugin
        metadata: {name: x}
        spec: {url: /x.wasm}
        ---
        apiVersion: wasmdesk.dev/v1alpha1
        kind: wasmplugin
        ---
        metadata: {name: y}
        """
    )
    errs = errors_of(text)
    assert [(e.line, e.path) for e in errs] == [
        (2, "kind"),
        (4, "apiVersion"),
        (10, "kind"),
        (12, "kind"),
    ]
    assert "unknown kind 'EnvoyFilter'" in errs[0].message
    assert (
        "expected WasmPlugin (extensions.istio.io/v1alpha1) or Proxy (wasmdesk.dev/v1alpha1)"
        in errs[0].message
    )
    assert (
        "expected extensions.istio.io/v1alpha1 for kind WasmPlugin, "
        "got 'extensions.istio.io/v1beta1'" in errs[1].message
    )
    assert "did you mean WasmPlugin?" in errs[2].message
    assert "required field is missing" in errs[3].message


def test_non_mapping_document_is_an_error() -> None:
    text = plugin_doc() + "---\n- a\n- b\n---\njust text\n"
    errs = errors_of(text)
    assert [e.line for e in errs] == [line_of(text, "- a"), line_of(text, "just text")]
    assert "a document must be a mapping" in errs[0].message and "got a list" in errs[0].message
    assert "got the scalar 'just text'" in errs[1].message


def test_yaml_syntax_error_reports_line_and_column() -> None:
    text = plugin_doc() + "---\nkind: Proxy\nspec:\n  listen: [oops\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "bad.yaml")
    (err,) = info.value.errors
    assert err.file == "bad.yaml"
    assert err.line >= line_of(text, "[oops")
    assert err.column is not None
    assert str(err).startswith(f"bad.yaml:{err.line}:{err.column}: YAML syntax error: ")


def test_yaml_duplicate_keys_and_unsupported_tags_are_errors() -> None:
    text = plugin_doc(
        "url: /a.wasm\nphase: AUTHN\nphase: STATS\npluginConfig:\n  blob: !!binary aGk="
    )
    errs = errors_of(text)
    assert [e.line for e in errs] == [line_of(text, "phase: STATS"), line_of(text, "!!binary")]
    assert "duplicate key 'phase'" in errs[0].message
    assert "unsupported YAML tag !!binary" in errs[1].message


def test_yaml_anchors_and_merge_keys_work() -> None:
    text = plugin_doc(
        """\
        url: /a.wasm
        pluginConfig:
          defaults: &common
            level: 1
            tags: [x]
          route:
            <<: *common
            level: 2
          copy: *common
        """
    )
    cfg = parse_config(text).plugins[0].plugin_config
    assert cfg["route"] == {"level": 2, "tags": ["x"]}
    assert cfg["copy"] == {"level": 1, "tags": ["x"]}


def test_recursive_alias_is_an_error_not_a_hang() -> None:
    text = plugin_doc("url: /a.wasm\npluginConfig: &x\n  self: *x")
    err = single_error(text)
    assert "recursive YAML alias" in err.message


def test_every_error_is_reported_at_once_in_line_order() -> None:
    text = (
        plugin_doc("url: /p.wasm\nphase: LATE\npriority: x", name="one")
        + "---\n"
        + plugin_doc("failStrategy: NEVER", name="two")
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, "multi.yaml")
    errs = info.value.errors
    assert [e.path for e in errs] == [
        "spec.phase",
        "spec.priority",
        "spec.url",
        "spec.failStrategy",
    ]
    assert [e.line for e in errs] == sorted(e.line for e in errs)
    assert str(info.value).splitlines() == [str(e) for e in errs]
    assert all(line.startswith("multi.yaml:") for line in str(info.value).splitlines())


def test_load_config_reports_the_file_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(plugin_doc("url: /p.wasm\nphase: NOPE"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:{line_of(path.read_text(), 'NOPE')}: spec.phase:")
    with pytest.raises(ConfigError, match="cannot read the config"):
        load_config(tmp_path / "missing.yaml")


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_config(plugin_doc("url: /p.wasm\nphase: NOPE"))


# -- the Proxy document ------------------------------------------------------------------------


def proxy_doc(spec: str) -> str:
    body = textwrap.indent(textwrap.dedent(spec).strip(), "  ")
    return f"apiVersion: wasmdesk.dev/v1alpha1\nkind: Proxy\nspec:\n{body}\n"


@pytest.mark.parametrize(
    ("spec", "path", "needle", "message"),
    [
        ("admin: 0.0.0.0:9901", "spec.admin", "admin", "admin API listens on loopback only"),
        ("admin: 192.168.1.5:9901", "spec.admin", "admin", "admin API listens on loopback only"),
        ("listen: 127.0.0.1:70000", "spec.listen", "listen", "within 1..65535"),
        ("listen: 127.0.0.1", "spec.listen", "listen", "expected HOST:PORT"),
        ("listen: '127.0.0.1:http'", "spec.listen", "listen", "the port must be a number"),
        ("listen: '::1:80'", "spec.listen", "listen", "brackets"),
        ("listen: 10000", "spec.listen", "listen", "expected a string, got 10000"),
        (
            "defaultCluster: nowhere\nclusters:\n  - {name: a, url: 'http://a:1'}",
            "spec.defaultCluster",
            "defaultCluster",
            "'nowhere' is not a cluster in spec.clusters (defined: a)",
        ),
        (
            "clusters:\n  - {name: a, url: 'http://a:1'}\n  - {name: a, url: 'http://b:1'}",
            "spec.clusters[1].name",
            "http://b:1",
            "duplicate cluster name 'a'",
        ),
        (
            "clusters:\n  - {name: a, url: 'ftp://a:1'}",
            "spec.clusters[0].url",
            "ftp",
            "expected an http://, https://, grpc://, grpcs:// or tcp:// URL",
        ),
        ("clusters:\n  - {name: a, url: 'http://:80'}", "spec.clusters[0].url", "http", "no host"),
        (
            "clusters:\n  - {name: a, url: 'http://a:99999'}",
            "spec.clusters[0].url",
            "http",
            "invalid URL",
        ),
        (
            "clusters:\n  - {name: a, url: 'http://a:80/api'}",
            "spec.clusters[0].url",
            "http",
            "drop the path",
        ),
        (
            "clusters:\n  - {name: a, url: 'http://a:80', timeout: soon}",
            "spec.clusters[0].timeout",
            "soon",
            "expected a positive duration",
        ),
        (
            "clusters:\n  - {name: a, url: 'http://a:80', timeout: 0}",
            "spec.clusters[0].timeout",
            "timeout",
            "expected a positive duration",
        ),
        (
            "clusters:\n  - {name: a, url: 'http://a:80', timout: 5s}",
            "spec.clusters[0].timout",
            "timout",
            "unknown field",
        ),
        (
            "clusters:\n  - {url: 'http://a:80'}",
            "spec.clusters[0].name",
            "url",
            "required field is missing",
        ),
        ("clusters: {a: 1}", "spec.clusters", "clusters", "expected a list"),
        ("listn: 127.0.0.1:1", "spec.listn", "listn", "unknown field"),
    ],
)
def test_proxy_validation_errors(spec: str, path: str, needle: str, message: str) -> None:
    text = proxy_doc(spec)
    err = single_error(text)
    assert err.path == path
    assert err.line == line_of(text, needle)
    assert message in err.message


def test_multiple_proxy_documents_are_an_error() -> None:
    text = (
        proxy_doc("listen: 127.0.0.1:1")
        + "---\n"
        + plugin_doc()
        + "---\n"
        + proxy_doc("listen: 127.0.0.1:2")
    )
    err = single_error(text)
    second = line_of(text, "kind: Proxy", after="kind: WasmPlugin")
    assert err.line == second
    assert err.path == "kind"
    assert "more than one Proxy document (the first starts at line 1)" in err.message


# -- ordering ----------------------------------------------------------------------------------


def spec_of(
    name: str, phase: str = "UNSPECIFIED_PHASE", priority: int | None = None, **kw: object
) -> PluginSpec:
    return PluginSpec(name=name, url=f"/{name}.wasm", phase=phase, priority=priority, **kw)  # type: ignore[arg-type]


def test_phases_run_authn_authz_stats_then_unspecified() -> None:
    plugins = [
        spec_of("u"),
        spec_of("s", "STATS"),
        spec_of("z", "AUTHZ"),
        spec_of("n", "AUTHN"),
    ]
    assert [p.name for p in effective_order(plugins)] == ["n", "z", "s", "u"]


def test_priority_descending_and_unset_is_below_negative() -> None:
    plugins = [
        spec_of("unset"),
        spec_of("minus-ten", priority=-10),
        spec_of("zero", priority=0),
        spec_of("hundred", priority=100),
        spec_of("min", priority=-(2**31)),
    ]
    assert [p.name for p in effective_order(plugins)] == [
        "hundred",
        "zero",
        "minus-ten",
        "min",
        "unset",
    ]


def test_ties_keep_document_order() -> None:
    plugins = [
        spec_of("b", "AUTHZ", 5),
        spec_of("a", "AUTHZ", 5),
        spec_of("unset-2"),
        spec_of("unset-1"),
        spec_of("c", "AUTHZ", 5),
    ]
    order = [p.name for p in effective_order(plugins)]
    assert order == ["b", "a", "c", "unset-2", "unset-1"]
    # Ordering an ordered list changes nothing (stable sort).
    assert [p.name for p in effective_order(effective_order(plugins))] == order


def test_disabled_plugins_keep_their_place() -> None:
    plugins = [spec_of("x", "AUTHN", 1, mode="disabled"), spec_of("y", "AUTHN", 2)]
    assert [p.name for p in effective_order(plugins)] == ["y", "x"]


def test_order_of_the_full_config(full: ProxyConfig) -> None:
    assert [p.name for p in effective_order(full.plugins)] == [
        "jwt-check",
        "acl",
        "add-header",
        "tcp-meter",
    ]


def test_explain_order_says_why() -> None:
    plugins = [
        spec_of("late"),
        spec_of("neg", "AUTHZ", -3),
        spec_of("first", "AUTHN", 10, namespace="edge"),
        spec_of("tie-a", "AUTHZ", 7),
        spec_of("tie-b", "AUTHZ", 7, mode="disabled"),
        spec_of("shy", "STATS", 1, mode="log-only", canary_percent=12.5, canary_key="client-ip"),
    ]
    lines = explain_order(plugins)
    assert lines == [
        "1. edge/first: phase AUTHN (before Istio authn), priority 10",
        "2. tie-a: phase AUTHZ (after Istio authn, before Istio authz), priority 7; "
        "ties with tie-b: kept in document order",
        "3. tie-b: phase AUTHZ (after Istio authn, before Istio authz), priority 7; "
        "ties with tie-a: kept in document order; disabled: keeps its place, the proxy skips it",
        "4. neg: phase AUTHZ (after Istio authn, before Istio authz), priority -3",
        "5. shy: phase STATS (after Istio authz, before stats), priority 1; "
        "log-only: runs, its effects are recorded, not applied; "
        "canary: runs for 12.5% of requests (key client-ip)",
        "6. late: phase UNSPECIFIED_PHASE (last, right before the router), "
        "priority unset (treated as lowest, as Istio's code does — docs say 0)",
    ]


# -- export ------------------------------------------------------------------------------------


def test_round_trip_of_the_full_config(full: ProxyConfig, tmp_path: Path) -> None:
    text = dump_config(full)
    again = parse_config(text, base_dir=tmp_path)
    assert again == full
    assert dump_config(again) == text
    assert [p.line > 0 for p in again.plugins] == [True] * 4


@pytest.mark.parametrize(
    "text",
    [
        "",
        plugin_doc(),
        plugin_doc(
            "url: /p.wasm\npriority: -3\nphase: STATS",
            meta="annotations:\n  wasmdesk.dev/canary-percent: 25",
        ),
        proxy_doc("listen: '[::1]:8080'"),
        plugin_doc("url: ./x.wasm")
        + "---\n"
        + proxy_doc("clusters: [{name: a, url: 'http://a:1', timeout: 0.3}]"),
    ],
)
def test_round_trip_property(text: str) -> None:
    cfg = parse_config(text, base_dir="/srv")
    assert parse_config(dump_config(cfg), base_dir="/srv") == cfg


def test_export_preserves_fields_we_do_not_use(full: ProxyConfig) -> None:
    docs = list(yaml.safe_load_all(dump_config(full)))
    assert [d["kind"] for d in docs] == [
        "Proxy",
        "WasmPlugin",
        "WasmPlugin",
        "WasmPlugin",
        "WasmPlugin",
    ]
    proxy, jwt, acl, _, tcp = docs
    assert proxy["metadata"] == {"name": "local"}
    assert jwt["metadata"]["labels"] == {"team": "security"}
    assert (
        jwt["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] == "{}"
    )
    assert jwt["spec"]["selector"] == {"matchLabels": {"app": "web"}}
    assert jwt["spec"]["imagePullSecret"] == "regcred"
    assert jwt["spec"]["url"] == "file://plugins/jwt.wasm"  # as written, not resolved
    assert acl["spec"]["targetRefs"][0]["name"] == "edge-gw"
    assert acl["spec"]["type"] == "UNSPECIFIED_PLUGIN_TYPE"  # unchanged fields keep their spelling
    assert tcp["spec"]["verificationKey"] == "reserved-for-later"


def test_export_keeps_unknown_future_fields_and_host_env_stays_host(full: ProxyConfig) -> None:
    text = plugin_doc(
        "url: /p.wasm\nfutureKnob:\n  nested: [1, 2]\n"
        "vmConfig:\n  env:\n    - {name: HOME, valueFrom: HOST}"
    )
    cfg = parse_config(text)
    doc = yaml.safe_load(dump_config(cfg))
    assert doc["spec"]["futureKnob"] == {"nested": [1, 2]}
    # The proxy's own environment is never written into the export.
    assert doc["spec"]["vmConfig"]["env"] == [{"name": "HOME", "valueFrom": "HOST"}]


def test_export_reflects_knob_changes_made_with_dataclasses_replace(
    full: ProxyConfig, tmp_path: Path
) -> None:
    jwt = dataclasses.replace(
        full.plugins[0],
        mode="enforce",
        canary_percent=50.0,
        canary_key="random",
        priority=None,
        phase="AUTHZ",
        fail_strategy="FAIL_OPEN",
    )
    changed = dataclasses.replace(full, plugins=(jwt, *full.plugins[1:]))
    docs = list(yaml.safe_load_all(dump_config(changed)))
    ann = docs[1]["metadata"]["annotations"]
    assert ann["wasmdesk.dev/canary-percent"] == "50"
    assert "wasmdesk.dev/mode" not in ann  # back to the default: omitted
    assert "wasmdesk.dev/canary-key" not in ann
    assert ann["wasmdesk.dev/vm-id"] == "shared-auth"  # untouched knobs stay
    assert "priority" not in docs[1]["spec"]
    assert docs[1]["spec"]["phase"] == "AUTHZ"
    assert docs[1]["spec"]["failStrategy"] == "FAIL_OPEN"
    assert parse_config(dump_config(changed), base_dir=tmp_path) == changed


def test_export_reflects_proxy_changes(full: ProxyConfig, tmp_path: Path) -> None:
    changed = dataclasses.replace(
        full,
        listen_port=9000,
        clusters=(*full.clusters, ClusterConfig("extra", "http://10.0.0.1:81", 0.5)),
        default_cluster="extra",
    )
    doc = next(yaml.safe_load_all(dump_config(changed)))
    assert doc["spec"]["listen"] == "0.0.0.0:9000"
    assert doc["spec"]["clusters"][-1] == {
        "name": "extra",
        "url": "http://10.0.0.1:81",
        "timeout": "500ms",
    }
    assert doc["spec"]["clusters"][0]["timeout"] == "250ms"  # unchanged spelling kept
    assert doc["spec"]["defaultCluster"] == "extra"
    assert parse_config(dump_config(changed), base_dir=tmp_path) == changed


def test_export_without_proxy_document_adds_one_only_when_needed() -> None:
    cfg = parse_config(plugin_doc())
    assert "kind: Proxy" not in dump_config(cfg)
    moved = dataclasses.replace(cfg, admin_port=9999)
    text = dump_config(moved)
    first = next(yaml.safe_load_all(text))
    assert first == {
        "apiVersion": "wasmdesk.dev/v1alpha1",
        "kind": "Proxy",
        "spec": {"admin": "127.0.0.1:9999"},
    }
    assert parse_config(text) == moved


def test_export_keeps_the_proxy_document_where_it_was() -> None:
    text = (
        plugin_doc(name="a")
        + "---\n"
        + proxy_doc("listen: 127.0.0.1:1")
        + "---\n"
        + plugin_doc(name="b")
    )
    kinds = [
        d["kind"] + d.get("metadata", {}).get("name", "")
        for d in yaml.safe_load_all(dump_config(parse_config(text)))
    ]
    assert kinds == ["WasmPlugina", "Proxy", "WasmPluginb"]


# -- programmatic plugins ----------------------------------------------------------------------


def test_new_plugin_document_omits_defaults(tmp_path: Path) -> None:
    p = new_plugin(
        "added", "plugins/added.wasm", base_dir=tmp_path, plugin_config={"k": "v"}, priority=3
    )
    assert p.location == str(tmp_path / "plugins" / "added.wasm")
    assert p.plugin_config_json == b'{"k":"v"}'
    assert plugin_to_document(p) == {
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": {"name": "added"},
        "spec": {"url": "plugins/added.wasm", "pluginConfig": {"k": "v"}, "priority": 3},
    }
    bare = PluginSpec(name="bare", url="/bare.wasm")
    assert plugin_to_document(bare) == {
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": {"name": "bare"},
        "spec": {"url": "/bare.wasm"},
    }


def test_new_plugin_with_every_knob_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WD_NEW_HOST", "h")
    p = new_plugin(
        "full",
        "https://example.com/full.wasm",
        namespace="team",
        base_dir=tmp_path,
        sha256=SHA_A,
        plugin_name="root",
        phase="AUTHZ",
        fail_strategy="FAIL_RELOAD",
        env=[EnvVar("A", "INLINE", "1"), ("WD_NEW_HOST", "HOST")],
        type="NETWORK",
        match=[("SERVER", [80])],
        image_pull_policy="Always",
        selector={"matchLabels": {"app": "x"}},
        mode="log-only",
        canary_percent=33.3,
        canary_key="header:X-Id",
        vm_id="vm1",
        callback_timeout_ms=1500.0,
        memory_limit_bytes=128 * 1024 * 1024,
    )
    assert p.vm_env == (("A", "1"), ("WD_NEW_HOST", "h"))
    assert p.canary_key == "header:x-id"
    assert p.match == (TrafficSelector("SERVER", (80,)),)
    cfg = ProxyConfig(plugins=(p,))
    assert parse_config(dump_config(cfg), base_dir=tmp_path) == cfg
    ann = yaml.safe_load(dump_config(cfg))["metadata"]["annotations"]
    assert ann == {
        "wasmdesk.dev/mode": "log-only",
        "wasmdesk.dev/canary-percent": "33.3",
        "wasmdesk.dev/canary-key": "header:X-Id",  # as given; it means header:x-id
        "wasmdesk.dev/vm-id": "vm1",
        "wasmdesk.dev/callback-timeout": "1500ms",
        "wasmdesk.dev/memory-limit": "128Mi",
    }


def test_new_plugin_validates() -> None:
    with pytest.raises(ConfigError, match=r"spec\.phase: expected one of"):
        new_plugin("x", "/x.wasm", phase="LATER")
    with pytest.raises(ConfigError, match=r"metadata\.name"):
        new_plugin("Not Valid", "/x.wasm")
    with pytest.raises(TypeError, match="unknown PluginSpec field"):
        new_plugin("x", "/x.wasm", colour="blue")


def test_with_changes_keeps_raw_and_derived_fields_in_step(
    full: ProxyConfig, tmp_path: Path
) -> None:
    jwt = full.plugins[0]
    changed = with_changes(
        jwt,
        plugin_config={"issuer": "https://other"},
        priority=5,
        url="other/jwt.wasm",
        sha256="",
        vm_env=[("ONLY", "this")],
    )
    assert changed.plugin_config_json == b'{"issuer":"https://other"}'
    assert changed.location == str(tmp_path / "other" / "jwt.wasm")
    assert changed.env == (EnvVar("ONLY", "INLINE", "this"),)
    assert changed.vm_env == (("ONLY", "this"),)
    assert changed.line == jwt.line
    assert changed.raw["spec"]["pluginConfig"] == {"issuer": "https://other"}
    assert changed.raw["spec"]["priority"] == 5
    assert "sha256" not in changed.raw["spec"]
    assert changed.raw["metadata"]["labels"] == {"team": "security"}  # still preserved
    assert jwt.raw["spec"]["priority"] == 1000  # the original is untouched
    cfg = dataclasses.replace(full, plugins=(changed, *full.plugins[1:]))
    assert parse_config(dump_config(cfg), base_dir=tmp_path) == cfg


def test_with_changes_accepts_plugin_config_json_and_rejects_bad_values(full: ProxyConfig) -> None:
    p = with_changes(full.plugins[1], plugin_config_json=b'{"b":2,"a":1}')
    assert p.plugin_config == {"b": 2, "a": 1}
    assert p.plugin_config_json == b'{"a":1,"b":2}'
    assert with_changes(p, plugin_config_json=b"").plugin_config_json == b""
    with pytest.raises(ConfigError) as info:
        with_changes(p, canary_percent=150.0)
    assert info.value.errors[0].path == "metadata.annotations['wasmdesk.dev/canary-percent']"
    with pytest.raises(ConfigError, match=r"spec\.failStrategy"):
        with_changes(p, fail_strategy="MAYBE")


def test_spec_fields_the_plugin_manager_reads(full: ProxyConfig) -> None:
    # host.proxy.plugins / server read these; keep them stable.
    p = full.plugins[0]
    for name in (
        "name",
        "url",
        "location",
        "location_kind",
        "sha256",
        "plugin_name",
        "plugin_config_json",
        "phase",
        "priority",
        "fail_strategy",
        "vm_env",
        "mode",
        "canary_percent",
        "canary_key",
        "vm_id",
        "callback_timeout_ms",
        "memory_limit_bytes",
        "raw",
        "line",
    ):
        assert hasattr(p, name), name
    assert isinstance(p.plugin_config_json, bytes)
    assert hash(p) == hash(dataclasses.replace(p))  # specs are hashable despite dict fields
    assert os.path.isabs(p.location)


def test_export_keeps_the_plugin_tuple_order() -> None:
    cfg = parse_config(
        plugin_doc(name="a")
        + "---\n"
        + proxy_doc("listen: 127.0.0.1:1")
        + "---\n"
        + plugin_doc(name="b")
    )
    swapped = dataclasses.replace(cfg, plugins=cfg.plugins[::-1])
    names = [
        d.get("metadata", {}).get("name", "proxy") for d in yaml.safe_load_all(dump_config(swapped))
    ]
    # The Proxy document goes before the first plugin that followed it in the file.
    assert names == ["proxy", "b", "a"]
    assert [p.name for p in parse_config(dump_config(swapped)).plugins] == ["b", "a"]


@pytest.mark.parametrize("seconds", [0.1, 0.3, 0.001, 1.5, 60.0, 7200.0, 0.30000000000000004])
def test_changed_timeouts_read_back_exactly(seconds: float) -> None:
    cfg = ProxyConfig(clusters=(ClusterConfig("c", "http://c:1", seconds, seconds),))
    back = parse_config(dump_config(cfg))
    assert back.clusters[0].timeout_s == seconds
    assert back.clusters[0].connect_timeout_s == seconds
    p = new_plugin("t", "/t.wasm", callback_timeout_ms=seconds * 1000)
    assert parse_config(dump_config(ProxyConfig(plugins=(p,)))).plugins[0] == p


def test_spec_does_not_share_objects_with_raw() -> None:
    p = parse_config(
        plugin_doc("url: /p.wasm\npluginConfig: {a: {b: 1}}\nselector: {matchLabels: {x: y}}")
    ).plugins[0]
    assert p.plugin_config == p.raw["spec"]["pluginConfig"]
    assert p.plugin_config is not p.raw["spec"]["pluginConfig"]
    assert p.selector is not p.raw["spec"]["selector"]


def test_non_mapping_metadata_is_one_error() -> None:
    text = plugin_doc().replace("metadata:\n  name: p\n", "metadata: [p]\n")
    err = single_error(text)
    assert (err.path, err.line) == ("metadata", line_of(text, "metadata"))
    assert "expected a mapping, got a list" in err.message
