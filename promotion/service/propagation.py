"""Staging -> registry: a ModelRegistered event (or a reconcile finding) becomes a registry copy, if the policy
admits the model.

The event handler must answer Event Grid within 30 seconds, and a copy of a large model takes minutes, so
the handler only starts the copy (at most 3 Azure ML requests: registry read, staging read, start) and
records it; `copies.advance_registry_copies` finishes it.

Error policy: an outcome that redelivery cannot change (a malformed event, a refused source, a model gone
from staging, a policy refusal) is returned as a Decision; anything else raises, so Event Grid redelivers
with backoff (a throttled registry, a broken policy file, missing permissions that an operator can fix
within the event's 24 hours).
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from promotion import events, logs
from promotion.domain import (
    LINEAGE_SOURCE_MODEL,
    LINEAGE_SOURCE_WORKSPACE,
    CopyState,
    Decision,
    EventType,
    LifecycleEvent,
    Lineage,
    ModelRef,
    ModelVersion,
    Outcome,
    RegistryCopy,
)
from promotion.policy import Policy
from promotion.ports import (
    AlreadyExists,
    CopyClaimed,
    CopyRefused,
    PromotionStore,
    RegistryModels,
    StaleRevision,
    WorkspaceModels,
)
from promotion.service.common import Clock
from promotion.service.lifecycle import copy_event

log = logging.getLogger("promotion")
ACTOR = "on_model_registered"

_UNREAD: Any = object()  # a model not read yet, as opposed to one read and found missing (None)
# Outcomes consider() records itself, in the same transaction as the copy they concern.
RECORDED_WITH_THE_COPY = frozenset({Outcome.COPY_STARTED, Outcome.COPY_FAILED})
# A concurrency conflict on our own store is never the caller's failure: the record is read again and the
# decision made again, this many times at most.
_ATTEMPTS = 5
# What a duplicate of the event that started a copy may find: the copy under way, or already done.
_SEEN_BY_A_DUPLICATE = frozenset({Outcome.COPY_IN_PROGRESS, Outcome.ALREADY_IN_REGISTRY, Outcome.REGISTRY_CONFLICT})


def propagate(
    raw_event: Mapping[str, Any],
    *,
    staging_workspace_id: str,
    staging: WorkspaceModels,
    registry: RegistryModels,
    load_policy: Callable[[], Policy],
    store: PromotionStore,
    source: str,
    clock: Clock,
) -> Decision:
    """Handle one ModelRegistered event: start copying the model into the registry if the policy admits it."""
    try:
        event = events.parse(raw_event)
    except events.MalformedEvent as error:
        event_id = raw_event.get("id") if isinstance(raw_event, Mapping) else None
        shown = events.kept_event_id(event_id) if isinstance(event_id, str) else str(event_id)
        return _logged(Decision(shown, None, Outcome.MALFORMED, (str(error),), None, clock()))
    with logs.fields(event_id=event.event_id, model=getattr(event, "model", None)):
        if isinstance(event, events.OtherEvent):
            return _logged(
                Decision(event.event_id, None, Outcome.IGNORED_EVENT_TYPE, (event.event_type,), None, clock())
            )
        if not events.same_resource(event.topic, staging_workspace_id):
            # Not recorded: an event from an untrusted source must not write to our store.
            reason = f"topic {event.topic} is not the staging workspace {staging_workspace_id}"
            return _logged(Decision(event.event_id, event.model, Outcome.REFUSED_SOURCE, (reason,), None, clock()))

        decision = consider(
            event.model,
            cause=event.event_id,
            staging_workspace_id=staging_workspace_id,
            staging=staging,
            registry=registry,
            policy=load_policy,
            store=store,
            source=source,
            actor=ACTOR,
            clock=clock,
        )
        recorded = decision.outcome in RECORDED_WITH_THE_COPY or _redelivered_while_copying(decision, store)
        if not recorded and not store.record_decision(decision):
            log.info("event %s was already recorded; this is a redelivery", event.event_id)
        return _logged(decision)


def _redelivered_while_copying(decision: Decision, store: PromotionStore) -> bool:
    """A redelivery of the very event whose copy is under way or done: that event's decision says `copy_started`
    (or is about to), and a concurrent duplicate must not take its place."""
    if decision.outcome not in _SEEN_BY_A_DUPLICATE or decision.model is None:
        return False
    copy = store.copy(decision.model)
    return copy is not None and copy.cause == decision.event_id


def _decided_again_on_conflict(consider_once: Callable[..., Decision]) -> Callable[..., Decision]:
    """A concurrent change of the copy on our store (another delivery, reconcile or the timer) is no failure of
    the caller: the copy is read again and the decision made again."""

    @functools.wraps(consider_once)
    def consider(*args: Any, **kwargs: Any) -> Decision:
        for _ in range(_ATTEMPTS - 1):
            try:
                return consider_once(*args, **kwargs)
            except StaleRevision as conflict:
                log.info("%s; reading it again", conflict)
        return consider_once(*args, **kwargs)

    return consider


@_decided_again_on_conflict
def consider(
    ref: ModelRef,
    *,
    cause: str,
    staging_workspace_id: str,
    staging: WorkspaceModels,
    registry: RegistryModels,
    policy: Callable[[], Policy],
    store: PromotionStore,
    source: str,
    actor: str,
    clock: Clock,
    held: ModelVersion | None = _UNREAD,
    staged: ModelVersion | None = _UNREAD,
) -> Decision:
    """Decide about one staging model version, and start its copy when the policy admits it.

    `held` (the registry's version) and `staged` may be passed when the caller has read them already, as the
    reconcile sweep has; otherwise they are read here, the registry first, so that a duplicate event costs one
    read and nothing more. Outcomes about a copy (RECORDED_WITH_THE_COPY) are recorded here with it; the caller
    records other decisions if it wants. A concurrent change on our store never raises to the caller.
    """

    def decided(outcome: Outcome, *reasons: str, digest: str | None = None) -> Decision:
        return Decision(cause, ref, outcome, reasons, digest, clock())

    read_here = held is _UNREAD
    if read_here:
        held = registry.get(ref)
    if held is not None and Lineage.is_tagged(held.tags):
        return _tagged_copy_decision(held.tags, ref, staging_workspace_id, decided)

    in_flight = store.copy(ref)
    if read_here and held is None and in_flight is not None and in_flight.state is CopyState.COPIED:
        # Finished since the registry was read, perhaps: ask again before calling it deleted.
        held = registry.get(ref)
        if held is not None and Lineage.is_tagged(held.tags):
            return _tagged_copy_decision(held.tags, ref, staging_workspace_id, decided)
    if in_flight is not None and in_flight.state is CopyState.COPYING:
        return decided(Outcome.COPY_IN_PROGRESS, f"the copy started by {in_flight.cause} is under way")
    if in_flight is not None and in_flight.state is CopyState.COPIED and held is None:
        reason = f"{ref} was copied by {in_flight.cause}, but the registry no longer holds it (deleted?)"
        return decided(Outcome.REGISTRY_CONFLICT, reason)

    # The event may be stale or replayed: staging is the source of truth, not the event's tags.
    if staged is _UNREAD:
        staged = staging.get(ref)
    if staged is None:
        return decided(Outcome.NOT_IN_STAGING, f"model {ref} is not in the staging workspace")

    verdict = policy().evaluate(staged)
    if not verdict.qualifies:
        return decided(Outcome.NOT_QUALIFIED, *verdict.failed_rules, digest=verdict.policy_digest)
    if held is not None and held.type != staged.type:
        reason = f"the registry holds {ref} as a {held.type}, but staging has a {staged.type}; left untouched"
        return decided(Outcome.REGISTRY_CONFLICT, reason, digest=verdict.policy_digest)

    at = clock()
    attempt = RegistryCopy(
        model=ref,
        attempt=str(uuid.uuid4()),
        state=CopyState.COPYING,
        model_type=staged.type,
        lineage=Lineage(staging_workspace_id, ref, cause, verdict.policy_digest),
        tags=dict(staged.tags),
        description=staged.description,
        started_at=at,
        updated_at=at,
    )
    failed_before = in_flight if in_flight is not None and in_flight.state is CopyState.COPY_FAILED else None
    try:
        claimed = store.claim_copy(attempt, replacing=failed_before)
    except CopyClaimed as other:
        return decided(Outcome.COPY_IN_PROGRESS, f"the copy started by {other.existing.cause} is under way")

    if held is not None:
        # An untagged registry version of the same type, such as a copy shared by hand: it qualifies, so the
        # timer gives it the lineage it is missing. Nothing is copied.
        operation, reason = None, f"the registry holds {ref} without lineage tags; they are added next"
    else:
        try:
            operation, reason = registry.start_copy(staged), f"copying {ref} into the registry"
        except AlreadyExists:
            # Copied by someone else since we looked: the timer checks what the registry holds before tagging it.
            operation, reason = None, f"the registry received {ref} meanwhile; checking it before adding lineage"
        except CopyRefused as refused:
            reason = str(refused)
            failed = claimed.finished(CopyState.COPY_FAILED, clock(), reason)
            decision = decided(Outcome.COPY_FAILED, reason, digest=verdict.policy_digest)
            # Each reconcile tries a refused copy again (the cause, say a permission, may be fixed by then); the
            # same refusal once more is recorded, but it is no news to publish.
            news = failed_before is None or failed_before.error != reason
            event = copy_event(EventType.REGISTRY_COPY_FAILED, failed, actor=actor, source=source, reason=reason)
            at = failed.updated_at
            _settle(
                store,
                claimed,
                lambda c: c.finished(CopyState.COPY_FAILED, at, reason),
                decision,
                [event] if news else [],
            )
            return decision
        except BaseException:
            store.release_copy(claimed, previous=failed_before)
            raise
    decision = decided(Outcome.COPY_STARTED, reason, digest=verdict.policy_digest)
    _settle(store, claimed, lambda c: replace(c, operation=operation), decision)
    return decision


def _settle(
    store: PromotionStore,
    claimed: RegistryCopy,
    change: Callable[[RegistryCopy], RegistryCopy],
    decision: Decision,
    events: list[LifecycleEvent] | None = None,
) -> None:
    """Save what this cause did to the copy it claimed, with its decision, in one transaction.

    The copy may change under us once it is claimed: the timer may finish it (a copy that lands at once), or
    another delivery may save it. That is no failure: the copy is read again; while it is still this attempt
    under way, the change is applied to it again; once it has ended, its end stands, and this cause's decision
    is recorded on its own. Either way the decision is kept and the caller acknowledged.
    """
    copy = claimed
    for _ in range(_ATTEMPTS):
        try:
            store.save_copy(change(copy), decision=decision, events=events or [])
            return
        except StaleRevision:
            current = store.copy(claimed.model)
            if current is None or current.attempt != claimed.attempt or current.state is not CopyState.COPYING:
                log.info(
                    "the copy of %s ended meanwhile (%s); recording the decision only",
                    claimed.model,
                    current.state.value if current else "gone",
                )
                store.record_decision(decision)
                return
            copy = current
    log.warning("the copy of %s kept changing; recording the decision only", claimed.model)
    store.record_decision(decision)


def _tagged_copy_decision(
    tags: Mapping[str, str], ref: ModelRef, staging_workspace_id: str, decided: Callable[..., Decision]
) -> Decision:
    other = foreign_source(tags, ref, staging_workspace_id)
    if other is None:
        return decided(Outcome.ALREADY_IN_REGISTRY, f"the registry already holds {ref}")
    return decided(Outcome.REGISTRY_CONFLICT, f"the registry holds {ref} as a copy of {other}; left untouched")


def foreign_source(tags: Mapping[str, str], ref: ModelRef, staging_workspace_id: str) -> str | None:
    """None when lineage-tagged registry tags say "a copy of `ref` from the staging workspace", else what they
    name instead."""
    workspace, model = tags[LINEAGE_SOURCE_WORKSPACE], tags.get(LINEAGE_SOURCE_MODEL)
    if events.same_resource(workspace, staging_workspace_id) and model == str(ref):
        return None
    return f"{model} of {workspace}"


def _logged(decision: Decision) -> Decision:
    worth_a_warning = {Outcome.MALFORMED, Outcome.REFUSED_SOURCE, Outcome.REGISTRY_CONFLICT}
    log.log(
        logging.WARNING if decision.outcome in worth_a_warning else logging.INFO,
        "event %s for %s: %s%s",
        decision.event_id,
        decision.model or "-",
        decision.outcome.value,
        "".join(f"\n  - {reason}" for reason in decision.reasons),
    )
    return decision
