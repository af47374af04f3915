"""The store's reads of open work, its paged listings and the decisions' retention, on SQLite and on Tables.

The timers read what is open (promotions pending, approved, deploying or rolling back; copies under way; events not
published) and nothing finished. Reads are counted by each store (`reads`: requests and rows or entities that came
back), so these tests show that a timer's reads stay the same however much history the store holds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from promotion.adapters import sqlite as sqlite_store
from promotion.adapters.sqlite import SqlitePromotionStore
from promotion.adapters.tables import PARTITION, TablePromotionStore
from promotion.domain import CopyState, Decision, ModelRef, Outcome, Promotion, State
from promotion.ports import PromotionStore
from tests.contract.test_promotion_store import (
    T0,
    approve,
    attempt,
    ids,
    lifecycle,
    make_store,  # noqa: F401 (the contract's fixture)
    pending,
    reject,
)

HISTORY = 120  # finished items of each kind: enough to show any read that grows with them
ORIGIN = ModelRef("m0000", "1")


@pytest.fixture
def store(make_store: Callable[[], PromotionStore]) -> PromotionStore:  # noqa: F811 (the contract's fixture)
    return make_store()


def model(number: int) -> ModelRef:
    return ModelRef(f"m{number:04d}", "1")


def moved(promotion: Promotion, state: State, minutes: int = 2) -> Promotion:
    return promotion.move(state, actor="deployer", at=promotion.updated_at + timedelta(minutes=minutes))


def decision(event_id: str, at: datetime, ref: ModelRef = ORIGIN) -> Decision:
    return Decision(event_id, ref, Outcome.COPIED, ("copied",), None, at)


def open_work(store: PromotionStore) -> dict[str, list[str]]:
    """What the timers read, as the timers read it."""
    return {
        "promotions": [p.id for p in store.open_promotions([State.APPROVED, State.DEPLOYING, State.ROLLING_BACK])],
        "pending": [p.id for p in store.open_promotions([State.PENDING_APPROVAL])],
        "copies": [str(c.model) for c in store.copies_in_flight()],
        "events": ids(store.unpublished_events(limit=100)),
    }


def timer_reads(store: PromotionStore) -> tuple[int, int]:
    """Requests and rows one pass of every timer's store reads costs (the sweeps find nothing to delete here)."""
    before = store.reads.snapshot()  # type: ignore[attr-defined]
    open_work(store)
    store.purge_published(before=T0 - timedelta(days=30))
    store.purge_decisions(before=T0 - timedelta(days=30))
    after = store.reads.snapshot()  # type: ignore[attr-defined]
    return after[0] - before[0], after[1] - before[1]


def add_open_work(store: PromotionStore) -> None:
    store.add(pending(model(9001), id="waiting"))
    deploying = store.add(pending(model(9002), id="deploying"))
    store.save(moved(store.save(approve(deploying)), State.DEPLOYING), events=[lifecycle(id="unpublished")])
    store.claim_copy(attempt(model(9003)))


def add_history(store: PromotionStore, count: int, at: datetime = T0) -> None:
    """`count` finished promotions (half deployed, half rejected), finished copies with their decisions, other
    decisions, and published events, all as of `at`."""
    for number in range(count):
        event = lifecycle(id=f"e-{number}", at=at)
        promotion = store.add(pending(model(number), id=f"done-{number}", at=at), events=[event])
        if number % 2:
            store.save(reject(promotion))
        else:
            store.save(moved(store.save(moved(store.save(approve(promotion)), State.DEPLOYING)), State.DEPLOYED))
        claimed = store.claim_copy(attempt(model(number), cause=f"evt-{number}", at=at))
        state = CopyState.COPIED if number % 3 else CopyState.COPY_FAILED
        finished = claimed.finished(state, at + timedelta(minutes=5))
        store.save_copy(finished, decision=decision(f"copy-{number}", at, model(number)))
        store.record_decision(decision(f"evt-{number}", at, model(number)))
        store.mark_published([event], at)


# -- open work ----------------------------------------------------------------------------------------------


def test_open_promotions_follow_every_move_oldest_first(store: PromotionStore) -> None:
    first = store.add(pending(model(1), id="first", at=T0))
    second = store.add(pending(model(2), id="second", at=T0 + timedelta(hours=1)))
    assert [p.id for p in store.open_promotions([State.PENDING_APPROVAL])] == ["first", "second"]

    approved = store.save(approve(first))
    assert store.open_promotions([State.PENDING_APPROVAL]) == [store.get("second")]
    assert store.open_promotions([State.APPROVED, State.DEPLOYING]) == [approved]

    deploying = store.save(moved(approved, State.DEPLOYING))
    assert store.open_promotions([State.APPROVED]) == []
    assert store.open_promotions([State.DEPLOYING]) == [deploying]

    rolling = store.save(moved(store.save(moved(deploying, State.DEPLOYED)), State.ROLLING_BACK))
    store.save(reject(second))
    assert store.open_promotions([State.ROLLING_BACK, State.DEPLOYING, State.PENDING_APPROVAL]) == [rolling]
    store.save(moved(rolling, State.ROLLED_BACK))
    assert store.open_promotions(sorted(_open_states(), key=str)) == []


def _open_states() -> set[State]:
    return {State.PENDING_APPROVAL, State.APPROVED, State.DEPLOYING, State.ROLLING_BACK}


@pytest.mark.parametrize("state", [State.DEPLOYED, State.REJECTED, State.EXPIRED, State.FAILED, State.ROLLED_BACK])
def test_open_promotions_refuses_finished_states(store: PromotionStore, state: State) -> None:
    with pytest.raises(ValueError, match=f"not open work.*{state.value}"):
        store.open_promotions([State.DEPLOYING, state])


def test_a_stale_save_leaves_the_open_work_as_it_was(store: PromotionStore) -> None:
    promotion = store.add(pending())
    store.save(approve(promotion))

    with pytest.raises(Exception, match="changed|is at"):
        store.save(reject(promotion))  # read before the approval

    assert [p.state for p in store.open_promotions([State.APPROVED, State.PENDING_APPROVAL])] == [State.APPROVED]


def test_copies_in_flight_are_the_copies_under_way_and_nothing_finished(store: PromotionStore) -> None:
    late = store.claim_copy(attempt(model(1), at=T0 + timedelta(hours=1)))
    early = store.claim_copy(attempt(model(2), at=T0))
    done = store.claim_copy(attempt(model(3)))
    assert [c.model for c in store.copies_in_flight()] == [model(2), model(3), model(1)]

    store.save_copy(done.finished(CopyState.COPIED, T0 + timedelta(minutes=1)))
    failed = store.save_copy(early.finished(CopyState.COPY_FAILED, T0 + timedelta(minutes=1), "quota"))
    assert store.copies_in_flight() == [late]

    retry = store.claim_copy(attempt(model(2), cause="evt-2", at=T0 + timedelta(hours=2)), replacing=failed)
    assert store.copies_in_flight() == [late, retry]
    store.release_copy(retry, previous=failed)  # the retry could not start: the failed attempt is back
    store.release_copy(late, previous=None)
    assert store.copies_in_flight() == []
    started = store.save_copy(replace(store.claim_copy(attempt(model(1), cause="evt-3")), operation="op"))
    assert store.copies_in_flight() == [started]


def test_a_timers_reads_do_not_grow_with_finished_work(store: PromotionStore) -> None:
    add_open_work(store)
    work = open_work(store)
    empty = timer_reads(store)

    add_history(store, HISTORY)

    assert (
        open_work(store)
        == work
        == {
            "promotions": ["deploying"],
            "pending": ["waiting"],
            "copies": [str(model(9003))],
            "events": ["unpublished"],
        }
    )
    assert timer_reads(store) == empty
    assert empty[1] <= 12  # the open work's rows, index rows and history included, and no more


def test_sqlite_answers_the_timers_from_an_index_never_a_scan(tmp_path: Path) -> None:
    SqlitePromotionStore(tmp_path / "p.sqlite3").copies()  # creates the schema
    db = sqlite3.connect(tmp_path / "p.sqlite3")
    queries = {
        sqlite_store.OPEN_PROMOTIONS.format(states="?, ?"): ("approved", "deploying"),
        sqlite_store.COPIES_IN_FLIGHT.format(states="?"): ("copying",),
        sqlite_store.UNPUBLISHED: (10,),
        "DELETE FROM decisions WHERE decided_at < ?": ("x",),
        "DELETE FROM outbox WHERE published_at < ?": ("x",),
    }
    for query, parameters in queries.items():
        plan = " / ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {query}", parameters))
        assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, (query, plan)
        assert "SCAN" not in plan.replace("SCAN CONSTANT ROW", ""), (query, plan)


# -- stores written by the previous version ----------------------------------------------------------------


def test_a_sqlite_file_of_the_previous_version_gets_its_indexes(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite3"
    old = SqlitePromotionStore(path)
    old.add(pending())
    db = sqlite3.connect(path)
    for index in ("promotions_by_state", "copies_by_state", "copies_by_key", "decisions_by_time"):
        db.execute(f"DROP INDEX {index}")
    db.close()

    new = SqlitePromotionStore(path)

    assert [p.id for p in new.open_promotions([State.PENDING_APPROVAL])] == ["p-1"]
    names = {row[0] for row in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"promotions_by_state", "copies_by_state", "copies_by_key", "decisions_by_time"} <= names


@pytest.mark.azurite
def test_a_table_of_the_previous_version_is_indexed_once_at_first_open(
    azurite_connection: str, azurite_table_name: str
) -> None:
    old = TablePromotionStore(azurite_connection, table_name=azurite_table_name)
    waiting = old.add(pending(model(1), id="waiting"))
    deploying = old.save(moved(old.save(approve(old.add(pending(model(2), id="deploying")))), State.DEPLOYING))
    finished = old.save(reject(old.add(pending(model(3), id="finished"))))
    copying = old.claim_copy(attempt(model(4)))
    old.save_copy(old.claim_copy(attempt(model(5))).finished(CopyState.COPIED, T0))
    old.record_decision(decision("evt-old", T0 - timedelta(days=30)))
    table = old._table()
    # What the previous version wrote: no index rows, no marker.
    for row in list(table.query_entities("RowKey ge 'meta' and RowKey lt 'mf' or RowKey ge 't|' and RowKey lt 'x'")):
        table.delete_entity(PARTITION, row["RowKey"])
    assert not [r for r in table.list_entities() if r["RowKey"][:2] in ("w|", "t|", "me")]

    new = TablePromotionStore(azurite_connection, table_name=azurite_table_name)

    assert new.open_promotions([State.PENDING_APPROVAL, State.DEPLOYING]) == [deploying, waiting]  # ties: by id
    assert new.copies_in_flight() == [copying]
    assert new.purge_decisions(before=T0) == 1 and new.decisions(model(0)) == []
    # A write of the new version moves its item's index row, and the migration ran once.
    new.save(reject(new.get("waiting")))
    assert new.open_promotions([State.PENDING_APPROVAL]) == []
    assert finished.state is State.REJECTED
    before = new.reads.snapshot()
    TablePromotionStore(azurite_connection, table_name=azurite_table_name).copies_in_flight()
    assert new.reads.snapshot() == before  # each store counts its own reads


@pytest.mark.azurite
def test_a_table_index_row_left_stale_is_dropped_and_a_missing_one_does_not_block_a_save(
    azurite_connection: str, azurite_table_name: str
) -> None:
    store = TablePromotionStore(azurite_connection, table_name=azurite_table_name)
    promotion = store.save(approve(store.add(pending())))
    table = store._table()
    # An older version of the app moved it on without its index rows: one stale row, one missing.
    table.upsert_entity({"PartitionKey": PARTITION, "RowKey": "w|p|deploying|p-1", "promotion_id": "p-1"})
    table.delete_entity(PARTITION, "w|p|approved|p-1")
    table.upsert_entity({"PartitionKey": PARTITION, "RowKey": "w|c|gone:1", "model": "gone:1"})

    assert store.open_promotions([State.DEPLOYING]) == [] and store.copies_in_flight() == []
    keys = {row["RowKey"] for row in table.list_entities()}
    assert "w|p|deploying|p-1" not in keys and "w|c|gone:1" not in keys

    store.save(moved(promotion, State.DEPLOYING))  # would delete the missing approved row: it goes on without
    assert [p.state for p in store.open_promotions([State.DEPLOYING])] == [State.DEPLOYING]


# -- decisions' retention -----------------------------------------------------------------------------------


def test_purge_decisions_deletes_only_decisions_made_before_the_cutoff(store: PromotionStore) -> None:
    cutoff = T0
    store.record_decision(decision("old", cutoff - timedelta(days=8)))
    store.record_decision(decision("at-cutoff", cutoff))
    store.record_decision(decision("new", cutoff + timedelta(hours=1)))
    claimed = store.claim_copy(attempt(model(0)))
    # A decision made long ago and replaced since by its cause's later one is kept: it is the later one now.
    store.record_decision(decision("copy:1", cutoff - timedelta(days=9)))
    store.save_copy(claimed.finished(CopyState.COPIED, cutoff), decision=decision("copy:1", cutoff + timedelta(days=1)))

    assert store.purge_decisions(before=cutoff) == 1
    assert [d.event_id for d in store.decisions(model(0))] == ["at-cutoff", "new", "copy:1"]
    assert store.purge_decisions(before=cutoff) == 0
    assert store.purge_decisions(before=cutoff + timedelta(days=2)) == 3
    assert store.decisions(model(0)) == []
    assert store.record_decision(decision("old", T0))  # a purged cause may be decided again


# -- paged listings -----------------------------------------------------------------------------------------


def _all_pages(read, page_size: int) -> tuple[list, int]:  # noqa: ANN001
    found, pages, token = [], 0, None
    while True:
        page = read(page_size=page_size, continuation=token)
        assert len(page.items) <= page_size
        found += page.items
        pages += 1
        token = page.continuation
        if token is None:
            return found, pages


def test_copies_page_through_every_copy_by_model(store: PromotionStore) -> None:
    refs = [ModelRef("b", "1"), ModelRef("a", "2"), ModelRef("a-b", "1"), ModelRef("c", "10"), ModelRef("a", "1")]
    for number, ref in enumerate(refs):
        claimed = store.claim_copy(attempt(ref, cause=f"evt-{number}"))
        if number % 2:
            store.save_copy(claimed.finished(CopyState.COPIED, T0))

    found, pages = _all_pages(store.copies_page, 2)

    assert [str(copy.model) for copy in found] == sorted(str(ref) for ref in refs)
    assert pages == 3
    assert sorted(found, key=lambda c: str(c.model)) == sorted(store.copies(), key=lambda c: str(c.model))
    assert store.copies_page(page_size=5).continuation is None
    assert store.copies_page(page_size=10) == store.copies_page(page_size=5)


def test_events_page_unpublished_oldest_first_then_published_in_publish_order(store: PromotionStore) -> None:
    batch = [lifecycle(id=f"e{step}", at=T0 + timedelta(seconds=step)) for step in range(7)]
    store.add(pending(), events=batch)
    store.mark_published([batch[4], batch[1]], T0 + timedelta(hours=2))
    store.mark_published([batch[5]], T0 + timedelta(hours=1))

    found, pages = _all_pages(store.events_page, 3)
    waiting, _ = _all_pages(lambda **page: store.events_page(unpublished_only=True, **page), 2)

    assert ids(found) == ["e0", "e2", "e3", "e6", "e5", "e1", "e4"]
    assert pages == 3
    assert ids(waiting) == ["e0", "e2", "e3", "e6"]
    assert sorted(found, key=lambda e: e.id) == sorted(store.events(), key=lambda e: e.id)


@pytest.mark.parametrize("token", ["not-a-token", "eyJ4IjogMX0", "W10", "%%%"])
def test_a_bad_continuation_token_is_refused(store: PromotionStore, token: str) -> None:
    for read in (store.copies_page, store.events_page):
        with pytest.raises(ValueError, match="continuation token"):
            read(page_size=2, continuation=token)


@pytest.mark.parametrize("size", [0, -1, 1001])
def test_a_page_size_out_of_range_is_refused(store: PromotionStore, size: int) -> None:
    with pytest.raises(ValueError, match="page size"):
        store.copies_page(page_size=size)
