"""Finishing registry copies: the timer's half of staging -> registry.

Every minute, each copy under way is asked how it is going (one status read). A finished copy gets its lineage
tags (one read and one write of the registry version: 3 requests in all). The registry may apply that write as a
long-running operation: the copy then stays `copying` with the handle of the tag update, and later runs ask about
it, never waiting inside one run. Only once the registry shows the tags is the copy recorded `copied` (and
`CopiedToRegistry` published). A failed copy or tag update, or one that runs past the timeout, is recorded
`copy_failed` with the reason. A status that cannot be read (a 5xx, a timeout) is transient: the copy says for
how long it has been unavailable, and the timeout still applies. Each copy is handled on its own, and a run that
races another run on another instance changes nothing more: the store takes one of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from promotion import logs
from promotion.domain import (
    CopyState,
    Decision,
    EventType,
    Lineage,
    ModelVersion,
    Outcome,
    RegistryCopy,
)
from promotion.ports import (
    CopyProgress,
    PromotionStore,
    RegistryModels,
    StaleRevision,
    StatusUnavailable,
    TagUpdate,
)
from promotion.redaction import kept
from promotion.service.common import Clock
from promotion.service.lifecycle import copy_event
from promotion.service.propagation import foreign_source

log = logging.getLogger("promotion")

ACTOR = "advance_registry_copies"
DEFAULT_TIMEOUT = timedelta(minutes=120)
# A copy claimed without an operation has either found an untagged registry version (tagged at the next run) or
# has not been started yet: its starter has this long to start it before the claim counts as abandoned.
START_GRACE = timedelta(minutes=5)
# How a copy under way says that its status cannot be read, followed by how long and the last answer.
UNAVAILABLE = "status unavailable for "


class RegistryConflict(Exception):
    """The registry holds the version, but not as the copy we started: it is left untouched."""


@dataclass(frozen=True)
class CopyRun:
    copying: int = 0
    copied: int = 0
    failed: int = 0
    errors: int = 0


def advance_registry_copies(
    *,
    registry: RegistryModels,
    store: PromotionStore,
    source: str,
    timeout: timedelta = DEFAULT_TIMEOUT,
    clock: Clock,
) -> CopyRun:
    """Take every copy under way one step further. One copy's failure never stops the others. Only copies under way
    are read (the store's index of open work), so a run costs the same however many copies have finished."""
    counts = {"copying": 0, "copied": 0, "failed": 0, "errors": 0}
    for copy in store.copies_in_flight():
        with logs.fields(model=copy.model, event_id=copy.cause):
            try:
                state = advance_copy(copy, registry=registry, store=store, source=source, timeout=timeout, clock=clock)
            except StatusUnavailable as unavailable:
                log.warning("the copy of %s is still copying, but %s", copy.model, unavailable)
                counts["errors"] += 1
                continue
            except Exception:
                log.exception("the copy of %s could not be advanced; it is tried again at the next run", copy.model)
                counts["errors"] += 1
                continue
        counts[{CopyState.COPYING: "copying", CopyState.COPIED: "copied", CopyState.COPY_FAILED: "failed"}[state]] += 1
    return CopyRun(**counts)


def advance_copy(
    copy: RegistryCopy,
    *,
    registry: RegistryModels,
    store: PromotionStore,
    source: str,
    timeout: timedelta = DEFAULT_TIMEOUT,
    clock: Clock,
) -> CopyState:
    """One step of one copy: at most 3 registry requests (status, then the version's read and write).

    A copy past its timeout fails even when Azure cannot be asked (a lasting outage, throttling), so that no
    version stays `copying`, and so closed to events and reconcile, for good.
    """
    at = clock()
    try:
        return _step(copy, registry, store, source, timeout, at)
    except StatusUnavailable as error:
        return _unavailable(store, copy, at, source, timeout, error)
    except Exception as error:
        if at - copy.started_at <= timeout:
            raise
        reason = f"{_too_old(timeout)}; the last attempt to ask Azure failed: {type(error).__name__}: {error}"
        return _finish(store, copy, CopyState.COPY_FAILED, at, source, kept(reason))


def _step(
    copy: RegistryCopy, registry: RegistryModels, store: PromotionStore, source: str, timeout: timedelta, at: datetime
) -> CopyState:
    if copy.tag_operation is not None:
        status = registry.tag_status(copy.model, copy.tag_operation, copy.registry_tags, copy.description)
        if status.progress is CopyProgress.FAILED:
            reason = f"the registry did not apply the lineage tags: {status.message or 'the tag update failed'}"
            return _finish(store, copy, CopyState.COPY_FAILED, at, source, reason)
        if status.progress is CopyProgress.RUNNING:
            return _unless_too_old(store, copy, at, source, timeout)
        return _finish(store, copy, CopyState.COPIED, at, source)

    if copy.operation is not None:
        status = registry.copy_status(copy.operation)
        if status.progress is CopyProgress.FAILED:
            return _finish(store, copy, CopyState.COPY_FAILED, at, source, status.message or "the copy failed")
        if status.progress is CopyProgress.RUNNING:
            return _unless_too_old(store, copy, at, source, timeout)

    try:
        tagged = registry.tag(copy.model, copy.registry_tags, copy.description, check=_ours(copy))
    except RegistryConflict as conflict:
        return _finish(store, copy, CopyState.COPY_FAILED, at, source, str(conflict))
    if tagged is None:
        if copy.operation is not None:  # the operation said it succeeded, so the version is on its way
            return _unless_too_old(store, copy, at, source, timeout)
        if at - copy.started_at > START_GRACE:
            reason = "the copy was never started (the instance that claimed it stopped first); it is tried again"
            return _finish(store, copy, CopyState.COPY_FAILED, at, source, reason)
        return CopyState.COPYING
    if isinstance(tagged, TagUpdate):
        # Accepted, not applied: `copied` (and CopiedToRegistry) wait until the registry shows the tags.
        _keep(store, copy, copy.tagging(tagged.operation, at))
        return CopyState.COPYING
    return _finish(store, copy, CopyState.COPIED, at, source)


def _keep(store: PromotionStore, copy: RegistryCopy, changed: RegistryCopy) -> None:
    """Save a copy that stays under way; another run that changed it first has the last word."""
    try:
        store.save_copy(changed)
    except StaleRevision:
        log.info("the copy of %s was advanced by another run", copy.model)


def _unavailable(
    store: PromotionStore,
    copy: RegistryCopy,
    at: datetime,
    source: str,
    timeout: timedelta,
    error: StatusUnavailable,
) -> CopyState:
    """A status that cannot be read is no reason to fail the copy, until the timeout: say for how long it has
    been unavailable (since the first failed read, kept in updated_at while the note stands), and raise."""
    since = copy.updated_at if (copy.error or "").startswith(UNAVAILABLE) else at
    minutes = int((at - since).total_seconds() // 60)
    note = kept(f"{UNAVAILABLE}{minutes} min: {error}")
    if at - copy.started_at > timeout:
        return _finish(store, copy, CopyState.COPY_FAILED, at, source, f"{_too_old(timeout)}; {note}")
    _keep(store, copy, replace(copy, error=note, updated_at=since))
    raise StatusUnavailable(note) from error


def _ours(copy: RegistryCopy) -> Callable[[ModelVersion], None]:
    """What the registry version must be before it gets our lineage: of the source's type, and untagged or
    tagged as this copy of this staging version."""

    def check(held: ModelVersion) -> None:
        if held.type != copy.model_type:
            raise RegistryConflict(
                f"the registry holds {copy.model} as a {held.type}, but staging has a {copy.model_type}; left untouched"
            )
        tagged = Lineage.is_tagged(held.tags)
        other = foreign_source(held.tags, copy.model, copy.lineage.source_workspace) if tagged else None
        if other:
            raise RegistryConflict(f"the registry holds {copy.model} as a copy of {other}; left untouched")

    return check


def _unless_too_old(
    store: PromotionStore, copy: RegistryCopy, at: datetime, source: str, timeout: timedelta
) -> CopyState:
    if at - copy.started_at > timeout:
        return _finish(store, copy, CopyState.COPY_FAILED, at, source, _too_old(timeout))
    if copy.error is not None:  # its status can be read again
        _keep(store, copy, replace(copy, error=None, updated_at=at))
    return CopyState.COPYING


def _too_old(timeout: timedelta) -> str:
    minutes = round(timeout.total_seconds() / 60, 2)
    return f"the copy did not finish within {minutes:g} minutes (PROMOTION_COPY_TIMEOUT_MINUTES)"


def _finish(
    store: PromotionStore, copy: RegistryCopy, state: CopyState, at: datetime, source: str, error: str | None = None
) -> CopyState:
    done = copy.finished(state, at, error)
    if state is CopyState.COPIED:
        outcome, reasons = Outcome.COPIED, (f"copied into the registry as {copy.model}, with lineage",)
        event = copy_event(
            EventType.COPIED_TO_REGISTRY,
            done,
            actor=ACTOR,
            source=source,
            lineage=copy.lineage.as_tags(),
            policy_digest=copy.lineage.policy_digest,
        )
    else:
        outcome, reasons = Outcome.COPY_FAILED, (error or "the copy failed",)
        event = copy_event(EventType.REGISTRY_COPY_FAILED, done, actor=ACTOR, source=source, reason=error)
    decision = Decision(f"copy:{copy.attempt}", copy.model, outcome, reasons, copy.lineage.policy_digest, at)
    try:
        store.save_copy(done, decision=decision, events=[event])
    except StaleRevision:
        log.info("the copy of %s was finished by another run", copy.model)
        return state
    log.log(
        logging.INFO if state is CopyState.COPIED else logging.WARNING,
        "the copy of %s is %s%s",
        copy.model,
        state.value,
        f": {error}" if error else "",
    )
    return state
