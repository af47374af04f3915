"""The composition root: builds the adapters the settings ask for, once per process, on first use.

Nothing is built at import time. Functions cold-start on every scale-out, and azure.ai.ml alone costs over a
second to import, so the Azure adapters are imported only when an invocation needs them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from promotion.domain import now
from promotion.policy import Policy
from promotion.ports import EventPublisher, PromotionStore
from promotion.settings import Settings, SettingsError

T = TypeVar("T")
Clock = Callable[[], datetime]
_lock = threading.RLock()
_built: dict[str, Any] = {}
_clock: Clock = now


def _once(key: str, build: Callable[[], T]) -> T:
    with _lock:
        if key not in _built:
            _built[key] = build()
        return _built[key]


def clock() -> Clock:
    """The time every use case is handed: the real clock, unless a test (or the demo) set another."""
    return _clock


def use_clock(replacement: Clock) -> Clock:
    """Make `replacement` the clock of every use case from now on; returns the one it replaces."""
    global _clock
    with _lock:
        previous, _clock = _clock, replacement
    return previous


def settings() -> Settings:
    return _once("settings", Settings.from_env)


def backend() -> Any:
    """The staging, registry and production ports of the configured backend (`.staging`, `.registry`, `.production`)."""

    def build() -> Any:
        current = settings()
        if current.backend == "local":
            from promotion.adapters.local import LocalBackend

            usable_folder(current.local_root, "PROMOTION_LOCAL_ROOT")
            return LocalBackend(current)
        from promotion.adapters.azureml import AzureMLBackend

        return AzureMLBackend(current)

    return _once("backend", build)


def store() -> PromotionStore:
    def build() -> PromotionStore:
        current = settings()
        if current.state_store == "sqlite":
            from promotion.adapters.sqlite import SqlitePromotionStore

            return SqlitePromotionStore(
                usable_folder(current.local_root, "PROMOTION_LOCAL_ROOT") / "promotions.sqlite3"
            )
        from promotion.adapters.tables import TablePromotionStore

        location = current.table_store()
        if location.connection_string is None:
            return TablePromotionStore(endpoint=location.endpoint)  # managed identity
        try:
            return TablePromotionStore(location.connection_string)
        except ValueError:
            raise SettingsError("setting AzureWebJobsStorage is not a valid Storage connection string") from None

    return _once("store", build)


def publisher(*, quick: bool = False) -> EventPublisher | None:
    """Where lifecycle events go; None when PROMOTION_EVENTS_ENDPOINT is unset (events are still recorded).

    `quick` is the publisher for the attempt right after a change: one try with short timeouts, so that an
    unreachable topic never slows an API answer or an event handler by more than a moment.
    """

    def build() -> EventPublisher | None:
        topic = settings().event_topic()
        if topic is None:
            return None
        from promotion.adapters.eventgrid import EventGridPublisher
        from promotion.settings import public_origin

        return EventGridPublisher(topic, quick=quick, console=public_origin(settings().env))

    return _once(f"publisher-quick={quick}", build)


def deployment_ports() -> dict[str, Any]:
    """The ports of the deployment use cases (service.deploy, advance_deployments)."""
    current = settings()
    return {
        "store": store(),
        "registry": backend().registry,
        "deployer": backend().production,
        "rules": policy().production,
        "registry_model_uri": current.registry_model_uri,
        "source": current.events_source,
        "clock": clock(),
    }


def drift_ports() -> dict[str, Any]:
    """The ports of service.detect_drift."""
    return {
        "store": store(),
        "deployer": backend().production,
        "rules": policy().production,
        "source": settings().events_source,
        "clock": clock(),
    }


def copy_ports() -> dict[str, Any]:
    """The ports of service.advance_registry_copies."""
    current = settings()
    return {
        "registry": backend().registry,
        "store": store(),
        "source": current.events_source,
        "timeout": current.copy_timeout,
        "clock": clock(),
    }


def policy() -> Policy:
    """The policy file, validated on first use and read again only when the file changes."""
    path = policy_path()
    try:
        stat = path.stat()
        version: tuple[Any, ...] = (path, stat.st_mtime_ns, stat.st_size)
    except OSError:
        version = (path, None)  # let Policy.load report the missing file
    with _lock:
        cached = _built.get("policy")
        if cached is None or cached[0] != version:
            cached = (version, Policy.load(path))
            _built["policy"] = cached
        return cached[1]


def policy_path() -> Path:
    return settings().policy_file


def usable_folder(path: Path, setting: str) -> Path:
    """`path`, created if need be; a SettingsError naming the setting when it cannot be used."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise SettingsError(f"setting {setting} names a file, not a folder") from None
    except OSError as error:
        raise SettingsError(f"setting {setting} names a folder that cannot be created ({error.strerror})") from None
    if not path.is_dir():
        raise SettingsError(f"setting {setting} names a file, not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise SettingsError(f"setting {setting} names a folder this process may not write to")
    return path


def reset() -> None:
    """Forget everything built so far (tests and the CLI change the environment between runs)."""
    with _lock:
        _built.clear()
