"""One contract for the staging, registry and production ports, run against every adapter: the local
backend, and Azure ML through the real SDK against the HTTP-level fake. Two adapters that pass the same
suite cannot drift apart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from promotion.adapters.azureml import AzureMLBackend
from promotion.adapters.local import LocalBackend
from promotion.domain import DEPLOYMENT_MODEL_TAG, Lineage, ModelRef, ModelVersion
from promotion.ports import AlreadyExists, DeploymentPlan, Progress
from promotion.settings import Settings
from tests.fakes.azureml_http import FakeAzureML
from tests.fakes.fixtures import AZUREML_ENV, managed_identity_env
from tests.models import MLFLOW_MODEL

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:marshmallow.*")

SEED_MODEL = MLFLOW_MODEL
REF = ModelRef("taxi-fare", "4")
SOURCE = ModelVersion(REF, "mlflow_model", {"stage": "candidate"}, {"auc": "0.91"}, "taxi fares")
LINEAGE = Lineage("/subscriptions/s/resourceGroups/rg/providers/x/workspaces/ws-staging", REF, "event-1", "sha256:1")


class LocalWorld:
    def __init__(self, root: Path):
        self.backend = LocalBackend(
            Settings.from_env({"PROMOTION_BACKEND": "local", "PROMOTION_LOCAL_ROOT": str(root)})
        )

    def seed_staging(self, model: ModelVersion) -> None:
        self.backend.staging.register(model, SEED_MODEL)

    def seed_registry(self, model: ModelVersion) -> None:
        self.seed_staging(model)
        self.backend.registry.copy_from_workspace(self.backend.staging.get(model.ref), LINEAGE)

    def seed_live_deployment(self, endpoint: str, deployment: str) -> None:
        other = plan(endpoint=endpoint, deployment=deployment, model=ModelRef("taxi-fare", "3"))
        for step in (self.backend.production.ensure_endpoint, self.backend.production.ensure_deployment):
            step(other)
        self.backend.production.ensure_traffic(other)

    def finish_operations(self) -> None:
        """Local operations finish at once."""


class AzureWorld:
    def __init__(self, fake: FakeAzureML, settings: Settings):
        self.fake = fake
        self.backend = AzureMLBackend(settings, retry_total=0)

    def seed_staging(self, model: ModelVersion) -> None:
        self.fake.add_workspace_model(
            model.name,
            model.version,
            type=model.type,
            tags=model.tags,
            properties=model.properties,
            description=model.description,
        )

    def seed_registry(self, model: ModelVersion) -> None:
        self.fake.add_registry_model(
            model.name,
            model.version,
            type=model.type,
            tags={**model.tags, **LINEAGE.as_tags()},
            properties=model.properties,
            description=model.description,
        )

    def seed_live_deployment(self, endpoint: str, deployment: str) -> None:
        self.fake.add_endpoint(endpoint, traffic={deployment: 100})
        self.fake.add_deployment(
            endpoint, deployment, model="azureml://registries/shared-registry/models/taxi-fare/versions/3"
        )

    def finish_operations(self) -> None:
        """The service finishes what is under way, as it would after a few minutes."""
        for name in list(self.fake.production.endpoints):
            self.fake.finish(name)
        for endpoint, name in list(self.fake.production.deployments):
            self.fake.finish(endpoint, name)


@pytest.fixture(params=["local", "azureml"])
def world(request, tmp_path, monkeypatch) -> Any:
    if request.param == "local":
        yield LocalWorld(tmp_path)
        return
    managed_identity_env(monkeypatch)
    settings = Settings.from_env(AZUREML_ENV)
    with FakeAzureML(settings) as fake:
        yield AzureWorld(fake, settings)


def plan(endpoint: str = "taxi-fare-prod", deployment: str = "taxi-fare-v4", model: ModelRef = REF, percent: int = 100):
    return DeploymentPlan(
        model=model,
        model_uri=f"azureml://registries/shared-registry/models/{model.name}/versions/{model.version}",
        endpoint=endpoint,
        deployment=deployment,
        instance_type="Standard_F4s_v2",
        instance_count=1,
        traffic_percent=percent,
        tags={DEPLOYMENT_MODEL_TAG: str(model), "promotion.id": "p-1"},
    )


def until_ready(world, step, the_plan: DeploymentPlan) -> None:
    for _ in range(3):
        if step(the_plan) is Progress.READY:
            return
        world.finish_operations()
    raise AssertionError(f"{step.__name__} never became ready")


def test_staging_reads(world):
    world.seed_staging(SOURCE)
    found = world.backend.staging.get(REF)
    assert (found.ref, found.type, dict(found.tags), dict(found.properties), found.description) == (
        REF,
        "mlflow_model",
        {"stage": "candidate"},
        {"auc": "0.91"},
        "taxi fares",
    )
    assert world.backend.staging.get(ModelRef("taxi-fare", "99")) is None


def test_registry_copy_carries_metadata_and_lineage_and_is_immutable(world):
    world.seed_staging(SOURCE)
    staged = world.backend.staging.get(REF)
    assert world.backend.registry.get(REF) is None
    world.backend.registry.copy_from_workspace(staged, LINEAGE)
    copy = world.backend.registry.get(REF)
    assert copy.type == "mlflow_model" and copy.description == "taxi fares"
    assert dict(copy.tags) == {"stage": "candidate", **LINEAGE.as_tags()}
    assert dict(copy.properties) == {"auc": "0.91"}
    with pytest.raises(AlreadyExists):
        world.backend.registry.copy_from_workspace(staged, LINEAGE)


def test_add_lineage_tags_an_existing_copy(world):
    world.seed_registry(SOURCE)
    later = Lineage(LINEAGE.source_workspace, REF, "event-2", "sha256:2")
    tagged = world.backend.registry.add_lineage(SOURCE, later)
    assert tagged.tags["promotion.event_id"] == "event-2" and tagged.tags["stage"] == "candidate"
    assert world.backend.registry.get(REF).tags["promotion.event_id"] == "event-2"


def test_first_deployment_takes_all_traffic_and_is_never_duplicated(world):
    production = world.backend.production
    first = plan(percent=30)
    for step in (production.ensure_endpoint, production.ensure_deployment, production.ensure_traffic):
        until_ready(world, step, first)
        assert step(first) is Progress.READY  # asking again changes nothing
    [found] = production.deployments_of(REF)
    assert {key: found[key] for key in ("endpoint", "deployment", "traffic", "model")} == {
        "endpoint": "taxi-fare-prod",
        "deployment": "taxi-fare-v4",
        "traffic": 100,
        "model": first.model_uri,
    }
    assert found["state"].lower() == "succeeded"
    assert production.deployments_of(ModelRef("taxi-fare", "5")) == []


def test_a_new_deployment_shares_traffic_with_the_previous_live_one(world):
    world.seed_live_deployment("taxi-fare-prod", "taxi-fare-v3")
    production = world.backend.production
    canary = plan(percent=20)
    for step in (production.ensure_endpoint, production.ensure_deployment, production.ensure_traffic):
        until_ready(world, step, canary)
    traffic = {d["deployment"]: d["traffic"] for d in production.deployments_of(REF)}
    assert traffic == {"taxi-fare-v4": 20}
    previous = production.deployments_of(ModelRef("taxi-fare", "3"))
    assert [(d["deployment"], d["traffic"]) for d in previous] == [("taxi-fare-v3", 80)]
