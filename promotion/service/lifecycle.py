"""Lifecycle events: what the app tells the world about every change it makes.

An event is built here when the change is decided, and the store writes it in the same transaction as the
change (a transactional outbox). Publishing is a separate step, `publish_pending`: oldest first, in batches,
marked published only once Event Grid has taken the batch. So delivery is at least once, a retry re-sends the
same ids, and an outage of the topic loses nothing.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from promotion.domain import EventType, LifecycleEvent, Promotion, RegistryCopy, isoformat
from promotion.ports import EventPublisher, PromotionStore
from promotion.service.common import Clock

log = logging.getLogger("promotion")

# Event Grid takes at most 1 MB per batch; events here are a few hundred bytes, so 100 stay far below it.
BATCH_SIZE = 100


def promotion_event(
    type: EventType, promotion: Promotion, *, actor: str, comment: str | None = None, source: str, **extra: Any
) -> LifecycleEvent:
    """The event for the change `promotion` has just gone through (its last history entry)."""
    at = promotion.last_entry_at
    data = {
        "model": promotion.model.to_json(),
        "promotion_id": promotion.id,
        "state": promotion.state.value,
        "actor": actor,
        "comment": comment,
        "at": isoformat(at),
        **extra,
    }
    return LifecycleEvent(str(uuid.uuid4()), type, source, promotion.model, at, data)


def copy_event(type: EventType, copy: RegistryCopy, *, actor: str, source: str, **extra: Any) -> LifecycleEvent:
    data = {
        "model": copy.model.to_json(),
        "promotion_id": None,
        "state": copy.state.value,
        "actor": actor,
        "comment": None,
        "at": isoformat(copy.updated_at),
        **extra,
    }
    return LifecycleEvent(str(uuid.uuid4()), type, source, copy.model, copy.updated_at, data)


@dataclass(frozen=True)
class PublishReport:
    published: int
    error: str | None = None  # why publishing stopped early; what is left goes out at the next run


def publish_pending(
    store: PromotionStore,
    publisher: EventPublisher,
    *,
    max_batches: int | None = None,
    batch_size: int = BATCH_SIZE,
    clock: Clock,
) -> PublishReport:
    """Publish unpublished events, oldest first, one batch at a time, until none is left (or `max_batches`).

    A batch is marked published only after Event Grid accepted it. When a batch fails, publishing stops there,
    so events of one promotion never overtake each other; the next run starts again with that batch.
    """
    published = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        batch = store.unpublished_events(limit=batch_size)
        if not batch:
            break
        try:
            publisher.publish(batch)
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            log.warning("publishing %d lifecycle events failed; they stay in the outbox: %s", len(batch), reason)
            return PublishReport(published, reason)
        store.mark_published(batch, clock())
        published += len(batch)
        batches += 1
    return PublishReport(published)


def publish_soon(store: PromotionStore, publisher: EventPublisher | None, *, clock: Clock) -> None:
    """The best-effort publish right after a change: one batch, one short attempt, and never an error for the
    caller. Whatever it does not send, the publish_lifecycle_events timer sends within a minute."""
    if publisher is None:
        return
    try:
        publish_pending(store, publisher, max_batches=1, clock=clock)
    except Exception as error:  # the store itself failed: the change is committed, the timer will publish it
        log.warning("could not publish lifecycle events right away: %s: %s", type(error).__name__, error)


def purge_published(store: PromotionStore, *, retention: timedelta, clock: Clock) -> int:
    removed = store.purge_published(before=clock() - retention)
    if removed:
        log.info("removed %d lifecycle events published more than %s ago", removed, retention)
    return removed


def purge_decisions(store: PromotionStore, *, retention: timedelta, clock: Clock) -> int:
    """Forget decisions about events older than the retention (PROMOTION_DECISIONS_RETENTION_DAYS, always more than
    Event Grid's 24 hours of redelivery). Promotions and their history are the audit trail and are never purged."""
    removed = store.purge_decisions(before=clock() - retention)
    if removed:
        log.info("removed %d decisions made more than %s ago", removed, retention)
    return removed
