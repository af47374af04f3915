"""The staging workspace's and the registry's models on ARM's public REST API (api-version 2024-04-01): model
version reads and listings, the copy (`ModelVersions_Publish`, a long-running operation that is started here and
never waited for), and the registry's tag update. See the README ("Why ARM for the copy") for the options measured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from promotion.adapters.azureml.arm import Arm, error_message, is_arm_url, permanent_status, raise_for
from promotion.domain import InvalidName, ModelRef, ModelVersion, validate_model_name
from promotion.ports import AlreadyExists, CopyProgress, CopyRefused, CopyStatus
from promotion.redaction import kept

if TYPE_CHECKING:
    from promotion.adapters.azureml import AzureMLBackend


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
            raise AlreadyExists(f"the registry already holds {model.ref}: {error_message(response)}")
        if permanent_status(response.status_code):
            raise CopyRefused(
                f"the registry refused to copy {model.ref} ({response.status_code}): {error_message(response)}"
            )
        raise_for(response)
        if response.status_code == 200:
            return "done:"
        for header in ("Azure-AsyncOperation", "Location"):
            url = response.headers.get(header)
            if url and is_arm_url(url):
                return f"{header}:{url}"
        raise CopyRefused(f"the publish of {model.ref} answered {response.status_code} without an operation to follow")

    def copy_status(self, operation: str) -> CopyStatus:
        """One GET of the operation's status URL: Azure-AsyncOperation answers a status document, Location
        answers 202 while running and 200 once done; an operation the service has forgotten counts as done,
        and the registry itself is checked next."""
        kind, _, url = operation.partition(":")
        if kind == "done":
            return CopyStatus(CopyProgress.SUCCEEDED)
        if kind not in ("Azure-AsyncOperation", "Location") or not is_arm_url(url):
            return CopyStatus(CopyProgress.FAILED, "the copy's operation handle is not one this app makes")
        response = self._backend.arm.send("GET", url)
        if response.status_code == 404:
            return CopyStatus(CopyProgress.SUCCEEDED, "the service no longer knows the operation")
        if permanent_status(response.status_code):
            return CopyStatus(CopyProgress.FAILED, error_message(response))
        raise_for(response)
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
        raise_for(response)
        # 200/201 answer the version; a 202 accepted the change, which the next read shows.
        answered = (
            response.json() if response.status_code in (200, 201) and response.text() else {"properties": properties}
        )
        return _to_model_version(ref, answered)


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
        asset_id=body.get("id"),
        flavors=p.get("flavors") or {},
        created_at=(body.get("systemData") or {}).get("createdAt"),
        archived=bool(p.get("isArchived")),
    )


def _model_type(value: Any) -> str:
    """ARM spells model types `mlflow_model` or `MLFlowModel`; the app uses the azure-ai-ml spelling."""
    text = str(value or "custom_model")
    return {"mlflowmodel": "mlflow_model", "custommodel": "custom_model", "tritonmodel": "triton_model"}.get(
        text.replace("_", "").lower(), text
    )
