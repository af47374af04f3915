"""The timer-triggered functions, called with real azure.functions.timer.TimerRequest objects:
advance_registry_copies, reconcile_registry, publish_lifecycle_events and advance_deployments."""

from __future__ import annotations

import json
import logging

import pytest

from promotion.domain import ModelRef
from promotion.ports import CopyProgress, CopyStatus
from promotion.triggers import drift, registry
from tests.functions.conftest import (
    FUNCTIONS,
    backend,
    grid_event,
    share,
    stage,
    timer,
    use_policy,
    user_function,
)
from tests.functions.test_api import approve, get, request

REF = ModelRef("taxi-fare", "1")


def tick(name):
    user_function(name)(timer())


def copy_state(local_app, ref=REF):
    copy = local_app.store().copy(ref)
    return copy.state.value if copy else None


def started(local_app, ref=REF, event_id="event-1"):
    stage(local_app, ref)
    user_function("on_model_registered")(
        grid_event(ref, topic=local_app.settings().staging_workspace_id, event_id=event_id)
    )
    assert copy_state(local_app, ref) == "copying"


# --- advance_registry_copies ------------------------------------------------------------------------


def test_advance_registry_copies_finishes_every_copy_in_flight(local_app):
    for version in ("1", "2"):
        started(local_app, ModelRef("taxi-fare", version), event_id=f"event-{version}")
    tick("advance_registry_copies")
    for version in ("1", "2"):
        ref = ModelRef("taxi-fare", version)
        assert copy_state(local_app, ref) == "copied"
        assert backend(local_app).registry.get(ref).tags["promotion.event_id"] == f"event-{version}"
    events = local_app.store().events()
    assert [event.type.value for event in events] == ["ModelPromotion.CopiedToRegistry"] * 2


def test_advance_registry_copies_twice_changes_nothing_more(local_app):
    started(local_app)
    tick("advance_registry_copies")
    decisions, events = local_app.store().decisions(REF), local_app.store().events()
    tick("advance_registry_copies")
    assert local_app.store().decisions(REF) == decisions and local_app.store().events() == events


def test_advance_registry_copies_records_a_failed_copy_and_goes_on_with_the_others(local_app, monkeypatch):
    started(local_app, ModelRef("taxi-fare", "1"))
    started(local_app, ModelRef("taxi-fare", "2"), event_id="event-2")
    registry_models = backend(local_app).registry
    real = registry_models.copy_status

    def status(operation):
        if operation.endswith("taxi-fare:1"):
            return CopyStatus(CopyProgress.FAILED, "quota exceeded in the registry's region")
        return real(operation)

    monkeypatch.setattr(registry_models, "copy_status", status)
    tick("advance_registry_copies")
    failed = local_app.store().copy(ModelRef("taxi-fare", "1"))
    assert failed.state.value == "copy_failed" and failed.error == "quota exceeded in the registry's region"
    assert copy_state(local_app, ModelRef("taxi-fare", "2")) == "copied"
    [event] = [e for e in local_app.store().events() if e.type.value == "ModelPromotion.RegistryCopyFailed"]
    assert event.data["reason"] == "quota exceeded in the registry's region"


def test_advance_registry_copies_times_out_a_copy_that_never_finishes(local_app, monkeypatch, app_clock):
    monkeypatch.setenv("PROMOTION_COPY_TIMEOUT_MINUTES", "0.005")  # 300 ms
    local_app.reset()
    started(local_app)
    registry_models = backend(local_app).registry
    monkeypatch.setattr(registry_models, "copy_status", lambda operation: CopyStatus(CopyProgress.RUNNING))
    tick("advance_registry_copies")
    assert copy_state(local_app) == "copying"
    app_clock.advance(seconds=0.35)
    tick("advance_registry_copies")
    failed = local_app.store().copy(REF)
    assert failed.state.value == "copy_failed" and "PROMOTION_COPY_TIMEOUT_MINUTES" in failed.error


def test_advance_registry_copies_survives_an_error_on_one_copy(local_app, monkeypatch, caplog):
    started(local_app, ModelRef("taxi-fare", "1"))
    started(local_app, ModelRef("taxi-fare", "2"), event_id="event-2")
    registry_models = backend(local_app).registry
    real = registry_models.copy_status

    def status(operation):
        if operation.endswith("taxi-fare:1"):
            raise ConnectionError("registry unreachable")
        return real(operation)

    monkeypatch.setattr(registry_models, "copy_status", status)
    tick("advance_registry_copies")  # returns normally
    assert copy_state(local_app, ModelRef("taxi-fare", "1")) == "copying"
    assert copy_state(local_app, ModelRef("taxi-fare", "2")) == "copied"
    assert "could not be advanced" in caplog.text


# --- reconcile_registry -----------------------------------------------------------------------------


def test_reconcile_registry_copies_what_events_missed(local_app):
    stage(local_app, ModelRef("taxi-fare", "1"))  # no event was delivered
    stage(local_app, ModelRef("taxi-fare", "2"), tags={"stage": "dev", "accuracy": "0.4"})
    tick("reconcile_registry")
    assert copy_state(local_app, ModelRef("taxi-fare", "1")) == "copying"
    [decision] = local_app.store().decisions(ModelRef("taxi-fare", "1"))
    assert decision.outcome.value == "copy_started" and decision.event_id.startswith("reconcile:")
    assert decision.event_id.endswith(":taxi-fare:1")
    assert copy_state(local_app, ModelRef("taxi-fare", "2")) is None
    tick("advance_registry_copies")
    assert copy_state(local_app, ModelRef("taxi-fare", "1")) == "copied"
    tick("reconcile_registry")  # a second run starts nothing
    assert len(local_app.store().copies()) == 1
    assert [d.outcome.value for d in local_app.store().decisions(ModelRef("taxi-fare", "1"))] == [
        "copy_started",
        "copied",
    ]


def test_reconcile_registry_copies_a_model_tagged_after_it_was_registered(local_app):
    ref = ModelRef("taxi-fare", "1")
    stage(local_app, ref, tags={"stage": "dev", "accuracy": "0.91"})
    user_function("on_model_registered")(grid_event(ref, topic=local_app.settings().staging_workspace_id))
    assert copy_state(local_app, ref) is None  # refused when registered
    backend(local_app).staging.set_tags(ref, {"stage": "candidate"})  # no event, as in Azure
    tick("reconcile_registry")
    tick("advance_registry_copies")
    assert copy_state(local_app, ref) == "copied"


def test_the_reconcile_schedule_is_the_setting_read_at_indexing():
    trigger = json.loads(FUNCTIONS["reconcile_registry"].get_function_json())["bindings"][0]
    assert trigger["type"] == "timerTrigger" and trigger["schedule"] == registry.reconcile_schedule()


def test_the_reconcile_schedule_is_hourly_by_default(monkeypatch):
    monkeypatch.delenv("PROMOTION_RECONCILE_SCHEDULE", raising=False)
    assert registry.reconcile_schedule() == "0 0 * * * *"
    monkeypatch.setenv("PROMOTION_RECONCILE_SCHEDULE", "   ")
    assert registry.reconcile_schedule() == "0 0 * * * *"


@pytest.mark.parametrize("schedule", ["0 */15 * * * *", "0 30 2 * * 1-5", "  0  0 */6 * * *  "])
def test_a_valid_reconcile_schedule_is_used(monkeypatch, schedule):
    monkeypatch.setenv("PROMOTION_RECONCILE_SCHEDULE", schedule)
    assert registry.reconcile_schedule() == " ".join(schedule.split())


@pytest.mark.parametrize("schedule", ["every-90-minutes", "0 * * * *", "0 0 * * * * 7", "@every 5m"])
def test_an_invalid_reconcile_schedule_keeps_the_default_and_says_why(monkeypatch, caplog, schedule):
    monkeypatch.setenv("PROMOTION_RECONCILE_SCHEDULE", schedule)
    with caplog.at_level(logging.ERROR, logger="promotion"):
        assert registry.reconcile_schedule() == "0 0 * * * *"
    assert "PROMOTION_RECONCILE_SCHEDULE" in caplog.text
    assert schedule not in caplog.text  # the setting is named, its value not shown


# --- publish_lifecycle_events -----------------------------------------------------------------------


def test_publish_lifecycle_events_without_an_endpoint_keeps_the_outbox(local_app):
    share(local_app, REF)
    tick("publish_lifecycle_events")
    [event] = local_app.store().events(unpublished_only=True)
    assert event.type.value == "ModelPromotion.CopiedToRegistry"


def test_publish_lifecycle_events_sends_the_outbox(local_app, eventgrid_receiver, monkeypatch):
    share(local_app, REF)  # recorded while publishing is off
    monkeypatch.setenv("PROMOTION_EVENTS_ENDPOINT", eventgrid_receiver.url)
    monkeypatch.setenv("PROMOTION_EVENTS_KEY", "key")
    local_app.reset()
    tick("publish_lifecycle_events")
    assert [event["type"] for event in eventgrid_receiver.delivered] == ["ModelPromotion.CopiedToRegistry"]
    assert local_app.store().events(unpublished_only=True) == []


def test_publish_lifecycle_events_with_a_misconfigured_topic_raises_naming_the_setting(local_app, monkeypatch):
    monkeypatch.setenv("PROMOTION_EVENTS_ENDPOINT", "http://topic.example/api/events?sig=secret-sig")  # no key
    local_app.reset()
    with pytest.raises(ValueError, match="PROMOTION_EVENTS_ENDPOINT") as raised:
        tick("publish_lifecycle_events")
    assert "secret-sig" not in str(raised.value)


# --- advance_deployments ----------------------------------------------------------------------------


def test_advance_deployments_with_nothing_to_do_returns(local_app):
    tick("advance_deployments")


def test_advance_deployments_expires_stale_requests(local_app, tmp_path, monkeypatch, app_clock):
    use_policy(monkeypatch, tmp_path, approval_ttl_hours=0.0001)  # 360 ms
    share(local_app, REF)
    _, created = request()
    tick("advance_deployments")
    assert get(created["id"])[1]["state"] == "pending_approval"
    app_clock.advance(seconds=0.4)
    tick("advance_deployments")
    expired = get(created["id"])[1]
    assert expired["state"] == "expired" and expired["history"][-1]["actor"] == "advance_deployments"
    types = [event.type.value for event in local_app.store().events()]
    assert types[-1] == "ModelPromotion.Expired"
    assert approve(created["id"])[0] == 409


def test_advance_deployments_starts_a_lost_job(local_app, tmp_path, monkeypatch, app_clock):
    use_policy(monkeypatch, tmp_path, job_grace_minutes=0.001)
    share(local_app, REF)
    _, created = request()
    approve(created["id"])  # the queue message is lost
    app_clock.advance(seconds=0.1)
    tick("advance_deployments")
    assert get(created["id"])[1]["state"] == "deployed"


def test_the_drift_schedule_is_the_setting_read_at_indexing_and_hourly_by_default(monkeypatch):
    trigger = json.loads(FUNCTIONS["detect_drift"].get_function_json())["bindings"][0]
    assert trigger["type"] == "timerTrigger" and trigger["schedule"] == drift.drift_schedule()
    monkeypatch.delenv("PROMOTION_DRIFT_SCHEDULE", raising=False)
    assert drift.drift_schedule() == "0 0 * * * *"
    monkeypatch.setenv("PROMOTION_DRIFT_SCHEDULE", "  0 */15 * * * * ")
    assert drift.drift_schedule() == "0 */15 * * * *"


@pytest.mark.parametrize("schedule", ["every-90-minutes", "0 * * * *", "@every 5m"])
def test_an_invalid_drift_schedule_keeps_the_default_and_says_why(monkeypatch, caplog, schedule):
    monkeypatch.setenv("PROMOTION_DRIFT_SCHEDULE", schedule)
    with caplog.at_level(logging.ERROR, logger="promotion"):
        assert drift.drift_schedule() == "0 0 * * * *"
    assert "PROMOTION_DRIFT_SCHEDULE" in caplog.text and "detect_drift runs hourly" in caplog.text
    assert schedule not in caplog.text


def test_detect_drift_records_a_deployment_made_by_hand_and_its_end(local_app):
    from tests.functions.test_api import deployed, status_view

    deployed(local_app, "1")
    production = backend(local_app).production
    production.deploy_by_hand("taxi-fare-prod", "hotfix", "azureml://registries/r/models/taxi-fare/versions/1")
    tick("detect_drift")
    [finding] = local_app.store().drift_findings()
    assert (finding.kind.value, finding.deployment, finding.actual["model"]) == (
        "unapproved_model",
        "hotfix",
        "taxi-fare:1",
    )
    _, status = status_view()
    assert [f["deployment"] for f in status["drift"]] == ["hotfix"]  # the status view of taxi-fare:1 shows it
    tick("detect_drift")
    production.delete_deployment("taxi-fare-prod", "hotfix")
    tick("detect_drift")
    assert local_app.store().drift_findings() == []
    types = [e.type.value for e in local_app.store().events() if "Drift" in e.type.value]
    assert types == ["ModelPromotion.DriftDetected", "ModelPromotion.DriftResolved"]
