"""The staging workspace's and the registry's models on ARM's public REST API (api-version 2024-04-01): model
version reads and listings, the copy (`ModelVersions_Publish`, a long-running operation that is started here and
never waited for), and the registry's tag update (`RegistryModelVersions_CreateOrUpdate`, which may also be a
long-running operation: 201 with Azure-AsyncOperation, final state via the original URI). See the README ("Why ARM
for the copy") for the options measured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from promotion.adapters.azureml.arm import Arm, error_message, is_arm_url, permanent_status, raise_for
from promotion.domain import InvalidName, ModelRef, ModelVersion, validate_model_name
from promotion.ports import (
    AlreadyExists,
    CopyProgress,
    CopyRefused,
    CopyStatus,
    StatusUnavailable,
    TagUpdate,
)
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
        # Archived versions too (the listing hides them otherwise): a version name is taken even when archived.
        return _versions(self._backend.arm, f"{self._backend.registry_path}/models/{name}", listViewType="All")

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
        response = _poll(self._backend.arm, url)
        if response.status_code == 404:
            return CopyStatus(CopyProgress.SUCCEEDED, "the service no longer knows the operation")
        return _operation_status(kind, response, "the copy")

    def tag(
        self,
        ref: ModelRef,
        tags: Mapping[str, str],
        description: str | None,
        *,
        check: Callable[[ModelVersion], None] = lambda held: None,
    ) -> ModelVersion | TagUpdate | None:
        """GET the registry version, then PUT it back with the tags added: every other field as it was read,
        because a registry version's content (modelUri, modelType, properties, flavors) cannot change.

        The PUT is `RegistryModelVersions_CreateOrUpdate`: 200 with the version, or 201 (or 202) with an
        operation to follow; the tags are there only once the operation, or the version's provisioningState,
        says Succeeded. That is never waited for here: a TagUpdate tells the caller what to ask later."""
        path = f"{self._backend.registry_path}{_version_path(ref)}"
        held = self._backend.arm.get(path)
        if held is None:
            return None
        check(_to_model_version(ref, held))
        if _provisioning(held) not in ("succeeded", ""):
            return TagUpdate(_REREAD)  # another update is under way; ours is made when the version is re-read
        properties = {key: value for key, value in held["properties"].items() if key != "provisioningState"}
        properties["tags"] = {**(properties.get("tags") or {}), **tags}
        properties["description"] = properties.get("description") or description
        response = self._backend.arm.send("PUT", path, {"properties": properties})
        if response.status_code == 409:  # an operation is under way on the version
            return TagUpdate(_REREAD)
        raise_for(response)
        for header in ("Azure-AsyncOperation", "Location"):
            url = response.headers.get(header)
            if url and is_arm_url(url) and response.status_code in (201, 202):
                return TagUpdate(f"{header}:{url}")
        answered = response.json() if response.status_code in (200, 201) and response.text() else None
        if answered is None or _provisioning(answered) not in ("succeeded", "") or not _has(answered, tags):
            return TagUpdate(_REREAD)
        return _to_model_version(ref, answered)

    def tag_status(
        self, ref: ModelRef, operation: str, tags: Mapping[str, str], description: str | None = None
    ) -> CopyStatus:
        """The tag update's operation first (while it runs: one request); once it has ended, the version itself
        (final state via the original URI): SUCCEEDED when its provisioningState is Succeeded and it shows
        the tags. A version whose update ended without them (someone else's update won, or an update that was
        under way when ours was to be made) gets the tags again, and the answer is RUNNING."""
        kind, _, url = operation.partition(":")
        if kind in ("Azure-AsyncOperation", "Location"):
            if not is_arm_url(url):
                return CopyStatus(CopyProgress.FAILED, "the tag update's handle is not one this app makes")
            response = _poll(self._backend.arm, url)
            if response.status_code != 404:  # a forgotten operation has ended: the version says how
                status = _operation_status(kind, response, "the tag update")
                if status.progress is not CopyProgress.SUCCEEDED:
                    return status
        elif operation != _REREAD:
            return CopyStatus(CopyProgress.FAILED, "the tag update's handle is not one this app makes")
        path = f"{self._backend.registry_path}{_version_path(ref)}"
        try:
            held = self._backend.arm.get(path)
        except Exception as error:
            raise _unavailable(error) from error
        if held is None:
            return CopyStatus(CopyProgress.FAILED, f"the registry no longer holds {ref}")
        state = _provisioning(held)
        if state in ("failed", "canceled", "cancelled"):
            return CopyStatus(CopyProgress.FAILED, f"the registry's update of {ref} ended {state}")
        if state not in ("succeeded", ""):
            return CopyStatus(CopyProgress.RUNNING)
        if _has(held, tags):
            return CopyStatus(CopyProgress.SUCCEEDED)
        again = self.tag(ref, tags, description)
        if again is None:
            return CopyStatus(CopyProgress.FAILED, f"the registry no longer holds {ref}")
        return CopyStatus(CopyProgress.SUCCEEDED if isinstance(again, ModelVersion) else CopyProgress.RUNNING)


# A tag update to follow by re-reading the registry version until its provisioningState is Succeeded.
_REREAD = "version:"


def _provisioning(body: Mapping[str, Any]) -> str:
    return str((body.get("properties") or {}).get("provisioningState") or "").lower()


def _has(body: Mapping[str, Any], tags: Mapping[str, str]) -> bool:
    held = (body.get("properties") or {}).get("tags") or {}
    return all(str(held.get(key)) == value for key, value in tags.items())


def _poll(arm: Arm, url: str) -> Any:
    """One GET of an operation's status URL. An answer that says nothing about the operation (a 5xx, 429, 408,
    a timeout, a dropped connection) raises StatusUnavailable: the operation may be fine, ask again later."""
    try:
        response = arm.send("GET", url)
    except Exception as error:
        raise _unavailable(error) from error
    if response.status_code >= 500 or response.status_code in (408, 429):
        raise StatusUnavailable(f"{response.status_code} {error_message(response)}")
    return response


def _unavailable(error: Exception) -> Exception:
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    if isinstance(error, (ServiceRequestError, ServiceResponseError)):
        return StatusUnavailable(f"{type(error).__name__}: {kept(str(error))}")
    status = error.status_code if isinstance(error, HttpResponseError) else None
    if status is not None and (status >= 500 or status in (408, 429)):
        return StatusUnavailable(kept(f"{status} {error.message}"))
    return error


def _operation_status(kind: str, response: Any, what: str) -> CopyStatus:
    """Azure-AsyncOperation answers a status document; Location answers 202 while running and 200 once done."""
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
        message = str(error.get("message") or f"{what} ended {status}")
        return CopyStatus(CopyProgress.FAILED, kept(message))
    return CopyStatus(CopyProgress.RUNNING)


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
