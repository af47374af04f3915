"""Azure ML behind the promotion ports, by concern:

- `arm`: Azure Resource Manager requests through azure-mgmt-core, with bounded retries and timeouts;
- `models`: the staging and registry ports on ARM's public, versioned REST API (reads, listings, the copy through
  `ModelVersions_Publish`, the registry's tag update);
- `production`: the production deployer, through azure-ai-ml's public MLClient operations.

Every Azure import happens inside a function, so importing this package costs nothing at cold start, and nothing
outside it imports an Azure SDK. Clients are built once per process, on first use, with explicit timeouts, bounded
retries (a server asking to wait longer than a few seconds is answered later, by the next event delivery or timer
run, not by sleeping in this invocation) and an explicit polling interval.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from promotion.adapters.azureml.arm import (
    CONNECTION_TIMEOUT_SECONDS,
    READ_TIMEOUT_SECONDS,
    RETRIES,
    Arm,
    bounded_retry_policy,
    workspace_path,
)
from promotion.adapters.azureml.models import RegistryModels, StagingModels
from promotion.adapters.azureml.production import POLLING_INTERVAL_SECONDS, ProductionDeployer
from promotion.settings import Settings

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.core.credentials import TokenCredential

__all__ = [
    "CONNECTION_TIMEOUT_SECONDS",
    "POLLING_INTERVAL_SECONDS",
    "READ_TIMEOUT_SECONDS",
    "AzureMLBackend",
    "ProductionDeployer",
    "RegistryModels",
    "StagingModels",
]

T = TypeVar("T")
log = logging.getLogger("promotion")


class AzureMLBackend:
    """The three Azure ML ports, sharing one credential and lazily built, cached clients."""

    def __init__(
        self, settings: Settings, *, credential: TokenCredential | None = None, retry_total: int | None = None
    ) -> None:
        self.settings = settings
        self._credential = credential
        self._retry_total = RETRIES if retry_total is None else retry_total
        self._built: dict[str, Any] = {}
        self._lock = threading.RLock()  # re-entrant: building a client builds the credential first
        self.staging = StagingModels(self)
        self.registry = RegistryModels(self)
        self.production = ProductionDeployer(self)

    def _once(self, key: str, build: Callable[[], T]) -> T:
        """Build a value on first use, once per process even when concurrent invocations race for it."""
        if key not in self._built:
            with self._lock:
                if key not in self._built:
                    self._built[key] = build()
        return self._built[key]

    @property
    def credential(self) -> TokenCredential:
        def build() -> TokenCredential:
            from azure.identity import DefaultAzureCredential

            return DefaultAzureCredential()

        return self._credential if self._credential is not None else self._once("credential", build)

    @property
    def arm(self) -> Arm:
        return self._once("arm", lambda: Arm(self.credential, retry_total=self._retry_total))

    @property
    def staging_path(self) -> str:
        s = self.settings
        return workspace_path(s.subscription_id, s.staging_resource_group, s.staging_workspace)

    @property
    def registry_path(self) -> str:
        """The registry's ARM path. Its resource group is a setting, or looked up once per process by name."""

        def find() -> str:
            s = self.settings
            group = s.registry_resource_group
            if not group:
                log.warning(
                    "REGISTRY_RESOURCE_GROUP is not set: the registry is looked up in its subscription's listing, "
                    "which needs Microsoft.MachineLearningServices/registries/read on the whole subscription"
                )
                group = self.arm.registry_resource_group(s.registry_subscription_id, s.registry_name)
            return (
                f"/subscriptions/{s.registry_subscription_id}/resourceGroups/{quote(group, safe='')}"
                f"/providers/Microsoft.MachineLearningServices/registries/{s.registry_name}"
            )

        return self._once("registry_path", find)

    @property
    def production_client(self) -> MLClient:
        def build() -> MLClient:
            from azure.ai.ml import MLClient

            s = self.settings
            return MLClient(
                self.credential,
                subscription_id=s.production_subscription_id,
                resource_group_name=s.production_resource_group,
                workspace_name=s.production_workspace,
                retry_policy=bounded_retry_policy(self._retry_total),
                connection_timeout=CONNECTION_TIMEOUT_SECONDS,
                read_timeout=READ_TIMEOUT_SECONDS,
                polling_interval=POLLING_INTERVAL_SECONDS,
            )

        return self._once("production", build)
