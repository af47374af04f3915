"""PromotionStore on Azure Table Storage (the Function app's own storage account, or Azurite locally).

Everything lives in one partition, so that every change is a single entity-group transaction (atomic, same
partition only) together with the lifecycle events that report it:

    PartitionKey "promotions"
      RowKey "p|{id}"                       the promotion; its ETag is the revision
      RowKey "p|{id}|{seq:06d}"             one history entry each, insert-only
      RowKey "open|{name}:{ver}"            lock held by the one open promotion of a model version
      RowKey "c|{name}:{ver}"               the latest registry copy attempt of a model version
      RowKey "d|{name}:{ver}|{cause}"       one decision per cause ("d||{cause}" when the event named no model)
      RowKey "o|{at}|{event id}"            an unpublished lifecycle event (the outbox), oldest first
      RowKey "s|{published at}|{event id}"  a published one, kept for the retention period
      RowKey "f|open|{kind}|{endpoint}|{deployment}"   an open drift finding, one per key
      RowKey "f|done|{resolved at}|{finding key}"       a resolved one
      RowKey "z|{endpoint}|{deployment}"    when the app first saw that deployment at 0% traffic
      RowKey "w|p|{state}|{id}"             open work: a promotion pending approval, approved, deploying or rolling back
      RowKey "w|c|{name}:{ver}"             open work: a copy under way
      RowKey "t|{decided at}|{digest}"      a decision by time, for the retention sweep
      RowKey "meta|open-work"               says the "w|" and "t|" rows are complete (written by the migration)

- add: create promotion + its history + the lock + its events together; a lock that already exists fails the
  whole transaction, so "check for an open promotion, then insert" cannot race.
- save: replace the promotion only if its ETag still matches (If-Match), create the new history rows and
  events, and release/take the lock, all in one transaction: a stale save changes nothing, and stored history
  rows are only ever created, never updated.
- publishing moves an event from "o|" to "s|" (delete and create in one transaction), so the outbox query
  reads only what is unpublished, and the retention sweep reads only what is old.
- the "w|" rows change in the transaction that changes what they index, so the timers read the open work and
  nothing finished; a "w|" row found stale (written by an older version of the app) is dropped when read.
  A table written before these rows existed gets them once, from one full read, the first time a store opens it.
- The partition's target of about 2,000 operations/s is far above what model registrations and a human-paced
  approval flow produce.

Keys may not hold '/', '\\', '#', '?' or control characters and may not exceed 1 KiB: causes (event ids come
from outside) are percent-encoded, and a long one is replaced by its digest; the record keeps the original.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

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

PARTITION = "promotions"
_END = "}"  # the character after "|": "p|{id}|" <= key < "p|{id}}" selects one promotion's rows
_MAX_CAUSE_KEY = 400  # characters of an encoded cause kept in a key; longer ones are stored under a digest
_BATCH = 100  # operations in one entity-group transaction, at most
# Parameters must stand between single spaces: the SDK substitutes whitespace-separated words.
_BETWEEN = "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi"

_MIGRATED = "meta|open-work"
# What a conditional write answers when the row it expects is gone, changed, or there already.
_CONFLICTS = ("EntityAlreadyExists", "UpdateConditionNotSatisfied", "ResourceNotFound")
_ADD_ATTEMPTS = 5  # an add retries only when the open promotion it collided with closed meanwhile
# A storage outage must answer 503 within seconds, not after azure-core's defaults (10 retries, 300-second reads).
CLIENT_OPTIONS: dict[str, Any] = {"retry_total": 2, "connection_timeout": 5, "read_timeout": 20}

# Tables already created by this process, so a store built per request does not re-create them.
_created: set[tuple[str, str]] = set()
_created_lock = threading.Lock()

F = TypeVar("F", bound=Callable[..., Any])


def _available(method: F) -> F:
    """Outages, throttling and timeouts of the storage account become StoreUnavailable (answered 503)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

        try:
            return method(*args, **kwargs)
        except (ServiceRequestError, ServiceResponseError) as error:
            raise StoreUnavailable(f"Table Storage cannot be reached: {type(error).__name__}") from error
        except HttpResponseError as error:
            if error.status_code in (408, 429, 500, 502, 503, 504):
                raise StoreUnavailable(f"Table Storage is unavailable ({error.status_code})") from error
            raise

    return wrapper  # type: ignore[return-value]


class TablePromotionStore:
    """Promotions in Azure Table Storage, reached with a connection string (Azurite, or a key), or with an
    identity (the table endpoint and a token credential: managed identity in Azure, no secret anywhere).

    A malformed connection string raises ValueError here, before any request, so it is reported as a setting.
    """

    def __init__(
        self,
        connection_string: str | None = None,
        *,
        endpoint: str | None = None,
        credential: Any = None,
        table_name: str = "promotions",
        client_options: dict[str, Any] | None = None,
    ):
        from azure.data.tables import TableServiceClient

        if (connection_string is None) == (endpoint is None):
            raise ValueError("give either a connection string or a table endpoint")
        self.reads = records.Reads()
        options = {**CLIENT_OPTIONS, "raw_response_hook": self._count_read, **(client_options or {})}
        if connection_string is not None:
            self._service = TableServiceClient.from_connection_string(connection_string, **options)
        else:
            if credential is None:
                from azure.identity import DefaultAzureCredential

                credential = DefaultAzureCredential()
            self._service = TableServiceClient(endpoint=endpoint, credential=credential, **options)
        self._table_name = table_name
        self._client: Any = None
        self._client_lock = threading.Lock()

    def _count_read(self, response: Any) -> None:
        """Every HTTP request that reads (a GET: a query page or an entity), with the entities it brought back."""
        if response.http_request.method != "GET":
            return
        body = response.http_response.text() if response.http_response.status_code == 200 else ""
        # Each entity of a JSON answer carries one "odata.etag" key; property values cannot hold its bare quotes.
        self.reads.count(1, body.count('"odata.etag"'))

    @property
    def url(self) -> str:
        """The Table service's URL (never a key: a connection string's key is not part of it)."""
        return self._service.url

    # -- promotions

    @_available
    def add(self, promotion: Promotion, events: Sequence[LifecycleEvent] = ()) -> Promotion:
        from azure.data.tables import TableErrorCode, TableTransactionError

        entity = _promotion_entity(promotion)
        operations = [("create", entity), *_history_operations(promotion, start=0), *_event_operations(events)]
        lock = _lock_key(promotion)
        if lock:
            operations.append(("create", _lock_entity(lock, promotion.id)))
        if promotion.state in records.OPEN_WORK_STATES:
            operations.append(("upsert", _work_entity(promotion)))
        for _ in range(_ADD_ATTEMPTS):
            try:
                results = self._table().submit_transaction(operations)
                return replace(promotion, revision=results[0]["etag"])
            except TableTransactionError as error:
                if error.error_code != TableErrorCode.ENTITY_ALREADY_EXISTS:
                    raise
                if error.index == 0:
                    raise ValueError(f"promotion {promotion.id} already exists") from error
                holder = self._lock_holder(lock)
                if holder is not None:
                    raise OpenPromotionExists(holder) from error
                # The holder closed between our attempt and the lookup: the slot is free now, try again.
        raise RuntimeError(f"the open promotion of {promotion.model} kept changing while adding {promotion.id}")

    @_available
    def get(self, promotion_id: str) -> Promotion:
        if not records.is_valid_promotion_id(promotion_id):
            raise PromotionNotFound(promotion_id)  # it could never have been stored
        row = f"p|{promotion_id}"
        found = self._promotions(
            "PartitionKey eq @pk and ( RowKey eq @row or ( RowKey ge @lo and RowKey lt @hi ) )",
            pk=PARTITION,
            row=row,
            lo=row + "|",
            hi=row + _END,
        )
        if not found:
            raise PromotionNotFound(promotion_id)
        return found[0]

    @_available
    def list(self, *, state: State | None = None, model: ModelRef | None = None) -> list[Promotion]:
        # Filtered here rather than in the query: history rows carry no state, and the promotions stay few.
        found = self._promotions(_BETWEEN, pk=PARTITION, lo="p|", hi="p" + _END)
        wanted = [p for p in found if (state is None or p.state == state) and (model is None or p.model == model)]
        return records.newest_first(wanted)

    @_available
    def list_page(
        self, wanted: PromotionFilter = EVERY_PROMOTION, *, page_size: int = 50, continuation: str | None = None
    ) -> Page[Promotion]:
        # The service pages the promotion rows only (history rows have no model_name), in key order, and hands
        # back its own continuation (next PartitionKey and RowKey).
        terms, values = records.page_filter(wanted)
        names = [f"v{index}" for index in range(len(values))]
        query_filter = " and ".join(
            [_BETWEEN, "model_name ne ''"]
            + [term.replace(" = ?", f" eq @{name}") for term, name in zip(terms, names, strict=True)]
        )
        # The service's next keys are opaque (encoded) in Azure: a forged token moves only within this query.
        token = records.decode_continuation(continuation, "PartitionKey", "RowKey") if continuation else None
        pages = (
            self._table()
            .query_entities(
                query_filter,
                parameters={"pk": PARTITION, "lo": "p|", "hi": "p" + _END, **dict(zip(names, values, strict=True))},
                results_per_page=page_size,
            )
            .by_page(continuation_token=token)
        )
        rows = list(next(pages, []))
        following = pages.continuation_token
        found: list[Promotion] = []
        if rows:
            # One range read from the page's first promotion to its last brings their history along.
            first, last = rows[0]["RowKey"], rows[-1]["RowKey"]
            held = {p.id: p for p in self._promotions(_BETWEEN, pk=PARTITION, lo=first, hi=last + _END)}
            found = [held[row["RowKey"][2:]] for row in rows if row["RowKey"][2:] in held]
        return Page(found, records.page_token(following) if following else None)

    def open_promotions(self, states: Iterable[State]) -> list[Promotion]:
        found = []
        for state in records.open_work_states(states):
            prefix = f"w|p|{state.value}|"
            for row in self._between(prefix, prefix[:-1] + _END):
                try:
                    promotion = self.get(row["promotion_id"])
                except PromotionNotFound:
                    promotion = None
                if promotion is None or promotion.state is not state:
                    self._drop_stale(row)
                    continue
                found.append(promotion)
        return sorted(found, key=lambda promotion: (promotion.created_at, promotion.id))

    @_available
    def save(self, promotion: Promotion, events: Sequence[LifecycleEvent] = ()) -> Promotion:
        from azure.data.tables import TableErrorCode, TableTransactionError

        entity = _promotion_entity(promotion)
        stored = self.get(promotion.id)
        if stored.revision != promotion.revision:
            raise StaleRevision(f"promotion {promotion.id} changed since it was read")
        # Entries the store already holds are never touched: only the caller's extra ones are appended.
        held = len(stored.history)
        operations: list[tuple] = [
            _if_unchanged("update", entity, stored.revision),
            *_history_operations(promotion, start=held),
            *_event_operations(events),
        ]
        old_lock, new_lock = _lock_key(stored), _lock_key(promotion)
        if old_lock != new_lock:
            if old_lock:
                operations.append(("delete", {"PartitionKey": PARTITION, "RowKey": old_lock}))
            if new_lock:
                operations.append(("create", _lock_entity(new_lock, promotion.id)))
        optional = []
        if stored.state is not promotion.state:
            if stored.state in records.OPEN_WORK_STATES:
                optional.append(("delete", _work_key(PARTITION, stored)))
            if promotion.state in records.OPEN_WORK_STATES:
                operations.append(("upsert", _work_entity(promotion)))
        try:
            results = self._submit(operations, optional)
        except TableTransactionError as error:
            if error.error_code == TableErrorCode.UPDATE_CONDITION_NOT_SATISFIED:
                raise StaleRevision(f"promotion {promotion.id} changed since it was read") from error
            holder = self._lock_holder(new_lock) if error.error_code == TableErrorCode.ENTITY_ALREADY_EXISTS else None
            if holder is not None:
                raise OpenPromotionExists(holder) from error
            raise
        return replace(promotion, history=stored.history + promotion.history[held:], revision=results[0]["etag"])

    # -- decisions

    @_available
    def record_decision(self, decision: Decision) -> bool:
        from azure.data.tables import TableErrorCode, TableTransactionError

        try:
            self._table().submit_transaction([("create", _decision_entity(decision)), ("upsert", _by_time(decision))])
        except TableTransactionError as error:
            if error.error_code == TableErrorCode.ENTITY_ALREADY_EXISTS:
                return False
            raise
        return True

    @_available
    def decisions(self, model: ModelRef) -> list[Decision]:
        prefix = f"d|{records.model_scope(model)}|"
        entities = self._between(prefix, prefix[:-1] + _END)
        return records.oldest_first([records.decision_from_record(entity) for entity in entities])

    @_available
    def purge_decisions(self, *, before: datetime) -> int:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceNotFoundError

        removed = 0
        operations: list[tuple] = []
        for row in list(self._between("t|", f"t|{records.stamp(before)}")):
            operations.append(("delete", {"PartitionKey": PARTITION, "RowKey": row["RowKey"]}))
            try:
                decision = self._table().get_entity(PARTITION, row["decision"])
            except ResourceNotFoundError:
                continue  # purged already
            if decision["decided_at"] < records.stamp(before):  # not replaced by a later decision of its cause
                condition = {"etag": decision.metadata["etag"], "match_condition": MatchConditions.IfNotModified}
                operations.append(("delete", {"PartitionKey": PARTITION, "RowKey": row["decision"]}, condition))
                removed += 1
        self._delete_all(operations)
        return removed

    # -- registry copies

    @_available
    def copy(self, model: ModelRef) -> RegistryCopy | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return _copy_from_entity(self._table().get_entity(PARTITION, _copy_key(model)))
        except ResourceNotFoundError:
            return None

    @_available
    def copies(self, *, state: CopyState | None = None) -> list[RegistryCopy]:
        found = [_copy_from_entity(entity) for entity in self._between("c|", "c" + _END)]
        wanted = [copy for copy in found if state is None or copy.state is state]
        return sorted(wanted, key=lambda copy: (copy.started_at, copy.model))

    @_available
    def copies_in_flight(self) -> list[RegistryCopy]:
        found = []
        for row in self._between("w|c|", "w|c" + _END):
            copy = self.copy(ModelRef.from_text(row["model"]))
            if copy is None or copy.state not in records.COPIES_IN_FLIGHT:
                self._drop_stale(row)
                continue
            found.append(copy)
        return sorted(found, key=lambda copy: (copy.started_at, copy.model))

    @_available
    def copies_page(self, *, page_size: int, continuation: str | None = None) -> Page[RegistryCopy]:
        rows, token = self._page([("c|", "c" + _END)], page_size, continuation)
        return Page([_copy_from_entity(row) for row in rows], token)

    @_available
    def claim_copy(self, copy: RegistryCopy, *, replacing: RegistryCopy | None = None) -> RegistryCopy:
        from azure.data.tables import TableTransactionError

        entity = _copy_entity(copy)
        claim = ("create", entity) if replacing is None else _if_unchanged("update", entity, replacing.revision)
        try:
            (result, *_) = self._submit([claim, *_copy_work(copy)])
        except TableTransactionError as error:
            if error.error_code not in _CONFLICTS:
                raise
            stored = self.copy(copy.model)
            if stored is None:
                raise StaleRevision(f"the copy of {copy.model} changed while it was claimed") from error
            raise CopyClaimed(stored) from error
        return replace(copy, revision=result["etag"])

    @_available
    def save_copy(
        self, copy: RegistryCopy, *, decision: Decision | None = None, events: Sequence[LifecycleEvent] = ()
    ) -> RegistryCopy:
        from azure.data.tables import TableErrorCode, TableTransactionError, UpdateMode

        operations: list[tuple] = [_if_unchanged("update", _copy_entity(copy), copy.revision), *_copy_work(copy)]
        if decision is not None:
            operations.append(("upsert", _decision_entity(decision), {"mode": UpdateMode.REPLACE}))
            operations.append(("upsert", _by_time(decision)))
        operations.extend(_event_operations(events))
        try:
            results = self._submit(operations, _copy_done(copy))
        except TableTransactionError as error:
            if error.error_code in (TableErrorCode.UPDATE_CONDITION_NOT_SATISFIED, TableErrorCode.RESOURCE_NOT_FOUND):
                raise StaleRevision(f"the copy of {copy.model} changed since it was read") from error
            raise
        return replace(copy, revision=results[0]["etag"])

    @_available
    def release_copy(self, claimed: RegistryCopy, *, previous: RegistryCopy | None) -> None:
        from azure.core import MatchConditions
        from azure.data.tables import TableTransactionError

        if previous is None:
            condition = {"etag": claimed.revision, "match_condition": MatchConditions.IfNotModified}
            operations = [("delete", {"PartitionKey": PARTITION, "RowKey": _copy_key(claimed.model)}, condition)]
            optional = [("delete", _copy_work_key(claimed.model))]
        else:
            operations = [_if_unchanged("update", _copy_entity(previous), claimed.revision), *_copy_work(previous)]
            optional = _copy_done(previous)
        try:
            self._submit(operations, optional)
        except TableTransactionError as error:
            if error.error_code not in _CONFLICTS:
                raise
            # not ours any more

    # -- the outbox of lifecycle events

    @_available
    def unpublished_events(self, *, limit: int) -> list[LifecycleEvent]:
        rows = self._query(_BETWEEN, pk=PARTITION, lo="o|", hi="o" + _END, results_per_page=min(limit, 1000))
        return [records.event_from_record(entity) for entity in itertools.islice(rows, limit)]  # oldest first

    @_available
    def events(self, *, unpublished_only: bool = False) -> list[LifecycleEvent]:
        ranges = [("o|", "o" + _END)] + ([] if unpublished_only else [("s|", "s" + _END)])
        found = [records.event_from_record(entity) for low, high in ranges for entity in self._between(low, high)]
        return records.in_order(found)

    @_available
    def events_page(
        self, *, page_size: int, continuation: str | None = None, unpublished_only: bool = False
    ) -> Page[LifecycleEvent]:
        ranges = [("o|", "o" + _END)] + ([] if unpublished_only else [("s|", "s" + _END)])
        rows, token = self._page(ranges, page_size, continuation)
        return Page([records.event_from_record(row) for row in rows], token)

    @_available
    def mark_published(self, events: Sequence[LifecycleEvent], at: datetime) -> None:
        from azure.data.tables import TableTransactionError

        moves = [
            [
                ("delete", {"PartitionKey": PARTITION, "RowKey": _outbox_key(event)}),
                ("create", _published_entity(replace(event, published_at=at))),
            ]
            for event in events
        ]
        for start in range(0, len(moves), _BATCH // 2):
            batch = moves[start : start + _BATCH // 2]
            try:
                self._table().submit_transaction([operation for move in batch for operation in move])
            except TableTransactionError:
                # Another publisher moved some of them first: move the rest one by one.
                for move in batch:
                    with contextlib.suppress(TableTransactionError):
                        self._table().submit_transaction(move)

    @_available
    def purge_published(self, *, before: datetime) -> int:

        old = list(self._between("s|", f"s|{records.stamp(before)}", select="RowKey"))
        self._delete_all([("delete", {"PartitionKey": PARTITION, "RowKey": entity["RowKey"]}) for entity in old])
        return len(old)

    # -- drift in production: a finding and the event that reports it are one transaction

    @_available
    def drift_findings(self, *, open_only: bool = True) -> list[DriftFinding]:
        ranges = [("f|open|", "f|open" + _END)] + ([] if open_only else [("f|done|", "f|done" + _END)])
        found = [records.drift_from_record(entity) for low, high in ranges for entity in self._between(low, high)]
        return records.findings_in_order(found)

    @_available
    def open_drift(self, finding: DriftFinding, events: Sequence[LifecycleEvent] = ()) -> bool:
        from azure.data.tables import TableErrorCode, TableTransactionError

        entity = {"PartitionKey": PARTITION, "RowKey": _open_finding_key(finding), **records.drift_record(finding)}
        try:
            self._table().submit_transaction([("create", entity), *_event_operations(events)])
        except TableTransactionError as error:
            if error.error_code == TableErrorCode.ENTITY_ALREADY_EXISTS and error.index == 0:
                return False
            raise
        return True

    @_available
    def resolve_drift(self, finding: DriftFinding, events: Sequence[LifecycleEvent] = ()) -> bool:
        from azure.data.tables import TableErrorCode, TableTransactionError

        if finding.resolved_at is None:
            raise ValueError("a resolved finding needs its resolved_at")
        done = f"f|done|{records.stamp(finding.resolved_at)}|{finding.key}"
        operations = [
            ("delete", {"PartitionKey": PARTITION, "RowKey": _open_finding_key(finding)}),
            ("create", {"PartitionKey": PARTITION, "RowKey": done, **records.drift_record(finding)}),
            *_event_operations(events),
        ]
        try:
            self._table().submit_transaction(operations)
        except TableTransactionError as error:
            if error.error_code == TableErrorCode.RESOURCE_NOT_FOUND and error.index == 0:
                return False
            raise
        return True

    @_available
    def zero_traffic_since(self) -> dict[tuple[str, str], datetime]:
        return {
            (entity["endpoint"], entity["deployment"]): records.parse_stamp(entity["since"])
            for entity in self._between("z|", "z" + _END)
        }

    @_available
    def note_zero_traffic(self, endpoint: str, deployment: str, at: datetime) -> datetime:
        from azure.core.exceptions import ResourceExistsError

        row = f"z|{endpoint}|{deployment}"
        entity = {"PartitionKey": PARTITION, "RowKey": row, "endpoint": endpoint, "deployment": deployment}
        try:
            self._table().create_entity({**entity, "since": records.stamp(at)})
            return at
        except ResourceExistsError:
            return records.parse_stamp(self._table().get_entity(PARTITION, row)["since"])

    @_available
    def clear_zero_traffic(self, endpoint: str, deployment: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError):
            self._table().delete_entity(PARTITION, f"z|{endpoint}|{deployment}")

    # -- helpers

    def _query(self, query_filter: str, *, results_per_page: int | None = None, **parameters: str) -> Iterable[Any]:
        options = {} if results_per_page is None else {"results_per_page": results_per_page}
        return self._table().query_entities(query_filter, parameters=parameters, **options)

    def _between(self, low: str, high: str, *, select: str | None = None) -> Iterable[Any]:
        """The rows whose keys run from `low` (included) to `high` (excluded), in key order."""
        options = {} if select is None else {"select": select}
        return self._table().query_entities(_BETWEEN, parameters={"pk": PARTITION, "lo": low, "hi": high}, **options)

    def _page(
        self, ranges: list[tuple[str, str]], page_size: int, continuation: str | None
    ) -> tuple[list[Any], str | None]:
        """Up to `page_size` rows of these key ranges, in key order, after the row a continuation token names;
        one more row is asked for, to know whether a next page exists."""
        records.check_page_size(page_size)
        after = records.page_position(continuation) if continuation else None
        if after is not None and not isinstance(after, str):
            raise InvalidContinuation(records.INVALID_TOKEN)
        found: list[Any] = []
        for low, high in ranges:
            if after is not None and after >= high:
                continue
            want = page_size + 1 - len(found)
            query = "PartitionKey eq @pk and RowKey gt @lo and RowKey lt @hi" if after and after >= low else _BETWEEN
            low = after if after and after >= low else low
            rows = self._query(query, pk=PARTITION, lo=low, hi=high, results_per_page=want)
            found.extend(itertools.islice(rows, want))
            if len(found) > page_size:
                return found[:page_size], records.page_token(found[page_size - 1]["RowKey"])
        return found, None

    def _submit(self, operations: list[tuple], optional: Sequence[tuple] = ()) -> list[Any]:
        """One transaction. `optional` deletes of index rows are dropped when their row is missing (a table written
        by an older version of the app, or a row already dropped as stale), and the transaction is tried again."""
        from azure.core.exceptions import ResourceNotFoundError
        from azure.data.tables import TableErrorCode, TableTransactionError

        try:
            return self._table().submit_transaction([*operations, *optional])
        except TableTransactionError as error:
            if error.error_code != TableErrorCode.RESOURCE_NOT_FOUND or not optional:
                raise
            held = []
            for operation in optional:
                with contextlib.suppress(ResourceNotFoundError):
                    self._table().get_entity(PARTITION, operation[1]["RowKey"], select="RowKey")
                    held.append(operation)
            if len(held) == len(optional):
                raise
            return self._table().submit_transaction([*operations, *held])

    def _delete_all(self, deletes: list[tuple]) -> None:
        """Deletes in transactions of up to 100; when one fails (another sweep deleted a row first, or a row
        changed), its deletes are done one by one, skipping what fails."""
        from azure.data.tables import TableTransactionError

        for start in range(0, len(deletes), _BATCH):
            batch = deletes[start : start + _BATCH]
            try:
                self._table().submit_transaction(batch)
            except TableTransactionError:
                for delete in batch:
                    with contextlib.suppress(TableTransactionError):
                        self._table().submit_transaction([delete])

    def _drop_stale(self, row: Any) -> None:
        """An index row whose item has moved on without it (an older version of the app wrote the move)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        condition = {"etag": row.metadata["etag"], "match_condition": MatchConditions.IfNotModified}
        with contextlib.suppress(ResourceModifiedError, ResourceNotFoundError):
            self._table().delete_entity(PARTITION, row["RowKey"], **condition)

    def _migrate(self, table: Any) -> None:
        """A table written before the open-work and decision-time rows existed gets them, from one full read.

        Runs once per store, before its first request; the marker row makes it a single point read afterwards.
        Every write of this version keeps the rows right, and two stores migrating at once write the same rows.
        """
        from azure.core.exceptions import ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError):
            table.get_entity(PARTITION, _MIGRATED)
            return
        rows: list[tuple] = []
        for entity in table.query_entities(_BETWEEN, parameters={"pk": PARTITION, "lo": "c|", "hi": "t|"}):
            kind, key = entity["RowKey"][:2], entity["RowKey"]
            if kind == "p|" and key.count("|") == 1 and State(entity["state"]) in records.OPEN_WORK_STATES:
                rows.append(("upsert", _work_entity(records.promotion_from_record(entity, (), ""))))
            elif kind == "c|" and CopyState(entity["state"]) in records.COPIES_IN_FLIGHT:
                rows.append(("upsert", _copy_work_entity(ModelRef(entity["model_name"], entity["model_version"]))))
            elif kind == "d|":
                rows.append(("upsert", _by_time(records.decision_from_record(entity))))
        for start in range(0, len(rows), _BATCH):
            table.submit_transaction(rows[start : start + _BATCH])
        table.upsert_entity({"PartitionKey": PARTITION, "RowKey": _MIGRATED, "version": 1})

    def _promotions(self, query_filter: str, **parameters: str) -> list[Promotion]:
        """Promotions with their history, from a query over promotion and history rows."""
        rows: dict[str, Any] = {}
        history: dict[str, list[tuple[int, Any]]] = {}
        for entity in self._query(query_filter, **parameters):
            _, promotion_id, *seq = entity["RowKey"].split("|")
            if seq:
                history.setdefault(promotion_id, []).append((int(seq[0]), records.history_from_record(entity)))
            else:
                rows[promotion_id] = entity
        return [
            records.promotion_from_record(
                entity, tuple(entry for _, entry in sorted(history.get(promotion_id, []))), entity.metadata["etag"]
            )
            for promotion_id, entity in rows.items()
        ]

    def _lock_holder(self, lock: str | None) -> Promotion | None:
        """The open promotion holding `lock`; None if the lock was released meanwhile."""
        from azure.core.exceptions import ResourceNotFoundError

        if not lock:
            return None
        try:
            holder = self.get(self._table().get_entity(PARTITION, lock)["promotion_id"])
        except ResourceNotFoundError:
            return None
        return holder if holder.is_open else None

    def _table(self) -> Any:
        # Built on first use, not at import or construction: Functions cold starts and tests stay fast.
        # Azure SDK clients are thread-safe, so one per store is shared by all threads.
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._connect()
        return self._client

    def _connect(self) -> Any:
        from azure.core.exceptions import ResourceExistsError

        key = (self._service.url, self._table_name)
        with _created_lock:
            if key not in _created:
                with contextlib.suppress(ResourceExistsError):  # another process created it first
                    self._service.create_table(self._table_name)
                _created.add(key)
        table = self._service.get_table_client(self._table_name)
        self._migrate(table)
        return table


def _if_unchanged(operation: str, entity: dict[str, Any], etag: str | None) -> tuple:
    from azure.core import MatchConditions
    from azure.data.tables import UpdateMode

    condition = {"mode": UpdateMode.REPLACE, "etag": etag, "match_condition": MatchConditions.IfNotModified}
    return (operation, entity, condition)


def _promotion_entity(promotion: Promotion) -> dict[str, Any]:
    return {"PartitionKey": PARTITION, "RowKey": f"p|{promotion.id}", **records.promotion_record(promotion)}


def _history_operations(promotion: Promotion, *, start: int) -> Iterable[tuple[str, dict[str, Any]]]:
    for seq, entry in enumerate(promotion.history[start:], start=start):
        row = f"p|{promotion.id}|{seq:06d}"
        yield "create", {"PartitionKey": PARTITION, "RowKey": row, **records.history_record(entry)}


def _lock_key(promotion: Promotion) -> str | None:
    model = records.open_model(promotion)
    return f"open|{model}" if model else None


def _lock_entity(lock: str, promotion_id: str) -> dict[str, Any]:
    return {"PartitionKey": PARTITION, "RowKey": lock, "promotion_id": promotion_id}


def _work_key(partition: str, promotion: Promotion) -> dict[str, Any]:
    return {"PartitionKey": partition, "RowKey": f"w|p|{promotion.state.value}|{promotion.id}"}


def _work_entity(promotion: Promotion) -> dict[str, Any]:
    return {**_work_key(PARTITION, promotion), "promotion_id": promotion.id}


def _copy_work_key(model: ModelRef) -> dict[str, Any]:
    return {"PartitionKey": PARTITION, "RowKey": f"w|c|{model}"}


def _copy_work_entity(model: ModelRef) -> dict[str, Any]:
    return {**_copy_work_key(model), "model": str(model)}


def _copy_work(copy: RegistryCopy) -> list[tuple]:
    """The index row a copy under way needs, in the transaction that writes it."""
    return [("upsert", _copy_work_entity(copy.model))] if copy.state in records.COPIES_IN_FLIGHT else []


def _copy_done(copy: RegistryCopy) -> list[tuple]:
    """The index row a finished copy no longer needs."""
    return [] if copy.state in records.COPIES_IN_FLIGHT else [("delete", _copy_work_key(copy.model))]


def _by_time(decision: Decision) -> dict[str, Any]:
    """The row that finds a decision by its time, for the retention sweep (keys of any length: a digest)."""
    row = _decision_entity(decision)["RowKey"]
    digest = hashlib.sha256(row.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return {"PartitionKey": PARTITION, "RowKey": f"t|{records.stamp(decision.decided_at)}|{digest}", "decision": row}


def _cause_key(cause: str) -> str:
    encoded = quote(cause, safe="")
    if len(encoded) <= _MAX_CAUSE_KEY:
        return encoded
    return "~sha256~" + hashlib.sha256(cause.encode("utf-8", "surrogatepass")).hexdigest()


def _decision_entity(decision: Decision) -> dict[str, Any]:
    row = f"d|{records.model_scope(decision.model)}|{_cause_key(decision.event_id)}"
    return {"PartitionKey": PARTITION, "RowKey": row, **records.decision_record(decision)}


def _copy_key(model: ModelRef) -> str:
    return f"c|{model}"


def _copy_entity(copy: RegistryCopy) -> dict[str, Any]:
    return {"PartitionKey": PARTITION, "RowKey": _copy_key(copy.model), **records.copy_record(copy)}


def _copy_from_entity(entity: Any) -> RegistryCopy:
    return records.copy_from_record(entity, entity.metadata["etag"])


def _open_finding_key(finding: DriftFinding) -> str:
    return f"f|open|{finding.key}"


def _outbox_key(event: LifecycleEvent) -> str:
    return f"o|{records.stamp(event.at)}|{event.id}"


def _event_operations(events: Sequence[LifecycleEvent]) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("create", {"PartitionKey": PARTITION, "RowKey": _outbox_key(event), **records.event_record(event)})
        for event in events
    ]


def _published_entity(event: LifecycleEvent) -> dict[str, Any]:
    assert event.published_at is not None
    row = f"s|{records.stamp(event.published_at)}|{event.id}"
    return {"PartitionKey": PARTITION, "RowKey": row, **records.event_record(event)}
