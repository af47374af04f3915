"""The deployment worker (deploy_promotion, its poison handler and the advance_deployments timer) and racing
approvers, through the registered functions with real func.QueueMessage and TimerRequest objects."""

from __future__ import annotations

import json
import logging
import threading

import azure.functions as func
import pytest

from promotion import wiring
from promotion.domain import ModelRef
from promotion.ports import Progress
from tests.functions.conftest import backend, http, timer, use_policy, user_function
from tests.functions.test_api import CAROL, DAVE, ERIN, approve, get, put_in_registry, request

REF = ModelRef("taxi-fare", "1")
POISON_REASON = "the deployment job failed on every retry and was moved to promotion-jobs-poison"


@pytest.fixture
def approved(local_app):
    put_in_registry(local_app, REF)
    _, created = request()
    status, _, jobs = approve(created["id"])
    assert status == 202
    return backend(local_app), created["id"], jobs.get()


def deploy(body: str | bytes) -> None:
    user_function("deploy_promotion")(func.QueueMessage(body=body.encode() if isinstance(body, str) else body))


def poison(body: str | bytes) -> None:
    user_function("deploy_promotion_poison")(func.QueueMessage(body=body.encode() if isinstance(body, str) else body))


def promotion(promotion_id):
    return get(promotion_id)[1]


def test_the_job_deploys_the_registry_model_into_production(approved, local_app):
    production, promotion_id, job = approved[0].production, approved[1], approved[2]
    deploy(job)
    done = promotion(promotion_id)
    assert done["state"] == "deployed"
    assert [h["action"] for h in done["history"]] == ["requested", "approval", "approved", "deploying", "deployed"]
    [endpoint] = production.list()
    assert endpoint["name"] == "taxi-fare-prod" and endpoint["traffic"] == {"taxi-fare-v1": 100}
    deployment = endpoint["deployments"]["taxi-fare-v1"]
    assert deployment["model"] == "azureml://registries/shared-registry/models/taxi-fare/versions/1"
    assert deployment["tags"]["promotion.id"] == promotion_id
    assert deployment["tags"]["promotion.model"] == "taxi-fare:1"
    assert deployment["tags"]["promotion.approved_by"] == "carol@contoso.com"
    assert deployment["tags"]["promotion.event_id"] == "event-taxi-fare:1"
    assert deployment["tags"]["promotion.policy_digest"] == "sha256:0123"
    _, view = http("model_status", "GET", "m", who=CAROL, route_params={"name": "taxi-fare", "version": "1"})
    assert view["production"] == [
        {
            "endpoint": "taxi-fare-prod",
            "deployment": "taxi-fare-v1",
            "traffic": 100,
            "state": "Succeeded",
            "model": deployment["model"],
        }
    ]


def test_a_redelivered_job_and_more_ticks_change_nothing(approved):
    production, promotion_id, job = approved
    deploy(job)
    before = promotion(promotion_id)
    deploy(job)
    user_function("advance_deployments")(timer())
    assert promotion(promotion_id) == before
    assert list(production.production.list()[0]["deployments"]) == ["taxi-fare-v1"]


def test_names_that_would_collide_get_their_own_endpoints(local_app):
    ids = {}
    for name in ("taxi-fare", "Taxi_Fare", "TAXI-FARE"):  # a registry allows no "." in names
        ref = ModelRef(name, "1")
        put_in_registry(local_app, ref)
        _, created = request(model_name=name)
        _, _, jobs = approve(created["id"])
        deploy(jobs.get())
        ids[name] = promotion(created["id"])
        assert ids[name]["state"] == "deployed"
    endpoints = {answer["deployment"]["endpoint"] for answer in ids.values()}
    assert len(endpoints) == 3
    for endpoint in backend(local_app).production.list():
        assert len(endpoint["deployments"]) == 1 and sum(endpoint["traffic"].values()) == 100


def test_an_older_version_finishing_after_a_newer_one_stays_at_zero_traffic(local_app):
    promotions = {}
    for version in ("2", "1"):  # the newer version goes live first
        put_in_registry(local_app, ModelRef("taxi-fare", version))
        _, created = request(model_version=version)
        deploy(approve(created["id"])[2].get())
        promotions[version] = promotion(created["id"])
    older = promotions["1"]
    assert older["state"] == "deployed"
    assert older["history"][-1]["detail"]["traffic"] == {}
    assert "taxi-fare:2 is live" in older["history"][-1]["detail"]["note"]
    assert backend(local_app).production.list()[0]["traffic"] == {"taxi-fare-v2": 100}


# --- malformed messages: logged and dropped, never raised --------------------------------------------

MALFORMED = {
    "not json": b"not json",
    "empty": b"",
    "a list": b"[]",
    "wrong type": b'{"promotion_id": 7}',
    "wrong key": b'{"id": "00000000-0000-4000-8000-000000000000"}',
    "not an id": b'{"promotion_id": "../../etc/passwd"}',
    "bad utf-8": b'{"promotion_id": "\xff\xfe"}',
    "lone surrogate": b'{"promotion_id": "\\ud800"}',
    "nested deep": b'{"promotion_id": ' + b"[" * 2000 + b"]" * 2000 + b"}",
    "nested deeper than the size limit": b"[" * 100_000 + b"]" * 100_000,
    "a number": b"12",
    "null": b"null",
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_message_is_logged_and_dropped(approved, caplog, body):
    for handler in (deploy, poison):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="promotion"):
            handler(body)  # returns None, never raises
        assert "malformed deployment job" in caplog.text, handler.__name__
    assert promotion(approved[1])["state"] == "approved"


@pytest.mark.parametrize("handler", [deploy, poison], ids=["deploy_promotion", "deploy_promotion_poison"])
def test_a_job_for_an_unknown_promotion_is_logged_and_dropped(approved, caplog, handler):
    with caplog.at_level(logging.INFO, logger="promotion"):
        handler(json.dumps({"promotion_id": "00000000-0000-4000-8000-000000000000"}))
    assert "dropped" in caplog.text
    assert promotion(approved[1])["state"] == "approved"


# --- the poison queue --------------------------------------------------------------------------------


def test_a_poisoned_job_fails_a_promotion_still_approved_and_not_started(approved):
    _, promotion_id, job = approved
    poison(job)
    failed = promotion(promotion_id)
    assert failed["state"] == "failed" and failed["error"].startswith(POISON_REASON)
    deploy(job)  # a late copy of the job does not revive it
    assert promotion(promotion_id)["state"] == "failed"


def test_the_poison_handler_leaves_a_started_deployment_alone(approved, caplog):
    production, promotion_id, job = approved[0].production, approved[1], approved[2]
    with pytest.MonkeyPatch.context() as azure_is_working:
        azure_is_working.setattr(production, "ensure_deployment", lambda plan: Progress.PENDING)
        deploy(job)
        assert promotion(promotion_id)["state"] == "deploying"
        with caplog.at_level(logging.INFO, logger="promotion"):
            poison(job)  # the race: the job went to the poison queue while the deployment is going live
        assert promotion(promotion_id)["state"] == "deploying"
        assert "ignored: the promotion is deploying and its deployment has started" in caplog.text
    user_function("advance_deployments")(timer())
    assert promotion(promotion_id)["state"] == "deployed"


def test_the_poison_handler_leaves_a_deployed_promotion_alone(approved, caplog):
    _, promotion_id, job = approved
    deploy(job)
    with caplog.at_level(logging.INFO, logger="promotion"):
        poison(job)
    assert promotion(promotion_id)["state"] == "deployed"
    assert "ignored: the promotion is deployed" in caplog.text


# --- the timer: lost jobs and failures --------------------------------------------------------------


def test_a_lost_job_is_started_by_the_timer_after_the_grace_period(local_app, tmp_path, monkeypatch, app_clock):
    use_policy(monkeypatch, tmp_path, job_grace_minutes=0.005)  # 300 ms
    put_in_registry(local_app, REF)
    _, created = request()
    status, _, _ = approve(created["id"])  # the job message is lost: never delivered
    assert status == 202
    user_function("advance_deployments")(timer())
    assert promotion(created["id"])["state"] == "approved"  # still within the grace period
    app_clock.advance(seconds=0.35)
    user_function("advance_deployments")(timer())
    done = promotion(created["id"])
    assert done["state"] == "deployed"
    assert [h["actor"] for h in done["history"]][-2:] == ["deploy_promotion", "deploy_promotion"]


def test_one_failing_deployment_does_not_stop_the_others(local_app, monkeypatch, caplog):
    production = backend(local_app).production
    jobs = {}
    for version in ("1", "2"):
        put_in_registry(local_app, ModelRef("taxi-fare", version))
        _, created = request(model_version=version)
        jobs[version] = (created["id"], approve(created["id"])[2].get())
    with pytest.MonkeyPatch.context() as azure_is_working:
        azure_is_working.setattr(production, "ensure_deployment", lambda plan: Progress.PENDING)
        for promotion_id, job in jobs.values():
            deploy(job)
            assert promotion(promotion_id)["state"] == "deploying"
    real = production.ensure_deployment

    def flaky(plan):
        if plan.deployment == "taxi-fare-v1":
            raise ConnectionError("the region is having a bad day")
        return real(plan)

    monkeypatch.setattr(production, "ensure_deployment", flaky)
    with caplog.at_level(logging.INFO, logger="promotion"):
        user_function("advance_deployments")(timer())  # returns normally: the failure is logged
    assert promotion(jobs["1"][0])["state"] == "deploying"
    assert promotion(jobs["2"][0])["state"] == "deployed"
    assert "could not advance" in caplog.text


def test_a_deployment_past_its_timeout_fails_with_the_reason(local_app, tmp_path, monkeypatch, app_clock):
    use_policy(monkeypatch, tmp_path, deploy_timeout_minutes=0.002)
    put_in_registry(local_app, REF)
    _, created = request()
    job = approve(created["id"])[2].get()
    monkeypatch.setattr(backend(local_app).production, "ensure_deployment", lambda plan: Progress.PENDING)
    deploy(job)
    app_clock.advance(seconds=0.15)
    user_function("advance_deployments")(timer())
    failed = promotion(created["id"])
    assert failed["state"] == "failed" and "deploy_timeout_minutes" in failed["error"]


# --- racing approvers: exactly one job under required_approvals 2 -----------------------------------


def race(promotion_id, approvers):
    """The approvers approve the same request at the same moment."""
    start = threading.Barrier(len(approvers))
    results = []

    def approve_now(who):
        start.wait()
        results.append(approve(promotion_id, who=who))

    threads = [threading.Thread(target=approve_now, args=(who,)) for who in approvers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def assert_exactly_one_job(results, promotion_id):
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200, 202, 409], [answer for _, answer, _ in results]
    jobs = [value for _, _, output in results for value in output.values]
    assert jobs == [json.dumps({"promotion_id": promotion_id})]
    stored = promotion(promotion_id)
    assert stored["state"] == "approved" and len(stored["approvals"]) == 2
    assert [h["action"] for h in stored["history"]] == ["requested", "approval", "approval", "approved"]


def fresh_request(local_app, version):
    put_in_registry(local_app, ModelRef("taxi-fare", version))
    return request(model_version=version)[1]["id"]


def test_racing_approvers_produce_exactly_one_job_on_sqlite(local_app, tmp_path, monkeypatch):
    use_policy(monkeypatch, tmp_path, required_approvals=2)
    for version in ("1", "2", "3", "4"):  # a real race: repeated so that every order gets its chance
        promotion_id = fresh_request(local_app, version)
        assert_exactly_one_job(race(promotion_id, [CAROL, ERIN, DAVE]), promotion_id)


@pytest.mark.azurite
def test_racing_approvers_produce_exactly_one_job_on_azure_tables(
    local_app, tmp_path, monkeypatch, azurite_connection, azurite_table_name
):
    from promotion.adapters.tables import TablePromotionStore

    use_policy(monkeypatch, tmp_path, required_approvals=2)
    table_store = TablePromotionStore(azurite_connection, table_name=azurite_table_name)  # a table of its own
    monkeypatch.setattr(wiring, "store", lambda: table_store)
    for version in ("1", "2"):
        promotion_id = fresh_request(local_app, version)
        assert_exactly_one_job(race(promotion_id, [CAROL, ERIN, DAVE]), promotion_id)
