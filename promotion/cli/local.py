"""The local backend's stand-ins for Azure ML's own tools: `az ml model create` (register), `az ml model update
--set tags.K=V` (tag), and the ModelRegistered event Azure ML emits."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from promotion.domain import ModelVersion, isoformat, now
from promotion.events import MODEL_REGISTERED
from promotion.settings import Settings

WEBHOOK = "/runtime/webhooks/eventgrid?functionName=on_model_registered"


class CommandError(Exception):
    """A user error: printed as one line, exit status 2."""


def local_settings() -> Settings:
    """The local commands always act on the local backend, whatever PROMOTION_BACKEND says."""
    return Settings.from_env({**os.environ, "PROMOTION_BACKEND": "local", "PROMOTION_STATE_STORE": "sqlite"})


def local_backend(settings: Settings | None = None) -> Any:
    """The local backend, once its root is known to be a usable folder (else one clear error naming the setting)."""
    from promotion.adapters.local import LocalBackend
    from promotion.wiring import usable_folder

    settings = settings or local_settings()
    usable_folder(settings.local_root, "PROMOTION_LOCAL_ROOT")
    return LocalBackend(settings)


def default_model_type(path: Path) -> str:
    """What `az ml model create` users mean: a folder with an MLmodel file is an MLflow model."""
    return "mlflow_model" if (path / "MLmodel").is_file() else "custom_model"


def model_registered_event(model: ModelVersion, staging_workspace_id: str) -> dict[str, Any]:
    """The event Azure ML emits when a model is registered (Event Grid schema)."""
    return {
        "id": str(uuid.uuid4()),
        "topic": staging_workspace_id,
        "subject": f"models/{model.ref}",
        "eventType": MODEL_REGISTERED,
        "eventTime": isoformat(now()),
        "data": {
            "ModelName": model.name,
            "ModelVersion": model.version,
            "ModelTags": dict(model.tags),
            "ModelProperties": dict(model.properties),
        },
        "dataVersion": "",
        "metadataVersion": "1",
    }


def webhook_url(host: str) -> str:
    """The Event Grid webhook of a Functions host such as http://localhost:7071; checked before anything is done."""
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise CommandError(f"--notify {host!r}: expected an http:// or https:// URL such as http://localhost:7071")
    return f"{host.rstrip('/')}{WEBHOOK}"


def notify(url: str, events: list[dict[str, Any]]) -> None:
    """POST the events to a running Functions host's Event Grid webhook, as Event Grid would."""
    request = urllib.request.Request(
        url,
        data=json.dumps(events).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "aeg-event-type": "Notification"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            print(f"notified {url}: HTTP {response.status}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as error:
        raise CommandError(f"the model is registered, but notifying {url} failed: {error}") from None


def pairs(items: list[str], option: str) -> dict[str, str]:
    found = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise CommandError(f"{option} {item!r}: expected KEY=VALUE")
        found[key] = value
    return found
