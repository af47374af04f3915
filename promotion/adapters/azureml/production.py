"""The production workspace through azure-ai-ml's public MLClient operations for online endpoints and deployments.
Each step starts the work it finds missing and never waits for it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from promotion.domain import DEPLOYMENT_MODEL_TAG, ModelRef, served_model
from promotion.ports import (
    DeploymentFailed,
    DeploymentPlan,
    EndpointState,
    OnlineDeployment,
    OnlineEndpoint,
    Progress,
)
from promotion.redaction import kept

if TYPE_CHECKING:
    from azure.ai.ml import MLClient

    from promotion.adapters.azureml import AzureMLBackend

T = TypeVar("T")

# The SDK's own pollers of production operations run on daemon threads that no invocation waits for; this is
# how often they ask (azure-ai-ml's default is 30 s).
POLLING_INTERVAL_SECONDS = 15
# How many lines of a failed deployment's container log are kept with the failure, before capping and redaction.
FAILED_LOG_LINES = 40

_TERMINAL = ("succeeded", "failed", "canceled")
# Words of ARM error codes and messages that no retry will change.
_PERMANENT_MARKERS = ("quota", "sku", "region", "location", "notavailable", "not available", "invalid", "forbidden")
_IN_PROGRESS_MARKERS = ("in progress", "inprogress", "another operation", "being updated", "currently updating")


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
                new = ManagedOnlineEndpoint(name=plan.endpoint, auth_mode="key", tags=dict(plan.endpoint_tags))
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
        return EndpointState(traffic=traffic, models=models, busy=busy, tags=dict(endpoint.tags or {}))

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

    def online_endpoints(self) -> list[OnlineEndpoint]:
        with _permanent_failures("the production workspace's online endpoints"):
            found = list(self._client.online_endpoints.list())
        return [
            OnlineEndpoint(
                name=endpoint.name,
                traffic={name: int(share) for name, share in (endpoint.traffic or {}).items() if int(share)},
                busy=_state(endpoint.provisioning_state).lower() not in _TERMINAL,
                tags=dict(endpoint.tags or {}),
            )
            for endpoint in found
        ]

    def online_deployments(self, endpoint: str) -> list[OnlineDeployment]:
        from azure.core.exceptions import ResourceNotFoundError

        with _permanent_failures(f"the deployments of online endpoint {endpoint}"):
            try:
                found = list(self._client.online_deployments.list(endpoint))
            except ResourceNotFoundError:
                return []  # the endpoint is gone
        return [
            OnlineDeployment(
                name=deployment.name,
                model=_served_model(deployment),
                model_uri=deployment.model,
                state=_state(deployment.provisioning_state),
                tags=dict(deployment.tags or {}),
            )
            for deployment in found
        ]

    def delete_deployment(self, endpoint: str, deployment: str) -> Progress:
        what = f"online deployment {deployment} on endpoint {endpoint}"
        with _permanent_failures(what):
            current = _or_none(lambda: self._client.online_deployments.get(deployment, endpoint))
            if current is None:
                return Progress.READY
            if _state(current.provisioning_state).lower() == "deleting":
                return Progress.PENDING
            return _start(lambda: self._client.online_deployments.begin_delete(deployment, endpoint))

    def _log_tail(self, plan: DeploymentPlan) -> str:
        """The end of the failed deployment's container log, capped and with secrets redacted."""
        from azure.core.exceptions import AzureError

        try:
            logs = self._client.online_deployments.get_logs(plan.deployment, plan.endpoint, lines=FAILED_LOG_LINES)
        except AzureError:
            return ""  # the failure is already known; a missing log must not hide it
        logs = kept(logs or "").strip()
        return f"; container log:\n{logs}" if logs else ""


def _served_model(deployment: Any) -> str | None:
    return served_model(deployment.tags, deployment.model)


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
