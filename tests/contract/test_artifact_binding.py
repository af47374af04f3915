"""Approvals bound to the exact registry version: on both backends (local folders; Azure ML through the real SDK
against the HTTP fake) and the real SQLite store, a version archived, changed or gone between request and approval,
or between approval and the deployment's start, voids the promotion and nothing deploys; changed tags are shown,
and void only under production.void_on_tag_change."""

from __future__ import annotations

import pytest

from promotion import service
from promotion.domain import EventType, ModelRef, ModelVersion, State
from promotion.fingerprint import fingerprint
from promotion.policy import ProductionRules
from tests.contract.test_drift import ALICE, CAROL, SOURCE, uri
from tests.contract.test_model_ports import AzureWorld, LocalWorld, world  # noqa: F401  (a fixture)
from tests.unit.fakes import FakeClock

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:marshmallow.*")

REF = ModelRef("taxi-fare", "4")
MODEL = ModelVersion(REF, "mlflow_model", {"stage": "candidate", "accuracy": "0.91"}, {"auc": "0.9"}, "taxi fares")
DAVE = CAROL.__class__("dave@contoso.com", "44444444-0000-0000-0000-000000000000")
RULES = ProductionRules(approvers=(CAROL.name, DAVE.name), required_approvals=2)


class Flow:
    def __init__(self, backend_world, store, rules: ProductionRules):
        self.world = backend_world
        self.store = store
        self.clock = FakeClock()
        self.rules = rules
        self.registry = backend_world.backend.registry

    def _workflow(self):
        return {"rules": self.rules, "store": self.store, "source": SOURCE, "clock": self.clock}

    def request(self):
        promotion, _ = service.request_promotion(
            REF, reason="better", caller=ALICE, registry=self.registry, **self._workflow()
        )
        return promotion

    def approve(self, promotion, who=CAROL):
        return service.approve(promotion.id, caller=who, comment="fine", registry=self.registry, **self._workflow())

    def deploy(self, promotion):
        return service.deploy(
            promotion.id,
            registry=self.registry,
            deployer=self.world.backend.production,
            registry_model_uri=uri,
            **self._workflow(),
        )

    def retag(self, tags: dict[str, str]) -> None:
        """Someone with write access changes the registry version's tags (outside the app)."""
        if isinstance(self.world, AzureWorld):
            self.world.fake.set_registry_model_tags(REF.name, REF.version, tags)
        else:
            self.registry.tag(REF, tags, None)

    def events(self, type: EventType):
        return [event for event in self.store.events() if event.type is type]

    def nothing_deployed(self) -> bool:
        return self.world.backend.production.online_endpoints() == []


@pytest.fixture
def make_flow(world, tmp_path):  # noqa: F811  (the imported fixture)
    from promotion.adapters.sqlite import SqlitePromotionStore

    def make(rules: ProductionRules = RULES) -> Flow:
        world.seed_registry(MODEL)
        return Flow(world, SqlitePromotionStore(tmp_path / "p.sqlite3"), rules)

    return make


@pytest.fixture
def flow(make_flow):
    return make_flow()


def change_content(flow: Flow) -> None:
    """The registry serves other content under the same name and version (a misconfigured registry)."""
    if isinstance(flow.world, AzureWorld):
        flow.world.fake.change_registry_content(REF.name, REF.version, properties={"auc": "0.5"})
    else:
        import json
        from pathlib import Path

        record = Path(flow.registry.root) / "models" / REF.name / REF.version / "model.json"
        document = json.loads(record.read_text())
        document["properties"] = {"auc": "0.5"}
        record.write_text(json.dumps(document))


def test_the_request_records_the_fingerprint_and_the_tags_and_the_events_carry_them(flow):
    promotion = flow.request()
    held = flow.registry.get(REF)
    assert promotion.artifact["fingerprint"] == fingerprint(held) and promotion.artifact["tags"] == dict(held.tags)
    assert promotion.to_json()["artifact"]["fingerprint"] == fingerprint(held)
    [requested] = flow.events(EventType.APPROVAL_REQUESTED)
    assert requested.data["artifact"] == {"fingerprint": fingerprint(held), "tags": dict(held.tags), "tags_omitted": 0}
    flow.approve(promotion)
    approved = flow.approve(promotion, DAVE)
    assert approved.state is State.APPROVED
    [event] = flow.events(EventType.APPROVED)
    assert event.data["artifact"]["fingerprint"] == fingerprint(held)


@pytest.mark.parametrize("change", ["archived", "content", "gone"])
def test_a_version_changed_between_request_and_approval_voids_the_promotion_and_nothing_deploys(flow, change):
    promotion = flow.request()
    flow.approve(promotion)  # the first of two approvals
    if change == "archived":
        flow.world.archive(REF)
    elif change == "content":
        change_content(flow)
    elif isinstance(flow.world, AzureWorld):
        del flow.world.fake.registry_models[(REF.name, REF.version)]
    else:
        import shutil
        from pathlib import Path

        shutil.rmtree(Path(flow.registry.root) / "models" / REF.name / REF.version)
    with pytest.raises(service.Voided, match="is voided and nothing will deploy") as refused:
        flow.approve(promotion, DAVE)
    void = flow.store.get(promotion.id)
    assert void.state is State.VOIDED and void.error in str(refused.value)
    entry = void.history[-1]
    assert entry.action == "voided" and entry.actor == DAVE.name
    assert entry.detail["fingerprint_requested"] == promotion.artifact["fingerprint"]
    if change == "content":
        assert entry.detail["fingerprint_now"] != entry.detail["fingerprint_requested"]
        assert entry.detail["changed_parts"] == ["properties"]
    [voided] = flow.events(EventType.VOIDED)
    assert voided.data["fingerprint_requested"] == promotion.artifact["fingerprint"] and voided.data["reason"]
    assert flow.deploy(void).state is State.VOIDED and flow.nothing_deployed()
    assert flow.events(EventType.APPROVED) == []


def test_a_version_changed_between_approval_and_the_deployment_start_is_voided_not_deployed(make_flow):
    flow = make_flow(ProductionRules(approvers=(CAROL.name,)))
    promotion = flow.request()
    assert flow.approve(promotion).state is State.APPROVED
    flow.world.archive(REF)
    void = flow.deploy(promotion)
    assert void.state is State.VOIDED and "archived" in void.error
    assert void.history[-1].actor == "deploy_promotion" and flow.nothing_deployed()
    assert [e.type for e in flow.store.events()][-1] is EventType.VOIDED
    assert flow.events(EventType.DEPLOYMENT_STARTED) == []


def test_changed_tags_alone_keep_the_approval_and_show_the_difference(flow):
    promotion = flow.request()
    flow.approve(promotion)
    flow.retag({"accuracy": "0.80", "reviewed": "yes"})
    approved = flow.approve(promotion, DAVE)
    assert approved.state is State.APPROVED
    seen = approved.approvals[-1].detail["tags_changed"]
    assert seen == {"accuracy": {"requested": "0.91", "now": "0.80"}, "reviewed": {"requested": None, "now": "yes"}}
    assert approved.to_json()["history"][-2]["detail"]["tags_changed"] == seen  # the approval, then the move


def test_a_changed_metric_tag_under_void_on_tag_change_voids_the_promotion(make_flow):
    flow = make_flow(
        ProductionRules(approvers=(CAROL.name, DAVE.name), required_approvals=2, void_on_tag_change=("accuracy",))
    )
    promotion = flow.request()
    flow.approve(promotion)
    flow.retag({"accuracy": "0.80"})
    with pytest.raises(service.Voided, match="tag accuracy changed"):
        flow.approve(promotion, DAVE)
    void = flow.store.get(promotion.id)
    assert void.state is State.VOIDED
    assert void.history[-1].detail["tags_changed"] == {"accuracy": {"requested": "0.91", "now": "0.80"}}


def test_a_voided_promotion_can_be_requested_again_and_its_approvals_start_over(flow):
    promotion = flow.request()
    flow.approve(promotion)
    flow.retag({"accuracy": "0.80"})  # noted, not voiding
    flow.world.archive(REF)
    with pytest.raises(service.Voided):
        flow.approve(promotion, DAVE)
    with pytest.raises(service.Conflict, match="voided"):
        flow.approve(promotion, DAVE)  # a voided promotion takes no decision
    # Restored: the same version may be asked for again; a new promotion, with its own fingerprint and no approval.
    if isinstance(flow.world, LocalWorld):
        flow.registry.set_archived(REF, False)
    else:
        flow.world.fake.archive_registry_model(REF.name, REF.version, archived=False)
    again = flow.request()
    assert again.id != promotion.id and again.state is State.PENDING_APPROVAL and again.approvals == ()
    assert again.artifact["tags"]["accuracy"] == "0.80"


def test_an_archived_version_cannot_be_requested(flow):
    flow.world.archive(REF)
    with pytest.raises(service.NotDeployable, match="archived"):
        flow.request()
    assert flow.store.list() == []
