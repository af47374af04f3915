"""The local backend keeps Azure ML's rules, also when several processes write at once."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from promotion import service
from promotion.adapters.local import InvalidModelFolder, LocalBackend
from promotion.adapters.sqlite import SqlitePromotionStore
from promotion.domain import CopyState, ModelRef, ModelVersion, Outcome
from promotion.events import MODEL_REGISTERED
from promotion.policy import Policy
from promotion.ports import AlreadyExists
from promotion.settings import Settings
from tests.models import MLFLOW_MODEL
from tests.unit.fakes import FakeClock

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
        backend.registry.start_copy(broken)
    assert backend.registry.list() == []
    assert list((tmp_path / "registries" / "shared-registry" / "models" / "taxi-fare").iterdir()) == []
    assert backend.registry.start_copy(staged).startswith("local-copy:")


def test_a_registry_copy_carries_content_and_the_tag_step_adds_metadata(tmp_path):
    backend = LocalBackend(settings_for(tmp_path))
    staged = backend.staging.register(CANDIDATE, SEED_MODEL)
    handle = backend.registry.start_copy(staged)
    assert backend.registry.copy_status(handle).progress.value == "succeeded"
    copied = backend.registry.get(REF)
    assert (copied.type, copied.properties, copied.tags) == ("mlflow_model", {"run": "r1"}, {})
    assert (Path(copied.path) / "MLmodel").read_bytes() == (SEED_MODEL / "MLmodel").read_bytes()
    tagged = backend.registry.tag(REF, {**staged.tags, "promotion.event_id": "event-1"}, staged.description)
    assert tagged.tags == {"stage": "candidate", "promotion.event_id": "event-1"}
    assert tagged.description == "taxi fares"
    with pytest.raises(AlreadyExists):
        backend.registry.start_copy(staged)


def test_an_unknown_copy_handle_reports_a_failure(tmp_path):
    registry = LocalBackend(settings_for(tmp_path)).registry
    assert registry.copy_status("somewhere-else:taxi-fare:1").progress.value == "failed"
    assert registry.copy_status("local-copy:taxi-fare:1").progress.value == "failed"  # never copied


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
        source="test",
        clock=FakeClock(),
    )
    results.put(decision.outcome.value)


def _run_at_once(target, args_for, processes: int) -> list[str]:
    # spawn, not fork: forking a process with threads may deadlock (and warns on Python 3.12+).
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=target, args=(*args_for(i), barrier, results)) for i in range(processes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    return sorted(results.get(timeout=5) for _ in workers)


def test_processes_registering_the_same_model_at_once_yield_one_version(tmp_path):
    outcomes = _run_at_once(_register_in_child, lambda i: (str(tmp_path),), processes=6)
    assert outcomes == ["already exists"] * 5 + ["registered"]
    assert len(LocalBackend(settings_for(tmp_path)).staging.list()) == 1


def test_processes_handling_the_same_model_at_once_start_one_copy(tmp_path):
    LocalBackend(settings_for(tmp_path)).staging.register(CANDIDATE, SEED_MODEL)
    # Six deliveries of one event plus replays with other ids, all at the same moment.
    outcomes = _run_at_once(_propagate_in_child, lambda i: (str(tmp_path), f"event-{i % 3}"), processes=6)
    assert outcomes.count(Outcome.COPY_STARTED.value) == 1
    assert set(outcomes) == {Outcome.COPY_STARTED.value, Outcome.COPY_IN_PROGRESS.value}
    [copy] = LocalBackend(settings_for(tmp_path)).registry.list()
    assert copy.ref == REF
    store = SqlitePromotionStore(tmp_path / "promotions.sqlite3")
    started = store.copy(REF)
    assert started.state is CopyState.COPYING
    decisions = {d.event_id: d.outcome for d in store.decisions(REF)}
    assert decisions[started.cause] is Outcome.COPY_STARTED  # the event that made the copy says so


def test_production_endpoint_file_is_valid_json_after_updates(tmp_path):
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
    deployer.set_traffic("taxi-prod", {"taxi-v1": 50, "taxi-v2": 50})
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
    endpoint_file = tmp_path / "workspaces" / "ws-production" / "endpoints" / "taxi-prod.json"
    assert json.loads(endpoint_file.read_text())["auth_mode"] == "key"
    with pytest.raises(Exception, match="no deployment taxi-v9"):
        deployer.set_traffic("taxi-prod", {"taxi-v9": 100})


# ---- after a crash


_KILLED_WRITER = """
import os, shutil, sys, time
from pathlib import Path
from promotion.adapters.local import LocalBackend
from promotion.domain import ModelRef, ModelVersion
from promotion.settings import Settings

root, source = Path(sys.argv[1]), Path(sys.argv[2])
backend = LocalBackend(Settings.from_env({"PROMOTION_BACKEND": "local", "PROMOTION_LOCAL_ROOT": str(root)}))

def slow_copy(src, dst, *args, **kwargs):
    shutil.copy2(src, dst)
    print("writing", flush=True)
    time.sleep(60)  # killed here, mid-write

original = shutil.copytree
shutil.copytree = lambda src, dst, **kw: original(src, dst, copy_function=slow_copy)
backend.staging.register(ModelVersion(ModelRef("taxi-fare", "1"), "mlflow_model"), source)
"""


def test_a_writer_killed_mid_write_leaves_no_version_and_its_leftovers_go_at_the_next_write(tmp_path):
    writer = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path), str(SEED_MODEL)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert writer.stdout.readline().strip() == "writing"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=10)

    models = tmp_path / "workspaces" / "ws-staging" / "models" / "taxi-fare"
    assert [p.name for p in models.iterdir() if p.name.startswith(".creating-")]  # what kill -9 left behind
    backend = LocalBackend(settings_for(tmp_path))
    assert backend.staging.list() == []  # a folder being written is not a version
    assert backend.staging.get(REF) is None

    backend.staging.register(CANDIDATE, SEED_MODEL)  # the next write

    assert [p.name for p in models.iterdir()] == ["1"]
    assert [m.ref for m in backend.staging.list()] == [REF]


def test_a_live_writers_folder_is_left_alone(tmp_path):
    backend = LocalBackend(settings_for(tmp_path))
    models = tmp_path / "workspaces" / "ws-staging" / "models" / "taxi-fare"
    models.mkdir(parents=True)
    live = models / f".creating-pid{os.getpid()}-0123abcd-2"  # this process: alive
    live.mkdir()
    (live / "model.json").write_text(json.dumps({**CANDIDATE.to_json(), "version": "2", "path": None}))
    dead = models / ".creating-pid999999999-0123abcd-3"
    dead.mkdir()

    backend.staging.register(CANDIDATE, SEED_MODEL)

    assert live.exists() and not dead.exists()
    assert [m.version for m in backend.staging.list()] == ["1"]  # the half-written "2" is never listed
