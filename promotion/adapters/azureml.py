"""Azure ML behind the promotion ports: the staging workspace's models, the shared registry, and production's
online endpoints, all through azure-ai-ml (pinned in requirements.txt).

Every Azure import happens inside a function, so importing this module costs nothing at cold start, and nothing
outside this module imports an Azure SDK.

Everything that costs HTTP to set up is built once per process, on first use, and shared by every invocation:
the credential, one MLClient per scope (the registry's asks the registry discovery service where the registry
lives), and the staging workspace's GUID and location, which name the source of every registry import.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from promotion.domain import DEPLOYMENT_MODEL_TAG, Lineage, ModelRef, ModelVersion, split_traffic
from promotion.ports import AlreadyExists, DeploymentFailed, DeploymentPlan, Progress
from promotion.settings import Settings

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import Model
    from azure.core.credentials import TokenCredential

T = TypeVar("T")

# How many lines of a failed deployment's container log go into DeploymentFailed: the service keeps the reason
# for a failure in its operation status, which a later invocation cannot see, so the log tail is the best we have.
FAILED_LOG_LINES = 20


class AzureMLBackend:
    """The three Azure ML ports, sharing one credential and lazily built, cached clients."""

    def __init__(
        self, settings: Settings, *, credential: TokenCredential | None = None, retry_total: int | None = None
    ) -> None:
        self.settings = settings
        self._credential = credential
        # None keeps azure-core's retry policy; 0 leaves retries to Event Grid and the job queue.
        self._client_options: dict[str, Any] = {} if retry_total is None else {"retry_total": retry_total}
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

    def _ml_client(self, **scope: str) -> MLClient:
        from azure.ai.ml import MLClient

        return MLClient(self.credential, subscription_id=self.settings.subscription_id, **scope, **self._client_options)

    def _workspace_client(self, resource_group: str, workspace: str) -> MLClient:
        return self._ml_client(resource_group_name=resource_group, workspace_name=workspace)

    @property
    def staging_client(self) -> MLClient:
        s = self.settings
        return self._once("staging", lambda: self._workspace_client(s.staging_resource_group, s.staging_workspace))

    @property
    def production_client(self) -> MLClient:
        s = self.settings
        return self._once(
            "production", lambda: self._workspace_client(s.production_resource_group, s.production_workspace)
        )

    @property
    def registry_client(self) -> MLClient:
        # The constructor makes the discovery call; the registry's own subscription and resource group come from it.
        return self._once("registry", lambda: self._ml_client(registry_name=self.settings.registry_name))

    @property
    def staging_asset_prefix(self) -> str:
        """`azureml://locations/{location}/workspaces/{GUID}`: how a registry import names the staging workspace."""

        def read() -> str:
            workspace = self.staging_client.workspaces.get(self.settings.staging_workspace)
            # The GUID has no public accessor on Workspace; MLClient itself reads this attribute the same way.
            return f"azureml://locations/{workspace.location}/workspaces/{workspace._workspace_id}"

        return self._once("staging_asset_prefix", read)


class StagingModels:
    """WorkspaceModels for the staging workspace."""

    def __init__(self, backend: AzureMLBackend) -> None:
        self._backend = backend

    def get(self, ref: ModelRef) -> ModelVersion | None:
        return _get_model(self._backend.staging_client, ref)


class RegistryModels:
    """RegistryModels for the shared registry."""

    def __init__(self, backend: AzureMLBackend) -> None:
        self._backend = backend

    def get(self, ref: ModelRef) -> ModelVersion | None:
        return _get_model(self._backend.registry_client, ref)

    def copy_from_workspace(self, model: ModelVersion, lineage: Lineage) -> ModelVersion:
        """Import the staging version into the registry (the service copies the artifacts), then tag the copy.

        Costs 3 requests when the import answers 202 and is done at its first poll: the import, its poll, the PUT
        of the tags. The caller has already checked that the registry lacks the version.
        """
        from azure.core.exceptions import HttpResponseError

        registry = _RegistryRest(self._backend.registry_client)
        source = f"{self._backend.staging_asset_prefix}/models/{model.name}/versions/{model.version}"
        try:
            imported = registry.import_model(model.ref, source)
        except HttpResponseError as error:
            if error.status_code == 409:  # another instance copied it since the caller looked
                raise AlreadyExists(f"the registry already holds {model.ref}") from error
            raise
        if not _is_model_version(imported):
            imported = registry.get(model.ref)
        return _to_model_version(model.ref, registry.put(model.ref, _with_lineage(imported, model, lineage)))

    def add_lineage(self, model: ModelVersion, lineage: Lineage) -> ModelVersion:
        """Tag an existing registry copy the way copy_from_workspace does (one GET, one PUT).

        Finishes a copy whose tagging failed after the import succeeded: the import cannot carry tags, so
        that window exists, and the version is immutable but its tags are not.
        """
        registry = _RegistryRest(self._backend.registry_client)
        tagged = registry.put(model.ref, _with_lineage(registry.get(model.ref), model, lineage))
        return _to_model_version(model.ref, tagged)


class _RegistryRest:
    """The registry REST calls that azure-ai-ml makes inside `models.create_or_update`, without its extra reads.

    Why private SDK helpers: the public import, `registry_client.models.create_or_update(WorkspaceAssetReference(...))`,
    first lists the model's versions (to tell evaluators from models) and GETs the version to refuse a duplicate:
    two requests per event that the service has just made itself. These helpers are what create_or_update calls
    next, with the registry client's own pipeline (credential, retries). Their names are private, so azure-ai-ml
    is pinned (==1.35.2); the contract tests fail if they move.
    """

    def __init__(self, registry_client: MLClient) -> None:
        models = registry_client.models
        self._client = models._registry_service_client
        self._resource_group = models._resource_group_name
        self._registry = models._registry_name

    def import_model(self, ref: ModelRef, source_asset_id: str) -> dict[str, Any] | None:
        """POST .../registries/{r}/import and wait for it; the final body, if the service sends one."""
        from azure.ai.ml._utils._registry_utils import begin_import_registry_asset

        body = {
            "properties": {
                "referenceType": "Id",
                "destinationName": ref.name,
                "destinationVersion": ref.version,
                "sourceAssetId": source_asset_id,
            }
        }
        return begin_import_registry_asset(self._client, self._resource_group, self._registry, body)

    def get(self, ref: ModelRef) -> dict[str, Any]:
        from azure.ai.ml._utils._registry_utils import get_registry_versioned_asset

        return get_registry_versioned_asset(
            self._client, "models", ref.name, ref.version, self._resource_group, self._registry
        )

    def put(self, ref: ModelRef, body: dict[str, Any]) -> dict[str, Any]:
        from azure.ai.ml._utils._registry_utils import begin_create_or_update_registry_versioned_asset

        return begin_create_or_update_registry_versioned_asset(
            self._client, "models", ref.name, ref.version, self._resource_group, self._registry, body
        )


def _is_model_version(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("properties"), dict) and "modelUri" in body["properties"]


def _with_lineage(version: dict[str, Any], source: ModelVersion, lineage: Lineage) -> dict[str, Any]:
    """The registry version as read, with the source's tags and description and the lineage tags added.

    Whether an import copies tags is undocumented, so they are always set here. Type, properties and
    artifacts are the import's own copy and stay as they are.
    """
    properties = {key: value for key, value in version["properties"].items() if key != "provisioningState"}
    properties["tags"] = {**(properties.get("tags") or {}), **source.tags, **lineage.as_tags()}
    if not properties.get("description"):
        properties["description"] = source.description
    return {"properties": properties}


class ProductionDeployer:
    """Deployer for the production workspace. Each step starts the work it finds missing and never waits for it:
    the SDK's poller follows the operation on a daemon thread, and the next call reads where the resource stands."""

    def __init__(self, backend: AzureMLBackend) -> None:
        self._backend = backend

    @property
    def _client(self) -> MLClient:
        return self._backend.production_client

    def ensure_endpoint(self, plan: DeploymentPlan) -> Progress:
        from azure.ai.ml.entities import ManagedOnlineEndpoint

        endpoint = _or_none(lambda: self._client.online_endpoints.get(plan.endpoint))
        if endpoint is None:
            new = ManagedOnlineEndpoint(name=plan.endpoint, auth_mode="key")
            return _start(lambda: self._client.online_endpoints.begin_create_or_update(new))
        return _progress(endpoint.provisioning_state, f"online endpoint {plan.endpoint}")

    def ensure_deployment(self, plan: DeploymentPlan) -> Progress:
        from azure.ai.ml.entities import ManagedOnlineDeployment

        deployment = _or_none(lambda: self._client.online_deployments.get(plan.deployment, plan.endpoint))
        if deployment is None:
            new = ManagedOnlineDeployment(
                name=plan.deployment,
                endpoint_name=plan.endpoint,
                model=plan.model_uri,
                instance_type=plan.instance_type,
                instance_count=plan.instance_count,
                tags=dict(plan.tags),
            )
            return _start(lambda: self._client.online_deployments.begin_create_or_update(new))
        what = f"online deployment {plan.deployment} on endpoint {plan.endpoint}"
        if not _serves(deployment.model, plan.model):
            raise DeploymentFailed(f"{what} already exists and serves {deployment.model}, not {plan.model_uri}")
        try:
            return _progress(deployment.provisioning_state, what)
        except DeploymentFailed as failure:
            raise DeploymentFailed(f"{failure}{self._log_tail(plan)}") from None

    def ensure_traffic(self, plan: DeploymentPlan) -> Progress:
        what = f"online endpoint {plan.endpoint}"
        endpoint = _or_none(lambda: self._client.online_endpoints.get(plan.endpoint))
        if endpoint is None:
            raise DeploymentFailed(f"{what} does not exist")
        current = {name: int(share) for name, share in (endpoint.traffic or {}).items() if int(share)}
        desired = split_traffic(current, plan.deployment, plan.traffic_percent)
        progress = _progress(endpoint.provisioning_state, what)
        if progress is Progress.PENDING or current == desired:
            return progress  # an update is under way (perhaps ours), or the traffic is already right
        endpoint.traffic = desired
        return _start(lambda: self._client.online_endpoints.begin_create_or_update(endpoint))

    def deployments_of(self, model: ModelRef) -> list[dict[str, Any]]:
        uri = self._backend.settings.registry_model_uri(model)
        found = []
        for endpoint in self._client.online_endpoints.list():
            traffic = endpoint.traffic or {}
            for deployment in self._client.online_deployments.list(endpoint.name):
                # The tag marks what the service deployed; the URI also finds deployments made by hand.
                if (deployment.tags or {}).get(DEPLOYMENT_MODEL_TAG) == str(model) or deployment.model == uri:
                    found.append(
                        {
                            "endpoint": endpoint.name,
                            "deployment": deployment.name,
                            "traffic": int(traffic.get(deployment.name, 0)),
                            "state": _state(deployment.provisioning_state),
                            "model": deployment.model,
                        }
                    )
        return found

    def _log_tail(self, plan: DeploymentPlan) -> str:
        """The end of the failed deployment's container log, or nothing when there is none to read."""
        from azure.core.exceptions import HttpResponseError

        try:
            logs = self._client.online_deployments.get_logs(plan.deployment, plan.endpoint, lines=FAILED_LOG_LINES)
        except HttpResponseError:
            return ""  # the failure is already known; a missing log must not hide it
        return f"; container log:\n{logs.strip()}" if logs.strip() else ""


def _get_model(client: MLClient, ref: ModelRef) -> ModelVersion | None:
    model = _or_none(lambda: client.models.get(ref.name, ref.version))
    return None if model is None else _to_model_version(ref, model)


def _to_model_version(ref: ModelRef, model: Model | dict[str, Any]) -> ModelVersion:
    """From the SDK's Model or a raw registry version body (camelCase, as the REST API sends it)."""
    if isinstance(model, dict):
        p = model["properties"]
        fields = (p.get("modelType"), p.get("tags"), p.get("properties"), p.get("description"), p.get("modelUri"))
    else:
        fields = (model.type, model.tags, model.properties, model.description, model.path)
    type_, tags, properties, description, path = fields
    return ModelVersion(
        ref=ref,
        type=type_ or "custom_model",
        tags={key: str(value) for key, value in (tags or {}).items()},
        properties={key: str(value) for key, value in (properties or {}).items()},
        description=description,
        path=path,
    )


def _serves(model_uri: str | None, model: ModelRef) -> bool:
    # Compared by the tail only: the service may spell the registry part of the URI differently.
    return (model_uri or "").lower().endswith(f"/models/{model.name}/versions/{model.version}".lower())


def _or_none(read: Callable[[], T]) -> T | None:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return read()
    except ResourceNotFoundError:
        return None


def _start(begin: Callable[[], Any]) -> Progress:
    """Start a long-running operation and return without waiting for it."""
    from azure.core.exceptions import HttpResponseError

    try:
        begin()
    except HttpResponseError as error:
        if error.status_code != 409:
            raise
        # 409: another operation on the resource is under way, such as another instance's identical request.
    return Progress.PENDING


def _progress(provisioning_state: Any, what: str) -> Progress:
    state = _state(provisioning_state)
    if state.lower() == "succeeded":
        return Progress.READY
    if state.lower() in ("failed", "canceled"):
        raise DeploymentFailed(f"{what}: provisioning {state}")
    return Progress.PENDING


def _state(provisioning_state: Any) -> str:
    # Endpoints report an enum, deployments a plain string.
    return str(getattr(provisioning_state, "value", provisioning_state) or "")
