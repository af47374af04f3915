"""An in-process, stateful fake of the Azure ML REST API, for driving the real Azure SDKs in tests.

It intercepts every `requests` call (the transport azure-core uses) with the `responses` library and answers
from a few dicts: the staging and production workspaces, their models, online endpoints and deployments, and
the shared registry. It also serves App Service's managed-identity token endpoint, so tests run the real
DefaultAzureCredential (see `tests.fakes.fixtures.managed_identity_env`).

What it serves:
- ARM (management.azure.com), api-version 2024-04-01 as the adapter sends it: workspace model versions (GET,
  list, and `ModelVersions_Publish`, a long-running operation followed through its Location or
  Azure-AsyncOperation URL), registry model versions (GET, list, PUT), the subscription's registries;
- ARM for production, as azure-ai-ml's MLClient calls it: workspace GET, online endpoints and deployments (GET,
  PUT, list; DELETE of a deployment, refused while it has traffic), deployment logs, and the status of their
  operations;
- the registry's data plane that azure-ai-ml's own registry calls use (discovery, model version GET and PUT, the
  import of a workspace model), so the README's comparison of the copy options can be measured on the same fake.
Any other request gets a 501 naming it, so a test sees at once what was asked for.

It is not kinder than Azure: a publish takes `publish_polls` polls and sends no Retry-After unless told to (the
worst case for a client that waits: azure-core would sleep its 30-second default per poll); registry versions keep
their content (a PUT may change only tags, description, stage and isArchived, and must send the rest back
unchanged), and a PUT is a long-running operation by default (201 with Azure-AsyncOperation, the version
`Updating` and its old tags shown until the operation has been polled `registry_update_polls` times); publishing a
version the registry holds answers 409; registry model names refuse '.'; listing registry versions hides archived
ones unless `listViewType=All`. Where the real service's answer is not documented, the fake guesses and says so
next to the guess.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import responses

from promotion.settings import Settings

IDENTITY_ENDPOINT = "http://fake-identity.local/msi/token"
IDENTITY_HEADER = "fake-identity-header"
ARM = "https://management.azure.com"
# azure-ai-ml's registry discovery endpoint for the public cloud.
DISCOVERY = "https://eastus.api.azureml.ms"

# Set these, and unset OTHER_CREDENTIAL_VARIABLES, for DefaultAzureCredential to take its tokens from the fake.
MANAGED_IDENTITY_ENV = {"IDENTITY_ENDPOINT": IDENTITY_ENDPOINT, "IDENTITY_HEADER": IDENTITY_HEADER}
# Environment variables that would make DefaultAzureCredential pick something other than managed identity.
OTHER_CREDENTIAL_VARIABLES = (
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
)

_PROVIDER = r"/providers/Microsoft\.MachineLearningServices"
_SCOPE = r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)" + _PROVIDER
_WORKSPACE = _SCOPE + r"/workspaces/(?P<ws>[^/]+)"
_ENDPOINT = _WORKSPACE + r"/onlineEndpoints/(?P<endpoint>[^/]+)"
_DEPLOYMENT = _ENDPOINT + r"/deployments/(?P<deployment>[^/]+)"
_REGISTRY = r"/mferp/managementfrontend" + _SCOPE + r"/registries/(?P<registry>[^/]+)"
_ARM_REGISTRY = _SCOPE + r"/registries/(?P<registry>[^/]+)"
_MODEL = r"/models/(?P<name>[^/]+)"
_VERSION = _MODEL + r"/versions/(?P<version>[^/]+)"
_OPERATIONS = r"/subscriptions/(?P<sub>[^/]+)" + _PROVIDER + r"/locations/(?P<location>[^/]+)"
# Registry model names (ARM's pattern): no '.', unlike workspace model names.
_REGISTRY_MODEL_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9\-_]{0,254}")
_SOURCE_ASSET = re.compile(
    r"azureml://locations/(?P<location>[^/]+)/workspaces/(?P<guid>[^/]+)" + _VERSION + "$", re.IGNORECASE
)

Answer = tuple[int, dict[str, str], str]


@dataclass(frozen=True)
class Request:
    """One Azure ML request as the fake saw it."""

    method: str
    url: str
    body: Any  # the JSON body, or None

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    def __str__(self) -> str:
        return f"{self.method} {self.url}"


@dataclass
class _Injection:
    method: str
    url_substring: str
    times: int
    answer: Callable[[], Answer | Exception | None]

    def matches(self, method: str, url: str) -> bool:
        return self.times > 0 and method == self.method.upper() and self.url_substring in url


@dataclass
class _Workspace:
    subscription_id: str
    resource_group: str
    name: str
    guid: str
    location: str
    models: dict[tuple[str, str], dict[str, Any]]
    endpoints: dict[str, dict[str, Any]]
    deployments: dict[tuple[str, str], dict[str, Any]]

    @property
    def id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{self.name}"
        )


class FakeAzureML:
    """The fake service. Use it as a context manager (or start()/stop()); the fixtures in tests.fakes.fixtures do.

    Knobs:
    - import_polls: how many polls the import operation answers 202 before it is done (default 1, i.e. done
      at the first poll);
    - import_returns_body: whether the finished import operation answers with the model version (default yes);
    - import_copies_tags: whether an import copies the source's tags and description (default no: undocumented,
      so the adapter must not rely on it);
    - provisioning_gets: after a PUT, an endpoint or deployment stays Creating/Updating until finish() is called
      (None, the default) or for that many GETs, then takes provisioning_outcome ("Succeeded" by default);
    - operation_retry_after: the Retry-After of endpoint and deployment operations. The SDK follows those on a
      daemon thread that the adapter never waits for; a long delay keeps that thread asleep during tests.
    """

    def __init__(
        self, settings: Settings, *, location: str = "westeurope", registry_resource_group: str = "rg-ml-registry"
    ):
        self.settings = settings
        self.location = location
        self.subscription_id = settings.subscription_id
        self.registry_name = settings.registry_name
        self.registry_resource_group = registry_resource_group
        self.registry_base = f"https://{location}.api.azureml.ms/"
        self.staging = self._workspace(settings.staging_resource_group, settings.staging_workspace, 1)
        self.production = self._workspace(settings.production_resource_group, settings.production_workspace, 2)
        # (name, version) -> the registry's model version, as the registry would answer it
        self.registry_models: dict[tuple[str, str], dict[str, Any]] = {}

        # ModelVersions_Publish: how many status polls it runs before it ends, with what outcome, and what it sends.
        self.publish_polls = 3
        self.publish_outcome = "Succeeded"
        self.publish_error = "the copy failed: the source model's artifacts could not be read"
        self.publish_retry_after: int | None = None  # seconds; None: no Retry-After header, as the worst case
        self.publish_async_operation = False  # also send Azure-AsyncOperation (the spec names only Location)
        self.publish_copies_tags = False  # undocumented, so the adapter must not rely on it
        self.page_size = 100  # items per page of a listing; smaller values exercise nextLink
        # RegistryModelVersions_CreateOrUpdate on an existing version: how many polls of its Azure-AsyncOperation
        # answer InProgress before the change is applied (0: answered at once with 200, which Azure may also do).
        self.registry_update_polls = 3
        self.registry_update_outcome = "Succeeded"  # or "Failed": the version keeps what it had

        self.import_polls = 1
        self.import_returns_body = True
        self.import_copies_tags = False
        self.provisioning_gets: int | None = None
        self.provisioning_outcome = "Succeeded"
        self.operation_retry_after = 3600

        self.requests: list[Request] = []
        self._current_path = ""
        self.token_requests = 0
        self.background_polls = 0
        self._injections: list[_Injection] = []
        self._operations: dict[str, dict[str, Any]] = {}
        self._ids = (f"{uuid.uuid4().hex[:8]}-{n}" for n in itertools.count(1))
        self._routes = self._route_table()
        self._mock = responses.RequestsMock(assert_all_requests_are_fired=False)
        for method in ("GET", "PUT", "POST", "PATCH", "DELETE"):
            self._mock.add_callback(method, re.compile(r"https?://.*"), callback=self._answer, content_type=None)

    def _workspace(self, resource_group: str, name: str, n: int) -> _Workspace:
        guid = f"0000000{n}-aaaa-4bbb-8ccc-{n:012d}"
        return _Workspace(self.subscription_id, resource_group, name, guid, self.location, {}, {}, {})

    # ---- lifecycle

    def start(self) -> FakeAzureML:
        self._mock.start()
        return self

    def stop(self) -> None:
        self._mock.stop()
        self._mock.reset()

    def __enter__(self) -> FakeAzureML:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- state

    def add_workspace_model(
        self,
        name: str,
        version: str | int,
        *,
        type: str = "mlflow_model",
        tags: Mapping[str, str] | None = None,
        properties: Mapping[str, str] | None = None,
        description: str | None = None,
        path: str | None = None,
        workspace: str = "staging",
        archived: bool = False,
    ) -> dict[str, Any]:
        ws = self.staging if workspace == "staging" else self.production
        version = str(version)
        body = _model_version(
            f"{ws.id}/models/{name}/versions/{version}",
            type=type,
            tags=tags,
            properties=properties,
            description=description,
            path=path
            or f"azureml://subscriptions/{self.subscription_id}/resourcegroups/{ws.resource_group}"
            f"/workspaces/{ws.name}/datastores/workspaceblobstore/paths/models/{name}/{version}/",
        )
        body["properties"]["isArchived"] = archived
        ws.models[(name, version)] = body
        return body

    def set_workspace_model_tags(self, name: str, version: str | int, tags: Mapping[str, str]) -> None:
        """What `az ml model update --set tags.K=V` does in staging: tags change, no event is emitted."""
        self.staging.models[(name, str(version))]["properties"]["tags"].update(tags)

    def add_registry_model(
        self,
        name: str,
        version: str | int,
        *,
        type: str = "mlflow_model",
        tags: Mapping[str, str] | None = None,
        properties: Mapping[str, str] | None = None,
        description: str | None = None,
        archived: bool = False,
    ) -> dict[str, Any]:
        version = str(version)
        asset = f"azureml://registries/{self.registry_name}/models/{name}/versions/{version}"
        body = _model_version(asset, type=type, tags=tags, properties=properties, description=description, path=asset)
        body["properties"]["isArchived"] = archived
        self.registry_models[(name, version)] = body
        return body

    def registry_model(self, name: str, version: str | int) -> dict[str, Any] | None:
        return self.registry_models.get((name, str(version)))

    def add_endpoint(
        self,
        name: str,
        *,
        traffic: Mapping[str, int] | None = None,
        state: str = "Succeeded",
        tags: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        body = {
            "id": f"{self.production.id}/onlineEndpoints/{name}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
            "location": self.location,
            "kind": "Managed",
            "identity": {"type": "SystemAssigned", "principalId": "p", "tenantId": "t"},
            "tags": dict(tags or {}),
            "systemData": _system_data(),
            "properties": {
                "authMode": "Key",
                "traffic": dict(traffic or {}),
                "provisioningState": state,
                "scoringUri": f"https://{name}.{self.location}.inference.ml.azure.com/score",
                "properties": {},
            },
        }
        self.production.endpoints[name] = body
        return body

    def add_deployment(
        self,
        endpoint: str,
        name: str,
        *,
        model: str,
        tags: Mapping[str, str] | None = None,
        state: str = "Succeeded",
        instance_type: str = "Standard_F4s_v2",
        instance_count: int = 1,
    ) -> dict[str, Any]:
        body = self._deployment_body(
            endpoint,
            name,
            {
                "tags": dict(tags or {}),
                "sku": {"name": "Default", "capacity": instance_count},
                "properties": {"endpointComputeType": "Managed", "model": model, "instanceType": instance_type},
            },
        )
        body["properties"]["provisioningState"] = state
        self.production.deployments[(endpoint, name)] = body
        return body

    def endpoint(self, name: str) -> dict[str, Any] | None:
        return self.production.endpoints.get(name)

    def deployment(self, endpoint: str, name: str) -> dict[str, Any] | None:
        return self.production.deployments.get((endpoint, name))

    def finish(self, endpoint: str, deployment: str | None = None, *, state: str = "Succeeded", logs: str = "") -> None:
        """End the operation under way on an endpoint or deployment, as the service would after a while."""
        ws = self.production
        resource = ws.endpoints[endpoint] if deployment is None else ws.deployments[(endpoint, deployment)]
        if deployment is not None and resource["properties"]["provisioningState"] == "Deleting":
            del ws.deployments[(endpoint, deployment)]  # a deletion ends with the deployment gone
            return
        resource["properties"]["provisioningState"] = state
        resource.pop("_gets_left", None)
        if deployment is not None:
            resource["_logs"] = logs

    # ---- changes made outside the app (each as strict as the service, unless it says it breaks a rule)

    def archive_registry_model(self, name: str, version: str | int, archived: bool = True) -> None:
        """`az ml model archive` on the registry: the version stays readable, marked archived."""
        self.registry_models[(name, str(version))]["properties"]["isArchived"] = archived

    def set_registry_model_tags(self, name: str, version: str | int, tags: Mapping[str, str]) -> None:
        """Someone with write access changes a registry version's tags (metadata may change; content may not)."""
        self.registry_models[(name, str(version))]["properties"]["tags"].update(tags)

    def change_registry_content(self, name: str, version: str | int, **properties: Any) -> None:
        """Serve a version whose content differs from what was read before (`modelUri`, `properties`, `flavors`,
        `modelType`). The registry's own rules forbid this: it stands for a misconfigured registry or source."""
        unknown = set(properties) - {"modelUri", "modelType", "properties", "flavors"}
        if unknown:
            raise ValueError(f"not content of a model version: {sorted(unknown)}")
        self.registry_models[(name, str(version))]["properties"].update(copy.deepcopy(properties))

    def set_traffic_by_hand(self, endpoint: str, traffic: Mapping[str, int]) -> None:
        """`az ml online-endpoint update --traffic` outside the app, with the service's rules: every deployment named
        exists, and the shares add up to 100 (or are all 0)."""
        missing = [name for name in traffic if (endpoint, name) not in self.production.deployments]
        if missing:
            raise ValueError(f"online endpoint {endpoint} has no deployment {', '.join(missing)}")
        if sum(traffic.values()) not in (0, 100):
            raise ValueError("traffic shares must add up to 100")
        self.production.endpoints[endpoint]["properties"]["traffic"] = dict(traffic)

    def delete_deployment_by_hand(self, endpoint: str, deployment: str) -> None:
        """`az ml online-deployment delete` outside the app, finished: refused while the deployment has traffic."""
        if self.production.endpoints[endpoint]["properties"]["traffic"].get(deployment, 0):
            raise ValueError(f"online deployment {deployment} has traffic; the service refuses to delete it")
        del self.production.deployments[(endpoint, deployment)]

    def delete_endpoint_by_hand(self, endpoint: str) -> None:
        """`az ml online-endpoint delete`, finished: the endpoint goes with all its deployments."""
        del self.production.endpoints[endpoint]
        for key in [key for key in self.production.deployments if key[0] == endpoint]:
            del self.production.deployments[key]

    # ---- behaviour

    def fail_next(
        self,
        method: str,
        url_substring: str,
        status: int,
        times: int = 1,
        *,
        headers: Mapping[str, str] | None = None,
        code: str | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next `times` matching requests with `status` and an ARM error body, before any state changes."""
        error = {
            "error": {"code": code or _ERROR_CODES.get(status, "Error"), "message": message or f"injected {status}"}
        }
        answer = (status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(error))
        self._injections.append(_Injection(method, url_substring, times, lambda: answer))

    def drop_next(self, method: str, url_substring: str, times: int = 1) -> None:
        """Fail the next `times` matching requests with a connection error (nothing reaches the service)."""
        error = requests.ConnectionError("injected connection failure")
        self._injections.append(_Injection(method, url_substring, times, lambda: error))

    def before_next(self, method: str, url_substring: str, action: Callable[[], object]) -> None:
        """Run `action` just before the next matching request is answered, e.g. another instance's copy (a race)."""

        def run() -> None:  # whatever action returns, the request is then answered as usual
            action()

        self._injections.append(_Injection(method, url_substring, 1, run))

    def count(self, method: str | None = None, url_substring: str = "") -> int:
        """Azure ML requests so far (token requests are not counted), optionally only the matching ones."""
        return sum(
            1
            for request in self.requests
            if (method is None or request.method == method.upper()) and url_substring in request.url
        )

    def reset_log(self) -> None:
        self.requests.clear()
        self.token_requests = 0
        self.background_polls = 0

    def log(self) -> str:
        """The requests so far, one a line: handy in assertion messages."""
        return "\n".join(str(request) for request in self.requests)

    # ---- dispatch

    def _answer(self, prepared: requests.PreparedRequest) -> Answer | Exception:
        url = prepared.url or ""
        method = (prepared.method or "GET").upper()
        if url.startswith(IDENTITY_ENDPOINT):
            return self._token(prepared)
        body = _json(prepared.body)
        if "/fake-operations/" in url:
            # The SDK's own poller, on a daemon thread the adapter never waits for: not the adapter's requests,
            # and never the target of an injected failure.
            self.background_polls += 1
            return self._route(method, url, body)
        self.requests.append(Request(method, url, body))
        for injection in self._injections:
            if injection.matches(method, url):
                injection.times -= 1
                outcome = injection.answer()
                if outcome is not None:
                    return outcome
                break
        return self._route(method, url, body)

    def _route(self, method: str, url: str, body: Any) -> Answer:
        parts = urlsplit(url)
        target = f"{parts.scheme}://{parts.netloc}{parts.path}"
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        self._current_path = target
        for route_method, pattern, handler in self._routes:
            match = pattern.fullmatch(target) if route_method == method else None
            if match:
                return handler(body=body, query=query, **match.groupdict())
        return _error(501, "NotImplemented", f"the fake Azure ML does not serve {method} {url}")

    def _route_table(self) -> list[tuple[str, re.Pattern[str], Callable[..., Answer]]]:
        arm, discovery, registry = re.escape(ARM), re.escape(DISCOVERY), re.escape(self.registry_base.rstrip("/"))
        table = [
            ("GET", arm + _WORKSPACE, self._get_workspace),
            ("GET", arm + _WORKSPACE + r"/models", self._list_workspace_models),
            ("GET", arm + _WORKSPACE + _MODEL + r"/versions", self._list_workspace_versions),
            ("GET", arm + _WORKSPACE + _VERSION, self._get_workspace_model),
            ("POST", arm + _WORKSPACE + _VERSION + r"/publish", self._publish),
            ("GET", arm + _OPERATIONS + r"/mfeOperationResults/(?P<operation>[^/]+)", self._publish_result),
            ("GET", arm + _OPERATIONS + r"/mfeOperationsStatus/(?P<operation>[^/]+)", self._publish_status),
            ("GET", arm + r"/subscriptions/(?P<sub>[^/]+)" + _PROVIDER + r"/registries", self._list_registries),
            ("GET", arm + _ARM_REGISTRY + _MODEL + r"/versions", self._list_registry_versions),
            ("GET", arm + _ARM_REGISTRY + _VERSION, self._arm_get_registry_model),
            ("PUT", arm + _ARM_REGISTRY + _VERSION, self._arm_put_registry_model),
            ("GET", arm + _WORKSPACE + r"/onlineEndpoints", self._list_endpoints),
            ("GET", arm + _ENDPOINT, self._get_endpoint),
            ("PUT", arm + _ENDPOINT, self._put_endpoint),
            ("GET", arm + _ENDPOINT + r"/deployments", self._list_deployments),
            ("GET", arm + _DEPLOYMENT, self._get_deployment),
            ("PUT", arm + _DEPLOYMENT, self._put_deployment),
            ("DELETE", arm + _DEPLOYMENT, self._delete_deployment),
            ("POST", arm + _DEPLOYMENT + r"/getLogs", self._deployment_logs),
            ("GET", arm + r"/fake-operations/(?P<operation>[^/]+)", self._resource_operation),
            ("GET", discovery + r"/registrymanagement/v1\.0/registries/(?P<registry>[^/]+)/discovery", self._discovery),
            ("GET", registry + _REGISTRY + _MODEL + r"/versions", self._list_registry_versions_data_plane),
            ("GET", registry + _REGISTRY + _VERSION, self._get_registry_model),
            ("PUT", registry + _REGISTRY + _VERSION, self._put_registry_model),
            ("POST", registry + _REGISTRY + r"/import", self._import),
            (
                "PUT",
                registry + _REGISTRY + r"/tempdatarefs/(?P<name>[^/]+)/versions/(?P<version>[^/]+)",
                self._temp_ref,
            ),
            ("GET", registry + _REGISTRY + r"/importOperations/(?P<operation>[^/]+)", self._import_operation),
        ]
        return [(method, re.compile(pattern, re.IGNORECASE), handler) for method, pattern, handler in table]

    def _token(self, prepared: requests.PreparedRequest) -> Answer:
        self.token_requests += 1
        if prepared.headers.get("X-IDENTITY-HEADER") != IDENTITY_HEADER:
            return _error(401, "Unauthorized", "missing or wrong X-IDENTITY-HEADER")
        resource = parse_qs(urlsplit(prepared.url or "").query).get("resource", [""])[0]
        token = {"access_token": "fake-token", "expires_on": "4102444800", "resource": resource, "token_type": "Bearer"}
        return 200, {"Content-Type": "application/json"}, json.dumps(token)

    # ---- workspaces

    def _find_workspace(self, rg: str, ws: str) -> _Workspace | None:
        for workspace in (self.staging, self.production):
            if workspace.resource_group.lower() == rg.lower() and workspace.name.lower() == ws.lower():
                return workspace
        return None

    def _get_workspace(self, rg: str, ws: str, **_: Any) -> Answer:
        workspace = self._find_workspace(rg, ws)
        if workspace is None:
            return _not_found(f"workspace {ws}")
        return _ok(
            {
                "id": workspace.id,
                "name": workspace.name,
                "type": "Microsoft.MachineLearningServices/workspaces",
                "location": workspace.location,
                "kind": "Default",
                "identity": {"type": "SystemAssigned"},
                "sku": {"name": "Basic", "tier": "Basic"},
                "properties": {"workspaceId": workspace.guid, "friendlyName": workspace.name},
            }
        )

    def _get_workspace_model(self, rg: str, ws: str, name: str, version: str, **_: Any) -> Answer:
        workspace = self._find_workspace(rg, ws)
        model = workspace.models.get((name, version)) if workspace else None
        return _ok(model) if model else _not_found(f"model {name}:{version}")

    def _list_workspace_models(self, rg: str, ws: str, query: Mapping[str, str], **_: Any) -> Answer:
        workspace = self._find_workspace(rg, ws)
        if workspace is None:
            return _not_found(f"workspace {ws}")
        active = query.get("listViewType", "ActiveOnly") == "ActiveOnly"
        names = sorted({name for (name, _), model in workspace.models.items() if not (active and _archived(model))})
        containers = [{"id": f"{workspace.id}/models/{name}", "name": name, "properties": {}} for name in names]
        return self._page(containers, query)

    def _list_workspace_versions(self, rg: str, ws: str, name: str, query: Mapping[str, str], **_: Any) -> Answer:
        workspace = self._find_workspace(rg, ws)
        if workspace is None:
            return _not_found(f"workspace {ws}")
        active = query.get("listViewType", "ActiveOnly") == "ActiveOnly"
        versions = [
            model
            for (model_name, _), model in sorted(workspace.models.items())
            if model_name == name and not (active and _archived(model))
        ]
        return self._page(versions, query)

    def _page(self, items: list[dict[str, Any]], query: Mapping[str, str]) -> Answer:
        """One page of a listing; the next page's URL keeps the query and moves $skip along."""
        start = int(query.get("$skip", "0"))
        page = {"value": [_public(item) for item in items[start : start + self.page_size]]}
        if start + self.page_size < len(items):
            rest = {**query, "$skip": str(start + self.page_size)}
            page["nextLink"] = f"{self._current_path}?" + "&".join(f"{k}={v}" for k, v in rest.items())
        return _ok(page)

    # ---- ModelVersions_Publish: a workspace model version into the registry, a long-running operation

    def _publish(self, rg: str, ws: str, name: str, version: str, body: dict[str, Any], **_: Any) -> Answer:
        workspace = self._find_workspace(rg, ws)
        model = workspace.models.get((name, version)) if workspace else None
        if model is None:
            return _not_found(f"model {name}:{version}")
        sent = body or {}
        registry, destination = sent.get("registryName"), sent.get("destinationName") or ""
        version_to = sent.get("destinationVersion") or ""
        if registry != self.registry_name:
            return _not_found(f"registry {registry}")
        if not _REGISTRY_MODEL_NAME.fullmatch(destination) or not version_to:
            return _error(
                400,
                "UserError",
                f"invalid destination model name or version {destination!r}:{version_to!r}: registry asset names "
                "take letters, digits, '-' and '_' (no '.'), starting with a letter or digit",
            )
        if (destination, version_to) in self.registry_models:
            return _error(409, "Conflict", f"model {destination}:{version_to} already exists in registry {registry}")
        operation = next(self._ids)
        self._operations[operation] = {
            "polls_left": self.publish_polls,
            "outcome": self.publish_outcome,
            "source": model,
            "destination": (destination, version_to),
        }
        headers = {"Location": f"{self._operation_base}/mfeOperationResults/{operation}"}
        if self.publish_async_operation:
            headers["Azure-AsyncOperation"] = f"{self._operation_base}/mfeOperationsStatus/{operation}"
        if self.publish_retry_after is not None:
            headers["Retry-After"] = str(self.publish_retry_after)
        return 202, headers, ""

    @property
    def _operation_base(self) -> str:
        provider = "providers/Microsoft.MachineLearningServices"
        return f"{ARM}/subscriptions/{self.subscription_id}/{provider}/locations/{self.location}"

    def _step_operation(self, operation: str) -> str:
        """One poll of a publish or a registry update: InProgress until its polls run out, then its outcome (and,
        on success, the copy, or the update applied)."""
        state = self._operations.get(operation)
        if state is None:
            return "Unknown"
        if "update" in state:
            if state["polls_left"] > 0:
                state["polls_left"] -= 1
                return "InProgress"
            model = self.registry_models.get(state["update"])
            if model is not None and model.get("_update") == operation:
                if state["outcome"] == "Succeeded":
                    model["properties"] = {**state["changed"], "provisioningState": "Succeeded"}
                else:
                    model["properties"]["provisioningState"] = "Succeeded"  # as it was, unchanged
                del model["_update"]
            return state["outcome"]
        if state["polls_left"] > 0:
            state["polls_left"] -= 1
            return "InProgress"
        if state["outcome"] == "Succeeded" and state["destination"] not in self.registry_models:
            self._complete_publish(state)
        return state["outcome"]

    def _complete_publish(self, state: dict[str, Any]) -> None:
        name, version = state["destination"]
        source = state["source"]["properties"]
        copied = self.add_registry_model(
            name,
            version,
            type=source["modelType"],
            properties=source["properties"],
            tags=source["tags"] if self.publish_copies_tags else None,
            description=source["description"] if self.publish_copies_tags else None,
        )
        copied["properties"]["flavors"] = copy.deepcopy(source["flavors"])

    def run_publishes(self) -> None:
        """Let every publish under way finish, as the service would after a while, without anyone polling."""
        for operation, state in self._operations.items():
            if "destination" in state:
                state["polls_left"] = 0
                self._step_operation(operation)

    def _publish_result(self, operation: str, **_: Any) -> Answer:
        """The Location URL: 202 while running, 200 once done, the operation's error when it failed."""
        status = self._step_operation(operation)
        if status == "Unknown":
            return _not_found(f"operation {operation}")
        if status == "InProgress":
            headers = {"Location": f"{self._operation_base}/mfeOperationResults/{operation}"}
            if self.publish_retry_after is not None:
                headers["Retry-After"] = str(self.publish_retry_after)
            return 202, headers, ""
        if status == "Succeeded":
            return 200, {}, ""
        return _error(400, "UserError", self.publish_error)

    def _publish_status(self, operation: str, **_: Any) -> Answer:
        """The Azure-AsyncOperation URL: a status document."""
        status = self._step_operation(operation)
        if status == "Unknown":
            return _not_found(f"operation {operation}")
        document: dict[str, Any] = {"id": operation, "name": operation, "status": status}
        if status == "Failed":
            update = "update" in self._operations[operation]
            message = "the registry could not update the model version" if update else self.publish_error
            document["error"] = {"code": "UserError", "message": message}
        return _ok(document)

    # ---- the registry through ARM

    def _list_registries(self, sub: str, **_: Any) -> Answer:
        registry = {
            "id": f"/subscriptions/{sub}/resourceGroups/{self.registry_resource_group}"
            f"/providers/Microsoft.MachineLearningServices/registries/{self.registry_name}",
            "name": self.registry_name,
            "type": "Microsoft.MachineLearningServices/registries",
            "location": self.location,
        }
        other = {**registry, "id": registry["id"].replace(self.registry_name, "someone-elses"), "name": "someone-elses"}
        return _ok({"value": [other, registry]})

    def _registry_matches(self, rg: str, registry: str) -> bool:
        return rg.lower() == self.registry_resource_group.lower() and registry.lower() == self.registry_name.lower()

    def _list_registry_versions(self, rg: str, registry: str, name: str, query: Mapping[str, str], **_: Any) -> Answer:
        if not self._registry_matches(rg, registry):
            return _not_found(f"registry {registry} in resource group {rg}")
        versions = [model for (model_name, _), model in sorted(self.registry_models.items()) if model_name == name]
        if not versions:
            return _not_found(f"model {name}")
        if query.get("listViewType", "ActiveOnly") == "ActiveOnly":
            versions = [model for model in versions if not _archived(model)]
        return self._page(versions, query)

    def _list_registry_versions_data_plane(self, name: str, query: Mapping[str, str], **_: Any) -> Answer:
        versions = [model for (model_name, _), model in sorted(self.registry_models.items()) if model_name == name]
        return self._page(versions, query)

    def _arm_get_registry_model(self, rg: str, registry: str, name: str, version: str, **_: Any) -> Answer:
        if not self._registry_matches(rg, registry):
            return _not_found(f"registry {registry} in resource group {rg}")
        return self._get_registry_model(name=name, version=version)

    def _arm_put_registry_model(self, rg: str, registry: str, name: str, version: str, body: Any, **_: Any) -> Answer:
        """RegistryModelVersions_CreateOrUpdate: 200, or 201 with Azure-AsyncOperation (final state via the
        original URI). While the operation runs, the version reads `Updating` with its old tags, and another PUT
        answers 409."""
        if not self._registry_matches(rg, registry):
            return _not_found(f"registry {registry} in resource group {rg}")
        model = self.registry_models.get((name, version))
        if model is None or self.registry_update_polls <= 0:
            return self._put_registry_model(name=name, version=version, body=body)
        if model["properties"].get("provisioningState") != "Succeeded":
            return _error(409, "Conflict", f"an operation is in progress on registry model {name}:{version}")
        before = copy.deepcopy(model)
        answer = self._put_registry_model(name=name, version=version, body=body)
        if answer[0] != 200:
            return answer
        changed = copy.deepcopy(model["properties"])
        self.registry_models[(name, version)] = before
        before["properties"]["provisioningState"] = "Updating"
        operation = next(self._ids)
        before["_update"] = operation
        self._operations[operation] = {
            "polls_left": self.registry_update_polls,
            "update": (name, version),
            "changed": changed,
            "outcome": self.registry_update_outcome,
        }
        headers = {"Azure-AsyncOperation": f"{self._operation_base}/mfeOperationsStatus/{operation}"}
        return _ok(before, 201, headers)

    def run_registry_updates(self) -> None:
        """Let every registry update under way finish, as the service would after a while, without anyone polling."""
        for operation, state in self._operations.items():
            if "update" in state:
                state["polls_left"] = 0
                self._step_operation(operation)

    # ---- online endpoints and deployments (production)

    def _advance(self, resource: dict[str, Any]) -> None:
        """A GET moves an operation under way one step towards provisioning_outcome."""
        left = resource.get("_gets_left")
        if left is None:
            return
        if left <= 1:
            resource["properties"]["provisioningState"] = self.provisioning_outcome
            del resource["_gets_left"]
        else:
            resource["_gets_left"] = left - 1

    def _begin(self, resource: dict[str, Any], state: str, created: bool) -> Answer:
        resource["properties"]["provisioningState"] = state
        if self.provisioning_gets is not None:
            resource["_gets_left"] = self.provisioning_gets
        operation = next(self._ids)
        self._operations[operation] = resource
        headers = {
            "Azure-AsyncOperation": f"{ARM}/fake-operations/{operation}?api-version=2023-04-01-preview",
            "Retry-After": str(self.operation_retry_after),
        }
        return _ok(resource, 201 if created else 200, headers)

    def _resource_operation(self, operation: str, **_: Any) -> Answer:
        if operation not in self._operations:  # a poller left over from an earlier test's fake
            return _not_found(f"operation {operation}")
        state = self._operations[operation]["properties"]["provisioningState"]
        status = state if state in _TERMINAL else "InProgress"
        error = (
            {"error": {"code": status, "message": f"the operation {status.lower()}"}} if status != "Succeeded" else {}
        )
        return _ok({"status": status, **error}, headers={"Retry-After": str(self.operation_retry_after)})

    def _list_endpoints(self, **_: Any) -> Answer:
        return _ok({"value": [_public(e) for e in self.production.endpoints.values()]})

    def _get_endpoint(self, ws: str, endpoint: str, **_: Any) -> Answer:
        body = self.production.endpoints.get(endpoint) if ws.lower() == self.production.name.lower() else None
        if body is None:
            return _not_found(f"online endpoint {endpoint}")
        self._advance(body)
        return _ok(body)

    def _put_endpoint(self, endpoint: str, body: dict[str, Any], **_: Any) -> Answer:
        existing = self.production.endpoints.get(endpoint)
        if existing is not None and existing["properties"]["provisioningState"] not in _TERMINAL:
            # The service refuses a change while another operation runs on the endpoint.
            return _error(409, "Conflict", f"an operation is in progress on online endpoint {endpoint}")
        resource = existing or self.add_endpoint(endpoint)
        resource["tags"] = dict(body.get("tags") or {})
        sent = body.get("properties") or {}
        resource["properties"]["authMode"] = sent.get("authMode", resource["properties"]["authMode"])
        resource["properties"]["traffic"] = dict(sent.get("traffic") or {})
        return self._begin(resource, "Updating" if existing else "Creating", created=existing is None)

    def _list_deployments(self, endpoint: str, **_: Any) -> Answer:
        if endpoint not in self.production.endpoints:
            return _not_found(f"online endpoint {endpoint}")
        return _ok({"value": [_public(d) for (e, _n), d in self.production.deployments.items() if e == endpoint]})

    def _get_deployment(self, endpoint: str, deployment: str, **_: Any) -> Answer:
        body = self.production.deployments.get((endpoint, deployment))
        if body is None:
            return _not_found(f"online deployment {deployment}")
        self._advance(body)
        return _ok(body)

    def _put_deployment(self, endpoint: str, deployment: str, body: dict[str, Any], **_: Any) -> Answer:
        if endpoint not in self.production.endpoints:
            return _not_found(f"online endpoint {endpoint}")
        existing = self.production.deployments.get((endpoint, deployment))
        resource = self._deployment_body(endpoint, deployment, body)
        self.production.deployments[(endpoint, deployment)] = resource
        return self._begin(resource, "Updating" if existing else "Creating", created=existing is None)

    def _delete_deployment(self, endpoint: str, deployment: str, **_: Any) -> Answer:
        resource = self.production.deployments.get((endpoint, deployment))
        if resource is None:
            return 204, {}, ""  # ARM's answer to deleting what is not there (a guess: not documented for ML)
        if self.production.endpoints[endpoint]["properties"]["traffic"].get(deployment, 0):
            # The service refuses to delete a deployment that still has traffic (wording guessed).
            return _error(
                400, "UserError", f"online deployment {deployment} has traffic; set its traffic to 0 before deleting"
            )
        resource["properties"]["provisioningState"] = "Deleting"
        operation = next(self._ids)
        self._operations[operation] = resource
        url = f"{ARM}/fake-operations/{operation}?api-version=2023-04-01-preview"
        headers = {"Azure-AsyncOperation": url, "Location": url, "Retry-After": str(self.operation_retry_after)}
        return 202, headers, ""

    def _deployment_body(self, endpoint: str, name: str, sent: dict[str, Any]) -> dict[str, Any]:
        properties = copy.deepcopy(sent.get("properties") or {})
        # The SDK cannot parse a deployment without scaleSettings; the service always sends them.
        properties.setdefault("scaleSettings", {"scaleType": "Default"})
        properties.setdefault("endpointComputeType", "Managed")
        properties.setdefault("properties", {})
        return {
            "id": f"{self.production.id}/onlineEndpoints/{endpoint}/deployments/{name}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments",
            "location": self.location,
            "kind": "Managed",
            "tags": dict(sent.get("tags") or {}),
            "sku": sent.get("sku") or {"name": "Default", "capacity": 1},
            "properties": properties,
        }

    def _deployment_logs(self, endpoint: str, deployment: str, **_: Any) -> Answer:
        body = self.production.deployments.get((endpoint, deployment))
        if body is None:
            return _not_found(f"online deployment {deployment}")
        return _ok({"content": body.get("_logs", "")})

    # ---- the registry

    def _discovery(self, registry: str, **_: Any) -> Answer:
        if registry != self.registry_name:
            return _not_found(f"registry {registry}")
        return _ok(
            {
                "registryName": registry,
                "tenantId": "00000000-0000-0000-0000-0000000000aa",
                "primaryRegion": self.location,
                "regions": [self.location],
                "subscriptionId": self.subscription_id,
                "resourceGroup": self.registry_resource_group,
                "primaryRegionResourceProviderUri": self.registry_base,
            }
        )

    def _registry_path(self) -> str:
        return (
            f"{self.registry_base}mferp/managementfrontend/subscriptions/{self.subscription_id}"
            f"/resourceGroups/{self.registry_resource_group}/providers/Microsoft.MachineLearningServices"
            f"/registries/{self.registry_name}"
        )

    def _get_registry_model(self, name: str, version: str, **_: Any) -> Answer:
        model = self.registry_models.get((name, version))
        return _ok(model) if model else _not_found(f"model {name}:{version}")

    def _put_registry_model(self, name: str, version: str, body: Any, **_: Any) -> Answer:
        model = self.registry_models.get((name, version))
        if model is None:
            return _error(400, "UserError", "the fake registry only updates existing versions")
        sent = (body or {}).get("properties") or {}
        stored = model["properties"]
        # Content is immutable: every field but the mutable metadata must come back exactly as it is (a PUT
        # replaces the resource, so a field left out would be a change too).
        for field in ("modelUri", "modelType", "properties", "flavors"):
            if sent.get(field) != stored.get(field):
                return _error(
                    400,
                    "UserError",
                    f"{field} of registry model {name}:{version} cannot change without a new version",
                )
        for field in ("tags", "description", "stage", "isArchived"):
            if field in sent:
                stored[field] = copy.deepcopy(sent[field])
        return _ok(model)

    def _import(self, body: dict[str, Any], **_: Any) -> Answer:
        sent = body.get("properties") or {}
        source = _SOURCE_ASSET.match(sent.get("sourceAssetId") or "")
        if sent.get("referenceType") != "Id" or source is None:
            return _error(400, "UserError", f"bad import request: {body}")
        workspace = next((w for w in (self.staging, self.production) if w.guid == source["guid"]), None)
        model = workspace.models.get((source["name"], source["version"])) if workspace else None
        if workspace is None or workspace.location != source["location"] or model is None:
            return _not_found(f"source asset {sent['sourceAssetId']}")
        name, version = sent["destinationName"], sent["destinationVersion"]
        if (name, version) in self.registry_models:
            # A guess: the service's answer to importing onto an existing version is undocumented; ARM answers
            # a create of something that exists with 409 Conflict.
            return _error(409, "Conflict", f"model {name}:{version} already exists in registry {self.registry_name}")
        source_properties = model["properties"]
        copied = self.add_registry_model(
            name,
            version,
            type=source_properties["modelType"],
            properties=source_properties["properties"],
            tags=source_properties["tags"] if self.import_copies_tags else None,
            description=source_properties["description"] if self.import_copies_tags else None,
        )
        copied["properties"]["flavors"] = copy.deepcopy(source_properties["flavors"])
        operation = next(self._ids)
        self._operations[operation] = {"polls_left": self.import_polls, "model": (name, version)}
        return 202, self._import_headers(operation), ""

    def _temp_ref(self, name: str, version: str, **_: Any) -> Answer:
        """The SAS for uploading a registry asset's files: the version exists already after an import, so the service
        answers 409, which azure-ai-ml takes as "nothing to upload"."""
        if (name, version) in self.registry_models:
            return _error(409, "Conflict", f"Asset {name}:{version} already exists")
        return _error(400, "UserError", "the fake registry does not take uploads")

    def _import_headers(self, operation: str) -> dict[str, str]:
        return {"Location": f"{self._registry_path()}/importOperations/{operation}", "Retry-After-Ms": "1"}

    def _import_operation(self, operation: str, **_: Any) -> Answer:
        state = self._operations[operation]
        state["polls_left"] -= 1
        if state["polls_left"] > 0:
            return 202, self._import_headers(operation), ""
        if self.import_returns_body:
            return _ok(self.registry_models[state["model"]])
        return 200, {}, ""


_TERMINAL = ("Succeeded", "Failed", "Canceled")
_ERROR_CODES = {
    400: "UserError",
    404: "NotFound",
    409: "Conflict",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}
# What an MLflow model's version carries; the SDK cannot parse a model version without `flavors`.
_MLFLOW_FLAVORS = {"python_function": {"data": {"loader_module": "mlflow.sklearn"}}}


def _model_version(
    asset_id: str,
    *,
    type: str,
    tags: Mapping[str, str] | None,
    properties: Mapping[str, str] | None,
    description: str | None,
    path: str,
) -> dict[str, Any]:
    name, version = asset_id.rsplit("/versions/", 1)
    return {
        "id": asset_id,
        "name": version,
        "type": "models/versions",
        "systemData": _system_data(),
        "properties": {
            "description": description,
            "tags": dict(tags or {}),
            "properties": dict(properties or {}),
            "flavors": copy.deepcopy(_MLFLOW_FLAVORS) if type == "mlflow_model" else {},
            "modelType": type,
            "modelUri": path,
            "isAnonymous": False,
            "isArchived": False,
            "provisioningState": "Succeeded",
        },
    }


def _system_data() -> dict[str, str]:
    at = "2024-05-01T12:00:00.000000+00:00"
    return {"createdBy": "someone@example.com", "createdAt": at, "lastModifiedAt": at, "createdByType": "User"}


def _archived(model: dict[str, Any]) -> bool:
    return bool(model["properties"].get("isArchived"))


def _public(resource: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in resource.items() if not key.startswith("_")}


def _json(body: Any) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _ok(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Answer:
    content = _public(body) if isinstance(body, dict) else body
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(content)


def _error(status: int, code: str, message: str) -> Answer:
    return status, {"Content-Type": "application/json"}, json.dumps({"error": {"code": code, "message": message}})


def _not_found(what: str) -> Answer:
    return _error(404, "NotFound", f"{what} was not found")
