"""The promotions API, handler by handler, with every status code it answers."""

import json

import pytest

from promotion.adapters.local import LocalBackend
from promotion.domain import Lineage, ModelRef, ModelVersion
from tests.functions.conftest import SEED_MODEL, Output, http, identity

REF = ModelRef("taxi-fare", "1")
ALICE = identity("alice@contoso.com", "11111111-1111-1111-1111-111111111111")
CAROL = identity("carol@contoso.com", "33333333-3333-3333-3333-333333333333")
BOB = identity("bob@contoso.com", "22222222-2222-2222-2222-222222222222")
ERIN = identity("erin@contoso.com", roles=("Promotion.Approver",))
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def in_registry(local_app):
    backend = LocalBackend(local_app.settings())
    staged = backend.staging.register(ModelVersion(REF, "mlflow_model", {"stage": "candidate"}), SEED_MODEL)
    backend.registry.copy_from_workspace(staged, Lineage(local_app.settings().staging_workspace_id, REF, "e-1", "d"))
    return backend


def request(who=ALICE, **body):
    return http(
        "request_promotion",
        "POST",
        "promotions",
        who=who,
        body={"model_name": "taxi-fare", "model_version": "1", **body},
    )


def approve(promotion_id, who=CAROL, body=None, jobs=None):
    jobs = jobs if jobs is not None else Output()
    status, answer = http(
        "approve_promotion",
        "POST",
        f"promotions/{promotion_id}/approve",
        who=who,
        body=body,
        route_params={"id": promotion_id},
        jobs=jobs,
    )
    return status, answer, jobs


def reject(promotion_id, who=CAROL, body=None):
    return http(
        "reject_promotion",
        "POST",
        f"promotions/{promotion_id}/reject",
        who=who,
        body=body,
        route_params={"id": promotion_id},
    )


def test_201_then_200_for_the_same_open_request(in_registry):
    status, created = request(reason="new features")
    assert status == 201
    assert created["state"] == "pending_approval" and created["requested_by"] == "alice@contoso.com"
    assert created["reason"] == "new features" and created["approved_by"] is None
    assert set(created) >= {"id", "model_name", "model_version", "created_at", "updated_at", "history"}
    status, again = request(who=BOB, model_version=1)
    assert status == 200 and again["id"] == created["id"]


def test_list_newest_first_and_filtered_by_state(in_registry):
    _, first = request()
    reject(first["id"], body={"comment": "not yet"})
    _, second = request()
    status, listed = http("list_promotions", "GET", "promotions")
    assert status == 200 and [p["id"] for p in listed["promotions"]] == [second["id"], first["id"]]
    _, pending = http("list_promotions", "GET", "promotions", params={"state": "pending_approval"})
    assert [p["id"] for p in pending["promotions"]] == [second["id"]]


def test_get_shows_the_full_history(in_registry):
    _, created = request()
    approve(created["id"], body={"comment": "looks good"})
    status, promotion = http("get_promotion", "GET", f"promotions/{created['id']}", route_params={"id": created["id"]})
    assert status == 200 and promotion["state"] == "approved" and promotion["approved_by"] == "carol@contoso.com"
    assert [(h["actor"], h["action"]) for h in promotion["history"]] == [
        ("alice@contoso.com", "requested"),
        ("carol@contoso.com", "approved"),
    ]
    assert promotion["history"][1]["detail"]["comment"] == "looks good" and promotion["history"][1]["at"].endswith("Z")


def test_202_approval_queues_exactly_one_job(in_registry):
    _, created = request()
    status, approved, jobs = approve(created["id"], who=ERIN)
    assert status == 202 and approved["state"] == "approved" and approved["approved_by"] == "erin@contoso.com"
    assert [json.loads(v) for v in jobs.values] == [{"promotion_id": created["id"]}]


def test_200_rejection(in_registry):
    _, created = request()
    status, rejected = reject(created["id"], body={"comment": "metrics regressed"})
    assert status == 200 and rejected["state"] == "rejected" and rejected["rejected_by"] == "carol@contoso.com"
    assert rejected["history"][-1]["detail"]["comment"] == "metrics regressed"


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: http("request_promotion", "POST", "promotions", who=ALICE, raw_body=b"{oops"), "not valid JSON"),
        (lambda: http("request_promotion", "POST", "promotions", who=ALICE, body=["taxi-fare"]), "JSON object"),
        (lambda: http("request_promotion", "POST", "promotions", who=ALICE), "needs a JSON object body"),
        (
            lambda: http("request_promotion", "POST", "promotions", who=ALICE, body={"model_version": "1"}),
            "model_name: required",
        ),
        (
            lambda: http("request_promotion", "POST", "promotions", who=ALICE, body={"model_name": "taxi-fare"}),
            "model_version: required",
        ),
        (lambda: request(model_name="../../x"), "invalid model name"),
        (lambda: request(model_version={"v": 1}), "invalid model version"),
        (lambda: request(reason=42), "reason: expected a non-empty string"),
        (lambda: http("list_promotions", "GET", "promotions", params={"state": "done"}), "state: 'done' is not one of"),
        (
            lambda: http("model_status", "GET", "models/x/versions/1", route_params={"name": "a b", "version": "1"}),
            "invalid model name",
        ),
    ],
)
def test_400_names_the_field(in_registry, call, message):
    status, answer = call()
    assert status == 400 and message in answer["error"]


def test_400_reject_needs_a_comment(in_registry):
    _, created = request()
    assert reject(created["id"])[0] == 400
    status, answer = reject(created["id"], body={"comment": "  "})
    assert status == 400 and "comment: required" in answer["error"]


def test_401_without_identity_and_when_platform_auth_is_off_in_azure(in_registry, monkeypatch):
    status, answer = request(who={})
    assert status == 401 and "no identity" in answer["error"]
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "instance-1")
    status, answer = request()
    assert status == 401 and "App Service Authentication is off" in answer["error"]
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    assert request()[0] == 201


def test_403_for_non_approvers_and_for_the_requester(in_registry):
    _, created = request(who=CAROL)
    status, answer, jobs = approve(created["id"], who=BOB)
    assert status == 403 and "not an approver" in answer["error"] and jobs.values == []
    status, answer, jobs = approve(created["id"], who=CAROL)
    assert status == 403 and "requested this promotion" in answer["error"] and jobs.values == []
    status, answer = reject(created["id"], who=CAROL, body={"comment": "mine"})
    assert status == 403
    _, still = http("get_promotion", "GET", "p", route_params={"id": created["id"]})
    assert still["state"] == "pending_approval" and len(still["history"]) == 1


def test_404_unknown_promotion_or_model(in_registry):
    for promotion_id in (UNKNOWN_ID, "../../etc"):
        status, answer = http("get_promotion", "GET", "p", route_params={"id": promotion_id})
        assert status == 404 and "no promotion" in answer["error"]
        assert approve(promotion_id)[0] == 404
        assert reject(promotion_id, body={"comment": "x"})[0] == 404
    status, answer = request(model_version="2")
    assert status == 404 and "taxi-fare:2 is not in the registry" in answer["error"]
    status, answer = http("model_status", "GET", "m", route_params={"name": "nothing", "version": "1"})
    assert status == 404 and "nothing:1 is unknown" in answer["error"]


def test_409_for_impossible_state_changes(in_registry):
    _, created = request()
    approve(created["id"])
    status, answer, jobs = approve(created["id"], who=ERIN)
    assert status == 409 and "from approved to approved" in answer["error"] and jobs.values == []
    status, answer = reject(created["id"], who=ERIN, body={"comment": "too late"})
    assert status == 409 and "from approved to rejected" in answer["error"]


def test_500_names_the_broken_policy_without_a_traceback(in_registry, local_app, tmp_path, monkeypatch):
    _, created = request()
    broken = tmp_path / "policy.json"
    broken.write_text('{"production": {"approvers": "carol"}}')
    monkeypatch.setenv("PROMOTION_POLICY_FILE", str(broken))
    local_app.reset()
    status, answer, jobs = approve(created["id"])
    assert status == 500 and "production.approvers: expected a list" in answer["error"] and jobs.values == []


def test_the_model_status_view(in_registry):
    _, created = request()
    status, view = http("model_status", "GET", "m", route_params={"name": "taxi-fare", "version": "1"})
    assert status == 200
    assert view["staging"]["tags"] == {"stage": "candidate"}
    assert view["registry"]["tags"]["promotion.source_model"] == "taxi-fare:1"
    assert view["production"] == [] and view["decisions"] == []
    assert [p["id"] for p in view["promotions"]] == [created["id"]]
