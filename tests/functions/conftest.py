"""Call the registered functions in-process with the binding objects the Functions host would pass.

Every invocation goes through `user_function(name)`, which also checks what the real worker checks: a function
without a `$return` binding must return None (the worker fails an invocation that returns a value).
"""

from __future__ import annotations

import base64
import functools
import json
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from function_app import app
from promotion import wiring
from promotion.domain import ModelRef, ModelVersion
from tests.eventgrid_receiver import EventGridReceiver, eventgrid_receiver
from tests.models import MLFLOW_MODEL

__all__ = ["EventGridReceiver", "eventgrid_receiver"]  # the receiver fixture, for every test of this folder

ROOT = Path(__file__).resolve().parents[2]
SEED_MODEL = MLFLOW_MODEL
POLICY = ROOT / "promotion-policy.json"
MODEL_REGISTERED = "Microsoft.MachineLearningServices.ModelRegistered"
# app.get_functions() may be called only once per process when blueprints are registered.
FUNCTIONS = {function.get_function_name(): function for function in app.get_functions()}

# Settings a developer's shell (or another test) may have set, which would change what these tests see.
_CLEARED = (
    "WEBSITE_INSTANCE_ID",
    "WEBSITE_AUTH_ENABLED",
    "WEBSITE_SITE_NAME",
    "AzureWebJobsScriptRoot",
    "AzureWebJobsStorage",
    "PROMOTION_EVENTS_ENDPOINT",
    "PROMOTION_EVENTS_KEY",
    "PROMOTION_EVENTS_NAMESPACE_TOPIC",
    "PROMOTION_EVENTS_SOURCE",
    "PROMOTION_EVENTS_RETENTION_DAYS",
    "PROMOTION_DECISIONS_RETENTION_DAYS",
    "PROMOTION_COPY_TIMEOUT_MINUTES",
    "PROMOTION_RECONCILE_SCHEDULE",
    "PROMOTION_DRIFT_SCHEDULE",
)


def returns_value(name: str) -> bool:
    """Whether the host takes the function's return value (a `$return` output binding)."""
    bindings = json.loads(FUNCTIONS[name].get_function_json())["bindings"]
    return any(binding["name"] == "$return" for binding in bindings)


# function name -> every HTTP status it answered in this session (tests/test_openapi.py checks them)
OBSERVED_STATUSES: dict[str, set[int]] = defaultdict(set)


def user_function(name: str):
    """The registered function `name`, as the worker would call it."""
    function = FUNCTIONS[name].get_user_function()
    if returns_value(name):

        @functools.wraps(function)
        def answer(*args: Any, **kwargs: Any) -> Any:
            response = function(*args, **kwargs)
            if isinstance(response, func.HttpResponse):
                OBSERVED_STATUSES[name].add(response.status_code)
            return response

        return answer

    @functools.wraps(function)
    def invoke(*args: Any, **kwargs: Any) -> None:
        result = function(*args, **kwargs)
        assert result is None, f"{name} has no $return binding but returned {result!r}: the worker fails that"

    return invoke


@pytest.fixture
def local_app(tmp_path, monkeypatch):
    """The app on the local backend, in a fresh folder, with the repository's policy and identity headers
    trusted through the local opt-in (the API is fail-closed without it)."""
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROMOTION_BACKEND", "local")
    monkeypatch.setenv("PROMOTION_STATE_STORE", "sqlite")
    monkeypatch.setenv("PROMOTION_LOCAL_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("PROMOTION_POLICY_FILE", str(POLICY))
    monkeypatch.setenv("PROMOTION_TRUST_IDENTITY_HEADERS", "true")
    wiring.reset()
    yield wiring
    wiring.reset()


def use_policy(monkeypatch, folder: Path, *, share: dict[str, Any] | None = None, **production: Any) -> Path:
    """Use the repository's policy with these production settings (and share_to_registry rules) changed."""
    document = json.loads(POLICY.read_text())
    document["production"].update(production)
    if share is not None:
        document["share_to_registry"].update(share)
    path = folder / f"policy-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(document))
    monkeypatch.setenv("PROMOTION_POLICY_FILE", str(path))
    wiring.reset()
    return path


class Output:
    """An output binding (func.Out[str]): what the host would send on."""

    def __init__(self) -> None:
        self.values: list[str] = []

    def set(self, value: str) -> None:
        self.values.append(value)

    def get(self) -> str | None:
        return self.values[-1] if self.values else None


def encoded_principal(claims: list[dict[str, Any]]) -> str:
    return base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims}).encode()).decode()


def identity(
    name: str | None,
    object_id: str | None = None,
    roles: tuple[str, ...] = (),
    claims: list[dict[str, Any]] | None = None,
) -> dict[str, str]:
    """The headers App Service Authentication sets for a signed-in caller."""
    headers = {
        "X-MS-CLIENT-PRINCIPAL": encoded_principal([{"typ": "roles", "val": role} for role in roles] + (claims or []))
    }
    if name is not None:
        headers["X-MS-CLIENT-PRINCIPAL-NAME"] = name
    if object_id:
        headers["X-MS-CLIENT-PRINCIPAL-ID"] = object_id
    return headers


def http(
    name: str,
    method: str,
    route: str,
    *,
    who: dict[str, str] | None = None,
    body: Any = None,
    raw_body: bytes | None = None,
    params: dict[str, str] | None = None,
    route_params: dict[str, str] | None = None,
    **bindings: Any,
) -> tuple[int, Any]:
    request = func.HttpRequest(
        method,
        f"http://localhost:7071/api/{route}",
        body=raw_body if raw_body is not None else (json.dumps(body).encode() if body is not None else b""),
        headers={"Content-Type": "application/json", **(who or {})},
        params=params or {},
        route_params=route_params or {},
    )
    response = user_function(name)(request, **bindings)
    assert isinstance(response, func.HttpResponse)
    assert response.mimetype == "application/json"
    return response.status_code, json.loads(response.get_body())


# --- binding objects and set-up shared by the test modules ------------------------------------------


def timer() -> TimerRequest:
    return TimerRequest(past_due=False)


def grid_event(
    ref: ModelRef,
    *,
    topic: str,
    event_id: str = "event-1",
    event_type: str = MODEL_REGISTERED,
    version: Any = None,
) -> func.EventGridEvent:
    """A ModelRegistered event in the Event Grid schema, as the host passes it."""
    return func.EventGridEvent(
        id=event_id,
        data={
            "ModelName": ref.name,
            "ModelVersion": ref.version if version is None else version,
            "ModelTags": {},
            "ModelProperties": {},
        },
        topic=topic,
        subject=f"models/{ref}",
        event_type=event_type,
        event_time=datetime.now(timezone.utc),
        data_version="",
    )


def cloud_event(
    ref: ModelRef, *, source: str, event_id: str = "event-1", event_type: str = MODEL_REGISTERED, version: Any = None
) -> func.CloudEvent:
    """The same event in the CloudEvents 1.0 schema, as azure-functions 1.25+ passes it."""
    return func.CloudEvent(
        id=event_id,
        source=source,
        type=event_type,
        specversion="1.0",
        subject=f"models/{ref}",
        time=datetime.now(timezone.utc),
        data={
            "ModelName": ref.name,
            "ModelVersion": ref.version if version is None else version,
            "ModelTags": {},
            "ModelProperties": {},
        },
    )


def backend(local_app: Any) -> Any:
    """The local backend the app itself uses (so tests and functions see one staging, registry, production)."""
    return local_app.backend()


def stage(
    local_app: Any,
    ref: ModelRef,
    *,
    type: str = "mlflow_model",
    tags: dict[str, str] | None = None,
    description: str | None = "taxi fares",
) -> ModelVersion:
    """Register a model version in the local staging workspace (no event)."""
    tags = {"stage": "candidate", "accuracy": "0.91"} if tags is None else tags
    model = ModelVersion(ref, type, tags, {"training_run": "run-42"}, description)
    return backend(local_app).staging.register(model, SEED_MODEL)


def share(local_app: Any, ref: ModelRef, *, event_id: str | None = None, **staged: Any) -> None:
    """Stage a qualifying model and run it through on_model_registered and advance_registry_copies, as the host
    would: afterwards the registry holds it with lineage."""
    stage(local_app, ref, **staged)
    topic = local_app.settings().staging_workspace_id
    user_function("on_model_registered")(grid_event(ref, topic=topic, event_id=event_id or f"event-{ref}"))
    user_function("advance_registry_copies")(timer())
    copied = backend(local_app).registry.get(ref)
    assert copied is not None and copied.tags["promotion.source_model"] == str(ref)
