"""One contract for every PromotionStore: SQLite in a temporary folder, Tables on Azurite.

Every test here runs against both adapters, so they cannot drift apart: promotions and their append-only
history, the decisions made about events, registry copies, and the transactional outbox of lifecycle events.
"""

from __future__ import annotations

import http.server
import multiprocessing
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from promotion.adapters.sqlite import SqlitePromotionStore
from promotion.adapters.tables import TablePromotionStore
from promotion.domain import (
    CopyState,
    Decision,
    DriftFinding,
    DriftKind,
    EventType,
    HistoryEntry,
    LifecycleEvent,
    Lineage,
    ModelRef,
    ModelVersion,
    Outcome,
    Promotion,
    RegistryCopy,
    State,
    new_promotion_id,
)
from promotion.ports import (
    CopyClaimed,
    InvalidContinuation,
    OpenPromotionExists,
    PromotionFilter,
    PromotionNotFound,
    PromotionStore,
    StaleRevision,
    StoreUnavailable,
    ValueTooLarge,
)

T0 = datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=timezone.utc)
CREDIT = ModelRef("credit-risk", "3")
CHURN = ModelRef("churn.model_v2", "2025.01-rc1")
WORKSPACE = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws"
SOURCE = "/sites/promotion-app"
# Azurite's well-known development account key (public, documented by Microsoft).
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture(params=["sqlite", pytest.param("tables", marks=pytest.mark.azurite)])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], PromotionStore]:
    """Builds stores over one shared storage, so concurrency tests can act like separate workers."""
    if request.param == "sqlite":
        path = tmp_path / ".promotion" / "promotions.sqlite3"  # the parent folder does not exist yet
        return lambda: SqlitePromotionStore(path)
    connection = request.getfixturevalue("azurite_connection")
    table_name = request.getfixturevalue("azurite_table_name")
    return lambda: TablePromotionStore(connection, table_name=table_name)


@pytest.fixture
def store(make_store: Callable[[], PromotionStore]) -> PromotionStore:
    return make_store()


# -- values -------------------------------------------------------------------------------------------------


def pending(model: ModelRef = CREDIT, *, id: str = "p-1", at: datetime = T0) -> Promotion:
    return Promotion(
        id=id,
        model=model,
        state=State.PENDING_APPROVAL,
        requested_by="alice@example.com",
        created_at=at,
        updated_at=at,
        reason="better AUC",
        history=(HistoryEntry(at, "alice@example.com", "requested", {"reason": "better AUC"}),),
    )


def approve(promotion: Promotion, actor: str = "bob@example.com") -> Promotion:
    at = promotion.updated_at + timedelta(minutes=1)
    return promotion.move(State.APPROVED, actor=actor, at=at, approved_by=actor)


def reject(promotion: Promotion, actor: str = "carol@example.com") -> Promotion:
    at = promotion.updated_at + timedelta(minutes=1)
    return promotion.move(State.REJECTED, actor=actor, at=at, detail={"comment": "not now"}, rejected_by=actor)


def lifecycle(
    type: EventType = EventType.APPROVAL_REQUESTED,
    model: ModelRef = CREDIT,
    at: datetime = T0,
    *,
    id: str | None = None,
    **data: object,
) -> LifecycleEvent:
    body = {"model": model.to_json(), "promotion_id": "p-1", "state": "pending_approval", "actor": "alice", **data}
    return LifecycleEvent(id or str(uuid.uuid4()), type, SOURCE, model, at, body)


def attempt(
    model: ModelRef = CREDIT,
    *,
    cause: str = "evt-1",
    name: str | None = None,
    state: CopyState = CopyState.COPYING,
    at: datetime = T0,
    operation: str | None = None,
    error: str | None = None,
) -> RegistryCopy:
    return RegistryCopy(
        model=model,
        attempt=name or str(uuid.uuid4()),
        state=state,
        model_type="mlflow_model",
        lineage=Lineage(WORKSPACE, model, cause, "sha256:0123456789abcdef"),
        tags={"stage": "candidate", "accuracy": "0.91", "note": "ünïcode"},
        description="a candidate",
        started_at=at,
        updated_at=at,
        operation=operation,
        error=error,
    )


def failed_copy(store: PromotionStore, model: ModelRef = CREDIT, *, cause: str = "evt-1") -> RegistryCopy:
    """A copy attempt that ended in copy_failed, as a later reader finds it."""
    claimed = store.claim_copy(attempt(model, cause=cause))
    store.save_copy(claimed.finished(CopyState.COPY_FAILED, T0 + timedelta(minutes=5), "import failed: quota"))
    stored = store.copy(model)
    assert stored is not None and stored.state is CopyState.COPY_FAILED
    return stored


def ids(events: list[LifecycleEvent]) -> list[str]:
    return [event.id for event in events]


# -- promotions ---------------------------------------------------------------------------------------------


def test_add_then_get_round_trips_every_field(store: PromotionStore) -> None:
    plus_two = timezone(timedelta(hours=2))  # stored as UTC, must come back as the same instant
    promotion = Promotion(
        id="3f2c1e9a-6b1d-4c55-9a0e-2d8f7c6b5a41",
        model=CHURN,
        state=State.DEPLOYING,
        requested_by="alice@example.com",
        created_at=T0.astimezone(plus_two),
        updated_at=T0 + timedelta(hours=1),
        reason="quarterly refresh: ünïcode & 'quotes'",
        approved_by="bob@example.com",
        rejected_by="nobody",
        deployment={"endpoint": "churn-prod", "deployment": "blue", "traffic": {"blue": 10, "green": 90}, "n": 1.5},
        error="transient: 503",
        history=(
            HistoryEntry(T0, "alice@example.com", "requested", {"roles": ["requester"], "reason": None}),
            HistoryEntry(T0 + timedelta(minutes=5), "bob@example.com", "approval", {}),
            HistoryEntry(T0 + timedelta(minutes=6), "bob@example.com", "approved", {}),
            HistoryEntry(T0 + timedelta(hours=1), "deployer", "deploying", {"plan": {"instance_count": 2}}),
        ),
    )

    added = store.add(promotion)
    got = store.get(promotion.id)

    assert added.revision
    assert got == replace(promotion, revision=added.revision)
    assert got.created_at.utcoffset() == timedelta(0)
    assert all(entry.at.utcoffset() == timedelta(0) for entry in got.history)
    assert [entry.actor for entry in got.approvals] == ["bob@example.com"]


def test_optional_fields_round_trip_as_none(store: PromotionStore) -> None:
    promotion = replace(pending(), reason=None, history=())
    store.add(promotion)
    assert store.get(promotion.id) == replace(promotion, revision=store.get(promotion.id).revision)


def test_get_unknown_promotion_raises_not_found(store: PromotionStore) -> None:
    store.add(pending())
    for unknown in ("p-2", "p", "p-1|000000", "no/such#id?", "o'brien and 1 eq 1"):
        with pytest.raises(PromotionNotFound):
            store.get(unknown)


def test_list_is_newest_first_and_filters_by_state_and_model(store: PromotionStore) -> None:
    oldest = store.add(pending(CREDIT, id="a", at=T0))
    store.save(reject(oldest))
    middle = store.add(pending(ModelRef("credit-risk", "4"), id="b", at=T0 + timedelta(days=1)))
    newest = store.add(pending(CHURN, id="c", at=T0 + timedelta(days=2)))

    assert [p.id for p in store.list()] == ["c", "b", "a"]
    assert [p.id for p in store.list(state=State.PENDING_APPROVAL)] == ["c", "b"]
    assert store.list(model=CHURN) == [newest]
    assert store.list(model=ModelRef("credit-risk", "4"), state=State.PENDING_APPROVAL) == [middle]
    assert [p.id for p in store.list(model=CREDIT, state=State.REJECTED)] == ["a"]
    assert store.list(state=State.DEPLOYED) == []


def test_pages_follow_the_id_order_and_read_only_what_matches(store: PromotionStore) -> None:
    # Ids from domain.new_promotion_id sort newest first; the store only promises id order.
    made = [store.add(pending(ModelRef("credit-risk", str(n)), id=f"id-{n:02d}", at=T0)) for n in range(7)]
    store.save(approve(store.get("id-03")))
    store.add(pending(CHURN, id="id-50"))

    seen, token, sizes = [], None, []
    while True:
        page = store.list_page(PromotionFilter(model_name="credit-risk"), page_size=3, continuation=token)
        seen += page.items
        sizes.append(len(page.items))
        token = page.continuation
        if token is None:
            break
    assert [p.id for p in seen] == [p.id for p in made]
    assert sizes[0] == 3 and sum(sizes) == 7
    assert seen[3].history == store.get("id-03").history and len(seen[3].history) == 2  # history comes along

    pending_only = store.list_page(PromotionFilter(State.PENDING_APPROVAL, "credit-risk"), page_size=50)
    assert [p.id for p in pending_only.items] == [f"id-{n:02d}" for n in (0, 1, 2, 4, 5, 6)]
    assert pending_only.continuation is None
    assert [p.id for p in store.list_page(PromotionFilter(model_name="credit-risk", model_version="5")).items] == [
        "id-05"
    ]
    assert [p.id for p in store.list_page(PromotionFilter(State.APPROVED)).items] == ["id-03"]
    assert store.list_page(PromotionFilter(model_name="credit")).items == []  # a name, not a prefix


def test_a_continuation_the_store_never_gave_is_refused(store: PromotionStore) -> None:
    store.add(pending())
    for token in ("not a token", "e30", "W10", "x" * 3000):
        with pytest.raises(InvalidContinuation):
            store.list_page(continuation=token)


def test_new_promotion_ids_sort_newest_first() -> None:
    ids = [new_promotion_id(T0 + timedelta(milliseconds=ms)) for ms in (0, 1, 1000, 86_400_000)]
    assert sorted(ids) == list(reversed(ids))
    assert {uuid.UUID(id).version for id in ids} == {8} and len(set(ids)) == 4


def test_second_open_promotion_for_a_model_version_is_refused(store: PromotionStore) -> None:
    first = store.add(pending(id="first"))

    with pytest.raises(OpenPromotionExists) as refused:
        store.add(pending(id="second", at=T0 + timedelta(hours=1)))

    assert refused.value.existing == first
    with pytest.raises(PromotionNotFound):
        store.get("second")
    store.add(pending(ModelRef(CREDIT.name, "4"), id="other-version"))  # another version is independent


def test_a_new_promotion_may_open_once_the_previous_one_closed(store: PromotionStore) -> None:
    first = store.add(pending(id="first"))
    store.save(reject(first))

    second = store.add(pending(id="second", at=T0 + timedelta(days=1)))

    assert [p.id for p in store.list(model=CREDIT, state=State.PENDING_APPROVAL)] == [second.id]
    with pytest.raises(OpenPromotionExists):
        store.add(pending(id="third"))


def test_every_open_state_holds_the_slot_and_every_closed_one_frees_it(store: PromotionStore) -> None:
    promotion = store.add(pending(id="p"))
    for step, state in enumerate((State.APPROVED, State.DEPLOYING), start=1):
        promotion = store.save(promotion.move(state, actor="x", at=T0 + timedelta(minutes=step)))
        with pytest.raises(OpenPromotionExists):
            store.add(pending(id=f"while-{state.value}", at=T0 + timedelta(minutes=step)))
    store.save(promotion.move(State.DEPLOYED, actor="x", at=T0 + timedelta(minutes=9)))

    assert store.add(pending(id="after-deployed", at=T0 + timedelta(minutes=10))).id == "after-deployed"


def test_save_appends_history_and_returns_a_new_revision(store: PromotionStore) -> None:
    added = store.add(pending())
    approved = approve(added)

    saved = store.save(approved)

    assert saved.revision not in (None, added.revision)
    assert saved == replace(approved, revision=saved.revision)
    assert store.get(added.id) == saved
    deploying = saved.move(State.DEPLOYING, actor="deployer", at=T0 + timedelta(hours=1), deployment={"d": "blue"})
    assert store.save(deploying).history == deploying.history


def test_save_with_a_stale_revision_changes_nothing(store: PromotionStore) -> None:
    added = store.add(pending())
    approved = store.save(approve(added))

    with pytest.raises(StaleRevision):
        store.save(reject(added))  # built from the revision before the approval

    assert store.get(added.id) == approved
    assert [entry.action for entry in store.get(added.id).history] == ["requested", "approved"]


def test_save_of_an_unknown_promotion_raises_not_found(store: PromotionStore) -> None:
    with pytest.raises(PromotionNotFound):
        store.save(replace(approve(pending()), revision="1"))


def test_stored_history_is_never_rewritten(store: PromotionStore) -> None:
    added = store.add(pending())
    forged = HistoryEntry(T0, "mallory", "requested", {"reason": "rewritten"})

    saved = store.save(approve(replace(added, history=(forged,))))

    assert saved.history[0] == added.history[0]
    assert store.get(added.id).history == (added.history[0], saved.history[1])
    assert saved.history[1].action == "approved"


def test_a_save_with_a_shorter_history_removes_no_entry(store: PromotionStore) -> None:
    approved = store.save(approve(store.add(pending())))

    saved = store.save(replace(approved, history=(), error="a note"))

    assert saved.history == approved.history
    assert store.get(approved.id).history == approved.history
    assert store.get(approved.id).error == "a note"


def test_a_save_clears_the_fields_set_back_to_none(store: PromotionStore) -> None:
    added = store.add(replace(pending(), error="transient: 503", reason="r", approved_by="x", rejected_by="y"))

    saved = store.save(replace(added, error=None, reason=None, approved_by=None, rejected_by=None))

    assert store.get(added.id) == saved
    assert (saved.error, saved.reason, saved.approved_by, saved.rejected_by) == (None, None, None, None)


# -- decisions ----------------------------------------------------------------------------------------------


def test_decisions_are_recorded_once_per_event_and_listed_oldest_first(store: PromotionStore) -> None:
    later = Decision("evt-2", CREDIT, Outcome.COPIED, (), "sha256:abc", T0 + timedelta(seconds=1))
    earlier = Decision("a/b#c?d%20|é", CREDIT, Outcome.NOT_QUALIFIED, ("accuracy < 0.9", "no owner"), "sha256:abc", T0)

    assert store.record_decision(later) is True
    assert store.record_decision(earlier) is True
    assert store.record_decision(replace(earlier, outcome=Outcome.COPIED)) is False  # a redelivery
    assert store.record_decision(Decision("evt-3", CHURN, Outcome.COPIED, (), None, T0)) is True
    assert store.record_decision(Decision("evt-4", None, Outcome.MALFORMED, ("no subject",), None, T0)) is True
    assert store.record_decision(Decision("evt-4", None, Outcome.MALFORMED, ("no subject",), None, T0)) is False

    assert store.decisions(CREDIT) == [earlier, later]
    assert store.decisions(ModelRef("unknown", "1")) == []


# Table Storage keeps a string property of at most 64 KiB (32 K UTF-16 code units); both stores refuse the same
# values, with the same error, and write nothing. The boundaries (event parsing, identity) keep values far below.
HUGE = "x" * 40_000


def test_a_value_too_large_for_a_property_is_refused_alike_and_nothing_is_written(store: PromotionStore) -> None:
    with pytest.raises(ValueTooLarge, match="requested_by"):
        store.add(replace(pending(), requested_by="alice" + HUGE))
    with pytest.raises(PromotionNotFound):
        store.get("p-1")
    with pytest.raises(ValueTooLarge, match="event_id"):
        store.record_decision(Decision(HUGE, CREDIT, Outcome.COPIED, (), None, T0))
    assert store.decisions(CREDIT) == []
    added = store.add(pending())
    entry = HistoryEntry(T0 + timedelta(seconds=1), "bob" + HUGE, "approval", {})
    with pytest.raises(ValueTooLarge, match="actor"):
        store.save(replace(added, history=(*added.history, entry)))
    assert store.get("p-1") == added


def test_the_largest_value_a_property_holds_is_kept_alike(store: PromotionStore) -> None:
    # 32 K UTF-16 code units: a character outside the BMP counts twice.
    largest = "é" * (32 * 1024 - 2) + "🚀"
    store.record_decision(Decision("evt-1", CREDIT, Outcome.NOT_QUALIFIED, (), largest, T0))
    assert store.decisions(CREDIT)[0].policy_digest == largest


def test_decisions_of_versions_sharing_a_prefix_stay_apart(store: PromotionStore) -> None:
    refs = [ModelRef("m", "3"), ModelRef("m", "30"), ModelRef("m", "3.1"), ModelRef("m-3", "1"), ModelRef("m3", "1")]
    for index, ref in enumerate(refs):
        store.record_decision(Decision(f"evt-{index}", ref, Outcome.COPIED, (), None, T0))

    for index, ref in enumerate(refs):
        assert [decision.event_id for decision in store.decisions(ref)] == [f"evt-{index}"]


LONG_PREFIX = "evt-" + "x" * 1500  # far past Table Storage's 1 KiB key limit
AWKWARD_IDS = [
    "x" * 5000,
    LONG_PREFIX + "-one",
    LONG_PREFIX + "-two",  # differs from the one above only after the first 1,500 characters
    "a/b\\c#d?e",
    "tab\there, newline\nthere, nul\x00, del\x7f, c1\x85 and \x1f",
    "ünïcödé 日本語 🚀 ﬁ",
    "%2F already%20encoded %",
    "~sha256~" + "0" * 64,  # looks like a digest key, but is a real id
    "🚀" * 300,  # short in characters, past 1 KiB once encoded
]


def test_awkward_and_long_event_ids_are_stored_and_read_back(store: PromotionStore) -> None:
    decisions = [
        Decision(event_id, CREDIT, Outcome.NOT_QUALIFIED, (f"reason {index}",), None, T0 + timedelta(seconds=index))
        for index, event_id in enumerate(AWKWARD_IDS)
    ]

    assert [store.record_decision(decision) for decision in decisions] == [True] * len(decisions)

    assert store.decisions(CREDIT) == decisions  # every id exactly as given, none merged with another
    assert [store.record_decision(replace(d, outcome=Outcome.COPIED)) for d in decisions] == [False] * len(decisions)
    assert store.decisions(CREDIT) == decisions


def test_a_long_event_id_on_a_longest_model_reference_fits(store: PromotionStore) -> None:
    longest = ModelRef("m" * 255, "v" * 128)
    decision = Decision("é/" * 2000, longest, Outcome.NOT_IN_STAGING, ("gone",), None, T0)

    assert store.record_decision(decision) is True
    assert store.record_decision(decision) is False
    assert store.decisions(longest) == [decision]


def test_save_copy_replaces_the_decision_of_the_same_cause(store: PromotionStore) -> None:
    # A redelivery of the event that is making the copy recorded copy_in_progress first; the winner's copy_started
    # must take its place, so the decision of the event that made the copy says so.
    claimed = store.claim_copy(attempt(cause="evt-1"))
    store.record_decision(Decision("evt-1", CREDIT, Outcome.COPY_IN_PROGRESS, ("under way",), None, T0))
    store.record_decision(Decision("evt-2", CREDIT, Outcome.COPY_IN_PROGRESS, ("under way",), None, T0))
    started = Decision("evt-1", CREDIT, Outcome.COPY_STARTED, ("copying",), "sha256:abc", T0 + timedelta(seconds=1))

    store.save_copy(replace(claimed, operation="https://op/1"), decision=started)

    assert [(d.event_id, d.outcome) for d in store.decisions(CREDIT)] == [
        ("evt-2", Outcome.COPY_IN_PROGRESS),
        ("evt-1", Outcome.COPY_STARTED),
    ]
    assert store.decisions(CREDIT)[1] == started


def test_the_replacing_decision_keeps_nothing_of_the_one_it_replaces(store: PromotionStore) -> None:
    claimed = store.claim_copy(attempt(cause="evt-1"))
    store.record_decision(Decision("evt-1", CREDIT, Outcome.NOT_QUALIFIED, ("a", "b"), "sha256:old", T0))
    replacing = Decision("evt-1", CREDIT, Outcome.COPY_STARTED, (), None, T0 + timedelta(seconds=1))

    store.save_copy(replace(claimed, operation="op"), decision=replacing)

    assert store.decisions(CREDIT) == [replacing]


def test_save_copy_records_a_new_decision_with_an_awkward_cause(store: PromotionStore) -> None:
    claimed = store.claim_copy(attempt(cause=AWKWARD_IDS[1]))
    decision = Decision(AWKWARD_IDS[1], CREDIT, Outcome.COPY_STARTED, ("copying",), None, T0)

    store.save_copy(replace(claimed, operation="op"), decision=decision)
    store.save_copy(
        store.copy(CREDIT).finished(CopyState.COPIED, T0 + timedelta(minutes=1)),
        decision=replace(decision, outcome=Outcome.COPIED, decided_at=T0 + timedelta(minutes=1)),
    )

    assert [(d.event_id, d.outcome) for d in store.decisions(CREDIT)] == [(AWKWARD_IDS[1], Outcome.COPIED)]
    assert store.copy(CREDIT).cause == AWKWARD_IDS[1]


# -- registry copies ----------------------------------------------------------------------------------------


def test_claim_copy_inserts_the_attempt(store: PromotionStore) -> None:
    wanted = attempt(CHURN, operation=None)

    claimed = store.claim_copy(wanted)

    assert claimed.revision
    assert claimed == replace(wanted, revision=claimed.revision)
    assert store.copy(CHURN) == claimed
    assert store.copy(CREDIT) is None


def test_a_second_claim_raises_copy_claimed_with_the_stored_attempt(store: PromotionStore) -> None:
    first = store.claim_copy(attempt(cause="evt-1"))

    with pytest.raises(CopyClaimed) as refused:
        store.claim_copy(attempt(cause="evt-2"))

    assert refused.value.existing == first
    assert store.copy(CREDIT) == first
    # A finished copy is claimed as well: only a failed one, given as read, may be replaced.
    copied = store.save_copy(first.finished(CopyState.COPIED, T0 + timedelta(minutes=1)))
    with pytest.raises(CopyClaimed) as refused:
        store.claim_copy(attempt(cause="evt-3"))
    assert refused.value.existing == copied


def test_a_claim_replacing_the_failed_attempt_as_read_takes_its_place(store: PromotionStore) -> None:
    failed = failed_copy(store)
    retry = attempt(cause="evt-2", at=T0 + timedelta(hours=1))

    claimed = store.claim_copy(retry, replacing=failed)

    assert claimed == replace(retry, revision=claimed.revision)
    assert claimed.revision != failed.revision
    assert store.copy(CREDIT) == claimed
    assert store.copies() == [claimed]


def test_a_claim_replacing_a_stale_attempt_raises_copy_claimed(store: PromotionStore) -> None:
    failed = failed_copy(store)
    winner = store.claim_copy(attempt(cause="evt-2"), replacing=failed)

    with pytest.raises(CopyClaimed) as refused:
        store.claim_copy(attempt(cause="evt-3"), replacing=failed)  # read before the winner replaced it

    assert refused.value.existing == winner
    assert store.copy(CREDIT) == winner


def test_save_copy_with_a_stale_revision_changes_nothing(store: PromotionStore) -> None:
    claimed = store.claim_copy(attempt(cause="evt-1"))
    started = store.save_copy(replace(claimed, operation="https://op/1"))
    decision = Decision("copy:x", CREDIT, Outcome.COPIED, (), None, T0)

    with pytest.raises(StaleRevision):
        store.save_copy(
            claimed.finished(CopyState.COPIED, T0 + timedelta(minutes=1)),  # the revision before `started`
            decision=decision,
            events=[lifecycle(EventType.COPIED_TO_REGISTRY)],
        )

    assert started.revision != claimed.revision
    assert store.copy(CREDIT) == started
    assert store.decisions(CREDIT) == []
    assert store.events() == []


def test_save_copy_of_a_released_claim_raises_stale_revision(store: PromotionStore) -> None:
    claimed = store.claim_copy(attempt())
    store.release_copy(claimed, previous=None)

    with pytest.raises(StaleRevision):
        store.save_copy(replace(claimed, operation="op"), events=[lifecycle()])

    assert store.copy(CREDIT) is None
    assert store.events() == []


def test_save_copy_round_trips_every_field(store: PromotionStore) -> None:
    claimed = store.claim_copy(attempt(CHURN))
    finished = replace(
        claimed.finished(CopyState.COPY_FAILED, T0 + timedelta(minutes=3), "the service said: «no»"),
        operation="https://management.azure.com/operations/1?api-version=2024-04-01",
    )

    saved = store.save_copy(finished)

    assert saved.revision not in (None, claimed.revision)
    assert store.copy(CHURN) == replace(finished, revision=saved.revision)


def test_save_copy_clears_the_fields_set_back_to_none(store: PromotionStore) -> None:
    claimed = store.claim_copy(replace(attempt(operation="op", error="stale note"), description="d"))

    saved = store.save_copy(replace(claimed, operation=None, error=None, description=None))

    assert store.copy(CREDIT) == saved
    assert (saved.operation, saved.error, saved.description) == (None, None, None)


def test_release_copy_without_previous_removes_the_claim(store: PromotionStore) -> None:
    claimed = store.claim_copy(attempt())

    store.release_copy(claimed, previous=None)

    assert store.copy(CREDIT) is None
    assert store.copies() == []
    assert store.claim_copy(attempt(cause="evt-2")).cause == "evt-2"  # free again


def test_release_copy_with_previous_restores_it(store: PromotionStore) -> None:
    failed = failed_copy(store)
    claimed = store.claim_copy(attempt(cause="evt-2"), replacing=failed)

    store.release_copy(claimed, previous=failed)

    restored = store.copy(CREDIT)
    assert restored is not None
    assert replace(restored, revision=None) == replace(failed, revision=None)
    # The restored attempt, as read now, can be replaced again.
    assert store.claim_copy(attempt(cause="evt-3"), replacing=restored).cause == "evt-3"


def test_release_copy_of_a_claim_that_moved_on_changes_nothing(store: PromotionStore) -> None:
    claimed = store.claim_copy(attempt())
    started = store.save_copy(replace(claimed, operation="https://op/1"))

    store.release_copy(claimed, previous=None)  # not ours any more: someone saved it since

    assert store.copy(CREDIT) == started


def test_copies_lists_oldest_first_and_filters_by_state(store: PromotionStore) -> None:
    third = store.claim_copy(attempt(ModelRef("c", "1"), at=T0 + timedelta(hours=2)))
    first = store.claim_copy(attempt(ModelRef("a", "1"), at=T0))
    second = store.claim_copy(attempt(ModelRef("b", "1"), at=T0 + timedelta(hours=1)))
    copied = store.save_copy(second.finished(CopyState.COPIED, T0 + timedelta(hours=3)))
    failed = store.save_copy(third.finished(CopyState.COPY_FAILED, T0 + timedelta(hours=3), "boom"))

    assert store.copies() == [first, copied, failed]
    assert store.copies(state=CopyState.COPYING) == [first]
    assert store.copies(state=CopyState.COPIED) == [copied]
    assert store.copies(state=CopyState.COPY_FAILED) == [failed]


# -- the outbox of lifecycle events -------------------------------------------------------------------------


def test_events_of_add_save_and_save_copy_come_back_oldest_first(store: PromotionStore) -> None:
    requested = lifecycle(EventType.APPROVAL_REQUESTED, at=T0)
    approved = lifecycle(EventType.APPROVED, at=T0 + timedelta(minutes=1))
    copied = lifecycle(EventType.COPIED_TO_REGISTRY, CHURN, at=T0 + timedelta(seconds=30), promotion_id=None)
    added = store.add(pending(), events=[requested])
    store.save(approve(added), events=[approved])
    claimed = store.claim_copy(attempt(CHURN))
    store.save_copy(claimed.finished(CopyState.COPIED, T0 + timedelta(seconds=30)), events=[copied])

    assert store.unpublished_events(limit=10) == [requested, copied, approved]  # by time, not by write
    assert store.unpublished_events(limit=2) == [requested, copied]
    assert store.unpublished_events(limit=1) == [requested]
    assert store.events() == [requested, copied, approved]
    assert store.events(unpublished_only=True) == [requested, copied, approved]


def test_several_events_of_one_change_are_all_written(store: PromotionStore) -> None:
    batch = [lifecycle(at=T0 + timedelta(microseconds=step)) for step in range(5)]

    store.add(pending(), events=list(reversed(batch)))

    assert store.unpublished_events(limit=100) == batch


def test_events_at_the_same_moment_have_one_order_everywhere(store: PromotionStore) -> None:
    twins = [lifecycle(at=T0, id=f"evt-{letter}") for letter in "dbca"]

    store.add(pending(), events=twins)

    assert ids(store.unpublished_events(limit=10)) == ["evt-a", "evt-b", "evt-c", "evt-d"]
    assert ids(store.events()) == ["evt-a", "evt-b", "evt-c", "evt-d"]


def test_events_round_trip_exactly(store: PromotionStore) -> None:
    plus_five = timezone(timedelta(hours=5, minutes=30))
    event = LifecycleEvent(
        id="0b7e2a8e-3f6c-4d7f-9a51-7d0c1e2f3a4b",
        type=EventType.DEPLOYED,
        source="/sites/my-func-app",
        model=CHURN,
        at=(T0 + timedelta(microseconds=1)).astimezone(plus_five),
        data={
            "model": CHURN.to_json(),
            "promotion_id": "p-1",
            "state": "deployed",
            "actor": "ünïcode «actor»",
            "comment": None,
            "at": "2025-03-04T05:06:07.891012Z",
            "endpoint": "churn-prod",
            "deployment": "churn-v2",
            "traffic": {"churn-v2": 90, "churn-v1": 10},
            "ratio": 0.125,
            "flags": [True, False, None],
        },
    )
    store.add(pending(CHURN), events=[event])

    (got,) = store.events()

    assert got == event
    assert (got.id, got.type, got.source, got.model, got.at, dict(got.data)) == (
        event.id,
        event.type,
        event.source,
        event.model,
        event.at,
        event.data,
    )
    assert got.published_at is None
    assert got.to_json() == event.to_json()


@pytest.mark.parametrize("event_type", list(EventType))
def test_every_event_type_round_trips(store: PromotionStore, event_type: EventType) -> None:
    event = lifecycle(event_type)
    store.add(pending(), events=[event])
    assert store.events() == [event]


def test_a_stale_save_writes_none_of_its_events(store: PromotionStore) -> None:
    added = store.add(pending())
    store.save(approve(added))

    with pytest.raises(StaleRevision):
        store.save(reject(added), events=[lifecycle(EventType.REJECTED), lifecycle(EventType.REJECTED)])

    assert store.events() == []


def test_an_add_refused_for_an_open_promotion_writes_none_of_its_events(store: PromotionStore) -> None:
    store.add(pending(id="first"))

    with pytest.raises(OpenPromotionExists):
        store.add(pending(id="second"), events=[lifecycle()])

    assert store.events() == []


def test_a_save_refused_for_an_open_promotion_writes_none_of_its_events(store: PromotionStore) -> None:
    closed = store.save(reject(store.add(pending(id="closed"))))
    open_one = store.add(pending(id="open", at=T0 + timedelta(days=1)))
    # Only the store stands between this save and two open promotions of one version.
    reopened = replace(closed, state=State.PENDING_APPROVAL, error="reopened")

    with pytest.raises(OpenPromotionExists) as refused:
        store.save(reopened, events=[lifecycle()])

    assert refused.value.existing == open_one
    assert store.get("closed") == closed
    assert store.events() == []


def test_published_events_leave_the_unpublished_ones(store: PromotionStore) -> None:
    batch = [lifecycle(at=T0 + timedelta(seconds=step)) for step in range(4)]
    store.add(pending(), events=batch)
    published_at = T0 + timedelta(minutes=1)

    store.mark_published(batch[:2], published_at)

    assert store.unpublished_events(limit=10) == batch[2:]
    assert store.events(unpublished_only=True) == batch[2:]
    assert store.events() == [replace(e, published_at=published_at) for e in batch[:2]] + batch[2:]


def test_mark_published_is_idempotent(store: PromotionStore) -> None:
    batch = [lifecycle(at=T0 + timedelta(seconds=step)) for step in range(3)]
    store.add(pending(), events=batch)
    first_time = T0 + timedelta(minutes=1)

    store.mark_published(batch, first_time)
    store.mark_published(batch, first_time + timedelta(minutes=5))  # a retry, or a second publisher
    store.mark_published([], first_time)

    assert store.events() == [replace(event, published_at=first_time) for event in batch]
    assert store.unpublished_events(limit=10) == []


def test_two_publishers_marking_at_once_lose_and_duplicate_nothing(make_store: Callable[[], PromotionStore]) -> None:
    writer = make_store()
    batch = [lifecycle(at=T0 + timedelta(seconds=step)) for step in range(30)]
    writer.add(pending(), events=batch)
    first, second = make_store(), make_store()

    # Overlapping batches, each in a different order and with its own time.
    results = _race(
        lambda: first.mark_published(batch[:20], T0 + timedelta(hours=1)),
        lambda: second.mark_published(list(reversed(batch[10:])), T0 + timedelta(hours=2)),
        lambda: first.mark_published(batch[5:25], T0 + timedelta(hours=3)),
    )

    assert results == [None, None, None]
    stored = writer.events()
    assert Counter(ids(stored)) == Counter(ids(batch))  # every event once: none lost, none duplicated
    assert all(event.published_at is not None for event in stored)
    assert [replace(event, published_at=None) for event in stored] == batch
    assert writer.unpublished_events(limit=100) == []


def test_purge_published_deletes_only_what_was_published_before_the_cutoff(store: PromotionStore) -> None:
    old, recent, at_cutoff, unpublished = (lifecycle(at=T0 + timedelta(seconds=step)) for step in range(4))
    ancient = lifecycle(at=T0 - timedelta(days=400))  # written long ago, but never published
    store.add(pending(), events=[old, recent, at_cutoff, unpublished, ancient])
    cutoff = T0 + timedelta(days=30)
    store.mark_published([old], T0 + timedelta(days=1))
    store.mark_published([recent], cutoff + timedelta(microseconds=1))
    store.mark_published([at_cutoff], cutoff)

    assert store.purge_published(before=cutoff) == 1

    assert ids(store.events()) == ids([ancient, recent, at_cutoff, unpublished])
    assert ids(store.unpublished_events(limit=10)) == ids([ancient, unpublished])
    assert store.purge_published(before=cutoff) == 0
    assert store.purge_published(before=cutoff + timedelta(days=1)) == 2
    assert ids(store.events()) == ids([ancient, unpublished])


# -- concurrency ----------------------------------------------------------------------------------------------


def _race(*attempts: Callable[[], object]) -> list[object]:
    """Run the attempts at once; each result is what it returned or the exception it raised."""
    start = threading.Barrier(len(attempts))

    def run(attempt: Callable[[], object]) -> object:
        start.wait()
        try:
            return attempt()
        except Exception as error:  # the caller inspects it
            return error

    with ThreadPoolExecutor(len(attempts)) as pool:
        return list(pool.map(run, attempts))


def test_two_threads_saving_one_revision_one_wins(make_store: Callable[[], PromotionStore]) -> None:
    first, second = make_store(), make_store()
    added = first.add(pending())

    results = _race(
        lambda: first.save(approve(added), events=[lifecycle(EventType.APPROVED, id="approved")]),
        lambda: second.save(reject(added), events=[lifecycle(EventType.REJECTED, id="rejected")]),
    )

    winners = [r for r in results if isinstance(r, Promotion)]
    assert len(winners) == 1 and sum(isinstance(r, StaleRevision) for r in results) == 1, results
    assert first.get(added.id) == winners[0]
    assert len(winners[0].history) == 2
    assert ids(first.events()) == [winners[0].state.value]  # only the winner's event was written


def test_concurrent_adds_for_one_model_open_exactly_one(store: PromotionStore) -> None:
    attempts = [lambda i=i: store.add(pending(id=f"p-{i}"), events=[lifecycle(id=f"e-{i}")]) for i in range(8)]

    results = _race(*attempts)

    winners = [r for r in results if isinstance(r, Promotion)]
    refusals = [r for r in results if isinstance(r, OpenPromotionExists)]
    assert len(winners) == 1 and len(refusals) == 7, results
    assert all(refusal.existing.id == winners[0].id for refusal in refusals)
    assert store.list(model=CREDIT) == [winners[0]]
    assert ids(store.events()) == [winners[0].id.replace("p-", "e-")]


def test_racing_claims_of_one_copy_exactly_one_wins(make_store: Callable[[], PromotionStore]) -> None:
    stores = [make_store() for _ in range(6)]
    attempts = [lambda s=s, i=i: s.claim_copy(attempt(cause=f"evt-{i}")) for i, s in enumerate(stores)]

    results = _race(*attempts)

    winners = [r for r in results if isinstance(r, RegistryCopy)]
    refusals = [r for r in results if isinstance(r, CopyClaimed)]
    assert len(winners) == 1 and len(refusals) == 5, results
    assert all(refusal.existing == winners[0] for refusal in refusals)
    assert stores[0].copy(CREDIT) == winners[0]


def test_racing_claims_replacing_one_failed_copy_exactly_one_wins(make_store: Callable[[], PromotionStore]) -> None:
    failed = failed_copy(make_store())
    stores = [make_store() for _ in range(6)]
    attempts = [
        lambda s=s, i=i: s.claim_copy(attempt(cause=f"retry-{i}"), replacing=failed) for i, s in enumerate(stores)
    ]

    results = _race(*attempts)

    winners = [r for r in results if isinstance(r, RegistryCopy)]
    refusals = [r for r in results if isinstance(r, CopyClaimed)]
    assert len(winners) == 1 and len(refusals) == 5, results
    assert all(refusal.existing == winners[0] for refusal in refusals)
    assert stores[0].copy(CREDIT) == winners[0]


def test_racing_saves_of_one_copy_exactly_one_wins(make_store: Callable[[], PromotionStore]) -> None:
    # Two timer runs on two instances finish the same copy: one decision, one event.
    claimed = make_store().claim_copy(attempt(operation="op"))
    stores = [make_store() for _ in range(4)]
    at = T0 + timedelta(minutes=1)
    attempts = [
        lambda s=s, i=i: s.save_copy(
            claimed.finished(CopyState.COPIED, at),
            decision=Decision(f"copy:{claimed.attempt}", CREDIT, Outcome.COPIED, (f"run {i}",), None, at),
            events=[lifecycle(EventType.COPIED_TO_REGISTRY, id=f"copied-{i}")],
        )
        for i, s in enumerate(stores)
    ]

    results = _race(*attempts)

    winners = [r for r in results if isinstance(r, RegistryCopy)]
    assert len(winners) == 1 and sum(isinstance(r, StaleRevision) for r in results) == 3, results
    (decision,) = stores[0].decisions(CREDIT)
    (event,) = stores[0].events()
    assert decision.reasons[0].removeprefix("run ") == event.id.removeprefix("copied-")


# SQLite is shared by processes too (the Functions host may run several workers). They start with "spawn":
# "fork" in a process that holds threads may deadlock, and Python 3.12+ warns about it (DeprecationWarning).


def _in_another_process(path: Path, method: str, argument: object, start, results) -> None:
    store = SqlitePromotionStore(path)  # built before the start line, used (schema and all) after it
    start.wait()
    try:
        getattr(store, method)(argument)
        results.put("done")
    except (StaleRevision, OpenPromotionExists, CopyClaimed) as refused:
        results.put(type(refused).__name__)


def _race_processes(path: Path, method: str, arguments: list[object]) -> list[str]:
    """Call store.<method> at once from one process per argument; sorted outcomes."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(len(arguments)), context.Queue()
    workers = [
        context.Process(target=_in_another_process, args=(path, method, argument, start, results))
        for argument in arguments
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0] * len(workers)
    return sorted(results.get(timeout=5) for _ in workers)


@pytest.mark.filterwarnings("error::DeprecationWarning")
def test_two_processes_saving_one_revision_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "promotions.sqlite3"
    added = SqlitePromotionStore(path).add(pending())

    assert _race_processes(path, "save", [approve(added), reject(added)]) == ["StaleRevision", "done"]
    assert len(SqlitePromotionStore(path).get(added.id).history) == 2


@pytest.mark.filterwarnings("error::DeprecationWarning")
def test_processes_sharing_a_new_file_open_exactly_one_promotion(tmp_path: Path) -> None:
    # The file does not exist yet, so the processes also race to create it and switch it to WAL.
    path = tmp_path / "promotions.sqlite3"

    outcomes = _race_processes(path, "add", [pending(id=f"p-{i}") for i in range(4)])

    assert outcomes == ["OpenPromotionExists"] * 3 + ["done"]
    assert len(SqlitePromotionStore(path).list()) == 1


@pytest.mark.filterwarnings("error::DeprecationWarning")
def test_processes_claiming_one_copy_exactly_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "promotions.sqlite3"

    outcomes = _race_processes(path, "claim_copy", [attempt(cause=f"evt-{i}") for i in range(3)])

    assert outcomes == ["CopyClaimed"] * 2 + ["done"]
    assert SqlitePromotionStore(path).copy(CREDIT) is not None


# -- store outages (Table Storage) ------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the socket is closed


def _connection_to(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};"
        f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )


OPERATIONS: dict[str, Callable[[PromotionStore], object]] = {
    "add": lambda s: s.add(pending()),
    "get": lambda s: s.get("p-1"),
    "list": lambda s: s.list(),
    "save": lambda s: s.save(replace(approve(pending()), revision='W/"x"')),
    "record_decision": lambda s: s.record_decision(Decision("evt-1", CREDIT, Outcome.COPIED, (), None, T0)),
    "decisions": lambda s: s.decisions(CREDIT),
    "copy": lambda s: s.copy(CREDIT),
    "copies": lambda s: s.copies(),
    "claim_copy": lambda s: s.claim_copy(attempt()),
    "save_copy": lambda s: s.save_copy(replace(attempt(), revision='W/"x"')),
    "unpublished_events": lambda s: s.unpublished_events(limit=10),
    "events": lambda s: s.events(),
    "mark_published": lambda s: s.mark_published([lifecycle()], T0),
    "purge_published": lambda s: s.purge_published(before=T0),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_a_table_store_nobody_answers_raises_store_unavailable_at_once(operation: str) -> None:
    store = TablePromotionStore(_connection_to(_closed_port()), table_name=f"t{uuid.uuid4().hex}")

    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        OPERATIONS[operation](store)

    assert time.monotonic() - started < 5


class _TableAlreadyExists(http.server.BaseHTTPRequestHandler):
    """Answers like a storage account whose table exists and holds nothing."""

    def _answer(self, status: int, code: str) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = f'{{"odata.error": {{"code": "{code}", "message": {{"lang": "en-US", "value": "{code}"}}}}}}'.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;odata=minimalmetadata")
        self.send_header("x-ms-error-code", code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 (the http.server naming)
        self._answer(409, "TableAlreadyExists")

    def do_GET(self) -> None:  # noqa: N802
        self._answer(404, "ResourceNotFound")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_table_store_that_goes_away_raises_store_unavailable() -> None:
    """The outage that matters: the store worked, then the storage account stops answering."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TableAlreadyExists)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    store = TablePromotionStore(_connection_to(server.server_address[1]), table_name=f"t{uuid.uuid4().hex}")
    try:
        assert store.copy(CREDIT) is None  # the table is there: the store is ready
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.copy(CREDIT)

    # azure-core retries a refused connection with back-off (about 5 s); the adapter has no setting to shorten it.
    assert time.monotonic() - started < 15


@pytest.mark.parametrize(
    "connection",
    ["not a connection string", "AccountKey=supersecret", "AccountName=x;AccountKey=supersecret;Nonsense", ""],
)
def test_a_malformed_connection_string_raises_value_error_at_construction(connection: str) -> None:
    started = time.monotonic()
    with pytest.raises(ValueError) as refused:
        TablePromotionStore(connection, table_name="promotions")

    assert "supersecret" not in str(refused.value)
    assert time.monotonic() - started < 1  # refused before any request


def test_a_table_store_needs_a_connection_string_or_an_endpoint_but_not_both() -> None:
    with pytest.raises(ValueError):
        TablePromotionStore()
    with pytest.raises(ValueError):
        TablePromotionStore("UseDevelopmentStorage=true", endpoint="https://acct.table.core.windows.net")


# --- drift findings and 0% sightings ---------------------------------------------------------------


def finding(
    kind: DriftKind = DriftKind.TRAFFIC_CHANGED, *, deployment: str = "", at: datetime = T0, **changes: object
) -> DriftFinding:
    base = DriftFinding(
        kind=kind,
        endpoint="credit-risk-prod",
        deployment=deployment,
        expected={"traffic": {"credit-risk-v3": 100}},
        actual={"traffic": {"credit-risk-v3": 50, "by-hand": 50}},
        detected_at=at,
        promotion_id="p-1",
        model=CREDIT,
    )
    return replace(base, **changes)


def drift_event(found: DriftFinding, type: EventType = EventType.DRIFT_DETECTED) -> LifecycleEvent:
    data = {"kind": found.kind.value, "endpoint": found.endpoint, "deployment": found.deployment}
    return LifecycleEvent(str(uuid.uuid4()), type, SOURCE, None, found.resolved_at or found.detected_at, data)


def test_a_drift_finding_and_its_event_are_recorded_once_and_round_trip(store: PromotionStore) -> None:
    found = finding()
    event = drift_event(found)
    assert store.open_drift(found, [event]) is True
    assert store.open_drift(replace(found, detected_at=T0 + timedelta(hours=1)), [drift_event(found)]) is False
    assert store.drift_findings() == [found]
    [stored] = store.events()
    assert stored.to_json() == event.to_json() and stored.model is None
    assert stored.subject == "onlineEndpoints/credit-risk-prod"


def test_findings_of_other_kinds_or_deployments_are_apart_and_listed_oldest_first(store: PromotionStore) -> None:
    later = finding(DriftKind.STALE_DEPLOYMENT, deployment="credit-risk-v2", at=T0 + timedelta(minutes=1))
    other = finding(DriftKind.UNAPPROVED_MODEL, deployment="by-hand", promotion_id=None, model=None)
    for each in (later, finding(), other):
        assert store.open_drift(each)
    assert [f.key for f in store.drift_findings()] == [
        "traffic_changed|credit-risk-prod|",
        "unapproved_model|credit-risk-prod|by-hand",
        "stale_deployment|credit-risk-prod|credit-risk-v2",
    ]


def test_resolving_closes_the_finding_once_with_its_event_and_keeps_it(store: PromotionStore) -> None:
    found = finding()
    store.open_drift(found, [drift_event(found)])
    resolved = replace(found, resolved_at=T0 + timedelta(hours=2))
    assert store.resolve_drift(resolved, [drift_event(resolved, EventType.DRIFT_RESOLVED)]) is True
    assert store.resolve_drift(resolved, [drift_event(resolved, EventType.DRIFT_RESOLVED)]) is False
    assert store.drift_findings() == []
    assert store.drift_findings(open_only=False) == [resolved]
    assert [e.type for e in store.events()] == [EventType.DRIFT_DETECTED, EventType.DRIFT_RESOLVED]
    # The same drift coming back is a new finding, published again.
    again = replace(found, detected_at=T0 + timedelta(hours=3))
    assert store.open_drift(again, [drift_event(again)]) is True
    assert store.drift_findings() == [again] and len(store.drift_findings(open_only=False)) == 2


def test_resolving_a_finding_that_is_not_open_writes_nothing(store: PromotionStore) -> None:
    assert store.resolve_drift(replace(finding(), resolved_at=T0), [drift_event(finding())]) is False
    assert store.events() == [] and store.drift_findings(open_only=False) == []


def test_the_first_zero_traffic_sighting_is_kept_until_cleared(store: PromotionStore) -> None:
    assert store.zero_traffic_since() == {}
    assert store.note_zero_traffic("credit-risk-prod", "credit-risk-v2", T0) == T0
    assert store.note_zero_traffic("credit-risk-prod", "credit-risk-v2", T0 + timedelta(days=1)) == T0
    store.note_zero_traffic("credit-risk-prod", "credit-risk-v1", T0 + timedelta(days=2))
    assert store.zero_traffic_since() == {
        ("credit-risk-prod", "credit-risk-v2"): T0,
        ("credit-risk-prod", "credit-risk-v1"): T0 + timedelta(days=2),
    }
    store.clear_zero_traffic("credit-risk-prod", "credit-risk-v2")
    store.clear_zero_traffic("credit-risk-prod", "never-seen")
    assert store.zero_traffic_since() == {("credit-risk-prod", "credit-risk-v1"): T0 + timedelta(days=2)}
    assert store.note_zero_traffic("credit-risk-prod", "credit-risk-v2", T0 + timedelta(days=3)) == T0 + timedelta(
        days=3
    )


def test_a_request_with_the_largest_artifact_record_round_trips(store: PromotionStore) -> None:
    """The tags kept at request time are capped so the history entry fits a Table string property (64 KiB)."""
    from promotion import fingerprint

    tags = {f"metric_{i:04d}": "x" * 200 for i in range(400)}  # ASCII: two bytes a character in UTF-16
    artifact = fingerprint.record(ModelVersion(CREDIT, "mlflow_model", tags))
    request = HistoryEntry(T0, "alice@example.com", "requested", {"reason": "r" * 2000, "artifact": artifact})
    added = store.add(replace(pending(), history=(request,)))
    got = store.get(added.id)
    assert got.artifact == artifact and artifact["tags_omitted"] > 0
