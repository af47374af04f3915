"""The check that binds a promotion to the registry version its approvers saw: before each approval and before
the deployment starts, the version is read again and compared with the fingerprint and tags recorded at request
time (see promotion/fingerprint.py). A changed fingerprint, an archived version or a missing one voids the
promotion; changed tags are noted, and void it only when production.void_on_tag_change names them.
"""

from __future__ import annotations

import logging

from promotion import fingerprint
from promotion.domain import EventType, LifecycleEvent, ModelVersion, Promotion, State
from promotion.policy import ProductionRules
from promotion.service.common import Clock
from promotion.service.lifecycle import promotion_event

log = logging.getLogger("promotion")

VOID_ACTION = State.VOIDED.value


class Voided(Exception):
    """The promotion was voided instead of approved (answered 409); the message says why."""


def check_artifact(
    promotion: Promotion, current: ModelVersion | None, *, rules: ProductionRules
) -> fingerprint.Comparison | None:
    """The version as it is now (`current`, just read from the registry; None when it is gone) against the request's
    record; None for a promotion that has no record (requested before fingerprints were recorded), which is left as
    it is."""
    recorded = promotion.artifact
    if not recorded:
        return None
    return fingerprint.compare(recorded, current, void_on_tag_change=rules.void_on_tag_change)


def voided(
    promotion: Promotion, comparison: fingerprint.Comparison, *, actor: str, source: str, clock: Clock
) -> tuple[Promotion, list[LifecycleEvent]]:
    """The promotion moved to `voided`, with both fingerprints and what differs, and the event that reports it."""
    detail = comparison.detail()
    void = promotion.move(State.VOIDED, actor=actor, at=clock(), detail=detail, error=comparison.void_reason)
    event = promotion_event(
        EventType.VOIDED, void, actor=actor, comment=comparison.void_reason, source=source, **detail
    )
    log.warning("promotion %s is voided: %s", promotion.id, comparison.void_reason)
    return void, [event]
