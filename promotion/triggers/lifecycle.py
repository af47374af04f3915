"""publish_lifecycle_events: sends the outbox of lifecycle events to the Event Grid topic, oldest first, and
removes published events after PROMOTION_EVENTS_RETENTION_DAYS and decisions after
PROMOTION_DECISIONS_RETENTION_DAYS. Every change also tries to publish at once;
this timer sends whatever that attempt did not, such as everything recorded while the topic was down."""

from __future__ import annotations

import logging

import azure.functions as func

bp = func.Blueprint()
log = logging.getLogger("promotion")


@bp.function_name("publish_lifecycle_events")
@bp.timer_trigger(arg_name="timer", schedule="0 */1 * * * *", run_on_startup=False)
def publish_lifecycle_events(timer: func.TimerRequest) -> None:
    """Raises when the topic refused or could not be reached, so the failure shows in the function's runs."""
    from promotion import service, wiring

    store = wiring.store()
    # First: what was published or decided long ago goes, even while the topic is down.
    settings = wiring.settings()
    service.purge_published(store, retention=settings.events_retention, clock=wiring.clock())
    service.purge_decisions(store, retention=settings.decisions_retention, clock=wiring.clock())
    publisher = wiring.publisher()  # a misconfigured topic raises here, naming the setting
    if publisher is None:
        return
    report = service.publish_pending(store, publisher, clock=wiring.clock())
    if report.error:
        raise RuntimeError(f"published {report.published} lifecycle events, then stopped: {report.error}")
    if report.published:
        log.info("published %d lifecycle events", report.published)
