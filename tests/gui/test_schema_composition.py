"""Forms and validation from any JSON Schema (issue 12 item 10): ``jsonschema`` Draft
2020-12 behind friendly messages, and widgets for ``$ref``/``$defs``, ``oneOf``/
``anyOf``, ``if``/``then`` and arrays of objects; the YAML editor no longer says
"Syntax OK" to a value the schema forbids."""

from __future__ import annotations

from gui.config_form import ConfigForm
from gui.json_schema import check_schema, field_kind, form_problem, resolve_refs, validate
from gui.plugin_panel import PluginDetailsPanel
from host.proxy.snapshots import PluginSnapshot

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["routes"],
    "$defs": {
        "header": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9-]+$"},
                "value": {"type": "string"},
            },
            "additionalProperties": False,
        },
    },
    "properties": {
        "routes": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["prefix"],
                "properties": {
                    "prefix": {"type": "string", "minLength": 1},
                    "add": {"$ref": "#/$defs/header"},
                },
            },
        },
        "backend": {
            "oneOf": [
                {
                    "title": "Cluster",
                    "type": "object",
                    "required": ["cluster"],
                    "properties": {"cluster": {"type": "string"}},
                    "additionalProperties": False,
                },
                {
                    "title": "Direct URL",
                    "type": "object",
                    "required": ["url"],
                    "properties": {"url": {"type": "string", "pattern": "^https?://"}},
                    "additionalProperties": False,
                },
            ]
        },
        "limit": {"anyOf": [{"type": "integer", "minimum": 1}, {"const": "unlimited"}]},
        "mode": {"enum": ["allow", "deny"]},
        "deny_status": {"type": "integer"},
    },
    "if": {"properties": {"mode": {"const": "deny"}}, "required": ["mode"]},
    "then": {"required": ["deny_status"]},
}


def _messages(value: object) -> list[str]:
    return [str(i) for i in validate(SCHEMA, value)]


def test_jsonschema_enforces_refs_compositions_and_conditionals_in_plain_words() -> None:
    assert check_schema(SCHEMA) == []
    assert form_problem(SCHEMA) is None
    ok = {"routes": [{"prefix": "/a", "add": {"name": "x-a"}}], "limit": "unlimited"}
    assert _messages(ok) == []
    assert _messages(
        {
            "routes": [{"prefix": "", "add": {"name": "Bad Name"}}],
            "backend": {"url": "ftp://x"},
            "limit": 0,
            "mode": "deny",
        }
    ) == [
        "routes[0].prefix: must not be empty",
        "routes[0].add.name: must not contain spaces (pattern ^[a-z0-9-]+$)",
        "backend: matches none of the choices (closest: backend.url: does not match the "
        "pattern ^https?://)",
        "limit: matches none of the choices (closest: must be at least 1)",
        "deny_status: required",  # if mode is deny, then deny_status
    ]
    assert _messages({"routes": []}) == ["routes: at least 1 item(s)"]
    assert _messages({}) == ["routes: required"]


def test_refs_are_inlined_for_the_form_and_every_property_gets_a_widget() -> None:
    layout = resolve_refs(SCHEMA)
    route = layout["properties"]["routes"]["items"]
    assert route["properties"]["add"]["properties"]["name"]["type"] == "string"
    kinds = {n: field_kind(s) for n, s in layout["properties"].items()}
    assert kinds == {
        "routes": "object-list",
        "backend": "choice",
        "limit": "choice",
        "mode": "enum",
        "deny_status": "integer",
    }
    recursive = {
        "$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}}},
        "type": "object",
        "properties": {"root": {"$ref": "#/$defs/n"}},
    }
    inner = resolve_refs(recursive)["properties"]["root"]["properties"]["next"]
    assert field_kind(inner) == "json"  # a recursive reference: edited as JSON text


def test_form_edits_arrays_of_objects_and_alternatives(qtbot) -> None:
    form = ConfigForm(SCHEMA)
    qtbot.addWidget(form)
    assert [str(i) for i in form.issues()] == ["routes: required"]
    routes = form.field("routes")
    item = routes.add_item()
    item.field("prefix").line.setText("/api")
    item.field("prefix").edited()
    item.field("add.name").line.setText("x team")
    item.field("add.name").edited()
    assert form.value() == {"routes": [{"prefix": "/api", "add": {"name": "x team"}}]}
    # the item's own form shows the error; the outer form knows it is invalid
    assert item.error_text("add.name").startswith("must not contain spaces")
    assert [str(i) for i in form.issues()] == [
        "routes[0].add.name: must not contain spaces (pattern ^[a-z0-9-]+$)"
    ]
    item.field("add.name").line.setText("x-team")
    item.field("add.name").edited()
    assert form.issues() == []
    second = routes.add_item({"prefix": "/b"})
    assert len(routes.forms) == 2 and second.value() == {"prefix": "/b"}
    routes.remove_item(0)
    assert form.value() == {"routes": [{"prefix": "/b"}]}
    # oneOf: pick the alternative, fill in its form
    backend = form.field("backend")
    assert [backend.combo.itemText(i) for i in range(backend.combo.count())] == [
        "Cluster",
        "Direct URL",
    ]
    backend.choose(1)
    url_form = backend.editors[1]
    url_form.field("url").line.setText("ftp://nope")
    url_form.field("url").edited()
    assert form.error_text("backend").startswith("matches none of the choices")
    url_form.field("url").line.setText("https://up.example")
    url_form.field("url").edited()
    assert form.value()["backend"] == {"url": "https://up.example"}
    assert form.issues() == []
    # anyOf of scalars: the value as JSON (or the const)
    limit = form.field("limit")
    limit.choose(0)
    limit.editors[0].setText("5")
    limit.edited()
    assert form.value()["limit"] == 5 and form.issues() == []
    # a loaded value picks the alternative it fits
    form.set_value(
        {"routes": [{"prefix": "/x"}], "backend": {"cluster": "c1"}, "limit": "unlimited"}
    )
    assert form.field("backend").combo.currentIndex() == 0
    assert form.field("limit").combo.currentIndex() == 1
    assert form.value()["backend"] == {"cluster": "c1"} and form.issues() == []
    # if/then: mode deny makes deny_status required
    form.field("mode").combo.setCurrentIndex(2)
    form.field("mode").edited()
    assert form.error_text("deny_status") == "required"


def test_the_yaml_editor_checks_the_schema_too(qtbot) -> None:
    panel = PluginDetailsPanel()
    qtbot.addWidget(panel)
    panel.show_plugin(PluginSnapshot("p"), None, SCHEMA, "")
    assert panel.form is not None  # composition no longer disables the form
    panel.config_tabs.setCurrentIndex(1)
    panel.config_edit.setPlainText("routes: []\nbackend: {url: 'ftp://x'}\n")
    qtbot.waitUntil(lambda: "routes: at least 1 item(s)" in panel.config_status_text())
    assert "backend: matches none of the choices" in panel.config_status_text()
    assert not panel.config_apply_button.isEnabled()
    panel.config_edit.setPlainText("routes: [{prefix: /a}]\nbackend: {cluster: c}\n")
    qtbot.waitUntil(lambda: panel.config_status.text() == "Valid")
