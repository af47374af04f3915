"""Pytest fixtures for the Azure ML HTTP fake. Use them with `pytest_plugins = ["tests.fakes.fixtures"]` in a
conftest.py, or import them by name into a test module.

- `azureml_settings`: Settings for the azureml backend (sqlite state store, so no Storage is needed);
- `fake_azureml`: a started FakeAzureML, with the environment set for App Service managed identity so the real
  DefaultAzureCredential gets its tokens from the fake;
- `azureml_backend`: an AzureMLBackend on the fake with the real credential and no SDK retries (retry_total=0),
  so one failure is one request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from promotion.settings import Settings
from tests.fakes.azureml_http import MANAGED_IDENTITY_ENV, OTHER_CREDENTIAL_VARIABLES, FakeAzureML

AZUREML_ENV = {
    "PROMOTION_BACKEND": "azureml",
    "PROMOTION_STATE_STORE": "sqlite",
    "AZURE_SUBSCRIPTION_ID": "11111111-2222-4333-8444-555555555555",
    "STAGING_RESOURCE_GROUP": "rg-ml-staging",
    "STAGING_WORKSPACE": "ws-staging",
    "REGISTRY_NAME": "shared-registry",
    "REGISTRY_LOCATION": "westeurope",
    "PRODUCTION_RESOURCE_GROUP": "rg-ml-production",
    "PRODUCTION_WORKSPACE": "ws-production",
}


def managed_identity_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make DefaultAzureCredential use App Service managed identity, served by the fake, and nothing else."""
    for name in OTHER_CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in MANAGED_IDENTITY_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def azureml_settings() -> Settings:
    return Settings.from_env(AZUREML_ENV)


@pytest.fixture
def fake_azureml(monkeypatch: pytest.MonkeyPatch, azureml_settings: Settings) -> Iterator[FakeAzureML]:
    managed_identity_env(monkeypatch)
    with FakeAzureML(azureml_settings) as fake:
        yield fake


@pytest.fixture
def azureml_backend(fake_azureml: FakeAzureML, azureml_settings: Settings) -> Any:
    from promotion.adapters.azureml import AzureMLBackend

    return AzureMLBackend(azureml_settings, retry_total=0)
