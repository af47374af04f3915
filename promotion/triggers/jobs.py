"""The deployment worker: the promotion-jobs queue, its poison queue, and a timer for everything in flight.

An online deployment takes minutes, so no invocation waits for one. deploy_promotion starts the work and
returns; advance_deployments checks every minute and takes each in-flight deployment and rollback its next
step, starts approved promotions whose job was lost, and expires requests nobody decided in time.
The local backend finishes every step at once, so there a promotion is deployed when deploy_promotion returns.

As in the other trigger modules, the promotion package is imported at first invocation, not at indexing.
"""

from __future__ import annotations

import json
import logging
import re

import azure.functions as func

from promotion.triggers.context import publish_soon

JOBS_QUEUE = "promotion-jobs"
POISON_QUEUE = f"{JOBS_QUEUE}-poison"
STORAGE = "AzureWebJobsStorage"
_PROMOTION_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MAX_MESSAGE = 4096  # a job is {"promotion_id": "<uuid>"}; anything longer is not one

bp = func.Blueprint()
log = logging.getLogger("promotion")


def job_message(promotion_id: str) -> str:
    return json.dumps({"promotion_id": promotion_id})


@bp.function_name("deploy_promotion")
@bp.queue_trigger(arg_name="message", queue_name=JOBS_QUEUE, connection=STORAGE)
def deploy_promotion(message: func.QueueMessage) -> None:
    """Raising makes the queue deliver the job again (five times, then the poison queue)."""
    from promotion import logs, service, wiring
    from promotion.ports import PromotionNotFound

    promotion_id = promotion_id_of(message)
    if promotion_id is None:
        return
    with logs.fields(promotion_id=promotion_id):
        try:
            promotion = service.deploy(promotion_id, **wiring.deployment_ports())
        except PromotionNotFound as error:
            log.error("deployment job dropped: %s", error)
            return
        with logs.fields(model=promotion.model):
            publish_soon()
            log.info("promotion %s is %s", promotion.id, promotion.state.value)


@bp.function_name("deploy_promotion_poison")
@bp.queue_trigger(arg_name="message", queue_name=POISON_QUEUE, connection=STORAGE)
def deploy_promotion_poison(message: func.QueueMessage) -> None:
    from promotion import logs, service, wiring
    from promotion.ports import PromotionNotFound

    promotion_id = promotion_id_of(message)
    if promotion_id is None:
        return
    # The message's dequeue count here is its count on the poison queue, not how often the job failed.
    reason = (
        f"the deployment job failed on every retry and was moved to {POISON_QUEUE}; the function logs hold the errors"
    )
    with logs.fields(promotion_id=promotion_id):
        try:
            promotion = service.fail_abandoned_job(
                promotion_id,
                store=wiring.store(),
                reason=reason,
                source=wiring.settings().events_source,
                clock=wiring.clock(),
            )
        except PromotionNotFound as error:
            log.error("poisoned deployment job dropped: %s", error)
            return
        with logs.fields(model=promotion.model):
            publish_soon()


@bp.function_name("advance_deployments")
@bp.timer_trigger(arg_name="timer", schedule="0 */1 * * * *", run_on_startup=False)
def advance_deployments(timer: func.TimerRequest) -> None:
    from promotion import service, wiring

    report = service.advance_deployments(**wiring.deployment_ports())
    publish_soon()
    if report.advanced or report.expired or report.errors:
        log.info(
            "advance_deployments: %s; expired %s; %d could not advance",
            report.advanced,
            report.expired,
            len(report.errors),
        )


def promotion_id_of(message: func.QueueMessage) -> str | None:
    """A message that is not a job can never succeed: log it and let it go rather than poison the queue."""
    body = message.get_body() or b""
    try:
        if len(body) > _MAX_MESSAGE:
            raise ValueError(f"{len(body)} bytes is too long for a job")
        promotion_id = json.loads(body)["promotion_id"]
        if not isinstance(promotion_id, str) or not _PROMOTION_ID.fullmatch(promotion_id):
            raise ValueError("promotion_id is not a promotion id")
    except (ValueError, KeyError, TypeError, IndexError, RecursionError) as error:
        shown = body[:200].decode("ascii", "backslashreplace")
        log.error("ignored a malformed deployment job %s: %s", shown, type(error).__name__)
        return None
    return promotion_id
