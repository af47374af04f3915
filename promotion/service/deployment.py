"""Production deployment: an approved promotion becomes an endpoint, a deployment of the registry model, and
traffic, one idempotent step at a time.

No invocation waits for a long-running operation: each step starts its work and returns, and the timer
(`advance_deployments`, every minute) takes every promotion in flight its next step. The worker always ends:
errors that retrying cannot fix fail the promotion with the service's message, a deployment that runs past
production.deploy_timeout_minutes fails, a job that was lost is started by the timer, and one promotion's
failure never keeps the others from advancing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from promotion import logs
from promotion.domain import (
    DEPLOYMENT_APPROVER_TAG,
    DEPLOYMENT_MODEL_TAG,
    DEPLOYMENT_PROMOTION_TAG,
    ENDPOINT_MODEL_TAG,
    ENDPOINT_OWNER_TAG,
    EventType,
    InvalidName,
    Lineage,
    ModelRef,
    Promotion,
    State,
    deployment_name,
    isoformat,
    online_name,
    split_traffic,
    version_order,
)
from promotion.policy import ProductionRules
from promotion.ports import (
    Deployer,
    DeploymentFailed,
    DeploymentPlan,
    EndpointState,
    Progress,
    PromotionStore,
    RegistryModels,
    StaleRevision,
)
from promotion.service.approval import advance_rollback, expire_stale_requests
from promotion.service.artifact import check_artifact, voided
from promotion.service.common import Clock, saved_or_current
from promotion.service.lifecycle import promotion_event

log = logging.getLogger("promotion")

DEPLOY_ACTOR = "deploy_promotion"


def deploy(
    promotion_id: str,
    *,
    store: PromotionStore,
    registry: RegistryModels,
    deployer: Deployer,
    rules: ProductionRules,
    registry_model_uri: Callable[[ModelRef], str],
    source: str,
    clock: Clock,
) -> Promotion:
    """Move an approved promotion towards `deployed`, one idempotent step after another.

    Returns the promotion in `deploying` while Azure is still working; the next call carries on. Repeated calls
    are harmless. Errors that may pass (throttling, outages, timeouts) raise; the next call tries again.
    """
    promotion = store.get(promotion_id)
    with logs.fields(promotion_id=promotion.id, model=promotion.model):
        if promotion.state is State.APPROVED:
            try:
                promotion = _start(promotion, store, registry, rules, registry_model_uri, source, clock)
            except StaleRevision:
                promotion = store.get(promotion_id)  # another worker started it; carry on from its state
        if promotion.state is not State.DEPLOYING:
            return promotion
        return _advance(promotion, store, deployer, rules, source, clock)


def _start(
    promotion: Promotion,
    store: PromotionStore,
    registry: RegistryModels,
    rules: ProductionRules,
    registry_model_uri: Callable[[ModelRef], str],
    source: str,
    clock: Clock,
) -> Promotion:
    model = registry.get(promotion.model)
    comparison = check_artifact(promotion, model, rules=rules)
    if comparison is not None and comparison.void_reason:
        # What was approved is no longer what would deploy: nothing deploys.
        void, events = voided(promotion, comparison, actor=DEPLOY_ACTOR, source=source, clock=clock)
        return store.save(void, events)
    if model is None:
        return _fail(store, promotion, f"model {promotion.model} is no longer in the registry", source, clock)
    at = clock()
    plan = {
        "endpoint": online_name(rules.endpoint_for(promotion.model)),
        "deployment": deployment_name(promotion.model),
        "model_uri": registry_model_uri(promotion.model),
        "instance_type": rules.instance_type,
        "instance_count": rules.instance_count,
        "traffic_percent": rules.traffic_percent,
        "started_at": isoformat(at),
        "tags": {
            **Lineage.of(model.tags),
            DEPLOYMENT_PROMOTION_TAG: promotion.id,
            DEPLOYMENT_MODEL_TAG: str(promotion.model),
            DEPLOYMENT_APPROVER_TAG: promotion.approved_by or "",
        },
        # The endpoint names its owner, and the model it is for when the template names the model.
        "endpoint_tags": {
            ENDPOINT_OWNER_TAG: source,
            **({ENDPOINT_MODEL_TAG: promotion.model.name} if rules.endpoint_per_model else {}),
        },
    }
    names = {"endpoint": plan["endpoint"], "deployment": plan["deployment"]}
    deploying = promotion.move(State.DEPLOYING, actor=DEPLOY_ACTOR, at=at, detail=names, deployment=plan)
    event = promotion_event(EventType.DEPLOYMENT_STARTED, deploying, actor=DEPLOY_ACTOR, source=source, **names)
    started = store.save(deploying, [event])
    log.info("deployment of %s started: %s on endpoint %s", promotion.model, plan["deployment"], plan["endpoint"])
    return started


def _advance(
    promotion: Promotion, store: PromotionStore, deployer: Deployer, rules: ProductionRules, source: str, clock: Clock
) -> Promotion:
    started = datetime.fromisoformat(promotion.deployment["started_at"].replace("Z", "+00:00"))
    if clock() - started > rules.deploy_timeout:
        minutes = rules.deploy_timeout.total_seconds() / 60
        reason = f"the deployment did not finish within {minutes:g} minutes (production.deploy_timeout_minutes)"
        return _fail(store, promotion, reason, source, clock)
    plan = _plan_from(promotion)
    try:
        existing = deployer.endpoint(plan.endpoint) if plan.endpoint_tags else None
        refusal = _not_ours(existing, plan) if existing is not None else None
        if refusal:
            return _fail(store, promotion, refusal, source, clock)
        for step in (deployer.ensure_endpoint, deployer.ensure_deployment):
            if step(plan) is Progress.PENDING:
                return promotion
        return _take_traffic(promotion, plan, store, deployer, source, clock)
    except DeploymentFailed as failure:
        return _fail(store, promotion, str(failure), source, clock)


def _take_traffic(
    promotion: Promotion, plan: DeploymentPlan, store: PromotionStore, deployer: Deployer, source: str, clock: Clock
) -> Promotion:
    endpoint = deployer.endpoint(plan.endpoint)
    if endpoint is None:
        raise DeploymentFailed(f"online endpoint {plan.endpoint} disappeared during the deployment")
    refusal = _not_ours(endpoint, plan)  # checked again just before traffic moves: someone may have come between
    if refusal:
        return _fail(store, promotion, refusal, source, clock)
    if "previous_traffic" not in promotion.deployment:
        # What was live before this promotion took any traffic: what a rollback gives the traffic back to.
        before = {name: share for name, share in endpoint.traffic.items() if name != plan.deployment}
        try:
            promotion = store.save(replace(promotion, deployment={**promotion.deployment, "previous_traffic": before}))
        except StaleRevision:
            return store.get(promotion.id)  # a concurrent worker took this step; the next call carries on

    rolled_back = _rollback_since_approval(store, promotion, plan.endpoint)
    if rolled_back is not None:
        return _finish_deployed(store, promotion, plan, {}, source, clock, note=rolled_back)

    newer = _newer_live_version(endpoint, plan)
    if newer is not None:
        note = (
            f"{newer} is live on {plan.endpoint} and is newer than {plan.model}: this version stays at 0% "
            "(only a rollback moves traffic to an older version)"
        )
        return _finish_deployed(store, promotion, plan, {}, source, clock, note=note)

    desired = split_traffic(endpoint.traffic, plan.deployment, plan.traffic_percent, endpoint.models)
    if deployer.set_traffic(plan.endpoint, desired) is Progress.PENDING:
        return promotion
    return _finish_deployed(store, promotion, plan, desired, source, clock)


def _not_ours(endpoint: EndpointState, plan: DeploymentPlan) -> str | None:
    """Why this promotion may not use an existing endpoint, or None when it may.

    The endpoint must carry this app's owner tag: an endpoint made by hand or by another app is never taken over.
    When the template names the model, the endpoint must be that model's alone: tagged for it, and with no
    deployment serving another model. A shared endpoint (a template without {name}) serves any model on purpose.
    A deployment planned before endpoints were tagged has no endpoint tags, and is not checked.
    """
    owner = plan.endpoint_tags.get(ENDPOINT_OWNER_TAG)
    if owner is None:
        return None
    held = endpoint.tags.get(ENDPOINT_OWNER_TAG)
    if held is None:
        return (
            f"online endpoint {plan.endpoint} exists and was not made by this app (it has no {ENDPOINT_OWNER_TAG} "
            "tag): it is never taken over; choose another production.endpoint template, or tag the endpoint "
            f"{ENDPOINT_OWNER_TAG}={owner} to hand it to this app"
        )
    if held != owner:
        return f"online endpoint {plan.endpoint} belongs to {held}, not to this app ({owner}): it is never taken over"
    model = plan.endpoint_tags.get(ENDPOINT_MODEL_TAG)
    if model is None:
        return None
    if endpoint.tags.get(ENDPOINT_MODEL_TAG) != model:
        serves = endpoint.tags.get(ENDPOINT_MODEL_TAG)
        what = f"model {serves}" if serves else "several models (a shared endpoint)"
        return f"online endpoint {plan.endpoint} serves {what}, not {model}: traffic stays where it is"
    for name, served in endpoint.models.items():
        if name != plan.deployment and (served or "").rpartition(":")[0] != model:
            return (
                f"online endpoint {plan.endpoint} serves model {served or 'unknown'} (deployment {name}), "
                f"not only {model}: traffic stays where it is"
            )
    return None


def _rollback_since_approval(store: PromotionStore, promotion: Promotion, endpoint: str) -> str | None:
    """Why this promotion must not take traffic because of a rollback on its endpoint asked for after it was
    approved, or None. The rollback wins: an approver's emergency action is never silently undone by a
    deployment decided before it. A promotion approved after the rollback is a new decision and takes traffic.
    (Rollbacks are rare, and this is read only at a deployment's traffic step, not at every timer run.)"""
    approved_at = next((e.at for e in promotion.history if e.action == State.APPROVED.value), promotion.created_at)
    for other in [*store.list(state=State.ROLLING_BACK), *store.list(state=State.ROLLED_BACK)]:
        if other.id == promotion.id or other.deployment.get("endpoint") != endpoint:
            continue
        asked = [entry for entry in other.history if entry.action == State.ROLLING_BACK.value]
        if asked and asked[-1].at > approved_at:
            return (
                f"promotion {other.id} ({other.model}) was rolled back on {endpoint} at {isoformat(asked[-1].at)}, "
                f"after this promotion was approved: the rollback wins, and {promotion.model} stays at 0% "
                "(request it again to roll forward)"
            )
    return None


def _newer_live_version(endpoint: EndpointState, plan: DeploymentPlan) -> str | None:
    """A deployment with traffic that serves a newer version of the same model, if there is one."""
    for name, share in endpoint.traffic.items():
        served = endpoint.models.get(name)
        if name == plan.deployment or not share or not served:
            continue
        try:
            other = ModelRef.from_text(served)
        except InvalidName:
            continue  # a deployment made by hand, tagged in some other way: not a version of ours
        if other.name == plan.model.name and version_order(other.version) > version_order(plan.model.version):
            return str(other)
    return None


def _finish_deployed(
    store: PromotionStore,
    promotion: Promotion,
    plan: DeploymentPlan,
    traffic: Mapping[str, int],
    source: str,
    clock: Clock,
    *,
    note: str | None = None,
) -> Promotion:
    detail: dict[str, Any] = {"traffic": dict(traffic)}
    if note:
        detail["note"] = note
    done = promotion.move(State.DEPLOYED, actor=DEPLOY_ACTOR, at=clock(), detail=detail)
    event = promotion_event(
        EventType.DEPLOYED,
        done,
        actor=DEPLOY_ACTOR,
        comment=note,
        source=source,
        endpoint=plan.endpoint,
        deployment=plan.deployment,
        traffic=dict(traffic),
    )
    saved = saved_or_current(store, done, [event])
    log.info("promotion %s is deployed: %s on %s at %s", promotion.id, plan.deployment, plan.endpoint, dict(traffic))
    return saved


def _fail(store: PromotionStore, promotion: Promotion, reason: str, source: str, clock: Clock) -> Promotion:
    failed = promotion.move(State.FAILED, actor=DEPLOY_ACTOR, at=clock(), detail={"error": reason}, error=reason)
    event = promotion_event(EventType.DEPLOYMENT_FAILED, failed, actor=DEPLOY_ACTOR, source=source, reason=reason)
    saved = saved_or_current(store, failed, [event])
    log.warning("promotion %s failed: %s", promotion.id, reason)
    return saved


def _plan_from(promotion: Promotion) -> DeploymentPlan:
    recorded = promotion.deployment  # recorded when deployment started, so a policy edit cannot change it midway
    return DeploymentPlan(
        model=promotion.model,
        model_uri=recorded["model_uri"],
        endpoint=recorded["endpoint"],
        deployment=recorded["deployment"],
        instance_type=recorded["instance_type"],
        instance_count=int(recorded["instance_count"]),
        traffic_percent=int(recorded["traffic_percent"]),
        tags=recorded["tags"],
        endpoint_tags=recorded.get("endpoint_tags", {}),
    )


# --- the poison queue ------------------------------------------------------------------------------


def fail_abandoned_job(
    promotion_id: str, *, store: PromotionStore, reason: str, source: str, clock: Clock
) -> Promotion:
    """A deployment job that exhausted its retries. The promotion fails only while it is still `approved` and no
    deployment has started for it; anything further along is in the timer's hands and is left alone."""
    promotion = store.get(promotion_id)
    with logs.fields(promotion_id=promotion.id, model=promotion.model):
        if promotion.state is not State.APPROVED or promotion.deployment:
            log.warning(
                "poisoned deployment job for promotion %s ignored: the promotion is %s%s",
                promotion.id,
                promotion.state.value,
                " and its deployment has started" if promotion.deployment else "",
            )
            return promotion
        return _fail(store, promotion, reason, source, clock)


# --- the timer -------------------------------------------------------------------------------------


@dataclass
class AdvanceReport:
    advanced: dict[str, str] = field(default_factory=dict)  # promotion id -> state after this run
    expired: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # promotion id -> why it could not advance this time


def advance_deployments(
    *,
    store: PromotionStore,
    registry: RegistryModels,
    deployer: Deployer,
    rules: ProductionRules,
    registry_model_uri: Callable[[ModelRef], str],
    source: str,
    clock: Clock,
) -> AdvanceReport:
    """One run of the timer: every deployment and rollback in flight one step further, every approved promotion
    whose job was lost (approved longer than production.job_grace_minutes) started, and stale requests expired.
    Each promotion is handled on its own."""
    report = AdvanceReport()
    ports: dict[str, Any] = {
        "store": store,
        "registry": registry,
        "deployer": deployer,
        "rules": rules,
        "registry_model_uri": registry_model_uri,
        "source": source,
        "clock": clock,
    }
    # Only open work is read (the store's index), so a run costs the same however many promotions have finished.
    in_flight = store.open_promotions([State.APPROVED, State.DEPLOYING, State.ROLLING_BACK])
    lost_jobs = [p for p in in_flight if p.state is State.APPROVED and clock() - p.last_entry_at > rules.job_grace]
    for promotion in [*(p for p in in_flight if p.state is State.DEPLOYING), *lost_jobs]:
        if promotion.state is State.APPROVED:
            log.warning("promotion %s was approved but its job never ran; the timer starts it", promotion.id)
        _each(report, promotion, lambda p: deploy(p.id, **ports))
    for promotion in (p for p in in_flight if p.state is State.ROLLING_BACK):
        _each(
            report,
            promotion,
            lambda p: advance_rollback(
                p, store=store, deployer=deployer, source=source, timeout=rules.deploy_timeout, clock=clock
            ),
        )
    report.expired = [p.id for p in expire_stale_requests(rules=rules, store=store, source=source, clock=clock)]
    return report


def _each(report: AdvanceReport, promotion: Promotion, step: Callable[[Promotion], Promotion]) -> None:
    with logs.fields(promotion_id=promotion.id, model=promotion.model):
        try:
            report.advanced[promotion.id] = step(promotion).state.value
        except Exception as error:
            report.errors[promotion.id] = f"{type(error).__name__}: {error}"
            log.exception("promotion %s could not advance; it is tried again at the next run", promotion.id)
