from datetime import datetime, timedelta, timezone
from itertools import count

import pytest

from promotion import service
from promotion.domain import InvalidTransition, ModelRef, ModelVersion, State
from promotion.identity import Principal
from promotion.policy import ProductionRules
from tests.unit.fakes import FakeDeployer, FakeRegistry, InMemoryPromotionStore

REF = ModelRef("churn", "3")
IN_REGISTRY = ModelVersion(REF, "mlflow_model", {"promotion.source_model": "churn:3", "stage": "candidate"})
RULES = ProductionRules(
    approvers=("carol@contoso.com", "44444444-0000-0000-0000-000000000000"),
    approver_roles=("Promotion.Approver",),
    traffic_percent=25,
)
ALICE = Principal("alice@contoso.com", "11111111-0000-0000-0000-000000000000")
CAROL = Principal("carol@contoso.com", "33333333-0000-0000-0000-000000000000")
BOB = Principal("bob@contoso.com", "22222222-0000-0000-0000-000000000000")


def uri(ref):
    return f"azureml://registries/shared/models/{ref.name}/versions/{ref.version}"


@pytest.fixture
def clock():
    ticks = count()
    start = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
    return lambda: start + timedelta(seconds=next(ticks))


@pytest.fixture
def store():
    return InMemoryPromotionStore()


@pytest.fixture
def registry():
    return FakeRegistry(IN_REGISTRY)


def request(store, registry, clock, caller=ALICE):
    return service.request_promotion(REF, reason="better", caller=caller, registry=registry, store=store, clock=clock)


def approve(store, promotion, clock, caller=CAROL, rules=RULES):
    return service.approve(promotion.id, caller=caller, comment="ok", rules=rules, store=store, clock=clock)


def deploy(store, registry, deployer, promotion_id, clock):
    return service.deploy(
        promotion_id,
        store=store,
        registry=registry,
        deployer=deployer,
        rules=RULES,
        registry_model_uri=uri,
        clock=clock,
    )


def test_request_creates_one_open_promotion_per_model_version(store, registry, clock):
    first, created = request(store, registry, clock)
    again, created_again = request(store, registry, clock, caller=BOB)
    assert created and not created_again and again.id == first.id
    assert first.state is State.PENDING_APPROVAL and first.requested_by == ALICE.name
    assert first.history[0].action == "requested" and first.history[0].detail["principal_id"] == ALICE.id


def test_request_for_a_model_not_in_the_registry_is_refused(store, clock):
    with pytest.raises(service.ModelNotInRegistry, match="churn:3 is not in the registry"):
        request(store, FakeRegistry(), clock)
    assert not store.promotions


def test_requester_may_not_approve_even_when_an_approver(store, registry, clock):
    promotion, _ = request(store, registry, clock, caller=CAROL)
    with pytest.raises(service.NotAllowed, match="requested this promotion"):
        approve(store, promotion, clock, caller=CAROL)
    assert store.get(promotion.id).state is State.PENDING_APPROVAL


def test_distinct_approver_can_be_switched_off(store, registry, clock):
    promotion, _ = request(store, registry, clock, caller=CAROL)
    rules = ProductionRules(approvers=("carol@contoso.com",), require_distinct_approver=False)
    assert approve(store, promotion, clock, caller=CAROL, rules=rules).state is State.APPROVED


def test_same_person_is_recognised_by_object_id_even_if_the_name_changes(store, registry, clock):
    promotion, _ = request(store, registry, clock, caller=Principal("carol@old.contoso.com", CAROL.id))
    with pytest.raises(service.NotAllowed, match="requested"):
        approve(store, promotion, clock, caller=CAROL)


def test_non_approvers_are_refused_with_the_reason(store, registry, clock):
    promotion, _ = request(store, registry, clock)
    with pytest.raises(service.NotAllowed, match="bob@contoso.com is not an approver"):
        approve(store, promotion, clock, caller=BOB)


@pytest.mark.parametrize(
    "approver",
    [
        Principal("Carol@Contoso.com"),  # by name, case-insensitively
        Principal("dave@contoso.com", "44444444-0000-0000-0000-000000000000"),  # by object id
        Principal("erin@contoso.com", roles=frozenset({"Promotion.Approver"})),  # by app role
    ],
)
def test_approvers_match_by_name_object_id_or_role(store, registry, clock, approver):
    promotion, _ = request(store, registry, clock)
    approved = approve(store, promotion, clock, caller=approver)
    assert approved.state is State.APPROVED and approved.approved_by == approver.name
    assert approved.history[-1].actor == approver.name and approved.history[-1].detail["comment"] == "ok"


def test_a_decided_promotion_cannot_be_decided_again(store, registry, clock):
    promotion, _ = request(store, registry, clock)
    rejected = service.reject(promotion.id, caller=CAROL, comment="no", rules=RULES, store=store, clock=clock)
    assert rejected.state is State.REJECTED and rejected.rejected_by == CAROL.name
    with pytest.raises(InvalidTransition, match="from rejected to approved"):
        approve(store, promotion, clock)
    # the rejected one is closed, so a new request opens a new promotion
    fresh, created = request(store, registry, clock)
    assert created and fresh.id != promotion.id


def test_a_decision_made_on_a_stale_read_is_a_conflict_and_changes_nothing(store, registry, clock):
    promotion, _ = request(store, registry, clock)
    read_before_the_approval = store.get(promotion.id)
    approve(store, promotion, clock)
    store.get = lambda promotion_id: read_before_the_approval  # the rejecting instance read before the approval
    with pytest.raises(service.ConcurrentChange, match="changed by someone else"):
        service.reject(promotion.id, caller=CAROL, comment="no", rules=RULES, store=store, clock=clock)
    assert store.promotions[promotion.id].state is State.APPROVED


def test_deploy_waits_for_long_running_steps_and_finishes_on_later_calls(store, registry, clock):
    deployer = FakeDeployer(polls_per_step=1)
    promotion, _ = request(store, registry, clock)
    approve(store, promotion, clock)
    states = [deploy(store, registry, deployer, promotion.id, clock).state for _ in range(3)]
    assert states == [State.DEPLOYING, State.DEPLOYING, State.DEPLOYED]
    done = store.get(promotion.id)
    assert done.deployment["endpoint"] == "churn-prod" and done.deployment["deployment"] == "churn-v3"
    assert done.deployment["model_uri"] == uri(REF)
    assert done.deployment["tags"]["promotion.approved_by"] == CAROL.name
    assert done.deployment["tags"]["promotion.source_model"] == "churn:3"
    assert [entry.action for entry in done.history] == ["requested", "approved", "deploying", "deployed"]
    assert deployer.endpoints["churn-prod"]["traffic"] == {"churn-v3": 100}


def test_repeated_jobs_never_create_a_second_deployment(store, registry, clock):
    deployer = FakeDeployer()
    promotion, _ = request(store, registry, clock)
    approve(store, promotion, clock)
    for _ in range(3):
        assert deploy(store, registry, deployer, promotion.id, clock).state is State.DEPLOYED
    assert deployer.created_deployments == ["churn-v3"]
    assert len(store.get(promotion.id).history) == 4


def test_the_new_deployment_shares_traffic_with_the_previous_live_one(store, registry, clock):
    deployer = FakeDeployer()
    deployer.endpoints["churn-prod"] = {"deployments": {"churn-v2": {"tags": {}}}, "traffic": {"churn-v2": 100}}
    promotion, _ = request(store, registry, clock)
    approve(store, promotion, clock)
    deploy(store, registry, deployer, promotion.id, clock)
    assert deployer.endpoints["churn-prod"]["traffic"] == {"churn-v2": 75, "churn-v3": 25}


def test_a_failed_deployment_is_recorded_with_its_error(store, registry, clock):
    deployer = FakeDeployer(fail_deployment_with="quota exceeded for Standard_F4s_v2")
    promotion, _ = request(store, registry, clock)
    approve(store, promotion, clock)
    failed = deploy(store, registry, deployer, promotion.id, clock)
    assert failed.state is State.FAILED and failed.error == "quota exceeded for Standard_F4s_v2"
    assert failed.history[-1].detail == {"error": "quota exceeded for Standard_F4s_v2"}


def test_a_model_removed_from_the_registry_fails_the_deployment(store, registry, clock):
    promotion, _ = request(store, registry, clock)
    approve(store, promotion, clock)
    registry.models.clear()
    failed = deploy(store, registry, FakeDeployer(), promotion.id, clock)
    assert failed.state is State.FAILED and "no longer in the registry" in failed.error


def test_an_abandoned_job_fails_the_promotion_but_not_a_finished_one(store, registry, clock):
    promotion, _ = request(store, registry, clock)
    approve(store, promotion, clock)
    failed = service.fail_abandoned_job(promotion.id, store=store, reason="poisoned", clock=clock)
    assert failed.state is State.FAILED and failed.error == "poisoned"
    assert service.fail_abandoned_job(promotion.id, store=store, reason="again", clock=clock).error == "poisoned"


def test_the_timer_advances_only_in_flight_deployments(store, registry, clock):
    deployer = FakeDeployer(polls_per_step=1)
    promotion, _ = request(store, registry, clock)
    approve(store, promotion, clock)
    deploy(store, registry, deployer, promotion.id, clock)
    ports = dict(registry=registry, deployer=deployer, rules=RULES, registry_model_uri=uri, clock=clock)
    assert [p.state for p in service.advance_in_flight(store=store, **ports)] == [State.DEPLOYING]
    assert [p.state for p in service.advance_in_flight(store=store, **ports)] == [State.DEPLOYED]
    assert service.advance_in_flight(store=store, **ports) == []


@pytest.mark.parametrize(
    "text, expected",
    [
        ("churn-prod", "churn-prod"),
        ("Credit_Default.v2-prod", "credit-default-v2-prod"),
        ("7up-prod", "m-7up-prod"),
        ("a", "a-ep"),
        ("x" * 40 + "-prod", None),
    ],
)
def test_online_names_are_valid_for_azure(text, expected):
    name = service.online_name(text)
    assert 3 <= len(name) <= 32 and name[0].isalpha() and set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    if expected:
        assert name == expected
    else:
        assert name != service.online_name("x" * 41 + "-prod")
