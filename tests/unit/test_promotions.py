"""Production sharing requests: model types, N-of-M approvals, rejection and expiry."""

from dataclasses import replace

import pytest

from promotion import service
from promotion.domain import EventType, ModelRef, ModelVersion, State
from promotion.fingerprint import fingerprint
from promotion.identity import Principal
from promotion.policy import Policy, ProductionRules
from tests.unit.fakes import FakeDeployer, FakeRegistry, Production, at_once

REF = ModelRef("churn", "3")
IN_REGISTRY = ModelVersion(REF, "mlflow_model", {"promotion.source_model": "churn:3", "stage": "candidate"})
ERIN_ID = "55555555-0000-0000-0000-000000000000"
RULES = ProductionRules(
    approvers=("carol@contoso.com", ERIN_ID),
    approver_roles=("Promotion.Approver",),
    required_approvals=2,
)
APPROVER = frozenset({"Promotion.Approver"})
ALICE = Principal("alice@contoso.com", "11111111-0000-0000-0000-000000000000")  # the requester
BOB = Principal("bob@contoso.com", "22222222-0000-0000-0000-000000000000")  # not an approver
CAROL = Principal("carol@contoso.com", "33333333-0000-0000-0000-000000000000")  # approver by name
DAVE = Principal("dave@contoso.com", "44444444-0000-0000-0000-000000000000", APPROVER)  # approver by role
ERIN = Principal("erin@contoso.com", ERIN_ID)  # approver by object id


@pytest.fixture
def registry():
    return FakeRegistry(
        IN_REGISTRY,
        ModelVersion(ModelRef("triton", "1"), "triton_model"),
        ModelVersion(ModelRef("custom", "1"), "custom_model"),
    )


@pytest.fixture
def prod(store, registry, clock):
    return Production(store=store, registry=registry, deployer=FakeDeployer(), rules=RULES, clock=clock)


# --- requests --------------------------------------------------------------------------------------


def test_a_request_opens_one_promotion_per_model_version_and_says_so(prod, store):
    first = prod.request(REF, ALICE, reason="better recall")
    promotion, created = service.request_promotion(
        REF,
        reason="again",
        caller=BOB,
        registry=prod.registry,
        store=store,
        rules=RULES,
        source="test-app",
        clock=prod.clock,
    )
    assert not created and promotion.id == first.id and len(store.list()) == 1
    assert first.state is State.PENDING_APPROVAL and first.requested_by == ALICE.name
    assert first.history[0].action == "requested" and first.history[0].detail["principal_id"] == ALICE.id

    [requested] = prod.events()
    assert requested.type is EventType.APPROVAL_REQUESTED and requested.source == "test-app"
    assert requested.subject == "models/churn/versions/3"
    assert requested.data == {
        "model": {"name": "churn", "version": "3"},
        "promotion_id": first.id,
        "state": "pending_approval",
        "actor": ALICE.name,
        "comment": "better recall",
        "at": requested.data["at"],
        "reason": "better recall",
        "requested_by": ALICE.name,
        "required_approvals": 2,
        "artifact": {
            "fingerprint": fingerprint(IN_REGISTRY),
            "tags": {"promotion.source_model": "churn:3", "stage": "candidate"},
            "tags_omitted": 0,
        },
    }
    assert first.artifact["fingerprint"] == fingerprint(IN_REGISTRY)
    assert requested.data["at"].startswith("2026-11-26T12:00:00")


def test_a_request_for_a_model_not_in_the_registry_is_refused(prod, store):
    with pytest.raises(service.ModelNotInRegistry, match="churn:4 is not in the registry"):
        prod.request(ModelRef("churn", "4"), ALICE)
    assert store.list() == [] and store.events() == []


def test_a_model_type_that_cannot_deploy_without_code_is_refused_and_says_why(prod, store):
    with pytest.raises(service.NotDeployable) as refused:
        prod.request(ModelRef("custom", "1"), ALICE)
    message = str(refused.value)
    assert "custom_model" in message and "mlflow_model and triton_model" in message
    assert "without an environment and a scoring script" in message
    assert store.list() == [] and store.events() == []


@pytest.mark.parametrize("ref", [REF, ModelRef("triton", "1")], ids=["mlflow_model", "triton_model"])
def test_models_that_deploy_without_code_are_accepted(prod, ref):
    assert prod.request(ref, ALICE).state is State.PENDING_APPROVAL


# --- N-of-M approvals ------------------------------------------------------------------------------


def test_the_first_of_two_approvals_keeps_the_request_pending_and_is_recorded(prod, store):
    promotion = prod.request(REF, ALICE)
    after = prod.approve(promotion.id, CAROL, comment="looks good")
    assert after.state is State.PENDING_APPROVAL and after.approved_by is None
    stored = store.get(promotion.id)
    assert stored.state is State.PENDING_APPROVAL
    [approval] = stored.approvals
    assert approval.actor == CAROL.name and approval.action == "approval"
    assert approval.detail == {"comment": "looks good", "principal_id": CAROL.id}
    assert stored.to_json()["approvals"] == [CAROL.name]
    assert prod.event_types(promotion.id) == ["ApprovalRequested"]  # nothing is approved yet


@pytest.mark.parametrize(
    "again",
    [
        CAROL,
        Principal("Carol@Contoso.com", "66666666-0000-0000-0000-000000000000", APPROVER),  # same name, another id
        Principal("c.smith@contoso.com", CAROL.id, APPROVER),  # same object id, another name
        Principal("carol@contoso.com\u200b"),  # an invisible character does not make another person
    ],
    ids=["same", "same-name-other-id", "same-id-other-name", "invisible-char"],
)
def test_the_same_approver_cannot_approve_twice(prod, store, again):
    promotion = prod.request(REF, ALICE)
    prod.approve(promotion.id, CAROL)
    with pytest.raises(service.Conflict, match="approved promotion .* already"):
        prod.approve(promotion.id, again)
    stored = store.get(promotion.id)
    assert stored.state is State.PENDING_APPROVAL and len(stored.approvals) == 1


@pytest.mark.parametrize(
    "requester_again",
    [
        Principal(ALICE.name, "77777777-0000-0000-0000-000000000000", APPROVER),  # by name
        Principal("a.jones@contoso.com", ALICE.id, APPROVER),  # by object id
        Principal("ALICE@contoso.com", None, APPROVER),  # by name, whatever the case
        Principal("\u200balice@contoso.com ", None, APPROVER),  # by name, with invisible characters around it
    ],
    ids=["name", "object-id", "name-case", "name-invisible-chars"],
)
def test_the_requester_may_not_approve_by_name_or_object_id(prod, store, requester_again):
    promotion = prod.request(REF, ALICE)
    with pytest.raises(service.NotAllowed, match="requested this promotion"):
        prod.approve(promotion.id, requester_again)
    assert store.get(promotion.id).approvals == ()


def test_a_non_approver_is_refused_with_the_reason(prod, store):
    promotion = prod.request(REF, ALICE)
    with pytest.raises(service.NotAllowed, match="bob@contoso.com is not an approver"):
        prod.approve(promotion.id, BOB)
    with pytest.raises(service.NotAllowed):
        prod.reject(promotion.id, BOB)
    assert store.get(promotion.id).state is State.PENDING_APPROVAL


def test_the_second_distinct_approver_approves_it_with_one_approved_event(prod, store):
    promotion = prod.request(REF, ALICE)
    prod.approve(promotion.id, CAROL, comment="fine")
    approved = prod.approve(promotion.id, ERIN, comment="ship it")
    assert approved.state is State.APPROVED and approved.approved_by == f"{CAROL.name}, {ERIN.name}"
    stored = store.get(promotion.id)
    assert [entry.action for entry in stored.history] == ["requested", "approval", "approval", "approved"]
    assert stored.history[-1].detail == {"approvals": 2}
    assert prod.event_types(promotion.id) == ["ApprovalRequested", "Approved"]
    approved_event = prod.events(promotion.id)[-1]
    assert approved_event.data["approvals"] == [CAROL.name, ERIN.name]
    assert approved_event.data["state"] == "approved" and approved_event.data["actor"] == ERIN.name
    assert approved_event.data["comment"] == "ship it"
    # and no further approval is taken
    with pytest.raises(service.Conflict, match="only a pending request"):
        prod.approve(promotion.id, DAVE)


def test_one_approval_is_enough_by_default(store, registry, clock):
    rules = ProductionRules(approvers=("carol@contoso.com",))
    prod = Production(store=store, registry=registry, deployer=FakeDeployer(), rules=rules, clock=clock)
    promotion = prod.request(REF, ALICE)
    assert prod.approve(promotion.id, CAROL).state is State.APPROVED


def test_the_distinct_approver_rule_can_be_switched_off(prod):
    prod.rules = replace(RULES, required_approvals=1, require_distinct_approver=False)
    promotion = prod.request(REF, CAROL)
    assert prod.approve(promotion.id, CAROL).state is State.APPROVED


def test_a_rejection_by_any_approver_ends_it(prod, store):
    promotion = prod.request(REF, ALICE)
    prod.approve(promotion.id, CAROL)
    rejected = prod.reject(promotion.id, DAVE, comment="the drift check failed")
    assert rejected.state is State.REJECTED and rejected.rejected_by == DAVE.name
    assert prod.event_types(promotion.id) == ["ApprovalRequested", "Rejected"]
    event = prod.events(promotion.id)[-1]
    assert event.data["comment"] == "the drift check failed" and event.data["actor"] == DAVE.name
    assert event.data["state"] == "rejected"
    with pytest.raises(service.Conflict, match="rejected"):
        prod.approve(promotion.id, ERIN)
    assert store.get(promotion.id).state is State.REJECTED
    # closed: a new request opens a new promotion
    assert prod.request(REF, ALICE).id != promotion.id


def test_racing_approvers_make_exactly_one_transition_to_approved(prod, store):
    promotion = prod.request(REF, ALICE)
    approvers = [
        Principal(f"approver{n}@contoso.com", f"9999999{n}-0000-0000-0000-000000000000", APPROVER) for n in range(6)
    ]
    answers, errors = at_once(lambda approver: prod.approve(promotion.id, approver).state, approvers)
    stored = store.get(promotion.id)
    assert stored.state is State.APPROVED and len(stored.approvals) == 2
    assert sorted(answers) == sorted([State.PENDING_APPROVAL, State.APPROVED])
    assert len(errors) == len(approvers) - 2 and all(isinstance(e, service.Conflict) for e in errors)
    assert prod.event_types(promotion.id).count("Approved") == 1
    assert [entry.action for entry in stored.history].count("approved") == 1


def test_the_same_approver_racing_with_itself_counts_once(prod, store):
    promotion = prod.request(REF, ALICE)
    answers, refused = at_once(lambda caller: prod.approve(promotion.id, caller).state, [CAROL] * 4)
    stored = store.get(promotion.id)
    assert stored.state is State.PENDING_APPROVAL and [e.actor for e in stored.approvals] == [CAROL.name]
    assert answers == [State.PENDING_APPROVAL] and len(refused) == 3
    assert prod.event_types(promotion.id) == ["ApprovalRequested"]


# --- expiry ----------------------------------------------------------------------------------------


def test_a_request_past_its_ttl_cannot_be_approved_and_expires(prod, store, clock):
    prod.rules = replace(RULES, approval_ttl_hours=0.01)  # 36 seconds
    promotion = prod.request(REF, ALICE)
    prod.approve(promotion.id, CAROL)
    clock.advance(seconds=37)
    with pytest.raises(service.Conflict, match="expired.*approval_ttl_hours"):
        prod.approve(promotion.id, ERIN)
    stored = store.get(promotion.id)
    assert stored.state is State.EXPIRED and len(stored.approvals) == 1
    assert prod.event_types(promotion.id) == ["ApprovalRequested", "Expired"]
    expired = prod.events(promotion.id)[-1]
    assert expired.data["state"] == "expired" and expired.data["promotion_id"] == promotion.id
    with pytest.raises(service.Conflict):
        prod.reject(promotion.id, ERIN)


def test_a_request_within_its_ttl_can_be_approved(prod, clock):
    prod.rules = replace(RULES, approval_ttl_hours=0.01)
    promotion = prod.request(REF, ALICE)
    clock.advance(seconds=30)
    prod.approve(promotion.id, CAROL)
    assert prod.approve(promotion.id, ERIN).state is State.APPROVED


def test_expire_stale_requests_expires_only_old_ones(prod, store, registry, clock):
    prod.rules = replace(RULES, approval_ttl_hours=1)
    old = prod.request(REF, ALICE)
    clock.advance(minutes=45)
    young = prod.request(ModelRef("triton", "1"), ALICE)
    clock.advance(minutes=16)
    expired = service.expire_stale_requests(rules=prod.rules, store=store, source="test-app", clock=clock)
    assert [p.id for p in expired] == [old.id]
    assert store.get(old.id).state is State.EXPIRED and store.get(young.id).state is State.PENDING_APPROVAL
    assert prod.event_types(old.id) == ["ApprovalRequested", "Expired"]
    # running it again changes nothing
    assert service.expire_stale_requests(rules=prod.rules, store=store, source="test-app", clock=clock) == []
    assert prod.event_types(old.id) == ["ApprovalRequested", "Expired"]


def test_after_expiry_a_new_request_for_the_version_is_allowed(prod, store, clock):
    prod.rules = replace(RULES, approval_ttl_hours=1)
    old = prod.request(REF, ALICE)
    clock.advance(hours=2)
    service.expire_stale_requests(rules=prod.rules, store=store, source="test-app", clock=clock)
    fresh = prod.request(REF, ALICE)
    assert fresh.id != old.id and fresh.state is State.PENDING_APPROVAL


def test_a_request_replaces_an_overdue_one_the_timer_has_not_expired_yet(prod, store, clock):
    prod.rules = replace(RULES, approval_ttl_hours=1)
    old = prod.request(REF, ALICE)
    clock.advance(hours=2)
    fresh, created = service.request_promotion(
        REF,
        reason="again",
        caller=BOB,
        registry=prod.registry,
        store=store,
        rules=prod.rules,
        source="test-app",
        clock=clock,
    )
    assert created and fresh.id != old.id
    assert store.get(old.id).state is State.EXPIRED
    assert prod.event_types() == ["ApprovalRequested", "Expired", "ApprovalRequested"]


def test_policy_durations_accept_fractions():
    production = Policy.from_document(
        {"production": {"approval_ttl_hours": 0.5, "deploy_timeout_minutes": 0.25, "job_grace_minutes": 1.5}}
    ).production
    assert production.approval_ttl.total_seconds() == 1800
    assert production.deploy_timeout.total_seconds() == 15
    assert production.job_grace.total_seconds() == 90
