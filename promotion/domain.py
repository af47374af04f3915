"""Plain values of the promotion domain: models, verdicts, decisions and promotions.

Nothing here does I/O or imports an Azure SDK; adapters translate to and from these values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from enum import Enum
from typing import Any

# Azure ML asset names: letters, digits, '-', '_', '.', starting with a letter or digit, at most 255.
_ASSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
# Versions are free-form strings in Azure ML v2, but they end up in URLs and folder names,
# so they follow the same alphabet.
_ASSET_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

MODEL_TYPES = ("mlflow_model", "custom_model", "triton_model")


class InvalidName(ValueError):
    """A model name or version that Azure ML would refuse."""


def validate_model_name(name: object) -> str:
    if not isinstance(name, str) or not _ASSET_NAME.fullmatch(name):
        raise InvalidName(
            f"invalid model name {name!r}: use letters, digits, '-', '_' or '.', "
            "start with a letter or digit, at most 255 characters"
        )
    return name


def validate_model_version(version: object) -> str:
    if isinstance(version, bool) or not isinstance(version, (str, int)):
        raise InvalidName(f"invalid model version {version!r}: expected a string or an integer")
    text = str(version)
    if not _ASSET_VERSION.fullmatch(text) or text in {".", ".."}:
        raise InvalidName(
            f"invalid model version {text!r}: use letters, digits, '-', '_' or '.', "
            "start with a letter or digit, at most 128 characters"
        )
    return text


@dataclass(frozen=True, order=True)
class ModelRef:
    """A model version by name; validated so it is safe in URLs and paths."""

    name: str
    version: str

    def __post_init__(self) -> None:
        validate_model_name(self.name)
        validate_model_version(self.version)

    @classmethod
    def parse(cls, name: object, version: object) -> ModelRef:
        """From untrusted input; the version may arrive as a number (Event Grid's sample sends 20)."""
        return cls(validate_model_name(name), validate_model_version(version))

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class ModelVersion:
    """What Azure ML knows about one registered model version."""

    ref: ModelRef
    type: str = "custom_model"
    tags: Mapping[str, str] = field(default_factory=dict)
    properties: Mapping[str, str] = field(default_factory=dict)
    description: str | None = None
    # Where the artifacts live: a folder for the local backend, an azureml:// URI in Azure.
    path: str | None = None

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def version(self) -> str:
        return self.ref.version

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "type": self.type,
            "tags": dict(self.tags),
            "properties": dict(self.properties),
            "description": self.description,
            "path": self.path,
        }


# Lineage tags set on every registry copy. Prefixed so they never collide with the team's own tags.
LINEAGE_SOURCE_WORKSPACE = "promotion.source_workspace"
LINEAGE_SOURCE_MODEL = "promotion.source_model"
LINEAGE_EVENT_ID = "promotion.event_id"
LINEAGE_POLICY_DIGEST = "promotion.policy_digest"
# Set on production deployments: which model version a deployment serves, and for which promotion.
DEPLOYMENT_MODEL_TAG = "promotion.model"
DEPLOYMENT_PROMOTION_TAG = "promotion.id"
DEPLOYMENT_APPROVER_TAG = "promotion.approved_by"


@dataclass(frozen=True)
class Lineage:
    source_workspace: str
    source_model: ModelRef
    event_id: str
    policy_digest: str

    @staticmethod
    def is_tagged(tags: Mapping[str, str]) -> bool:
        return LINEAGE_SOURCE_WORKSPACE in tags

    def as_tags(self) -> dict[str, str]:
        return {
            LINEAGE_SOURCE_WORKSPACE: self.source_workspace,
            LINEAGE_SOURCE_MODEL: str(self.source_model),
            LINEAGE_EVENT_ID: self.event_id,
            LINEAGE_POLICY_DIGEST: self.policy_digest,
        }


@dataclass(frozen=True)
class Verdict:
    """The policy's answer for one model: every failed rule, not just the first."""

    failed_rules: tuple[str, ...]
    policy_digest: str

    @property
    def qualifies(self) -> bool:
        return not self.failed_rules


class Outcome(str, Enum):
    """What on_model_registered did with one event."""

    COPIED = "copied"
    ALREADY_IN_REGISTRY = "already_in_registry"
    NOT_QUALIFIED = "not_qualified"
    NOT_IN_STAGING = "not_in_staging"
    REGISTRY_CONFLICT = "registry_conflict"  # the registry holds that name:version, but not from us
    REFUSED_SOURCE = "refused_source"
    IGNORED_EVENT_TYPE = "ignored_event_type"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class Decision:
    """The recorded result of handling one ModelRegistered event."""

    event_id: str
    model: ModelRef | None
    outcome: Outcome
    reasons: tuple[str, ...] = ()
    policy_digest: str | None = None
    decided_at: datetime = field(default_factory=lambda: now())

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "model_name": self.model.name if self.model else None,
            "model_version": self.model.version if self.model else None,
            "outcome": self.outcome.value,
            "reasons": list(self.reasons),
            "policy_digest": self.policy_digest,
            "decided_at": isoformat(self.decided_at),
        }


class State(str, Enum):
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    DEPLOYING = "deploying"
    DEPLOYED = "deployed"
    FAILED = "failed"


# The only moves a promotion can make. approved -> failed covers a job that never started (poison queue).
TRANSITIONS: Mapping[State, frozenset[State]] = {
    State.PENDING_APPROVAL: frozenset({State.APPROVED, State.REJECTED}),
    State.APPROVED: frozenset({State.DEPLOYING, State.FAILED}),
    State.DEPLOYING: frozenset({State.DEPLOYED, State.FAILED}),
    State.REJECTED: frozenset(),
    State.DEPLOYED: frozenset(),
    State.FAILED: frozenset(),
}
OPEN_STATES = frozenset({State.PENDING_APPROVAL, State.APPROVED, State.DEPLOYING})


class InvalidTransition(Exception):
    def __init__(self, current: State, wanted: State):
        super().__init__(f"cannot move a promotion from {current.value} to {wanted.value}")
        self.current = current
        self.wanted = wanted


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime
    actor: str
    action: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"at": isoformat(self.at), "actor": self.actor, "action": self.action, "detail": dict(self.detail)}


@dataclass(frozen=True)
class Promotion:
    """A request to share one registry model version with production, and everything that happened to it.

    `revision` is the store's concurrency token (an ETag on Tables, a counter on SQLite); the service
    never interprets it, it only hands it back on save.
    """

    id: str
    model: ModelRef
    state: State
    requested_by: str
    created_at: datetime
    updated_at: datetime
    reason: str | None = None
    approved_by: str | None = None
    rejected_by: str | None = None
    deployment: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    history: tuple[HistoryEntry, ...] = ()
    revision: str | None = None

    def move(
        self, to: State, *, actor: str, at: datetime, detail: Mapping[str, Any] | None = None, **changes: Any
    ) -> Promotion:
        """The promotion after a state change, with its history entry appended."""
        if to not in TRANSITIONS[self.state]:
            raise InvalidTransition(self.state, to)
        entry = HistoryEntry(at=at, actor=actor, action=to.value, detail=dict(detail or {}))
        return replace(self, state=to, updated_at=at, history=(*self.history, entry), **changes)

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model_name": self.model.name,
            "model_version": self.model.version,
            "state": self.state.value,
            "reason": self.reason,
            "requested_by": self.requested_by,
            "approved_by": self.approved_by,
            "rejected_by": self.rejected_by,
            "created_at": isoformat(self.created_at),
            "updated_at": isoformat(self.updated_at),
            "deployment": dict(self.deployment),
            "error": self.error,
            "history": [entry.to_json() for entry in self.history],
        }


def split_traffic(current: Mapping[str, int], deployment: str, percent: int) -> dict[str, int]:
    """The endpoint traffic after moving `deployment` in: it takes `percent`, the previous live deployment (the
    other one with the most traffic) keeps the rest, and all others get none. Alone, it takes everything.
    Zero shares are left out, as Azure ML leaves them out. Applying it twice changes nothing."""
    others = {name: share for name, share in current.items() if name != deployment and share > 0}
    previous = max(sorted(others), key=lambda name: others[name], default=None)
    desired = {deployment: 100} if previous is None else {deployment: percent, previous: 100 - percent}
    return {name: share for name, share in desired.items() if share}


def now() -> datetime:
    return datetime.now(timezone.utc)


def isoformat(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
