"""The composition root: builds the adapters the settings ask for, once per process, on first use.

Nothing is built at import time. Functions cold-start on every scale-out, and azure.ai.ml alone
costs over a second to import, so the Azure adapters are imported only when an invocation needs them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from promotion.policy import Policy
from promotion.ports import PromotionStore
from promotion.settings import Settings

T = TypeVar("T")
_lock = threading.RLock()
_built: dict[str, Any] = {}


def _once(key: str, build: Callable[[], T]) -> T:
    with _lock:
        if key not in _built:
            _built[key] = build()
        return _built[key]


def settings() -> Settings:
    return _once("settings", Settings.from_env)


def backend() -> Any:
    """The staging, registry and production ports of the configured backend (`.staging`, `.registry`, `.production`)."""

    def build() -> Any:
        current = settings()
        if current.backend == "local":
            from promotion.adapters.local import LocalBackend

            return LocalBackend(current)
        from promotion.adapters.azureml import AzureMLBackend

        return AzureMLBackend(current)

    return _once("backend", build)


def store() -> PromotionStore:
    def build() -> PromotionStore:
        current = settings()
        if current.state_store == "sqlite":
            from promotion.adapters.sqlite import SqlitePromotionStore

            return SqlitePromotionStore(current.local_root / "promotions.sqlite3")
        from promotion.adapters.tables import TablePromotionStore

        if current.storage_connection:
            return TablePromotionStore(current.storage_connection)
        return TablePromotionStore(endpoint=current.storage_table_endpoint)  # managed identity

    return _once("store", build)


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
    path = settings().policy_file
    # In Azure the worker's working directory is not guaranteed to be the app root; the host tells us where it is.
    script_root = os.environ.get("AzureWebJobsScriptRoot")
    return path if path.is_absolute() or not script_root else Path(script_root) / path


def reset() -> None:
    """Forget everything built so far (tests and the CLI change the environment between runs)."""
    with _lock:
        _built.clear()
