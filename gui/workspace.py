"""The desktop app's workspace: the plugins, their configs and modes, kept between runs.

The workspace is the same multi-document YAML that ``wasmdesk serve --config`` reads
(``host.proxy.config.dump_config``), so it doubles as the export format. It is written
atomically (a temporary file in the same directory, fsync, ``os.replace``), and module
paths are written absolute so the file does not depend on where it lives.

A workspace file that fails to load is never overwritten nor lost: it is renamed aside
(``workspace.yaml.bad-<UTC time>``), the app starts on the embedded default and says so,
and later saves go to the usual path again. (Only when it cannot be renamed is it left
in place, and then nothing is saved over it this session.) No Qt here.

One app at a time writes a workspace: ``lock()`` creates ``<workspace>.lock`` holding the
pid (atomically, ``O_EXCL``). A second instance finds it, and if that pid is alive it
runs read-only and says so; a lock whose pid is gone (a crash) is stale and taken over.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from host.proxy.config import ConfigError, ProxyConfig, dump_config, load_config, with_changes
from host.resources import resources_dir

__all__ = ["Workspace", "default_config_path", "default_workspace_path", "portable_config"]

ENV_WORKSPACE = "WASMDESK_WORKSPACE"


def default_workspace_path() -> Path:
    env = os.environ.get(ENV_WORKSPACE)
    if env:
        return Path(env).expanduser()
    import platformdirs

    # the platform's user data directory (~/.local/share/wasmdesk on Linux, XDG honoured)
    return platformdirs.user_data_path("wasmdesk", appauthor=False) / "workspace.yaml"


def default_config_path() -> Path:
    """The embedded default: the bundled demo plugins (the same file ``wasmdesk serve``
    runs without ``--config``)."""
    return resources_dir() / "default" / "wasmdesk.yaml"


def portable_config(config: ProxyConfig) -> ProxyConfig:
    """``config`` with every file module URL made absolute, so the YAML can be written
    anywhere and still load."""
    plugins = []
    for p in config.plugins:
        try:
            if p.location_kind == "file" and p.url != p.location:
                p = with_changes(p, url=p.location)
        except (ValueError, ConfigError):
            pass  # keep it as written; the loader will say what is wrong
        plugins.append(p)
    return dataclasses.replace(config, plugins=tuple(plugins))


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _lock_pid(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    except OSError:
        return False
    return True


@dataclass
class Workspace:
    """Where the workspace lives and whether it may be written."""

    path: Path
    writable: bool = True
    message: str = ""  # what happened at load time, for the status bar
    set_aside: Path | None = None  # where a workspace that failed to load was moved
    locked_by: int | None = None  # another live instance's pid: this one is read-only
    lock_note: str = ""  # what lock() found, for the status bar
    _lock_held: bool = False

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def lock(self) -> bool:
        """Take the workspace for this process; False (and ``locked_by``, ``lock_note``)
        when another live instance holds it: then ``save`` writes nothing."""
        lp = self.lock_path
        for _attempt in range(3):
            try:
                lp.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(lp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                pid = _lock_pid(lp)
                if pid == os.getpid() and self._lock_held:
                    return True
                if pid is not None and _pid_alive(pid):  # this process too: another window
                    self.locked_by = pid
                    self.lock_note = (
                        f"Another Wasmdesk (pid {pid}) has the workspace {self.path} open: "
                        "this window is read-only (changes here are not saved)"
                    )
                    return False
                with contextlib.suppress(OSError):
                    lp.unlink()  # stale: its process is gone
                self.lock_note = f"Took over a stale workspace lock (pid {pid} is gone)"
                continue
            except OSError as e:
                self.lock_note = f"Could not lock the workspace ({e}); saving anyway"
                return True
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(f"{os.getpid()}\n")
            self._lock_held = True
            self.locked_by = None
            return True
        return False

    def unlock(self) -> None:
        """Release the lock if this process holds it."""
        if self._lock_held and _lock_pid(self.lock_path) == os.getpid():
            with contextlib.suppress(OSError):
                self.lock_path.unlink()
        self._lock_held = False

    @classmethod
    def at(cls, path: str | os.PathLike[str] | None = None) -> Workspace:
        return cls(Path(path) if path is not None else default_workspace_path())

    def load(self) -> ProxyConfig:
        """The saved workspace, or the embedded default when there is none or it is
        invalid (then ``writable`` is False and ``message`` says why)."""
        if self.path.is_file():
            try:
                config = load_config(self.path)
            except Exception as e:  # ConfigError, or anything else: never a crash at start
                why = str(e) if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}"
                first = why.splitlines()[0] if why else "invalid"
                try:
                    self.set_aside = self._rename_aside()
                except OSError as oe:
                    self.writable = False
                    self.message = (
                        f"The workspace {self.path} is invalid and was left as it is "
                        f"(renaming it failed: {oe.strerror or oe}); running the default "
                        f"demo instead. {first}"
                    )
                else:
                    self.writable = True
                    self.message = (
                        f"The workspace {self.path} could not be loaded and was renamed to "
                        f"{self.set_aside.name}; running the default demo instead. {first}"
                    )
                return load_config(default_config_path())
            self.writable = True
            self.message = f"Workspace restored from {self.path}"
            return config
        self.writable = True
        self.message = "Running the default demo (no saved workspace yet)"
        return load_config(default_config_path())

    def _rename_aside(self) -> Path:
        """Move the workspace file to ``<name>.bad-<UTC time>`` next to it (never over
        another file)."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        for n in range(100):
            aside = self.path.with_name(f"{self.path.name}.bad-{stamp}" + (f"-{n}" if n else ""))
            if not aside.exists():
                os.rename(self.path, aside)
                return aside
        raise OSError(f"too many set-aside workspaces next to {self.path}")

    def save(self, config: ProxyConfig) -> bool:
        """Write ``config``; False (and nothing written) if the file on disk is an invalid
        workspace this session refused to overwrite."""
        if not self.writable or self.locked_by is not None:
            return False
        atomic_write_text(self.path, dump_config(portable_config(config)))
        return True

    def export_to(self, config: ProxyConfig, path: str | os.PathLike[str]) -> None:
        """Export as WasmPlugin YAML (and the Proxy document) to any path."""
        atomic_write_text(Path(path), dump_config(portable_config(config)))
