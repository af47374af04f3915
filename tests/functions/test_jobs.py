"""The deployment worker and the racing approvers, through the registered functions."""

import json
import threading

import azure.functions as func
import pytest

from promotion import wiring
from promotion.adapters.local import LocalBackend
from promotion.domain import Lineage, ModelRef, ModelVersion
from tests.functions.conftest import SEED_MODEL, http, user_function
from tests.functions.test_api import CAROL, ERIN, approve, request

REF = ModelRef("taxi-fare", "1")


@pytest.fixture
def approved(local_app):
    backend = LocalBackend(local_app.settings())
    staged = backend.staging.register(ModelVersion(REF, "mlflow_model", {"stage": "candidate"}), SEED_MODEL)
    lineage = Lineage(local_app.settings().staging_workspace_id, REF, "event-7", "sha256:0123")
    backend.registry.copy_from_workspace(staged, lineage)
    _, created = request()
    _, _, jobs = approve(created["id"])
    return backend, created["id"], jobs.get()


def deploy(body: str):
    user_function("deploy_promotion")(func.QueueMessage(body=body.encode()))


def promotion(promotion_id):
    return http("get_promotion", "GET", "p", route_params={"id": promotion_id})[1]


def test_the_job_deploys_the_registry_model_into_production(approved):
    backend, promotion_id, job = approved
    deploy(job)
    done = promotion(promotion_id)
    assert done["state"] == "deployed"
    assert [h["action"] for h in done["history"]] == ["requested", "approved", "deploying", "deployed"]
    [endpoint] = backend.production.list()
    assert endpoint["name"] == "taxi-fare-prod" and endpoint["traffic"] == {"taxi-fare-v1": 100}
    deployment = endpoint["deployments"]["taxi-fare-v1"]
    assert deployment["model"] == "azureml://registries/shared-registry/models/taxi-fare/versions/1"
    assert deployment["tags"]["promotion.id"] == promotion_id
    assert deployment["tags"]["promotion.approved_by"] == "carol@contoso.com"
    assert deployment["tags"]["promotion.event_id"] == "event-7"
    assert deployment["tags"]["promotion.policy_digest"] == "sha256:0123"
    _, view = http("model_status", "GET", "m", route_params={"name": "taxi-fare", "version": "1"})
    assert view["production"] == [
        {
            "endpoint": "taxi-fare-prod",
            "deployment": "taxi-fare-v1",
            "traffic": 100,
            "state": "Succeeded",
            "model": deployment["model"],
        }
    ]


def test_a_redelivered_job_changes_nothing(approved):
    backend, promotion_id, job = approved
    deploy(job)
    before = promotion(promotion_id)
    deploy(job)
    user_function("advance_deployments")(None)
    assert promotion(promotion_id) == before
    assert list(backend.production.list()[0]["deployments"]) == ["taxi-fare-v1"]


@pytest.mark.parametrize(
    "body",
    ["not json", "[]", '{"promotion_id": 7}', json.dumps({"promotion_id": "00000000-0000-4000-8000-000000000000"})],
)
def test_malformed_or_unknown_jobs_are_dropped_with_a_log(approved, body, caplog):
    deploy(body)
    user_function("deploy_promotion_poison")(func.QueueMessage(body=body.encode()))
    assert "dropped" in caplog.text or "malformed" in caplog.text
    assert promotion(approved[1])["state"] == "approved"


def test_a_poisoned_job_fails_the_promotion_with_the_reason(approved):
    _, promotion_id, job = approved
    user_function("deploy_promotion_poison")(func.QueueMessage(body=job.encode()))
    failed = promotion(promotion_id)
    assert failed["state"] == "failed"
    assert failed["error"].startswith("the deployment job failed on every retry and was moved to promotion-jobs-poison")
    deploy(job)  # a late copy of the job does not revive it
    assert promotion(promotion_id)["state"] == "failed"


def race_two_approvers(promotion_id):
    """Carol and Erin approve the same request at the same moment."""
    start = threading.Barrier(2)
    results = []

    def approve_now(who):
        start.wait()
        results.append(approve(promotion_id, who=who))

    threads = [threading.Thread(target=approve_now, args=(who,)) for who in (CAROL, ERIN)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def assert_one_winner(results, promotion_id):
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [202, 409]
    jobs = [value for _, _, output in results for value in output.values]
    assert jobs == [json.dumps({"promotion_id": promotion_id})]
    loser = next(answer for status, answer, _ in results if status == 409)
    assert "changed by someone else" in loser["error"] or "from approved to approved" in loser["error"]
    stored = promotion(promotion_id)
    assert stored["state"] == "approved" and [h["action"] for h in stored["history"]] == ["requested", "approved"]


def fresh_request(local_app, version="1"):
    ref = ModelRef("taxi-fare", version)
    backend = LocalBackend(local_app.settings())
    staged = backend.staging.register(ModelVersion(ref, "mlflow_model", {}), SEED_MODEL)
    backend.registry.copy_from_workspace(staged, Lineage("ws", ref, "e", "d"))
    return request(model_version=version)[1]["id"]


def test_racing_approvers_on_sqlite(local_app):
    for version in ("1", "2", "3", "4", "5"):  # a real race: repeated so that both orders get their chance
        promotion_id = fresh_request(local_app, version)
        assert_one_winner(race_two_approvers(promotion_id), promotion_id)


@pytest.mark.azurite
def test_racing_approvers_on_azure_tables(local_app, azurite_connection, azurite_table_name, monkeypatch):
    from promotion.adapters.tables import TablePromotionStore

    table_store = TablePromotionStore(azurite_connection, table_name=azurite_table_name)
    monkeypatch.setattr(wiring, "store", lambda: table_store)
    for version in ("1", "2", "3"):
        promotion_id = fresh_request(local_app, version)
        assert_one_winner(race_two_approvers(promotion_id), promotion_id)
