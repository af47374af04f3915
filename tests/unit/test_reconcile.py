"""Reconcile (what events miss) and the policy backtest (what a candidate policy would let through)."""

from dataclasses import replace

import pytest

from promotion import service
from promotion.adapters.sqlite import SqlitePromotionStore
from promotion.domain import (
    LINEAGE_EVENT_ID,
    LINEAGE_SOURCE_MODEL,
    LINEAGE_SOURCE_WORKSPACE,
    CopyState,
    ModelRef,
    ModelVersion,
    Outcome,
)
from promotion.events import MODEL_REGISTERED
from promotion.policy import Policy
from promotion.service.copies import advance_registry_copies
from tests.unit.fakes import FakeRegistry, FakeWorkspace, stored_decisions

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
QUALIFYING = {"stage": "candidate", "accuracy": "0.9"}


def model(name, version, tags=QUALIFYING, type="mlflow_model"):
    return ModelVersion(ModelRef(name, version), type, dict(tags), {"run": f"{name}-{version}"}, None, f"/{name}")


def ours(version):
    return replace(
        version, tags={**version.tags, LINEAGE_SOURCE_WORKSPACE: STAGING, LINEAGE_SOURCE_MODEL: str(version.ref)}
    )


CHURN_1 = model("churn", "1")  # in the registry already, with lineage
CHURN_2 = model("churn", "2")  # qualifies, missing
CHURN_3 = model("churn", "3", {"stage": "archived", "accuracy": "0.5"})  # does not qualify
FRAUD_7 = model("fraud", "7")  # qualifies, missing
TAXI_1 = model("taxi", "1")  # the registry holds it untagged: qualifies, gets its lineage
WEIRD_1 = model("weird", "1")  # the registry holds another type under that name


@pytest.fixture
def staging():
    return FakeWorkspace(CHURN_1, CHURN_2, CHURN_3, FRAUD_7, TAXI_1, WEIRD_1)


@pytest.fixture
def registry():
    return FakeRegistry(
        ours(CHURN_1), replace(TAXI_1, tags={}), replace(WEIRD_1, type="custom_model", tags={}), copy_polls=1
    )


@pytest.fixture
def database(tmp_path):
    return tmp_path / "p.sqlite3"


@pytest.fixture
def store(database):
    return SqlitePromotionStore(database)


def reconcile(staging, registry, store, clock, *, dry_run=False):
    return service.reconcile(
        staging_workspace_id=STAGING,
        staging=staging,
        registry=registry,
        policy=lambda: POLICY,
        store=store,
        dry_run=dry_run,
        source=SOURCE,
        clock=clock,
    )


def finish_copies(registry, store, clock):
    for _ in range(3):
        advance_registry_copies(registry=registry, store=store, source=SOURCE, clock=clock)
    assert not store.copies(state=CopyState.COPYING)


def test_a_dry_run_changes_nothing_needs_no_store_and_says_what_a_real_run_would_do(staging, registry, store, clock):
    dry = reconcile(staging, registry, None, clock, dry_run=True)
    assert dry.dry_run
    assert dry.copied == ["churn:2", "fraud:7", "taxi:1"]
    assert dry.already_in_registry == ["churn:1"]
    assert dry.not_qualified == {
        "churn:3": [
            "require_tags: tag 'stage' is 'archived', needs 'candidate'",
            "thresholds[0]: tag 'accuracy' = 0.5, needs >= 0.8",
        ]
    }
    assert list(dry.conflicts) == ["weird:1"] and dry.errors == {}
    assert registry.calls["start_copy"] == 0 and registry.in_flight() == []

    # with a store at hand it still writes nothing
    again = reconcile(staging, registry, store, clock, dry_run=True)
    assert again.copied == dry.copied and store.copies() == [] and store.events() == []

    real = reconcile(staging, registry, store, clock)
    assert real.copied == dry.copied and real.already_in_registry == dry.already_in_registry
    assert real.not_qualified == dry.not_qualified and list(real.conflicts) == list(dry.conflicts)


def test_a_dry_run_records_no_decision(staging, registry, store, database, clock):
    reconcile(staging, registry, store, clock, dry_run=True)
    assert stored_decisions(database) == []


def test_a_real_run_starts_the_copies_of_qualifying_missing_versions(staging, registry, store, clock):
    report = reconcile(staging, registry, store, clock)
    assert not report.dry_run and report.copied == ["churn:2", "fraud:7", "taxi:1"]
    assert registry.calls["start_copy"] == 2  # taxi:1 is there already: it only gets its lineage
    for ref in (CHURN_2.ref, FRAUD_7.ref, TAXI_1.ref):
        copy = store.copy(ref)
        cause = f"reconcile:{report.run_id}:{ref.name}:{ref.version}"
        assert copy.state is CopyState.COPYING and copy.cause == cause
        assert [(d.event_id, d.outcome) for d in store.decisions(ref)] == [(cause, Outcome.COPY_STARTED)]
    assert store.copy(CHURN_3.ref) is None and store.copy(WEIRD_1.ref) is None
    assert store.copy(CHURN_1.ref) is None  # nothing to do for what the registry holds

    finish_copies(registry, store, clock)
    for ref in (CHURN_2.ref, FRAUD_7.ref, TAXI_1.ref):
        assert registry.models[ref].tags[LINEAGE_EVENT_ID] == f"reconcile:{report.run_id}:{ref.name}:{ref.version}"
    assert registry.models[WEIRD_1.ref].tags == {}  # the conflict is left untouched


def test_a_second_run_right_after_starts_no_copy(staging, registry, store, clock):
    first = reconcile(staging, registry, store, clock)
    second = reconcile(staging, registry, store, clock)
    assert second.run_id != first.run_id
    assert second.copied == [] and second.copying == ["churn:2", "fraud:7", "taxi:1"]
    assert registry.calls["start_copy"] == 2 and len(registry.operations) == 2
    finish_copies(registry, store, clock)
    third = reconcile(staging, registry, store, clock)
    assert third.copied == third.copying == []
    assert third.already_in_registry == ["churn:1", "churn:2", "fraud:7", "taxi:1"]


def test_versions_the_registry_holds_cost_no_per_version_request(staging, registry, store, clock):
    report = reconcile(staging, registry, store, clock)
    assert staging.calls == {"names": 1, "versions": 4}
    assert registry.calls == {"versions": 4, "start_copy": 2}
    assert registry.calls["get"] == staging.calls["get"] == 0
    # the request budget: one name listing, a version listing per name on each side, and at most two per copy
    names = len(staging.names())
    staging.reset_counts()
    registry.reset_counts()
    reconcile(staging, registry, store, clock)
    assert staging.requests + registry.requests <= 1 + 2 * names + 2 * len(report.copied)


def test_an_error_listing_one_name_does_not_stop_the_others(staging, registry, store, clock):
    staging.list_errors["churn"] = ConnectionError("reset by peer")
    report = reconcile(staging, registry, store, clock)
    assert list(report.errors) == ["churn"] and "ConnectionError" in report.errors["churn"]
    assert report.copied == ["fraud:7", "taxi:1"]
    assert store.copy(FRAUD_7.ref).state is CopyState.COPYING and store.copy(CHURN_2.ref) is None


def test_an_error_starting_one_copy_does_not_stop_the_others(staging, registry, store, clock):
    registry.start_error = TimeoutError("the registry did not answer")
    report = reconcile(staging, registry, store, clock)
    assert sorted(report.errors) == ["churn:2", "fraud:7"]
    assert report.copied == ["taxi:1"]  # no copy to start: it is tagged by the timer
    assert store.copy(CHURN_2.ref) is None and store.copy(FRAUD_7.ref) is None  # claims released
    registry.start_error = None
    assert reconcile(staging, registry, store, clock).copied == ["churn:2", "fraud:7"]


def test_a_failed_copy_is_started_again_by_the_next_run(staging, registry, store, clock):
    registry.fail_copies_with = "the import failed"
    reconcile(staging, registry, store, clock)
    finish_copies(registry, store, clock)
    assert store.copy(CHURN_2.ref).state is CopyState.COPY_FAILED
    registry.fail_copies_with = None
    assert reconcile(staging, registry, store, clock).copied == ["churn:2", "fraud:7"]


def test_tags_added_later_are_caught_by_the_next_reconcile(staging, registry, store, clock):
    # the event arrives while the model does not qualify yet
    decision = service.propagate(
        {
            "id": "e-1",
            "topic": STAGING,
            "eventType": MODEL_REGISTERED,
            "data": {"ModelName": "churn", "ModelVersion": 3},
        },
        staging_workspace_id=STAGING,
        staging=staging,
        registry=registry,
        load_policy=lambda: POLICY,
        store=store,
        source=SOURCE,
        clock=clock,
    )
    assert decision.outcome is Outcome.NOT_QUALIFIED
    # `az ml model update --set tags...`: Azure ML emits no event for it
    staging.set_tags(CHURN_3.ref, {"stage": "candidate", "accuracy": "0.93"})
    report = reconcile(staging, registry, store, clock)
    assert "churn:3" in report.copied and "churn:3" not in report.not_qualified
    finish_copies(registry, store, clock)
    held = registry.models[CHURN_3.ref]
    assert held.tags["accuracy"] == "0.93"
    assert held.tags[LINEAGE_EVENT_ID] == f"reconcile:{report.run_id}:churn:3"
    assert [d.outcome for d in store.decisions(CHURN_3.ref)] == [
        Outcome.NOT_QUALIFIED,
        Outcome.COPY_STARTED,
        Outcome.COPIED,
    ]


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real-run"])
def test_a_registry_version_copied_from_elsewhere_is_a_conflict_not_already_in_registry(
    staging, registry, store, clock, dry_run
):
    foreign = {LINEAGE_SOURCE_WORKSPACE: STAGING.replace("staging", "other"), LINEAGE_SOURCE_MODEL: "fraud:7"}
    registry.models[FRAUD_7.ref] = replace(FRAUD_7, tags=foreign)
    report = reconcile(staging, registry, store, clock, dry_run=dry_run)
    # as an event for it would say (registry_conflict): the registry holds it, but not as our copy
    assert "fraud:7" not in report.already_in_registry
    assert "workspaces/other" in report.conflicts.get("fraud:7", "")
    assert registry.models[FRAUD_7.ref].tags == foreign and store.copy(FRAUD_7.ref) is None


def test_a_real_run_needs_a_store(staging, registry, clock):
    with pytest.raises(ValueError, match="needs the promotion store"):
        reconcile(staging, registry, None, clock)
    assert registry.calls["start_copy"] == 0


# --- backtest ---------------------------------------------------------------------------------------

CANDIDATE = Policy.from_document({"share_to_registry": {"thresholds": [{"tag": "accuracy", "op": ">=", "value": 0.9}]}})


def test_backtest_counts_each_policy_and_lists_changed_verdicts_with_their_rules():
    staging = FakeWorkspace(
        model("a", "1", {"stage": "candidate", "accuracy": "0.95"}),  # admitted by both
        model("b", "1", {"stage": "candidate", "accuracy": "0.85"}),  # admitted now, refused by the candidate
        model("c", "1", {"stage": "archived", "accuracy": "0.99"}),  # refused now, admitted by the candidate
        model("d", "1", {"stage": "archived", "accuracy": "0.5"}),  # refused by both, for other reasons
        model("e", "1", {"stage": "archived", "accuracy": "0.95"}),  # refused now, admitted by the candidate
    )
    before = {ref: version for ref, version in staging.models.items()}
    report = service.backtest(current=POLICY, candidate=CANDIDATE, staging=staging)
    assert report.versions == 5
    assert report.admitted == {"current": 2, "candidate": 3}
    assert report.refused == {"current": 3, "candidate": 2}
    changes = {change.model: change for change in report.changes}
    assert sorted(changes) == ["b:1", "c:1", "d:1", "e:1"]
    assert (changes["b:1"].admitted_before, changes["b:1"].admitted_after) == (True, False)
    assert changes["b:1"].rules_now_failing == ("thresholds[0]: tag 'accuracy' = 0.85, needs >= 0.9",)
    assert changes["b:1"].rules_now_passing == ()
    assert (changes["c:1"].admitted_before, changes["c:1"].admitted_after) == (False, True)
    assert changes["c:1"].rules_now_passing == ("require_tags: tag 'stage' is 'archived', needs 'candidate'",)
    assert changes["c:1"].rules_now_failing == ()
    assert (changes["d:1"].admitted_before, changes["d:1"].admitted_after) == (False, False)
    assert changes["d:1"].rules_now_failing == ("thresholds[0]: tag 'accuracy' = 0.5, needs >= 0.9",)
    assert report.to_json()["changes"][0]["model"] == "b:1"
    assert report.current_digest == POLICY.digest and report.candidate_digest == CANDIDATE.digest
    # it writes nothing and reads only the listings
    assert staging.models == before
    assert set(staging.calls) == {"names", "versions"}


def test_backtest_of_the_same_policy_changes_nothing(staging):
    report = service.backtest(current=POLICY, candidate=POLICY, staging=staging)
    assert report.changes == [] and report.admitted["current"] == report.admitted["candidate"] == 5
