"""What the approver console needs from the app: its page and assets with their security headers, GET /api/me,
paged and filtered lists, live traffic in the status view, the cross-site check on every state change, and the
console link in lifecycle events."""

from __future__ import annotations

import json

import azure.functions as func
import pytest

from promotion.domain import ModelRef
from promotion.settings import SettingsError, configured_origin, public_origin
from tests.functions.conftest import Output, http, identity, share, use_policy, user_function

ALICE = identity("alice@contoso.com", "11111111-1111-1111-1111-111111111111")
CAROL = identity("carol@contoso.com", "33333333-3333-3333-3333-333333333333")
ERIN = identity("erin@contoso.com", roles=("Promotion.Approver",))
BOB = identity("bob@contoso.com")
HOST = {"Host": "promo.azurewebsites.net"}


def page(name: str, route: str, **route_params: str) -> func.HttpResponse:
    request = func.HttpRequest("GET", f"http://localhost:7071/api/{route}", body=b"", route_params=route_params)
    response = user_function(name)(request)
    assert isinstance(response, func.HttpResponse)
    return response


def request_sharing(ref: ModelRef, who=ALICE, headers=None, reason="better"):
    body = {"model_name": ref.name, "model_version": ref.version, "reason": reason}
    return http("request_promotion", "POST", "promotions", who={**who, **(headers or {})}, body=body)


# --- the page ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "route", "params", "mimetype", "needle"),
    [
        ("console_page", "console", {}, "text/html", b'<script type="module" src="/api/console/app.js">'),
        ("console_asset", "console/app.js", {"asset": "app.js"}, "text/javascript", b"textContent"),
        ("console_asset", "console/app.css", {"asset": "app.css"}, "text/css", b"@media"),
    ],
)
def test_the_console_is_served_without_identity_with_its_security_headers(name, route, params, mimetype, needle):
    response = page(name, route, **params)
    assert response.status_code == 200 and response.mimetype == mimetype and needle in response.get_body()
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self';" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert not any(key.lower().startswith("access-control-") for key in dict(response.headers))


def test_the_page_has_no_inline_script_or_style_and_no_outside_address():
    html = page("console_page", "console").get_body().decode()
    assert "<script>" not in html and "style=" not in html and " onclick=" not in html
    assert "http://" not in html and "https://" not in html
    script = page("console_asset", "console/app.js", asset="app.js").get_body().decode()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "eval(" not in script


@pytest.mark.parametrize("asset", ["index.html", "../function_app.py", "app.js.map", ""])
def test_404_for_anything_but_the_two_assets(asset):
    response = page("console_asset", f"console/{asset}", asset=asset)
    assert response.status_code == 404 and response.mimetype == "text/plain"


# --- GET /api/me ---------------------------------------------------------------------------------------


def test_me_names_the_caller_and_whether_the_policy_makes_them_an_approver(local_app, app_clock):
    status, me = http("who_am_i", "GET", "me", who=ERIN)
    assert status == 200
    assert me["name"] == "erin@contoso.com" and me["roles"] == ["Promotion.Approver"] and me["may_approve"] is True
    assert me["required_approvals"] == 1 and me["approval_ttl_hours"] == 168
    assert me["now"].startswith("2026-11-26T12:00")  # the app's clock, so the page computes ages with it
    assert http("who_am_i", "GET", "me", who=CAROL)[1]["may_approve"] is True  # listed by name in the policy
    assert http("who_am_i", "GET", "me", who=BOB)[1]["may_approve"] is False


def test_me_answers_401_without_a_trusted_identity(local_app, monkeypatch):
    assert http("who_am_i", "GET", "me", who={})[0] == 401
    monkeypatch.delenv("PROMOTION_TRUST_IDENTITY_HEADERS")
    status, answer = http("who_am_i", "GET", "me", who=ERIN)
    assert status == 401 and "not trusted" in answer["error"]


def test_me_follows_the_policy(local_app, tmp_path, monkeypatch):
    use_policy(monkeypatch, tmp_path, approvers=[], approver_roles=["Other.Role"], required_approvals=2)
    _, me = http("who_am_i", "GET", "me", who=ERIN)
    assert me["may_approve"] is False and me["required_approvals"] == 2


# --- paging and filters --------------------------------------------------------------------------------


def test_pages_are_newest_first_and_carry_on_with_the_continuation(local_app, app_clock):
    refs = [ModelRef("taxi-fare", str(n)) for n in range(1, 6)]
    for ref in refs:
        share(local_app, ref)
        request_sharing(ref)
        app_clock.advance(minutes=1)
    share(local_app, ModelRef("churn", "1"))
    request_sharing(ModelRef("churn", "1"))

    seen, token = [], None
    while True:
        params = {"model": "taxi-fare", "page_size": "2", **({"continuation": token} if token else {})}
        status, answer = http("list_promotions", "GET", "promotions", who=ALICE, params=params)
        assert status == 200 and len(answer["promotions"]) <= 2
        seen += [p["model_version"] for p in answer["promotions"]]
        token = answer["continuation"]
        if token is None:
            break
    assert seen == ["5", "4", "3", "2", "1"]
    _, one = http("list_promotions", "GET", "promotions", who=ALICE, params={"model": "taxi-fare", "version": "3"})
    assert [p["model_version"] for p in one["promotions"]] == ["3"] and one["continuation"] is None
    _, everything = http("list_promotions", "GET", "promotions", who=ALICE)
    assert [p["model_name"] for p in everything["promotions"]][0] == "churn" and len(everything["promotions"]) == 6


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"page_size": "0"}, "page_size: a whole number from 1 to 200"),
        ({"page_size": "201"}, "page_size: a whole number from 1 to 200"),
        ({"page_size": "ten"}, "page_size: a whole number from 1 to 200"),
        ({"page_size": "٣"}, "page_size: a whole number from 1 to 200"),
        ({"continuation": "garbage!"}, "continuation: not a token this listing gave out"),
        ({"version": "1"}, "version: needs model"),
        ({"model": "<img src=x>"}, "model name"),
        ({"state": "done"}, "state: not one of"),
    ],
)
def test_400_for_a_bad_listing_parameter(local_app, params, message):
    status, answer = http("list_promotions", "GET", "promotions", who=ALICE, params=params)
    assert status == 400 and message in answer["error"]


# --- the status view: what production serves now ---------------------------------------------------------


def test_the_status_view_shows_what_the_target_endpoint_serves_now(local_app):
    live, candidate = ModelRef("taxi-fare", "1"), ModelRef("taxi-fare", "2")
    for ref in (live, candidate):
        share(local_app, ref)
    _, first = request_sharing(live)
    jobs = Output()
    http("approve_promotion", "POST", "x", who=CAROL, route_params={"id": first["id"]}, jobs=jobs)
    user_function("deploy_promotion")(func.QueueMessage(body=jobs.get().encode()))
    request_sharing(candidate)

    route = {"name": candidate.name, "version": candidate.version}
    status, view = http("model_status", "GET", "models/taxi-fare/versions/2", who=ALICE, route_params=route)

    assert status == 200 and view["production"] == []
    [serving] = view["serving"]
    assert serving["endpoint"] == "taxi-fare-prod" and serving["exists"] is True
    assert [(t["percent"], t["model"]) for t in serving["traffic"]] == [(100, "taxi-fare:1")]


# --- cross-site requests -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},  # curl and scripts send neither header
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "same-origin", "Origin": "https://promo.azurewebsites.net"},
        {"Origin": "https://PROMO.azurewebsites.net"},
    ],
)
def test_same_origin_and_header_less_requests_are_allowed(local_app, headers):
    share(local_app, ModelRef("taxi-fare", "1"))
    assert request_sharing(ModelRef("taxi-fare", "1"), headers={**HOST, **headers})[0] == 201


@pytest.mark.parametrize(
    ("headers", "shown"),
    [
        ({"Sec-Fetch-Site": "cross-site"}, "'cross-site'"),
        ({"Sec-Fetch-Site": "same-site"}, "'same-site'"),
        ({"Sec-Fetch-Site": "none"}, "'none'"),
        ({"Origin": "null"}, "origin null"),
        ({"Origin": "https://evil.example"}, "origin https://evil.example"),
        ({"Origin": "http://promo.azurewebsites.net"}, "origin http://promo.azurewebsites.net"),
        ({"Sec-Fetch-Site": "same-origin", "Origin": "https://evil.example"}, "evil.example"),
    ],
)
def test_403_for_a_cross_site_request_on_every_state_change(local_app, headers, shown):
    share(local_app, ModelRef("taxi-fare", "1"))
    status, answer = request_sharing(ModelRef("taxi-fare", "1"), headers={**HOST, **headers})
    assert status == 403 and "cross-site request refused" in answer["error"] and shown in answer["error"]
    _, created = request_sharing(ModelRef("taxi-fare", "1"))
    assert created["approvals"] == []  # nothing was written by the refused request
    pid = created["id"]
    for name, route, kwargs in [
        ("approve_promotion", "approve", {"jobs": Output()}),
        ("reject_promotion", "reject", {}),
        ("rollback_promotion", "rollback", {}),
    ]:
        who = {**CAROL, **HOST, **headers}
        status, answer = http(name, "POST", route, who=who, body={"comment": "x"}, route_params={"id": pid}, **kwargs)
        assert status == 403 and "cross-site request refused" in answer["error"], name


def test_another_port_of_127_0_0_1_is_not_the_same_origin(local_app):
    share(local_app, ModelRef("taxi-fare", "1"))
    local = {"Host": "127.0.0.1:7071"}
    other = request_sharing(ModelRef("taxi-fare", "1"), headers={**local, "Origin": "http://127.0.0.1:8080"})
    assert other[0] == 403
    assert request_sharing(ModelRef("taxi-fare", "1"), headers={**local, "Origin": "http://127.0.0.1:7071"})[0] == 201


def test_the_configured_public_origin_is_allowed_behind_a_custom_domain(local_app, monkeypatch):
    share(local_app, ModelRef("taxi-fare", "1"))
    monkeypatch.setenv("PROMOTION_PUBLIC_ORIGIN", "https://promo.contoso.com/")
    headers = {**HOST, "Origin": "https://promo.contoso.com", "Sec-Fetch-Site": "same-origin"}
    assert request_sharing(ModelRef("taxi-fare", "1"), headers=headers)[0] == 201


# --- PROMOTION_PUBLIC_ORIGIN and the console link ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "origin"),
    [
        ("https://promo.contoso.com", "https://promo.contoso.com"),
        ("https://promo.contoso.com:8443/", "https://promo.contoso.com:8443"),
        ("http://127.0.0.1:7071", "http://127.0.0.1:7071"),
        ("http://localhost:7071", "http://localhost:7071"),
    ],
)
def test_public_origin_accepts_https_and_local_http(value, origin):
    assert configured_origin({"PROMOTION_PUBLIC_ORIGIN": value}) == origin


@pytest.mark.parametrize(
    "value",
    ["http://promo.contoso.com", "ftp://x", "https://promo.contoso.com/app", "https://u:p@x.com", "promo", "https://"],
)
def test_public_origin_refuses_anything_else_naming_the_setting(value):
    with pytest.raises(SettingsError, match="setting PROMOTION_PUBLIC_ORIGIN must be an origin"):
        configured_origin({"PROMOTION_PUBLIC_ORIGIN": value})


def test_public_origin_in_azure_defaults_to_the_site_host_and_is_unset_locally():
    assert public_origin({"WEBSITE_HOSTNAME": "app.azurewebsites.net", "WEBSITE_INSTANCE_ID": "1"}) == (
        "https://app.azurewebsites.net"
    )
    assert public_origin({"WEBSITE_HOSTNAME": "app.azurewebsites.net"}) is None
    assert public_origin({}) is None


def test_lifecycle_events_link_to_the_console_when_the_app_knows_its_address(
    local_app, monkeypatch, eventgrid_receiver
):
    monkeypatch.setenv("PROMOTION_EVENTS_ENDPOINT", eventgrid_receiver.url)
    monkeypatch.setenv("PROMOTION_EVENTS_KEY", "a-test-access-key")
    monkeypatch.setenv("PROMOTION_PUBLIC_ORIGIN", "https://promo.contoso.com")
    local_app.reset()
    share(local_app, ModelRef("taxi-fare", "1"))
    _, created = request_sharing(ModelRef("taxi-fare", "1"))

    [requested] = [e for e in eventgrid_receiver.events if e["type"].endswith("ApprovalRequested")]
    assert requested["data"]["console_url"] == f"https://promo.contoso.com/api/console?promotion={created['id']}"
    assert json.dumps(requested["data"]).count("console_url") == 1


def test_a_bad_public_origin_answers_500_naming_the_setting_not_its_value(local_app, monkeypatch):
    share(local_app, ModelRef("taxi-fare", "1"))
    monkeypatch.setenv("PROMOTION_PUBLIC_ORIGIN", "http://secret-host.example")
    status, answer = request_sharing(ModelRef("taxi-fare", "1"), headers={**HOST, "Origin": "https://x.example"})
    assert status == 500 and "PROMOTION_PUBLIC_ORIGIN" in answer["error"]
    assert "secret-host" not in answer["error"]
