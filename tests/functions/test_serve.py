"""`promotion serve` without a browser: routing through the indexed functions, the identity it injects (and the
ones it drops), the in-process queue with its poison handler, the NCRONTAB timers, and what the command refuses."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import datetime, timezone

import pytest

from promotion import cli
from promotion.cli.serve import Identity, LocalApp, cron_due, cron_fields
from promotion.domain import ModelRef
from tests.functions.conftest import FUNCTIONS, share

CAROL = Identity("carol@contoso.com")


@pytest.fixture
def served(local_app):
    app = LocalApp(FUNCTIONS, port=0, identity=Identity("alice@contoso.com", ("Promotion.Approver",))).start()
    yield app
    app.stop()


def call(served, method, path, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{served.url}{path}", data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_it_listens_on_127_0_0_1_only(served):
    assert served.server.server_address[0] == "127.0.0.1"


def test_the_identity_is_the_servers_and_a_clients_own_headers_are_dropped(served):
    status, _, body = call(served, "GET", "/api/me", headers={"X-MS-CLIENT-PRINCIPAL-NAME": "mallory"})
    me = json.loads(body)
    assert status == 200 and me["name"] == "alice@contoso.com" and me["roles"] == ["Promotion.Approver"]
    served.identity = None
    status, _, body = call(served, "GET", "/api/me", headers={"X-MS-CLIENT-PRINCIPAL-NAME": "mallory"})
    assert status == 401 and "no identity" in json.loads(body)["error"]


def test_routes_params_and_methods_as_the_host_has_them(served):
    status, headers, body = call(served, "GET", "/api/console?promotion=x")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8" and b"app.js" in body
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert call(served, "GET", "/api/promotions?page_size=0")[0] == 400  # query parameters reach the function
    assert call(served, "DELETE", "/api/promotions")[0] == 405
    assert call(served, "GET", "/api/nothing")[0] == 404
    assert call(served, "GET", "/elsewhere")[0] == 404
    status, _, body = call(served, "GET", "/.auth/login/aad?post_login_redirect_uri=%2Fapi%2Fconsole")
    assert status == 401 and b"--as NAME" in body


def test_an_approval_deploys_at_once_through_the_in_process_queue(served, local_app):
    share(local_app, ModelRef("taxi-fare", "1"))
    _, _, body = call(served, "POST", "/api/promotions", {"model_name": "taxi-fare", "model_version": "1"})
    promotion_id = json.loads(body)["id"]
    served.identity = CAROL
    assert call(served, "POST", f"/api/promotions/{promotion_id}/approve", {})[0] == 202
    assert served.wait_idle()
    assert local_app.store().get(promotion_id).state.value == "deployed"


def test_a_job_that_fails_five_times_goes_to_the_poison_handler(served, local_app, monkeypatch):
    share(local_app, ModelRef("taxi-fare", "1"))
    _, _, body = call(served, "POST", "/api/promotions", {"model_name": "taxi-fare", "model_version": "1"})
    promotion_id = json.loads(body)["id"]
    attempts = []
    registry = local_app.backend().registry
    read = registry.get

    def unreachable_after_the_approval(ref):
        attempts.append(ref)
        if len(attempts) == 1:
            return read(ref)  # the approval's own check of the artifact
        raise ConnectionError("the registry is unreachable")

    # the job reads the registry version again before it starts anything, and fails there
    monkeypatch.setattr(registry, "get", unreachable_after_the_approval)
    served.identity = CAROL
    assert call(served, "POST", f"/api/promotions/{promotion_id}/approve", {})[0] == 202
    assert served.wait_idle()
    promotion = local_app.store().get(promotion_id)
    assert len(attempts) == 1 + 5
    assert promotion.state.value == "failed" and "promotion-jobs-poison" in promotion.error


def test_timers_run_on_their_schedules(served):
    assert set(served.timers) == {
        "advance_registry_copies",
        "reconcile_registry",
        "advance_deployments",
        "publish_lifecycle_events",
        "detect_drift",
    }
    minute = datetime(2026, 1, 1, 10, 5, 0, tzinfo=timezone.utc)
    assert cron_due(served.timers["advance_deployments"], minute)
    assert not cron_due(served.timers["advance_deployments"], minute.replace(second=1))
    assert not cron_due(served.timers["reconcile_registry"], minute)  # hourly
    assert cron_due(served.timers["reconcile_registry"], minute.replace(minute=0))


@pytest.mark.parametrize(
    ("schedule", "moment", "due"),
    [
        ("0 */5 * * * *", (2026, 1, 1, 10, 15, 0), True),
        ("0 */5 * * * *", (2026, 1, 1, 10, 16, 0), False),
        ("30 0 9-17 * * 1-5", (2026, 1, 2, 12, 0, 30), True),  # a Friday
        ("30 0 9-17 * * 1-5", (2026, 1, 3, 12, 0, 30), False),  # a Saturday
        ("0 0 0 1,15 * *", (2026, 3, 15, 0, 0, 0), True),
    ],
)
def test_ncrontab(schedule, moment, due):
    assert cron_due(cron_fields(schedule), datetime(*moment, tzinfo=timezone.utc)) is due


@pytest.mark.parametrize("schedule", ["* * * * *", "61 * * * * *", "a * * * * *", "0 5-1 * * * *"])
def test_ncrontab_refuses_what_it_cannot_read(schedule):
    with pytest.raises(ValueError):
        cron_fields(schedule)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--role", "Promotion.Approver"], "--role needs --as NAME"),
        (["serve", "--as", "\u200b "], "--as: expected a name with visible characters"),
        (["serve", "--port", "70000"], "--port 70000"),
    ],
)
def test_serve_refuses_bad_arguments(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_serve_refuses_to_run_in_azure(monkeypatch, capsys):
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "abc")
    assert cli.main(["serve", "--as", "carol@contoso.com"]) == 2
    assert "may not run in Azure (WEBSITE_INSTANCE_ID is set)" in capsys.readouterr().err
