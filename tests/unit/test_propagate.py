"""The event handler's half of staging -> registry: `propagate` decides, starts the copy and returns at once."""

import threading
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from promotion import service
from promotion.adapters.sqlite import SqlitePromotionStore
from promotion.domain import (
    LINEAGE_EVENT_ID,
    LINEAGE_POLICY_DIGEST,
    LINEAGE_SOURCE_MODEL,
    LINEAGE_SOURCE_WORKSPACE,
    CopyState,
    EventType,
    ModelRef,
    ModelVersion,
    Outcome,
)
from promotion.events import MODEL_REGISTERED
from promotion.policy import Policy, PolicyError
from promotion.ports import CopyRefused
from promotion.service.copies import advance_registry_copies
from tests.unit.fakes import FakeClock, FakeRegistry, FakeWorkspace, at_once, stored_decisions

STAGING = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/staging"
SOURCE = "test-app"
POLICY = Policy.from_document(
    {
        "share_to_registry": {
            "require_tags": {"stage": "candidate"},
            "thresholds": [{"tag": "accuracy", "op": ">=", "value": 0.8}],
        }
    }
)
REF = ModelRef("churn", "3")
GOOD = ModelVersion(
    REF, "mlflow_model", {"stage": "candidate", "accuracy": "0.9"}, {"run": "r1"}, "a churn model", "/m"
)
OURS = {LINEAGE_SOURCE_WORKSPACE: STAGING, LINEAGE_SOURCE_MODEL: "churn:3", LINEAGE_EVENT_ID: "e-0"}


def event(event_id="e-1", topic=STAGING, **data):
    return {
        "id": event_id,
        "topic": topic,
        "subject": f"models/{REF}",
        "eventType": MODEL_REGISTERED,
        "data": {"ModelName": REF.name, "ModelVersion": 3, **data},
    }


@dataclass
class World:
    staging: FakeWorkspace
    registry: FakeRegistry
    store: SqlitePromotionStore
    clock: FakeClock
    database: Path

    def deliver(self, raw, policy=POLICY, load_policy=None):
        return service.propagate(
            raw,
            staging_workspace_id=STAGING,
            staging=self.staging,
            registry=self.registry,
            load_policy=load_policy or (lambda: policy),
            store=self.store,
            source=SOURCE,
            clock=self.clock,
        )

    def advance_copies(self):
        return advance_registry_copies(registry=self.registry, store=self.store, source=SOURCE, clock=self.clock)

    def decisions(self):
        return [(d.event_id, d.outcome) for d in self.store.decisions(REF)]

    def finish_copies(self):
        """Run the timer until no copy is under way (the fake copy needs a status read or two)."""
        for _ in range(5):
            self.advance_copies()
        assert not self.store.copies(state=CopyState.COPYING)


@pytest.fixture
def world(tmp_path):
    database = tmp_path / "p.sqlite3"
    return World(FakeWorkspace(GOOD), FakeRegistry(), SqlitePromotionStore(database), FakeClock(), database)


# --- a qualifying model: the copy starts, and the handler returns -----------------------------------


def test_a_qualifying_model_starts_a_copy_claimed_in_the_store_and_never_polls(world):
    decision = world.deliver(event())
    assert decision.outcome is Outcome.COPY_STARTED and decision.policy_digest == POLICY.digest
    copy = world.store.copy(REF)
    assert copy.state is CopyState.COPYING and copy.operation is not None and copy.cause == "e-1"
    assert copy.model_type == "mlflow_model" and copy.tags == GOOD.tags and copy.description == "a churn model"
    assert copy.lineage.source_workspace == STAGING and copy.lineage.policy_digest == POLICY.digest
    assert world.decisions() == [("e-1", Outcome.COPY_STARTED)]
    # the handler started the copy and returned: no status poll, and the registry does not hold it yet
    assert world.registry.calls["copy_status"] == 0 and REF not in world.registry.models
    assert [c.model.ref for c in world.registry.in_flight()] == [REF]
    assert world.store.events() == []  # nothing to report until the copy ends


def test_a_new_qualifying_model_costs_three_requests(world):
    world.deliver(event())
    assert world.registry.calls == {"get": 1, "start_copy": 1}
    assert world.staging.calls == {"get": 1}


def test_a_non_qualifying_model_costs_two_requests_and_is_recorded_with_every_failed_rule(world):
    world.staging.models[REF] = replace(GOOD, tags={"stage": "archived"})
    decision = world.deliver(event())
    assert decision.outcome is Outcome.NOT_QUALIFIED
    assert decision.reasons == (
        "require_tags: tag 'stage' is 'archived', needs 'candidate'",
        "thresholds[0]: tag 'accuracy' is missing (needs >= 0.8)",
    )
    assert world.registry.requests + world.staging.requests == 2
    assert world.decisions() == [("e-1", Outcome.NOT_QUALIFIED)] and world.store.copy(REF) is None


def test_a_duplicate_of_a_copied_model_costs_one_request(world):
    world.deliver(event("e-1"))
    world.finish_copies()
    world.registry.reset_counts()
    world.staging.reset_counts()
    again = world.deliver(event("e-2"))
    assert again.outcome is Outcome.ALREADY_IN_REGISTRY
    assert world.registry.requests == 1 and world.staging.requests == 0
    attempt = world.store.copy(REF).attempt
    assert world.decisions() == [
        ("e-1", Outcome.COPY_STARTED),
        (f"copy:{attempt}", Outcome.COPIED),
        ("e-2", Outcome.ALREADY_IN_REGISTRY),
    ]


def test_the_model_is_re_read_from_staging_not_trusted_from_the_event(world):
    world.staging.models[REF] = replace(GOOD, tags={"stage": "archived", "accuracy": "0.9"})
    decision = world.deliver(event(ModelTags={"stage": "candidate", "accuracy": "0.9"}))
    assert decision.outcome is Outcome.NOT_QUALIFIED
    assert decision.reasons == ("require_tags: tag 'stage' is 'archived', needs 'candidate'",)
    assert world.registry.calls["start_copy"] == 0 and world.store.copy(REF) is None


# --- redeliveries and concurrency ------------------------------------------------------------------


def test_a_redelivery_while_copying_starts_nothing_and_keeps_the_winners_decision(world):
    first = world.deliver(event("e-1"))
    again = world.deliver(event("e-1"))  # Event Grid redelivers the same event
    other = world.deliver(event("e-2"))  # another event for the same version
    assert first.outcome is Outcome.COPY_STARTED
    assert again.outcome is other.outcome is Outcome.COPY_IN_PROGRESS
    assert world.registry.calls["start_copy"] == 1
    # the same event id keeps its copy_started; only the other event records copy_in_progress
    assert sorted(world.decisions()) == [("e-1", Outcome.COPY_STARTED), ("e-2", Outcome.COPY_IN_PROGRESS)]
    assert world.store.copy(REF).cause == "e-1"


def test_a_redelivery_while_copying_costs_one_request(world):
    world.deliver(event("e-1"))
    world.registry.reset_counts()
    world.staging.reset_counts()
    world.deliver(event("e-2"))
    assert world.registry.requests == 1 and world.staging.requests == 0


@pytest.mark.parametrize("event_ids", [["e-1"] * 8, [f"e-{n}" for n in range(8)]], ids=["same-event", "many-events"])
def test_concurrent_deliveries_start_exactly_one_copy(world, event_ids):
    barrier = threading.Barrier(len(event_ids))
    outcomes, errors = [], []

    def deliver(event_id):
        barrier.wait()
        try:
            outcomes.append((event_id, world.deliver(event(event_id)).outcome))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=deliver, args=(event_id,)) for event_id in event_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert world.registry.calls["start_copy"] == 1 and len(world.registry.operations) == 1
    copy = world.store.copy(REF)
    assert copy.state is CopyState.COPYING
    recorded = dict(world.decisions())
    # the event that made the copy says so, whatever its duplicates answered
    assert recorded[copy.cause] is Outcome.COPY_STARTED
    assert [outcome for _, outcome in outcomes].count(Outcome.COPY_STARTED) == 1
    assert all(outcome is Outcome.COPY_IN_PROGRESS for event_id, outcome in recorded.items() if event_id != copy.cause)
    assert set(recorded) == set(event_ids)


def test_the_timer_finishing_the_copy_before_the_event_saves_it_keeps_the_events_decision(world):
    # The copy lands at once, and the timer finishes it between start_copy and the event's own save.
    started = world.registry.start_copy

    def start_and_let_the_timer_finish(model):
        handle = started(model)
        world.registry.models[model.ref] = model  # landed, without lineage yet
        assert world.advance_copies().copied == 1
        return handle

    world.registry.start_copy = start_and_let_the_timer_finish
    decision = world.deliver(event("e-1"))
    assert decision.outcome is Outcome.COPY_STARTED
    copy = world.store.copy(REF)
    assert copy.state is CopyState.COPIED  # the timer's ending stands: the late save did not reopen it
    assert dict(world.decisions()) == {"e-1": Outcome.COPY_STARTED, f"copy:{copy.attempt}": Outcome.COPIED}
    assert [e.type for e in world.store.events()] == [EventType.COPIED_TO_REGISTRY]
    assert world.deliver(event("e-1")).outcome is Outcome.ALREADY_IN_REGISTRY  # a redelivery changes nothing
    assert dict(world.decisions())["e-1"] is Outcome.COPY_STARTED


def a_store(request, tmp_path, backend):
    if backend == "sqlite":
        return SqlitePromotionStore(tmp_path / "p.sqlite3")
    from promotion.adapters.tables import TablePromotionStore

    connection, table = request.getfixturevalue("azurite_connection"), request.getfixturevalue("azurite_table_name")
    return TablePromotionStore(connection, table_name=table)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("tables", marks=pytest.mark.azurite)])
def test_an_event_id_too_long_for_a_property_is_kept_alike_by_both_stores(request, tmp_path, backend):
    # Over 32 K characters, it once raised PropertyValueTooLarge on Tables at every delivery, for 24 hours.
    world = World(FakeWorkspace(GOOD), FakeRegistry(), a_store(request, tmp_path, backend), FakeClock(), tmp_path)
    huge = "evt-" + "9" * 40_000
    decision = world.deliver(event(huge))
    assert decision.outcome is Outcome.COPY_STARTED and len(decision.event_id) <= 200
    assert world.store.copy(REF).cause == decision.event_id
    assert world.deliver(event(huge)).outcome is Outcome.COPY_IN_PROGRESS  # a redelivery: the same cause
    world.finish_copies()
    assert world.decisions()[0] == (decision.event_id, Outcome.COPY_STARTED)
    assert world.registry.models[REF].tags[LINEAGE_EVENT_ID] == decision.event_id


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("tables", marks=pytest.mark.azurite)])
def test_deliveries_and_timers_at_once_never_fail_a_delivery(request, tmp_path, backend):
    """A burst of deliveries of one event, and timer runs, at once on one store: every delivery is
    acknowledged, and the event's decision says the copy started."""
    store = a_store(request, tmp_path, backend)
    registry = FakeRegistry(copy_polls=0)
    started = registry.start_copy

    def start_landing_at_once(model):
        handle = started(model)
        registry.models[model.ref] = model
        return handle

    registry.start_copy = start_landing_at_once
    versions = [ModelRef(REF.name, str(n)) for n in range(1, 9)]
    world = World(FakeWorkspace(*(replace(GOOD, ref=ref) for ref in versions)), registry, store, FakeClock(), tmp_path)

    for ref in versions:
        raw = {
            **event(f"e-{ref.version}"),
            "subject": f"models/{ref}",
            "data": {**event()["data"], "ModelVersion": ref.version},
        }

        def act(what, raw=raw):
            if what == "timer":  # runs back to back, as several hosts' timers may
                return [world.advance_copies() for _ in range(10)]
            return world.deliver(raw).outcome

        answers, refused = at_once(act, ["delivery"] * 6 + ["timer"] * 3)
        assert refused == [] and len(answers) == 9, f"a delivery of {ref} failed"
        assert [d.outcome for d in store.decisions(ref) if d.event_id == raw["id"]] == [Outcome.COPY_STARTED]
    assert registry.calls["start_copy"] == len(versions)
    world.finish_copies()
    assert all(store.copy(ref).state is CopyState.COPIED for ref in versions)


# --- failures of the copy --------------------------------------------------------------------------


def test_a_failed_copy_is_retried_by_a_new_event(world):
    world.registry.fail_copies_with = "UserError: the storage account refused the copy"
    world.deliver(event("e-1"))
    world.finish_copies()
    failed = world.store.copy(REF)
    assert failed.state is CopyState.COPY_FAILED
    world.registry.fail_copies_with = None
    retried = world.deliver(event("e-2"))
    assert retried.outcome is Outcome.COPY_STARTED
    copy = world.store.copy(REF)
    assert copy.state is CopyState.COPYING and copy.cause == "e-2" and copy.attempt != failed.attempt
    assert world.registry.calls["start_copy"] == 2
    world.finish_copies()
    assert world.store.copy(REF).state is CopyState.COPIED
    assert world.registry.models[REF].tags[LINEAGE_EVENT_ID] == "e-2"


@pytest.mark.parametrize("error", [ConnectionError("reset by peer"), RuntimeError("HTTP 503 Service Unavailable")])
def test_a_transient_start_error_releases_the_claim_and_raises(world, error):
    world.registry.start_error = error
    with pytest.raises(type(error)):
        world.deliver(event("e-1"))
    assert world.store.copy(REF) is None and world.decisions() == []
    # Event Grid redelivers; the copy can start then
    world.registry.start_error = None
    assert world.deliver(event("e-1")).outcome is Outcome.COPY_STARTED
    assert world.decisions() == [("e-1", Outcome.COPY_STARTED)]


def test_a_transient_start_error_on_a_retry_puts_the_failed_copy_back(world):
    world.registry.fail_copies_with = "the import failed"
    world.deliver(event("e-1"))
    world.finish_copies()
    failed = world.store.copy(REF)
    world.registry.start_error = ConnectionError("reset by peer")
    with pytest.raises(ConnectionError):
        world.deliver(event("e-2"))
    restored = world.store.copy(REF)
    assert restored.state is CopyState.COPY_FAILED and restored.attempt == failed.attempt
    assert restored.error == "the import failed" and restored.cause == "e-1"
    assert ("e-2", Outcome.COPY_STARTED) not in world.decisions()
    # and the failed copy can still be retried
    world.registry.start_error = world.registry.fail_copies_with = None
    assert world.deliver(event("e-3")).outcome is Outcome.COPY_STARTED


def test_a_refused_copy_is_recorded_as_failed_with_a_lifecycle_event(world):
    world.registry.start_error = CopyRefused("(InvalidName) the registry refuses the name")
    decision = world.deliver(event("e-1"))
    assert decision.outcome is Outcome.COPY_FAILED and decision.reasons == (
        "(InvalidName) the registry refuses the name",
    )
    copy = world.store.copy(REF)
    assert copy.state is CopyState.COPY_FAILED and copy.error == "(InvalidName) the registry refuses the name"
    assert world.decisions() == [("e-1", Outcome.COPY_FAILED)]
    [reported] = world.store.events()
    assert reported.type is EventType.REGISTRY_COPY_FAILED and reported.model == REF
    assert reported.data["reason"] == "(InvalidName) the registry refuses the name"
    assert reported.data["promotion_id"] is None and reported.data["state"] == "copy_failed"
    assert reported.data["model"] == {"name": "churn", "version": "3"}


def test_a_refused_copy_is_recorded_once_and_logged_as_a_decision_not_a_redelivery(world, caplog):
    world.registry.start_error = CopyRefused("(InvalidName) the registry refuses the name")
    with caplog.at_level("INFO", logger="promotion"):
        world.deliver(event("e-1"))
    assert "redelivery" not in caplog.text
    assert world.decisions() == [("e-1", Outcome.COPY_FAILED)]


def test_the_same_refusal_again_is_recorded_but_not_published_again(world):
    refusal = "(InvalidName) the registry refuses the name"
    world.registry.start_error = CopyRefused(refusal)
    world.deliver(event("e-1"))
    world.deliver(event("e-2"))  # the next event, or the next reconcile: the refusal repeats
    assert world.decisions() == [("e-1", Outcome.COPY_FAILED), ("e-2", Outcome.COPY_FAILED)]
    assert [e.type for e in world.store.events()] == [EventType.REGISTRY_COPY_FAILED]

    world.registry.start_error = CopyRefused("(AuthorizationFailed) no publish permission")
    world.deliver(event("e-3"))  # a new reason is news
    assert [e.data["reason"] for e in world.store.events()] == [refusal, "(AuthorizationFailed) no publish permission"]


# --- what the registry holds already --------------------------------------------------------------


def test_a_copy_that_landed_meanwhile_is_claimed_and_tagged_by_the_timer(world):
    world.registry.appears_on_start = replace(GOOD, tags={}, description=None)  # someone else's untagged copy
    decision = world.deliver(event("e-1"))
    assert decision.outcome is Outcome.COPY_STARTED and "meanwhile" in decision.reasons[0]
    copy = world.store.copy(REF)
    assert copy.state is CopyState.COPYING and copy.operation is None
    world.advance_copies()
    assert world.store.copy(REF).state is CopyState.COPIED
    tagged = world.registry.models[REF]
    assert tagged.tags[LINEAGE_EVENT_ID] == "e-1" and tagged.tags["stage"] == "candidate"
    assert tagged.description == "a churn model"
    assert world.registry.calls["copy_status"] == 0  # there was no operation to ask about


def test_an_untagged_registry_version_of_the_same_type_is_tagged_by_the_timer(world):
    by_hand = replace(GOOD, tags={"uploaded": "by hand"}, properties={"run": "r0"}, path="registry/by-hand")
    world.registry.models[REF] = by_hand
    decision = world.deliver(event("e-9"))
    assert decision.outcome is Outcome.COPY_STARTED and "without lineage tags" in decision.reasons[0]
    assert world.registry.calls["start_copy"] == 0 and world.store.copy(REF).operation is None
    world.advance_copies()
    held = world.registry.models[REF]
    assert world.store.copy(REF).state is CopyState.COPIED
    assert held.tags[LINEAGE_EVENT_ID] == "e-9" and held.tags[LINEAGE_POLICY_DIGEST] == POLICY.digest
    assert held.tags["uploaded"] == "by hand" and held.tags["stage"] == "candidate"
    assert (held.properties, held.path) == (by_hand.properties, by_hand.path)  # content untouched
    assert world.deliver(event("e-10")).outcome is Outcome.ALREADY_IN_REGISTRY


def test_an_untagged_registry_version_of_another_type_is_a_conflict_left_untouched(world):
    world.registry.models[REF] = replace(GOOD, type="custom_model", tags={"uploaded": "by hand"})
    decision = world.deliver(event())
    assert decision.outcome is Outcome.REGISTRY_CONFLICT and "as a custom_model" in decision.reasons[0]
    assert world.registry.models[REF].tags == {"uploaded": "by hand"}
    assert world.store.copy(REF) is None and world.decisions() == [("e-1", Outcome.REGISTRY_CONFLICT)]


def test_a_registry_version_copied_from_another_workspace_is_a_conflict_left_untouched(world):
    elsewhere = {**OURS, LINEAGE_SOURCE_WORKSPACE: STAGING.replace("staging", "other")}
    world.registry.models[REF] = replace(GOOD, tags=elsewhere)
    decision = world.deliver(event())
    assert decision.outcome is Outcome.REGISTRY_CONFLICT and "workspaces/other" in decision.reasons[0]
    assert world.registry.models[REF].tags == elsewhere
    assert world.registry.requests == 1 and world.staging.requests == 0
    assert world.store.copy(REF) is None and world.decisions() == [("e-1", Outcome.REGISTRY_CONFLICT)]


def test_a_registry_version_copied_from_another_model_is_a_conflict(world):
    world.registry.models[REF] = replace(GOOD, tags={**OURS, LINEAGE_SOURCE_MODEL: "attrition:3"})
    decision = world.deliver(event())
    assert decision.outcome is Outcome.REGISTRY_CONFLICT and "attrition:3" in decision.reasons[0]


def test_a_copied_version_deleted_from_the_registry_is_a_conflict(world):
    world.deliver(event("e-1"))
    world.finish_copies()
    del world.registry.models[REF]
    decision = world.deliver(event("e-2"))
    assert decision.outcome is Outcome.REGISTRY_CONFLICT and "no longer holds it" in decision.reasons[0]
    assert world.registry.calls["start_copy"] == 1


# --- events that are refused or ignored ------------------------------------------------------------


@pytest.mark.parametrize(
    "topic",
    [
        STAGING.replace("staging", "prod"),
        STAGING.replace("workspaces", "wor\u212aspaces"),  # KELVIN SIGN lower-cases to "k" in Unicode
    ],
    ids=["other-workspace", "kelvin-sign"],
)
def test_events_from_another_source_are_refused_and_not_recorded(world, topic):
    decision = world.deliver(event(topic=topic))
    assert decision.outcome is Outcome.REFUSED_SOURCE
    assert world.registry.requests == world.staging.requests == 0
    assert stored_decisions(world.database) == [] and world.store.copy(REF) is None


def test_topic_comparison_ignores_ascii_case_and_a_trailing_slash(world):
    assert world.deliver(event("e-1", topic=STAGING.upper() + "/")).outcome is Outcome.COPY_STARTED


@pytest.mark.parametrize(
    "raw, outcome",
    [
        ({"id": "x", "eventType": MODEL_REGISTERED, "topic": STAGING, "data": {"ModelName": "a/b", "ModelVersion": 1}},
         Outcome.MALFORMED),
        ({"id": "x", "eventType": MODEL_REGISTERED, "topic": STAGING, "data": "churn:3"}, Outcome.MALFORMED),
        ({"eventType": MODEL_REGISTERED, "topic": STAGING, "data": {}}, Outcome.MALFORMED),
        (["not", "an", "object"], Outcome.MALFORMED),
        ({"id": "y", "eventType": "Microsoft.MachineLearningServices.RunCompleted", "data": {}},
         Outcome.IGNORED_EVENT_TYPE),
    ],
)  # fmt: skip
def test_malformed_and_foreign_events_are_acknowledged_without_reads_or_records(world, raw, outcome):
    assert world.deliver(raw).outcome is outcome
    assert world.registry.requests == world.staging.requests == 0
    assert stored_decisions(world.database) == []


def test_a_model_gone_from_staging_is_a_permanent_outcome(world):
    world.staging.models.clear()
    decision = world.deliver(event())
    assert decision.outcome is Outcome.NOT_IN_STAGING
    assert world.decisions() == [("e-1", Outcome.NOT_IN_STAGING)] and world.store.copy(REF) is None


# --- faults that Event Grid should retry -----------------------------------------------------------


class Throttled(Exception):
    status_code = 429


@pytest.mark.parametrize("port", ["registry", "staging"])
def test_transient_faults_raise_so_event_grid_redelivers(world, port):
    getattr(world, port).get_error = Throttled("429 Too Many Requests")
    with pytest.raises(Throttled):
        world.deliver(event())
    assert stored_decisions(world.database) == [] and world.store.copy(REF) is None
    assert world.registry.calls["start_copy"] == 0


def test_a_broken_policy_raises_so_the_event_waits_for_a_fix(world):
    def broken():
        raise PolicyError("promotion-policy.json: not valid JSON")

    with pytest.raises(PolicyError):
        world.deliver(event(), load_policy=broken)
    assert world.registry.calls["start_copy"] == 0 and world.store.copy(REF) is None
    assert stored_decisions(world.database) == []


def test_an_event_id_past_table_key_limits_is_handled_and_recorded(world):
    long_id = "a/b#c?d\\" * 300  # 2.7 KiB, with every character Table keys forbid
    decision = world.deliver(event(long_id))
    assert decision.outcome is Outcome.COPY_STARTED
    kept = decision.event_id  # its start and a digest: see test_an_event_id_too_long_for_a_property_...
    assert kept.startswith(long_id[:128]) and len(kept) == 200
    assert world.store.copy(REF).cause == kept
    assert world.decisions() == [(kept, Outcome.COPY_STARTED)]
    assert world.deliver(event(long_id)).outcome is Outcome.COPY_IN_PROGRESS
    assert world.decisions() == [(kept, Outcome.COPY_STARTED)]
