"""Use cases. Each takes its ports as parameters, so the same code runs on Azure, locally and in tests.

Error policy for the event path: an outcome that redelivery cannot change (a malformed event, a refused
source, a model gone from staging, a policy refusal) is returned as a Decision; anything else raises,
so Event Grid redelivers with backoff (a throttled registry, a broken policy file, missing permissions
that an operator can fix within the event's 24 hours).
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from promotion import events
from promotion.domain import (
    DEPLOYMENT_APPROVER_TAG,
    DEPLOYMENT_MODEL_TAG,
    DEPLOYMENT_PROMOTION_TAG,
    LINEAGE_SOURCE_MODEL,
    LINEAGE_SOURCE_WORKSPACE,
    Decision,
    HistoryEntry,
    Lineage,
    ModelRef,
    Outcome,
    Promotion,
    State,
    now,
)
from promotion.identity import Principal
from promotion.policy import Policy, ProductionRules
from promotion.ports import (
    AlreadyExists,
    Deployer,
    DeploymentFailed,
    DeploymentPlan,
    OpenPromotionExists,
    Progress,
    PromotionStore,
    RegistryModels,
    StaleRevision,
    WorkspaceModels,
)

log = logging.getLogger("promotion")
Clock = Callable[[], datetime]


# --- staging -> registry ---------------------------------------------------------------------------


def propagate(
    raw_event: Mapping[str, Any],
    *,
    staging_workspace_id: str,
    staging: WorkspaceModels,
    registry: RegistryModels,
    load_policy: Callable[[], Policy],
    store: PromotionStore,
) -> Decision:
    """Handle one ModelRegistered event: copy the model to the registry if the policy admits it."""
    try:
        event = events.parse(raw_event)
    except events.MalformedEvent as error:
        event_id = raw_event.get("id") if isinstance(raw_event, Mapping) else None
        return _decided(Decision(str(event_id), None, Outcome.MALFORMED, (str(error),)))
    if isinstance(event, events.OtherEvent):
        return _decided(Decision(event.event_id, None, Outcome.IGNORED_EVENT_TYPE, (event.event_type,)))
    if not events.same_resource(event.topic, staging_workspace_id):
        # Not recorded: an event from an untrusted source must not write to our store.
        reason = f"topic {event.topic} is not the staging workspace {staging_workspace_id}"
        return _decided(Decision(event.event_id, event.model, Outcome.REFUSED_SOURCE, (reason,)))

    decision = _propagate_model(event, staging_workspace_id, staging, registry, load_policy)
    if not store.record_decision(decision):
        log.info("event %s was already recorded; this is a redelivery", event.event_id)
    return _decided(decision)


def _propagate_model(
    event: events.ModelRegistered,
    staging_workspace_id: str,
    staging: WorkspaceModels,
    registry: RegistryModels,
    load_policy: Callable[[], Policy],
) -> Decision:
    ref = event.model

    def decided(outcome: Outcome, *reasons: str, digest: str | None = None) -> Decision:
        return Decision(event.event_id, ref, outcome, reasons, digest)

    # The registry first: a duplicate or replayed event then costs one read and nothing more.
    existing = registry.get(ref)
    if existing is not None and Lineage.is_tagged(existing.tags):
        return _tagged_copy_decision(existing.tags, ref, staging_workspace_id, decided)

    # The event may be stale or replayed: staging is the source of truth, not the event's tags.
    model = staging.get(ref)
    if model is None:
        return decided(Outcome.NOT_IN_STAGING, f"model {ref} is not in the staging workspace")

    verdict = load_policy().evaluate(model)
    if not verdict.qualifies:
        return decided(Outcome.NOT_QUALIFIED, *verdict.failed_rules, digest=verdict.policy_digest)

    lineage = Lineage(staging_workspace_id, ref, event.event_id, verdict.policy_digest)
    if existing is None:
        try:
            registry.copy_from_workspace(model, lineage)
            return decided(Outcome.COPIED, f"copied to the registry as {ref}", digest=verdict.policy_digest)
        except AlreadyExists:
            # Another delivery of this model won the race. It tags its copy right after importing it,
            # unless it stopped in between, so look once more.
            existing = registry.get(ref)
            if existing is None or Lineage.is_tagged(existing.tags):
                reason = "copied concurrently by another delivery"
                return decided(Outcome.ALREADY_IN_REGISTRY, reason, digest=verdict.policy_digest)

    # An untagged registry version: a copy whose tagging never happened (an import cannot carry tags),
    # or one shared by hand. It is the same model version of the same type from the trusted staging
    # workspace, and it qualifies, so it gets the lineage it is missing.
    if existing.type != model.type:
        reason = f"the registry holds {ref} as a {existing.type}, but staging has a {model.type}; left untouched"
        return decided(Outcome.REGISTRY_CONFLICT, reason, digest=verdict.policy_digest)
    registry.add_lineage(model, lineage)
    reason = f"the registry held {ref} without lineage tags; added them"
    return decided(Outcome.COPIED, reason, digest=verdict.policy_digest)


def _tagged_copy_decision(
    tags: Mapping[str, str], ref: ModelRef, staging_workspace_id: str, decided: Callable[..., Decision]
) -> Decision:
    from_here = events.same_resource(tags[LINEAGE_SOURCE_WORKSPACE], staging_workspace_id)
    if from_here and tags.get(LINEAGE_SOURCE_MODEL) == str(ref):
        return decided(Outcome.ALREADY_IN_REGISTRY, f"the registry already holds {ref}")
    source = f"{tags.get(LINEAGE_SOURCE_MODEL)} of {tags[LINEAGE_SOURCE_WORKSPACE]}"
    return decided(Outcome.REGISTRY_CONFLICT, f"the registry holds {ref} as a copy of {source}; left untouched")


def _decided(decision: Decision) -> Decision:
    level = (
        logging.WARNING
        if decision.outcome in {Outcome.MALFORMED, Outcome.REFUSED_SOURCE, Outcome.REGISTRY_CONFLICT}
        else logging.INFO
    )
    log.log(
        level,
        "event %s for %s: %s%s",
        decision.event_id,
        decision.model or "-",
        decision.outcome.value,
        "".join(f"\n  - {reason}" for reason in decision.reasons),
    )
    return decision


# --- the approval workflow -------------------------------------------------------------------------


class ModelNotInRegistry(LookupError):
    pass


class NotAllowed(PermissionError):
    pass


class ConcurrentChange(Exception):
    pass


def request_promotion(
    ref: ModelRef,
    *,
    reason: str | None,
    caller: Principal,
    registry: RegistryModels,
    store: PromotionStore,
    clock: Clock = now,
) -> tuple[Promotion, bool]:
    """Ask for production sharing. Returns the promotion and whether it is new (an open one is reused)."""
    if registry.get(ref) is None:
        raise ModelNotInRegistry(f"model {ref} is not in the registry")
    at = clock()
    promotion = Promotion(
        id=str(uuid.uuid4()),
        model=ref,
        state=State.PENDING_APPROVAL,
        requested_by=caller.name,
        created_at=at,
        updated_at=at,
        reason=reason,
        history=(HistoryEntry(at, caller.name, "requested", _detail(caller, reason=reason)),),
    )
    try:
        return store.add(promotion), True
    except OpenPromotionExists as open_one:
        return open_one.existing, False


def approve(
    promotion_id: str,
    *,
    caller: Principal,
    comment: str | None,
    rules: ProductionRules,
    store: PromotionStore,
    clock: Clock = now,
) -> Promotion:
    return _decide(promotion_id, State.APPROVED, caller, comment, rules, store, clock, approved_by=caller.name)


def reject(
    promotion_id: str,
    *,
    caller: Principal,
    comment: str,
    rules: ProductionRules,
    store: PromotionStore,
    clock: Clock = now,
) -> Promotion:
    return _decide(promotion_id, State.REJECTED, caller, comment, rules, store, clock, rejected_by=caller.name)


def _decide(
    promotion_id: str,
    decision: State,
    caller: Principal,
    comment: str | None,
    rules: ProductionRules,
    store: PromotionStore,
    clock: Clock,
    **decided_by: str,
) -> Promotion:
    promotion = store.get(promotion_id)
    _check_approver(promotion, caller, rules)
    detail = _detail(caller, comment=comment)
    return _save(store, promotion.move(decision, actor=caller.name, at=clock(), detail=detail, **decided_by))


def _check_approver(promotion: Promotion, caller: Principal, rules: ProductionRules) -> None:
    caller_ids = {caller.name.lower(), (caller.id or "").lower()}
    named = any(approver.lower() in caller_ids for approver in rules.approvers)
    by_role = bool(caller.roles & set(rules.approver_roles))
    if not (named or by_role):
        raise NotAllowed(
            f"{caller.name} is not an approver (not in production.approvers, and no role in production.approver_roles)"
        )
    requester_id = promotion.history[0].detail.get("principal_id") if promotion.history else None
    if rules.require_distinct_approver and caller.is_same_person(promotion.requested_by, requester_id):
        raise NotAllowed(f"{caller.name} requested this promotion and may not decide it (require_distinct_approver)")


def _detail(caller: Principal, **fields: Any) -> dict[str, Any]:
    detail = {key: value for key, value in fields.items() if value}
    if caller.id:
        detail["principal_id"] = caller.id
    return detail


def _save(store: PromotionStore, promotion: Promotion) -> Promotion:
    try:
        return store.save(promotion)
    except StaleRevision:
        raise ConcurrentChange(
            f"promotion {promotion.id} was changed by someone else at the same time; reload it"
        ) from None


# --- production deployment -------------------------------------------------------------------------

DEPLOY_ACTOR = "deploy_promotion"


def deploy(
    promotion_id: str,
    *,
    store: PromotionStore,
    registry: RegistryModels,
    deployer: Deployer,
    rules: ProductionRules,
    registry_model_uri: Callable[[ModelRef], str],
    clock: Clock = now,
) -> Promotion:
    """Move an approved promotion towards `deployed`, one idempotent step after another.

    Never waits for a long-running operation: when Azure is still working it returns the promotion in
    `deploying`, and the next call (the timer) carries on. Repeated calls are harmless.
    """
    promotion = store.get(promotion_id)
    if promotion.state is State.APPROVED:
        try:
            promotion = _start_deployment(promotion, store, registry, rules, registry_model_uri, clock)
        except StaleRevision:
            promotion = store.get(promotion_id)  # another worker started it; carry on from its state
    if promotion.state is not State.DEPLOYING:
        return promotion

    plan = _plan_from(promotion)
    try:
        for step in (deployer.ensure_endpoint, deployer.ensure_deployment, deployer.ensure_traffic):
            if step(plan) is Progress.PENDING:
                return promotion
    except DeploymentFailed as failure:
        return _finish(store, promotion, State.FAILED, clock, error=str(failure))
    return _finish(store, promotion, State.DEPLOYED, clock)


def _start_deployment(
    promotion: Promotion,
    store: PromotionStore,
    registry: RegistryModels,
    rules: ProductionRules,
    registry_model_uri: Callable[[ModelRef], str],
    clock: Clock,
) -> Promotion:
    model = registry.get(promotion.model)
    if model is None:
        failed = promotion.move(
            State.FAILED, actor=DEPLOY_ACTOR, at=clock(), error=f"model {promotion.model} is no longer in the registry"
        )
        return store.save(failed)
    lineage = {key: value for key, value in model.tags.items() if key.startswith("promotion.")}
    plan = {
        "endpoint": online_name(rules.endpoint_for(promotion.model)),
        "deployment": online_name(f"{promotion.model.name}-v{promotion.model.version}"),
        "model_uri": registry_model_uri(promotion.model),
        "instance_type": rules.instance_type,
        "instance_count": rules.instance_count,
        "traffic_percent": rules.traffic_percent,
        "tags": {
            **lineage,
            DEPLOYMENT_PROMOTION_TAG: promotion.id,
            DEPLOYMENT_MODEL_TAG: str(promotion.model),
            DEPLOYMENT_APPROVER_TAG: promotion.approved_by or "",
        },
    }
    deploying = promotion.move(
        State.DEPLOYING,
        actor=DEPLOY_ACTOR,
        at=clock(),
        detail={"endpoint": plan["endpoint"], "deployment": plan["deployment"]},
        deployment=plan,
    )
    return store.save(deploying)


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
    )


def _finish(
    store: PromotionStore, promotion: Promotion, state: State, clock: Clock, error: str | None = None
) -> Promotion:
    detail = {"error": error} if error else {}
    try:
        return store.save(promotion.move(state, actor=DEPLOY_ACTOR, at=clock(), detail=detail, error=error))
    except StaleRevision:
        return store.get(promotion.id)  # a concurrent worker finished it first


def fail_abandoned_job(promotion_id: str, *, store: PromotionStore, reason: str, clock: Clock = now) -> Promotion:
    """A deployment job that exhausted its retries: record the failure instead of losing it."""
    for _ in range(5):
        promotion = store.get(promotion_id)
        if promotion.state not in (State.APPROVED, State.DEPLOYING):
            return promotion
        try:
            return store.save(
                promotion.move(State.FAILED, actor=DEPLOY_ACTOR, at=clock(), detail={"error": reason}, error=reason)
            )
        except StaleRevision:
            continue
    raise ConcurrentChange(f"promotion {promotion_id} kept changing while recording its failure")


def advance_in_flight(*, store: PromotionStore, **deploy_ports: Any) -> list[Promotion]:
    """Carry every `deploying` promotion one step further (run by a timer in Azure)."""
    return [deploy(promotion.id, store=store, **deploy_ports) for promotion in store.list(state=State.DEPLOYING)]


def online_name(text: str) -> str:
    """An Azure online endpoint or deployment name: 3-32 characters, a letter first, letters, digits and '-'.

    Endpoint names become part of a DNS name, so they are lower-cased. A name that must be shortened
    keeps a digest of the full text, so two long names do not collide.
    """
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not name[:1].isalpha():
        name = f"m-{name}".rstrip("-")
    if len(name) > 32:
        name = f"{name[:25].rstrip('-')}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"
    return name if len(name) >= 3 else f"{name}-ep"


# --- the status view -------------------------------------------------------------------------------


def model_status(
    ref: ModelRef,
    *,
    staging: WorkspaceModels,
    registry: RegistryModels,
    deployer: Deployer,
    store: PromotionStore,
) -> dict[str, Any]:
    staged = staging.get(ref)
    shared = registry.get(ref)
    return {
        "model_name": ref.name,
        "model_version": ref.version,
        "staging": staged.to_json() if staged else None,
        "registry": shared.to_json() if shared else None,
        "production": deployer.deployments_of(ref),
        "promotions": [promotion.to_json() for promotion in store.list(model=ref)],
        "decisions": [decision.to_json() for decision in store.decisions(ref)],
    }
