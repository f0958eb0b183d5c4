"""Configuration schemas: the validator, the demo plugins' schemas against the plugins
themselves, and the generated form (real widgets, offscreen)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gui.config_form import ConfigForm
from gui.json_schema import (
    SchemaError,
    check_schema,
    form_problem,
    load_schema,
    schema_path_for,
    validate,
)
from gui.plugin_panel import PluginDetailsPanel
from host.proxy.errors import ErrorKind, PluginError
from host.resources import demo_plugin
from host.runner import TryRequest, run_try
from tests.gui.fakes import plugin_snapshot

DEMOS = ("add_header", "auth_token", "path_counter", "body_rewrite")


def _schema(name: str) -> dict:
    return load_schema(schema_path_for(demo_plugin(name)))


def _messages(schema: dict, value: object) -> list[str]:
    return [str(i) for i in validate(schema, value)]


# -- the validator -------------------------------------------------------------------------------


def test_validator_reports_each_problem_at_its_field() -> None:
    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "pattern": "^[a-z-]+$"},
            "level": {"enum": ["info", "warn"]},
            "limit": {"type": "integer", "minimum": 1, "maximum": 10},
            "ratio": {"type": "number", "exclusiveMaximum": 1},
            "on": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
            "nested": {
                "type": "object",
                "properties": {"key": {"type": "string", "maxLength": 3}},
            },
        },
    }
    assert validate(schema, {"name": "ok"}) == []
    got = _messages(
        schema,
        {
            "level": "debug",
            "limit": 11,
            "ratio": 1,
            "on": 1,
            "tags": ["a", 2, "c"],
            "nested": {"key": "long"},
            "extra": True,
        },
    )
    assert got == [
        "name: required",
        'level: must be one of "info", "warn"',
        "limit: must be at most 10",
        "ratio: must be less than 1",
        "on: expected a boolean, got an integer",
        "tags: at most 2 item(s)",
        "tags[1]: expected a string, got an integer",
        "nested.key: at most 3 characters",
        "extra: unknown field (the schema knows: name, level, limit, ratio, on, tags, nested)",
    ]
    assert _messages(schema, {"name": "Bad Name"}) == [
        "name: must not contain spaces (pattern ^[a-z-]+$)"
    ]
    assert _messages(schema, {"name": "x", "limit": True}) == [
        "limit: expected an integer, got a boolean"
    ]
    assert validate(schema, {"name": "x", "limit": 2.0}) == []  # JSON: 2.0 is an integer


def test_schemas_that_cannot_be_used_are_reported(tmp_path: Path) -> None:
    # every Draft 2020-12 keyword is enforced now (jsonschema); what is left to report
    # is a schema that does not resolve, is not a schema, or has a pattern RE2 refuses
    assert check_schema({"type": "object", "$ref": "#/x"}) == [
        "(root): $ref '#/x' does not resolve"
    ]
    assert check_schema({"$ref": "https://example.com/s.json"}) == [
        "(root): $ref 'https://example.com/s.json' is not local (nothing is fetched)"
    ]
    assert check_schema({"type": 3})[0].startswith("(root).type: not a valid JSON Schema")
    assert check_schema({"properties": {"a": {"pattern": "("}}})[0].startswith(
        "a: pattern '(' does not compile"
    )
    assert form_problem({"type": "array"}) == "the configuration is not described as an object"
    # lists of objects, compositions and anything else have a widget now
    assert (
        form_problem(
            {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "object"}}}}
        )
        is None
    )
    bad = tmp_path / "x.schema.json"
    bad.write_text('{"type": "object",\n "properties": }')
    with pytest.raises(SchemaError, match=r"not valid JSON \(line 2, column 16"):
        load_schema(bad)
    assert schema_path_for("/a/b/add_header.wasm") == Path("/a/b/add_header.schema.json")


@pytest.mark.parametrize("name", DEMOS)
def test_demo_schema_agrees_with_its_plugin(name: str) -> None:
    """Every example and the defaults validate and are accepted by the plugin's own
    proxy_on_configure; configurations the schema rejects, the plugin rejects too."""
    schema = _schema(name)
    assert form_problem(schema) is None
    wasm = demo_plugin(name).read_bytes()

    def plugin_accepts(config: dict) -> bool:
        req = TryRequest(root_id=name, configuration=json.dumps(config).encode())
        return run_try(wasm, req).failure is None

    defaults = {k: v["default"] for k, v in schema["properties"].items() if "default" in v}
    for example in [*schema.get("examples", []), defaults]:
        assert validate(schema, example) == [], example
        assert plugin_accepts(example), example
    rejected = [{"no_such_field": 1}]
    first = next(iter(schema["properties"]))
    wrong_type = {"string": 5, "integer": "five", "object": "x", "array": "x"}
    rejected.append({first: wrong_type[schema["properties"][first]["type"]]})
    for config in rejected:
        assert validate(schema, config), config
        assert not plugin_accepts(config), config


# -- the form ------------------------------------------------------------------------------------


def test_form_shows_types_defaults_and_inline_errors(qtbot) -> None:
    form = ConfigForm(_schema("auth_token"))
    qtbot.addWidget(form)
    assert form.value() == {} and form.issues() == []
    deny = form.field("deny_status")
    assert deny.line.placeholderText() == "default: 403"
    deny.line.setText("abc")
    deny.line.textEdited.emit("abc")
    assert form.error_text("deny_status") == "expected an integer, got 'abc'"
    deny.line.setText("700")
    deny.line.textEdited.emit("700")
    assert form.error_text("deny_status") == "must be at most 599"
    deny.line.setText("401")
    deny.line.textEdited.emit("401")
    assert form.error_text("deny_status") == "" and form.value() == {"deny_status": 401}
    # a list of strings: unset shows the default; the first edit copies it in
    paths = form.field("allow_paths")
    assert paths.items() == ["/public"] and not paths.present
    paths.add_button.click()
    paths.list.item(1).setText("/healthz")
    assert form.value()["allow_paths"] == ["/public", "/healthz"]
    paths.reset_button.click()
    assert "allow_paths" not in form.value()
    # an empty string is a value once typed (an empty token), unlike an empty number
    token = form.field("token")
    token.line.setText("")
    token.line.textEdited.emit("")
    assert form.value()["token"] == ""
    assert token.line.placeholderText() == "(empty)"


def test_form_round_trips_nested_objects_and_flags_unknown_fields(qtbot) -> None:
    form = ConfigForm(_schema("add_header"))
    qtbot.addWidget(form)
    form.set_value({"request_header": {"name": "x-team"}, "surprise": 1})
    assert form.value() == {"request_header": {"name": "x-team"}, "surprise": 1}
    assert form.field("request_header.value").line.placeholderText() == "default: hello"
    assert "surprise: unknown field" in form.banner.text()
    assert "YAML / JSON tab" in form.banner.text()
    name = form.field("request_header.name")
    name.line.setText("x team")
    name.line.textEdited.emit("x team")
    assert form.error_text("request_header.name").startswith("must not contain spaces")


def test_form_enum_boolean_and_required_fields(qtbot) -> None:
    schema = {
        "type": "object",
        "required": ["mode"],
        "properties": {
            "mode": {"enum": ["fast", "safe"], "title": "Mode"},
            "verbose": {"type": "boolean", "default": False},
            "ratio": {"type": "number", "minimum": 0},
        },
    }
    form = ConfigForm(schema)
    qtbot.addWidget(form)
    assert form.error_text("mode") == "required"
    mode = form.field("mode")
    assert mode.combo.itemText(0) == "(choose one)"
    mode.combo.setCurrentIndex(2)
    mode.combo.activated.emit(2)
    assert form.value() == {"mode": "safe"} and form.issues() == []
    verbose = form.field("verbose")
    verbose.check.click()
    assert form.value() == {"mode": "safe", "verbose": True}
    ratio = form.field("ratio")
    ratio.line.setText("-0.5")
    ratio.line.textEdited.emit("-0.5")
    assert form.error_text("ratio") == "must be at least 0"
    ratio.line.setText("")
    ratio.line.textEdited.emit("")  # an emptied number is unset again
    assert form.value() == {"mode": "safe", "verbose": True}


def test_details_panel_uses_the_form_and_only_applies_valid_configs(qtbot) -> None:
    panel = PluginDetailsPanel()
    qtbot.addWidget(panel)
    schema = _schema("body_rewrite")
    panel.show_plugin(plugin_snapshot("body-rewrite"), None, schema)
    assert panel.form is not None and panel.form_active()
    edited: list = []
    panel.config_edited.connect(lambda n, v: edited.append((n, v)))
    f = panel.form.field("from")
    f.line.setText("")
    f.line.textEdited.emit("")
    assert "from: must not be empty" in panel.config_status_text()
    assert not panel.config_apply_button.isEnabled()
    f.line.setText("http://")
    f.line.textEdited.emit("http://")
    assert panel.config_status.text() == "Valid"
    panel.config_apply_button.click()
    assert edited == [("body-rewrite", {"from": "http://"})]
    # the YAML tab shows the form's value, and is held to the same schema
    panel.config_tabs.setCurrentIndex(1)
    assert panel.config_edit.toPlainText().strip() == "from: http://"
    panel.config_edit.setPlainText("from: x\nto: 3\n")
    assert "to: expected a string, got an integer" in panel.config_status_text()
    panel.config_edit.setPlainText("from: x\nto: y\n")
    panel.config_tabs.setCurrentIndex(0)
    assert panel.form.value() == {"from": "x", "to": "y"}


def test_details_panel_without_a_schema_says_why_and_offers_yaml(qtbot) -> None:
    panel = PluginDetailsPanel()
    qtbot.addWidget(panel)
    note = "No x.schema.json beside the module"
    panel.show_plugin(plugin_snapshot("x"), None, None, note)
    assert panel.form is None
    assert not panel.config_tabs.isTabEnabled(0)
    assert panel.config_tabs.currentIndex() == 1
    assert panel.form_note.text() == note


def test_rejected_config_shows_the_plugins_own_log_lines(qtbot) -> None:
    panel = PluginDetailsPanel()
    qtbot.addWidget(panel)
    panel.show_plugin(plugin_snapshot("add-header"), None)
    log = (
        "add_header: request_header.name: 'bad name' is not a valid header name",
        "add_header: configuration rejected",
    )
    err = PluginError(
        ErrorKind.CONFIGURE,
        "add-header",
        "proxy_on_configure returned false",
        log=log,
        state="CONFIGURE_FAILED",
        reason="configure_failed",
    )
    other = PluginError(ErrorKind.FETCH, "other", "cannot read other.wasm")
    panel.set_config_result([other, err])
    lines = [x.strip() for x in panel.config_status_text().splitlines() if x.strip()]
    assert lines == [
        "Rejected; the running version is kept.",
        "configure failed: proxy_on_configure returned false (CONFIGURE_FAILED, configure_failed)",
        "The plugin's log:",
        *log,
    ]  # from the error's fields: its own kind, message and log lines; not other's error


def test_a_plugins_schema_pattern_cannot_hang_the_form() -> None:
    """A schema ``pattern`` comes with the plugin; Python's re would backtrack for
    minutes on this one while the user types. It runs on RE2 (linear time)."""
    import time

    schema = {"type": "object", "properties": {"name": {"type": "string", "pattern": "^(a+)+$"}}}
    assert check_schema(schema) == []
    t0 = time.monotonic()
    issues = validate(schema, {"name": "a" * 40 + "!"})
    assert time.monotonic() - t0 < 0.5
    assert [i.path for i in issues] == [("name",)]
    assert validate(schema, {"name": "aaaa"}) == []
    # lookaround is not RE2: reported as a schema problem, not run
    assert check_schema({"properties": {"a": {"pattern": "(?=x)"}}})[0].startswith(
        "a: pattern '(?=x)' does not compile"
    )
