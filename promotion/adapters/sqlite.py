"""PromotionStore on a local SQLite file, for the local backend and single-machine setups.

Several processes (the Functions host may run more than one worker) and threads share the file, so:
WAL (readers never block the writer), a busy timeout (writers queue instead of failing), every write
in `BEGIN IMMEDIATE` (the write lock is taken before the first read, so a check-then-write such as
"is another promotion open?" cannot interleave with another writer), and a connection per thread and
process (a sqlite3 connection must not be shared across threads, nor used in a child after a fork; opening one
per call cost more than the queries).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from promotion.adapters import records
from promotion.domain import CopyState, Decision, DriftFinding, LifecycleEvent, ModelRef, Promotion, RegistryCopy, State
from promotion.ports import (
    EVERY_PROMOTION,
    CopyClaimed,
    InvalidContinuation,
    OpenPromotionExists,
    Page,
    PromotionFilter,
    PromotionNotFound,
    StaleRevision,
    StoreUnavailable,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS promotions (
    id TEXT PRIMARY KEY,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    state TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    reason TEXT,
    approved_by TEXT,
    rejected_by TEXT,
    deployment TEXT NOT NULL,
    error TEXT,
    revision INTEGER NOT NULL,
    -- "name:version" while the promotion is open, NULL once closed: the database itself then refuses
    -- a second open promotion for a model version (NULLs never collide in a UNIQUE column).
    open_model TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS promotions_by_model ON promotions (model_name, model_version);
-- The timers read open work through these indexes, never a table scan: what they read does not grow with history.
-- A file written by an earlier version gets them here, at its first open.
CREATE INDEX IF NOT EXISTS promotions_by_state ON promotions (state, created_at, id);
CREATE TABLE IF NOT EXISTS promotion_history (
    promotion_id TEXT NOT NULL REFERENCES promotions (id),
    seq INTEGER NOT NULL,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (promotion_id, seq)
);
CREATE TABLE IF NOT EXISTS copies (
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    attempt TEXT NOT NULL,
    state TEXT NOT NULL,
    model_type TEXT NOT NULL,
    lineage TEXT NOT NULL,
    tags TEXT NOT NULL,
    description TEXT,
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    operation TEXT,
    error TEXT,
    revision INTEGER NOT NULL,
    PRIMARY KEY (model_name, model_version)
);
CREATE INDEX IF NOT EXISTS copies_by_state ON copies (state, started_at);
CREATE INDEX IF NOT EXISTS copies_by_key ON copies (model_name || ':' || model_version);
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    source TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    at TEXT NOT NULL,
    data TEXT NOT NULL,
    published_at TEXT
);
CREATE INDEX IF NOT EXISTS outbox_by_publication ON outbox (published_at, at, id);
CREATE INDEX IF NOT EXISTS outbox_by_publish_order ON outbox (published_at, id);
CREATE TABLE IF NOT EXISTS decisions (
    scope TEXT NOT NULL,
    event_id TEXT NOT NULL,
    model_name TEXT,
    model_version TEXT,
    outcome TEXT NOT NULL,
    reasons TEXT NOT NULL,
    policy_digest TEXT,
    decided_at TEXT NOT NULL,
    PRIMARY KEY (scope, event_id)
);
CREATE TABLE IF NOT EXISTS drift (
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    deployment TEXT NOT NULL,
    expected TEXT NOT NULL,
    actual TEXT NOT NULL,
    promotion_id TEXT,
    model_name TEXT,
    model_version TEXT,
    detected_at TEXT NOT NULL,
    resolved_at TEXT,
    -- the key while the finding is open, NULL once resolved: at most one open finding per key
    open_key TEXT UNIQUE,
    PRIMARY KEY (key, detected_at)
);
CREATE TABLE IF NOT EXISTS zero_traffic (
    endpoint TEXT NOT NULL,
    deployment TEXT NOT NULL,
    since TEXT NOT NULL,
    PRIMARY KEY (endpoint, deployment)
);

CREATE INDEX IF NOT EXISTS decisions_by_time ON decisions (decided_at);
"""

# The reads the timers make; tests check that SQLite answers them from an index.
OPEN_PROMOTIONS = "SELECT * FROM promotions WHERE state IN ({states}) ORDER BY created_at, id"
COPIES_IN_FLIGHT = "SELECT * FROM copies WHERE state IN ({states}) ORDER BY started_at, model_name, model_version"
UNPUBLISHED = "SELECT * FROM outbox WHERE published_at IS NULL ORDER BY at, id LIMIT ?"
_COPY_KEY = "model_name || ':' || model_version"


class _Reads(sqlite3.Cursor):
    """Counts each statement that returns rows once, and every row it returns, in the store's `reads`."""

    _counted = False

    def _count(self, rows: int) -> None:
        self.connection.reads.count(0 if self._counted else 1, rows)  # type: ignore[attr-defined]
        self._counted = True

    def fetchone(self) -> Any:
        row = super().fetchone()
        self._count(row is not None)
        return row

    def fetchall(self) -> list[Any]:
        rows = super().fetchall()
        self._count(len(rows))
        return rows


class _Connection(sqlite3.Connection):
    reads: records.Reads

    def cursor(self, factory: Any = _Reads) -> Any:  # type: ignore[override]
        return super().cursor(factory)

    def execute(self, sql: str, parameters: Any = ()) -> Any:  # type: ignore[override]
        # sqlite3's own execute builds a plain cursor, whatever cursor() answers.
        return self.cursor().execute(sql, parameters)


class SqlitePromotionStore:
    def __init__(self, path: Path, *, timeout_seconds: float = 30.0):
        self._path = Path(path)
        self._timeout = timeout_seconds
        self._ready = False
        self._ready_lock = threading.Lock()
        self._connections = threading.local()
        self.reads = records.Reads()

    def add(self, promotion: Promotion, events: Sequence[LifecycleEvent] = ()) -> Promotion:
        record = records.promotion_record(promotion)
        with self._transaction() as db:
            holder = self._open_holder(db, promotion)
            if holder is not None:
                raise OpenPromotionExists(holder)
            if db.execute("SELECT 1 FROM promotions WHERE id = ?", (promotion.id,)).fetchone():
                raise ValueError(f"promotion {promotion.id} already exists")
            _insert(db, "promotions", {**record, "revision": 1, "open_model": records.open_model(promotion)})
            self._append_history(db, promotion, start=0)
            _append_events(db, events)
        return replace(promotion, revision="1")

    def get(self, promotion_id: str) -> Promotion:
        with self._transaction(write=False) as db:
            return self._read(db, promotion_id)

    def list(self, *, state: State | None = None, model: ModelRef | None = None) -> list[Promotion]:
        where, params = ["1"], []
        if state is not None:
            where.append("state = ?")
            params.append(state.value)
        if model is not None:
            where.append("model_name = ? AND model_version = ?")
            params += [model.name, model.version]
        with self._transaction(write=False) as db:
            rows = db.execute(f"SELECT * FROM promotions WHERE {' AND '.join(where)}", params).fetchall()
            found = [self._from_row(db, row) for row in rows]
        return records.newest_first(found)

    def list_page(
        self, wanted: PromotionFilter = EVERY_PROMOTION, *, page_size: int = 50, continuation: str | None = None
    ) -> Page[Promotion]:
        where, params = records.page_filter(wanted)
        if continuation is not None:
            where.append("id > ?")
            params.append(records.decode_continuation(continuation, "after"))
        query = f"SELECT * FROM promotions WHERE {' AND '.join(where) or '1'} ORDER BY id LIMIT ?"
        with self._transaction(write=False) as db:
            rows = db.execute(query, [*params, page_size + 1]).fetchall()
            found = [self._from_row(db, row) for row in rows[:page_size]]
        more = len(rows) > page_size
        return Page(found, records.page_token({"after": found[-1].id}) if more else None)

    def open_promotions(self, states: Iterable[State]) -> list[Promotion]:
        wanted = [state.value for state in records.open_work_states(states)]
        with self._transaction(write=False) as db:
            rows = db.execute(OPEN_PROMOTIONS.format(states=_marks(wanted)), wanted).fetchall()
            return [self._from_row(db, row) for row in rows]

    def save(self, promotion: Promotion, events: Sequence[LifecycleEvent] = ()) -> Promotion:
        record = records.promotion_record(promotion)
        with self._transaction() as db:
            row = db.execute("SELECT revision FROM promotions WHERE id = ?", (promotion.id,)).fetchone()
            if row is None:
                raise PromotionNotFound(promotion.id)
            if str(row["revision"]) != promotion.revision:
                raise StaleRevision(f"promotion {promotion.id} is at {row['revision']} not {promotion.revision}")
            holder = self._open_holder(db, promotion)
            if holder is not None and holder.id != promotion.id:
                raise OpenPromotionExists(holder)
            (stored_entries,) = db.execute(
                "SELECT COUNT(*) FROM promotion_history WHERE promotion_id = ?", (promotion.id,)
            ).fetchone()
            # Entries the store already holds are never touched: only the caller's extra ones are appended.
            self._append_history(db, promotion, start=stored_entries)
            revision = row["revision"] + 1
            assignments = ", ".join(f"{column} = :{column}" for column in record)
            db.execute(
                f"UPDATE promotions SET {assignments}, revision = :revision, open_model = :open_model WHERE id = :id",
                {**record, "revision": revision, "open_model": records.open_model(promotion)},
            )
            _append_events(db, events)
            return self._read(db, promotion.id)

    def record_decision(self, decision: Decision) -> bool:
        with self._transaction() as db:
            return _insert(db, "decisions", _decision_row(decision), verb="INSERT OR IGNORE") == 1

    def decisions(self, model: ModelRef) -> list[Decision]:
        with self._transaction(write=False) as db:
            rows = db.execute("SELECT * FROM decisions WHERE scope = ?", (records.model_scope(model),)).fetchall()
        return records.oldest_first([records.decision_from_record(dict(row)) for row in rows])

    def purge_decisions(self, *, before: datetime) -> int:
        with self._transaction() as db:
            return db.execute("DELETE FROM decisions WHERE decided_at < ?", (records.stamp(before),)).rowcount

    # -- registry copies

    def copy(self, model: ModelRef) -> RegistryCopy | None:
        with self._transaction(write=False) as db:
            return _read_copy(db, model)

    def copies(self, *, state: CopyState | None = None) -> list[RegistryCopy]:
        query, params = "SELECT * FROM copies", ()
        if state is not None:
            query, params = query + " WHERE state = ?", (state.value,)
        with self._transaction(write=False) as db:
            rows = db.execute(query + " ORDER BY started_at, model_name, model_version", params).fetchall()
        return [_copy_from_row(row) for row in rows]

    def copies_in_flight(self) -> list[RegistryCopy]:
        wanted = sorted(state.value for state in records.COPIES_IN_FLIGHT)
        with self._transaction(write=False) as db:
            rows = db.execute(COPIES_IN_FLIGHT.format(states=_marks(wanted)), wanted).fetchall()
        return [_copy_from_row(row) for row in rows]

    def copies_page(self, *, page_size: int, continuation: str | None = None) -> Page[RegistryCopy]:
        records.check_page_size(page_size)
        after = records.page_position(continuation) if continuation else ""
        if not isinstance(after, str):
            raise InvalidContinuation(records.INVALID_TOKEN)
        query = f"SELECT * FROM copies WHERE {_COPY_KEY} > ? ORDER BY {_COPY_KEY} LIMIT ?"
        with self._transaction(write=False) as db:
            rows = [_copy_from_row(row) for row in db.execute(query, (after, page_size + 1)).fetchall()]
        if len(rows) <= page_size:
            return Page(rows)
        return Page(rows[:page_size], records.page_token(str(rows[page_size - 1].model)))

    def claim_copy(self, copy: RegistryCopy, *, replacing: RegistryCopy | None = None) -> RegistryCopy:
        with self._transaction() as db:
            stored = _read_copy(db, copy.model)
            if stored is not None:
                if replacing is None or stored.revision != replacing.revision:
                    raise CopyClaimed(stored)
                db.execute(
                    "DELETE FROM copies WHERE model_name = ? AND model_version = ?",
                    (copy.model.name, copy.model.version),
                )
            revision = int(stored.revision or 0) + 1 if stored else 1
            _insert(db, "copies", {**records.copy_record(copy), "revision": revision})
        return replace(copy, revision=str(revision))

    def save_copy(
        self, copy: RegistryCopy, *, decision: Decision | None = None, events: Sequence[LifecycleEvent] = ()
    ) -> RegistryCopy:
        with self._transaction() as db:
            stored = _read_copy(db, copy.model)
            if stored is None or stored.revision != copy.revision:
                raise StaleRevision(f"the copy of {copy.model} changed since it was read")
            revision = int(stored.revision or 0) + 1
            record = records.copy_record(copy)
            assignments = ", ".join(f"{column} = :{column}" for column in record)
            db.execute(
                f"UPDATE copies SET {assignments}, revision = :revision "
                "WHERE model_name = :model_name AND model_version = :model_version",
                {**record, "revision": revision},
            )
            if decision is not None:
                _insert(db, "decisions", _decision_row(decision), verb="INSERT OR REPLACE")
            _append_events(db, events)
        return replace(copy, revision=str(revision))

    def release_copy(self, claimed: RegistryCopy, *, previous: RegistryCopy | None) -> None:
        with self._transaction() as db:
            stored = _read_copy(db, claimed.model)
            if stored is None or stored.revision != claimed.revision:
                return  # not ours any more
            db.execute(
                "DELETE FROM copies WHERE model_name = ? AND model_version = ?",
                (claimed.model.name, claimed.model.version),
            )
            if previous is not None:
                _insert(db, "copies", {**records.copy_record(previous), "revision": int(stored.revision or 0) + 1})

    # -- the outbox of lifecycle events

    def unpublished_events(self, *, limit: int) -> list[LifecycleEvent]:
        with self._transaction(write=False) as db:
            return [records.event_from_record(dict(row)) for row in db.execute(UNPUBLISHED, (limit,)).fetchall()]

    def events(self, *, unpublished_only: bool = False) -> list[LifecycleEvent]:
        where = " WHERE published_at IS NULL" if unpublished_only else ""
        with self._transaction(write=False) as db:
            rows = db.execute(f"SELECT * FROM outbox{where} ORDER BY at, id").fetchall()
        return [records.event_from_record(dict(row)) for row in rows]

    def events_page(
        self, *, page_size: int, continuation: str | None = None, unpublished_only: bool = False
    ) -> Page[LifecycleEvent]:
        """Positions are ("o", at, id) among the unpublished and ("s", published_at, id) among the published:
        the order the Tables store's keys give."""
        records.check_page_size(page_size)
        after = records.page_position(continuation) if continuation else ["o", "", ""]
        if not (isinstance(after, list) and len(after) == 3 and after[0] in ("o", "s")):
            raise InvalidContinuation(records.INVALID_TOKEN)
        phases = [("o", "published_at IS NULL", "at")] + (
            [] if unpublished_only else [("s", "published_at >= ''", "published_at")]
        )
        found: list[tuple[list[str], sqlite3.Row]] = []
        with self._transaction(write=False) as db:
            for phase, where, first in phases:
                if phase < after[0]:
                    continue
                position = after[1:] if phase == after[0] else ["", ""]
                query = f"SELECT * FROM outbox WHERE {where} AND ({first}, id) > (?, ?) ORDER BY {first}, id LIMIT ?"
                for row in db.execute(query, (*position, page_size + 1 - len(found))).fetchall():
                    found.append(([phase, row[first], row["id"]], row))
                if len(found) > page_size:
                    break
        events = [records.event_from_record(dict(row)) for _, row in found[:page_size]]
        token = records.page_token(found[page_size - 1][0]) if len(found) > page_size else None
        return Page(events, token)

    def mark_published(self, events: Sequence[LifecycleEvent], at: datetime) -> None:
        with self._transaction() as db:
            db.executemany(
                "UPDATE outbox SET published_at = ? WHERE id = ? AND published_at IS NULL",
                [(records.stamp(at), event.id) for event in events],
            )

    def purge_published(self, *, before: datetime) -> int:
        with self._transaction() as db:
            return db.execute("DELETE FROM outbox WHERE published_at < ?", (records.stamp(before),)).rowcount

    # -- drift in production

    def drift_findings(self, *, open_only: bool = True) -> list[DriftFinding]:
        where = " WHERE open_key IS NOT NULL" if open_only else ""
        with self._transaction(write=False) as db:
            rows = db.execute(f"SELECT * FROM drift{where}").fetchall()
        return records.findings_in_order([records.drift_from_record(dict(row)) for row in rows])

    def open_drift(self, finding: DriftFinding, events: Sequence[LifecycleEvent] = ()) -> bool:
        row = {**records.drift_record(finding), "open_key": finding.key}
        with self._transaction() as db:
            if _insert(db, "drift", row, verb="INSERT OR IGNORE") != 1:
                return False
            _append_events(db, events)
        return True

    def resolve_drift(self, finding: DriftFinding, events: Sequence[LifecycleEvent] = ()) -> bool:
        if finding.resolved_at is None:
            raise ValueError("a resolved finding needs its resolved_at")
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE drift SET resolved_at = ?, open_key = NULL WHERE open_key = ?",
                (records.stamp(finding.resolved_at), finding.key),
            ).rowcount
            if changed != 1:
                return False
            _append_events(db, events)
        return True

    def zero_traffic_since(self) -> dict[tuple[str, str], datetime]:
        with self._transaction(write=False) as db:
            rows = db.execute("SELECT * FROM zero_traffic").fetchall()
        return {(row["endpoint"], row["deployment"]): records.parse_stamp(row["since"]) for row in rows}

    def note_zero_traffic(self, endpoint: str, deployment: str, at: datetime) -> datetime:
        row = {"endpoint": endpoint, "deployment": deployment, "since": records.stamp(at)}
        with self._transaction() as db:
            _insert(db, "zero_traffic", row, verb="INSERT OR IGNORE")
            (since,) = db.execute(
                "SELECT since FROM zero_traffic WHERE endpoint = ? AND deployment = ?", (endpoint, deployment)
            ).fetchone()
        return records.parse_stamp(since)

    def clear_zero_traffic(self, endpoint: str, deployment: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM zero_traffic WHERE endpoint = ? AND deployment = ?", (endpoint, deployment))

    # -- helpers ----------------------------------------------------------------------------------------

    def _read(self, db: sqlite3.Connection, promotion_id: str) -> Promotion:
        row = db.execute("SELECT * FROM promotions WHERE id = ?", (promotion_id,)).fetchone()
        if row is None:
            raise PromotionNotFound(promotion_id)
        return self._from_row(db, row)

    @staticmethod
    def _from_row(db: sqlite3.Connection, row: sqlite3.Row) -> Promotion:
        entries = db.execute(
            "SELECT * FROM promotion_history WHERE promotion_id = ? ORDER BY seq", (row["id"],)
        ).fetchall()
        history = tuple(records.history_from_record(dict(entry)) for entry in entries)
        return records.promotion_from_record(dict(row), history, str(row["revision"]))

    def _open_holder(self, db: sqlite3.Connection, promotion: Promotion) -> Promotion | None:
        """The promotion holding the open slot `promotion` needs, if any (callers hold the write lock)."""
        key = records.open_model(promotion)
        if key is None:
            return None
        row = db.execute("SELECT id FROM promotions WHERE open_model = ?", (key,)).fetchone()
        return self._read(db, row["id"]) if row else None

    @staticmethod
    def _append_history(db: sqlite3.Connection, promotion: Promotion, *, start: int) -> None:
        for seq, entry in enumerate(promotion.history[start:], start=start):
            row = {"promotion_id": promotion.id, "seq": seq, **records.history_record(entry)}
            _insert(db, "promotion_history", row)

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        try:
            self._ensure_schema()
            db = self._connection()
        except sqlite3.OperationalError as error:
            raise _unavailable(error) from error
        try:
            # A read transaction gives a consistent snapshot of a promotion and its history under WAL.
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield db
            db.execute("COMMIT")
        except sqlite3.OperationalError as error:
            raise _unavailable(error) from error
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use (and again in a forked child: the parent's is not ours)."""
        local = self._connections
        if getattr(local, "pid", None) != os.getpid():
            local.db, local.pid = self._connect(), os.getpid()
        return local.db

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves instead of sqlite3's implicit transactions.
        db = sqlite3.connect(self._path, timeout=self._timeout, isolation_level=None, factory=_Connection)
        db.reads = self.reads
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA synchronous = NORMAL")  # durable enough with WAL, and far fewer fsyncs
        return db

    def _ensure_schema(self) -> None:
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            self._path.parent.mkdir(parents=True, exist_ok=True)
            db = self._connect()
            try:
                self._enable_wal(db)
                # Processes starting together create the schema one at a time.
                db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
            finally:
                db.close()
            self._ready = True

    def _enable_wal(self, db: sqlite3.Connection) -> None:
        # WAL is stored in the file, so once per process is plenty. Switching a new file to WAL needs it
        # alone, and SQLite then answers "locked" at once instead of waiting its busy timeout, so processes
        # that start together retry here.
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)


def _insert(db: sqlite3.Connection, table: str, row: dict, *, verb: str = "INSERT") -> int:
    columns = ", ".join(row)
    placeholders = ", ".join(f":{column}" for column in row)
    return db.execute(f"{verb} INTO {table} ({columns}) VALUES ({placeholders})", row).rowcount


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" for _ in values)


def _unavailable(error: sqlite3.OperationalError) -> StoreUnavailable:
    """A busy database (another writer held the lock past the timeout), a full disk, or an unreadable file."""
    return StoreUnavailable(f"the SQLite promotion store is unavailable: {error}")


def _decision_row(decision: Decision) -> dict:
    return {"scope": records.model_scope(decision.model), **records.decision_record(decision)}


def _append_events(db: sqlite3.Connection, events: Sequence[LifecycleEvent]) -> None:
    for event in events:
        _insert(db, "outbox", records.event_record(event))


def _read_copy(db: sqlite3.Connection, model: ModelRef) -> RegistryCopy | None:
    row = db.execute(
        "SELECT * FROM copies WHERE model_name = ? AND model_version = ?", (model.name, model.version)
    ).fetchone()
    return _copy_from_row(row) if row else None


def _copy_from_row(row: sqlite3.Row) -> RegistryCopy:
    return records.copy_from_record(dict(row), str(row["revision"]))
