"""on_model_registered with the binding objects the host passes: a func.EventGridEvent, or a func.CloudEvent for a
delivery in the CloudEvents schema (azure-functions 1.25+ picks the type from the payload)."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import azure.functions as func
import pytest

from promotion.domain import ModelRef
from tests.functions.conftest import (
    MODEL_REGISTERED,
    ROOT,
    backend,
    cloud_event,
    grid_event,
    stage,
    timer,
    use_policy,
    user_function,
)

REF = ModelRef("taxi-fare", "1")
SHARED_SAMPLES = ROOT.parent / "shared" / "samples"


def staging_id(local_app):
    return local_app.settings().staging_workspace_id


def as_binding(raw):
    """The object the Functions host builds for one event of a delivery, in either schema."""
    if "specversion" in raw:
        return func.CloudEvent(
            id=raw["id"],
            source=raw["source"],
            type=raw["type"],
            specversion=raw["specversion"],
            subject=raw.get("subject"),
            time=datetime.now(timezone.utc),
            data=raw["data"],
        )
    return func.EventGridEvent(
        id=raw["id"],
        data=raw["data"],
        topic=raw["topic"],
        subject=raw["subject"],
        event_type=raw["eventType"],
        event_time=datetime.now(timezone.utc),
        data_version=raw.get("dataVersion", ""),
    )


def handle(event):
    user_function("on_model_registered")(event)  # the wrapper asserts the handler returned None


def outcomes(local_app, ref=REF):
    return [(decision.event_id, decision.outcome.value) for decision in local_app.store().decisions(ref)]


@pytest.fixture
def staged(local_app):
    return stage(local_app, REF)


@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
def test_a_qualifying_model_starts_its_copy_and_the_timer_finishes_it(local_app, staged, schema):
    make = grid_event if schema == "eventgrid" else cloud_event
    where = {"topic": staging_id(local_app)} if schema == "eventgrid" else {"source": staging_id(local_app)}
    handle(make(REF, event_id="event-1", **where))
    store = local_app.store()
    copy = store.copy(REF)
    assert copy.state.value == "copying" and copy.cause == "event-1"
    assert outcomes(local_app) == [("event-1", "copy_started")]
    held = backend(local_app).registry.get(REF)
    assert held is not None and "promotion.event_id" not in held.tags  # the lineage comes with the timer
    user_function("advance_registry_copies")(timer())
    assert store.copy(REF).state.value == "copied"
    copied = backend(local_app).registry.get(REF)
    assert copied.tags["promotion.event_id"] == "event-1"
    assert copied.tags["promotion.source_model"] == "taxi-fare:1"
    assert copied.tags["promotion.policy_digest"] == local_app.policy().digest
    assert copied.tags["stage"] == "candidate" and copied.description == "taxi fares"
    assert [outcome for _, outcome in outcomes(local_app)] == ["copy_started", "copied"]


def test_both_schemas_are_treated_the_same(local_app):
    results = {}
    for schema, version in (("eventgrid", "1"), ("cloudevents", "2")):
        ref = ModelRef("taxi-fare", version)
        stage(local_app, ref)
        if schema == "eventgrid":
            handle(grid_event(ref, topic=staging_id(local_app), event_id=f"e-{version}", version=int(version)))
        else:
            handle(cloud_event(ref, source=staging_id(local_app), event_id=f"e-{version}", version=int(version)))
        user_function("advance_registry_copies")(timer())
        copy = local_app.store().copy(ref)
        tags = backend(local_app).registry.get(ref).tags
        results[schema] = (
            copy.state.value,
            [d.outcome.value for d in local_app.store().decisions(ref)],
            {key: value for key, value in tags.items() if key not in ("promotion.event_id", "promotion.source_model")},
            (tags["promotion.event_id"], tags["promotion.source_model"]),
        )
    assert results["eventgrid"][:3] == results["cloudevents"][:3]
    assert results["eventgrid"][3] == ("e-1", "taxi-fare:1")
    assert results["cloudevents"][3] == ("e-2", "taxi-fare:2")


@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
def test_an_event_from_another_workspace_copies_nothing_and_writes_nothing(local_app, staged, schema, caplog):
    other = staging_id(local_app).replace("ws-staging", "ws-production")
    kelvin = staging_id(local_app).replace("workspaces", "wor\u212aspaces")  # a non-ASCII look-alike
    for event_id, topic in (("e-other", other), ("e-kelvin", kelvin)):
        event = (
            grid_event(REF, topic=topic, event_id=event_id)
            if schema == "eventgrid"
            else cloud_event(REF, source=topic, event_id=event_id)
        )
        handle(event)
    assert backend(local_app).registry.get(REF) is None
    assert local_app.store().copy(REF) is None and outcomes(local_app) == []
    assert caplog.text.count("refused_source") == 2


def test_the_topic_compares_case_insensitively(local_app, staged):
    handle(grid_event(REF, topic=staging_id(local_app).upper() + "/", event_id="e-upper"))
    assert outcomes(local_app) == [("e-upper", "copy_started")]


@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
def test_redelivery_while_the_copy_is_in_flight_starts_nothing_new(local_app, staged, schema):
    make = grid_event if schema == "eventgrid" else cloud_event
    where = {"topic": staging_id(local_app)} if schema == "eventgrid" else {"source": staging_id(local_app)}
    for _ in range(3):
        handle(make(REF, event_id="event-1", **where))
    assert outcomes(local_app) == [("event-1", "copy_started")]
    handle(make(REF, event_id="event-2", **where))  # another event for the same version
    assert outcomes(local_app) == [("event-1", "copy_started"), ("event-2", "copy_in_progress")]
    user_function("advance_registry_copies")(timer())
    handle(make(REF, event_id="event-1", **where))
    assert ("event-1", "copy_started") in outcomes(local_app)
    assert [m.ref for m in backend(local_app).registry.list()] == [REF]
    assert len(local_app.store().copies()) == 1


def test_a_model_that_does_not_qualify_is_recorded_with_the_failed_rules(local_app):
    stage(local_app, REF, tags={"stage": "dev", "accuracy": "0.4"})
    handle(cloud_event(REF, source=staging_id(local_app), event_id="e-weak"))
    [decision] = local_app.store().decisions(REF)
    assert decision.outcome.value == "not_qualified"
    assert any("require_tags" in reason for reason in decision.reasons)
    assert any("thresholds[0]" in reason for reason in decision.reasons)
    assert backend(local_app).registry.get(REF) is None and local_app.store().copy(REF) is None


def test_a_model_gone_from_staging_is_recorded(local_app):
    handle(grid_event(REF, topic=staging_id(local_app), event_id="e-gone"))
    assert outcomes(local_app) == [("e-gone", "not_in_staging")]


def _raw_event(schema, local_app, event_id, data, *, subject, event_type=MODEL_REGISTERED):
    if schema == "eventgrid":
        return func.EventGridEvent(
            id=event_id,
            data=data,
            topic=staging_id(local_app),
            subject=subject,
            event_type=event_type,
            event_time=None,
            data_version="",
        )
    return func.CloudEvent(
        id=event_id, source=staging_id(local_app), type=event_type, specversion="1.0", subject=subject, data=data
    )


@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
def test_malformed_and_other_events_return_normally(local_app, staged, caplog, schema):
    caplog.set_level(logging.INFO, logger="promotion")
    good = {"ModelName": "taxi-fare", "ModelVersion": "1"}
    events = [
        _raw_event(schema, local_app, "e-run", good, subject="models/taxi-fare:1", event_type="RunCompleted"),
        _raw_event(schema, local_app, "e-path", {"ModelName": "../../etc/passwd", "ModelVersion": 1}, subject=""),
        _raw_event(schema, local_app, "e-list", ["not", "an object"], subject=""),
        _raw_event(schema, local_app, "e-subject", good, subject="models/other:1"),
        _raw_event(schema, local_app, "e-tags", {**good, "ModelTags": ["x"]}, subject="models/taxi-fare:1"),
        _raw_event(schema, local_app, "", good, subject="models/taxi-fare:1"),
    ]
    for event in events:
        handle(event)  # returns normally: redelivery cannot fix any of these
    assert backend(local_app).registry.get(REF) is None and local_app.store().copy(REF) is None
    assert caplog.text.count(": malformed") == 5 and "ignored_event_type" in caplog.text


def test_a_missing_policy_file_raises_so_event_grid_retries(local_app, staged, monkeypatch, tmp_path):
    missing = tmp_path / "nowhere" / "policy.json"
    monkeypatch.setenv("PROMOTION_POLICY_FILE", str(missing))
    local_app.reset()
    with pytest.raises(ValueError, match="policy file not found"):
        handle(grid_event(REF, topic=staging_id(local_app)))
    assert backend(local_app).registry.get(REF) is None and local_app.store().copy(REF) is None


def test_a_policy_edit_applies_to_the_next_event(local_app, tmp_path, monkeypatch):
    use_policy(monkeypatch, tmp_path, share={"thresholds": [{"tag": "accuracy", "op": ">=", "value": 0.95}]})
    stage(local_app, REF)
    handle(grid_event(REF, topic=staging_id(local_app), event_id="e-strict"))
    assert outcomes(local_app) == [("e-strict", "not_qualified")]


# --- the samples --------------------------------------------------------------------------------------


def _sample_events(path: Path, staging_workspace_id: str):
    """The sample's events, with the docs' placeholders pointing at this app's staging workspace."""
    raw = json.loads(path.read_text())
    for event in raw:
        for key in ("topic", "source"):
            if key in event and "{" in event[key]:
                event[key] = staging_workspace_id
    return raw


def _handle_sample(local_app, path):
    events = _sample_events(path, staging_id(local_app))
    refs = []
    for raw in events:
        ref = ModelRef.parse(raw["data"]["ModelName"], raw["data"]["ModelVersion"])
        if backend(local_app).staging.get(ref) is None:
            stage(local_app, ref)
        handle(as_binding(raw))
        refs.append((raw["id"], ref))
    user_function("advance_registry_copies")(timer())
    for event_id, ref in refs:
        assert local_app.store().copy(ref).state.value == "copied"
        assert backend(local_app).registry.get(ref).tags["promotion.event_id"] == event_id
    return events


def test_the_repository_sample_event_copies_the_model(local_app):
    [raw] = _handle_sample(local_app, ROOT / "samples" / "model-registered.eventgrid.json")
    assert isinstance(raw["data"]["ModelVersion"], int)  # the docs' sample sends a number


@pytest.mark.parametrize("name", ["model-registered.eventgrid.json", "model-registered.cloudevents.json"])
def test_the_shared_samples_copy_the_model(local_app, name):
    path = SHARED_SAMPLES / name
    if not path.is_file():
        pytest.skip(
            f"Azure ML's documented sample event ({name}) is not available here; the app's own copy of it is "
            "tested by test_the_repository_sample_event_copies_the_model"
        )
    _handle_sample(local_app, path)
