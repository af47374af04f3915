"""Drift detection on both backends (the local folders, and Azure ML through the real SDK against the HTTP fake),
with the real SQLite store: promotions are requested, approved and deployed by the real use cases, production is
then changed outside the app, and detect_drift must find each kind once, publish it once and resolve it once."""

from __future__ import annotations

import pytest

from promotion import service
from promotion.domain import DriftKind, EventType, ModelRef, ModelVersion, Promotion, State
from promotion.identity import Principal
from promotion.policy import ProductionRules
from tests.contract.test_model_ports import AzureWorld, LocalWorld, world  # noqa: F401  (a fixture)
from tests.unit.fakes import FakeClock

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:marshmallow.*")

ALICE = Principal("alice@contoso.com", "11111111-0000-0000-0000-000000000000")
CAROL = Principal("carol@contoso.com", "33333333-0000-0000-0000-000000000000")
RULES = ProductionRules(approvers=(CAROL.name,), stale_deployment_days=1)
ENDPOINT = "taxi-fare-prod"
SOURCE = "test-app"


def uri(ref: ModelRef) -> str:
    return f"azureml://registries/shared-registry/models/{ref.name}/versions/{ref.version}"


class Scene:
    """One backend, the SQLite store and a clock; promotions go through the real use cases."""

    def __init__(self, backend_world, store, clock, rules: ProductionRules = RULES):
        self.world = backend_world
        self.store = store
        self.clock = clock
        self.rules = rules

    @property
    def production(self):
        return self.world.backend.production

    def deployed(self, version: str) -> Promotion:
        ref = ModelRef("taxi-fare", version)
        self.world.seed_registry(ModelVersion(ref, "mlflow_model", {"stage": "candidate"}, {}, "taxi fares"))
        registry = self.world.backend.registry
        workflow = {"rules": self.rules, "store": self.store, "source": SOURCE, "clock": self.clock}
        promotion, _ = service.request_promotion(ref, reason="better", caller=ALICE, registry=registry, **workflow)
        service.approve(promotion.id, caller=CAROL, comment=None, registry=registry, **workflow)
        for _ in range(6):
            promotion = service.deploy(
                promotion.id, registry=registry, deployer=self.production, registry_model_uri=uri, **workflow
            )
            if promotion.state is not State.DEPLOYING:
                break
            self.world.finish_operations()
        assert promotion.state is State.DEPLOYED, promotion.history[-1]
        return promotion

    def rollback(self, promotion: Promotion) -> Promotion:
        workflow = {"rules": self.rules, "store": self.store, "source": SOURCE, "clock": self.clock}
        for _ in range(4):
            if promotion.state is State.DEPLOYED:
                promotion = service.rollback(
                    promotion.id, caller=CAROL, comment="errors", deployer=self.production, **workflow
                )
            elif promotion.state is State.ROLLING_BACK:
                self.world.finish_operations()
                promotion = service.advance_rollback(
                    promotion, store=self.store, deployer=self.production, source=SOURCE, clock=self.clock
                )
            else:
                break
        assert promotion.state is State.ROLLED_BACK
        return promotion

    def detect(self) -> service.drift.DriftReport:
        return service.detect_drift(
            store=self.store, deployer=self.production, rules=self.rules, source=SOURCE, clock=self.clock
        )

    # -- changes outside the app

    def deploy_by_hand(self, deployment: str, ref: ModelRef) -> None:
        self.world.deploy_by_hand(ENDPOINT, deployment, uri(ref))

    def set_traffic_by_hand(self, traffic: dict[str, int]) -> None:
        if isinstance(self.world, LocalWorld):
            self.production.set_traffic_by_hand(ENDPOINT, traffic)
        else:
            self.world.fake.set_traffic_by_hand(ENDPOINT, traffic)

    def delete_by_hand(self, deployment: str) -> None:
        if isinstance(self.world, LocalWorld):
            self.production.delete_deployment(ENDPOINT, deployment)
        else:
            self.world.fake.delete_deployment_by_hand(ENDPOINT, deployment)

    def drift_events(self, type: EventType) -> list:
        return [event for event in self.store.events() if event.type is type]


@pytest.fixture
def make_scene(world, tmp_path):  # noqa: F811  (the imported fixture)
    from promotion.adapters.sqlite import SqlitePromotionStore

    return lambda rules=RULES: Scene(world, SqlitePromotionStore(tmp_path / "p.sqlite3"), FakeClock(), rules)


@pytest.fixture
def scene(make_scene):
    return make_scene()


def kinds(findings) -> list[tuple[str, str]]:
    return sorted((finding.kind.value, finding.deployment) for finding in findings)


def test_production_as_approved_shows_no_drift(scene):
    scene.deployed("3")
    report = scene.detect()
    assert report.examined == [ENDPOINT] and report.open == [] and report.errors == {}
    assert scene.drift_events(EventType.DRIFT_DETECTED) == []


def test_a_model_deployed_by_hand_is_unapproved_found_once_and_resolved_once(scene):
    promotion = scene.deployed("3")
    scene.deploy_by_hand("by-hand", ModelRef("taxi-fare", "9"))
    [found] = scene.detect().detected
    assert (found.kind, found.deployment, found.model) == (
        DriftKind.UNAPPROVED_MODEL,
        "by-hand",
        ModelRef("taxi-fare", "9"),
    )
    assert found.expected == {"model": None} and found.actual["model"] == "taxi-fare:9"
    assert scene.detect().detected == []  # it persists: not published again
    [event] = scene.drift_events(EventType.DRIFT_DETECTED)
    assert event.subject == f"onlineEndpoints/{ENDPOINT}/deployments/by-hand"
    assert event.data["kind"] == "unapproved_model" and event.data["endpoint"] == ENDPOINT
    assert event.data["actual"]["model"] == "taxi-fare:9" and event.data["promotion_id"] is None

    scene.delete_by_hand("by-hand")
    [resolved] = scene.detect().resolved
    assert resolved.key == found.key and resolved.resolved_at is not None
    assert scene.detect().resolved == []
    assert len(scene.drift_events(EventType.DRIFT_RESOLVED)) == 1
    assert scene.store.drift_findings() == [] and scene.store.get(promotion.id).state is State.DEPLOYED


def test_traffic_moved_by_hand_is_found_against_what_the_app_last_set_and_resolved(scene):
    scene.deployed("3")
    newer = scene.deployed("4")  # takes the traffic: the app last set {taxi-fare-v4: 100}
    scene.set_traffic_by_hand({"taxi-fare-v3": 100, "taxi-fare-v4": 0})
    [found] = scene.detect().detected
    assert (found.kind, found.deployment, found.promotion_id) == (DriftKind.TRAFFIC_CHANGED, "", newer.id)
    assert found.expected == {"traffic": {"taxi-fare-v4": 100}} and found.actual == {"traffic": {"taxi-fare-v3": 100}}
    assert scene.detect().detected == []
    [event] = scene.drift_events(EventType.DRIFT_DETECTED)
    assert event.subject == f"onlineEndpoints/{ENDPOINT}" and event.data["expected"] == found.expected
    backend = scene.world.backend
    status = service.model_status(
        newer.model, staging=backend.staging, registry=backend.registry, deployer=scene.production, store=scene.store
    )
    assert status["drift"] == [found.to_json()]  # the status view shows it

    scene.set_traffic_by_hand({"taxi-fare-v3": 0, "taxi-fare-v4": 100})
    assert [f.kind for f in scene.detect().resolved] == [DriftKind.TRAFFIC_CHANGED]
    assert len(scene.drift_events(EventType.DRIFT_RESOLVED)) == 1


def test_a_deployed_promotions_deployment_deleted_by_hand_is_missing_until_it_is_back(scene):
    older = scene.deployed("3")
    scene.deployed("4")  # v3 keeps its deployment at 0%, and its promotion stays deployed
    scene.delete_by_hand("taxi-fare-v3")
    [found] = scene.detect().detected
    assert (found.kind, found.deployment, found.promotion_id) == (
        DriftKind.DEPLOYMENT_MISSING,
        "taxi-fare-v3",
        older.id,
    )
    assert found.actual == {"endpoint": ENDPOINT, "deployment": None}
    assert scene.detect().detected == []

    scene.deploy_by_hand("taxi-fare-v3", ModelRef("taxi-fare", "3"))  # the same model, under the same name
    assert kinds(scene.detect().resolved) == [("deployment_missing", "taxi-fare-v3")]
    assert scene.store.drift_findings() == []
    assert len(scene.drift_events(EventType.DRIFT_DETECTED)) == len(scene.drift_events(EventType.DRIFT_RESOLVED)) == 1


def test_a_deployment_at_zero_percent_too_long_is_stale_reported_only_and_resolved_when_it_serves_again(scene):
    scene.deployed("3")
    scene.deployed("4")  # v3 at 0% from now on
    assert scene.detect().detected == []  # first seen at 0% now
    scene.clock.advance(hours=23, minutes=59)
    assert scene.detect().detected == []  # not longer than stale_deployment_days yet
    scene.clock.advance(minutes=2)
    [found] = scene.detect().detected
    assert (found.kind, found.deployment) == (DriftKind.STALE_DEPLOYMENT, "taxi-fare-v3")
    assert found.actual["at_zero_since"] and "removal" not in found.actual  # reported only
    assert [d.name for d in scene.production.online_deployments(ENDPOINT)].count("taxi-fare-v3") == 1
    assert scene.detect().detected == []

    scene.set_traffic_by_hand({"taxi-fare-v3": 10, "taxi-fare-v4": 90})
    report = scene.detect()
    assert kinds(report.resolved) == [("stale_deployment", "taxi-fare-v3")]
    assert kinds(report.detected) == [("traffic_changed", "")]
    assert len(scene.drift_events(EventType.DRIFT_RESOLVED)) == 1


def test_removal_of_stale_deployments_spares_what_a_rollback_could_return_to_and_deployed_promotions(make_scene):
    rules = ProductionRules(approvers=(CAROL.name,), stale_deployment_days=1, remove_stale_deployments=True)
    scene = make_scene(rules)
    scene.deployed("3")
    v4 = scene.deployed("4")
    scene.rollback(scene.deployed("5"))  # traffic back to v4; v3 and v4 stay deployed promotions
    scene.detect()
    scene.clock.advance(days=2)
    report = scene.detect()
    stale = {f.deployment: f for f in report.detected if f.kind is DriftKind.STALE_DEPLOYMENT}
    assert set(stale) == {"taxi-fare-v3", "taxi-fare-v5"}  # v4 serves again after the rollback
    assert stale["taxi-fare-v3"].actual["removal"].startswith("kept:")
    assert stale["taxi-fare-v5"].actual["removal"] == "started" and report.removed == [f"{ENDPOINT}/taxi-fare-v5"]
    scene.world.finish_operations()
    report = scene.detect()
    assert kinds(report.resolved) == [("stale_deployment", "taxi-fare-v5")]
    names = {d.name for d in scene.production.online_deployments(ENDPOINT)}
    assert names == {"taxi-fare-v3", "taxi-fare-v4"} and scene.store.get(v4.id).state is State.DEPLOYED


def test_an_endpoint_with_work_in_flight_is_left_alone(scene):
    scene.deployed("3")
    scene.deploy_by_hand("by-hand", ModelRef("taxi-fare", "9"))
    ref = ModelRef("taxi-fare", "4")
    scene.world.seed_registry(ModelVersion(ref, "mlflow_model", {"stage": "candidate"}, {}, "taxi fares"))
    workflow = {"rules": RULES, "store": scene.store, "source": SOURCE, "clock": scene.clock}
    registry = scene.world.backend.registry
    promotion, _ = service.request_promotion(ref, reason=None, caller=ALICE, registry=registry, **workflow)
    service.approve(promotion.id, caller=CAROL, comment=None, registry=registry, **workflow)
    report = scene.detect()
    assert report.examined == [] and "approved" in report.skipped[ENDPOINT] and report.detected == []


@pytest.fixture
def fake_world(monkeypatch):
    from promotion.settings import Settings
    from tests.fakes.azureml_http import FakeAzureML
    from tests.fakes.fixtures import AZUREML_ENV, managed_identity_env

    managed_identity_env(monkeypatch)
    settings = Settings.from_env(AZUREML_ENV)
    with FakeAzureML(settings) as fake:
        yield AzureWorld(fake, settings)


def test_the_drift_timer_keeps_to_its_request_budget(fake_world, tmp_path):
    """One endpoint listing, and one deployment listing per managed endpoint, whatever the endpoint holds."""
    from promotion.adapters.sqlite import SqlitePromotionStore

    scene = Scene(fake_world, SqlitePromotionStore(tmp_path / "p.sqlite3"), FakeClock())
    scene.deployed("3")
    scene.deployed("4")
    fake = fake_world.fake
    fake.add_endpoint("someone-elses", traffic={})  # not managed by the app: never read
    fake.reset_log()
    scene.detect()
    assert fake.count() == 2, fake.log()
    assert (
        fake.count("GET", "/onlineEndpoints?") + fake.count("GET", "/onlineEndpoints/taxi-fare-prod/deployments?") == 2
    )
