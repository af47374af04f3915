"""P6: what one run of each timer reads from the promotion store, with 0, 10,000 and 100,000 finished items of each
kind (promotions with their history, copies, decisions, published events) beside the same open work.

The open work is the same at every size: 5 promotions pending approval, 5 approved (their jobs within grace),
5 deploying, 5 rolling back, 5 copies under way and 10 unpublished events. The ports the timers call answer
"still under way" (registry copies RUNNING, every deployer step PENDING, the topic refusing), so each run reads the
same work and changes nothing, and runs can be repeated.

Reads are counted by the stores themselves (`store.reads`): on SQLite each statement that returns rows and every row
it returns; on Tables every GET the SDK sends (query pages and point reads) and every entity in its answers,
counted from the HTTP responses by an azure-core hook.

History is written in bulk, not through the store's API: on SQLite with executemany in one transaction, on Tables
in entity-group transactions of 100 entities, one at a time (Azurite dropped connections under more). Both write
exactly the records and rows the adapters write for finished items (records.py, and the Tables key layout), so the
stores cannot tell them apart.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from promotion import service
from promotion.adapters import records, tables
from promotion.adapters.sqlite import SqlitePromotionStore, _decision_row
from promotion.adapters.tables import TablePromotionStore
from promotion.domain import (
    CopyState,
    Decision,
    EventType,
    LifecycleEvent,
    Lineage,
    ModelRef,
    ModelVersion,
    Outcome,
    Promotion,
    RegistryCopy,
    State,
)
from promotion.policy import ProductionRules
from promotion.ports import CopyProgress, CopyStatus, EndpointState, Progress

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
RULES = ProductionRules(approvers=("carol@contoso.com",))
WORKSPACE = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/staging"
SOURCE = "/sites/bench"
RUNS = 5
EACH_OPEN = 5
FILL_THREADS = 1


def clock() -> datetime:
    return NOW


# -- ports that keep every piece of open work open ---------------------------------------------------------------


class StillCopying:
    def get(self, ref: ModelRef) -> ModelVersion:
        return ModelVersion(ref, "mlflow_model", {})

    def copy_status(self, operation: str) -> CopyStatus:
        return CopyStatus(CopyProgress.RUNNING)


class StillDeploying:
    def ensure_endpoint(self, plan: Any) -> Progress:
        return Progress.PENDING

    def ensure_deployment(self, plan: Any) -> Progress:
        return Progress.PENDING

    def endpoint(self, name: str) -> EndpointState:
        return EndpointState(traffic={}, models={}, busy=True)

    def set_traffic(self, endpoint: str, traffic: Mapping[str, int]) -> Progress:
        return Progress.PENDING


class TopicDown:
    def publish(self, events: Any) -> None:
        raise ConnectionError("the benchmark's topic refuses everything")


# -- the items --------------------------------------------------------------------------------------------------


def _promotion(number: int, state: State, at: datetime, kind: str = "done") -> Promotion:
    ref = ModelRef(f"{kind}-{number % 1000:03d}", str(number))
    promotion = Promotion(f"{kind}-{number:06d}", ref, State.PENDING_APPROVAL, "alice", at, at)
    return promotion.note("requested", actor="alice", at=at, detail={"reason": "better"})


def _finished(number: int) -> Promotion:
    at = NOW - timedelta(hours=2)
    promotion = _promotion(number, State.PENDING_APPROVAL, at)
    if number % 2:
        return promotion.move(State.REJECTED, actor="carol", at=at, rejected_by="carol")
    approved = promotion.move(State.APPROVED, actor="carol", at=at, approved_by="carol")
    return approved.move(State.DEPLOYING, actor="deployer", at=at).move(State.DEPLOYED, actor="deployer", at=at)


def _copy(number: int, state: CopyState, kind: str = "done") -> RegistryCopy:
    ref = ModelRef(f"{kind}-{number % 1000:03d}", str(number))
    at = NOW - timedelta(hours=2) if state is not CopyState.COPYING else NOW - timedelta(minutes=1)
    return RegistryCopy(
        model=ref,
        attempt=str(uuid.UUID(int=number)),
        state=state,
        model_type="mlflow_model",
        lineage=Lineage(WORKSPACE, ref, f"event-{kind}-{number}", "sha256:0"),
        tags={"stage": "candidate"},
        description=None,
        started_at=at,
        updated_at=at,
        operation=f"op-{number}" if state is CopyState.COPYING else None,
    )


def _decision(number: int) -> Decision:
    ref = ModelRef(f"done-{number % 1000:03d}", str(number))
    return Decision(f"event-{number}", ref, Outcome.COPIED, ("copied",), None, NOW - timedelta(hours=2))


def _published(number: int) -> LifecycleEvent:
    ref = ModelRef(f"done-{number % 1000:03d}", str(number))
    at = NOW - timedelta(hours=2)
    data = {"model": ref.to_json(), "promotion_id": f"done-{number:06d}"}
    return LifecycleEvent(f"published-{number}", EventType.DEPLOYED, SOURCE, ref, at, data, published_at=at)


def add_open_work(store: Any) -> None:
    """The same open work at every size, written through the store's API."""
    recent = NOW - timedelta(minutes=1)
    plan = {
        "endpoint": "open-prod",
        "deployment": "open-v1",
        "model_uri": "azureml://registries/r/models/open/versions/1",
        "instance_type": "Standard_F4s_v2",
        "instance_count": 1,
        "traffic_percent": 100,
        "started_at": recent.isoformat(),
        "tags": {},
        "rollback_traffic": {"open-v0": 100},
    }
    for number in range(EACH_OPEN * 4):
        promotion = _promotion(number, State.PENDING_APPROVAL, recent, kind="open")
        wanted = [State.PENDING_APPROVAL, State.APPROVED, State.DEPLOYING, State.ROLLING_BACK][number // EACH_OPEN]
        event = LifecycleEvent(f"open-{number}", EventType.APPROVAL_REQUESTED, SOURCE, promotion.model, recent, {})
        events = [event] if number < 2 * EACH_OPEN else []
        stored = store.add(promotion, events)
        path = [State.APPROVED, State.DEPLOYING, State.DEPLOYED, State.ROLLING_BACK]
        for state in path[: path.index(wanted) + 1] if wanted is not State.PENDING_APPROVAL else []:
            stored = store.save(stored.move(state, actor="bench", at=recent, deployment=plan, approved_by="carol"))
    for number in range(EACH_OPEN):
        store.save_copy(store.claim_copy(_copy(number, CopyState.COPYING, kind="open")))


# -- bulk history -----------------------------------------------------------------------------------------------


def fill_sqlite(path: Path, count: int) -> None:
    import sqlite3

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    for start in range(0, count, 10_000):
        numbers = range(start, min(count, start + 10_000))
        promotions = [_finished(number) for number in numbers]
        rows = [{**records.promotion_record(p), "revision": 1, "open_model": None} for p in promotions]
        _many(db, "promotions", rows)
        _many(
            db,
            "promotion_history",
            [
                {"promotion_id": p.id, "seq": seq, **records.history_record(entry)}
                for p in promotions
                for seq, entry in enumerate(p.history)
            ],
        )
        copies = [_copy(number, CopyState.COPIED) for number in numbers]
        _many(db, "copies", [{**records.copy_record(copy), "revision": 1} for copy in copies])
        _many(db, "decisions", [_decision_row(_decision(number)) for number in numbers])
        _many(db, "outbox", [records.event_record(_published(number)) for number in numbers])
    db.execute("COMMIT")
    db.close()


def _many(db: Any, table: str, rows: list[dict[str, Any]]) -> None:
    if rows:
        columns = list(rows[0])
        marks = ", ".join(f":{column}" for column in columns)
        db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


def table_entities(number: int) -> Iterator[dict[str, Any]]:
    """The rows the Tables store holds for one finished promotion, copy, decision and published event."""
    promotion = _finished(number)
    yield tables._promotion_entity(promotion)
    for _, entity in tables._history_operations(promotion, start=0):
        yield entity
    yield tables._copy_entity(_copy(number, CopyState.COPIED))
    decision = _decision(number)
    yield tables._decision_entity(decision)
    yield tables._by_time(decision)
    yield tables._published_entity(_published(number))


def fill_tables(store: TablePromotionStore, count: int) -> None:
    table = store._table()

    def send(batch: list[tuple[str, dict[str, Any]]]) -> None:
        from azure.core.exceptions import ServiceResponseError

        for attempt in range(5):
            try:
                table.submit_transaction(batch)
                return
            except ServiceResponseError:  # Azurite drops a kept-alive connection now and then; upserts are idempotent
                if attempt == 4:
                    raise

    def submit(numbers: range) -> None:
        batch: list[tuple[str, dict[str, Any]]] = []
        for number in numbers:
            for entity in table_entities(number):
                batch.append(("create", entity))
                if len(batch) == 100:
                    send(batch)
                    batch = []
        if batch:
            send(batch)

    chunk = 500
    with ThreadPoolExecutor(FILL_THREADS) as pool:
        list(pool.map(submit, [range(start, min(count, start + chunk)) for start in range(0, count, chunk)]))


# -- the timers -------------------------------------------------------------------------------------------------


def timers(store: Any) -> dict[str, Callable[[], Any]]:
    deployment = {
        "store": store,
        "registry": StillCopying(),
        "deployer": StillDeploying(),
        "rules": RULES,
        "registry_model_uri": lambda ref: f"azureml://registries/r/models/{ref.name}/versions/{ref.version}",
        "source": SOURCE,
        "clock": clock,
    }

    def publish_lifecycle_events() -> None:  # what the trigger does, with a topic that is down
        service.purge_published(store, retention=timedelta(days=30), clock=clock)
        service.purge_decisions(store, retention=timedelta(days=7), clock=clock)
        service.publish_pending(store, TopicDown(), clock=clock)

    return {
        "advance_registry_copies": lambda: service.advance_registry_copies(
            registry=StillCopying(), store=store, source=SOURCE, clock=clock
        ),
        "advance_deployments": lambda: service.advance_deployments(**deployment),
        "publish_lifecycle_events": publish_lifecycle_events,
        "expiry pass (expire_stale_requests)": lambda: service.expire_stale_requests(
            rules=RULES, store=store, source=SOURCE, clock=clock
        ),
    }


@dataclass
class Figure:
    requests: int
    rows: int
    milliseconds: float


def measure(store: Any) -> dict[str, Figure]:
    figures = {}
    for name, run in timers(store).items():
        run()  # warm-up: the connection, the schema check, the table's migration marker
        costs, times = set(), []
        for _ in range(RUNS):
            before = store.reads.snapshot()
            started = time.perf_counter()
            run()
            times.append((time.perf_counter() - started) * 1000)
            after = store.reads.snapshot()
            costs.add((after[0] - before[0], after[1] - before[1]))
        assert len(costs) == 1, f"{name}: runs read differently: {costs}"  # the work is the same at every run
        ((requests, rows),) = costs
        figures[name] = Figure(requests, rows, statistics.median(times))
    return figures


@contextmanager
def sqlite_store(count: int) -> Iterator[tuple[Any, float]]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "p.sqlite3"
        store = SqlitePromotionStore(path)
        store.copies_in_flight()  # the schema
        started = time.perf_counter()
        fill_sqlite(path, count)
        filled = time.perf_counter() - started
        add_open_work(store)
        yield store, filled


@contextmanager
def table_store(connection: str, count: int) -> Iterator[tuple[Any, float]]:
    name = f"bench{uuid.uuid4().hex[:12]}"
    store = TablePromotionStore(connection, table_name=name)
    store.copies_in_flight()  # creates the table (and its migration marker) before the history goes in
    started = time.perf_counter()
    fill_tables(store, count)
    filled = time.perf_counter() - started
    add_open_work(store)
    try:
        yield store, filled
    finally:
        store._service.delete_table(name)  # the in-memory Azurite gives the memory back


# -- Azurite ----------------------------------------------------------------------------------------------------

# Azurite's well-known development account key (public, documented by Microsoft).
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def azurite() -> Iterator[tuple[str, str]]:
    """A private in-memory Azurite on free ports, so that a million entities never burden the one the tests and
    a developer share; the connection string and how it was found."""
    import os
    import shutil
    import signal
    import socket
    import subprocess

    npx = shutil.which("npx")
    if npx is None:
        yield "UseDevelopmentStorage=true", "the Azurite listening on 127.0.0.1:10002 (npx is not installed)"
        return
    blob, queue, table = _free_port(), _free_port(), _free_port()
    command = [npx, "--yes", "azurite@3", "--silent", "--inMemoryPersistence", "--skipApiVersionCheck"]
    command += ["--disableTelemetry", "--blobPort", str(blob), "--queuePort", str(queue), "--tablePort", str(table)]
    with tempfile.TemporaryDirectory() as folder:
        process = subprocess.Popen(
            command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", table)) == 0:
                        break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the benchmark's Azurite did not start")
                time.sleep(0.2)
            connection = (
                f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};"
                f"TableEndpoint=http://127.0.0.1:{table}/devstoreaccount1"
            )
            yield connection, f"a private in-memory Azurite 3 on 127.0.0.1:{table}, started by the benchmark"
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
