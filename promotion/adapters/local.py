"""The local backend: workspaces, the registry and production endpoints as folders under PROMOTION_LOCAL_ROOT.

It keeps Azure ML's rules, so that what works here works in Azure: a name and version are written once
and never change, a second create answers "already exists", and mlflow_model folders need an MLmodel file.
Every write lands whole or not at all (a folder built aside, then renamed into place), which also makes
it safe when several processes register or copy the same model at once.

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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from promotion.domain import DEPLOYMENT_MODEL_TAG, Lineage, ModelRef, ModelVersion, split_traffic
from promotion.ports import AlreadyExists, DeploymentPlan, Progress
from promotion.settings import Settings

_ENDPOINT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]")


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

    def list(self) -> list[ModelVersion]:
        models = []
        for record_file in sorted((self.root / "models").glob("*/*/model.json")):
            models.append(_model_from_record(json.loads(record_file.read_text(encoding="utf-8"))))
        return models

    def register(self, model: ModelVersion, source: Path) -> ModelVersion:
        """Register a model from a local file or folder, as `az ml model create --path` does."""
        if not source.exists():
            raise InvalidModelFolder(f"path {source} does not exist")
        if model.type == "mlflow_model" and not (source / "MLmodel").is_file():
            raise InvalidModelFolder(f"path {source} is not an MLflow model folder (no MLmodel file in it)")

        def copy_artifacts(artifacts: Path) -> None:
            if source.is_dir():
                shutil.copytree(source, artifacts)
            else:
                artifacts.mkdir()
                shutil.copy2(source, artifacts / source.name)

        return self._create(model, copy_artifacts)

    def _create(self, model: ModelVersion, fill_artifacts: Callable[[Path], object]) -> ModelVersion:
        final = self._folder(model.ref)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            raise AlreadyExists(f"model {model.ref} already exists in {self.root.name}")
        staged = final.parent / f".creating-{model.version}-{uuid.uuid4().hex}"
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

    def _folder(self, ref: ModelRef) -> Path:
        # ModelRef has validated both parts against Azure ML's alphabet, so neither can leave the root.
        return self.root / "models" / ref.name / ref.version


class LocalRegistry(LocalModels):
    def copy_from_workspace(self, model: ModelVersion, lineage: Lineage) -> ModelVersion:
        if model.path is None:
            raise InvalidModelFolder(f"model {model.ref} has no artifacts to copy")
        source = Path(model.path)
        copy = ModelVersion(
            ref=model.ref,
            type=model.type,
            tags={**model.tags, **lineage.as_tags()},
            properties=dict(model.properties),
            description=model.description,
        )
        return self._create(copy, lambda artifacts: shutil.copytree(source, artifacts))

    def add_lineage(self, model: ModelVersion, lineage: Lineage) -> ModelVersion:
        """Tag an existing copy. Its name, version and artifacts stay; tags may change, as in Azure ML."""
        record_file = self._folder(model.ref) / "model.json"
        record = json.loads(record_file.read_text(encoding="utf-8"))
        record["tags"] = {**record["tags"], **model.tags, **lineage.as_tags()}
        staged = record_file.with_name(f".model.{uuid.uuid4().hex}.json")
        staged.write_text(json.dumps(record, indent=2), encoding="utf-8")
        os.replace(staged, record_file)
        return _model_from_record(record)


class LocalDeployer:
    """Online endpoints of the production workspace, one JSON file each. Deployments finish at once."""

    def __init__(self, workspace: Path):
        self.endpoints = workspace / "endpoints"

    def ensure_endpoint(self, plan: DeploymentPlan) -> Progress:
        with self._endpoint(plan.endpoint) as endpoint:
            endpoint.setdefault("name", plan.endpoint)
            endpoint.setdefault("auth_mode", "key")
            endpoint.setdefault("traffic", {})
            endpoint.setdefault("deployments", {})
        return Progress.READY

    def ensure_deployment(self, plan: DeploymentPlan) -> Progress:
        with self._endpoint(plan.endpoint) as endpoint:
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

    def ensure_traffic(self, plan: DeploymentPlan) -> Progress:
        with self._endpoint(plan.endpoint) as endpoint:
            endpoint["traffic"] = split_traffic(endpoint["traffic"], plan.deployment, plan.traffic_percent)
        return Progress.READY

    def deployments_of(self, model: ModelRef) -> list[dict[str, Any]]:
        found = []
        for endpoint_file in sorted(self.endpoints.glob("*.json")):
            endpoint = json.loads(endpoint_file.read_text(encoding="utf-8"))
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
        return [json.loads(path.read_text(encoding="utf-8")) for path in sorted(self.endpoints.glob("*.json"))]

    @contextlib.contextmanager
    def _endpoint(self, name: str) -> Iterator[dict[str, Any]]:
        """Read-modify-write of one endpoint file under an exclusive lock, replaced atomically."""
        if not _ENDPOINT_NAME.fullmatch(name):
            raise ValueError(f"invalid endpoint name {name!r}")
        self.endpoints.mkdir(parents=True, exist_ok=True)
        path = self.endpoints / f"{name}.json"
        with _exclusive_lock(self.endpoints / f".{name}.lock"):
            endpoint = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
            yield endpoint
            staged = path.with_name(f".{name}.{uuid.uuid4().hex}.tmp")
            staged.write_text(json.dumps(endpoint, indent=2), encoding="utf-8")
            os.replace(staged, path)


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
    )
