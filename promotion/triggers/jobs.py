"""The deployment worker: the promotion-jobs queue, its poison queue, and a timer for in-flight deployments.

An online deployment takes minutes, so no invocation waits for one. deploy_promotion starts the work and
returns; advance_deployments checks every minute and takes each in-flight deployment its next step.
The local backend finishes every step at once, so there a promotion is deployed when deploy_promotion returns.

As in the other trigger modules, the promotion package is imported at first invocation, not at indexing.
"""

from __future__ import annotations

import json
import logging

import azure.functions as func

JOBS_QUEUE = "promotion-jobs"
POISON_QUEUE = f"{JOBS_QUEUE}-poison"
STORAGE = "AzureWebJobsStorage"

bp = func.Blueprint()
log = logging.getLogger("promotion")


def job_message(promotion_id: str) -> str:
    return json.dumps({"promotion_id": promotion_id})


@bp.function_name("deploy_promotion")
@bp.queue_trigger(arg_name="message", queue_name=JOBS_QUEUE, connection=STORAGE)
def deploy_promotion(message: func.QueueMessage) -> None:
    from promotion import service
    from promotion.ports import PromotionNotFound

    promotion_id = _promotion_id(message)
    if promotion_id is None:
        return
    try:
        promotion = service.deploy(promotion_id, **_deploy_ports())
    except PromotionNotFound as error:
        log.error("deployment job dropped: %s", error)
        return
    log.info("promotion %s is %s", promotion.id, promotion.state.value)


@bp.function_name("deploy_promotion_poison")
@bp.queue_trigger(arg_name="message", queue_name=POISON_QUEUE, connection=STORAGE)
def deploy_promotion_poison(message: func.QueueMessage) -> None:
    from promotion import service, wiring
    from promotion.ports import PromotionNotFound

    promotion_id = _promotion_id(message)
    if promotion_id is None:
        return
    # The message's dequeue count here is its count on the poison queue, not how often the job failed.
    reason = (
        f"the deployment job failed on every retry and was moved to {POISON_QUEUE}; the function logs hold the errors"
    )
    try:
        promotion = service.fail_abandoned_job(promotion_id, store=wiring.store(), reason=reason)
    except PromotionNotFound as error:
        log.error("poisoned deployment job dropped: %s", error)
        return
    log.warning("promotion %s is %s: %s", promotion.id, promotion.state.value, reason)


@bp.function_name("advance_deployments")
@bp.timer_trigger(arg_name="timer", schedule="0 */1 * * * *", run_on_startup=False)
def advance_deployments(timer: func.TimerRequest) -> None:
    from promotion import service

    for promotion in service.advance_in_flight(**_deploy_ports()):
        log.info("promotion %s is %s", promotion.id, promotion.state.value)


def _deploy_ports() -> dict:
    from promotion import wiring

    backend = wiring.backend()
    return {
        "store": wiring.store(),
        "registry": backend.registry,
        "deployer": backend.production,
        "rules": wiring.policy().production,
        "registry_model_uri": wiring.settings().registry_model_uri,
    }


def _promotion_id(message: func.QueueMessage) -> str | None:
    """A message that is not a job can never succeed: log it and let it go rather than poison the queue."""
    try:
        body = json.loads(message.get_body())
        promotion_id = body["promotion_id"]
        if not isinstance(promotion_id, str) or not promotion_id:
            raise ValueError("promotion_id is not a non-empty string")
    except (ValueError, KeyError, TypeError) as error:
        log.error("ignored a malformed deployment job %r: %s", message.get_body()[:200], error)
        return None
    return promotion_id
