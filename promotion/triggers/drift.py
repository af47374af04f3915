"""The drift timer: detect_drift compares each production endpoint the app manages with what the store says was
approved, and records and publishes what changed (see promotion/service/drift.py).

Its schedule is the app setting PROMOTION_DRIFT_SCHEDULE (an NCRONTAB expression, hourly by default), read when the
host indexes the functions.
"""

from __future__ import annotations

import logging

import azure.functions as func

from promotion.triggers.context import publish_soon, schedule_setting

bp = func.Blueprint()
log = logging.getLogger("promotion")

DEFAULT_DRIFT_SCHEDULE = "0 0 * * * *"


def drift_schedule() -> str:
    return schedule_setting("PROMOTION_DRIFT_SCHEDULE", DEFAULT_DRIFT_SCHEDULE, "detect_drift runs hourly")


@bp.function_name("detect_drift")
@bp.timer_trigger(arg_name="timer", schedule=drift_schedule(), run_on_startup=False)
def detect_drift(timer: func.TimerRequest) -> None:
    from promotion import service, wiring

    report = service.detect_drift(**wiring.drift_ports())
    publish_soon()
    if report.detected or report.resolved or report.errors:
        log.info(
            "detect_drift: %d new, %d resolved, %d open, %d errors",
            len(report.detected),
            len(report.resolved),
            len(report.open),
            len(report.errors),
        )
