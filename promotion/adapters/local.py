"""The local backend: workspaces, the registry and production endpoints as folders under PROMOTION_LOCAL_ROOT.

It keeps Azure ML's rules, so that what works here works in Azure: a name and version are written once and
their content never changes (tags may), a second create answers "already exists", mlflow_model folders need
an MLmodel file, and a copy into the registry goes through the same states as in Azure (started, then
finished by the timer), even though the files are copied at once.

Every write lands whole or not at all: a folder is built aside (`.creating-*`), then renamed into place,
which also makes it safe when several processes register or copy the same model at once. A process killed
mid-write leaves its `.creating-*` folder behind; the next write next to it removes it.

Layout:
    {root}/workspaces/{workspace}/models/{name}/{version}/model.json + artifacts/
    {root}/registries/{registry}/models/{name}/{version}/model.json + artifacts/
    {root}/workspaces/{production workspace}/endpoints/{endpoint}.json
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from promotion.domain import DEPLOYMENT_MODEL_TAG, ModelRef, ModelVersion, isoformat, now, served_model
from promotion.ports import (
    AlreadyExists,
    CopyProgress,
    CopyRefused,
    CopyStatus,
    DeploymentFailed,
    DeploymentPlan,
    EndpointState,
    OnlineDeployment,
    OnlineEndpoint,
    Progress,
)
from promotion.settings import Settings

_ENDPOINT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]")
# Registry asset names, stricter than a workspace's: no '.' (ARM's pattern for registry model names).
_REGISTRY_MODEL_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9\-_]{0,254}")
_CREATING = ".creating-"
_LOCAL_OPERATION = "local-copy:"


class InvalidModelFolder(ValueError):
    pass


class LocalBackend:
    def __init__(self, settings: Settings):
        root = settings.local_root
        self.staging = LocalModels(root / "workspaces" / settings.staging_workspace)
        self.registry = LocalRegistry(root / "registries" / settings.registry_name)
        self.production = LocalDeployer(root / "workspaces" / settings.production_workspace)


class LocalModels:
    """A workspace's (or the registry's) model versions."""

    def __init__(self, root: Path):
        self.root = root

    def get(self, ref: ModelRef) -> ModelVersion | None:
        try:
            record = json.loads((self._folder(ref) / "model.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return _model_from_record(record)

    def names(self) -> list[str]:
        return sorted({model.name for model in self.list()})

    def versions(self, name: str) -> list[ModelVersion]:
        return [model for model in self.list() if model.name == name]

    def list(self) -> list[ModelVersion]:
        """Every version, once: folders being written (`.creating-*`) are not versions yet."""
        models = []
        for record_file in sorted((self.root / "models").glob("*/*/model.json")):
            if record_file.parent.name.startswith("."):
                continue
            models.append(_model_from_record(json.loads(record_file.read_text(encoding="utf-8"))))
        return models

    def register(self, model: ModelVersion, source: Path) -> ModelVersion:
        """Register a model from a local file or folder, as `az ml model create --path` does."""
        check_model_source(model.type, source)

        def copy_artifacts(artifacts: Path) -> None:
            if source.is_dir():
                shutil.copytree(source, artifacts)
            else:
                artifacts.mkdir()
                shutil.copy2(source, artifacts / source.name)

        return self._create(model, copy_artifacts)

    def set_tags(self, ref: ModelRef, tags: Mapping[str, str]) -> ModelVersion:
        """Add or change tags of a version in place (`az ml model update --set tags.K=V`); nothing else changes,
        and, as in Azure, no event is emitted."""
        return self._update(ref, lambda record: record["tags"].update(tags))

    def set_archived(self, ref: ModelRef, archived: bool = True) -> ModelVersion:
        """Archive a version (`az ml model archive`): it stays readable, and nothing else changes."""
        return self._update(ref, lambda record: record.update(archived=archived))

    def _create(self, model: ModelVersion, fill_artifacts: Callable[[Path], object]) -> ModelVersion:
        final = self._folder(model.ref)
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_writes(final.parent)
        if final.exists():
            raise AlreadyExists(f"model {model.ref} already exists in {self.root.name}")
        staged = final.parent / f"{_CREATING}pid{os.getpid()}-{uuid.uuid4().hex}-{model.version}"
        try:
            staged.mkdir()
            fill_artifacts(staged / "artifacts")
            stored = ModelVersion(
                ref=model.ref,
                type=model.type,
                tags=dict(model.tags),
                properties=dict(model.properties),
                description=model.description,
                path=str(final / "artifacts"),
                asset_id=f"{self.root.parent.name}/{self.root.name}/models/{model.name}/versions/{model.version}",
                flavors=dict(model.flavors),
                # As Azure's systemData.createdAt: the backend's own record of when the version was created.
                created_at=isoformat(now()),
            )
            (staged / "model.json").write_text(json.dumps(stored.to_json(), indent=2), encoding="utf-8")
            try:
                # Renaming a folder onto a non-empty one fails, so exactly one of several racing writers wins.
                os.rename(staged, final)
            except OSError as error:
                if error.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.EACCES):
                    raise AlreadyExists(f"model {model.ref} already exists in {self.root.name}") from None
                raise
            return stored
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def _update(self, ref: ModelRef, change: Callable[[dict[str, Any]], object]) -> ModelVersion:
        record_file = self._folder(ref) / "model.json"
        if not record_file.is_file():
            raise LookupError(f"model {ref} is not in {self.root.name}")
        with _exclusive_lock(record_file.with_name(".model.lock")):
            try:
                record = json.loads(record_file.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise LookupError(f"model {ref} is not in {self.root.name}") from None
            change(record)
            staged = record_file.with_name(f".model.{uuid.uuid4().hex}.json")
            staged.write_text(json.dumps(record, indent=2), encoding="utf-8")
            os.replace(staged, record_file)
        return _model_from_record(record)

    def _folder(self, ref: ModelRef) -> Path:
        # ModelRef has validated both parts against Azure ML's alphabet, so neither can leave the root.
        return self.root / "models" / ref.name / ref.version


class LocalRegistry(LocalModels):
    """The registry. A copy's files are copied at once, but the copy still reports through a handle, and its
    lineage is added by the timer, as in Azure."""

    def start_copy(self, model: ModelVersion) -> str:
        if not _REGISTRY_MODEL_NAME.fullmatch(model.name):
            # What Azure answers (400, so for good): the name may be fine in a workspace, never in a registry.
            raise CopyRefused(
                f"the registry refused to copy {model.ref}: registry asset names take letters, digits, '-' and '_' "
                "(no '.'), starting with a letter or digit"
            )
        if model.path is None:
            raise InvalidModelFolder(f"model {model.ref} has no artifacts to copy")
        source = Path(model.path)
        # Like Azure's publish: the content and properties; tags and lineage come with the tag step.
        copy = ModelVersion(ref=model.ref, type=model.type, properties=dict(model.properties))
        self._create(copy, lambda artifacts: shutil.copytree(source, artifacts))
        return f"{_LOCAL_OPERATION}{model.ref}"

    def copy_status(self, operation: str) -> CopyStatus:
        if not operation.startswith(_LOCAL_OPERATION):
            return CopyStatus(CopyProgress.FAILED, f"unknown copy operation {operation!r}")
        held = self.get(ModelRef.from_text(operation.removeprefix(_LOCAL_OPERATION)))
        return CopyStatus(CopyProgress.SUCCEEDED if held else CopyProgress.FAILED, None if held else "the copy is gone")

    def tag(
        self,
        ref: ModelRef,
        tags: Mapping[str, str],
        description: str | None,
        *,
        check: Callable[[ModelVersion], None] = lambda held: None,
    ) -> ModelVersion | None:
        if self.get(ref) is None:
            return None

        def change(record: dict[str, Any]) -> None:
            check(_model_from_record(record))
            record["tags"] = {**record["tags"], **tags}
            record["description"] = record["description"] or description

        return self._update(ref, change)

    def tag_status(
        self, ref: ModelRef, operation: str, tags: Mapping[str, str], description: str | None = None
    ) -> CopyStatus:
        """Tags are applied at once here (`tag` never answers a TagUpdate), so the version says it all."""
        held = self.get(ref)
        if held is not None and all(held.tags.get(key) == value for key, value in tags.items()):
            return CopyStatus(CopyProgress.SUCCEEDED)
        return CopyStatus(CopyProgress.FAILED, f"the registry does not show the tags of {ref}")


class LocalDeployer:
    """Online endpoints of the production workspace, one JSON file each. Every operation finishes at once."""

    def __init__(self, workspace: Path):
        self.endpoints = workspace / "endpoints"

    def ensure_endpoint(self, plan: DeploymentPlan) -> Progress:
        with self._endpoint(plan.endpoint) as endpoint:
            if "name" not in endpoint:  # a new endpoint; an existing one keeps its tags, as Azure's does
                endpoint["tags"] = dict(plan.endpoint_tags)
            endpoint.setdefault("name", plan.endpoint)
            endpoint.setdefault("auth_mode", "key")
            endpoint.setdefault("traffic", {})
            endpoint.setdefault("deployments", {})
        return Progress.READY

    def ensure_deployment(self, plan: DeploymentPlan) -> Progress:
        with self._endpoint(plan.endpoint) as endpoint:
            existing = endpoint["deployments"].get(plan.deployment)
            if existing is not None and existing["model"] != plan.model_uri:
                raise DeploymentFailed(
                    f"online deployment {plan.deployment} on endpoint {plan.endpoint} already exists and serves "
                    f"{existing['model']}, not {plan.model_uri}"
                )
            endpoint["deployments"].setdefault(
                plan.deployment,
                {
                    "name": plan.deployment,
                    "model": plan.model_uri,
                    "instance_type": plan.instance_type,
                    "instance_count": plan.instance_count,
                    "tags": dict(plan.tags),
                    "state": "Succeeded",
                },
            )
        return Progress.READY

    def endpoint(self, name: str) -> EndpointState | None:
        path = self._path(name)
        if not path.exists():
            return None
        endpoint = json.loads(path.read_text(encoding="utf-8"))
        models = {d["name"]: d["tags"].get(DEPLOYMENT_MODEL_TAG) for d in endpoint["deployments"].values()}
        traffic = {k: v for k, v in endpoint["traffic"].items() if v}
        return EndpointState(traffic=traffic, models=models, tags=endpoint.get("tags", {}))

    def set_traffic(self, endpoint: str, traffic: Mapping[str, int]) -> Progress:
        with self._endpoint(endpoint) as state:
            missing = sorted(set(traffic) - set(state.get("deployments", {})))
            if missing:
                raise DeploymentFailed(f"online endpoint {endpoint} has no deployment {', '.join(missing)}")
            state["traffic"] = {name: share for name, share in traffic.items() if share}
        return Progress.READY

    def deployments_of(self, model: ModelRef) -> list[dict[str, Any]]:
        found = []
        for endpoint in self.list():
            for deployment in endpoint["deployments"].values():
                if deployment["tags"].get(DEPLOYMENT_MODEL_TAG) == str(model):
                    found.append(
                        {
                            "endpoint": endpoint["name"],
                            "deployment": deployment["name"],
                            "traffic": endpoint["traffic"].get(deployment["name"], 0),
                            "state": deployment["state"],
                            "model": deployment["model"],
                        }
                    )
        return found

    def list(self) -> list[dict[str, Any]]:
        return [json.loads(path.read_text(encoding="utf-8")) for path in sorted(self.endpoints.glob("[!.]*.json"))]

    def online_endpoints(self) -> list[OnlineEndpoint]:
        return [
            OnlineEndpoint(
                name=endpoint["name"],
                traffic={name: share for name, share in endpoint["traffic"].items() if share},
                tags=endpoint.get("tags") or {},
            )
            for endpoint in self.list()
        ]

    def online_deployments(self, endpoint: str) -> list[OnlineDeployment]:
        path = self._path(endpoint)
        if not path.exists():
            return []
        state = json.loads(path.read_text(encoding="utf-8"))
        return [
            OnlineDeployment(
                name=deployment["name"],
                model=served_model(deployment["tags"], deployment["model"]),
                model_uri=deployment["model"],
                state=deployment["state"],
                tags=deployment["tags"],
            )
            for deployment in state["deployments"].values()
        ]

    def delete_deployment(self, endpoint: str, deployment: str) -> Progress:
        if not self._path(endpoint).exists():
            return Progress.READY
        with self._endpoint(endpoint) as state:
            if state.get("traffic", {}).get(deployment, 0):
                raise DeploymentFailed(
                    f"online deployment {deployment} on endpoint {endpoint} has {state['traffic'][deployment]}% of "
                    "the traffic: move its traffic away before deleting it"
                )
            state.get("deployments", {}).pop(deployment, None)
        return Progress.READY

    def set_traffic_by_hand(self, endpoint: str, traffic: Mapping[str, int]) -> None:
        """`az ml online-endpoint update --traffic` outside the app, with the service's rules: the endpoint and every
        deployment named exist, and the shares are 0-100 and add up to 100 (or are all 0)."""
        if not self._path(endpoint).exists():
            raise LookupError(f"online endpoint {endpoint} does not exist")
        if any(not 0 <= share <= 100 for share in traffic.values()) or sum(traffic.values()) not in (0, 100):
            raise ValueError("traffic shares must be 0-100 and add up to 100")
        self.set_traffic(endpoint, traffic)

    def deploy_by_hand(self, endpoint: str, deployment: str, model_uri: str) -> None:
        """What someone does with `az ml online-deployment create` outside the app: a deployment with no app tags
        and no traffic, on an endpoint that exists."""
        if not self._path(endpoint).exists():
            raise LookupError(f"online endpoint {endpoint} does not exist")
        if not _ENDPOINT_NAME.fullmatch(deployment):
            raise ValueError(f"invalid deployment name {deployment!r}: 3-32 letters, digits or '-', a letter first")
        with self._endpoint(endpoint) as state:
            if deployment in state["deployments"]:
                raise AlreadyExists(f"online deployment {deployment} already exists on endpoint {endpoint}")
            state["deployments"][deployment] = {
                "name": deployment,
                "model": model_uri,
                "instance_type": "Standard_F4s_v2",
                "instance_count": 1,
                "tags": {},
                "state": "Succeeded",
            }

    def _path(self, name: str) -> Path:
        if not _ENDPOINT_NAME.fullmatch(name):
            raise ValueError(f"invalid endpoint name {name!r}")
        return self.endpoints / f"{name}.json"

    @contextlib.contextmanager
    def _endpoint(self, name: str) -> Iterator[dict[str, Any]]:
        """Read-modify-write of one endpoint file under an exclusive lock, replaced atomically."""
        path = self._path(name)
        self.endpoints.mkdir(parents=True, exist_ok=True)
        with _exclusive_lock(self.endpoints / f".{name}.lock"):
            endpoint = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
            yield endpoint
            staged = path.with_name(f".{name}.{uuid.uuid4().hex}.tmp")
            staged.write_text(json.dumps(endpoint, indent=2), encoding="utf-8")
            os.replace(staged, path)


def check_model_source(model_type: str, source: Path) -> None:
    """What `az ml model create --path` checks before it uploads anything."""
    if not source.exists():
        raise InvalidModelFolder(f"path {source} does not exist")
    if model_type == "mlflow_model" and not (source / "MLmodel").is_file():
        raise InvalidModelFolder(f"path {source} is not an MLflow model folder (no MLmodel file in it)")


def _remove_abandoned_writes(folder: Path) -> None:
    """Remove `.creating-*` folders whose writer has died (killed mid-write). A live writer's folder stays."""
    for staged in folder.glob(f"{_CREATING}*"):
        writer = re.match(rf"{re.escape(_CREATING)}pid(\d+)-", staged.name)
        if writer is None or not _alive(int(writer[1])):
            shutil.rmtree(staged, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        if os.name == "nt":  # pragma: no cover - exercised on Windows only
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def _model_from_record(record: dict[str, Any]) -> ModelVersion:
    return ModelVersion(
        ref=ModelRef(record["name"], record["version"]),
        type=record["type"],
        tags=record["tags"],
        properties=record["properties"],
        description=record["description"],
        path=record["path"],
        asset_id=record.get("asset_id"),
        flavors=record.get("flavors") or {},
        created_at=record.get("created_at"),
        archived=bool(record.get("archived")),
    )
