"""One contract for the staging, registry and production ports, run against every adapter: the local
backend, and Azure ML through the real SDK against the HTTP-level fake. Two adapters that pass the same
suite cannot drift apart."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from promotion.adapters.azureml import AzureMLBackend
from promotion.adapters.local import LocalBackend
from promotion.domain import DEPLOYMENT_MODEL_TAG, Lineage, ModelRef, ModelVersion
from promotion.fingerprint import fingerprint
from promotion.ports import (
    AlreadyExists,
    CopyProgress,
    CopyRefused,
    DeploymentFailed,
    DeploymentPlan,
    Progress,
    TagUpdate,
)
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
        self.backend.registry.start_copy(self.backend.staging.get(model.ref))
        self.backend.registry.tag(model.ref, {**model.tags, **LINEAGE.as_tags()}, model.description)

    def set_staging_tags(self, ref: ModelRef, tags: dict[str, str]) -> None:
        self.backend.staging.set_tags(ref, tags)

    def seed_live_deployment(self, endpoint: str, deployment: str) -> None:
        other = plan(endpoint=endpoint, deployment=deployment, model=ModelRef("taxi-fare", "3"))
        for step in (self.backend.production.ensure_endpoint, self.backend.production.ensure_deployment):
            step(other)
        self.backend.production.set_traffic(endpoint, {deployment: 100})

    def finish_operations(self) -> None:
        """Local operations finish at once."""

    def archive(self, ref: ModelRef) -> None:
        self.backend.registry.set_archived(ref)

    def set_registry_tags(self, ref: ModelRef, tags: dict[str, str]) -> None:
        self.backend.registry.set_tags(ref, tags)

    def deploy_by_hand(self, endpoint: str, deployment: str, model_uri: str) -> None:
        self.backend.production.deploy_by_hand(endpoint, deployment, model_uri)


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
        self.seed_staging(model)
        self.fake.add_registry_model(
            model.name,
            model.version,
            type=model.type,
            tags={**model.tags, **LINEAGE.as_tags()},
            properties=model.properties,
            description=model.description,
        )

    def set_staging_tags(self, ref: ModelRef, tags: dict[str, str]) -> None:
        self.fake.set_workspace_model_tags(ref.name, ref.version, tags)

    def seed_live_deployment(self, endpoint: str, deployment: str) -> None:
        self.fake.add_endpoint(endpoint, traffic={deployment: 100})
        self.fake.add_deployment(
            endpoint, deployment, model="azureml://registries/shared-registry/models/taxi-fare/versions/3"
        )

    def archive(self, ref: ModelRef) -> None:
        self.fake.archive_registry_model(ref.name, ref.version)

    def set_registry_tags(self, ref: ModelRef, tags: dict[str, str]) -> None:
        self.fake.set_registry_model_tags(ref.name, ref.version, tags)

    def deploy_by_hand(self, endpoint: str, deployment: str, model_uri: str) -> None:
        self.fake.add_deployment(endpoint, deployment, model=model_uri)

    def finish_operations(self) -> None:
        """The service finishes what is under way, as it would after a few minutes."""
        self.fake.run_publishes()
        self.fake.run_registry_updates()
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


def test_staging_names_and_versions(world):
    for ref in (REF, ModelRef("taxi-fare", "5"), ModelRef("churn", "1")):
        world.seed_staging(ModelVersion(ref, "mlflow_model", {"stage": "candidate"}))
    assert world.backend.staging.names() == ["churn", "taxi-fare"]
    assert sorted(m.version for m in world.backend.staging.versions("taxi-fare")) == ["4", "5"]
    assert world.backend.staging.versions("unknown") == []


def test_staging_tags_change_in_place(world):
    world.seed_staging(SOURCE)
    world.set_staging_tags(REF, {"stage": "production", "owner": "risk"})
    found = world.backend.staging.get(REF)
    assert dict(found.tags) == {"stage": "production", "owner": "risk"}
    assert dict(found.properties) == {"auc": "0.91"}


def copy_until_done(world, model: ModelVersion) -> None:
    handle = world.backend.registry.start_copy(model)
    for _ in range(2):
        if world.backend.registry.copy_status(handle).progress is CopyProgress.SUCCEEDED:
            return
        world.finish_operations()
    raise AssertionError("the copy never finished")


def tag(world, ref: ModelRef, tags: dict[str, str], description: str | None) -> ModelVersion:
    """The tag step as the timer takes it: the update, and if the registry has not applied it yet, its status once
    the registry has had time (Azure answers a long-running operation; the local registry applies it at once)."""
    update = world.backend.registry.tag(ref, tags, description)
    if not isinstance(update, TagUpdate):
        return update
    held = world.backend.registry.get(ref).tags
    assert any(held.get(key) != value for key, value in tags.items()), "accepted is not applied"
    assert world.backend.registry.tag_status(ref, update.operation, tags, description).progress is CopyProgress.RUNNING
    world.finish_operations()
    status = world.backend.registry.tag_status(ref, update.operation, tags, description)
    assert status.progress is CopyProgress.SUCCEEDED, status
    return world.backend.registry.get(ref)


def test_a_copy_carries_the_content_and_the_tag_step_the_metadata(world):
    world.seed_staging(SOURCE)
    staged = world.backend.staging.get(REF)
    assert world.backend.registry.get(REF) is None

    copy_until_done(world, staged)
    copy = world.backend.registry.get(REF)
    assert copy.type == "mlflow_model" and dict(copy.properties) == {"auc": "0.91"}
    assert not Lineage.is_tagged(copy.tags)  # an import carries no tags; the tag step adds them

    tagged = tag(world, REF, {**staged.tags, **LINEAGE.as_tags()}, staged.description)
    assert dict(tagged.tags) == {"stage": "candidate", **LINEAGE.as_tags()}
    assert world.backend.registry.get(REF) == tagged
    assert tagged.description == "taxi fares"
    assert [m.version for m in world.backend.registry.versions("taxi-fare")] == ["4"]


def test_a_name_with_a_dot_is_refused_by_the_registry_for_good(world):
    """Workspaces allow '.' in model names, registries do not: the copy is refused (not retried), with the rule."""
    churn = ModelVersion(ModelRef("Churn.V2", "1"), "mlflow_model", {}, {}, None)
    world.seed_staging(churn)

    with pytest.raises(CopyRefused, match=r"Churn\.V2.*no '\.'"):
        world.backend.registry.start_copy(world.backend.staging.get(churn.ref))
    assert world.backend.registry.get(churn.ref) is None
    assert world.backend.registry.versions("Churn.V2") == []


def test_a_version_is_copied_once(world):
    world.seed_registry(SOURCE)
    with pytest.raises(AlreadyExists):
        world.backend.registry.start_copy(world.backend.staging.get(REF))


def test_tags_change_but_content_does_not(world):
    world.seed_registry(SOURCE)
    before = world.backend.registry.get(REF)
    later = Lineage(LINEAGE.source_workspace, REF, "event-2", "sha256:2")
    tagged = tag(world, REF, later.as_tags(), "another description")
    assert tagged.tags["promotion.event_id"] == "event-2" and tagged.tags["stage"] == "candidate"
    assert (tagged.type, dict(tagged.properties), tagged.path) == (before.type, dict(before.properties), before.path)
    assert tagged.description == "taxi fares"  # a description the version has is kept


def test_a_refusing_check_leaves_the_registry_version_untouched(world):
    world.seed_registry(SOURCE)

    def refuse(held: ModelVersion) -> None:
        raise LookupError(f"{held.ref} is not ours")

    with pytest.raises(LookupError, match="is not ours"):
        world.backend.registry.tag(REF, {"promotion.event_id": "other"}, None, check=refuse)
    assert world.backend.registry.get(REF).tags["promotion.event_id"] == LINEAGE.event_id


def test_tagging_a_missing_version_answers_none(world):
    assert world.backend.registry.tag(REF, LINEAGE.as_tags(), None) is None


def walk(world, production, the_plan: DeploymentPlan, traffic: dict[str, int]) -> None:
    until_ready(world, production.ensure_endpoint, the_plan)
    until_ready(world, production.ensure_deployment, the_plan)
    for _ in range(3):
        if production.set_traffic(the_plan.endpoint, traffic) is Progress.READY:
            return
        world.finish_operations()
    raise AssertionError("the traffic never moved")


def test_first_deployment_takes_the_traffic_and_is_never_duplicated(world):
    production = world.backend.production
    first = plan()
    walk(world, production, first, {"taxi-fare-v4": 100})
    assert production.ensure_deployment(first) is Progress.READY  # asking again changes nothing
    assert production.set_traffic(first.endpoint, {"taxi-fare-v4": 100}) is Progress.READY
    [found] = production.deployments_of(REF)
    assert {key: found[key] for key in ("endpoint", "deployment", "traffic", "model")} == {
        "endpoint": "taxi-fare-prod",
        "deployment": "taxi-fare-v4",
        "traffic": 100,
        "model": first.model_uri,
    }
    assert found["state"].lower() == "succeeded"
    assert production.deployments_of(ModelRef("taxi-fare", "5")) == []


def test_the_endpoint_state_names_what_each_deployment_serves(world):
    world.seed_live_deployment("taxi-fare-prod", "taxi-fare-v3")
    production = world.backend.production
    walk(world, production, plan(), {"taxi-fare-v4": 20, "taxi-fare-v3": 80})
    state = production.endpoint("taxi-fare-prod")
    assert dict(state.traffic) == {"taxi-fare-v4": 20, "taxi-fare-v3": 80}
    assert dict(state.models) == {"taxi-fare-v4": "taxi-fare:4", "taxi-fare-v3": "taxi-fare:3"}
    assert not state.busy
    assert production.endpoint("nothing-here") is None


def test_an_endpoint_is_created_with_its_tags_and_keeps_them(world):
    production = world.backend.production
    tags = {"promotion.owner": "/sites/promo", "promotion.endpoint_model": "taxi-fare"}
    first = replace(plan(), endpoint_tags=tags)
    walk(world, production, first, {"taxi-fare-v4": 100})
    assert dict(production.endpoint("taxi-fare-prod").tags) == tags  # the traffic change kept them
    later = replace(plan(), endpoint_tags={"promotion.owner": "/sites/another"})
    until_ready(world, production.ensure_endpoint, later)
    assert dict(production.endpoint("taxi-fare-prod").tags) == tags  # an existing endpoint is not re-tagged


def test_an_endpoint_made_by_hand_has_no_tags(world):
    world.seed_live_deployment("taxi-fare-prod", "taxi-fare-v3")
    assert dict(world.backend.production.endpoint("taxi-fare-prod").tags) == {}


def test_a_deployment_name_serving_another_model_fails(world):
    world.seed_live_deployment("taxi-fare-prod", "taxi-fare-v4")  # serves taxi-fare:3
    with pytest.raises(DeploymentFailed, match="serves"):
        world.backend.production.ensure_deployment(plan())


def test_registry_reads_carry_the_immutable_parts_and_whether_the_version_is_archived(world):
    world.seed_registry(SOURCE)
    registry = world.backend.registry
    read = registry.get(REF)
    assert "taxi-fare" in read.asset_id and read.asset_id.endswith("/versions/4")
    assert read.created_at and isinstance(read.flavors, Mapping) and read.archived is False
    assert fingerprint(registry.get(REF)) == fingerprint(read)  # the same version reads the same
    world.set_registry_tags(REF, {"accuracy": "0.5"})  # someone with write access, outside the app
    world.archive(REF)
    now = registry.get(REF)
    assert now.archived is True and now.tags["accuracy"] == "0.5"
    assert fingerprint(now) == fingerprint(read)  # tags and the archive flag are metadata, not content


def test_the_endpoint_and_deployment_listings_name_what_each_deployment_serves(world):
    world.seed_live_deployment("taxi-fare-prod", "taxi-fare-v3")
    world.deploy_by_hand(
        "taxi-fare-prod", "by-hand", "azureml://registries/shared-registry/models/taxi-fare/versions/9"
    )
    production = world.backend.production
    [endpoint] = production.online_endpoints()
    assert (endpoint.name, dict(endpoint.traffic), endpoint.busy) == ("taxi-fare-prod", {"taxi-fare-v3": 100}, False)
    deployments = {d.name: d for d in production.online_deployments("taxi-fare-prod")}
    assert {name: d.model for name, d in deployments.items()} == {
        "taxi-fare-v3": "taxi-fare:3",
        "by-hand": "taxi-fare:9",
    }
    assert deployments["by-hand"].model_uri.endswith("/taxi-fare/versions/9")
    assert DEPLOYMENT_MODEL_TAG not in deployments["by-hand"].tags
    assert deployments["by-hand"].state.lower() == "succeeded"
    assert production.online_deployments("nothing-here") == []


def test_a_deployment_with_traffic_is_never_deleted_and_one_without_is(world):
    world.seed_live_deployment("taxi-fare-prod", "taxi-fare-v3")
    world.deploy_by_hand(
        "taxi-fare-prod", "by-hand", "azureml://registries/shared-registry/models/taxi-fare/versions/9"
    )
    production = world.backend.production
    with pytest.raises(DeploymentFailed, match="traffic"):
        production.delete_deployment("taxi-fare-prod", "taxi-fare-v3")
    for _ in range(3):
        if production.delete_deployment("taxi-fare-prod", "by-hand") is Progress.READY:
            break
        world.finish_operations()
    assert [d.name for d in production.online_deployments("taxi-fare-prod")] == ["taxi-fare-v3"]
    assert production.delete_deployment("taxi-fare-prod", "by-hand") is Progress.READY
    assert production.delete_deployment("nothing-here", "by-hand") is Progress.READY
