"""The local backend keeps Azure ML's rules, also when several processes write at once."""

import json
import multiprocessing
from pathlib import Path

import pytest

from promotion import service
from promotion.adapters.local import InvalidModelFolder, LocalBackend
from promotion.adapters.sqlite import SqlitePromotionStore
from promotion.domain import Lineage, ModelRef, ModelVersion, Outcome
from promotion.events import MODEL_REGISTERED
from promotion.policy import Policy
from promotion.ports import AlreadyExists
from promotion.settings import Settings
from tests.models import MLFLOW_MODEL

SEED_MODEL = MLFLOW_MODEL
REF = ModelRef("taxi-fare", "1")
CANDIDATE = ModelVersion(REF, "mlflow_model", {"stage": "candidate"}, {"run": "r1"}, "taxi fares")
POLICY = Policy.from_document({"share_to_registry": {"require_tags": {"stage": "candidate"}}})


def settings_for(root: Path) -> Settings:
    return Settings.from_env({"PROMOTION_BACKEND": "local", "PROMOTION_LOCAL_ROOT": str(root)})


def test_register_get_and_list(tmp_path):
    backend = LocalBackend(settings_for(tmp_path))
    registered = backend.staging.register(CANDIDATE, SEED_MODEL)
    assert (Path(registered.path) / "MLmodel").is_file()
    assert backend.staging.get(REF) == registered
    assert backend.staging.get(ModelRef("taxi-fare", "2")) is None
    assert [m.ref for m in backend.staging.list()] == [REF]
    assert backend.registry.list() == []


def test_name_and_version_are_immutable(tmp_path):
    backend = LocalBackend(settings_for(tmp_path))
    backend.staging.register(CANDIDATE, SEED_MODEL)
    with pytest.raises(AlreadyExists, match="taxi-fare:1 already exists"):
        backend.staging.register(ModelVersion(REF, "custom_model", {"other": "tags"}), Path(__file__).parent)
    assert backend.staging.get(REF).tags == {"stage": "candidate"}
    artifacts = Path(backend.staging.get(REF).path)
    assert sorted(p.name for p in artifacts.iterdir()) == sorted(p.name for p in SEED_MODEL.iterdir())


def test_mlflow_models_need_an_mlflow_folder_and_paths_must_exist(tmp_path):
    backend = LocalBackend(settings_for(tmp_path))
    with pytest.raises(InvalidModelFolder, match="no MLmodel file"):
        backend.staging.register(CANDIDATE, SEED_MODEL / "MLmodel")
    with pytest.raises(InvalidModelFolder, match="does not exist"):
        backend.staging.register(CANDIDATE, tmp_path / "missing")
    assert backend.staging.list() == []
    assert not (tmp_path / "workspaces" / "ws-staging" / "models" / "taxi-fare").exists()


def test_a_failed_copy_leaves_nothing_half_written(tmp_path):
    backend = LocalBackend(settings_for(tmp_path))
    staged = backend.staging.register(CANDIDATE, SEED_MODEL)
    broken = ModelVersion(REF, "mlflow_model", path=str(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError):
        backend.registry.copy_from_workspace(broken, Lineage("ws", REF, "e", "d"))
    assert backend.registry.list() == []
    assert list((tmp_path / "registries" / "shared-registry" / "models" / "taxi-fare").iterdir()) == []
    assert backend.registry.copy_from_workspace(staged, Lineage("ws", REF, "e", "d")).ref == REF


def test_registry_copy_carries_metadata_lineage_and_artifacts(tmp_path):
    backend = LocalBackend(settings_for(tmp_path))
    staged = backend.staging.register(CANDIDATE, SEED_MODEL)
    lineage = Lineage("/subscriptions/x/workspaces/ws-staging", REF, "event-1", "sha256:abc")
    copied = backend.registry.copy_from_workspace(staged, lineage)
    assert copied.tags == {"stage": "candidate", **lineage.as_tags()}
    assert (copied.type, copied.properties, copied.description) == ("mlflow_model", {"run": "r1"}, "taxi fares")
    assert (Path(copied.path) / "MLmodel").read_bytes() == (SEED_MODEL / "MLmodel").read_bytes()
    with pytest.raises(AlreadyExists):
        backend.registry.copy_from_workspace(staged, lineage)


def _register_in_child(root: str, barrier, results) -> None:
    backend = LocalBackend(settings_for(Path(root)))
    barrier.wait()
    try:
        backend.staging.register(CANDIDATE, SEED_MODEL)
        results.put("registered")
    except AlreadyExists:
        results.put("already exists")


def _propagate_in_child(root: str, event_id: str, barrier, results) -> None:
    settings = settings_for(Path(root))
    backend = LocalBackend(settings)
    barrier.wait()
    decision = service.propagate(
        {
            "id": event_id,
            "topic": settings.staging_workspace_id,
            "eventType": MODEL_REGISTERED,
            "data": {"ModelName": REF.name, "ModelVersion": 1},
        },
        staging_workspace_id=settings.staging_workspace_id,
        staging=backend.staging,
        registry=backend.registry,
        load_policy=lambda: POLICY,
        store=SqlitePromotionStore(Path(root) / "promotions.sqlite3"),
    )
    results.put(decision.outcome.value)


def _run_at_once(target, args_for, processes: int) -> list[str]:
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=target, args=(*args_for(i), barrier, results)) for i in range(processes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    return sorted(results.get(timeout=5) for _ in workers)


def test_processes_registering_the_same_model_at_once_yield_one_version(tmp_path):
    outcomes = _run_at_once(_register_in_child, lambda i: (str(tmp_path),), processes=6)
    assert outcomes == ["already exists"] * 5 + ["registered"]
    assert len(LocalBackend(settings_for(tmp_path)).staging.list()) == 1


def test_processes_copying_the_same_model_at_once_yield_one_copy(tmp_path):
    LocalBackend(settings_for(tmp_path)).staging.register(CANDIDATE, SEED_MODEL)
    # Six deliveries of one event plus replays with other ids, all at the same moment.
    outcomes = _run_at_once(_propagate_in_child, lambda i: (str(tmp_path), f"event-{i % 3}"), processes=6)
    assert outcomes.count(Outcome.COPIED.value) == 1
    assert set(outcomes) == {Outcome.COPIED.value, Outcome.ALREADY_IN_REGISTRY.value}
    registry = LocalBackend(settings_for(tmp_path)).registry
    [copy] = registry.list()
    assert copy.ref == REF and copy.tags["promotion.source_model"] == "taxi-fare:1"
    decisions = SqlitePromotionStore(tmp_path / "promotions.sqlite3").decisions(REF)
    assert sorted(d.event_id for d in decisions) == ["event-0", "event-1", "event-2"]


def test_production_endpoint_file_is_valid_json_after_concurrent_updates(tmp_path):
    from promotion.ports import DeploymentPlan

    deployer = LocalBackend(settings_for(tmp_path)).production
    plans = [
        DeploymentPlan(
            ModelRef("taxi-fare", str(v)),
            f"azureml://registries/r/models/taxi-fare/versions/{v}",
            "taxi-prod",
            f"taxi-v{v}",
            "Standard_F4s_v2",
            1,
            50,
            {"promotion.model": f"taxi-fare:{v}"},
        )
        for v in (1, 2)
    ]
    for plan in plans:
        deployer.ensure_endpoint(plan)
        deployer.ensure_deployment(plan)
        deployer.ensure_traffic(plan)
    [endpoint] = deployer.list()
    assert endpoint["traffic"] == {"taxi-v1": 50, "taxi-v2": 50}
    assert deployer.deployments_of(ModelRef("taxi-fare", "2")) == [
        {
            "endpoint": "taxi-prod",
            "deployment": "taxi-v2",
            "traffic": 50,
            "state": "Succeeded",
            "model": plans[1].model_uri,
        }
    ]
    assert (
        json.loads((tmp_path / "workspaces" / "ws-production" / "endpoints" / "taxi-prod.json").read_text())[
            "auth_mode"
        ]
        == "key"
    )
