"""Lifecycle events out of the transactional outbox: oldest first, at least once, same ids on retry, nothing lost."""

import threading
import uuid
from datetime import timedelta

import pytest

from promotion import service
from promotion.domain import LINEAGE_SOURCE_MODEL, EventType, ModelRef, ModelVersion, Promotion, State
from promotion.events import MODEL_REGISTERED
from promotion.identity import Principal
from promotion.policy import Policy, ProductionRules
from promotion.ports import StoreUnavailable
from promotion.service.lifecycle import BATCH_SIZE, promotion_event
from tests.unit.fakes import FakeDeployer, FakePublisher, FakeRegistry, FakeWorkspace, Production

ALICE = Principal("alice@contoso.com", "11111111-0000-0000-0000-000000000000")
CAROL = Principal("carol@contoso.com", "33333333-0000-0000-0000-000000000000")
RULES = ProductionRules(approvers=("carol@contoso.com",))
STAGING = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/staging"


def fill_outbox(store, clock, count, name="churn"):
    """One promotion whose history produced `count` events (written in one transaction, as a change would)."""
    at = clock()
    promotion = Promotion(str(uuid.uuid4()), ModelRef(name, "1"), State.PENDING_APPROVAL, "alice", at, at)
    events = []
    for n in range(count):
        promotion = promotion.note("requested", actor="alice", at=clock(), detail={"n": n})
        events.append(promotion_event(EventType.APPROVAL_REQUESTED, promotion, actor="alice", source="test-app"))
    store.add(promotion, events)
    return [event.id for event in events]


class FlakyStore:
    """The real store, with chosen methods failing (an outage of the store itself)."""

    def __init__(self, store, **failing):
        self._store = store
        self.failing = failing  # method name -> how many more calls fail

    def __getattr__(self, name):
        method = getattr(self._store, name)

        def call(*args, **kwargs):
            if self.failing.get(name, 0) > 0:
                self.failing[name] -= 1
                raise StoreUnavailable(f"{name}: the store cannot be reached")
            return method(*args, **kwargs)

        return call


# --- publish_pending -------------------------------------------------------------------------------


def test_events_go_out_oldest_first_in_batches_and_are_marked_published(store, clock):
    ids = fill_outbox(store, clock, 5)
    publisher = FakePublisher()
    report = service.publish_pending(store, publisher, batch_size=2, clock=clock)
    assert report.published == 5 and report.error is None
    assert [len(batch) for batch in publisher.batches] == [2, 2, 1]
    assert publisher.received_ids == ids
    assert store.events(unpublished_only=True) == []
    assert all(event.published_at is not None for event in store.events())
    # nothing is left, so a second run sends nothing
    assert service.publish_pending(store, publisher, batch_size=2, clock=clock).published == 0
    assert len(publisher.attempts) == 3


def test_publishing_stops_at_the_first_failure_and_marks_only_what_was_taken(store, clock):
    ids = fill_outbox(store, clock, 5)
    publisher = FakePublisher(accept=1)
    report = service.publish_pending(store, publisher, batch_size=2, clock=clock)
    assert report.published == 2 and "ConnectionError" in report.error
    assert publisher.attempts == [ids[:2], ids[2:4]]  # the third batch was not tried: nothing overtakes
    assert [event.id for event in store.events(unpublished_only=True)] == ids[2:]
    assert [event.published_at is not None for event in store.events()] == [True, True, False, False, False]


def test_a_retry_re_sends_the_same_ids_and_nothing_is_lost(store, clock):
    ids = fill_outbox(store, clock, 5)
    publisher = FakePublisher()
    publisher.down = True
    for _ in range(3):  # the topic is unreachable for a while
        assert service.publish_pending(store, publisher, batch_size=2, clock=clock).published == 0
    assert publisher.attempts == [ids[:2]] * 3
    assert len(store.events(unpublished_only=True)) == 5
    publisher.down = False
    assert service.publish_pending(store, publisher, batch_size=2, clock=clock).published == 5
    assert publisher.received_ids == ids  # the same ids, in order, none new
    assert {event.id for event in store.events()} == set(ids)


def test_delivery_is_at_least_once_when_marking_fails_after_the_topic_took_the_batch(store, clock):
    ids = fill_outbox(store, clock, 3)
    publisher = FakePublisher()
    flaky = FlakyStore(store, mark_published=1)
    with pytest.raises(StoreUnavailable):
        service.publish_pending(flaky, publisher, batch_size=2, clock=clock)
    assert len(store.events(unpublished_only=True)) == 3
    service.publish_pending(flaky, publisher, batch_size=2, clock=clock)
    assert publisher.received_ids == ids[:2] + ids  # the first batch twice, with the same ids
    assert store.events(unpublished_only=True) == []


def test_events_of_one_promotion_keep_their_order_when_host_clocks_disagree(store, clock):
    registry = FakeRegistry(ModelVersion(ModelRef("churn", "3"), "mlflow_model"))
    prod = Production(store=store, registry=registry, deployer=FakeDeployer(polls=1), rules=RULES, clock=clock)
    promotion = prod.request(ModelRef("churn", "3"), ALICE)
    clock.rewind(minutes=10)  # the approving host is ten minutes behind
    prod.approve(promotion.id, CAROL)
    prod.deploy(promotion.id)
    clock.rewind(minutes=10)
    prod.advance()
    prod.advance()
    assert prod.store.get(promotion.id).state is State.DEPLOYED
    publisher = FakePublisher()
    service.publish_pending(store, publisher, batch_size=1, clock=clock)
    assert [e.type.value for e in publisher.received] == [
        "ModelPromotion.ApprovalRequested",
        "ModelPromotion.Approved",
        "ModelPromotion.DeploymentStarted",
        "ModelPromotion.Deployed",
    ]
    times = [e.at for e in publisher.received]
    assert times == sorted(times) and len(set(times)) == len(times)


def test_two_publishers_at_once_leave_no_gap(store, clock):
    ids = []
    for n in range(4):
        ids += fill_outbox(store, clock, 10, name=f"model{n}")
    publishers = [FakePublisher() for _ in range(3)]
    barrier = threading.Barrier(len(publishers))
    errors = []

    def publish(publisher):
        barrier.wait()
        try:
            service.publish_pending(store, publisher, batch_size=3, clock=clock)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=publish, args=(publisher,)) for publisher in publishers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    sent = [event_id for publisher in publishers for event_id in publisher.received_ids]
    assert set(sent) == set(ids)  # duplicates are fine, gaps are not
    assert store.events(unpublished_only=True) == []
    for publisher in publishers:  # each publisher sent what it sent oldest first
        order = [ids.index(event_id) for event_id in publisher.received_ids]
        assert order == sorted(order)


# --- publish_soon ----------------------------------------------------------------------------------


def test_publish_soon_sends_one_batch_at_most(store, clock):
    ids = fill_outbox(store, clock, BATCH_SIZE + 5)
    publisher = FakePublisher()
    service.publish_soon(store, publisher, clock=clock)
    assert len(publisher.attempts) == 1 and publisher.received_ids == ids[:BATCH_SIZE]
    assert [event.id for event in store.events(unpublished_only=True)] == ids[BATCH_SIZE:]


def test_publish_soon_never_raises_when_the_topic_is_down(store, clock):
    fill_outbox(store, clock, 3)
    publisher = FakePublisher()
    publisher.down = True
    service.publish_soon(store, publisher, clock=clock)
    assert len(publisher.attempts) == 1 and len(store.events(unpublished_only=True)) == 3


@pytest.mark.parametrize("failing", ["unpublished_events", "mark_published"])
def test_publish_soon_never_raises_when_the_store_fails(store, clock, failing):
    fill_outbox(store, clock, 3)
    publisher = FakePublisher()
    service.publish_soon(FlakyStore(store, **{failing: 1}), publisher, clock=clock)
    assert len(store.events(unpublished_only=True)) == 3  # the timer publishes them later
    service.publish_pending(store, publisher, clock=clock)
    assert store.events(unpublished_only=True) == []


def test_publish_soon_without_a_publisher_does_nothing(store, clock):
    fill_outbox(store, clock, 2)
    service.publish_soon(store, None, clock=clock)
    assert len(store.events(unpublished_only=True)) == 2


# --- retention -------------------------------------------------------------------------------------


def test_published_events_are_purged_after_the_retention_period_and_unpublished_ones_kept(store, clock):
    published = fill_outbox(store, clock, 2, name="old")
    service.publish_pending(store, FakePublisher(), clock=clock)
    waiting = fill_outbox(store, clock, 1, name="waiting")
    clock.advance(days=29)
    assert service.purge_published(store, retention=timedelta(days=30), clock=clock) == 0
    clock.advance(days=2)
    assert service.purge_published(store, retention=timedelta(days=30), clock=clock) == 2
    assert [event.id for event in store.events()] == waiting and not set(published) & {e.id for e in store.events()}


# --- the whole flow --------------------------------------------------------------------------------


def test_the_whole_flow_reports_every_change_in_order_with_stable_ids(store, clock):
    ref = ModelRef("churn", "3")
    staging = FakeWorkspace(ModelVersion(ref, "mlflow_model", {"stage": "candidate"}, {}, "churn", "/m"))
    registry = FakeRegistry(
        ModelVersion(ModelRef("churn", "2"), "mlflow_model", {LINEAGE_SOURCE_MODEL: "churn:2"}), copy_polls=1
    )
    policy = Policy.from_document({"share_to_registry": {"require_tags": {"stage": "candidate"}}})
    registered = {
        "id": "e-1",
        "topic": STAGING,
        "eventType": MODEL_REGISTERED,
        "data": {"ModelName": "churn", "ModelVersion": 3},
    }
    service.propagate(
        registered,
        staging_workspace_id=STAGING,
        staging=staging,
        registry=registry,
        load_policy=lambda: policy,
        store=store,
        source="test-app",
        clock=clock,
    )
    for _ in range(2):
        service.advance_registry_copies(registry=registry, store=store, source="test-app", clock=clock)
    prod = Production(store=store, registry=registry, deployer=FakeDeployer(), rules=RULES, clock=clock)
    prod.deployed(ModelRef("churn", "2"), ALICE, CAROL)
    v3 = prod.deployed(ref, ALICE, CAROL)
    prod.rollback(v3.id, CAROL, comment="worse in production")

    publisher = FakePublisher()
    publisher.down = True
    service.publish_soon(store, publisher, clock=clock)  # best effort: fails, loses nothing
    first_ids = [event.id for event in store.events()]
    publisher.down = False
    service.publish_pending(store, publisher, batch_size=4, clock=clock)
    got = [(event.type.value.removeprefix("ModelPromotion."), event.model.version) for event in publisher.received]
    assert got == [
        ("CopiedToRegistry", "3"),
        ("ApprovalRequested", "2"),
        ("Approved", "2"),
        ("DeploymentStarted", "2"),
        ("Deployed", "2"),
        ("ApprovalRequested", "3"),
        ("Approved", "3"),
        ("DeploymentStarted", "3"),
        ("Deployed", "3"),
        ("RolledBack", "3"),
    ]
    assert publisher.received_ids == first_ids and len(set(first_ids)) == len(first_ids)
    for event in publisher.received:
        assert event.subject == f"models/churn/versions/{event.model.version}" and event.source == "test-app"
        assert {"model", "promotion_id", "state", "actor", "comment", "at"} <= set(event.data)
    assert publisher.received[0].data["promotion_id"] is None
