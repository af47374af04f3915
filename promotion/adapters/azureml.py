"""Azure ML behind the promotion ports.

- Staging and the registry go through Azure Resource Manager's public, versioned REST API (api-version
  2024-04-01), sent with azure-mgmt-core's ARMPipelineClient: model version reads and listings, the copy
  (`ModelVersions_Publish`, a long-running operation that is started here and never waited for), and the
  registry's tag update. See the README ("Why ARM for the copy") for the options measured.
- Production goes through azure-ai-ml's public MLClient operations for online endpoints and deployments.

Every Azure import happens inside a function, so importing this module costs nothing at cold start, and nothing
outside this module imports an Azure SDK. Clients are built once per process, on first use, with explicit
timeouts, bounded retries (a server asking to wait longer than a few seconds is answered later, by the next
event delivery or timer run, not by sleeping in this invocation) and an explicit polling interval.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlsplit

from promotion.domain import DEPLOYMENT_MODEL_TAG, InvalidName, ModelRef, ModelVersion, validate_model_name
from promotion.ports import (
    AlreadyExists,
    CopyProgress,
    CopyRefused,
    CopyStatus,
    DeploymentFailed,
    DeploymentPlan,
    EndpointState,
    Progress,
)
from promotion.redaction import kept
from promotion.settings import Settings, SettingsError

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.core.credentials import TokenCredential

T = TypeVar("T")

ARM = "https://management.azure.com"
API_VERSION = "2024-04-01"
# Every HTTP call: a connection must open within this, and an answer arrive within that.
CONNECTION_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = 30
# A throttled or busy service that asks to be called back later than this is answered with an error instead of
# a sleep: Event Grid redelivers, and timers run again within a minute.
MAX_RETRY_AFTER_SECONDS = 5
RETRIES = 2
# The SDK's own pollers of production operations run on daemon threads that no invocation waits for; this is
# how often they ask (azure-ai-ml's default is 30 s).
POLLING_INTERVAL_SECONDS = 15
# How many lines of a failed deployment's container log are kept with the failure, before capping and redaction.
FAILED_LOG_LINES = 40


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
        return _workspace_path(s.subscription_id, s.staging_resource_group, s.staging_workspace)

    @property
    def registry_path(self) -> str:
        """The registry's ARM path. Its resource group is a setting, or looked up once per process by name."""

        def find() -> str:
            s = self.settings
            group = s.registry_resource_group or self.arm.registry_resource_group(
                s.registry_subscription_id, s.registry_name
            )
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


def bounded_retry_policy(retry_total: int) -> Any:
    """azure-core's RetryPolicy, except that it does not retry when the service asks to wait longer than
    MAX_RETRY_AFTER_SECONDS (azure-core would sleep that long, without a limit)."""
    from azure.core.pipeline.policies import RetryPolicy

    class BoundedRetryPolicy(RetryPolicy):
        def is_retry(self, settings: Any, response: Any) -> bool:
            wait = self.get_retry_after(response)
            return (wait is None or wait <= MAX_RETRY_AFTER_SECONDS) and super().is_retry(settings, response)

    return BoundedRetryPolicy(retry_total=retry_total, retry_backoff_factor=0.5, retry_backoff_max=4)


class Arm:
    """Azure Resource Manager requests through azure-mgmt-core, with the policies chosen one by one: no
    automatic resource-provider registration (it sleeps 10 s between checks), bounded retries, and timeouts."""

    def __init__(self, credential: TokenCredential, *, retry_total: int) -> None:
        from azure.core.configuration import Configuration
        from azure.core.pipeline import policies
        from azure.mgmt.core import ARMPipelineClient
        from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy, ARMHttpLoggingPolicy

        config: Any = Configuration()
        config.user_agent_policy = policies.UserAgentPolicy(sdk_moniker="azureml-model-promotion")
        config.headers_policy = policies.HeadersPolicy()
        config.proxy_policy = policies.ProxyPolicy()
        config.redirect_policy = policies.RedirectPolicy()
        config.retry_policy = bounded_retry_policy(retry_total)
        config.custom_hook_policy = policies.CustomHookPolicy()
        config.logging_policy = policies.NetworkTraceLoggingPolicy()
        config.http_logging_policy = ARMHttpLoggingPolicy()
        config.authentication_policy = ARMChallengeAuthenticationPolicy(credential, f"{ARM}/.default")
        self._client = ARMPipelineClient(
            base_url=ARM,
            config=config,
            per_call_policies=[],
            connection_timeout=CONNECTION_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
        )

    def send(self, method: str, url: str, body: Any = None, **params: str) -> Any:
        """One request; the raw response, whatever its status."""
        from azure.core.rest import HttpRequest

        if not _is_arm_url(url):
            url = f"{ARM}{url}"
        query = {"api-version": API_VERSION, **params} if "api-version=" not in url else params
        return self._client.send_request(HttpRequest(method, url, params=query, json=body))

    def get(self, path: str, **params: str) -> dict[str, Any] | None:
        """The resource, or None when ARM answers 404."""
        response = self.send("GET", path, **params)
        if response.status_code == 404:
            return None
        _raise_for(response)
        return response.json()

    def list(self, path: str, **params: str) -> Iterator[dict[str, Any]]:
        """Every item of a paged listing, following nextLink (one request per page); nothing for a 404."""
        response = self.send("GET", path, **params)
        while True:
            if response.status_code == 404:
                return
            _raise_for(response)
            page = response.json()
            yield from page.get("value", [])
            next_link = page.get("nextLink")
            if not next_link:
                return
            if not _is_arm_url(next_link):  # never send our token anywhere else
                raise ValueError(f"refusing to follow a nextLink outside {ARM}")
            response = self.send("GET", next_link)

    def registry_resource_group(self, subscription_id: str, registry: str) -> str:
        path = f"/subscriptions/{subscription_id}/providers/Microsoft.MachineLearningServices/registries"
        for item in self.list(path):
            if item.get("name", "").lower() == registry.lower():
                match = re.search(r"/resourceGroups/([^/]+)/", item.get("id", ""), re.IGNORECASE)
                if match:
                    return match[1]
        raise SettingsError(
            "setting REGISTRY_NAME names no registry the app's identity can see in its subscription: set "
            "REGISTRY_RESOURCE_GROUP (and REGISTRY_SUBSCRIPTION_ID if the registry lives in another subscription), "
            "or give the identity Reader on the registry"
        )


class StagingModels:
    """WorkspaceModels for the staging workspace."""

    def __init__(self, backend: AzureMLBackend) -> None:
        self._backend = backend

    def get(self, ref: ModelRef) -> ModelVersion | None:
        body = self._backend.arm.get(f"{self._backend.staging_path}{_version_path(ref)}")
        return None if body is None else _to_model_version(ref, body)

    def names(self) -> list[str]:
        containers = self._backend.arm.list(f"{self._backend.staging_path}/models", listViewType="ActiveOnly")
        return sorted({name for item in containers if (name := _valid_name(item.get("name")))})

    def versions(self, name: str) -> list[ModelVersion]:
        return _versions(self._backend.arm, f"{self._backend.staging_path}/models/{name}", listViewType="ActiveOnly")


class RegistryModels:
    """RegistryModels for the shared registry."""

    def __init__(self, backend: AzureMLBackend) -> None:
        self._backend = backend

    def get(self, ref: ModelRef) -> ModelVersion | None:
        body = self._backend.arm.get(f"{self._backend.registry_path}{_version_path(ref)}")
        return None if body is None else _to_model_version(ref, body)

    def versions(self, name: str) -> list[ModelVersion]:
        return _versions(self._backend.arm, f"{self._backend.registry_path}/models/{name}")

    def start_copy(self, model: ModelVersion) -> str:
        """POST …/workspaces/{staging}/models/{name}/versions/{version}/publish: one request, never a wait.

        The handle is the operation's status URL (Azure-AsyncOperation when the service gives one, else
        Location), or `done:` when the service finished at once.
        """
        body = {
            "destinationName": model.name,
            "destinationVersion": model.version,
            "registryName": self._backend.settings.registry_name,
        }
        response = self._backend.arm.send(
            "POST", f"{self._backend.staging_path}{_version_path(model.ref)}/publish", body
        )
        if response.status_code == 409:
            raise AlreadyExists(f"the registry already holds {model.ref}: {_error_message(response)}")
        if _permanent_status(response.status_code):
            raise CopyRefused(
                f"the registry refused to copy {model.ref} ({response.status_code}): {_error_message(response)}"
            )
        _raise_for(response)
        if response.status_code == 200:
            return "done:"
        for header in ("Azure-AsyncOperation", "Location"):
            url = response.headers.get(header)
            if url and _is_arm_url(url):
                return f"{header}:{url}"
        raise CopyRefused(f"the publish of {model.ref} answered {response.status_code} without an operation to follow")

    def copy_status(self, operation: str) -> CopyStatus:
        """One GET of the operation's status URL: Azure-AsyncOperation answers a status document, Location
        answers 202 while running and 200 once done; an operation the service has forgotten counts as done,
        and the registry itself is checked next."""
        kind, _, url = operation.partition(":")
        if kind == "done":
            return CopyStatus(CopyProgress.SUCCEEDED)
        if kind not in ("Azure-AsyncOperation", "Location") or not _is_arm_url(url):
            return CopyStatus(CopyProgress.FAILED, "the copy's operation handle is not one this app makes")
        response = self._backend.arm.send("GET", url)
        if response.status_code == 404:
            return CopyStatus(CopyProgress.SUCCEEDED, "the service no longer knows the operation")
        if _permanent_status(response.status_code):
            return CopyStatus(CopyProgress.FAILED, _error_message(response))
        _raise_for(response)
        if kind == "Location":
            return CopyStatus(CopyProgress.RUNNING if response.status_code == 202 else CopyProgress.SUCCEEDED)
        document = response.json() if response.text() else {}
        status = str(document.get("status", "")).lower()
        if status == "succeeded":
            return CopyStatus(CopyProgress.SUCCEEDED)
        if status in ("failed", "canceled", "cancelled"):
            error = document.get("error") or {}
            message = str(error.get("message") or f"the copy ended {status}")
            return CopyStatus(CopyProgress.FAILED, kept(message))
        return CopyStatus(CopyProgress.RUNNING)

    def tag(
        self,
        ref: ModelRef,
        tags: Mapping[str, str],
        description: str | None,
        *,
        check: Callable[[ModelVersion], None] = lambda held: None,
    ) -> ModelVersion | None:
        """GET the registry version, then PUT it back with the tags added: every other field as it was read,
        because a registry version's content (modelUri, modelType, properties, flavors) cannot change."""
        path = f"{self._backend.registry_path}{_version_path(ref)}"
        held = self._backend.arm.get(path)
        if held is None:
            return None
        check(_to_model_version(ref, held))
        properties = {key: value for key, value in held["properties"].items() if key != "provisioningState"}
        properties["tags"] = {**(properties.get("tags") or {}), **tags}
        properties["description"] = properties.get("description") or description
        response = self._backend.arm.send("PUT", path, {"properties": properties})
        _raise_for(response)
        # 200/201 answer the version; a 202 accepted the change, which the next read shows.
        answered = (
            response.json() if response.status_code in (200, 201) and response.text() else {"properties": properties}
        )
        return _to_model_version(ref, answered)


class ProductionDeployer:
    """Deployer for the production workspace. Each step starts the work it finds missing and never waits for it:
    the SDK's poller follows the operation on a daemon thread, and the next call reads where the resource stands.
    Errors that retrying will not fix become DeploymentFailed with the service's message."""

    def __init__(self, backend: AzureMLBackend) -> None:
        self._backend = backend

    @property
    def _client(self) -> MLClient:
        return self._backend.production_client

    def ensure_endpoint(self, plan: DeploymentPlan) -> Progress:
        from azure.ai.ml.entities import ManagedOnlineEndpoint

        what = f"online endpoint {plan.endpoint}"
        with _permanent_failures(what):
            endpoint = _or_none(lambda: self._client.online_endpoints.get(plan.endpoint))
            if endpoint is None:
                new = ManagedOnlineEndpoint(name=plan.endpoint, auth_mode="key")
                return _start(lambda: self._client.online_endpoints.begin_create_or_update(new))
            return _progress(endpoint.provisioning_state, what)

    def ensure_deployment(self, plan: DeploymentPlan) -> Progress:
        from azure.ai.ml.entities import ManagedOnlineDeployment

        what = f"online deployment {plan.deployment} on endpoint {plan.endpoint}"
        with _permanent_failures(what):
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
            if not _serves(deployment.model, plan.model):
                raise DeploymentFailed(f"{what} already exists and serves {deployment.model}, not {plan.model_uri}")
            try:
                return _progress(deployment.provisioning_state, what)
            except DeploymentFailed as failure:
                raise DeploymentFailed(f"{failure}{self._log_tail(plan)}") from None

    def endpoint(self, name: str) -> EndpointState | None:
        with _permanent_failures(f"online endpoint {name}"):
            endpoint = _or_none(lambda: self._client.online_endpoints.get(name))
            if endpoint is None:
                return None
            models = {d.name: _served_model(d) for d in self._client.online_deployments.list(name)}
        traffic = {deployment: int(share) for deployment, share in (endpoint.traffic or {}).items() if int(share)}
        busy = _state(endpoint.provisioning_state).lower() not in _TERMINAL
        return EndpointState(traffic=traffic, models=models, busy=busy)

    def set_traffic(self, endpoint: str, traffic: Mapping[str, int]) -> Progress:
        what = f"online endpoint {endpoint}"
        with _permanent_failures(what):
            current = _or_none(lambda: self._client.online_endpoints.get(endpoint))
            if current is None:
                raise DeploymentFailed(f"{what} does not exist")
            progress = _progress(current.provisioning_state, what)
            live = {name: int(share) for name, share in (current.traffic or {}).items() if int(share)}
            desired = {name: int(share) for name, share in traffic.items() if int(share)}
            if progress is Progress.PENDING or live == desired:
                return progress  # an update is under way (perhaps ours), or the traffic is already right
            current.traffic = desired
            return _start(lambda: self._client.online_endpoints.begin_create_or_update(current))

    def deployments_of(self, model: ModelRef) -> list[dict[str, Any]]:
        uri = self._backend.settings.registry_model_uri(model)
        found = []
        for endpoint in self._client.online_endpoints.list():
            traffic = endpoint.traffic or {}
            for deployment in self._client.online_deployments.list(endpoint.name):
                # The tag marks what this app deployed; the URI also finds deployments made by hand.
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
        """The end of the failed deployment's container log, capped and with secrets redacted."""
        from azure.core.exceptions import AzureError

        try:
            logs = self._client.online_deployments.get_logs(plan.deployment, plan.endpoint, lines=FAILED_LOG_LINES)
        except AzureError:
            return ""  # the failure is already known; a missing log must not hide it
        logs = kept(logs or "").strip()
        return f"; container log:\n{logs}" if logs else ""


# --- helpers ---------------------------------------------------------------------------------------

_TERMINAL = ("succeeded", "failed", "canceled")
# Words of ARM error codes and messages that no retry will change.
_PERMANENT_MARKERS = ("quota", "sku", "region", "location", "notavailable", "not available", "invalid", "forbidden")
_IN_PROGRESS_MARKERS = ("in progress", "inprogress", "another operation", "being updated", "currently updating")


def _workspace_path(subscription_id: str, resource_group: str, workspace: str) -> str:
    return (
        f"/subscriptions/{subscription_id}/resourceGroups/{quote(resource_group, safe='')}"
        f"/providers/Microsoft.MachineLearningServices/workspaces/{workspace}"
    )


def _version_path(ref: ModelRef) -> str:
    # ModelRef allows only URL-safe characters; quoting keeps that true should the rule ever widen.
    return f"/models/{quote(ref.name, safe='')}/versions/{quote(ref.version, safe='')}"


def _versions(arm: Arm, model_path: str, **params: str) -> list[ModelVersion]:
    found = []
    for item in arm.list(f"{model_path}/versions", **params):
        name = model_path.rsplit("/", 1)[-1]
        try:
            found.append(_to_model_version(ModelRef.parse(name, item.get("name")), item))
        except InvalidName:
            continue  # a version this app could not name in a URL; never copied
    return found


def _valid_name(name: object) -> str | None:
    try:
        return validate_model_name(name)
    except InvalidName:
        return None


def _is_arm_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" and parts.netloc.lower() == urlsplit(ARM).netloc


def _permanent_status(status: int) -> bool:
    return 400 <= status < 500 and status not in (404, 408, 409, 429)


def _raise_for(response: Any) -> None:
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.core.exceptions import ARMErrorFormat

    if not 200 <= response.status_code < 300:
        raise HttpResponseError(response=response, error_format=ARMErrorFormat)


def _error_message(response: Any) -> str:
    try:
        error = response.json().get("error") or {}
    except ValueError:
        error = {}
    message = error.get("message") or response.reason or "no message"
    return kept(f"{error.get('code', '')}: {message}".lstrip(": "))


def _to_model_version(ref: ModelRef, body: Mapping[str, Any]) -> ModelVersion:
    """From an ARM model version resource (camelCase, as the REST API sends it)."""
    p = body.get("properties") or {}
    return ModelVersion(
        ref=ref,
        type=_model_type(p.get("modelType")),
        tags={key: str(value) for key, value in (p.get("tags") or {}).items()},
        properties={key: str(value) for key, value in (p.get("properties") or {}).items()},
        description=p.get("description"),
        path=p.get("modelUri"),
    )


def _model_type(value: Any) -> str:
    """ARM spells model types `mlflow_model` or `MLFlowModel`; the app uses the azure-ai-ml spelling."""
    text = str(value or "custom_model")
    return {"mlflowmodel": "mlflow_model", "custommodel": "custom_model", "tritonmodel": "triton_model"}.get(
        text.replace("_", "").lower(), text
    )


def _served_model(deployment: Any) -> str | None:
    """The "name:version" a deployment serves: our tag, or the tail of its registry model URI."""
    tagged = (deployment.tags or {}).get(DEPLOYMENT_MODEL_TAG)
    if tagged:
        return tagged
    match = re.search(r"/models/([^/]+)/versions/([^/]+)$", deployment.model or "")
    return f"{match[1]}:{match[2]}" if match else None


def _serves(model_uri: str | None, model: ModelRef) -> bool:
    # Compared by the tail only: the service may spell the registry part of the URI differently. Names and
    # versions compare exactly: taxi.fare is not taxi-fare.
    return (model_uri or "").endswith(f"/models/{model.name}/versions/{model.version}")


def _or_none(read: Callable[[], T]) -> T | None:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return read()
    except ResourceNotFoundError:
        return None


@contextlib.contextmanager
def _permanent_failures(what: str) -> Iterator[None]:
    """Within the block, service errors that retrying will not fix become DeploymentFailed with the service's
    message: 400, 403, 404, a 409 other than "an operation is in progress", and quota, SKU, region or name
    errors. Throttling, outages, timeouts and connection errors pass through, to be retried at the next run."""
    from azure.core.exceptions import HttpResponseError

    try:
        yield
    except HttpResponseError as error:
        if _is_permanent(error):
            raise DeploymentFailed(f"{what}: {_describe(error)}") from None
        raise


def _is_permanent(error: Any) -> bool:
    status = error.status_code or 0
    text = _describe(error).lower()
    if status == 409:
        return not any(marker in text for marker in _IN_PROGRESS_MARKERS)
    if status in (400, 403, 404):
        return True
    if status in (408, 429) or status >= 500:
        return False
    return any(marker in text for marker in _PERMANENT_MARKERS)


def _describe(error: Any) -> str:
    code = getattr(getattr(error, "error", None), "code", None)
    message = getattr(getattr(error, "error", None), "message", None) or error.message or str(error)
    text = f"{code}: {message}" if code and code not in message else message
    return kept(f"({error.status_code}) {text}")


def _start(begin: Callable[[], Any]) -> Progress:
    """Start a long-running operation and return without waiting for it."""
    from azure.core.exceptions import HttpResponseError

    try:
        begin()
    except HttpResponseError as error:
        if error.status_code == 409 and not _is_permanent(error):
            return Progress.PENDING  # another operation on the resource is under way, such as our own earlier one
        raise
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
