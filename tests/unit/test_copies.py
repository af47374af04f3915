"""The timer's half of staging -> registry: `advance_registry_copies` finishes each copy under way."""

import threading
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest

from promotion import service
from promotion.domain import (
    LINEAGE_EVENT_ID,
    LINEAGE_POLICY_DIGEST,
    LINEAGE_SOURCE_MODEL,
    LINEAGE_SOURCE_WORKSPACE,
    CopyState,
    EventType,
    Lineage,
    ModelRef,
    ModelVersion,
    Outcome,
    RegistryCopy,
)
from promotion.events import MODEL_REGISTERED
from promotion.policy import Policy
from promotion.ports import StatusUnavailable
from promotion.service.copies import START_GRACE, advance_registry_copies
from tests.unit.fakes import FakeRegistry, FakeWorkspace

STAGING = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/staging"
SOURCE = "test-app"
POLICY = Policy.from_document({"share_to_registry": {"require_tags": {"stage": "candidate"}}})
CHURN = ModelVersion(ModelRef("churn", "3"), "mlflow_model", {"stage": "candidate"}, {"run": "r1"}, "churn", "/c")
FRAUD = ModelVersion(ModelRef("fraud", "7"), "triton_model", {"stage": "candidate"}, {"run": "r2"}, None, "/f")
TAXI = ModelVersion(ModelRef("taxi", "1"), "custom_model", {"stage": "candidate"}, {}, "taxi", "/t")


@pytest.fixture
def staging():
    return FakeWorkspace(CHURN, FRAUD, TAXI)


@pytest.fixture
def registry():
    return FakeRegistry(copy_polls=2)


def start(model, staging, registry, store, clock, event_id=None):
    """A ModelRegistered event for `model`, handled: its copy is under way."""
    event_id = event_id or f"e-{model.name}"
    decision = service.propagate(
        {
            "id": event_id,
            "topic": STAGING,
            "eventType": MODEL_REGISTERED,
            "data": {"ModelName": model.name, "ModelVersion": model.version},
        },
        staging_workspace_id=STAGING,
        staging=staging,
        registry=registry,
        load_policy=lambda: POLICY,
        store=store,
        source=SOURCE,
        clock=clock,
    )
    assert decision.outcome is Outcome.COPY_STARTED
    return store.copy(model.ref)


def advance(registry, store, clock, **options):
    return advance_registry_copies(registry=registry, store=store, source=SOURCE, clock=clock, **options)


def test_a_running_copy_stays_copying_after_one_status_read(staging, registry, store, clock):
    started = start(CHURN, staging, registry, store, clock)
    registry.reset_counts()
    run = advance(registry, store, clock)
    assert run == service.copies.CopyRun(copying=1)
    assert registry.calls == {"copy_status": 1}
    copy = store.copy(CHURN.ref)
    assert copy.state is CopyState.COPYING and copy.attempt == started.attempt
    assert store.events() == [] and [d.outcome for d in store.decisions(CHURN.ref)] == [Outcome.COPY_STARTED]


def test_a_finished_copy_gets_the_source_tags_and_lineage_and_is_recorded_copied(staging, registry, store, clock):
    registry.copy_polls = 1
    started = start(CHURN, staging, registry, store, clock, event_id="e-42")
    advance(registry, store, clock)
    registry.reset_counts()
    run = advance(registry, store, clock)
    assert run.copied == 1
    assert registry.requests <= 3  # status, then the version's read and write
    held = registry.models[CHURN.ref]
    assert held.tags == {
        "stage": "candidate",
        LINEAGE_SOURCE_WORKSPACE: STAGING,
        LINEAGE_SOURCE_MODEL: "churn:3",
        LINEAGE_EVENT_ID: "e-42",
        LINEAGE_POLICY_DIGEST: POLICY.digest,
    }
    assert held.description == "churn" and held.type == "mlflow_model" and held.properties == {"run": "r1"}

    copy = store.copy(CHURN.ref)
    assert copy.state is CopyState.COPIED and copy.error is None
    decisions = store.decisions(CHURN.ref)
    assert [(d.event_id, d.outcome) for d in decisions] == [
        ("e-42", Outcome.COPY_STARTED),
        (f"copy:{started.attempt}", Outcome.COPIED),
    ]
    assert decisions[-1].policy_digest == POLICY.digest

    [reported] = store.events()
    assert reported.type is EventType.COPIED_TO_REGISTRY and reported.model == CHURN.ref and reported.source == SOURCE
    assert reported.subject == "models/churn/versions/3"
    assert reported.data["lineage"] == Lineage(STAGING, CHURN.ref, "e-42", POLICY.digest).as_tags()
    assert reported.data["policy_digest"] == POLICY.digest
    assert reported.data["model"] == {"name": "churn", "version": "3"}
    assert reported.data["promotion_id"] is None and reported.data["state"] == "copied"
    assert reported.data["actor"] == "advance_registry_copies" and reported.data["comment"] is None
    assert reported.data["at"].endswith("Z") and reported.published_at is None


def test_a_failed_import_is_recorded_with_the_services_message(staging, registry, store, clock):
    registry.fail_copies_with = "(UserError) the source artifacts cannot be read"
    started = start(CHURN, staging, registry, store, clock)
    for _ in range(3):
        advance(registry, store, clock)
    copy = store.copy(CHURN.ref)
    assert copy.state is CopyState.COPY_FAILED and copy.error == "(UserError) the source artifacts cannot be read"
    assert CHURN.ref not in registry.models
    last = store.decisions(CHURN.ref)[-1]
    assert (last.event_id, last.outcome) == (f"copy:{started.attempt}", Outcome.COPY_FAILED)
    assert last.reasons == ("(UserError) the source artifacts cannot be read",)
    [reported] = store.events()
    assert reported.type is EventType.REGISTRY_COPY_FAILED
    assert reported.data["reason"] == "(UserError) the source artifacts cannot be read"
    assert reported.data["state"] == "copy_failed" and reported.data["promotion_id"] is None


def test_a_copy_past_the_timeout_fails_with_a_reason_that_says_so(staging, registry, store, clock):
    registry.copy_polls = 10**6  # a very slow import
    start(CHURN, staging, registry, store, clock)
    clock.advance(minutes=119)
    assert advance(registry, store, clock).copying == 1
    clock.advance(minutes=2)
    assert advance(registry, store, clock).failed == 1
    copy = store.copy(CHURN.ref)
    assert copy.state is CopyState.COPY_FAILED and "120 minutes" in copy.error
    assert "PROMOTION_COPY_TIMEOUT_MINUTES" in copy.error
    [reported] = store.events()
    assert (
        reported.type is EventType.REGISTRY_COPY_FAILED and "PROMOTION_COPY_TIMEOUT_MINUTES" in reported.data["reason"]
    )


def test_the_timeout_is_configurable_in_fractions_of_a_minute(staging, registry, store, clock):
    registry.copy_polls = 10**6
    start(CHURN, staging, registry, store, clock)
    clock.advance(seconds=31)
    assert advance(registry, store, clock, timeout=timedelta(minutes=0.5)).failed == 1
    assert "0.5 minutes" in store.copy(CHURN.ref).error


def test_one_copy_whose_status_raises_does_not_stop_the_others(staging, registry, store, clock):
    registry.copy_polls = 1
    churn = start(CHURN, staging, registry, store, clock)
    start(FRAUD, staging, registry, store, clock)
    start(TAXI, staging, registry, store, clock)
    registry.operations[churn.operation].status_error = ConnectionError("reset by peer")
    advance(registry, store, clock)
    run = advance(registry, store, clock)
    assert run == service.copies.CopyRun(copied=2, errors=1)
    assert store.copy(CHURN.ref).state is CopyState.COPYING  # tried again at the next run
    assert store.copy(FRAUD.ref).state is store.copy(TAXI.ref).state is CopyState.COPIED
    # once the registry answers again, it finishes too
    registry.operations[churn.operation].status_error = None
    assert advance(registry, store, clock).copying == 1
    assert advance(registry, store, clock).copied == 1


def test_a_tagging_error_on_one_copy_does_not_stop_the_others(staging, registry, store, clock, monkeypatch):
    registry.copy_polls = 1
    start(CHURN, staging, registry, store, clock)
    start(FRAUD, staging, registry, store, clock)
    advance(registry, store, clock)
    real_tag = registry.tag

    def flaky_tag(ref, *args, **kwargs):
        if ref == CHURN.ref:
            raise TimeoutError("the registry did not answer")
        return real_tag(ref, *args, **kwargs)

    monkeypatch.setattr(registry, "tag", flaky_tag)
    run = advance(registry, store, clock)
    assert (run.copied, run.errors) == (1, 1)
    assert store.copy(CHURN.ref).state is CopyState.COPYING and store.copy(FRAUD.ref).state is CopyState.COPIED


def test_running_it_twice_changes_nothing_more(staging, registry, store, clock):
    registry.copy_polls = 1
    start(CHURN, staging, registry, store, clock)
    for _ in range(2):
        advance(registry, store, clock)
    registry.reset_counts()
    assert advance(registry, store, clock) == service.copies.CopyRun()
    assert registry.requests == 0
    assert [d.outcome for d in store.decisions(CHURN.ref)] == [Outcome.COPY_STARTED, Outcome.COPIED]
    assert len(store.events()) == 1


def test_two_runs_at_once_record_one_decision_and_one_event(staging, registry, store, clock):
    registry.copy_polls = 1
    start(CHURN, staging, registry, store, clock)
    start(FRAUD, staging, registry, store, clock)
    advance(registry, store, clock)  # the copies land; the next runs finish them
    barrier = threading.Barrier(4)
    errors = []

    def run():
        barrier.wait()
        try:
            advance(registry, store, clock)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for model in (CHURN, FRAUD):
        assert store.copy(model.ref).state is CopyState.COPIED
        assert [d.outcome for d in store.decisions(model.ref)] == [Outcome.COPY_STARTED, Outcome.COPIED]
    assert sorted(event.model.name for event in store.events()) == ["churn", "fraud"]
    assert {event.type for event in store.events()} == {EventType.COPIED_TO_REGISTRY}


def _abandoned_claim(store, clock, model=CHURN):
    """A copy claimed by an instance that stopped before it could start it: no operation."""
    at = clock()
    return store.claim_copy(
        RegistryCopy(
            model=model.ref,
            attempt=str(uuid.uuid4()),
            state=CopyState.COPYING,
            model_type=model.type,
            lineage=Lineage(STAGING, model.ref, "e-lost", POLICY.digest),
            tags=dict(model.tags),
            description=model.description,
            started_at=at,
            updated_at=at,
        )
    )


def test_a_claim_never_started_fails_after_the_start_grace(staging, registry, store, clock):
    claimed = _abandoned_claim(store, clock)
    assert advance(registry, store, clock).copying == 1  # its starter may still be at it
    assert store.copy(CHURN.ref).state is CopyState.COPYING
    clock.advance(seconds=START_GRACE.total_seconds() + 1)
    assert advance(registry, store, clock).failed == 1
    copy = store.copy(CHURN.ref)
    assert copy.state is CopyState.COPY_FAILED and "never started" in copy.error
    assert [(d.event_id, d.outcome) for d in store.decisions(CHURN.ref)] == [
        (f"copy:{claimed.attempt}", Outcome.COPY_FAILED)
    ]
    assert [event.type for event in store.events()] == [EventType.REGISTRY_COPY_FAILED]
    # and a new event starts it again
    assert start(CHURN, staging, registry, store, clock, event_id="e-again").state is CopyState.COPYING


def test_a_copy_the_registry_holds_as_another_type_fails_and_is_left_untouched(staging, registry, store, clock):
    registry.copy_polls = 1
    copy = start(CHURN, staging, registry, store, clock)
    advance(registry, store, clock)  # still running; then someone registers another type under the name
    registry.operations[copy.operation].done = True
    registry.models[CHURN.ref] = replace(CHURN, type="custom_model", tags={"by": "hand"}, path="elsewhere")
    assert advance(registry, store, clock).failed == 1
    assert registry.models[CHURN.ref].tags == {"by": "hand"}  # check() refused before anything changed
    failed = store.copy(CHURN.ref)
    assert failed.state is CopyState.COPY_FAILED and "as a custom_model" in failed.error


def test_a_copy_the_registry_holds_from_another_workspace_fails_and_is_left_untouched(staging, registry, store, clock):
    registry.copy_polls = 1
    copy = start(CHURN, staging, registry, store, clock)
    advance(registry, store, clock)
    registry.operations[copy.operation].done = True
    foreign = {LINEAGE_SOURCE_WORKSPACE: STAGING.replace("staging", "other"), LINEAGE_SOURCE_MODEL: "churn:3"}
    registry.models[CHURN.ref] = replace(CHURN, tags=foreign)
    advance(registry, store, clock)
    assert registry.models[CHURN.ref].tags == foreign
    assert "workspaces/other" in store.copy(CHURN.ref).error


def test_a_succeeded_copy_not_yet_visible_stays_copying_until_the_timeout(staging, registry, store, clock):
    registry.copy_polls = 1
    copy = start(FRAUD, staging, registry, store, clock)
    advance(registry, store, clock)
    registry.operations[copy.operation].done = True  # the operation succeeded, but the version is not readable yet
    registry.reset_counts()
    assert advance(registry, store, clock).copying == 1
    assert registry.calls == {"copy_status": 1, "tag_get": 1}  # nothing was written
    clock.advance(minutes=121)
    assert advance(registry, store, clock).failed == 1
    assert "PROMOTION_COPY_TIMEOUT_MINUTES" in store.copy(FRAUD.ref).error


def test_a_copy_whose_status_cannot_be_read_past_the_timeout_fails_instead_of_blocking_its_version(
    staging, registry, store, clock
):
    copy = start(CHURN, staging, registry, store, clock)
    registry.operations[copy.operation].status_error = ConnectionError("503 Service Unavailable")
    assert advance(registry, store, clock).errors == 1
    clock.advance(minutes=121)
    run = advance(registry, store, clock)
    # a copy not done after PROMOTION_COPY_TIMEOUT_MINUTES is copy_failed, whether the status read answers or not;
    # otherwise the version stays "copying" for good, and every event and reconcile answers copy_in_progress
    assert run.failed == 1 and run.errors == 0
    failed = store.copy(CHURN.ref)
    assert failed.state is CopyState.COPY_FAILED and "PROMOTION_COPY_TIMEOUT_MINUTES" in failed.error
    assert [event.type for event in store.events()] == [EventType.REGISTRY_COPY_FAILED]


# ---- the registry applies the lineage tags as a long-running operation


def test_a_copy_whose_tags_are_still_being_applied_stays_copying_and_publishes_nothing(staging, store, clock):
    registry = FakeRegistry(copy_polls=1, tag_polls=3)
    start(CHURN, staging, registry, store, clock)
    assert advance(registry, store, clock).copying == 1  # the copy's own operation

    states = []
    for _ in range(5):
        clock.advance(minutes=1)
        run = advance(registry, store, clock)
        copy = store.copy(CHURN.ref)
        states.append((copy.state, copy.step, [event.type for event in store.events()], run))

    tagging = (CopyState.COPYING, "tagging", [], service.copies.CopyRun(copying=1))
    assert states[:4] == [tagging] * 4, "tag accepted, then 3 polls while the registry applies it"
    assert states[4][:3] == (CopyState.COPIED, "copied", [EventType.COPIED_TO_REGISTRY])
    assert Lineage.is_tagged(registry.get(CHURN.ref).tags)
    assert registry.calls["tag_put"] == 1 and registry.calls["tag_status"] == 4


def test_a_tag_update_the_registry_fails_fails_the_copy_with_its_message(staging, store, clock):
    registry = FakeRegistry(copy_polls=1, tag_polls=1)
    registry.fail_tags_with = "the registry could not update credit-risk:3"
    start(CHURN, staging, registry, store, clock)
    for _ in range(4):
        clock.advance(minutes=1)
        advance(registry, store, clock)

    failed = store.copy(CHURN.ref)
    assert failed.state is CopyState.COPY_FAILED
    assert failed.error == "the registry did not apply the lineage tags: the registry could not update credit-risk:3"
    assert [event.type for event in store.events()] == [EventType.REGISTRY_COPY_FAILED]


@pytest.mark.parametrize("step", ["copy", "tag update"])
def test_a_status_unavailable_for_a_while_says_for_how_long_and_the_timeout_still_applies(staging, store, clock, step):
    registry = FakeRegistry(copy_polls=1, tag_polls=2)
    copy = start(CHURN, staging, registry, store, clock)
    unavailable = StatusUnavailable("503 ServiceUnavailable: the front door is down")
    if step == "copy":
        registry.operations[copy.operation].status_error = unavailable
    else:
        advance(registry, store, clock)
        advance(registry, store, clock)
        assert store.copy(CHURN.ref).step == "tagging"
        registry.status_error = unavailable

    notes = []
    for _ in range(18):
        run = advance(registry, store, clock)
        assert run == service.copies.CopyRun(errors=1)
        notes.append(store.copy(CHURN.ref).error)
        clock.advance(minutes=1)
    assert notes[0] == "status unavailable for 0 min: 503 ServiceUnavailable: the front door is down"
    assert notes[17] == "status unavailable for 17 min: 503 ServiceUnavailable: the front door is down"
    assert store.copy(CHURN.ref).state is CopyState.COPYING and store.events() == []

    clock.advance(minutes=120)
    assert advance(registry, store, clock).failed == 1
    failed = store.copy(CHURN.ref)
    assert failed.state is CopyState.COPY_FAILED
    assert "PROMOTION_COPY_TIMEOUT_MINUTES" in failed.error and "status unavailable for 138 min: 503" in failed.error


def test_a_status_readable_again_clears_the_note(staging, store, clock):
    registry = FakeRegistry(copy_polls=5)
    copy = start(CHURN, staging, registry, store, clock)
    registry.operations[copy.operation].status_error = StatusUnavailable("503 busy")
    advance(registry, store, clock)
    assert store.copy(CHURN.ref).error.startswith("status unavailable")
    registry.operations[copy.operation].status_error = None
    clock.advance(minutes=3)

    assert advance(registry, store, clock).copying == 1
    assert store.copy(CHURN.ref).error is None
    registry.operations[copy.operation].status_error = StatusUnavailable("503 busy")
    clock.advance(minutes=1)
    advance(registry, store, clock)
    assert store.copy(CHURN.ref).error == "status unavailable for 0 min: 503 busy"  # counted afresh
