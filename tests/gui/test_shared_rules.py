"""The app checks input with the engine's validators (host.proxy.config), not its own copies:
what the panels and the URL dialog accept is what the config accepts."""

from __future__ import annotations

import pytest

from gui.plugin_panel import PluginDetailsPanel
from gui.url_dialog import check_module_url, check_sha256
from host.proxy.config import canary_key, http_url_error, is_env_name, is_sha256
from tests.gui.fakes import plugin_snapshot


@pytest.mark.parametrize("header", ["x-user-id", ":authority", "x user", "", "x\u00e9", "a/b"])
def test_canary_header_is_accepted_exactly_when_the_config_accepts_it(qtbot, header) -> None:
    # ":authority" was refused by the panel's own copy of the rule, though the config
    # (and so the engine) takes pseudo-headers as canary keys.
    panel = PluginDetailsPanel()
    qtbot.addWidget(panel)
    panel.show_plugin(plugin_snapshot("a", canary_key="header:x"), None)
    panel.canary_header_edit.setText(header)
    want = canary_key(f"header:{header}")
    assert panel.canary_key() == want
    assert panel.canary_key_error.isHidden() == (want is not None)


@pytest.mark.parametrize("name", ["GREETING", "_x1", "1BAD", "A-B", "A" * 256, "A" * 257])
def test_env_names_are_checked_with_the_config_rule(qtbot, name) -> None:
    # A 257-character name passed the panel's copy of the rule and failed in the config.
    panel = PluginDetailsPanel()
    qtbot.addWidget(panel)
    panel.show_plugin(plugin_snapshot("a"), None)
    panel.env_add_button.click()
    panel.env_table.item(0, 0).setText(name)
    problems = panel.env_problems()
    assert (not problems) == is_env_name(name), problems


@pytest.mark.parametrize(
    "url",
    ["https://h/p.wasm", "http:///p.wasm", "http://h:0/p", "http://h:99999/p", "http://[::1/p"],
)
def test_url_dialog_takes_the_urls_the_config_takes(url) -> None:
    assert (check_module_url(url) == "") == (http_url_error(url) is None)


def test_sha256_check_is_the_config_rule_on_lower_cased_text() -> None:
    digest = "0123456789abcdef" * 4
    assert check_sha256(digest) == "" and is_sha256(digest)
    assert check_sha256(digest.upper()) == ""  # the dialog lower-cases what was typed
    assert "64 hexadecimal digits" in check_sha256(digest[:-1] + "g")
