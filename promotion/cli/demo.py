"""`promotion demo`: the whole flow on the local backend, through the app's real functions.

Each step calls a registered function with the binding objects the Functions host would pass (func.EventGridEvent,
func.TimerRequest, func.HttpRequest, func.QueueMessage), so what you see is what `func start` does.
"""

from __future__ import annotations

import base64
import json
import os
from datetime import datetime, timezone
from typing import Any

from promotion.settings import APP_ROOT

SAMPLE_MODEL = APP_ROOT / "samples" / "models" / "taxi-fare"
MODEL_NAME = "taxi-fare"
# Alice is an approver too (by app role), which is exactly why she must not approve her own request.
REQUESTER = {"name": "alice@contoso.com", "id": "11111111-1111-1111-1111-111111111111", "role": "Promotion.Approver"}
APPROVER = {"name": "carol@contoso.com", "id": "33333333-3333-3333-3333-333333333333"}


class _Captured:
    """A queue output binding: what the Functions host would put on the queue."""

    def __init__(self) -> None:
        self.value: str | None = None

    def set(self, value: str) -> None:
        self.value = value

    def get(self) -> str | None:
        return self.value


def run() -> int:
    os.environ["PROMOTION_BACKEND"] = "local"
    os.environ["PROMOTION_STATE_STORE"] = "sqlite"
    # Nothing stands in front of the app here, so the demo opts in to trusting the identity headers it sends.
    os.environ["PROMOTION_TRUST_IDENTITY_HEADERS"] = "true"
    import azure.functions as func
    from azure.functions.timer import TimerRequest

    from function_app import app
    from promotion import wiring
    from promotion.cli.local import local_backend, local_settings, model_registered_event
    from promotion.domain import ModelRef, ModelVersion

    wiring.reset()
    settings = local_settings()
    backend = local_backend(settings)
    wiring.policy()  # a broken policy stops the demo here, before anything is written
    functions = {f.get_function_name(): f.get_user_function() for f in app.get_functions()}
    print(f"Local backend under {settings.local_root}, policy {wiring.policy_path()}")

    numbers = [int(m.version) for m in backend.staging.list() if m.name == MODEL_NAME and m.version.isdigit()]
    good = ModelRef(MODEL_NAME, str(max(numbers, default=0) + 1))
    weak = ModelRef(MODEL_NAME, str(int(good.version) + 1))

    _step(1, f"A data scientist registers {good} and {weak} in the staging workspace {settings.staging_workspace}")
    registered = [
        backend.staging.register(
            ModelVersion(
                ref=good,
                type="mlflow_model",
                tags={"stage": "candidate", "accuracy": "0.91"},
                properties={"training_run": "run-42"},
                description="Taxi fare estimate, linear in distance and passengers",
            ),
            SAMPLE_MODEL,
        ),
        backend.staging.register(
            ModelVersion(ref=weak, type="mlflow_model", tags={"stage": "dev", "accuracy": "0.4"}), SAMPLE_MODEL
        ),
    ]

    _step(2, "on_model_registered receives each event, re-reads the model, applies the policy, starts the copy")
    for model in registered:
        event = model_registered_event(model, settings.staging_workspace_id)
        functions["on_model_registered"](
            func.EventGridEvent(
                id=event["id"],
                data=event["data"],
                topic=event["topic"],
                subject=event["subject"],
                event_type=event["eventType"],
                event_time=datetime.now(timezone.utc),
                data_version="",
            )
        )
    store = wiring.store()
    for ref in (good, weak):
        for decision in store.decisions(ref):
            print(f"   {ref}: {decision.outcome.value}" + "".join(f"\n     - {r}" for r in decision.reasons))

    _step(3, "advance_registry_copies (a timer, every minute) finishes the copy and adds the lineage")
    functions["advance_registry_copies"](TimerRequest(past_due=False))
    copy = store.copy(good)
    copied = backend.registry.get(good)
    if copy is None or copied is None or copy.state.value != "copied":
        print(f"   the copy did not finish ({copy.state.value if copy else 'never started'}); see the log above")
        return 1
    print(f"   the copy of {good} is {copy.state.value}; the registry {settings.registry_name} holds it, with lineage:")
    for key, value in copied.tags.items():
        if key.startswith("promotion."):
            print(f"     {key} = {value}")

    _step(4, f"{REQUESTER['name']} asks for production sharing: POST /api/promotions")
    answer = _call(
        functions["request_promotion"],
        "POST",
        "promotions",
        REQUESTER,
        {"model_name": good.name, "model_version": good.version, "reason": "better MAE on the March data"},
    )
    promotion_id = answer["id"]
    approve_route = f"promotions/{promotion_id}/approve"

    _step(5, f"{REQUESTER['name']}, an approver by role, tries to approve her own request")
    _call(functions["approve_promotion"], "POST", approve_route, REQUESTER, {}, id=promotion_id, jobs=_Captured())

    _step(6, f"{APPROVER['name']} approves it: the deployment job goes onto the promotion-jobs queue")
    jobs = _Captured()
    _call(
        functions["approve_promotion"],
        "POST",
        approve_route,
        APPROVER,
        {"comment": "metrics reviewed"},
        id=promotion_id,
        jobs=jobs,
    )
    print(f"   queued: {jobs.get()}")

    _step(7, "deploy_promotion takes the job and deploys the registry model into production")
    functions["deploy_promotion"](func.QueueMessage(body=(jobs.get() or "").encode()))
    for endpoint in backend.production.list():
        print(f"   endpoint {endpoint['name']}: traffic {json.dumps(endpoint['traffic'])}")

    _step(8, f"The status view: GET /api/models/{good.name}/versions/{good.version}")
    route = f"models/{good.name}/versions/{good.version}"
    status = _call(functions["model_status"], "GET", route, REQUESTER, None, quiet=True, **_model(good))
    print(f"   staging:    {'yes' if status['staging'] else 'no'}")
    print(f"   registry:   {'yes' if status['registry'] else 'no'} (copy {status['copy']['state']})")
    for deployment in status["production"]:
        where = f"{deployment['endpoint']}/{deployment['deployment']}"
        print(f"   production: {where} at {deployment['traffic']}% of the traffic ({deployment['state']})")
    for decision in status["decisions"]:
        print(f"   decision:   {decision['outcome']} ({decision['event_id']})")
    for promotion in status["promotions"]:
        print(f"   promotion {promotion['id']}: {promotion['state']}")
        for entry in promotion["history"]:
            print(f"     {entry['at']}  {entry['actor']:<22} {entry['action']}")

    _step(9, "Someone deploys by hand to the production endpoint; detect_drift (a timer, hourly) finds it")
    endpoint = backend.production.online_endpoints()[0].name
    by_hand = f"hotfix-{good.version}"
    backend.production.deploy_by_hand(endpoint, by_hand, settings.registry_model_uri(weak))
    functions["detect_drift"](TimerRequest(past_due=False))
    for finding in store.drift_findings():
        print(f"   drift found: {finding.kind.value} on {endpoint}/{finding.deployment} ({finding.actual['model']})")
    backend.production.delete_deployment(endpoint, by_hand)
    functions["detect_drift"](TimerRequest(past_due=False))
    resolved = [f for f in store.drift_findings(open_only=False) if f.resolved_at and f.deployment == by_hand]
    for finding in resolved:
        print(f"   once the deployment is gone, the next run resolves it: {finding.kind.value} resolved")

    _step(10, "Every change was recorded as a lifecycle event (a CloudEvent, published when a topic is set)")
    for event in store.events():
        state = "published" if event.published_at else "in the outbox"
        print(f"   {event.type.value:<36} {event.subject}  ({state})")

    print("\nDone. Inspect it with: promotion local list registry   (or: .venv/bin/python -m promotion ...)")
    return 0


def _model(ref: Any) -> dict[str, Any]:
    return {"route_params": {"name": ref.name, "version": ref.version}}


def _step(number: int, text: str) -> None:
    print(f"\n{number}. {text}")


def _call(
    function: Any,
    method: str,
    route: str,
    who: dict[str, str],
    body: Any,
    *,
    id: str | None = None,
    route_params: dict[str, str] | None = None,
    quiet: bool = False,
    **bindings: Any,
) -> dict[str, Any]:
    import azure.functions as func

    claims = [{"typ": "name", "val": who["name"]}] + ([{"typ": "roles", "val": who["role"]}] if "role" in who else [])
    principal = {"auth_typ": "aad", "claims": claims}
    request = func.HttpRequest(
        method,
        f"http://localhost:7071/api/{route}",
        body=json.dumps(body).encode() if body is not None else b"",
        headers={
            "Content-Type": "application/json",
            "X-MS-CLIENT-PRINCIPAL-NAME": who["name"],
            "X-MS-CLIENT-PRINCIPAL-ID": who["id"],
            "X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(principal).encode()).decode(),
        },
        route_params=route_params or ({"id": id} if id else {}),
    )
    response = function(request, **bindings)
    answer = json.loads(response.get_body())
    summary = answer.get("error") or f"promotion {answer.get('id')} is {answer.get('state')}"
    print(f"   {method} /api/{route} -> {response.status_code}" + ("" if quiet else f": {summary}"))
    return answer
