"""The timers of the staging -> registry path: advance_registry_copies finishes the copies that events and the
reconcile sweep started, and reconcile_registry catches what events miss.

The sweep's schedule is the app setting PROMOTION_RECONCILE_SCHEDULE (an NCRONTAB expression, hourly by default),
read when the host indexes the functions.
"""

from __future__ import annotations

import logging

import azure.functions as func

from promotion.triggers.context import publish_soon, schedule_setting

bp = func.Blueprint()
log = logging.getLogger("promotion")

DEFAULT_RECONCILE_SCHEDULE = "0 0 * * * *"


def reconcile_schedule() -> str:
    return schedule_setting("PROMOTION_RECONCILE_SCHEDULE", DEFAULT_RECONCILE_SCHEDULE, "reconcile runs hourly")


@bp.function_name("advance_registry_copies")
@bp.timer_trigger(arg_name="timer", schedule="0 */1 * * * *", run_on_startup=False)
def advance_registry_copies(timer: func.TimerRequest) -> None:
    from promotion import service, wiring

    run = service.advance_registry_copies(**wiring.copy_ports())
    publish_soon()
    if run.copied or run.failed or run.errors:
        log.info("advance_registry_copies: %s", run)


@bp.function_name("reconcile_registry")
@bp.timer_trigger(arg_name="timer", schedule=reconcile_schedule(), run_on_startup=False)
def reconcile_registry(timer: func.TimerRequest) -> None:
    from promotion import service, wiring

    settings = wiring.settings()
    backend = wiring.backend()
    service.reconcile(
        staging_workspace_id=settings.staging_workspace_id,
        staging=backend.staging,
        registry=backend.registry,
        policy=wiring.policy,
        store=wiring.store(),
        dry_run=False,
        source=settings.events_source,
        clock=wiring.clock(),
    )
