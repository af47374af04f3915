"""`python -m promotion demo`: the whole flow on the local backend, through the app's real functions.

Each step calls a registered function with the binding objects the Functions host would pass
(func.EventGridEvent, func.HttpRequest, func.QueueMessage), so what you see is what `func start` does.
"""

from __future__ import annotations

import base64
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SAMPLE_MODEL = Path(__file__).resolve().parent.parent / "samples" / "models" / "taxi-fare"
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
    import azure.functions as func

    from function_app import app
    from promotion import wiring
    from promotion.__main__ import local_settings, model_registered_event
    from promotion.adapters.local import LocalBackend
    from promotion.domain import ModelRef, ModelVersion

    wiring.reset()
    settings = local_settings()
    backend = LocalBackend(settings)
    functions = {f.get_function_name(): f.get_user_function() for f in app.get_functions()}
    print(f"Local backend under {settings.local_root.resolve()}, policy {wiring.policy_path()}\n")

    version = str(
        1
        + max(
            (int(m.version) for m in backend.staging.list() if m.name == MODEL_NAME and m.version.isdigit()), default=0
        )
    )
    ref = ModelRef(MODEL_NAME, version)

    _step(1, f"A data scientist registers {ref} in the staging workspace {settings.staging_workspace}")
    model = backend.staging.register(
        ModelVersion(
            ref=ref,
            type="mlflow_model",
            tags={"stage": "candidate", "accuracy": "0.91"},
            properties={"training_run": "run-42"},
            description="Taxi fare estimate, linear in distance and passengers",
        ),
        SAMPLE_MODEL,
    )
    event = model_registered_event(model, settings.staging_workspace_id)
    print(f"   Azure ML emits {event['eventType']} (id {event['id']})")

    _step(2, "on_model_registered receives the event, re-reads the model and applies the policy")
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
    copied = backend.registry.get(ref)
    if copied is None:
        print("   the model was not copied; see the log above")
        return 1
    lineage = {key: value for key, value in copied.tags.items() if key.startswith("promotion.")}
    print(f"   {ref} is now in the registry {settings.registry_name}, with lineage:")
    for key, value in lineage.items():
        print(f"     {key} = {value}")

    _step(3, f"{REQUESTER['name']} asks for production sharing: POST /api/promotions")
    answer = _call(
        functions["request_promotion"],
        "POST",
        "promotions",
        REQUESTER,
        {"model_name": ref.name, "model_version": ref.version, "reason": "better MAE on the March data"},
    )
    promotion_id = answer["id"]

    _step(4, f"{REQUESTER['name']}, an approver by role, tries to approve her own request")
    _call(
        functions["approve_promotion"],
        "POST",
        f"promotions/{promotion_id}/approve",
        REQUESTER,
        {},
        route_params={"id": promotion_id},
        jobs=_Captured(),
    )

    _step(5, f"{APPROVER['name']} approves it: the deployment job goes onto the promotion-jobs queue")
    jobs = _Captured()
    _call(
        functions["approve_promotion"],
        "POST",
        f"promotions/{promotion_id}/approve",
        APPROVER,
        {"comment": "metrics reviewed"},
        route_params={"id": promotion_id},
        jobs=jobs,
    )
    print(f"   queued: {jobs.get()}")

    _step(6, "deploy_promotion takes the job and deploys the registry model into production")
    functions["deploy_promotion"](func.QueueMessage(body=(jobs.get() or "").encode()))
    for endpoint in backend.production.list():
        print(f"   endpoint {endpoint['name']}: traffic {json.dumps(endpoint['traffic'])}")

    _step(7, f"The status view: GET /api/models/{ref.name}/versions/{ref.version}")
    status = _call(
        functions["model_status"],
        "GET",
        f"models/{ref.name}/versions/{ref.version}",
        REQUESTER,
        None,
        route_params={"name": ref.name, "version": ref.version},
        quiet=True,
    )
    print(f"   staging:    {'yes' if status['staging'] else 'no'}")
    print(f"   registry:   {'yes' if status['registry'] else 'no'}")
    for deployment in status["production"]:
        where = f"{deployment['endpoint']}/{deployment['deployment']}"
        print(f"   production: {where} at {deployment['traffic']}% of the traffic ({deployment['state']})")
    for decision in status["decisions"]:
        print(f"   decision:   {decision['outcome']} for event {decision['event_id']}")
    for promotion in status["promotions"]:
        print(f"   promotion {promotion['id']}: {promotion['state']}")
        for entry in promotion["history"]:
            print(f"     {entry['at']}  {entry['actor']:<22} {entry['action']}")
    print("\nDone. Inspect it with: python -m promotion local list registry")
    return 0


def _step(number: int, text: str) -> None:
    print(f"\n{number}. {text}")


def _call(
    function: Any,
    method: str,
    route: str,
    who: dict[str, str],
    body: Any,
    *,
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
        route_params=route_params or {},
    )
    response = function(request, **bindings)
    answer = json.loads(response.get_body())
    summary = answer.get("error") or f"promotion {answer.get('id')} is {answer.get('state')}"
    print(f"   {method} /api/{route} -> {response.status_code}" + ("" if quiet else f": {summary}"))
    return answer
