import json
import logging
from datetime import datetime, timezone

import azure.functions as func
import pytest

from promotion.adapters.local import LocalBackend
from promotion.domain import ModelRef, ModelVersion
from tests.functions.conftest import ROOT, SEED_MODEL, user_function

REF = ModelRef("taxi-fare", "1")


def grid_event(raw):
    return func.EventGridEvent(
        id=raw["id"],
        data=raw["data"],
        topic=raw["topic"],
        subject=raw["subject"],
        event_type=raw["eventType"],
        event_time=datetime.now(timezone.utc),
        data_version=raw.get("dataVersion", ""),
    )


@pytest.fixture
def sample_event():
    [raw] = json.loads((ROOT / "samples" / "model-registered.eventgrid.json").read_text())
    return raw


@pytest.fixture
def staging_model(local_app):
    backend = LocalBackend(local_app.settings())
    backend.staging.register(
        ModelVersion(REF, "mlflow_model", {"stage": "candidate", "accuracy": "0.91"}, {}, "taxi"), SEED_MODEL
    )
    return backend


def test_the_sample_event_copies_the_model_into_the_registry(staging_model, sample_event, local_app):
    user_function("on_model_registered")(grid_event(sample_event))
    copied = staging_model.registry.get(REF)
    assert copied.tags["promotion.event_id"] == sample_event["id"]
    assert copied.tags["promotion.policy_digest"] == local_app.policy().digest
    [decision] = local_app.store().decisions(REF)
    assert decision.outcome.value == "copied"


def test_redelivery_acknowledges_without_a_second_copy(staging_model, sample_event, local_app):
    for _ in range(3):
        user_function("on_model_registered")(grid_event(sample_event))
    assert [m.ref for m in staging_model.registry.list()] == [REF]
    assert len(local_app.store().decisions(REF)) == 1


def test_an_event_from_another_workspace_copies_nothing(staging_model, sample_event, caplog):
    sample_event["topic"] = sample_event["topic"].replace("ws-staging", "ws-production")
    user_function("on_model_registered")(grid_event(sample_event))
    assert staging_model.registry.list() == []
    assert "refused_source" in caplog.text


def test_malformed_and_other_events_return_normally(staging_model, sample_event, caplog):
    caplog.set_level(logging.INFO, logger="promotion")
    sample_event["data"] = {"ModelName": "../../etc/passwd", "ModelVersion": 1}
    sample_event["subject"] = ""
    user_function("on_model_registered")(grid_event(sample_event))
    sample_event["eventType"] = "Microsoft.MachineLearningServices.RunCompleted"
    user_function("on_model_registered")(grid_event(sample_event))
    assert staging_model.registry.list() == []
    assert "malformed" in caplog.text and "ignored_event_type" in caplog.text


def test_a_missing_policy_file_raises_so_event_grid_retries(staging_model, sample_event, monkeypatch, local_app):
    monkeypatch.setenv("PROMOTION_POLICY_FILE", "/nowhere/policy.json")
    local_app.reset()
    with pytest.raises(ValueError, match="/nowhere/policy.json: policy file not found"):
        user_function("on_model_registered")(grid_event(sample_event))
    assert staging_model.registry.list() == []
