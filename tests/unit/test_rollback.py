"""Rollback: an approver gives the endpoint's traffic back to what was live before a promotion took it."""

from dataclasses import replace

import pytest

from promotion import service
from promotion.adapters.sqlite import SqlitePromotionStore
from promotion.domain import LINEAGE_SOURCE_MODEL, EventType, ModelRef, ModelVersion, State
from promotion.identity import Principal
from promotion.policy import ProductionRules
from promotion.ports import DeploymentFailed
from tests.unit.fakes import FakeClock, FakeDeployer, FakeRegistry, FakeWorkspace, Production, at_once

APPROVER = frozenset({"Promotion.Approver"})
ALICE = Principal("alice@contoso.com", "11111111-0000-0000-0000-000000000000")  # requester, not an approver
BOB = Principal("bob@contoso.com", "22222222-0000-0000-0000-000000000000")  # not an approver
CAROL = Principal("carol@contoso.com", "33333333-0000-0000-0000-000000000000", APPROVER)
DAVE = Principal("dave@contoso.com", "44444444-0000-0000-0000-000000000000", APPROVER)
RULES = ProductionRules(approver_roles=("Promotion.Approver",))
V1, V2, V3 = (ModelRef("churn", str(n)) for n in (1, 2, 3))


@pytest.fixture
def deployer():
    return FakeDeployer()


@pytest.fixture
def prod(tmp_path, deployer):
    registry = FakeRegistry(
        *(ModelVersion(ref, "mlflow_model", {LINEAGE_SOURCE_MODEL: str(ref)}) for ref in (V1, V2, V3))
    )
    store = SqlitePromotionStore(tmp_path / "p.sqlite3")
    return Production(store=store, registry=registry, deployer=deployer, rules=RULES, clock=FakeClock())


@pytest.fixture
def v1_then_v2(prod, deployer):
    """v1 went live, then v2 took all its traffic."""
    v1 = prod.deployed(V1, ALICE, CAROL)
    v2 = prod.deployed(V2, ALICE, CAROL)
    assert v1.state is v2.state is State.DEPLOYED and deployer.live("churn-prod") == {"churn-v2": 100}
    assert v2.deployment["previous_traffic"] == {"churn-v1": 100}
    return v1, v2


def test_an_approver_rolls_back_to_the_deployment_live_before(prod, deployer, v1_then_v2):
    v1, v2 = v1_then_v2
    after = prod.rollback(v2.id, DAVE, comment="p99 latency doubled")
    assert after.state is State.ROLLED_BACK
    assert deployer.live("churn-prod") == {"churn-v1": 100}
    stored = prod.store.get(v2.id)
    assert stored.state is State.ROLLED_BACK
    rolling, rolled = stored.history[-2:]
    assert (rolling.action, rolling.actor) == ("rolling_back", DAVE.name)
    assert rolling.detail["comment"] == "p99 latency doubled" and rolling.detail["principal_id"] == DAVE.id
    assert rolling.detail["traffic"] == {"churn-v1": 100}
    assert rolled.action == "rolled_back" and rolled.detail == {"traffic": {"churn-v1": 100}}
    assert prod.store.get(v1.id).state is State.DEPLOYED  # the older promotion is untouched

    assert prod.event_types(v2.id)[-1] == "RolledBack"
    event = prod.events(v2.id)[-1]
    assert event.data["endpoint"] == "churn-prod" and event.data["traffic"] == {"churn-v1": 100}
    assert event.data["state"] == "rolled_back" and event.data["comment"] == "p99 latency doubled"
    assert event.data["actor"] == DAVE.name  # who rolled back, not the timer
    assert prod.event_types(v2.id).count("RolledBack") == 1


def test_the_requester_may_roll_back_when_an_approver(prod, deployer):
    prod.deployed(V1, CAROL, DAVE)
    v2 = prod.deployed(V2, CAROL, DAVE)
    assert prod.rollback(v2.id, CAROL).state is State.ROLLED_BACK
    assert deployer.live("churn-prod") == {"churn-v1": 100}


def test_a_rollback_from_a_partial_share_gives_everything_back(prod, deployer):
    prod.rules = replace(RULES, traffic_percent=25)
    prod.deployed(V1, ALICE, CAROL)
    v2 = prod.deployed(V2, ALICE, CAROL)
    assert deployer.live("churn-prod") == {"churn-v1": 75, "churn-v2": 25}
    prod.rollback(v2.id, DAVE)
    assert deployer.live("churn-prod") == {"churn-v1": 100}


def test_a_rollback_azure_takes_time_for_is_finished_by_the_timer(prod, deployer, v1_then_v2):
    _, v2 = v1_then_v2
    deployer.traffic_polls = 1
    after = prod.rollback(v2.id, DAVE)
    assert after.state is State.ROLLING_BACK and prod.store.get(v2.id).state is State.ROLLING_BACK
    assert "RolledBack" not in prod.event_types(v2.id)
    report = prod.advance()
    assert report.advanced == {v2.id: "rolled_back"}
    assert prod.store.get(v2.id).state is State.ROLLED_BACK
    assert deployer.live("churn-prod") == {"churn-v1": 100}
    assert prod.event_types(v2.id).count("RolledBack") == 1
    assert prod.advance().advanced == {}


def test_a_non_approver_may_not_roll_back(prod, deployer, v1_then_v2):
    _, v2 = v1_then_v2
    for caller in (BOB, ALICE):
        with pytest.raises(service.NotAllowed, match="not an approver"):
            prod.rollback(v2.id, caller)
    assert prod.store.get(v2.id).state is State.DEPLOYED
    assert deployer.live("churn-prod") == {"churn-v2": 100}


def test_a_promotion_that_is_not_live_cannot_roll_back(prod, deployer, v1_then_v2):
    v1, _ = v1_then_v2
    with pytest.raises(service.Conflict, match="not the live one"):
        prod.rollback(v1.id, DAVE)  # deployed, but v2 took all its traffic
    assert prod.store.get(v1.id).state is State.DEPLOYED
    assert deployer.live("churn-prod") == {"churn-v2": 100}


def test_a_late_older_version_at_zero_traffic_cannot_roll_back(prod, deployer):
    deployer.polls_for["churn-v2"] = 3
    v2 = prod.approved(V2, ALICE, CAROL)
    prod.deploy(v2.id)
    prod.deployed(V3, ALICE, CAROL)
    for _ in range(5):
        prod.advance()
    assert prod.store.get(v2.id).state is State.DEPLOYED
    with pytest.raises(service.Conflict, match="not the live one"):
        prod.rollback(v2.id, DAVE)
    assert deployer.live("churn-prod") == {"churn-v3": 100}


@pytest.mark.parametrize("how_far", ["pending", "approved", "deploying", "rolled_back"])
def test_only_a_deployed_promotion_rolls_back(prod, deployer, how_far):
    prod.deployed(V1, ALICE, CAROL)
    deployer.polls = 5 if how_far == "deploying" else 0
    if how_far == "pending":
        promotion = prod.request(V2, ALICE)
    elif how_far == "approved":
        promotion = prod.approved(V2, ALICE, CAROL)
    else:
        promotion = prod.deploy(prod.approved(V2, ALICE, CAROL).id)
        if how_far == "rolled_back":
            prod.rollback(promotion.id, DAVE)
    state = prod.store.get(promotion.id).state
    with pytest.raises(service.Conflict, match="only a deployed promotion"):
        prod.rollback(promotion.id, DAVE)
    assert prod.store.get(promotion.id).state is state


def test_nothing_to_roll_back_to_is_a_conflict(prod, deployer):
    v1 = prod.deployed(V1, ALICE, CAROL)
    with pytest.raises(service.Conflict, match="nothing to roll back to"):
        prod.rollback(v1.id, DAVE)
    assert prod.store.get(v1.id).state is State.DEPLOYED
    assert deployer.live("churn-prod") == {"churn-v1": 100}
    assert "RolledBack" not in prod.event_types(v1.id)


def test_a_previous_deployment_deleted_since_is_nothing_to_roll_back_to(prod, deployer, v1_then_v2):
    _, v2 = v1_then_v2
    del deployer.endpoints["churn-prod"].deployments["churn-v1"]
    with pytest.raises(service.Conflict, match="nothing to roll back to"):
        prod.rollback(v2.id, DAVE)
    assert prod.store.get(v2.id).state is State.DEPLOYED


def test_a_rollback_azure_refuses_leaves_it_deployed_with_a_note(prod, deployer, v1_then_v2):
    _, v2 = v1_then_v2
    deployer.refuse_traffic = DeploymentFailed("(BadRequest) the endpoint is locked")
    with pytest.raises(service.Conflict, match="the endpoint is locked"):
        prod.rollback(v2.id, DAVE)
    stored = prod.store.get(v2.id)
    assert stored.state is State.DEPLOYED
    assert stored.history[-1].action == "deployed"
    assert stored.history[-1].detail == {"rollback_failed": "(BadRequest) the endpoint is locked"}
    assert deployer.live("churn-prod") == {"churn-v2": 100}
    assert "RolledBack" not in prod.event_types(v2.id)
    # it can be tried again once Azure lets it
    deployer.refuse_traffic = None
    assert prod.rollback(v2.id, DAVE).state is State.ROLLED_BACK


def test_the_status_view_shows_a_rolled_back_promotion(prod, deployer, v1_then_v2):
    _, v2 = v1_then_v2
    prod.rollback(v2.id, DAVE)
    status = service.model_status(
        V2, staging=FakeWorkspace(), registry=prod.registry, deployer=deployer, store=prod.store
    )
    assert [p["state"] for p in status["promotions"]] == ["rolled_back"]
    assert status["production"] == [
        {"endpoint": "churn-prod", "deployment": "churn-v2", "traffic": 0, "state": "Succeeded"}
    ]
    assert [event.type for event in prod.events(v2.id)][-1] is EventType.ROLLED_BACK


def test_a_rollback_azure_refuses_after_it_started_goes_back_to_deployed(prod, deployer, v1_then_v2):
    _, v2 = v1_then_v2
    deployer.traffic_polls = 5
    assert prod.rollback(v2.id, DAVE).state is State.ROLLING_BACK
    deployer.refuse_traffic = DeploymentFailed("(BadRequest) the traffic update was refused")
    report = prod.advance()
    assert report.advanced == {v2.id: "deployed"}
    stored = prod.store.get(v2.id)
    assert stored.state is State.DEPLOYED
    assert stored.history[-1].detail == {"rollback_failed": "(BadRequest) the traffic update was refused"}
    assert "RolledBack" not in prod.event_types(v2.id)


def test_two_approvers_rolling_back_at_once_roll_back_once(prod, deployer, v1_then_v2):
    _, v2 = v1_then_v2
    callers = [DAVE, CAROL, Principal("erin@contoso.com", "55555555-0000-0000-0000-000000000000", APPROVER)]
    answers, refused = at_once(lambda caller: prod.rollback(v2.id, caller).state, callers)
    assert answers == [State.ROLLED_BACK] and len(refused) == 2
    stored = prod.store.get(v2.id)
    assert stored.state is State.ROLLED_BACK and [e.action for e in stored.history].count("rolling_back") == 1
    assert prod.event_types(v2.id).count("RolledBack") == 1
    assert deployer.live("churn-prod") == {"churn-v1": 100}


# --- a rollback and a deployment at the same time ------------------------------------------------------------


def test_a_deployment_finishing_after_a_rollback_does_not_undo_it(prod, deployer, v1_then_v2):
    _, v2 = v1_then_v2
    deployer.polls_for["churn-v3"] = 2
    v3 = prod.deploy(prod.approved(V3, ALICE, CAROL).id)
    assert v3.state is State.DEPLOYING
    assert prod.rollback(v2.id, DAVE).state is State.ROLLED_BACK
    for _ in range(4):
        prod.advance()
    assert deployer.live("churn-prod") == {"churn-v1": 100}  # the rollback wins
    after = prod.store.get(v3.id)
    assert after.state is State.DEPLOYED and after.history[-1].detail["traffic"] == {}
    note = after.history[-1].detail["note"]
    assert f"promotion {v2.id} (churn:2) was rolled back on churn-prod" in note and "the rollback wins" in note
    assert prod.events(v3.id)[-1].data["comment"] == note
    assert prod.store.get(v2.id).state is State.ROLLED_BACK
    assert prod.advance().advanced == {}  # nothing is re-applied at the next runs


def test_a_rollback_whose_deployment_lost_the_traffic_before_it_moved_is_refused(prod, deployer, v1_then_v2):
    _, v2 = v1_then_v2
    deployer.refuse_traffic = ConnectionError("the workspace cannot be reached")
    with pytest.raises(ConnectionError):
        prod.rollback(v2.id, DAVE)
    assert prod.store.get(v2.id).state is State.ROLLING_BACK  # asked for, not applied yet
    deployer.refuse_traffic = None
    v3 = prod.deployed(V3, ALICE, CAROL)  # approved after the rollback was asked for: a new decision
    assert v3.state is State.DEPLOYED and deployer.live("churn-prod") == {"churn-v3": 100}

    assert prod.advance().advanced == {v2.id: "deployed"}
    assert deployer.live("churn-prod") == {"churn-v3": 100}  # the rollback did not take v3's traffic
    stored = prod.store.get(v2.id)
    assert stored.state is State.DEPLOYED
    assert "churn-v2 is no longer live on churn-prod" in stored.history[-1].detail["rollback_failed"]
    assert "RolledBack" not in prod.event_types(v2.id)
    assert prod.advance().advanced == {}  # and it is not tried again every minute
