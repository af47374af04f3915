"""Every indexed function, invoked through the Functions Python worker (azure-functions-runtime on Python 3.13),
in one worker process, on the shipped files and the deployment's packages only.

Indexing alone imports only the trigger modules: the service layer, the stores and the adapters load at the first
invocation. So a function that is indexed but never invoked here could hide an import error, or a binding the
runtime cannot convert, until it runs in Azure. The cases come from the worker's own index: an indexed function
without a case fails the test, so a function added later must bring its case along.

The run is the local backend (no Azure) with SQLite, identity headers trusted (a developer's machine), and a real
Event Grid receiver on 127.0.0.1 as the topic, so the publisher really publishes.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.eventgrid_receiver import EventGridReceiver
from tests.worker.test_worker_indexing import (
    ROOT,
    SAMPLE_EVENTS,
    WorkerRun,
    plant,
    run_worker,
)

# (name, object id): carol approves by name in promotion-policy.json; alice requests.
CAROL = ("carol@contoso.com", "33333333-3333-3333-3333-333333333333")
ALICE = ("alice@contoso.com", "11111111-1111-1111-1111-111111111111")
TOPIC_KEY = "local-topic-key"
QUEUE_METADATA = {
    "Id": {"string": "7b0c0a2e-0000-4000-8000-000000000001"},
    "DequeueCount": {"json": "1"},
    "InsertionTime": {"string": "2026-11-26T18:00:00+00:00"},
    "ExpirationTime": {"string": "2026-12-03T18:00:00+00:00"},
    "NextVisibleTime": {"string": "2026-11-26T18:00:30+00:00"},
    "PopReceipt": {"string": "receipt"},
}
TIMER = {"json": json.dumps({"Schedule": {"AdjustForDST": True}, "ScheduleStatus": None, "IsPastDue": False})}


def _http(
    method: str, route: str, *, who: tuple[str, str] = ALICE, body: Any = None, params: dict | None = None
) -> dict:
    principal = base64.b64encode(json.dumps({"auth_typ": "aad", "claims": []}).encode()).decode()
    return {
        "http": {
            "method": method,
            "url": f"http://localhost:7071/api/{route}",
            "headers": {
                "content-type": "application/json",
                "x-ms-client-principal-name": who[0],
                "x-ms-client-principal-id": who[1],
                "x-ms-client-principal": principal,
            },
            "params": params or {},
            "query": {},
            "body": "" if body is None else json.dumps(body),
        }
    }


def _event() -> dict:
    [event] = json.loads(SAMPLE_EVENTS.read_text(encoding="utf-8"))
    return {"json": json.dumps(event)}


def _job() -> dict:
    return {"string": json.dumps({"promotion_id": "{id}"})}


# What each function is given, in the order a model goes through the app, and the HTTP statuses each answer may
# have. HTTP functions are found by method and route (a later step may use `{id}`, the promotion created above);
# the others by name. A case whose function is not indexed (yet) does not run.
NAMED: list[tuple[str, Callable[[], dict], dict]] = [
    ("on_model_registered", _event, {}),
    ("advance_registry_copies", lambda: TIMER, {}),
    ("publish_lifecycle_events", lambda: TIMER, {}),  # the copy's event, if the copy's own attempt left it
    ("reconcile_registry", lambda: TIMER, {}),
]
ROUTES: list[tuple[str, str, Callable[[], dict], tuple[int, ...]]] = [
    (
        "POST",
        "promotions",
        lambda: _http("POST", "promotions", body={"model_name": "taxi-fare", "model_version": "1"}),
        (201,),
    ),
    ("GET", "promotions", lambda: _http("GET", "promotions"), (200,)),
    ("GET", "promotions/{id}", lambda: _http("GET", "promotions/{id}", params={"id": "{id}"}), (200,)),
    (
        "GET",
        "models/{name}/versions/{version}",
        lambda: _http("GET", "models/taxi-fare/versions/1", params={"name": "taxi-fare", "version": "1"}),
        (200,),
    ),
    ("GET", "me", lambda: _http("GET", "me"), (200,)),
    ("GET", "console", lambda: _http("GET", "console"), (200,)),
    (
        "GET",
        "console/{asset}",
        lambda: _http("GET", "console/app.js", params={"asset": "app.js"}),
        (200,),
    ),
    (
        "POST",
        "promotions/{id}/approve",
        lambda: _http("POST", "promotions/{id}/approve", who=CAROL, body={"comment": "ok"}, params={"id": "{id}"}),
        (202,),
    ),
]
AFTER_APPROVAL: list[tuple[str, Callable[[], dict], dict]] = [
    ("deploy_promotion", _job, QUEUE_METADATA),
    ("advance_deployments", lambda: TIMER, {}),
    ("detect_drift", lambda: TIMER, {}),
    ("deploy_promotion_poison", _job, QUEUE_METADATA),  # the job got through: left alone
    ("publish_lifecycle_events", lambda: TIMER, {}),
]
CLOSING_ROUTES: list[tuple[str, str, Callable[[], dict], tuple[int, ...]]] = [
    (
        "POST",
        "promotions/{id}/rollback",
        lambda: _http("POST", "promotions/{id}/rollback", who=CAROL, body={"comment": "x"}, params={"id": "{id}"}),
        (409,),  # nothing else was live before it
    ),
    (
        "POST",
        "promotions/{id}/reject",
        lambda: _http("POST", "promotions/{id}/reject", who=CAROL, body={"comment": "x"}, params={"id": "{id}"}),
        (409,),  # it is not pending any more
    ),
]


def trigger_argument(function: dict[str, Any]) -> str:
    """The parameter the trigger binds to, from the worker's index (`timer`, `event`, `req`, `message`, …)."""
    [name] = [name for name, binding in function["bindings"].items() if binding["type"].endswith("Trigger")]
    return name


def http_trigger(function: dict[str, Any]) -> tuple[list[str], str] | None:
    for binding in function["raw_bindings"]:
        if binding.get("type") == "httpTrigger":
            return [m.upper() for m in binding.get("methods") or []], binding.get("route") or ""
    return None


def build_plan(functions: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, tuple[int, ...]], list[str]]:
    """The invocations for the indexed functions, the statuses each HTTP function may answer, and the functions
    the cases leave out."""
    by_route = {}
    for name, function in functions.items():
        trigger = http_trigger(function)
        for method in (trigger or ([], ""))[0]:
            by_route[(method, trigger[1])] = name
    plan: list[dict[str, Any]] = []
    statuses: dict[str, tuple[int, ...]] = {}

    def named(cases: list) -> None:
        for name, payload, metadata in cases:
            if name in functions:
                inputs = {trigger_argument(functions[name]): payload()}
                plan.append({"function": name, "inputs": inputs, "metadata": metadata})

    def routes(cases: list) -> None:
        for method, route, request, answers in cases:
            name = by_route.get((method, route))
            if name is not None:
                plan.append({"function": name, "inputs": {trigger_argument(functions[name]): request()}})
                statuses[name] = answers

    named(NAMED)
    routes(ROUTES)
    named(AFTER_APPROVAL)
    routes(CLOSING_ROUTES)
    missing = sorted(set(functions) - {step["function"] for step in plan})
    return plan, statuses, missing


def seed_staging(state: Path) -> None:
    """The model the sample event names, registered in the local staging workspace (the CLI of this checkout)."""
    register = subprocess.run(
        [sys.executable, "-m", "promotion", "local", "register", "--name", "taxi-fare", "--version", "1"]
        + ["--path", str(ROOT / "samples" / "models" / "taxi-fare"), "--tag", "stage=candidate"]
        + ["--tag", "accuracy=0.91"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PROMOTION_BACKEND": "local", "PROMOTION_LOCAL_ROOT": str(state)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert register.returncode == 0, register.stderr


def invoke_everything(python: Path, app: Path, work: Path, functions: dict[str, Any], receiver) -> WorkerRun:
    plan, _, missing = build_plan(functions)
    assert missing == [], f"indexed functions with no invocation case in {Path(__file__).name}: {missing}"
    seed_staging(work / "state")
    plan_file = work / "plan.json"
    plan_file.write_text(json.dumps(plan), encoding="utf-8")
    return run_worker(
        python,
        app,
        "--plan",
        str(plan_file),
        PROMOTION_BACKEND="local",
        PROMOTION_STATE_STORE="sqlite",
        PROMOTION_LOCAL_ROOT=str(work / "state"),
        PROMOTION_TRUST_IDENTITY_HEADERS="true",
        PROMOTION_EVENTS_ENDPOINT=receiver.url,
        PROMOTION_EVENTS_KEY=TOPIC_KEY,
    )


@pytest.fixture
def receiver():
    with EventGridReceiver() as running:
        yield running


def test_every_indexed_function_has_a_case_and_the_check_can_fail(indexed):
    functions = indexed.result["functions"]
    _, _, missing = build_plan(functions)
    assert missing == []
    later = {"raw_bindings": [{"type": "timerTrigger"}], "bindings": {"t": {"type": "timerTrigger", "direction": "in"}}}
    added = {**functions, "a_function_added_later": later}
    assert build_plan(added)[2] == ["a_function_added_later"]


def test_every_indexed_function_runs_through_the_worker(worker_python, shipped_app, indexed, tmp_path, receiver):
    functions = indexed.result["functions"]
    run = invoke_everything(worker_python, shipped_app, tmp_path, functions, receiver)

    assert run.exit_code == 0 and run.result["ok"], f"{run.error}\n{run.log[-4000:]}"
    invocations = run.result["invocations"]
    assert {step["function"] for step in invocations} == set(functions)
    _, statuses, _ = build_plan(functions)
    for step in invocations:
        assert step["status"] == "Success", step
        if step["function"] in statuses:
            assert step["http_status"] in statuses[step["function"]], step
    approve = next(step for step in invocations if step["function"] == "approve_promotion")
    assert approve["output_data"] == ["jobs"], "the approval puts the job on the queue"
    # The run went all the way: the copy and the deployment happened, and the topic got their events.
    published = {event["type"] for event in receiver.delivered}
    assert {"ModelPromotion.CopiedToRegistry", "ModelPromotion.Approved", "ModelPromotion.Deployed"} <= published
    assert all(request.headers.get("aeg-sas-key") == TOPIC_KEY for request in receiver.requests)


def test_an_import_error_in_a_lazily_imported_module_fails_the_run(
    worker_python, app_copy, indexed, tmp_path, receiver
):
    """The events publisher is imported at the first publish only, so indexing cannot see this; invoking the
    publisher with a topic set does."""
    plant(
        app_copy,
        "promotion/adapters/eventgrid.py",
        "from __future__ import annotations\n",
        "from __future__ import annotations\n\nimport azure.eventgrid.no_such_module  # noqa: F401\n",
    )
    assert run_worker(worker_python, app_copy).result["ok"], "indexing alone accepts it"

    run = invoke_everything(worker_python, app_copy, tmp_path, indexed.result["functions"], receiver)

    assert run.exit_code == 1 and run.result["stage"] == "invocation_request", run.result
    failed = {step["function"] for step in run.result["invocations"] if step["status"] != "Success"}
    assert "publish_lifecycle_events" in failed
    assert "No module named 'azure.eventgrid.no_such_module'" in run.error
