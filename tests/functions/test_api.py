"""The promotions API through the registered HTTP functions: every status of every route, and every bad input of
issue 7 ("A fail-closed API"), each as its own test."""

from __future__ import annotations

import json
import logging
import time

import azure.functions as func
import pytest

from promotion.domain import Lineage, ModelRef
from promotion.ports import Progress
from tests.functions.conftest import (
    Output,
    backend,
    encoded_principal,
    grid_event,
    http,
    identity,
    stage,
    timer,
    use_policy,
    user_function,
)

REF = ModelRef("taxi-fare", "1")
ALICE_ID = "11111111-1111-1111-1111-111111111111"
ALICE = identity("alice@contoso.com", ALICE_ID)
CAROL = identity("carol@contoso.com", "33333333-3333-3333-3333-333333333333")
BOB = identity("bob@contoso.com", "22222222-2222-2222-2222-222222222222")  # not an approver
ERIN = identity("erin@contoso.com", "55555555-5555-5555-5555-555555555555", roles=("Promotion.Approver",))
DAVE = identity("dave@contoso.com", "44444444-4444-4444-4444-444444444444", roles=("Promotion.Approver",))
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
# The well-known Azurite account key: public, and not the secret the tests look for.
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
UNREACHABLE_TABLES = (
    f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
    "TableEndpoint=http://127.0.0.1:1/devstoreaccount1"
)


def put_in_registry(local_app, ref=REF, **staged):
    """A registry version with lineage, straight into the local registry (no event, no copy record): what
    share() leaves behind, for tests about what comes after."""
    model = stage(local_app, ref, **staged)
    registry = backend(local_app).registry
    registry.start_copy(model)
    lineage = Lineage(local_app.settings().staging_workspace_id, ref, f"event-{ref}", "sha256:0123")
    registry.tag(ref, lineage.as_tags(), None)


@pytest.fixture
def in_registry(local_app):
    put_in_registry(local_app)
    return backend(local_app)


def request(who=ALICE, **body):
    return http(
        "request_promotion",
        "POST",
        "promotions",
        who=who,
        body={"model_name": "taxi-fare", "model_version": "1", **body},
    )


def approve(promotion_id, who=CAROL, body=None, jobs=None, raw_body=None):
    jobs = jobs if jobs is not None else Output()
    status, answer = http(
        "approve_promotion",
        "POST",
        f"promotions/{promotion_id}/approve",
        who=who,
        body=body,
        raw_body=raw_body,
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


def rollback(promotion_id, who=CAROL, body=None):
    return http(
        "rollback_promotion",
        "POST",
        f"promotions/{promotion_id}/rollback",
        who=who,
        body=body,
        route_params={"id": promotion_id},
    )


def get(promotion_id, who=ALICE):
    return http("get_promotion", "GET", f"promotions/{promotion_id}", who=who, route_params={"id": promotion_id})


def listing(who=ALICE, **params):
    return http("list_promotions", "GET", "promotions", who=who, params=params)


def status_view(ref=REF, who=ALICE):
    route = f"models/{ref.name}/versions/{ref.version}"
    return http("model_status", "GET", route, who=who, route_params={"name": ref.name, "version": ref.version})


def deployed(local_app, version):
    """A deployed promotion of taxi-fare:{version}, through the functions; returns its id."""
    put_in_registry(local_app, ModelRef("taxi-fare", version))
    _, created = request(model_version=version)
    status, _, jobs = approve(created["id"])
    assert status == 202
    user_function("deploy_promotion")(func.QueueMessage(body=jobs.get().encode()))
    assert get(created["id"])[1]["state"] == "deployed"
    return created["id"]


# Every route, with a request that would succeed for a known caller (the ids need not exist).
ROUTES = {
    "request_promotion": lambda who: request(who=who),
    "list_promotions": lambda who: listing(who=who),
    "get_promotion": lambda who: get(UNKNOWN_ID, who=who),
    "approve_promotion": lambda who: approve(UNKNOWN_ID, who=who)[:2],
    "reject_promotion": lambda who: reject(UNKNOWN_ID, who=who, body={"comment": "no"}),
    "rollback_promotion": lambda who: rollback(UNKNOWN_ID, who=who, body={"comment": "back"}),
    "model_status": lambda who: status_view(who=who),
}


# --- 201 / 200 / 202: the workflow ------------------------------------------------------------------


def test_201_then_200_for_the_same_open_request(in_registry):
    status, created = request(reason="new features")
    assert status == 201
    assert created["state"] == "pending_approval" and created["requested_by"] == "alice@contoso.com"
    assert created["reason"] == "new features" and created["approved_by"] is None and created["approvals"] == []
    assert set(created) >= {"id", "model_name", "model_version", "created_at", "updated_at", "history"}
    status, again = request(who=BOB, model_version=1)  # a number, as Event Grid's sample sends it
    assert status == 200 and again["id"] == created["id"]


def test_200_list_newest_first_and_filtered_by_state(in_registry):
    _, first = request()
    reject(first["id"], body={"comment": "not yet"})
    _, second = request()
    status, listed = listing()
    assert status == 200 and [p["id"] for p in listed["promotions"]] == [second["id"], first["id"]]
    _, pending = listing(state="pending_approval")
    assert [p["id"] for p in pending["promotions"]] == [second["id"]]


def test_200_get_shows_the_full_history(in_registry):
    _, created = request()
    approve(created["id"], body={"comment": "looks good"})
    status, promotion = get(created["id"], who=BOB)  # reading needs an identity, not a role
    assert status == 200 and promotion["state"] == "approved" and promotion["approved_by"] == "carol@contoso.com"
    assert [(h["actor"], h["action"]) for h in promotion["history"]] == [
        ("alice@contoso.com", "requested"),
        ("carol@contoso.com", "approval"),
        ("carol@contoso.com", "approved"),
    ]
    assert promotion["history"][1]["detail"]["comment"] == "looks good"
    assert all(entry["at"].endswith("Z") for entry in promotion["history"])


def test_202_approval_queues_exactly_one_job(in_registry):
    _, created = request()
    status, approved, jobs = approve(created["id"], who=ERIN)
    assert status == 202 and approved["state"] == "approved" and approved["approved_by"] == "erin@contoso.com"
    assert [json.loads(value) for value in jobs.values] == [{"promotion_id": created["id"]}]


def test_200_rejection(in_registry):
    _, created = request()
    status, rejected = reject(created["id"], body={"comment": "metrics regressed"})
    assert status == 200 and rejected["state"] == "rejected" and rejected["rejected_by"] == "carol@contoso.com"
    assert rejected["history"][-1]["detail"]["comment"] == "metrics regressed"
    assert request()[0] == 201  # a closed request leaves room for a new one


# --- N-of-M approvals and expiry --------------------------------------------------------------------


@pytest.fixture
def two_approvals(local_app, tmp_path, monkeypatch):
    use_policy(monkeypatch, tmp_path, required_approvals=2)
    put_in_registry(local_app, REF)
    return request()[1]["id"]


def test_n_of_m_the_first_approval_answers_200_with_the_approvals_so_far(two_approvals):
    status, answer, jobs = approve(two_approvals, body={"comment": "ok by me"})
    assert status == 200 and jobs.values == []
    assert answer["state"] == "pending_approval" and answer["approvals"] == ["carol@contoso.com"]
    assert answer["history"][-1]["action"] == "approval"


def test_n_of_m_the_last_approval_answers_202_and_queues_one_job(two_approvals):
    approve(two_approvals)
    status, answer, jobs = approve(two_approvals, who=ERIN)
    assert status == 202 and answer["state"] == "approved"
    assert answer["approvals"] == ["carol@contoso.com", "erin@contoso.com"]
    assert jobs.values == [json.dumps({"promotion_id": two_approvals})]


def test_n_of_m_the_same_approver_twice_gets_409(two_approvals):
    approve(two_approvals)
    lookalike = identity(" CAROL@contoso.com\u200b", "{33333333-3333-3333-3333-333333333333}")
    for who in (CAROL, lookalike):
        status, answer, jobs = approve(two_approvals, who=who)
        assert status == 409 and "has approved" in answer["error"] and jobs.values == []
    assert get(two_approvals)[1]["approvals"] == ["carol@contoso.com"]


def test_n_of_m_a_rejection_by_any_approver_ends_it(two_approvals):
    approve(two_approvals)
    status, answer = reject(two_approvals, who=DAVE, body={"comment": "no"})
    assert status == 200 and answer["state"] == "rejected"
    assert approve(two_approvals, who=ERIN)[0] == 409


def test_an_expired_request_answers_409_and_becomes_expired(local_app, tmp_path, monkeypatch, app_clock):
    use_policy(monkeypatch, tmp_path, approval_ttl_hours=0.00001)  # 36 ms
    put_in_registry(local_app, REF)
    _, created = request()
    app_clock.advance(seconds=0.06)
    status, answer, jobs = approve(created["id"])
    assert status == 409 and "expired" in answer["error"] and "approval_ttl_hours" in answer["error"]
    assert jobs.values == []
    expired = get(created["id"])[1]
    assert expired["state"] == "expired" and expired["history"][-1]["action"] == "expired"
    status, again = request()
    assert status == 201 and again["id"] != created["id"]  # a new request is allowed after expiry


# --- rollback ---------------------------------------------------------------------------------------


def test_rollback_gives_the_traffic_back_at_once_on_the_local_backend(local_app):
    first = deployed(local_app, "1")
    second = deployed(local_app, "2")
    [endpoint] = backend(local_app).production.list()
    assert endpoint["traffic"] == {"taxi-fare-v2": 100}
    status, answer = rollback(second, body={"comment": "latency doubled"})
    assert status == 200 and answer["state"] == "rolled_back"
    assert [entry["action"] for entry in answer["history"]][-2:] == ["rolling_back", "rolled_back"]
    assert answer["history"][-2]["detail"]["comment"] == "latency doubled"
    assert backend(local_app).production.list()[0]["traffic"] == {"taxi-fare-v1": 100}
    assert get(first)[1]["state"] == "deployed"
    _, view = status_view(ModelRef("taxi-fare", "2"))
    assert [p["state"] for p in view["promotions"]] == ["rolled_back"]  # the status view shows it


def test_rollback_by_the_requester_is_allowed_when_an_approver(local_app):
    deployed(local_app, "1")
    second = deployed(local_app, "2")
    requester = identity("alice@contoso.com", ALICE_ID, roles=("Promotion.Approver",))
    assert rollback(second, who=requester, body={"comment": "emergency"})[0] == 200


def test_rollback_403_for_a_non_approver(local_app):
    deployed(local_app, "1")
    second = deployed(local_app, "2")
    status, answer = rollback(second, who=BOB, body={"comment": "mine"})
    assert status == 403 and "not an approver" in answer["error"]
    assert get(second)[1]["state"] == "deployed"


def test_rollback_409_with_nothing_to_roll_back_to(local_app):
    only = deployed(local_app, "1")
    status, answer = rollback(only, body={"comment": "back"})
    assert status == 409 and "nothing to roll back to" in answer["error"]
    assert get(only)[1]["state"] == "deployed"


def test_rollback_409_for_a_promotion_that_is_not_the_live_one(local_app):
    first = deployed(local_app, "1")
    deployed(local_app, "2")
    status, answer = rollback(first, body={"comment": "back"})
    assert status == 409 and "not the live one" in answer["error"]


def test_rollback_202_while_the_traffic_moves_and_the_timer_finishes_it(local_app):
    first = deployed(local_app, "1")
    second = deployed(local_app, "2")
    production = backend(local_app).production
    with pytest.MonkeyPatch.context() as azure_is_working:
        azure_is_working.setattr(production, "set_traffic", lambda endpoint, traffic: Progress.PENDING)
        status, answer = rollback(second, body={"comment": "latency doubled"})
        assert status == 202 and answer["state"] == "rolling_back"
        assert answer["deployment"]["rollback_traffic"] == {"taxi-fare-v1": 100}
        assert rollback(second, body={"comment": "again"})[0] == 409  # one rollback at a time
    user_function("advance_deployments")(timer())
    assert get(second)[1]["state"] == "rolled_back" and get(first)[1]["state"] == "deployed"
    assert production.list()[0]["traffic"] == {"taxi-fare-v1": 100}


def test_rollback_409_for_a_promotion_that_is_not_deployed(in_registry):
    _, created = request()
    status, answer = rollback(created["id"], body={"comment": "back"})
    assert status == 409 and "only a deployed promotion rolls back" in answer["error"]


def test_rollback_400_without_a_comment(local_app):
    deployed(local_app, "1")
    second = deployed(local_app, "2")
    for body in (None, {}, {"comment": "   "}, {"comment": "\u200b\u2060"}, {"comment": 7}):
        status, answer = rollback(second, body=body)
        assert status == 400, body
        assert "comment: required" in answer["error"] or "JSON object body" in answer["error"]
    assert get(second)[1]["state"] == "deployed"


# --- the status view --------------------------------------------------------------------------------


def test_the_status_view_shows_the_copy_and_decisions_newest_first(local_app):
    stage(local_app, REF)
    topic = local_app.settings().staging_workspace_id
    user_function("on_model_registered")(grid_event(REF, topic=topic, event_id="event-9"))
    status, view = status_view()
    assert status == 200 and view["copy"]["state"] == "copying" and view["registry"] is not None
    assert [(d["event_id"], d["outcome"]) for d in view["decisions"]] == [("event-9", "copy_started")]
    user_function("advance_registry_copies")(timer())
    _, view = status_view()
    assert view["copy"]["state"] == "copied" and view["copy"]["started_by"] == "event-9"
    assert [d["outcome"] for d in view["decisions"]] == ["copied", "copy_started"]  # newest first
    assert view["decisions"][0]["event_id"] == f"copy:{view['copy']['attempt']}"
    assert view["staging"]["tags"]["stage"] == "candidate"
    assert view["registry"]["tags"]["promotion.source_model"] == "taxi-fare:1"
    assert view["production"] == [] and view["promotions"] == []


def test_the_status_view_shows_promotions_and_production(local_app):
    promotion_id = deployed(local_app, "1")
    status, view = status_view()
    assert status == 200 and [p["id"] for p in view["promotions"]] == [promotion_id]
    assert [(d["endpoint"], d["deployment"], d["traffic"]) for d in view["production"]] == [
        ("taxi-fare-prod", "taxi-fare-v1", 100)
    ]


# --- 400: bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: http("request_promotion", "POST", "promotions", who=ALICE, raw_body=b"{oops"), "not valid JSON"),
        (lambda: http("request_promotion", "POST", "promotions", who=ALICE, raw_body=b"\xff\xfe"), "not UTF-8"),
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
        (lambda: request(model_version=True), "invalid model version"),
        (lambda: request(reason=42), "reason"),
        (lambda: request(reason="x" * 2001), "reason: at most 2000 characters"),
        (lambda: listing(state="done"), "state: not one of"),
        (lambda: _status_raw("a b", "1"), "invalid model name"),
        (lambda: _status_raw("taxi-fare", "../1"), "invalid model version"),
    ],
)
def test_400_names_the_field(in_registry, call, message):
    status, answer = call()
    assert status == 400 and message in answer["error"]
    assert answer["status"] == 400


def _status_raw(name, version):
    return http("model_status", "GET", "m", who=ALICE, route_params={"name": name, "version": version})


def test_400_a_body_nested_a_thousand_levels_deep(in_registry):
    body = b'{"model_name": "taxi-fare", "model_version": "1", "reason": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    status, answer = http("request_promotion", "POST", "promotions", who=ALICE, raw_body=body)
    assert status == 400 and "nests deeper" in answer["error"]
    assert listing()[1]["promotions"] == []


def test_400_a_body_nested_far_deeper_than_the_recursion_limit(in_registry):
    _, created = request()
    body = b'{"comment": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"  # under 64 KiB
    status, answer, jobs = approve(created["id"], raw_body=body)
    assert status == 400 and "nests deeper" in answer["error"] and jobs.values == []


def test_400_a_lone_surrogate(in_registry):
    status, answer = request(reason="\ud800")
    assert status == 400 and "lone surrogate" in answer["error"]
    assert listing()[1]["promotions"] == []


def test_400_a_lone_surrogate_in_a_key(in_registry):
    _, created = request()
    status, answer, jobs = approve(created["id"], raw_body=b'{"\\udfff": "x", "comment": "ok"}')
    assert status == 400 and "surrogate" in answer["error"] and jobs.values == []


@pytest.mark.parametrize("comment", ["ok\u0007", "\u001b[31mred\u001b[0m", "line\rforged log line", "nul\u0000"])
def test_400_control_characters_in_a_comment(in_registry, comment):
    _, created = request()
    status, answer, jobs = approve(created["id"], body={"comment": comment})
    assert status == 400 and "control characters" in answer["error"] and jobs.values == []
    assert get(created["id"])[1]["state"] == "pending_approval"


def test_new_lines_and_tabs_are_fine_in_a_comment(in_registry):
    _, created = request()
    status, answer, _ = approve(created["id"], body={"comment": "reviewed:\n\t- MAE\n\t- drift"})
    assert status == 202 and answer["history"][1]["detail"]["comment"] == "reviewed:\n\t- MAE\n\t- drift"


@pytest.mark.parametrize("comment", ["\u200b", "\u200b\u200d\ufeff", " \t\n ", "\u2060"])
def test_400_an_invisible_comment_is_no_rejection_reason(in_registry, comment):
    _, created = request()
    status, answer = reject(created["id"], body={"comment": comment})
    assert status == 400 and "comment: required" in answer["error"]
    assert get(created["id"])[1]["state"] == "pending_approval"


def test_400_reject_needs_a_comment(in_registry):
    _, created = request()
    status, answer = reject(created["id"])
    assert status == 400 and "JSON object body" in answer["error"]
    status, answer = reject(created["id"], body={})
    assert status == 400 and "comment: required" in answer["error"]


def test_400_a_custom_model_cannot_go_to_production_and_the_answer_says_why(local_app):
    put_in_registry(local_app, type="custom_model")
    status, answer = request()
    assert status == 400
    assert "custom_model" in answer["error"] and "mlflow_model and triton_model" in answer["error"]
    assert "scoring script" in answer["error"]
    assert listing()[1]["promotions"] == []


def test_a_triton_model_may_go_to_production(local_app):
    put_in_registry(local_app, type="triton_model")
    assert request()[0] == 201


# --- 413 --------------------------------------------------------------------------------------------


def test_413_a_body_over_64_kib(in_registry):
    status, answer = request(reason="x" * (64 * 1024))
    assert status == 413 and "64 KiB" in answer["error"]
    assert listing()[1]["promotions"] == []


@pytest.mark.parametrize("route", ["approve_promotion", "reject_promotion", "rollback_promotion"])
def test_413_on_every_route_that_takes_a_body(in_registry, route):
    _, created = request()
    call = {"approve_promotion": approve, "reject_promotion": reject, "rollback_promotion": rollback}[route]
    answer = call(created["id"], body={"comment": "y" * (65 * 1024)})
    assert answer[0] == 413
    assert get(created["id"])[1]["state"] == "pending_approval"


def test_a_body_of_exactly_64_kib_is_read(in_registry):
    empty = json.dumps({"model_name": "taxi-fare", "model_version": "1", "padding": ""}).encode()
    body = empty[:-2] + b"x" * (64 * 1024 - len(empty)) + empty[-2:]
    assert len(body) == 64 * 1024
    assert http("request_promotion", "POST", "promotions", who=ALICE, raw_body=body)[0] == 201


# --- 401: who is calling ----------------------------------------------------------------------------


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_401_on_every_route_when_identity_headers_are_not_trusted(in_registry, monkeypatch, route):
    monkeypatch.delenv("PROMOTION_TRUST_IDENTITY_HEADERS")
    status, answer = ROUTES[route](identity("carol@contoso.com", roles=("Promotion.Approver",)))
    assert status == 401 and "not trusted" in answer["error"]
    assert "PROMOTION_TRUST_IDENTITY_HEADERS" in answer["error"] and "WEBSITE_AUTH_ENABLED" in answer["error"]


@pytest.mark.parametrize("value", ["false", "", "FALSE"])
def test_401_when_the_opt_in_is_off(in_registry, monkeypatch, value):
    monkeypatch.setenv("PROMOTION_TRUST_IDENTITY_HEADERS", value)
    assert request()[0] == 401


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_401_on_every_route_without_an_identity(in_registry, route):
    status, answer = ROUTES[route]({})
    assert status == 401 and "no identity" in answer["error"]


def test_identity_headers_are_trusted_with_platform_authentication_in_azure(in_registry, monkeypatch):
    monkeypatch.delenv("PROMOTION_TRUST_IDENTITY_HEADERS")
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "instance-1")
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    assert request()[0] == 201
    assert listing()[0] == 200


def test_401_a_roles_claim_whose_value_is_a_list(in_registry):
    _, created = request()
    who = identity("erin@contoso.com", claims=[{"typ": "roles", "val": ["Promotion.Approver"]}])
    status, answer, jobs = approve(created["id"], who=who)
    assert status == 401 and "not a string" in answer["error"] and jobs.values == []


def test_401_a_name_claim_that_is_an_object(in_registry):
    who = {"X-MS-CLIENT-PRINCIPAL": encoded_principal([{"typ": "name", "val": {"first": "carol"}}])}
    status, answer = listing(who=who)
    assert status == 401 and "not a string" in answer["error"]


@pytest.mark.parametrize(
    "who",
    [
        {"X-MS-CLIENT-PRINCIPAL-NAME": "carol@contoso.com", "X-MS-CLIENT-PRINCIPAL": "%%% not base64 %%%"},
        {"X-MS-CLIENT-PRINCIPAL-NAME": "carol@contoso.com", "X-MS-CLIENT-PRINCIPAL": "W10="},  # "[]"
        {"X-MS-CLIENT-PRINCIPAL-NAME": "carol@contoso.com", "X-MS-CLIENT-PRINCIPAL-ID": "not-a-guid"},
        {"X-MS-CLIENT-PRINCIPAL-NAME": "\u200b \u2060"},
    ],
)
def test_401_a_malformed_principal(in_registry, who):
    assert listing(who=who)[0] == 401


def test_500_the_opt_in_is_refused_in_azure_naming_the_setting(in_registry, monkeypatch):
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "instance-1")
    for route, call in ROUTES.items():
        status, answer = call(CAROL)
        assert status == 500, route
        assert "PROMOTION_TRUST_IDENTITY_HEADERS" in answer["error"], route


# --- 403 --------------------------------------------------------------------------------------------


def test_403_for_non_approvers_and_for_the_requester(in_registry):
    _, created = request(who=CAROL)
    status, answer, jobs = approve(created["id"], who=BOB)
    assert status == 403 and "not an approver" in answer["error"] and jobs.values == []
    status, answer, jobs = approve(created["id"], who=CAROL)
    assert status == 403 and "requested this promotion" in answer["error"] and jobs.values == []
    status, answer = reject(created["id"], who=CAROL, body={"comment": "mine"})
    assert status == 403
    status, answer = reject(created["id"], who=BOB, body={"comment": "no"})
    assert status == 403
    still = get(created["id"])[1]
    assert still["state"] == "pending_approval" and len(still["history"]) == 1


@pytest.mark.parametrize(
    "who",
    [
        # the same principal name with another object id
        identity("alice@contoso.com", "99999999-9999-9999-9999-999999999999", roles=("Promotion.Approver",)),
        # the same name spelled differently: case, width, invisible characters, spaces
        identity(" ＡＬＩＣＥ@contoso.com\u200b", roles=("Promotion.Approver",)),
        # another name with the requester's object id (upper case, in braces)
        identity("mallory@contoso.com", "{" + ALICE_ID.upper() + "}", roles=("Promotion.Approver",)),
    ],
)
def test_403_the_requester_cannot_approve_their_own_request_under_another_spelling(in_registry, who):
    _, created = request()
    status, answer, jobs = approve(created["id"], who=who)
    assert status == 403 and "requested this promotion" in answer["error"] and jobs.values == []


# --- 404 --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("promotion_id", [UNKNOWN_ID, "../../etc", "x" * 500, "\u0000"])
def test_404_unknown_promotion(in_registry, promotion_id):
    status, answer = get(promotion_id)
    assert status == 404 and "no promotion" in answer["error"]
    assert approve(promotion_id)[0] == 404
    assert reject(promotion_id, body={"comment": "x"})[0] == 404
    assert rollback(promotion_id, body={"comment": "x"})[0] == 404


def test_404_a_model_not_in_the_registry_or_unknown(in_registry):
    status, answer = request(model_version="2")
    assert status == 404 and "taxi-fare:2 is not in the registry" in answer["error"]
    status, answer = status_view(ModelRef("nothing", "1"))
    assert status == 404 and "nothing:1 is unknown" in answer["error"]


# --- 409 --------------------------------------------------------------------------------------------


def test_409_for_impossible_state_changes(in_registry):
    _, created = request()
    approve(created["id"])
    status, answer, jobs = approve(created["id"], who=ERIN)
    assert status == 409 and "only a pending request can be decided" in answer["error"] and jobs.values == []
    status, answer = reject(created["id"], who=ERIN, body={"comment": "too late"})
    assert status == 409 and "approved" in answer["error"]


# --- 500 and 503: the app's own trouble, never a setting's value ------------------------------------


def test_500_names_the_broken_policy_without_its_path_or_a_traceback(in_registry, local_app, tmp_path, monkeypatch):
    _, created = request()
    broken = tmp_path / "secret-folder" / "policy.json"
    broken.parent.mkdir()
    broken.write_text('{"production": {"approvers": "carol"}}')
    monkeypatch.setenv("PROMOTION_POLICY_FILE", str(broken))
    local_app.reset()
    status, answer, jobs = approve(created["id"])
    assert status == 500 and "production.approvers: expected a list" in answer["error"] and jobs.values == []
    assert "PROMOTION_POLICY_FILE" in answer["error"] and "secret-folder" not in answer["error"]
    assert "Traceback" not in answer["error"]


@pytest.mark.parametrize(
    "connection",
    [
        "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=supersecret==",  # no such account name
        "DefaultEndpointsProtocol=https;AccountName=abcdef;AccountKey=supersecret",  # a key that is not base64
        "AccountKey=supersecret;garbage",
        "supersecret",
    ],
    ids=["account-name-x", "key-not-base64", "garbage", "no-pairs"],
)
@pytest.mark.parametrize("route", ["list_promotions", "request_promotion"])
def test_500_a_misconfigured_store_setting_is_named_never_shown(local_app, monkeypatch, caplog, connection, route):
    put_in_registry(local_app)
    monkeypatch.setenv("PROMOTION_STATE_STORE", "tables")
    monkeypatch.setenv("AzureWebJobsStorage", connection)
    local_app.reset()
    with caplog.at_level(logging.DEBUG):
        status, answer = ROUTES[route](ALICE)
    assert "supersecret" not in json.dumps(answer)
    assert "supersecret" not in caplog.text
    assert all("supersecret" not in str(record.args) for record in caplog.records)
    assert status == 500, answer
    assert "AzureWebJobsStorage" in answer["error"]


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_503_json_when_the_store_is_unreachable(local_app, monkeypatch, route):
    put_in_registry(local_app)
    monkeypatch.setenv("PROMOTION_STATE_STORE", "tables")
    monkeypatch.setenv("AzureWebJobsStorage", UNREACHABLE_TABLES)
    local_app.reset()
    began = time.monotonic()
    status, answer = ROUTES[route](CAROL)
    assert status == 503 and answer == {
        "error": "the promotion store is unavailable right now; retry later",
        "status": 503,
    }
    assert time.monotonic() - began < 10
