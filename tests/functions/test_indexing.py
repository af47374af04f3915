"""What the Functions host will index: a broken decorator fails here, not in a deployment."""

import json

from tests.functions.conftest import FUNCTIONS


def bindings(name):
    return {binding["name"]: binding for binding in json.loads(FUNCTIONS[name].get_function_json())["bindings"]}


def test_function_names_are_the_public_ones():
    assert set(FUNCTIONS) == {
        "on_model_registered",
        "request_promotion",
        "list_promotions",
        "get_promotion",
        "approve_promotion",
        "reject_promotion",
        "model_status",
        "deploy_promotion",
        "deploy_promotion_poison",
        "advance_deployments",
    }


def test_event_grid_trigger():
    assert bindings("on_model_registered") == {
        "event": {"direction": "IN", "type": "eventGridTrigger", "name": "event"}
    }


def test_http_routes_methods_and_auth_level():
    expected = {
        "request_promotion": ("promotions", ["POST"]),
        "list_promotions": ("promotions", ["GET"]),
        "get_promotion": ("promotions/{id}", ["GET"]),
        "approve_promotion": ("promotions/{id}/approve", ["POST"]),
        "reject_promotion": ("promotions/{id}/reject", ["POST"]),
        "model_status": ("models/{name}/versions/{version}", ["GET"]),
    }
    for name, (route, methods) in expected.items():
        trigger = bindings(name)["req"]
        assert (trigger["type"], trigger["route"], trigger["methods"], trigger["authLevel"]) == (
            "httpTrigger",
            route,
            methods,
            "FUNCTION",
        )


def test_approval_queues_the_job_through_an_output_binding():
    assert bindings("approve_promotion")["jobs"] == {
        "direction": "OUT",
        "type": "queue",
        "name": "jobs",
        "queueName": "promotion-jobs",
        "connection": "AzureWebJobsStorage",
    }


def test_queue_and_timer_triggers():
    assert bindings("deploy_promotion")["message"]["queueName"] == "promotion-jobs"
    assert bindings("deploy_promotion_poison")["message"]["queueName"] == "promotion-jobs-poison"
    assert bindings("advance_deployments")["timer"]["type"] == "timerTrigger"
