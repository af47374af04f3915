"""Promotions, decisions, registry copies and lifecycle events as flat records of strings and None, shared by
the SQLite and Tables stores.

Both stores keep exactly these columns/properties, so the two adapters cannot drift apart. Mappings are
JSON strings (Tables has no nested values), and datetimes are fixed-width UTC strings: they round-trip
microseconds exactly and sort correctly as text, which `domain.isoformat` does not guarantee (it drops
".000000" when the microseconds are zero).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

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
    Outcome,
    Promotion,
    RegistryCopy,
    State,
)
from promotion.ports import ValueTooLarge

Record = dict[str, Any]

# Table Storage's limit for one string property: 64 KiB, that is 32 K UTF-16 code units. SQLite has none, but
# both stores refuse the same values (ValueTooLarge) so they cannot drift apart.
MAX_PROPERTY_UNITS = 32 * 1024


def _fitting(build: Callable[[Any], Record]) -> Callable[[Any], Record]:
    """A record builder whose records are refused (ValueTooLarge, naming the field) when a string property
    is larger than a Table property holds."""

    def built(value: Any) -> Record:
        record = build(value)
        for key, field in record.items():
            if isinstance(field, str) and len(field) > MAX_PROPERTY_UNITS // 2:
                units = len(field.encode("utf-16-le", "surrogatepass")) // 2
                if units > MAX_PROPERTY_UNITS:
                    raise ValueTooLarge(
                        f"{key} is {units} UTF-16 code units long; a store keeps at most {MAX_PROPERTY_UNITS}"
                    )
        return record

    built.__doc__ = build.__doc__
    return built


# The work the timers take further: promotions waiting for a decision (expiry), approved, deploying or rolling back,
# and copies under way. Both stores index exactly these, so a timer reads them and nothing finished. A copy state
# added later counts as under way unless it is one of the two ends.
OPEN_WORK_STATES = frozenset({State.PENDING_APPROVAL, State.APPROVED, State.DEPLOYING, State.ROLLING_BACK})
COPIES_IN_FLIGHT = frozenset(CopyState) - {CopyState.COPIED, CopyState.COPY_FAILED}


def open_work_states(states: Iterable[State]) -> list[State]:
    wanted = sorted(set(states), key=lambda state: state.value)
    closed = [state.value for state in wanted if state not in OPEN_WORK_STATES]
    if closed:
        raise ValueError(f"not open work, so not indexed: {', '.join(closed)}")
    return wanted


class Reads:
    """What a store read from its storage: requests (SQL statements, HTTP requests) and the rows or entities that
    came back. The benchmark and the tests take differences of these to see what one timer run costs."""

    def __init__(self) -> None:
        self.requests = 0
        self.rows = 0
        self._lock = threading.Lock()

    def count(self, requests: int = 1, rows: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.rows += rows

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.requests, self.rows


MAX_TOKEN_LENGTH = 2048
INVALID_TOKEN = "invalid continuation token: pass the one the previous page printed"


def page_token(position: Any) -> str:
    """An opaque continuation token for a position in a listing (each store knows its own positions)."""
    return base64.urlsafe_b64encode(json.dumps(position, sort_keys=True).encode()).decode().rstrip("=")


def page_position(token: str, refusal: str = INVALID_TOKEN) -> Any:
    """The position a token from `page_token` holds; InvalidContinuation (a ValueError) with `refusal` otherwise."""
    from promotion.ports import InvalidContinuation

    try:
        if len(token) > MAX_TOKEN_LENGTH:
            raise ValueError(token)
        return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidContinuation(refusal) from None


def check_page_size(page_size: int) -> int:
    if not isinstance(page_size, int) or not 1 <= page_size <= 1000:
        raise ValueError("the page size must be a whole number from 1 to 1000")
    return page_size


# Promotion ids become Table keys, so they must avoid what keys forbid ('/', '\', '#', '?', control
# characters); '|' is the stores' key separator. Both stores apply the same rule so they accept the same ids.
_PROMOTION_ID = re.compile(r"[^/\\#?|\x00-\x1f\x7f-\x9f]{1,200}")


def is_valid_promotion_id(promotion_id: object) -> bool:
    return isinstance(promotion_id, str) and _PROMOTION_ID.fullmatch(promotion_id) is not None


def check_promotion_id(promotion_id: str) -> str:
    if not is_valid_promotion_id(promotion_id):
        raise ValueError(f"invalid promotion id {promotion_id!r}: 1-200 characters, none of / \\ # ? | or control")
    return promotion_id


def page_filter(wanted: Any) -> tuple[list[str], list[str]]:
    """The conditions of a PromotionFilter, as `column = ?` terms and their values (both stores' columns)."""
    state = wanted.state.value if wanted.state else None
    terms = {"state": state, "model_name": wanted.model_name, "model_version": wanted.model_version}
    wanted = {column: value for column, value in terms.items() if value is not None}
    return [f"{column} = ?" for column in wanted], list(wanted.values())


def decode_continuation(token: str, *fields: str) -> Any:
    """The position a promotions page token holds (the value of one field, or a dict of several)."""
    from promotion.ports import InvalidContinuation

    refusal = "continuation: not a token this listing gave out"
    position = page_position(token, refusal)
    try:
        values = {name: position[name] for name in fields}
        if not all(isinstance(value, str) for value in values.values()):
            raise ValueError(token)
    except (ValueError, KeyError, TypeError):
        raise InvalidContinuation(refusal) from None
    return values[fields[0]] if len(fields) == 1 else values


def stamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        # A naive datetime would silently be taken as the machine's local time.
        raise ValueError(f"naive datetime {moment!r}: promotions store timezone-aware datetimes only")
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_stamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def model_scope(model: ModelRef | None) -> str:
    """The key that groups a model version's decisions; "" for events too malformed to name a model."""
    return str(model) if model else ""


def open_model(promotion: Promotion) -> str | None:
    """The model version an open promotion holds (at most one open promotion each); None once closed."""
    return str(promotion.model) if promotion.is_open else None


@_fitting
def promotion_record(promotion: Promotion) -> Record:
    """Every field but history (stored as separate, insert-only entries) and revision (the store's own)."""
    return {
        "id": check_promotion_id(promotion.id),
        "model_name": promotion.model.name,
        "model_version": promotion.model.version,
        "state": promotion.state.value,
        "requested_by": promotion.requested_by,
        "created_at": stamp(promotion.created_at),
        "updated_at": stamp(promotion.updated_at),
        "reason": promotion.reason,
        "approved_by": promotion.approved_by,
        "rejected_by": promotion.rejected_by,
        "deployment": json.dumps(dict(promotion.deployment)),
        "error": promotion.error,
    }


def promotion_from_record(record: Mapping[str, Any], history: tuple[HistoryEntry, ...], revision: str) -> Promotion:
    return Promotion(
        id=record["id"],
        model=ModelRef(record["model_name"], record["model_version"]),
        state=State(record["state"]),
        requested_by=record["requested_by"],
        created_at=parse_stamp(record["created_at"]),
        updated_at=parse_stamp(record["updated_at"]),
        reason=record.get("reason"),
        approved_by=record.get("approved_by"),
        rejected_by=record.get("rejected_by"),
        deployment=json.loads(record["deployment"]),
        error=record.get("error"),
        history=history,
        revision=revision,
    )


@_fitting
def history_record(entry: HistoryEntry) -> Record:
    detail = json.dumps(dict(entry.detail))
    return {"at": stamp(entry.at), "actor": entry.actor, "action": entry.action, "detail": detail}


def history_from_record(record: Mapping[str, Any]) -> HistoryEntry:
    detail = json.loads(record["detail"])
    return HistoryEntry(at=parse_stamp(record["at"]), actor=record["actor"], action=record["action"], detail=detail)


@_fitting
def decision_record(decision: Decision) -> Record:
    return {
        "event_id": decision.event_id,
        "model_name": decision.model.name if decision.model else None,
        "model_version": decision.model.version if decision.model else None,
        "outcome": decision.outcome.value,
        "reasons": json.dumps(list(decision.reasons)),
        "policy_digest": decision.policy_digest,
        "decided_at": stamp(decision.decided_at),
    }


def decision_from_record(record: Mapping[str, Any]) -> Decision:
    name, version = record.get("model_name"), record.get("model_version")
    return Decision(
        event_id=record["event_id"],
        model=ModelRef(name, version) if name is not None else None,
        outcome=Outcome(record["outcome"]),
        reasons=tuple(json.loads(record["reasons"])),
        policy_digest=record.get("policy_digest"),
        decided_at=parse_stamp(record["decided_at"]),
    )


def oldest_first(decisions: list[Decision]) -> list[Decision]:
    # Event id breaks ties so both stores order equal timestamps the same way.
    return sorted(decisions, key=lambda d: (d.decided_at, d.event_id))


def newest_first(promotions: list[Promotion]) -> list[Promotion]:
    return sorted(promotions, key=lambda p: (p.created_at, p.id), reverse=True)


@_fitting
def copy_record(copy: RegistryCopy) -> Record:
    """Every field but revision (the store's own)."""
    return {
        "model_name": copy.model.name,
        "model_version": copy.model.version,
        "attempt": copy.attempt,
        "state": copy.state.value,
        "model_type": copy.model_type,
        "lineage": json.dumps(copy.lineage.as_tags()),
        "tags": json.dumps(dict(copy.tags)),
        "description": copy.description,
        "started_at": stamp(copy.started_at),
        "updated_at": stamp(copy.updated_at),
        "operation": copy.operation,
        "error": copy.error,
    }


def copy_from_record(record: Mapping[str, Any], revision: str) -> RegistryCopy:
    return RegistryCopy(
        model=ModelRef(record["model_name"], record["model_version"]),
        attempt=record["attempt"],
        state=CopyState(record["state"]),
        model_type=record["model_type"],
        lineage=Lineage.from_tags(json.loads(record["lineage"])),
        tags=json.loads(record["tags"]),
        description=record.get("description"),
        started_at=parse_stamp(record["started_at"]),
        updated_at=parse_stamp(record["updated_at"]),
        operation=record.get("operation"),
        error=record.get("error"),
        revision=revision,
    )


@_fitting
def event_record(event: LifecycleEvent) -> Record:
    return {
        "id": event.id,
        "type": event.type.value,
        "source": event.source,
        # "" for a drift event that names no model (the columns stay NOT NULL for the events written before)
        "model_name": event.model.name if event.model else "",
        "model_version": event.model.version if event.model else "",
        "at": stamp(event.at),
        "data": json.dumps(dict(event.data)),
        "published_at": stamp(event.published_at) if event.published_at else None,
    }


def event_from_record(record: Mapping[str, Any]) -> LifecycleEvent:
    published = record.get("published_at")
    return LifecycleEvent(
        id=record["id"],
        type=EventType(record["type"]),
        source=record["source"],
        model=ModelRef(record["model_name"], record["model_version"]) if record["model_name"] else None,
        at=parse_stamp(record["at"]),
        data=json.loads(record["data"]),
        published_at=parse_stamp(published) if published else None,
    )


def in_order(events: list[LifecycleEvent]) -> list[LifecycleEvent]:
    # The id breaks ties so both stores order equal timestamps the same way.
    return sorted(events, key=lambda e: (e.at, e.id))


def drift_record(finding: DriftFinding) -> Record:
    return {
        "key": finding.key,
        "kind": finding.kind.value,
        "endpoint": finding.endpoint,
        "deployment": finding.deployment,
        "expected": json.dumps(dict(finding.expected)),
        "actual": json.dumps(dict(finding.actual)),
        "promotion_id": finding.promotion_id,
        "model_name": finding.model.name if finding.model else None,
        "model_version": finding.model.version if finding.model else None,
        "detected_at": stamp(finding.detected_at),
        "resolved_at": stamp(finding.resolved_at) if finding.resolved_at else None,
    }


def drift_from_record(record: Mapping[str, Any]) -> DriftFinding:
    name, resolved = record.get("model_name"), record.get("resolved_at")
    return DriftFinding(
        kind=DriftKind(record["kind"]),
        endpoint=record["endpoint"],
        deployment=record["deployment"],
        expected=json.loads(record["expected"]),
        actual=json.loads(record["actual"]),
        detected_at=parse_stamp(record["detected_at"]),
        promotion_id=record.get("promotion_id"),
        model=ModelRef(name, record["model_version"]) if name else None,
        resolved_at=parse_stamp(resolved) if resolved else None,
    )


def findings_in_order(findings: list[DriftFinding]) -> list[DriftFinding]:
    # The key breaks ties so both stores order equal timestamps the same way.
    return sorted(findings, key=lambda f: (f.detected_at, f.key))
