"""Settings, read from the environment once. Every error names the variable to fix."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from promotion.domain import ModelRef

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Resource group names: letters, digits, '_', '-', '.', '(' and ')', at most 90, not ending in '.'.
_RESOURCE_GROUP = re.compile(r"[-\w.()]{0,89}[-\w()]")
# Workspace and registry names: 3-33 characters, letters, digits, '-' and '_', starting with a letter or digit.
_WORKSPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{2,32}")
_LOCATION = re.compile(r"[a-z0-9]{2,40}")
_STORAGE_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")

BACKENDS = ("azureml", "local")
STATE_STORES = ("tables", "sqlite")

# The local backend needs no subscription, so it gets stand-in ids that keep the Azure shapes.
LOCAL_DEFAULTS = {
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
    "STAGING_RESOURCE_GROUP": "rg-ml-staging",
    "STAGING_WORKSPACE": "ws-staging",
    "REGISTRY_NAME": "shared-registry",
    "REGISTRY_LOCATION": "westeurope",
    "PRODUCTION_RESOURCE_GROUP": "rg-ml-production",
    "PRODUCTION_WORKSPACE": "ws-production",
}


class SettingsError(ValueError):
    """A missing or invalid setting; the message names it."""


@dataclass(frozen=True)
class Settings:
    backend: str
    subscription_id: str
    staging_resource_group: str
    staging_workspace: str
    registry_name: str
    registry_location: str
    production_resource_group: str
    production_workspace: str
    policy_file: Path
    local_root: Path
    state_store: str
    storage_connection: str | None
    # Identity-based storage (no key in any setting): the Table endpoint, used with managed identity.
    storage_table_endpoint: str | None = None

    @property
    def staging_workspace_id(self) -> str:
        return workspace_resource_id(self.subscription_id, self.staging_resource_group, self.staging_workspace)

    @property
    def production_workspace_id(self) -> str:
        return workspace_resource_id(self.subscription_id, self.production_resource_group, self.production_workspace)

    def registry_model_uri(self, model: ModelRef) -> str:
        return f"azureml://registries/{self.registry_name}/models/{model.name}/versions/{model.version}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        backend = _choice(env, "PROMOTION_BACKEND", BACKENDS, default="azureml")
        defaults = LOCAL_DEFAULTS if backend == "local" else {}

        def azure(name: str, pattern: re.Pattern[str], hint: str) -> str:
            value = env.get(name, "").strip() or defaults.get(name, "")
            if not value:
                raise SettingsError(f"setting {name} is missing (the {hint})")
            if not pattern.fullmatch(value):
                raise SettingsError(f"setting {name}={value!r} is not a valid {hint}")
            return value

        state_store = _choice(
            env, "PROMOTION_STATE_STORE", STATE_STORES, default="sqlite" if backend == "local" else "tables"
        )
        storage_connection = env.get("AzureWebJobsStorage", "").strip() or None
        table_endpoint = _table_endpoint(env) if not storage_connection else None
        if state_store == "tables" and not (storage_connection or table_endpoint):
            raise SettingsError(
                "setting AzureWebJobsStorage is missing (the Storage connection string for the promotion store, "
                "UseDevelopmentStorage=true for Azurite; or AzureWebJobsStorage__accountName for managed identity)"
            )
        return cls(
            backend=backend,
            subscription_id=azure("AZURE_SUBSCRIPTION_ID", _GUID, "subscription id (a GUID)"),
            staging_resource_group=azure("STAGING_RESOURCE_GROUP", _RESOURCE_GROUP, "resource group name"),
            staging_workspace=azure("STAGING_WORKSPACE", _WORKSPACE, "workspace name"),
            registry_name=azure("REGISTRY_NAME", _WORKSPACE, "registry name"),
            registry_location=azure("REGISTRY_LOCATION", _LOCATION, "Azure region name, such as westeurope"),
            production_resource_group=azure("PRODUCTION_RESOURCE_GROUP", _RESOURCE_GROUP, "resource group name"),
            production_workspace=azure("PRODUCTION_WORKSPACE", _WORKSPACE, "workspace name"),
            policy_file=Path(env.get("PROMOTION_POLICY_FILE", "").strip() or "promotion-policy.json"),
            local_root=Path(env.get("PROMOTION_LOCAL_ROOT", "").strip() or ".promotion"),
            state_store=state_store,
            storage_connection=storage_connection,
            storage_table_endpoint=table_endpoint,
        )


def workspace_resource_id(subscription_id: str, resource_group: str, workspace: str) -> str:
    return (
        f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.MachineLearningServices/workspaces/{workspace}"
    )


def _table_endpoint(env: Mapping[str, str]) -> str | None:
    """The Functions host's identity-based storage settings, as its docs name them."""
    uri = env.get("AzureWebJobsStorage__tableServiceUri", "").strip()
    if uri:
        if not uri.startswith("https://"):
            raise SettingsError(f"setting AzureWebJobsStorage__tableServiceUri={uri!r} must be an https:// URL")
        return uri
    account = env.get("AzureWebJobsStorage__accountName", "").strip()
    if not account:
        return None
    if not _STORAGE_ACCOUNT.fullmatch(account):
        raise SettingsError(f"setting AzureWebJobsStorage__accountName={account!r} is not a valid storage account name")
    return f"https://{account}.table.core.windows.net"


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], *, default: str) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in allowed:
        raise SettingsError(f"setting {name}={value!r} must be one of: {', '.join(allowed)}")
    return value
