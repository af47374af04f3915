"""Small pieces the use cases share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from promotion.domain import LifecycleEvent, Promotion
from promotion.identity import Principal
from promotion.ports import PromotionStore, StaleRevision

Clock = Callable[[], datetime]


def saved_or_current(store: PromotionStore, promotion: Promotion, events: Sequence[LifecycleEvent] = ()) -> Promotion:
    """Save a change the timer or the worker made; if a concurrent run changed the promotion first, its result
    stands and ours is dropped, events included."""
    try:
        return store.save(promotion, events)
    except StaleRevision:
        return store.get(promotion.id)


def detail(caller: Principal, **fields: Any) -> dict[str, Any]:
    """A history entry's detail: the given fields that have a value, and the caller's object id."""
    kept = {key: value for key, value in fields.items() if value}
    if caller.id:
        kept["principal_id"] = caller.id
    return kept
