from dataclasses import replace

import pytest

from promotion import service
from promotion.domain import (
    LINEAGE_EVENT_ID,
    LINEAGE_POLICY_DIGEST,
    LINEAGE_SOURCE_MODEL,
    LINEAGE_SOURCE_WORKSPACE,
    ModelRef,
    ModelVersion,
    Outcome,
)
from promotion.events import MODEL_REGISTERED
from promotion.policy import Policy, PolicyError
from tests.unit.fakes import FakeRegistry, FakeWorkspace, InMemoryPromotionStore

STAGING = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/staging"
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


def event(event_id="e-1", topic=STAGING, **data):
    return {
        "id": event_id,
        "topic": topic,
        "subject": f"models/{REF}",
        "eventType": MODEL_REGISTERED,
        "data": {"ModelName": REF.name, "ModelVersion": 3, **data},
    }


@pytest.fixture
def world():
    return FakeWorkspace(GOOD), FakeRegistry(), InMemoryPromotionStore()


def propagate(world, raw, policy=POLICY):
    staging, registry, store = world
    return service.propagate(
        raw, staging_workspace_id=STAGING, staging=staging, registry=registry, load_policy=lambda: policy, store=store
    )


def test_a_qualifying_model_is_copied_with_its_metadata_and_lineage(world):
    decision = propagate(world, event())
    _, registry, store = world
    assert decision.outcome is Outcome.COPIED
    copied = registry.models[REF]
    assert (
        copied.type == "mlflow_model" and copied.description == "a churn model" and copied.properties == {"run": "r1"}
    )
    assert copied.tags["stage"] == "candidate"
    assert copied.tags[LINEAGE_SOURCE_MODEL] == "churn:3"
    assert copied.tags[LINEAGE_EVENT_ID] == "e-1"
    assert copied.tags[LINEAGE_POLICY_DIGEST] == POLICY.digest
    assert store.decisions(REF) == [decision]


def test_the_model_is_re_read_from_staging_not_trusted_from_the_event(world):
    staging, registry, _ = world
    staging.models[REF] = replace(GOOD, tags={"stage": "archived", "accuracy": "0.9"})
    decision = propagate(world, event(ModelTags={"stage": "candidate"}))
    assert decision.outcome is Outcome.NOT_QUALIFIED
    assert decision.reasons == ("require_tags: tag 'stage' is 'archived', needs 'candidate'",)
    assert REF not in registry.models


def test_duplicates_and_replays_end_with_one_copy_and_cost_one_read(world):
    staging, registry, store = world
    propagate(world, event("e-1"))
    reads_before = staging.reads + registry.reads
    again = propagate(world, event("e-1"))
    replay = propagate(world, event("e-2"))
    assert again.outcome is replay.outcome is Outcome.ALREADY_IN_REGISTRY
    assert registry.copies == 1
    assert staging.reads + registry.reads - reads_before == 2  # one registry read per duplicate, no staging read
    assert [d.event_id for d in store.decisions(REF)] == ["e-1", "e-2"]  # the redelivery of e-1 is recorded once


def test_losing_a_copy_race_is_success(world):
    _, registry, _ = world
    winner = replace(GOOD, tags={**GOOD.tags, LINEAGE_SOURCE_WORKSPACE: STAGING, LINEAGE_SOURCE_MODEL: "churn:3"})
    registry.copied_by_someone_else_first = winner
    decision = propagate(world, event())
    assert decision.outcome is Outcome.ALREADY_IN_REGISTRY
    assert registry.models[REF] == winner and registry.copies == 0


def test_a_race_winner_that_stopped_before_tagging_gets_its_lineage(world):
    _, registry, _ = world
    registry.copied_by_someone_else_first = replace(GOOD, tags={})
    decision = propagate(world, event())
    assert decision.outcome is Outcome.COPIED and "without lineage tags" in decision.reasons[0]
    assert registry.models[REF].tags[LINEAGE_EVENT_ID] == "e-1" and registry.copies == 0


def test_an_untagged_registry_copy_is_completed_on_the_next_event(world):
    _, registry, _ = world
    registry.models[REF] = replace(GOOD, tags={"stage": "candidate"})
    decision = propagate(world, event("e-9"))
    assert decision.outcome is Outcome.COPIED
    assert registry.models[REF].tags[LINEAGE_EVENT_ID] == "e-9" and registry.copies == 0
    assert propagate(world, event("e-10")).outcome is Outcome.ALREADY_IN_REGISTRY


def test_events_from_another_workspace_are_refused_and_not_recorded(world):
    _, registry, store = world
    decision = propagate(world, event(topic=STAGING.replace("staging", "prod")))
    assert decision.outcome is Outcome.REFUSED_SOURCE
    assert registry.reads == 0 and not registry.models and not store.recorded


def test_topic_comparison_ignores_case(world):
    assert propagate(world, event(topic=STAGING.upper())).outcome is Outcome.COPIED


def test_a_model_gone_from_staging_is_a_permanent_outcome(world):
    staging, registry, _ = world
    staging.models.clear()
    assert propagate(world, event()).outcome is Outcome.NOT_IN_STAGING
    assert not registry.models


def test_malformed_and_foreign_events_are_acknowledged_without_reads(world):
    staging, registry, store = world
    malformed = propagate(
        world,
        {"id": "x", "eventType": MODEL_REGISTERED, "topic": STAGING, "data": {"ModelName": "a/b", "ModelVersion": 1}},
    )
    other = propagate(world, {"id": "y", "eventType": "Microsoft.MachineLearningServices.RunCompleted", "data": {}})
    assert malformed.outcome is Outcome.MALFORMED and "invalid model name" in malformed.reasons[0]
    assert other.outcome is Outcome.IGNORED_EVENT_TYPE
    assert staging.reads == registry.reads == 0 and not store.recorded


def test_a_registry_version_copied_from_elsewhere_is_left_alone(world):
    _, registry, _ = world
    elsewhere = {LINEAGE_SOURCE_WORKSPACE: STAGING.replace("staging", "other"), LINEAGE_SOURCE_MODEL: "churn:3"}
    registry.models[REF] = replace(GOOD, tags=elsewhere)
    decision = propagate(world, event())
    assert decision.outcome is Outcome.REGISTRY_CONFLICT and "workspaces/other" in decision.reasons[0]
    assert registry.models[REF].tags == elsewhere


def test_an_untagged_registry_version_of_another_type_is_left_alone(world):
    _, registry, _ = world
    registry.models[REF] = replace(GOOD, type="custom_model", tags={"uploaded": "by hand"})
    decision = propagate(world, event())
    assert decision.outcome is Outcome.REGISTRY_CONFLICT and "as a custom_model" in decision.reasons[0]
    assert registry.models[REF].tags == {"uploaded": "by hand"}


def test_transient_faults_raise_so_event_grid_redelivers(world):
    staging, registry, store = world

    class Throttled(Exception):
        status_code = 429

    def throttled(ref):
        raise Throttled("429 Too Many Requests")

    registry.get = throttled
    with pytest.raises(Throttled):
        propagate(world, event())
    assert not store.recorded


def test_a_broken_policy_raises_so_the_event_waits_for_a_fix(world):
    def broken():
        raise PolicyError("promotion-policy.json: not valid JSON")

    staging, registry, store = world
    with pytest.raises(PolicyError):
        service.propagate(
            event(), staging_workspace_id=STAGING, staging=staging, registry=registry, load_policy=broken, store=store
        )
    assert not registry.models
