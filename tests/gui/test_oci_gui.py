"""The app and images in a real registry (docker-registry on 127.0.0.1): the URL dialog
pulls with a progress bar and fills in digest and root id, the engine loads the image,
and File ▸ Export for a cluster pushes local modules and writes WasmPlugin documents."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from gui.export_dialog import ExportClusterDialog, parse_selector
from gui.url_dialog import LoadUrlDialog
from host.oci import RuntimeConfig, pull_module, push_module
from host.resources import demo_plugin
from tests.host.oci.conftest import Registry, registry  # noqa: F401 - the fixture

RC = RuntimeConfig("envoy_proxy", ("v0.2.0",), ("add_header",))
SCHEMA = json.loads(
    (
        Path(__file__).parents[1] / "host" / "oci" / "data" / "wasmplugin_v1alpha1.schema.json"
    ).read_text()
)


def test_url_dialog_pulls_an_image_with_progress(qtbot, registry: Registry) -> None:  # noqa: F811
    pushed = push_module(
        demo_plugin("add_header").read_bytes(), registry.ref("gui/add-header:1"), runtime_config=RC
    )
    dlg = LoadUrlDialog()
    qtbot.addWidget(dlg)
    dlg.show()
    url = f"oci://{registry.ref('gui/add-header:1')}"
    dlg.url_edit.setText(url)
    dlg.url_edit.textEdited.emit(url)  # as typing does
    assert dlg.pull_button.isVisible()
    assert dlg.problem() == ""  # a tag without a digest is allowed for images
    with qtbot.waitSignal(dlg.pull_job.finished, timeout=10_000):
        dlg.pull_button.click()
    qtbot.waitUntil(lambda: dlg.sha_edit.text() == pushed.sha256, timeout=2_000)
    assert dlg.root_edit.text() == "add_header"  # from the image's runtime config
    assert dlg.pull_progress.value() == dlg.pull_progress.maximum() > 0
    assert "oci image" in dlg.image_label.text() and "root ids add_header" in dlg.image_label.text()


def test_url_dialog_shows_a_pull_failure(qtbot, registry: Registry) -> None:  # noqa: F811
    dlg = LoadUrlDialog()
    qtbot.addWidget(dlg)
    dlg.url_edit.setText(registry.ref("gui/none:0"))
    with qtbot.waitSignal(dlg.pull_job.failed, timeout=10_000):
        dlg.pull()
    qtbot.waitUntil(lambda: "manifest unknown" in dlg.error_label.text(), timeout=2_000)


def test_app_loads_a_plugin_from_the_registry(qtbot, app_window, registry: Registry) -> None:  # noqa: F811
    window, service = app_window
    pushed = push_module(
        demo_plugin("add_header").read_bytes(), registry.ref("gui/app:1"), runtime_config=RC
    )
    with qtbot.waitSignal(service.config_applied, timeout=15_000) as applied:
        assert window.load_plugin_url(
            f"oci://{registry.ref('gui/app:1')}", pushed.sha256, "add_header"
        )
    assert applied.args == [[]]
    qtbot.waitUntil(lambda: "app" in window.plugin_list.names(), timeout=5_000)
    assert window.plugin_list.badges()["app"] == "running"


def test_export_for_a_cluster_pushes_local_modules(
    qtbot,
    app_window,
    registry: Registry,  # noqa: F811
    tmp_path: Path,
) -> None:
    window, _service = app_window
    dlg = window.open_export_cluster_dialog()
    assert isinstance(dlg, ExportClusterDialog)
    local = [s.name for s in dlg.local]
    assert local  # the demo workspace loads files
    out = tmp_path / "cluster.yaml"
    dlg.path_edit.setText(str(out))
    dlg.export()  # no registry typed: it says so and writes nothing
    assert "registry" in dlg.status_label.text() and not out.exists()
    dlg.registry_edit.setText(registry.ref("exported"))
    dlg.namespace_edit.setText("shop")
    dlg.selector_edit.setText("app=web")
    with qtbot.waitSignal(dlg.exported, timeout=30_000) as done:
        dlg.export()
    assert done.args == [str(out)]
    assert str(out) in dlg.last_message
    docs = list(yaml.safe_load_all(out.read_text()))
    assert sorted(d["metadata"]["name"] for d in docs) == sorted(local)
    for doc in docs:
        jsonschema.validate(doc, SCHEMA)
        url = doc["spec"]["url"]
        assert url.startswith(f"oci://{registry.ref('exported')}/") and "@sha256:" in url
        assert doc["metadata"]["namespace"] == "shop"
        # the pushed image holds the very module the workspace loads
        spec = next(s for s in dlg.config.plugins if s.name == doc["metadata"]["name"])
        pulled = pull_module(url, sha256=doc["spec"]["sha256"], cache_dir=None)
        assert pulled.wasm == Path(spec.location).read_bytes()


def test_parse_selector() -> None:
    assert parse_selector(" app=web, tier = front ") == {"app": "web", "tier": "front"}
    for bad in ("app", "=x", "a*=b"):
        try:
            parse_selector(bad)
        except ValueError as e:
            assert repr(bad) in str(e) or "key=value" in str(e)
        else:
            raise AssertionError(bad)
