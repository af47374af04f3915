"""One contract for every PromotionStore: SQLite in a temporary folder, Tables on Azurite."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from promotion.adapters.sqlite import SqlitePromotionStore
from promotion.adapters.tables import TablePromotionStore
from promotion.domain import Decision, HistoryEntry, ModelRef, Outcome, Promotion, State
from promotion.ports import OpenPromotionExists, PromotionNotFound, PromotionStore, StaleRevision

T0 = datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=timezone.utc)
CREDIT = ModelRef("credit-risk", "3")
CHURN = ModelRef("churn.model_v2", "2025.01-rc1")


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


# -- promotions -------------------------------------------------------------------------------------------


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
            HistoryEntry(T0 + timedelta(minutes=5), "bob@example.com", "approved", {}),
            HistoryEntry(T0 + timedelta(hours=1), "deployer", "deploying", {"plan": {"instance_count": 2}}),
        ),
    )

    added = store.add(promotion)
    got = store.get(promotion.id)

    assert added.revision
    assert got == replace(promotion, revision=added.revision)
    assert got.created_at.utcoffset() == timedelta(0)
    assert all(entry.at.utcoffset() == timedelta(0) for entry in got.history)


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


# -- decisions --------------------------------------------------------------------------------------------


def test_decisions_are_recorded_once_per_event_and_listed_oldest_first(store: PromotionStore) -> None:
    later = Decision("evt-2", CREDIT, Outcome.COPIED, (), "sha256:abc", T0 + timedelta(seconds=1))
    earlier = Decision("a/b#c?d%20|é", CREDIT, Outcome.NOT_QUALIFIED, ("accuracy < 0.9", "no owner"), "sha256:abc", T0)

    assert store.record_decision(later) is True
    assert store.record_decision(earlier) is True
    assert store.record_decision(replace(earlier, outcome=Outcome.COPIED)) is False  # a redelivery
    assert store.record_decision(Decision("evt-3", CHURN, Outcome.COPIED)) is True
    assert store.record_decision(Decision("evt-4", None, Outcome.MALFORMED, ("no subject",))) is True
    assert store.record_decision(Decision("evt-4", None, Outcome.MALFORMED, ("no subject",))) is False

    assert store.decisions(CREDIT) == [earlier, later]
    assert store.decisions(ModelRef("unknown", "1")) == []


# -- concurrency ------------------------------------------------------------------------------------------


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

    results = _race(lambda: first.save(approve(added)), lambda: second.save(reject(added)))

    winners = [r for r in results if isinstance(r, Promotion)]
    assert len(winners) == 1 and sum(isinstance(r, StaleRevision) for r in results) == 1, results
    assert first.get(added.id) == winners[0]
    assert len(winners[0].history) == 2


def test_concurrent_adds_for_one_model_open_exactly_one(store: PromotionStore) -> None:
    attempts = [lambda i=i: store.add(pending(id=f"p-{i}")) for i in range(8)]

    results = _race(*attempts)

    winners = [r for r in results if isinstance(r, Promotion)]
    refusals = [r for r in results if isinstance(r, OpenPromotionExists)]
    assert len(winners) == 1 and len(refusals) == 7, results
    assert all(refusal.existing.id == winners[0].id for refusal in refusals)
    assert store.list(model=CREDIT) == [winners[0]]


def _in_another_process(path: Path, method: str, promotion: Promotion, start, results) -> None:
    store = SqlitePromotionStore(path)  # built before the start line, used (schema and all) after it
    start.wait()
    try:
        getattr(store, method)(promotion)
        results.put("done")
    except (StaleRevision, OpenPromotionExists) as refused:
        results.put(type(refused).__name__)


def _race_processes(path: Path, method: str, promotions: list[Promotion]) -> list[str]:
    """Call store.<method> at once from one process per promotion; sorted outcomes."""
    context = multiprocessing.get_context("spawn")  # no fork: the test process may hold threads and sockets
    start, results = context.Barrier(len(promotions)), context.Queue()
    workers = [
        context.Process(target=_in_another_process, args=(path, method, promotion, start, results))
        for promotion in promotions
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert [worker.exitcode for worker in workers] == [0] * len(workers)
    return sorted(results.get(timeout=1) for _ in workers)


def test_two_processes_saving_one_revision_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "promotions.sqlite3"
    added = SqlitePromotionStore(path).add(pending())

    assert _race_processes(path, "save", [approve(added), reject(added)]) == ["StaleRevision", "done"]
    assert len(SqlitePromotionStore(path).get(added.id).history) == 2


def test_processes_sharing_a_new_file_open_exactly_one_promotion(tmp_path: Path) -> None:
    # The file does not exist yet, so the processes also race to create it and switch it to WAL.
    path = tmp_path / "promotions.sqlite3"

    outcomes = _race_processes(path, "add", [pending(id=f"p-{i}") for i in range(4)])

    assert outcomes == ["OpenPromotionExists"] * 3 + ["done"]
    assert len(SqlitePromotionStore(path).list()) == 1
