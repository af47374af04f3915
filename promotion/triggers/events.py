"""Event Grid trigger: ModelRegistered events from the staging workspace.

The promotion package is imported inside the handler: the host imports function_app on every cold
start just to index the functions, and the service layer is needed only when an event arrives.
"""

from __future__ import annotations

from typing import Any

import azure.functions as func

bp = func.Blueprint()


@bp.function_name("on_model_registered")
@bp.event_grid_trigger(arg_name="event")
def on_model_registered(event: func.EventGridEvent) -> None:
    """Returning acknowledges the event; raising makes Event Grid redeliver it (see service.propagate)."""
    from promotion import service, wiring

    backend = wiring.backend()
    service.propagate(
        event_as_dict(event),
        staging_workspace_id=wiring.settings().staging_workspace_id,
        staging=backend.staging,
        registry=backend.registry,
        load_policy=wiring.policy,
        store=wiring.store(),
    )


def event_as_dict(event: func.EventGridEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "topic": event.topic,
        "subject": event.subject,
        "eventType": event.event_type,
        "data": event.get_json(),
    }
