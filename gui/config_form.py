"""``ConfigForm``: a plugin-configuration form generated from the plugin's JSON Schema.

One row per property: a line edit for strings and numbers, a drop-down for enums, a
check box for booleans, an editable list for lists of strings, a group for nested
objects, a list of sub-forms with Add/Remove for lists of objects, a drop-down of the
alternatives with the chosen one's form for ``oneOf``/``anyOf``, and JSON text for
anything else. Local ``$ref``/``$defs`` are resolved and ``allOf``/``if``/``then``
fields shown; validation (``jsonschema``, Draft 2020-12) runs on the schema as written.
Labels come from ``title`` (else the property name; ``*`` marks a required field), the
help text from ``description``, and an unset field shows its ``default``.

A field is *set* once the user edits it or when the loaded configuration has it; only
set fields go into the configuration, so a plugin keeps applying its own defaults to
the rest. The ↺ button beside a set field unsets it again. Every edit re-validates the
whole value (``gui.json_schema``) and shows each problem under its field; problems
that belong to no field (an unknown key) go in the banner at the top.

Takes a schema and a value; emits ``value_edited``. Knows nothing of plugins or engines.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from gui.json_schema import (
    UNKNOWN_FIELD_KEYWORDS,
    SchemaIssue,
    alternative_label,
    alternatives,
    field_kind,
    required_of,
    resolve_refs,
    validate,
)

__all__ = ["ConfigForm"]

_ERROR_STYLE = "color:#f85149"
_HELP_STYLE = "color:#8b949e"
PathT = tuple[str | int, ...]


def _show(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


class _Field:
    """One leaf property: its editor, its set/unset state and its error label."""

    nested = False  # True: a sub-form shows the errors inside the value itself

    def __init__(
        self, form: ConfigForm, path: PathT, schema: Mapping[str, Any], required: bool
    ) -> None:
        self.form = form
        self.path = path
        self.schema = schema
        self.required = required
        self.default = schema.get("default")
        self.present = False
        self.parse_error = ""
        self.error_label = QLabel("")
        self.error_label.setStyleSheet(_ERROR_STYLE)
        self.error_label.setWordWrap(True)
        self.error_label.setObjectName("field_error")
        self.error_label.hide()
        self.reset_button = QToolButton()
        self.reset_button.setText("↺")
        self.reset_button.setToolTip("Unset: the plugin uses its default")
        self.reset_button.setAutoRaise(True)
        self.reset_button.clicked.connect(self._on_reset_button_clicked)
        self.editor: QWidget = QWidget()

    @property
    def key(self) -> str:
        return ".".join(str(p) for p in self.path)

    # what subclasses implement
    def _show_value(self, value: Any) -> None:
        raise NotImplementedError

    def _read(self) -> Any:
        """The editor's value; sets ``parse_error`` when the text is not of the type."""
        raise NotImplementedError

    # shared behaviour
    def set(self, present: bool, value: Any) -> None:
        self.present = present
        self.form._loading = True
        try:
            self._show_value(value if present else self.default)
        finally:
            self.form._loading = False
        self._update_chrome()

    def get(self) -> tuple[bool, Any]:
        self.parse_error = ""
        if not self.present:
            return False, None
        return True, self._read()

    def edited(self) -> None:
        if self.form._loading:
            return
        self.present = True
        self._update_chrome()
        self.form._on_field_edited()

    def _on_reset_button_clicked(self) -> None:
        self.set(False, None)
        self.form._on_field_edited()

    def _update_chrome(self) -> None:
        self.reset_button.setVisible(self.present and not self.required)

    def show_error(self, text: str) -> None:
        self.error_label.setText(text)
        self.error_label.setVisible(bool(text))


class _TextField(_Field):
    """Strings, integers and numbers: one line of text."""

    def __init__(self, *a: Any, kind: str) -> None:
        super().__init__(*a)
        self.kind = kind
        self.line = QLineEdit()
        self.line.setClearButtonEnabled(kind == "string")
        self.line.textEdited.connect(self._on_line_text_edited)
        self.editor = self.line

    def _placeholder(self) -> str:
        if self.present:
            return "(empty)" if self.kind == "string" else ""
        if self.default is not None:
            return f"default: {_show(self.default)}"
        return "required" if self.required else "not set"

    def _show_value(self, value: Any) -> None:
        self.line.setText("" if value is None or not self.present else _show(value))

    def _update_chrome(self) -> None:
        super()._update_chrome()
        self.line.setPlaceholderText(self._placeholder())

    def _on_line_text_edited(self, text: str) -> None:
        if self.kind != "string" and not text.strip():
            # an empty number is no number: the field goes back to its default
            self.set(False, None)
            self.form._on_field_edited()
            return
        self.edited()

    def _read(self) -> Any:
        text = self.line.text()
        if self.kind == "string":
            return text
        t = text.strip()
        try:
            if self.kind == "integer":
                return int(t, 10)
            f = float(t)
        except ValueError:
            word = "an integer" if self.kind == "integer" else "a number"
            self.parse_error = f"expected {word}, got {t!r}"
            return t
        if not math.isfinite(f):
            self.parse_error = f"expected a finite number, got {t!r}"
            return t
        return int(f) if f.is_integer() and "." not in t and "e" not in t.lower() else f


class _EnumField(_Field):
    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.values = list(self.schema.get("enum") or [])
        self.combo = QComboBox()
        self.combo.addItem("")  # index 0: not set
        for v in self.values:
            self.combo.addItem(_show(v))
        self.combo.activated.connect(self._on_combo_activated)
        self.editor = self.combo

    def _show_value(self, value: Any) -> None:
        i = next((k for k, v in enumerate(self.values) if v == value and self.present), -1)
        self.combo.setCurrentIndex(i + 1)

    def _update_chrome(self) -> None:
        super()._update_chrome()
        if self.default is not None:
            first = f"(default: {_show(self.default)})"
        else:
            first = "(choose one)" if self.required else "(not set)"
        self.combo.setItemText(0, first)

    def _on_combo_activated(self, index: int) -> None:
        if index == 0:
            self.set(False, None)
            self.form._on_field_edited()
        else:
            self.edited()

    def _read(self) -> Any:
        i = self.combo.currentIndex()
        return self.values[i - 1] if i > 0 else None

    def get(self) -> tuple[bool, Any]:
        present, value = super().get()
        return (present and self.combo.currentIndex() > 0), value


class _BoolField(_Field):
    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.check = QCheckBox()
        self.check.clicked.connect(lambda _checked: self.edited())
        self.editor = self.check

    def _show_value(self, value: Any) -> None:
        self.check.setChecked(bool(value))

    def _update_chrome(self) -> None:
        super()._update_chrome()
        self.check.setText("" if self.present else "(default)")

    def _read(self) -> Any:
        return self.check.isChecked()


class _StringListField(_Field):
    """A list of strings: items edited in place, + and − buttons. Unset, it shows the
    default items greyed out; the first edit copies them in."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        box = QWidget()
        lay = QHBoxLayout(box)
        lay.setContentsMargins(0, 0, 0, 0)
        self.list = QListWidget()
        self.list.setMaximumHeight(96)
        self.list.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked
            | QAbstractItemView.EditTrigger.EditKeyPressed
            | QAbstractItemView.EditTrigger.SelectedClicked
        )
        self.list.itemChanged.connect(self._on_list_item_changed)
        buttons = QVBoxLayout()
        self.add_button = QToolButton()
        self.add_button.setText("+")
        self.add_button.setToolTip("Add an item")
        self.remove_button = QToolButton()
        self.remove_button.setText("−")
        self.remove_button.setToolTip("Remove the selected item")
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        buttons.addStretch(1)
        lay.addWidget(self.list, 1)
        lay.addLayout(buttons)
        self.add_button.clicked.connect(self._on_add_button_clicked)
        self.remove_button.clicked.connect(self._on_remove_button_clicked)
        self.editor = box

    def items(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]

    def _show_value(self, value: Any) -> None:
        self.list.clear()
        for v in value if isinstance(value, list) else []:
            item = QListWidgetItem(_show(v))
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
            if not self.present:
                f = item.font()
                f.setItalic(True)
                item.setFont(f)
                item.setForeground(Qt.GlobalColor.gray)
            self.list.addItem(item)

    def _update_chrome(self) -> None:
        super()._update_chrome()
        self.list.setToolTip("" if self.present else "The default (edit to change it)")

    def _show_set(self, items: list[str]) -> None:
        """Show ``items`` as a set value, without reporting it as an edit."""
        self.present = True
        self.form._loading = True
        try:
            self._show_value(items)
        finally:
            self.form._loading = False

    def _materialise(self) -> None:
        """A default being edited becomes a set value: keep its text, drop the styling."""
        if not self.present:
            self._show_set(self.items())

    def set_items(self, items: list[str]) -> None:
        """Replace the items as a user would (the field becomes set)."""
        self._show_set(items)
        self.edited()

    def _on_list_item_changed(self, _item: QListWidgetItem) -> None:
        if self.form._loading:
            return
        self._materialise()
        self.edited()

    def _on_add_button_clicked(self) -> None:
        self._materialise()
        item = QListWidgetItem("")
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
        self.form._loading = True
        try:
            self.list.addItem(item)
        finally:
            self.form._loading = False
        self.list.setCurrentItem(item)
        self.list.editItem(item)
        self.edited()

    def _on_remove_button_clicked(self) -> None:
        self._materialise()
        row = self.list.currentRow()
        if row < 0:
            row = self.list.count() - 1
        if row >= 0:
            self.form._loading = True
            try:
                self.list.takeItem(row)
            finally:
                self.form._loading = False
        self.edited()

    def _read(self) -> Any:
        return self.items()


class _JsonField(_Field):
    """Anything without a widget of its own: the value as one line of JSON."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.line = QLineEdit()
        self.line.setObjectName("json_field")
        self.line.textEdited.connect(lambda _t: self.edited())
        self.editor = self.line

    def _show_value(self, value: Any) -> None:
        self.line.setText("" if value is None and not self.present else json.dumps(value))

    def _update_chrome(self) -> None:
        super()._update_chrome()
        hint = f"default: {_show(self.default)}" if self.default is not None else "JSON"
        self.line.setPlaceholderText(hint)

    def _read(self) -> Any:
        text = self.line.text().strip()
        try:
            return json.loads(text)
        except ValueError as e:
            self.parse_error = f"not valid JSON: {e}"
            return text


class _ObjectListField(_Field):
    """A list of objects: one sub-form per item, Add and Remove."""

    nested = True

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        items = self.schema.get("items")
        self.item_schema: Mapping[str, Any] = items if isinstance(items, dict) else {}
        self.forms: list[ConfigForm] = []
        box = QWidget()
        self.items_layout = QVBoxLayout(box)
        self.items_layout.setContentsMargins(0, 0, 0, 0)
        self.add_button = QPushButton("Add item")
        self.add_button.setObjectName("add_item")
        self.add_button.clicked.connect(self._on_add_button_clicked)
        self.items_layout.addWidget(self.add_button)
        self.editor = box

    def _show_value(self, value: Any) -> None:
        for f in self.forms:
            holder = f.parentWidget()
            if holder is not None:
                holder.hide()
                holder.deleteLater()
        self.forms = []
        for item in value if isinstance(value, list) else []:
            self._add_form(item if isinstance(item, dict) else {})

    def _add_form(self, value: Mapping[str, Any]) -> ConfigForm:
        holder = QGroupBox(f"Item {len(self.forms) + 1}")
        hl = QVBoxLayout(holder)
        form = ConfigForm(self.item_schema)
        form.set_value(value)
        form.value_edited.connect(self.edited)
        remove = QToolButton()
        remove.setText("Remove item")
        remove.clicked.connect(lambda _c=False, f=form: self.remove_item(self.forms.index(f)))
        hl.addWidget(form)
        hl.addWidget(remove, 0, Qt.AlignmentFlag.AlignRight)
        self.items_layout.insertWidget(self.items_layout.count() - 1, holder)
        self.forms.append(form)
        return form

    def add_item(self, value: Mapping[str, Any] | None = None) -> ConfigForm:
        """Append an item (as Add item does) and return its sub-form."""
        if not self.present:
            current = self.default if isinstance(self.default, list) else []
            self.present = True
            self._show_value(current)
        form = self._add_form(value or {})
        self.edited()
        return form

    def remove_item(self, index: int) -> None:
        form = self.forms.pop(index)
        holder = form.parentWidget()
        if holder is not None:
            holder.hide()
            holder.deleteLater()
        for i, f in enumerate(self.forms):
            box = f.parentWidget()
            if isinstance(box, QGroupBox):
                box.setTitle(f"Item {i + 1}")
        self.present = True
        self.edited()

    def _on_add_button_clicked(self) -> None:
        self.add_item()

    def _read(self) -> Any:
        return [f.value() for f in self.forms]  # each sub-form shows its own errors


class _ChoiceField(_Field):
    """``oneOf``/``anyOf``: pick an alternative, then fill in its form (an object) or
    its value (anything else, as JSON; plain text for a string)."""

    nested = True

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.alts = alternatives(self.schema)
        box = QWidget()
        lay = QVBoxLayout(box)
        lay.setContentsMargins(0, 0, 0, 0)
        self.combo = QComboBox()
        self.combo.setObjectName("choice_combo")
        for i, alt in enumerate(self.alts):
            self.combo.addItem(alternative_label(alt, i))
        self.stack = QStackedWidget()
        self.editors: list[ConfigForm | QLineEdit] = []
        for alt in self.alts:
            if field_kind(alt) == "object":
                form = ConfigForm(alt)
                form.value_edited.connect(self.edited)
                self.editors.append(form)
                self.stack.addWidget(form)
            else:
                line = QLineEdit()
                line.textEdited.connect(lambda _t: self.edited())
                self.editors.append(line)
                self.stack.addWidget(line)
        lay.addWidget(self.combo)
        lay.addWidget(self.stack)
        self.combo.activated.connect(self._on_combo_activated)
        self.editor = box

    def _is_text(self, i: int) -> bool:
        return [t for t in (self.alts[i].get("type"),) if t] == ["string"]

    def choose(self, index: int) -> None:
        """Pick alternative ``index`` (as the drop-down does)."""
        self.combo.setCurrentIndex(index)
        self._on_combo_activated(index)

    def _on_combo_activated(self, index: int) -> None:
        self.stack.setCurrentIndex(index)
        self.edited()

    def _show_value(self, value: Any) -> None:
        i = 0
        if value is not None:
            fits = [k for k, alt in enumerate(self.alts) if not validate(alt, value)]
            i = fits[0] if fits else 0
        self.combo.setCurrentIndex(i)
        self.stack.setCurrentIndex(i)
        ed = self.editors[i]
        if isinstance(ed, ConfigForm):
            ed.set_value(value if isinstance(value, dict) else {})
        elif value is None:
            ed.setText("")
        else:
            ed.setText(value if self._is_text(i) and isinstance(value, str) else json.dumps(value))

    def _read(self) -> Any:
        i = self.combo.currentIndex()
        ed = self.editors[i]
        if isinstance(ed, ConfigForm):
            return ed.value()  # the sub-form shows its own errors
        text = ed.text()
        if self._is_text(i):
            return text
        try:
            return json.loads(text)
        except ValueError:
            return text  # a bare word: validation says what it should be


_LEAVES: dict[str, Callable[..., _Field]] = {
    "string": lambda *a: _TextField(*a, kind="string"),
    "integer": lambda *a: _TextField(*a, kind="integer"),
    "number": lambda *a: _TextField(*a, kind="number"),
    "enum": _EnumField,
    "boolean": _BoolField,
    "string-list": _StringListField,
    "object-list": _ObjectListField,
    "choice": _ChoiceField,
    "json": _JsonField,
}


class _Group:
    """A nested object: its fields, set when any of them is set (or it is required)."""

    def __init__(self, path: PathT, schema: Mapping[str, Any], required: bool) -> None:
        self.path = path
        self.schema = schema
        self.required = required
        self.children: list[_Field | _Group] = []
        self.extra: dict[str, Any] = {}
        self.error_label = QLabel("")
        self.error_label.setStyleSheet(_ERROR_STYLE)
        self.error_label.setWordWrap(True)
        self.error_label.hide()

    def set(self, value: Any) -> None:
        value = value if isinstance(value, dict) else {}
        names = set()
        for child in self.children:
            name = str(child.path[-1])
            names.add(name)
            if isinstance(child, _Group):
                child.set(value.get(name))
            else:
                child.set(name in value, value.get(name))
        self.extra = {k: v for k, v in value.items() if k not in names}

    def get(self) -> tuple[bool, dict[str, Any]]:
        out: dict[str, Any] = {}
        for child in self.children:
            present, v = child.get()
            if present:
                out[str(child.path[-1])] = v
        out.update(self.extra)
        return (bool(out) or self.required), out


class ConfigForm(QWidget):
    """A form for one configuration schema (see the module docstring)."""

    value_edited = Signal()

    def __init__(self, schema: Mapping[str, Any], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("ConfigForm")
        self.schema = schema  # validation: the schema as written
        self.layout_schema = resolve_refs(schema)  # the form: $refs inlined, allOf/then merged
        schema = self.layout_schema
        self._loading = False
        self.fields: dict[str, _Field] = {}
        self.groups: dict[str, _Group] = {}
        self._issues: list[SchemaIssue] = []
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        desc = schema.get("description")
        if isinstance(desc, str) and desc:
            about = QLabel(desc)
            about.setWordWrap(True)
            about.setStyleSheet(_HELP_STYLE)
            lay.addWidget(about)
        self.banner = QLabel("")
        self.banner.setObjectName("form_banner")
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet(_ERROR_STYLE)
        self.banner.hide()
        lay.addWidget(self.banner)
        self.root = _Group((), schema, True)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self._build(self.root, schema, form)
        lay.addLayout(form)
        lay.addStretch(1)
        self.set_value({})

    # -- building ----------------------------------------------------------------------------

    def _build(self, group: _Group, schema: Mapping[str, Any], form: QFormLayout) -> None:
        required = set(required_of(schema))
        for name, sub in (schema.get("properties") or {}).items():
            path = (*group.path, name)
            kind = field_kind(sub)
            title = str(sub.get("title") or name) + (" *" if name in required else "")
            desc = str(sub.get("description") or "")
            if kind == "object":
                child_group = _Group(path, sub, name in required)
                box = QGroupBox(title)
                box.setToolTip(desc)
                inner = QFormLayout(box)
                inner.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
                if desc:
                    inner.addRow(self._help(desc))
                inner.addRow(child_group.error_label)
                self._build(child_group, sub, inner)
                form.addRow(box)
                group.children.append(child_group)
                self.groups[".".join(map(str, path))] = child_group
                continue
            factory = _LEAVES.get(kind or "string", _LEAVES["string"])
            f = factory(self, path, sub, name in required)
            cell = QWidget()
            cl = QVBoxLayout(cell)
            cl.setContentsMargins(0, 0, 0, 0)
            cl.setSpacing(1)
            row = QHBoxLayout()
            row.addWidget(f.editor, 1)
            row.addWidget(f.reset_button)
            cl.addLayout(row)
            if desc:
                cl.addWidget(self._help(desc))
            cl.addWidget(f.error_label)
            label = QLabel(title)
            label.setToolTip(desc)
            f.editor.setToolTip(desc)
            if name in required:
                bold = QFont(label.font())
                bold.setBold(True)
                label.setFont(bold)
            form.addRow(label, cell)
            group.children.append(f)
            self.fields[f.key] = f

    @staticmethod
    def _help(text: str) -> QLabel:
        lab = QLabel(text)
        lab.setWordWrap(True)
        lab.setStyleSheet(_HELP_STYLE)
        f = lab.font()
        f.setPointSizeF(max(6.0, f.pointSizeF() * 0.9))
        lab.setFont(f)
        return lab

    # -- value in and out --------------------------------------------------------------------

    def set_value(self, value: Mapping[str, Any] | None) -> None:
        """Show a configuration (fields it lacks are unset)."""
        self.root.set(dict(value or {}))
        self._revalidate()

    def value(self) -> dict[str, Any]:
        """The configuration the form describes: the set fields (and any unknown keys it
        was given, which validation then reports)."""
        return self.root.get()[1]

    def issues(self) -> list[SchemaIssue]:
        """What is wrong with ``value()``: text that is not of its field's type, and
        every schema violation."""
        return list(self._issues)

    def field(self, key: str) -> _Field:
        """A field by dotted path (``request_header.name``), for tests and focus."""
        return self.fields[key]

    # -- validation --------------------------------------------------------------------------

    def _on_field_edited(self) -> None:
        self._revalidate()
        self.value_edited.emit()

    def _revalidate(self) -> None:
        value = self.value()
        issues: list[SchemaIssue] = []
        parse_errors = {f.key for f in self.fields.values() if f.parse_error}
        for f in self.fields.values():
            if f.parse_error:
                issues.append(SchemaIssue(f.path, f.parse_error))
        for issue in validate(self.schema, value):
            key = ".".join(str(p) for p in issue.path)
            if key in parse_errors:
                continue  # the parse error already says it
            issues.append(issue)
        self._issues = issues
        per_field: dict[str, list[str]] = {}
        banner: list[str] = []
        unknown = False  # a field the schema does not know, which the form cannot show
        for issue in issues:
            target, rest = self._owner(issue.path)
            msg = issue.message
            if rest and isinstance(rest[0], int):
                msg = f"item {rest[0] + 1}: {msg}"
            if target is None:
                banner.append(f"{issue.where}: {issue.message}")
                unknown = unknown or issue.keyword in UNKNOWN_FIELD_KEYWORDS
            elif rest and target in self.fields and self.fields[target].nested:
                continue  # shown inside the field's own sub-form
            else:
                per_field.setdefault(target, []).append(msg)
        for key, f in self.fields.items():
            f.show_error("; ".join(per_field.get(key, [])))
        for key, g in self.groups.items():
            msgs = per_field.get(key, [])
            g.error_label.setText("; ".join(msgs))
            g.error_label.setVisible(bool(msgs))
        if unknown:
            banner.append("The form has no field for these: fix them in the YAML / JSON tab.")
        self.banner.setText("\n".join(banner))
        self.banner.setVisible(bool(banner))

    def _owner(self, path: PathT) -> tuple[str | None, PathT]:
        """The field (or group) an issue at ``path`` belongs to, and the rest of the path."""
        for n in range(len(path), 0, -1):
            key = ".".join(str(p) for p in path[:n])
            if key in self.fields:
                return key, path[n:]
            if key in self.groups and n == len(path):
                return key, ()
        return None, path

    def error_text(self, key: str) -> str:
        """The inline error shown under a field ("" when none)."""
        if key in self.fields:
            return self.fields[key].error_label.text()
        return self.groups[key].error_label.text()
