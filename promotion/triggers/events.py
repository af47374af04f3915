"""Event Grid trigger: ModelRegistered events from the staging workspace.

The promotion package is imported inside the handler: the host imports function_app on every cold start just
to index the functions, and the service layer is needed only when an event arrives.
"""

from __future__ import annotations

from typing import Any

import azure.functions as func

from promotion.triggers.context import publish_soon

bp = func.Blueprint()


@bp.function_name("on_model_registered")
@bp.event_grid_trigger(arg_name="event")
def on_model_registered(event: func.EventGridEvent) -> None:
    """Returning acknowledges the event; raising makes Event Grid redeliver it (see service.propagate).

    Event Grid waits 30 seconds for the answer, so this only starts the registry copy; the timer finishes it.
    A delivery in the CloudEvents schema arrives as a func.CloudEvent (azure-functions picks the type from the
    payload, whatever the annotation says) and is handled the same way.
    """
    from promotion import service, wiring

    backend = wiring.backend()
    settings = wiring.settings()
    service.propagate(
        event_as_dict(event),
        staging_workspace_id=settings.staging_workspace_id,
        staging=backend.staging,
        registry=backend.registry,
        load_policy=wiring.policy,
        store=wiring.store(),
        source=settings.events_source,
        clock=wiring.clock(),
    )
    publish_soon()


def event_as_dict(event: func.EventGridEvent | func.CloudEvent) -> dict[str, Any]:
    """The event as the JSON Event Grid sent, in its own schema: Event Grid (topic, eventType) or CloudEvents
    (source, type). events.parse reads both."""
    if isinstance(event, func.CloudEvent):
        return {
            "id": event.id,
            "source": event.source,
            "type": event.type,
            "subject": event.subject,
            "specversion": event.specversion,
            "data": event.get_json(),
        }
    return {
        "id": event.id,
        "topic": event.topic,
        "subject": event.subject,
        "eventType": event.event_type,
        "data": event.get_json(),
    }
