"""What the Functions host will index (get_function_json()): a broken decorator fails here, not in a deployment."""

from __future__ import annotations

import json

import pytest

from promotion.triggers import registry
from tests.functions.conftest import FUNCTIONS, returns_value

HTTP_ROUTES = {
    "request_promotion": ("promotions", ["POST"]),
    "list_promotions": ("promotions", ["GET"]),
    "get_promotion": ("promotions/{id}", ["GET"]),
    "approve_promotion": ("promotions/{id}/approve", ["POST"]),
    "reject_promotion": ("promotions/{id}/reject", ["POST"]),
    "rollback_promotion": ("promotions/{id}/rollback", ["POST"]),
    "model_status": ("models/{name}/versions/{version}", ["GET"]),
    "who_am_i": ("me", ["GET"]),
    "console_page": ("console", ["GET"]),
    "console_asset": ("console/{asset}", ["GET"]),
}
TIMERS = {
    "advance_registry_copies": "0 */1 * * * *",
    "reconcile_registry": registry.reconcile_schedule(),  # PROMOTION_RECONCILE_SCHEDULE, hourly by default
    "advance_deployments": "0 */1 * * * *",
    "publish_lifecycle_events": "0 */1 * * * *",
}
QUEUES = {"deploy_promotion": "promotion-jobs", "deploy_promotion_poison": "promotion-jobs-poison"}


def function_json(name):
    return json.loads(FUNCTIONS[name].get_function_json())


def bindings(name):
    return {binding["name"]: binding for binding in function_json(name)["bindings"]}


def test_function_names_are_the_public_ones():
    assert set(FUNCTIONS) == {"on_model_registered", *HTTP_ROUTES, *TIMERS, *QUEUES}


def test_every_function_lives_in_function_app_py():
    assert {function_json(name)["scriptFile"] for name in FUNCTIONS} == {"function_app.py"}


def test_event_grid_trigger():
    assert bindings("on_model_registered") == {
        "event": {"direction": "IN", "type": "eventGridTrigger", "name": "event"}
    }


@pytest.mark.parametrize("name", sorted(HTTP_ROUTES))
def test_http_routes_methods_and_auth_level(name):
    route, methods = HTTP_ROUTES[name]
    trigger = bindings(name)["req"]
    assert (trigger["direction"], trigger["type"], trigger["route"], trigger["methods"], trigger["authLevel"]) == (
        "IN",
        "httpTrigger",
        route,
        methods,
        "ANONYMOUS",  # the browser session is the credential; the API checks identity itself (401 without it)
    )
    assert bindings(name)["$return"] == {"direction": "OUT", "type": "http", "name": "$return"}


def test_no_two_http_functions_share_a_route_and_method():
    pairs = [(route, method) for route, methods in HTTP_ROUTES.values() for method in methods]
    assert len(pairs) == len(set(pairs))


def test_approval_queues_the_job_through_an_output_binding():
    assert bindings("approve_promotion")["jobs"] == {
        "direction": "OUT",
        "type": "queue",
        "name": "jobs",
        "queueName": "promotion-jobs",
        "connection": "AzureWebJobsStorage",
    }


@pytest.mark.parametrize("name", sorted(QUEUES))
def test_queue_triggers(name):
    assert bindings(name) == {
        "message": {
            "direction": "IN",
            "type": "queueTrigger",
            "name": "message",
            "queueName": QUEUES[name],
            "connection": "AzureWebJobsStorage",
        }
    }


@pytest.mark.parametrize("name", sorted(TIMERS))
def test_timer_triggers_and_their_schedules(name):
    assert bindings(name) == {
        "timer": {
            "direction": "IN",
            "type": "timerTrigger",
            "name": "timer",
            "schedule": TIMERS[name],
            "runOnStartup": False,
        }
    }


def test_only_http_functions_return_a_value():
    assert {name for name in FUNCTIONS if returns_value(name)} == set(HTTP_ROUTES)


def test_the_user_functions_are_reachable():
    for name, function in FUNCTIONS.items():
        assert callable(function.get_user_function()), name
