"""Call the registered functions in-process with the binding objects the Functions host would pass."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from function_app import app
from promotion import wiring
from tests.models import MLFLOW_MODEL

ROOT = Path(__file__).resolve().parents[2]
SEED_MODEL = MLFLOW_MODEL
# app.get_functions() may be called only once per process when blueprints are registered.
FUNCTIONS = {function.get_function_name(): function for function in app.get_functions()}


def user_function(name: str):
    return FUNCTIONS[name].get_user_function()


@pytest.fixture
def local_app(tmp_path, monkeypatch):
    """The app on the local backend, in a fresh folder, with the repository's policy."""
    for name in ("WEBSITE_INSTANCE_ID", "WEBSITE_AUTH_ENABLED", "AzureWebJobsScriptRoot"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROMOTION_BACKEND", "local")
    monkeypatch.setenv("PROMOTION_STATE_STORE", "sqlite")
    monkeypatch.setenv("PROMOTION_LOCAL_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("PROMOTION_POLICY_FILE", str(ROOT / "promotion-policy.json"))
    wiring.reset()
    yield wiring
    wiring.reset()


class Output:
    """An output binding (func.Out[str]): what the host would send on."""

    def __init__(self) -> None:
        self.values: list[str] = []

    def set(self, value: str) -> None:
        self.values.append(value)

    def get(self) -> str | None:
        return self.values[-1] if self.values else None


def identity(name: str, object_id: str | None = None, roles: tuple[str, ...] = ()) -> dict[str, str]:
    claims = [{"typ": "roles", "val": role} for role in roles]
    headers = {
        "X-MS-CLIENT-PRINCIPAL-NAME": name,
        "X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims}).encode()).decode(),
    }
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
    assert response.mimetype == "application/json"
    return response.status_code, json.loads(response.get_body())
