"""A fake engine service: the same signals and methods as gui.engine_service.EngineService,
recording commands and letting tests push snapshots and signals."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Signal

from gui.engine_service import EngineSnapshot
from gui.workspace import default_config_path
from host.proxy.config import ProxyConfig, effective_order, load_config
from host.proxy.request_views import RequestSummary
from host.proxy.snapshots import PluginSnapshot, PluginState
from host.proxy.stats import StatsStore


def plugin_snapshot(name: str, **kw: Any) -> PluginSnapshot:
    """A running plugin's snapshot as the engine publishes it; ``kw`` replaces fields
    (``state`` may be given as its text)."""
    if isinstance(kw.get("state"), str):
        kw["state"] = PluginState(kw["state"])
    kw.setdefault("abi", "0.2.1")
    kw.setdefault("sha256", "0" * 64)
    kw.setdefault("root_id", name.replace("-", "_"))
    kw.setdefault("vm_memory_bytes", 65536)
    return PluginSnapshot(name, **kw)


class FakeEngineService(QObject):
    started = Signal()
    start_failed = Signal(str)
    stopped = Signal()
    plugins_changed = Signal(list)
    config_applied = Signal(list)
    config_refused = Signal(list)
    command_failed = Signal(str)
    plugin_reloaded = Signal(str, object)
    response_received = Signal(dict)
    request_details_received = Signal(object)
    traffic_progress = Signal(int, int)
    traffic_finished = Signal(dict)
    intercepts_changed = Signal(object)
    recording_changed = Signal(bool, str)

    def __init__(self, config: ProxyConfig | None = None) -> None:
        super().__init__()
        self._config = config if config is not None else load_config(default_config_path())
        self.listen_address = ("127.0.0.1", 10000)
        self.admin_address = ("127.0.0.1", 9901)
        self.notes: list[str] = []
        self.listener_tls: Any = None  # gui.tls_client.ListenerTls when TLS
        self.calls: list[tuple[str, Any]] = []
        self.store = StatsStore()
        self.pending_logs: list[dict[str, Any]] = []
        self.pending_requests: list[RequestSummary] = []
        self.plugins: list[PluginSnapshot] = []
        self.closed = False
        self.checked: list[list[str]] = []
        self.seq = 0

    @property
    def config(self) -> ProxyConfig:
        return self._config

    def snapshot(self) -> EngineSnapshot:
        self.seq += 1
        logs, reqs = tuple(self.pending_logs), tuple(self.pending_requests)
        self.pending_logs.clear()
        self.pending_requests.clear()
        return EngineSnapshot(
            seq=self.seq,
            time=0.0,
            stats=self.store.snapshot(),
            plugins=tuple(self.plugins),
            config=self._config,
            logs=logs,
            requests=reqs,
        )

    def apply_config(self, config: ProxyConfig, *, check_new: bool = False) -> bool:
        self.calls.append(("apply_config", config))
        if check_new:
            self.checked.append([p.name for p in config.plugins])
        self._config = config
        return True

    def set_plugin_mode(self, name: str, **kw: Any) -> bool:
        self.calls.append(("set_plugin_mode", (name, kw)))
        return True

    def reload_plugin(self, name: str) -> bool:
        self.calls.append(("reload_plugin", name))
        return True

    def fetch_request(self, record_id: int) -> bool:
        self.calls.append(("fetch_request", record_id))
        return True

    def send_request(
        self,
        method: str,
        url_path: str,
        headers: Any = (),
        body: bytes = b"",
        *,
        protocol: str = "HTTP/1.1",
    ) -> bool:
        if protocol == "HTTP/1.1":  # the call as it always was
            self.calls.append(("send_request", (method, url_path, list(headers), body)))
        else:
            self.calls.append(("send_request", (method, url_path, list(headers), body, protocol)))
        return True

    def send_grpc(
        self, method: str, message: bytes, metadata: Any = (), deadline_s: float = 10.0
    ) -> bool:
        self.calls.append(("send_grpc", (method, message, list(metadata), deadline_s)))
        return True

    def generate_traffic(self, rps: float = 200.0, seconds: float = 10.0) -> bool:
        self.calls.append(("generate_traffic", (rps, seconds)))
        return True

    def set_capture(self, on: bool) -> None:
        self.calls.append(("set_capture", on))

    def stop_traffic(self) -> bool:
        self.calls.append(("stop_traffic", None))
        return True

    def arm_intercept(self, plugin: str, stage: str = "request_headers", path: str = "") -> bool:
        self.calls.append(("arm_intercept", (plugin, stage, path)))
        return True

    def disarm_intercept(self) -> bool:
        self.calls.append(("disarm_intercept", None))
        return True

    def resume_intercept(self, held_id: int, headers: Any = None, body: Any = None) -> bool:
        self.calls.append(("resume_intercept", (held_id, headers, body)))
        return True

    def close(self, timeout_s: float = 5.0) -> bool:
        self.closed = True
        return True

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def with_plugin_specs(self) -> None:
        """Publish plugin snapshots matching the config's plugins."""
        self.plugins = [
            plugin_snapshot(
                p.name,
                phase=p.phase,
                priority=p.priority,
                mode=p.mode,
                state="log-only" if p.mode == "log-only" else "running",
                canary_percent=p.canary_percent,
                type=p.type,
            )
            for p in effective_order(self._config.plugins)
        ]
