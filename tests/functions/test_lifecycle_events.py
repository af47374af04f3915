"""Lifecycle events out (issue 8): the real azure-eventgrid client posts CloudEvents batches over real HTTP to a
receiver on 127.0.0.1, from the transactional outbox, through the registered functions."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time

import azure.functions as func
import pytest

from promotion import service, wiring
from promotion.domain import ModelRef
from tests.functions.conftest import (
    ROOT,
    Output,
    grid_event,
    http,
    identity,
    share,
    stage,
    timer,
    use_policy,
    user_function,
)

KEY = "test-access-key-0123456789"
REF = ModelRef("taxi-fare", "1")
ALICE = identity("alice@contoso.com", "11111111-1111-1111-1111-111111111111")
CAROL = identity("carol@contoso.com", "33333333-3333-3333-3333-333333333333")
FLOW_TYPES = [
    "ModelPromotion.CopiedToRegistry",
    "ModelPromotion.ApprovalRequested",
    "ModelPromotion.Approved",
    "ModelPromotion.DeploymentStarted",
    "ModelPromotion.Deployed",
]
COMMON_DATA = {"model", "promotion_id", "state", "actor", "comment", "at"}


@pytest.fixture
def publishing(local_app, eventgrid_receiver, monkeypatch):
    """The local app publishing to the receiver with an access key."""
    monkeypatch.setenv("PROMOTION_EVENTS_ENDPOINT", eventgrid_receiver.url)
    monkeypatch.setenv("PROMOTION_EVENTS_KEY", KEY)
    local_app.reset()
    return eventgrid_receiver


def request_promotion(ref=REF, who=ALICE):
    return http(
        "request_promotion",
        "POST",
        "promotions",
        who=who,
        body={"model_name": ref.name, "model_version": ref.version, "reason": "better MAE"},
    )


def approve(promotion_id, who=CAROL):
    jobs = Output()
    status, answer = http(
        "approve_promotion",
        "POST",
        f"promotions/{promotion_id}/approve",
        who=who,
        body={"comment": "metrics reviewed"},
        route_params={"id": promotion_id},
        jobs=jobs,
    )
    return status, answer, jobs


def demo_flow(local_app, ref=REF):
    """The demo's steps through the registered functions: register, event, copy, request, approve, deploy."""
    share(local_app, ref, event_id=f"event-{ref.version}")
    status, created = request_promotion(ref)
    assert status == 201
    status, _, jobs = approve(created["id"])
    assert status == 202
    user_function("deploy_promotion")(func.QueueMessage(body=jobs.get().encode()))
    return created["id"]


def outbox_ids(local_app, *, unpublished_only=False):
    return [event.id for event in local_app.store().events(unpublished_only=unpublished_only)]


def test_the_demo_flow_publishes_the_expected_cloudevents_in_order(local_app, publishing):
    promotion_id = demo_flow(local_app)
    received = publishing.delivered
    assert [event["type"] for event in received] == FLOW_TYPES
    assert [event["id"] for event in received] == outbox_ids(local_app)  # the outbox ids, stable
    assert outbox_ids(local_app, unpublished_only=True) == []  # every one marked published
    for event in received:
        assert event["specversion"] == "1.0"
        assert event["source"] == "local"
        assert event["subject"] == "models/taxi-fare/versions/1"
        assert event["time"]
        assert set(event["data"]) >= COMMON_DATA
        assert event["data"]["model"] == {"name": "taxi-fare", "version": "1"}
    copied, requested, approved, started, deployed = (event["data"] for event in received)
    assert copied["promotion_id"] is None and copied["state"] == "copied"
    assert copied["lineage"]["promotion.source_model"] == "taxi-fare:1"
    assert copied["policy_digest"] == local_app.policy().digest
    assert {requested["promotion_id"], approved["promotion_id"], started["promotion_id"]} == {promotion_id}
    assert requested["state"] == "pending_approval" and requested["actor"] == "alice@contoso.com"
    assert requested["reason"] == "better MAE" and requested["requested_by"] == "alice@contoso.com"
    assert requested["required_approvals"] == 1
    assert approved["state"] == "approved" and approved["approvals"] == ["carol@contoso.com"]
    assert approved["comment"] == "metrics reviewed"
    assert started["state"] == "deploying"
    assert (started["endpoint"], started["deployment"]) == ("taxi-fare-prod", "taxi-fare-v1")
    assert deployed["state"] == "deployed" and deployed["promotion_id"] == promotion_id
    assert (deployed["endpoint"], deployed["deployment"]) == ("taxi-fare-prod", "taxi-fare-v1")
    assert deployed["traffic"] == {"taxi-fare-v1": 100}
    for request in publishing.requests:
        assert request.method == "POST" and request.path.split("?")[0] == "/api/events"
        assert request.headers["aeg-sas-key"] == KEY
        assert request.headers["content-type"].startswith("application/cloudevents-batch+json")


def test_the_other_changes_publish_their_types_with_their_data(local_app, publishing, tmp_path, monkeypatch, app_clock):
    from promotion.ports import CopyProgress, CopyStatus, DeploymentFailed

    # Rejected
    share(local_app, REF)
    _, created = request_promotion()
    http(
        "reject_promotion",
        "POST",
        "r",
        who=CAROL,
        body={"comment": "metrics regressed"},
        route_params={"id": created["id"]},
    )
    # RegistryCopyFailed
    failing = ModelRef("taxi-fare", "2")
    stage(local_app, failing)
    user_function("on_model_registered")(grid_event(failing, topic=local_app.settings().staging_workspace_id))
    registry = local_app.backend().registry
    with pytest.MonkeyPatch.context() as broken:
        broken.setattr(registry, "copy_status", lambda operation: CopyStatus(CopyProgress.FAILED, "quota exceeded"))
        user_function("advance_registry_copies")(timer())
    # DeploymentFailed
    with pytest.MonkeyPatch.context() as broken:

        def refuse(plan):
            raise DeploymentFailed("SKU Standard_F4s_v2 is not available in this region")

        broken.setattr(local_app.backend().production, "ensure_deployment", refuse)
        _, again = request_promotion()
        user_function("deploy_promotion")(func.QueueMessage(body=approve(again["id"])[2].get().encode()))
    # RolledBack
    demo_flow(local_app, ModelRef("taxi-fare", "3"))
    newest = demo_flow(local_app, ModelRef("taxi-fare", "4"))
    http(
        "rollback_promotion",
        "POST",
        "r",
        who=CAROL,
        body={"comment": "latency doubled"},
        route_params={"id": newest},
    )
    # Expired
    use_policy(monkeypatch, tmp_path, approval_ttl_hours=0.00001)
    _, stale = request_promotion(ModelRef("taxi-fare", "3"))
    app_clock.advance(seconds=0.05)
    user_function("advance_deployments")(timer())

    by_type = {}
    for event in publishing.delivered:
        by_type.setdefault(event["type"], []).append(event["data"])
    assert [event["id"] for event in publishing.delivered] == outbox_ids(local_app)
    [rejected] = by_type["ModelPromotion.Rejected"]
    assert rejected["state"] == "rejected" and rejected["comment"] == "metrics regressed"
    assert rejected["actor"] == "carol@contoso.com" and rejected["promotion_id"] == created["id"]
    [copy_failed] = by_type["ModelPromotion.RegistryCopyFailed"]
    assert copy_failed["promotion_id"] is None and copy_failed["state"] == "copy_failed"
    assert copy_failed["reason"] == "quota exceeded" and copy_failed["model"] == {"name": "taxi-fare", "version": "2"}
    [deployment_failed] = by_type["ModelPromotion.DeploymentFailed"]
    assert deployment_failed["state"] == "failed" and "SKU" in deployment_failed["reason"]
    [rolled_back] = by_type["ModelPromotion.RolledBack"]
    assert rolled_back["state"] == "rolled_back" and rolled_back["promotion_id"] == newest
    assert rolled_back["endpoint"] == "taxi-fare-prod" and rolled_back["traffic"] == {"taxi-fare-v3": 100}
    assert rolled_back["comment"] == "latency doubled"
    [expired] = by_type["ModelPromotion.Expired"]
    assert expired["state"] == "expired" and expired["promotion_id"] == stale["id"]
    for events in by_type.values():
        for data in events:
            assert set(data) >= COMMON_DATA


def test_a_receiver_that_is_down_then_up_loses_nothing_and_mints_no_new_id(local_app, publishing):
    publishing.down()
    demo_flow(local_app)  # every quick publish fails: the flow goes on regardless
    recorded = outbox_ids(local_app)
    assert len(recorded) == len(FLOW_TYPES)
    assert outbox_ids(local_app, unpublished_only=True) == recorded
    with pytest.raises(RuntimeError, match="published 0 lifecycle events, then stopped"):
        user_function("publish_lifecycle_events")(timer())  # the failure shows in the function's runs
    publishing.up()
    user_function("publish_lifecycle_events")(timer())
    assert [event["id"] for event in publishing.delivered] == recorded
    assert outbox_ids(local_app, unpublished_only=True) == []
    user_function("publish_lifecycle_events")(timer())  # nothing left: nothing sent again
    assert [event["id"] for event in publishing.events] == recorded


def test_refused_batches_are_sent_again_with_the_same_ids(local_app, publishing):
    publishing.answer(503, 503, 503, 503)  # each change's quick attempt is refused
    demo_flow(local_app)
    recorded = outbox_ids(local_app)
    assert len(publishing.requests) == 4 and publishing.delivered == []  # one attempt per invocation
    assert {event["id"] for event in publishing.events} == set(recorded)
    assert outbox_ids(local_app, unpublished_only=True) == recorded
    user_function("publish_lifecycle_events")(timer())
    assert [event["id"] for event in publishing.delivered] == recorded  # the same ids, in order
    assert outbox_ids(local_app, unpublished_only=True) == []


def test_two_publishers_at_once_deliver_everything_without_gaps(local_app, publishing, monkeypatch):
    monkeypatch.delenv("PROMOTION_EVENTS_ENDPOINT")  # record a backlog first, with publishing off
    local_app.reset()
    for version in ("1", "2", "3"):
        demo_flow(local_app, ModelRef("taxi-fare", version))
    recorded = outbox_ids(local_app)
    assert len(recorded) == 3 * len(FLOW_TYPES) and publishing.requests == []
    monkeypatch.setenv("PROMOTION_EVENTS_ENDPOINT", publishing.url)
    local_app.reset()
    store, publisher = local_app.store(), local_app.publisher()
    start = threading.Barrier(2)
    errors = []

    def publish(run):
        try:
            start.wait()
            run()
        except Exception as error:  # pragma: no cover - shown by the assertion below
            errors.append(error)

    runs = [
        lambda: user_function("publish_lifecycle_events")(timer()),
        lambda: service.publish_pending(store, publisher, batch_size=4, clock=wiring.clock()),
    ]
    threads = [threading.Thread(target=publish, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    delivered = [event["id"] for event in publishing.delivered]
    assert set(delivered) == set(recorded)  # duplicates are fine, gaps are not
    assert outbox_ids(local_app, unpublished_only=True) == []
    position = {event_id: index for index, event_id in enumerate(recorded)}
    for request in publishing.requests:  # each batch in outbox order
        ids = [event["id"] for event in request.events]
        assert ids == sorted(ids, key=position.__getitem__)


def test_publishing_is_off_without_an_endpoint_and_events_are_still_recorded(local_app, eventgrid_receiver, capsys):
    from promotion.cli import main

    demo_flow(local_app)
    user_function("publish_lifecycle_events")(timer())
    assert eventgrid_receiver.requests == []
    assert main(["events", "list", "--unpublished", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [event["type"] for event in listed] == FLOW_TYPES
    assert all(event["published_at"] is None for event in listed)
    assert [event["id"] for event in listed] == outbox_ids(local_app)


def test_a_topic_that_hangs_slows_an_answer_by_one_short_attempt_at_most(local_app, publishing):
    share(local_app, REF)
    before = len(publishing.requests)
    publishing.hang()
    began = time.monotonic()
    status, created = request_promotion()
    elapsed = time.monotonic() - began
    publishing.release()
    assert status == 201 and created["state"] == "pending_approval"
    assert elapsed < 8, f"the API answer took {elapsed:.1f}s while the topic hung"
    assert len(publishing.requests) == before + 1  # one attempt, no retry
    assert outbox_ids(local_app, unpublished_only=True) == [publishing.events[-1]["id"]]


def test_published_events_are_purged_after_the_retention_period(local_app, publishing, monkeypatch, app_clock):
    monkeypatch.setenv("PROMOTION_EVENTS_RETENTION_DAYS", "0.000005")  # about 0.43 s
    local_app.reset()
    share(local_app, REF)
    status, _ = request_promotion()
    assert status == 201
    published = outbox_ids(local_app)
    assert len(published) == 2 and outbox_ids(local_app, unpublished_only=True) == []
    publishing.down()
    share(local_app, ModelRef("taxi-fare", "2"))  # recorded while the topic is down: stays unpublished
    unpublished = outbox_ids(local_app, unpublished_only=True)
    assert len(unpublished) == 1
    app_clock.advance(seconds=0.5)
    publishing.up()
    user_function("publish_lifecycle_events")(timer())  # publishes the last one, purges the old ones
    assert outbox_ids(local_app) == unpublished
    app_clock.advance(seconds=0.5)
    user_function("publish_lifecycle_events")(timer())
    assert outbox_ids(local_app) == []


def test_recent_published_events_are_kept(local_app, publishing):
    demo_flow(local_app)
    user_function("publish_lifecycle_events")(timer())
    assert len(outbox_ids(local_app)) == len(FLOW_TYPES)


def _records_of(caplog, run):
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="promotion"):
        run()
    records = [record for record in caplog.records if record.name.startswith("promotion")]
    assert records, "the invocation logged nothing"
    return records


def _missing(records, **expected):
    return [
        (record.getMessage(), field)
        for record in records
        for field, value in expected.items()
        if getattr(record, field, None) != value
    ]


def test_every_log_record_of_an_invocation_carries_its_fields(local_app, publishing, caplog):
    stage(local_app, REF)
    topic = local_app.settings().staging_workspace_id
    event = grid_event(REF, topic=topic, event_id="event-logs")
    records = _records_of(caplog, lambda: user_function("on_model_registered")(event))
    assert _missing(records, event_id="event-logs", model="taxi-fare:1") == []

    user_function("advance_registry_copies")(timer())
    _, created = request_promotion()
    jobs = []
    records = _records_of(caplog, lambda: jobs.append(approve(created["id"])[2]))
    assert _missing(records, promotion_id=created["id"], model="taxi-fare:1") == []

    message = func.QueueMessage(body=jobs[0].get().encode())
    records = _records_of(caplog, lambda: user_function("deploy_promotion")(message))
    assert _missing(records, promotion_id=created["id"], model="taxi-fare:1") == []


def test_function_app_does_not_import_azure_eventgrid():
    code = "import sys, function_app; print(sorted(m for m in sys.modules if m.startswith('azure.eventgrid')))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_namespace_topic_gets_the_same_events_at_its_publish_path(local_app, eventgrid_receiver, monkeypatch):
    namespace = f"http://{eventgrid_receiver.host}:{eventgrid_receiver.port}"
    monkeypatch.setenv("PROMOTION_EVENTS_ENDPOINT", namespace)
    monkeypatch.setenv("PROMOTION_EVENTS_KEY", KEY)
    monkeypatch.setenv("PROMOTION_EVENTS_NAMESPACE_TOPIC", "promotions")
    local_app.reset()
    share(local_app, REF, event_id="event-1")

    status, created = request_promotion()

    assert status == 201
    requests = eventgrid_receiver.requests
    assert {r.path for r in requests} == {"/topics/promotions:publish?api-version=2024-06-01"}
    assert {r.headers["authorization"] for r in requests} == {f"SharedAccessKey {KEY}"}
    types = [event["type"] for r in requests for event in r.events]
    assert types == ["ModelPromotion.CopiedToRegistry", "ModelPromotion.ApprovalRequested"]
    assert requests[-1].events[-1]["data"]["promotion_id"] == created["id"]
