"""What the Functions host will index (get_function_json()): a broken decorator fails here, not in a deployment."""

from __future__ import annotations

import json
import re

import pytest

from promotion.triggers import drift, registry
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
    "detect_drift": drift.drift_schedule(),  # PROMOTION_DRIFT_SCHEDULE, hourly by default
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


ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE")


def route_clashes(function_jsons: dict[str, dict]) -> list[str]:
    """HTTP functions the host could not tell apart: the same method on the same route template, where routes
    compare case-insensitively and parameter names do not matter (`promotions/{id}` is `promotions/{pid}`), and
    a trigger without methods takes them all."""
    seen: dict[tuple[str, str], str] = {}
    clashes = []
    for name, document in sorted(function_jsons.items()):
        for binding in document["bindings"]:
            if binding["type"] != "httpTrigger":
                continue
            route = re.sub(r"\{[^}]*\}", "{}", (binding.get("route") or name).strip("/").lower())
            for method in [m.upper() for m in binding.get("methods") or ALL_METHODS]:
                other = seen.setdefault((route, method), name)
                if other != name:
                    clashes.append(f"{method} {route}: {other} and {name}")
    return clashes


def test_no_two_http_functions_share_a_route_and_method():
    """From the indexed functions, so a route added later is checked too."""
    indexed = {name: function_json(name) for name in FUNCTIONS}
    assert route_clashes(indexed) == []


@pytest.mark.parametrize(
    ("route", "methods"),
    [("promotions/{pid}", ["GET"]), ("Promotions", ["POST"]), ("/promotions/{x}/approve/", ["POST"]), ("me2", None)],
)
def test_the_route_check_catches_a_clash(route, methods):
    indexed = {name: function_json(name) for name in FUNCTIONS}
    twin = {"bindings": [{"type": "httpTrigger", "route": route, **({"methods": methods} if methods else {})}]}
    if methods is None:  # no methods: every method, so it clashes with any function on that route
        indexed["someone"] = {"bindings": [{"type": "httpTrigger", "route": "me2", "methods": ["GET"]}]}
    assert route_clashes({**indexed, "a_later_function": twin}) != []


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
