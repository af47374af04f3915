"""PromotionStore on Azure Table Storage (the Function app's own storage account, or Azurite locally).

Layout, chosen so that every write is a single entity-group transaction (atomic, same partition only):

    PartitionKey "promotions"
      RowKey "p|{id}"              the promotion; its ETag is the revision
      RowKey "p|{id}|{seq:06d}"    one history entry each, insert-only
      RowKey "open|{name}:{ver}"   lock held by the one open promotion of a model version
    PartitionKey "decisions|{name}:{ver}"  ("decisions|" when the event named no model)
      RowKey = event id, percent-encoded (event ids may hold characters keys forbid)

- add: create promotion + its history + the lock together; a lock that already exists fails the whole
  transaction, so "check for an open promotion, then insert" cannot race.
- save: replace the promotion only if its ETag still matches (If-Match), create the new history rows
  and release/take the lock, all in one transaction: a stale save changes nothing, and stored history
  rows are only ever created, never updated.
- A promotion's rows sort next to each other, so get is one query; one partition holds them all, which
  is far below its ~2,000 operations/s target for a human-paced approval flow.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from dataclasses import replace
from typing import Any
from urllib.parse import quote

from promotion.adapters import records
from promotion.domain import Decision, ModelRef, Promotion, State
from promotion.ports import OpenPromotionExists, PromotionNotFound, StaleRevision

PARTITION = "promotions"
_END = "}"  # the character after the "|" separator: "p|{id}|" <= key < "p|{id}}" selects one promotion's rows

_ADD_ATTEMPTS = 5  # an add retries only when the open promotion it collided with closed meanwhile

# Tables already created by this process, so a store built per request does not re-create them.
_created: set[tuple[str, str]] = set()
_created_lock = threading.Lock()


class TablePromotionStore:
    """Promotions in Azure Table Storage, reached with a connection string (Azurite, or a key), or with an
    identity (the table endpoint and a token credential: managed identity in Azure, no secret anywhere)."""

    def __init__(
        self,
        connection_string: str | None = None,
        *,
        endpoint: str | None = None,
        credential: Any = None,
        table_name: str = "promotions",
    ):
        if (connection_string is None) == (endpoint is None):
            raise ValueError("give either a connection string or a table endpoint")
        self._connection_string = connection_string
        self._endpoint = endpoint
        self._credential = credential
        self._table_name = table_name
        self._client: Any = None
        self._client_lock = threading.Lock()

    def add(self, promotion: Promotion) -> Promotion:
        from azure.data.tables import TableErrorCode, TableTransactionError

        entity = _promotion_entity(promotion)
        operations = [("create", entity), *_history_operations(promotion, start=0)]
        lock = _lock_key(promotion)
        if lock:
            operations.append(("create", _lock_entity(lock, promotion.id)))
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

    def get(self, promotion_id: str) -> Promotion:
        if not records.is_valid_promotion_id(promotion_id):
            raise PromotionNotFound(promotion_id)  # it could never have been stored
        row = f"p|{promotion_id}"
        found = self._query(
            # Parameters must stand between single spaces: the SDK substitutes whitespace-separated words.
            "PartitionKey eq @pk and ( RowKey eq @row or ( RowKey ge @lo and RowKey lt @hi ) )",
            pk=PARTITION,
            row=row,
            lo=row + "|",
            hi=row + _END,
        )
        if not found:
            raise PromotionNotFound(promotion_id)
        return found[0]

    def list(self, *, state: State | None = None, model: ModelRef | None = None) -> list[Promotion]:
        # Filtered here rather than in the query: history rows carry no state, and the partition stays small.
        every_row = "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi"
        found = self._query(every_row, pk=PARTITION, lo="p|", hi="p" + _END)
        wanted = [p for p in found if (state is None or p.state == state) and (model is None or p.model == model)]
        return records.newest_first(wanted)

    def save(self, promotion: Promotion) -> Promotion:
        from azure.core import MatchConditions
        from azure.data.tables import TableErrorCode, TableTransactionError, UpdateMode

        entity = _promotion_entity(promotion)
        stored = self.get(promotion.id)
        if stored.revision != promotion.revision:
            raise StaleRevision(f"promotion {promotion.id} changed since it was read")
        # Entries the store already holds are never touched: only the caller's extra ones are appended.
        held = len(stored.history)
        update = {"mode": UpdateMode.REPLACE, "etag": stored.revision, "match_condition": MatchConditions.IfNotModified}
        operations: list[tuple] = [("update", entity, update), *_history_operations(promotion, start=held)]
        old_lock, new_lock = _lock_key(stored), _lock_key(promotion)
        if old_lock != new_lock:
            if old_lock:
                operations.append(("delete", {"PartitionKey": PARTITION, "RowKey": old_lock}))
            if new_lock:
                operations.append(("create", _lock_entity(new_lock, promotion.id)))
        try:
            results = self._table().submit_transaction(operations)
        except TableTransactionError as error:
            if error.error_code == TableErrorCode.UPDATE_CONDITION_NOT_SATISFIED:
                raise StaleRevision(f"promotion {promotion.id} changed since it was read") from error
            holder = self._lock_holder(new_lock) if error.error_code == TableErrorCode.ENTITY_ALREADY_EXISTS else None
            if holder is not None:
                raise OpenPromotionExists(holder) from error
            raise
        return replace(promotion, history=stored.history + promotion.history[held:], revision=results[0]["etag"])

    def record_decision(self, decision: Decision) -> bool:
        from azure.core.exceptions import ResourceExistsError

        entity = {
            "PartitionKey": _decision_partition(decision.model),
            "RowKey": quote(decision.event_id, safe=""),
            **records.decision_record(decision),
        }
        try:
            self._table().create_entity(entity)
        except ResourceExistsError:
            return False
        return True

    def decisions(self, model: ModelRef) -> list[Decision]:
        entities = self._table().query_entities("PartitionKey eq @pk", parameters={"pk": _decision_partition(model)})
        return records.oldest_first([records.decision_from_record(entity) for entity in entities])

    # -- helpers ----------------------------------------------------------------------------------------

    def _query(self, query_filter: str, **parameters: str) -> list[Promotion]:
        """Promotions with their history, from a query over promotion and history rows."""
        rows: dict[str, Any] = {}
        history: dict[str, list[tuple[int, Any]]] = {}
        for entity in self._table().query_entities(query_filter, parameters=parameters):
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
        from azure.data.tables import TableServiceClient

        if self._connection_string is not None:
            service = TableServiceClient.from_connection_string(self._connection_string)
        else:
            from azure.identity import DefaultAzureCredential

            service = TableServiceClient(
                endpoint=self._endpoint, credential=self._credential or DefaultAzureCredential()
            )
        key = (self._connection_string or self._endpoint or "", self._table_name)
        with _created_lock:
            if key not in _created:
                with contextlib.suppress(ResourceExistsError):  # another process created it first
                    service.create_table(self._table_name)
                _created.add(key)
        return service.get_table_client(self._table_name)


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


def _decision_partition(model: ModelRef | None) -> str:
    return f"decisions|{records.model_scope(model)}"
