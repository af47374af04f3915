"""The approval workflow: request production sharing, N-of-M approvals, rejection, expiry, and rollback.

Every change is saved with optimistic concurrency, together with the lifecycle event that reports it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from promotion import fingerprint, logs
from promotion.domain import (
    APPROVAL_ACTION,
    DEPLOYABLE_MODEL_TYPES,
    EventType,
    HistoryEntry,
    ModelRef,
    Promotion,
    State,
    new_promotion_id,
)
from promotion.identity import Principal
from promotion.policy import ProductionRules
from promotion.ports import (
    Deployer,
    DeploymentFailed,
    EndpointState,
    OpenPromotionExists,
    Progress,
    PromotionStore,
    RegistryModels,
    StaleRevision,
)
from promotion.service.artifact import Voided, check_artifact, voided
from promotion.service.common import Clock, detail, saved_or_current
from promotion.service.lifecycle import promotion_event

log = logging.getLogger("promotion")

# Concurrent approvals of one promotion are applied one after the other; each retry re-reads the promotion.
_ATTEMPTS = 5
EXPIRY_ACTOR = "advance_deployments"


class ModelNotInRegistry(LookupError):
    pass


class NotDeployable(ValueError):
    """The model cannot go to production as it is (answered 400)."""


class NotAllowed(PermissionError):
    pass


class ConcurrentChange(Exception):
    pass


class Conflict(Exception):
    """The promotion's state does not allow what was asked (answered 409); the message says why."""


def request_promotion(
    ref: ModelRef,
    *,
    reason: str | None,
    caller: Principal,
    registry: RegistryModels,
    store: PromotionStore,
    rules: ProductionRules,
    source: str,
    clock: Clock,
) -> tuple[Promotion, bool]:
    """Ask for production sharing. Returns the promotion and whether it is new (an open one is reused)."""
    model = registry.get(ref)
    if model is None:
        raise ModelNotInRegistry(f"model {ref} is not in the registry")
    if model.type not in DEPLOYABLE_MODEL_TYPES:
        raise NotDeployable(
            f"model {ref} is a {model.type}: Azure ML deploys only {' and '.join(DEPLOYABLE_MODEL_TYPES)} models "
            "without an environment and a scoring script, and this app deploys registry models as they are"
        )
    if model.archived:
        raise NotDeployable(f"model {ref} is archived in the registry; restore it before asking for production")
    # The exact version the approvers will see: checked again before each approval and before deployment.
    artifact = fingerprint.record(model)
    for _ in range(_ATTEMPTS):
        at = clock()
        promotion = Promotion(
            id=new_promotion_id(at),
            model=ref,
            state=State.PENDING_APPROVAL,
            requested_by=caller.name,
            created_at=at,
            updated_at=at,
            reason=reason,
            history=(HistoryEntry(at, caller.name, "requested", detail(caller, reason=reason, artifact=artifact)),),
        )
        event = promotion_event(
            EventType.APPROVAL_REQUESTED,
            promotion,
            actor=caller.name,
            comment=reason,
            source=source,
            reason=reason,
            requested_by=caller.name,
            required_approvals=rules.required_approvals,
            artifact=fingerprint.for_event(artifact),
        )
        try:
            added = store.add(promotion, [event])
        except OpenPromotionExists as open_one:
            existing = open_one.existing
            if not _expire_if_due(existing, rules, store, source, clock):
                return existing, False
            continue  # the open request had expired: now there is room for this one
        with logs.fields(promotion_id=added.id, model=ref):
            log.info("production sharing of %s requested by %s", ref, caller.name)
        return added, True
    raise ConcurrentChange(f"the open promotion of {ref} kept changing; try again")


def approve(
    promotion_id: str,
    *,
    caller: Principal,
    comment: str | None,
    rules: ProductionRules,
    store: PromotionStore,
    registry: RegistryModels,
    source: str,
    clock: Clock,
) -> Promotion:
    """Record one approval. The promotion becomes `approved` at the `required_approvals`-th distinct approver.

    The registry version is read again first: if it is no longer the one requested (see service.artifact), the
    promotion is voided instead, and Voided raises with the reason."""

    def change(promotion: Promotion) -> tuple[Promotion, list[Any]]:
        _check_decider(promotion, caller, rules)
        if any(caller.is_same_person(entry.actor, entry.detail.get("principal_id")) for entry in promotion.approvals):
            raise Conflict(f"{caller.name} has approved promotion {promotion.id} already")
        comparison = check_artifact(promotion, registry.get(promotion.model), rules=rules)
        if comparison is not None and comparison.void_reason:
            return voided(promotion, comparison, actor=caller.name, source=source, clock=clock)
        at = clock()
        seen = detail(caller, comment=comment)
        if comparison is not None and comparison.tag_changes:
            seen.update(comparison.detail())  # the approval counts; the history shows what the approver saw change
        approved = promotion.note(APPROVAL_ACTION, actor=caller.name, at=at, detail=seen)
        names = [entry.actor for entry in approved.approvals]
        if len(names) < rules.required_approvals:
            return approved, []
        approved = approved.move(
            State.APPROVED,
            actor=caller.name,
            at=at,
            detail={"approvals": len(names)},
            approved_by=", ".join(names),
        )
        artifact = {"artifact": fingerprint.for_event(approved.artifact)} if approved.artifact else {}
        event = promotion_event(
            EventType.APPROVED, approved, actor=caller.name, comment=comment, source=source, approvals=names, **artifact
        )
        return approved, [event]

    return _change(promotion_id, change, rules=rules, store=store, source=source, clock=clock)


def reject(
    promotion_id: str,
    *,
    caller: Principal,
    comment: str,
    rules: ProductionRules,
    store: PromotionStore,
    source: str,
    clock: Clock,
) -> Promotion:
    """Any approver's rejection ends a pending request."""

    def change(promotion: Promotion) -> tuple[Promotion, list[Any]]:
        _check_decider(promotion, caller, rules)
        entry = detail(caller, comment=comment)
        rejected = promotion.move(State.REJECTED, actor=caller.name, at=clock(), detail=entry, rejected_by=caller.name)
        return rejected, [
            promotion_event(EventType.REJECTED, rejected, actor=caller.name, comment=comment, source=source)
        ]

    return _change(promotion_id, change, rules=rules, store=store, source=source, clock=clock)


def _change(
    promotion_id: str,
    change: Callable[[Promotion], tuple[Promotion, list[Any]]],
    *,
    rules: ProductionRules,
    store: PromotionStore,
    source: str,
    clock: Clock,
) -> Promotion:
    """Apply a decision to a pending request, re-reading it when another decision was saved first."""
    for _ in range(_ATTEMPTS):
        promotion = store.get(promotion_id)
        with logs.fields(promotion_id=promotion.id, model=promotion.model):
            if promotion.state is State.PENDING_APPROVAL and _expire_if_due(promotion, rules, store, source, clock):
                raise Conflict(f"promotion {promotion.id} expired: it waited longer than {_ttl(rules)} for approval")
            changed, events = change(promotion)
            try:
                saved = store.save(changed, events)
            except StaleRevision:
                continue
            log.info("promotion %s is %s (%s)", saved.id, saved.state.value, saved.history[-1].action)
            if saved.state is State.VOIDED:
                raise Voided(
                    f"promotion {saved.id} is voided and nothing will deploy: {saved.error}; "
                    "request production sharing again to start over"
                )
            return saved
    raise ConcurrentChange(f"promotion {promotion_id} kept changing; reload it and try again")


def expire_stale_requests(
    *, rules: ProductionRules, store: PromotionStore, source: str, clock: Clock
) -> list[Promotion]:
    """Expire every pending request older than production.approval_ttl_hours (run by the timer)."""
    expired = []
    for promotion in store.open_promotions([State.PENDING_APPROVAL]):  # never reads finished promotions
        with logs.fields(promotion_id=promotion.id, model=promotion.model):
            try:
                if _expire_if_due(promotion, rules, store, source, clock):
                    expired.append(promotion)
            except Exception:
                log.exception("could not expire promotion %s; tried again at the next run", promotion.id)
    return expired


def _expire_if_due(
    promotion: Promotion, rules: ProductionRules, store: PromotionStore, source: str, clock: Clock
) -> bool:
    """Expire a pending request that waited too long. True when it is expired now (by us or a concurrent call)."""
    at = clock()
    if promotion.state is not State.PENDING_APPROVAL or at - promotion.created_at <= rules.approval_ttl:
        return False
    reason = f"no decision within {_ttl(rules)}"
    expired = promotion.move(State.EXPIRED, actor=EXPIRY_ACTOR, at=at, detail={"reason": reason})
    event = promotion_event(EventType.EXPIRED, expired, actor=EXPIRY_ACTOR, comment=reason, source=source)
    try:
        store.save(expired, [event])
        log.info("promotion %s expired: %s", promotion.id, reason)
    except StaleRevision:
        return store.get(promotion.id).state is State.EXPIRED
    return True


def _ttl(rules: ProductionRules) -> str:
    return f"{rules.approval_ttl.total_seconds() / 3600:g} hours (production.approval_ttl_hours)"


# --- rollback --------------------------------------------------------------------------------------

ROLLBACK_ACTOR = "advance_deployments"


def rollback(
    promotion_id: str,
    *,
    caller: Principal,
    comment: str,
    rules: ProductionRules,
    store: PromotionStore,
    deployer: Deployer,
    source: str,
    clock: Clock,
) -> Promotion:
    """Give the endpoint's traffic back to what was live before this promotion took it.

    An emergency action: one approver is enough, the requester included, and it is always audited. Answers the
    promotion `rolled_back` when the traffic moved at once, else `rolling_back` (the timer finishes it).
    """
    promotion = store.get(promotion_id)
    with logs.fields(promotion_id=promotion.id, model=promotion.model):
        _check_approver(caller, rules)
        if promotion.state is not State.DEPLOYED:
            raise Conflict(f"promotion {promotion.id} is {promotion.state.value}; only a deployed promotion rolls back")
        endpoint, ours = promotion.deployment.get("endpoint"), promotion.deployment.get("deployment")
        live = deployer.endpoint(endpoint) if endpoint else None
        if live is None or not live.traffic.get(ours, 0):
            raise Conflict(f"promotion {promotion.id} is not the live one: its deployment {ours} has no traffic")
        target = _traffic_before(promotion, live.models)
        if not target:
            raise Conflict(f"there is nothing to roll back to: nothing else was live on {endpoint} before {ours}")
        rolling = promotion.move(
            State.ROLLING_BACK,
            actor=caller.name,
            at=clock(),
            detail={**detail(caller, comment=comment), "traffic": target},
            deployment={**promotion.deployment, "rollback_traffic": target},
        )
        try:
            rolling = store.save(rolling)
        except StaleRevision:
            raise ConcurrentChange(f"promotion {promotion.id} changed at the same time; reload it") from None
        log.warning("rollback of promotion %s requested by %s: %s", promotion.id, caller.name, comment)
        after = advance_rollback(
            rolling, store=store, deployer=deployer, source=source, timeout=rules.deploy_timeout, clock=clock
        )
        if after.state is State.DEPLOYED:
            raise Conflict(f"the rollback did not happen: {after.history[-1].detail.get('rollback_failed')}")
        return after


def advance_rollback(
    promotion: Promotion,
    *,
    store: PromotionStore,
    deployer: Deployer,
    source: str,
    timeout: timedelta | None = None,
    clock: Clock,
) -> Promotion:
    """Move the traffic back, or see whether it has moved; `rolled_back` once it has. A rollback Azure refuses, one
    still not applied after `timeout` (production.deploy_timeout_minutes), or one whose deployment lost its traffic
    to another before the traffic moved back, leaves the promotion `deployed`, and is not tried again."""
    endpoint, target = promotion.deployment["endpoint"], promotion.deployment["rollback_traffic"]
    at = clock()
    try:
        _check_still_live(promotion, deployer.endpoint(endpoint), target)
        if deployer.set_traffic(endpoint, target) is Progress.PENDING:
            if timeout is None or at - promotion.last_entry_at <= timeout:
                return promotion
            minutes = timeout.total_seconds() / 60
            raise DeploymentFailed(
                f"the traffic did not move within {minutes:g} minutes (production.deploy_timeout_minutes)"
            )
    except DeploymentFailed as refused:
        back = promotion.move(State.DEPLOYED, actor=ROLLBACK_ACTOR, at=at, detail={"rollback_failed": str(refused)})
        return saved_or_current(store, back, [])
    done = promotion.move(State.ROLLED_BACK, actor=ROLLBACK_ACTOR, at=clock(), detail={"traffic": target})
    asked = next(entry for entry in reversed(done.history) if entry.action == State.ROLLING_BACK.value)
    event = promotion_event(
        EventType.ROLLED_BACK,
        done,
        actor=asked.actor,  # who rolled back, not the timer that saw it through
        comment=asked.detail.get("comment"),
        source=source,
        endpoint=endpoint,
        traffic=target,
    )
    return saved_or_current(store, done, [event])


def _check_still_live(promotion: Promotion, live: EndpointState | None, target: Mapping[str, int]) -> None:
    """Checked again just before the traffic moves back: the promotion's deployment must still be live, or the
    rollback already applied. Otherwise another deployment took the traffic since the rollback was asked for, and
    moving it back would silently undo that one."""
    endpoint, ours = promotion.deployment["endpoint"], promotion.deployment["deployment"]
    if live is None:
        raise DeploymentFailed(f"online endpoint {endpoint} no longer exists")
    if dict(live.traffic) != dict(target) and not live.traffic.get(ours):
        raise DeploymentFailed(
            f"{ours} is no longer live on {endpoint} (its traffic is {dict(live.traffic)} since the rollback was "
            "asked for): nothing was rolled back"
        )


def _traffic_before(promotion: Promotion, deployments: Mapping[str, str | None]) -> dict[str, int]:
    """The traffic recorded before this promotion took its share, without deployments that are gone since.
    When one of them is gone, the largest one left takes its share."""
    ours = promotion.deployment.get("deployment")
    before = {
        name: int(share)
        for name, share in (promotion.deployment.get("previous_traffic") or {}).items()
        if name != ours and name in deployments and int(share) > 0
    }
    if before and sum(before.values()) != 100:
        largest = max(sorted(before), key=lambda name: before[name])
        before[largest] += 100 - sum(before.values())
    return before


# --- who may decide --------------------------------------------------------------------------------


def may_approve(caller: Principal, rules: ProductionRules) -> bool:
    """Whether the policy makes `caller` an approver (by name, object id, or app role)."""
    return caller.is_listed(rules.approvers) or bool(caller.roles & set(rules.approver_roles))


def _check_approver(caller: Principal, rules: ProductionRules) -> None:
    if not may_approve(caller, rules):
        raise NotAllowed(
            f"{caller.name} is not an approver (not in production.approvers, and no role in production.approver_roles)"
        )


def _check_decider(promotion: Promotion, caller: Principal, rules: ProductionRules) -> None:
    _check_approver(caller, rules)
    if rules.require_distinct_approver and caller.is_same_person(promotion.requested_by, promotion.requester_id):
        raise NotAllowed(f"{caller.name} requested this promotion and may not decide it (require_distinct_approver)")
    if promotion.state is not State.PENDING_APPROVAL:
        raise Conflict(f"promotion {promotion.id} is {promotion.state.value}; only a pending request can be decided")
