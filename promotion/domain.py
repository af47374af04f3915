"""Plain values of the promotion domain: models, verdicts, decisions, registry copies, promotions and the
lifecycle events that report what happened to them.

Nothing here does I/O or imports an Azure SDK; adapters translate to and from these values.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

# Azure ML asset names: letters, digits, '-', '_', '.', starting with a letter or digit, at most 255.
_ASSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
# Versions are free-form strings in Azure ML v2, but they end up in URLs and folder names,
# so they follow the same alphabet.
_ASSET_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

MODEL_TYPES = ("mlflow_model", "custom_model", "triton_model")
# Azure ML deploys these without an environment and a scoring script ("no-code deployment"); this app
# deploys registry models as they are, so only these can go to production.
DEPLOYABLE_MODEL_TYPES = ("mlflow_model", "triton_model")


class InvalidName(ValueError):
    """A model name or version that Azure ML would refuse."""


def validate_model_name(name: object) -> str:
    if not isinstance(name, str) or not _ASSET_NAME.fullmatch(name):
        raise InvalidName(
            f"invalid model name {_shown(name)}: use letters, digits, '-', '_' or '.', "
            "start with a letter or digit, at most 255 characters"
        )
    return name


def validate_model_version(version: object) -> str:
    if isinstance(version, bool) or not isinstance(version, (str, int)):
        raise InvalidName(f"invalid model version {_shown(version)}: expected a string or an integer")
    text = str(version)
    if not _ASSET_VERSION.fullmatch(text) or text in {".", ".."}:
        raise InvalidName(
            f"invalid model version {_shown(text)}: use letters, digits, '-', '_' or '.', "
            "start with a letter or digit, at most 128 characters"
        )
    return text


def _shown(value: object) -> str:
    """A bad value as it may appear in a message: short, and ASCII-escaped so it cannot forge log lines."""
    text = repr(value)
    text = text if len(text) <= 80 else text[:77] + "..."
    return text.encode("ascii", "backslashreplace").decode("ascii")


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

    @classmethod
    def from_text(cls, text: str) -> ModelRef:
        """From "name:version", the form lineage and deployment tags use."""
        name, separator, version = text.rpartition(":")
        if not separator:
            raise InvalidName(f"invalid model reference {_shown(text)}: expected name:version")
        return cls.parse(name, version)

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


def version_order(version: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order of model versions: 10 comes after 9, and 1.10 after 1.9."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.findall(r"\d+|[^\d]+", version))


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
    # What the backend calls this exact version (the ARM resource id in Azure), its flavors, and when it was
    # created as the backend reports it: with the type, path and properties, the parts that never change.
    asset_id: str | None = None
    flavors: Mapping[str, Any] = field(default_factory=dict)
    created_at: str | None = None
    archived: bool = False

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
            "asset_id": self.asset_id,
            "flavors": dict(self.flavors),
            "created_at": self.created_at,
            "archived": self.archived,
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
# Set on the online endpoints this app creates: which app made it (its events source), and, when the endpoint
# template names the model, the one model it is for. An endpoint without our owner tag is never taken over.
ENDPOINT_OWNER_TAG = "promotion.owner"
ENDPOINT_MODEL_TAG = "promotion.endpoint_model"


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

    @staticmethod
    def of(tags: Mapping[str, str]) -> dict[str, str]:
        """The lineage tags among a registry version's tags."""
        return {key: value for key, value in tags.items() if key.startswith("promotion.")}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Lineage:
        return cls(
            source_workspace=tags[LINEAGE_SOURCE_WORKSPACE],
            source_model=ModelRef.from_text(tags[LINEAGE_SOURCE_MODEL]),
            event_id=tags[LINEAGE_EVENT_ID],
            policy_digest=tags[LINEAGE_POLICY_DIGEST],
        )


@dataclass(frozen=True)
class Verdict:
    """The policy's answer for one model: every failed rule, not just the first."""

    failed_rules: tuple[str, ...]
    policy_digest: str

    @property
    def qualifies(self) -> bool:
        return not self.failed_rules


class Outcome(str, Enum):
    """What happened to one ModelRegistered event (or one reconcile finding), and how its copy ended."""

    COPY_STARTED = "copy_started"
    COPY_IN_PROGRESS = "copy_in_progress"  # a copy of that version is already under way; nothing new started
    COPIED = "copied"  # the copy finished and carries its lineage
    COPY_FAILED = "copy_failed"
    ALREADY_IN_REGISTRY = "already_in_registry"
    NOT_QUALIFIED = "not_qualified"
    NOT_IN_STAGING = "not_in_staging"
    REGISTRY_CONFLICT = "registry_conflict"  # the registry holds that name:version, but not from us
    REFUSED_SOURCE = "refused_source"
    IGNORED_EVENT_TYPE = "ignored_event_type"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class Decision:
    """The recorded result of one event, one reconcile finding, or the end of one registry copy.

    `event_id` names the cause: the Event Grid event id, `reconcile:{run}:{name}:{version}`, or
    `copy:{attempt}` for the end of a copy. The store keeps one decision per cause.
    """

    event_id: str
    model: ModelRef | None
    outcome: Outcome
    reasons: tuple[str, ...]
    policy_digest: str | None
    decided_at: datetime

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


# --- copies into the registry ----------------------------------------------------------------------


class CopyState(str, Enum):
    COPYING = "copying"
    COPIED = "copied"
    COPY_FAILED = "copy_failed"


# The prefix of RegistryCopy.operation while the registry applies the lineage tags.
TAGGING = "tagging:"


@dataclass(frozen=True)
class RegistryCopy:
    """One attempt to copy a staging model version into the registry, from its start to its end.

    The copy is a long-running operation in Azure (minutes for a large model), so it is started by the
    event and finished by a timer; this record is what connects the two. A failed copy may be tried
    again; the new attempt replaces it.
    """

    model: ModelRef
    attempt: str
    state: CopyState
    model_type: str  # the source's type: a registry version of another type is not our copy
    lineage: Lineage
    tags: Mapping[str, str]  # the source's tags, which the copy gets together with the lineage tags
    description: str | None
    started_at: datetime
    updated_at: datetime
    # Where to ask how the copy is going (an ARM operation URL); None when the registry already held the
    # version untagged, or in the moment between claiming the copy and starting it. Once the registry has
    # accepted the lineage tags but not applied them yet, the tag update's handle, prefixed with TAGGING.
    operation: str | None = None
    # The reason a copy failed; while it is copying, why its status could not be read (a 5xx, a timeout), and
    # then updated_at is when that began.
    error: str | None = None
    revision: str | None = None

    @property
    def cause(self) -> str:
        return self.lineage.event_id

    @property
    def tag_operation(self) -> str | None:
        """The handle of the tag update the registry is applying, when the copy is at that step."""
        if self.state is CopyState.COPYING and self.operation and self.operation.startswith(TAGGING):
            return self.operation.removeprefix(TAGGING)
        return None

    @property
    def step(self) -> str:
        """Where a copy under way stands, for people: `copying` or `tagging`; else its state."""
        return "tagging" if self.tag_operation is not None else self.state.value

    def tagging(self, operation: str, at: datetime) -> RegistryCopy:
        return replace(self, operation=f"{TAGGING}{operation}", updated_at=at, error=None)

    @property
    def registry_tags(self) -> dict[str, str]:
        return {**self.tags, **self.lineage.as_tags()}

    def finished(self, state: CopyState, at: datetime, error: str | None = None) -> RegistryCopy:
        if self.state is not CopyState.COPYING:
            raise ValueError(f"the copy of {self.model} is {self.state.value}, not copying")
        return replace(self, state=state, updated_at=at, error=error)

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "attempt": self.attempt,
            "started_by": self.cause,
            "policy_digest": self.lineage.policy_digest,
            "started_at": isoformat(self.started_at),
            "updated_at": isoformat(self.updated_at),
            "error": self.error,
        }


# --- promotions to production ----------------------------------------------------------------------


class State(str, Enum):
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    DEPLOYING = "deploying"
    DEPLOYED = "deployed"
    FAILED = "failed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    # The registry version changed (or was archived, or is gone) after the request: what was approved is not
    # what would deploy. Final; a new request starts over.
    VOIDED = "voided"


# The only moves a promotion can make. approved -> failed covers a job that never started (poison queue);
# rolling_back -> deployed a rollback that Azure refused, which leaves the promotion live.
TRANSITIONS: Mapping[State, frozenset[State]] = {
    State.PENDING_APPROVAL: frozenset({State.APPROVED, State.REJECTED, State.EXPIRED, State.VOIDED}),
    State.APPROVED: frozenset({State.DEPLOYING, State.FAILED, State.VOIDED}),
    State.DEPLOYING: frozenset({State.DEPLOYED, State.FAILED}),
    State.DEPLOYED: frozenset({State.ROLLING_BACK}),
    State.ROLLING_BACK: frozenset({State.ROLLED_BACK, State.DEPLOYED}),
    State.REJECTED: frozenset(),
    State.EXPIRED: frozenset(),
    State.FAILED: frozenset(),
    State.ROLLED_BACK: frozenset(),
    State.VOIDED: frozenset(),
}
# At most one open promotion per model version; a new request is possible once it is closed.
OPEN_STATES = frozenset({State.PENDING_APPROVAL, State.APPROVED, State.DEPLOYING})
APPROVAL_ACTION = "approval"  # a history entry for one approver's approval; the state changes at the last one


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
        return self.note(to.value, actor=actor, at=at, detail=detail, state=to, **changes)

    def note(
        self, action: str, *, actor: str, at: datetime, detail: Mapping[str, Any] | None = None, **changes: Any
    ) -> Promotion:
        """The promotion with a history entry appended (and any field changes), its state unchanged unless given."""
        at = self.next_moment(at)
        entry = HistoryEntry(at=at, actor=actor, action=action, detail=dict(detail or {}))
        return replace(self, updated_at=at, history=(*self.history, entry), **changes)

    def next_moment(self, at: datetime) -> datetime:
        """`at`, or just after the last entry: history (and the events it reports) stays in order even when
        the hosts that wrote it disagree about the time."""
        last = self.history[-1].at if self.history else self.created_at
        return at if at > last else last + timedelta(microseconds=1)

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    @property
    def requester_id(self) -> str | None:
        return self.history[0].detail.get("principal_id") if self.history else None

    @property
    def approvals(self) -> tuple[HistoryEntry, ...]:
        return tuple(entry for entry in self.history if entry.action == APPROVAL_ACTION)

    @property
    def last_entry_at(self) -> datetime:
        return self.history[-1].at if self.history else self.updated_at

    @property
    def artifact(self) -> Mapping[str, Any] | None:
        """The registry version as it was at request time (fingerprint and tags), kept in the request's history
        entry; None for a promotion requested before fingerprints were recorded."""
        return self.history[0].detail.get("artifact") if self.history else None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model_name": self.model.name,
            "model_version": self.model.version,
            "state": self.state.value,
            "reason": self.reason,
            "requested_by": self.requested_by,
            "approvals": [entry.actor for entry in self.approvals],
            "approved_by": self.approved_by,
            "rejected_by": self.rejected_by,
            "created_at": isoformat(self.created_at),
            "updated_at": isoformat(self.updated_at),
            "deployment": dict(self.deployment),
            "error": self.error,
            "artifact": dict(self.artifact) if self.artifact else None,
            "history": [entry.to_json() for entry in self.history],
        }


def split_traffic(
    current: Mapping[str, int], deployment: str, percent: int, models: Mapping[str, str | None] | None = None
) -> dict[str, int]:
    """The endpoint traffic after moving `deployment` in: it takes `percent`, the previous live deployment keeps
    the rest, and all others get none. Alone, it takes everything. Zero shares are left out, as Azure ML leaves
    them out. Applying it twice changes nothing.

    The previous live deployment is the other one with the most traffic; on a tie, the one serving the most
    recent version by version order (`models` maps deployments to the "name:version" they serve), then by the
    natural order of the names (churn-v10 after churn-v9).
    """
    others = {name: share for name, share in current.items() if name != deployment and share > 0}
    served = models or {}

    def rank(name: str) -> tuple[int, tuple[tuple[int, int | str], ...], tuple[tuple[int, int | str], ...]]:
        version = (served.get(name) or "").rpartition(":")[2]
        return others[name], version_order(version), version_order(name)

    previous = max(others, key=rank, default=None)
    desired = {deployment: 100} if previous is None else {deployment: percent, previous: 100 - percent}
    return {name: share for name, share in desired.items() if share}


# --- names in production ---------------------------------------------------------------------------

_ONLINE_NAME = re.compile(r"[a-z][a-z0-9-]{1,30}[a-z0-9]")
# 25 base-36 digits carry 129 bits of the digest: finding two texts with one name takes about 2^64 tries, out of
# reach of any search. What is left of the 32 characters holds the readable part.
_DIGEST_LENGTH = 25
_MADE_UP_SEPARATOR = "--"  # only made-up names contain it; a name used as it is never does
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def served_model(tags: Mapping[str, str] | None, model_uri: str | None) -> str | None:
    """The "name:version" a production deployment serves: the app's tag, or the tail of its registry model URI (a
    deployment made by hand); None when neither names one."""
    tagged = (tags or {}).get(DEPLOYMENT_MODEL_TAG)
    if tagged:
        return tagged
    match = re.search(r"/models/([^/]+)/versions/([^/]+)$", model_uri or "")
    return f"{match[1]}:{match[2]}" if match else None


def online_name(text: str) -> str:
    """An online endpoint or deployment name for `text`: 3-32 characters, a lower-case letter first, then
    lower-case letters, digits and '-'.

    Injective, short of a 128-bit digest collision: a text that is already such a name, without '--', is used
    as it is; any other text (upper case, '.', '_', '--', too long or too short) becomes a short readable part,
    '--' and 25 base-36 digits of a SHA-256 digest of the exact text, so `taxi.fare`, `Taxi_Fare` and
    `taxi-fare` get three different names. Since only made-up names contain '--', a made-up name never equals
    a name used as it is (`Fraud` and `fraud-1baabd47` stay apart).
    """
    if _ONLINE_NAME.fullmatch(text) and _MADE_UP_SEPARATOR not in text:
        return text
    readable = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not readable[:1].isalpha():
        readable = f"m-{readable}".rstrip("-")
    number = int.from_bytes(hashlib.sha256(text.encode()).digest(), "big")
    digits = []
    for _ in range(_DIGEST_LENGTH):
        number, digit = divmod(number, 36)
        digits.append(_BASE36[digit])
    room = 32 - _DIGEST_LENGTH - len(_MADE_UP_SEPARATOR)
    return f"{readable[:room].rstrip('-')}{_MADE_UP_SEPARATOR}{''.join(digits)}"


def deployment_name(model: ModelRef) -> str:
    """`{name}-v{version}` when that is an unchanged online name and the version has no '-' (so it reads back
    as exactly one name and version), else made valid with a digest of the exact `name:version`."""
    readable = f"{model.name}-v{model.version}"
    if _ONLINE_NAME.fullmatch(readable) and _MADE_UP_SEPARATOR not in readable and model.version.isalnum():
        return readable
    return online_name(str(model))


# --- drift in production ---------------------------------------------------------------------------


class DriftKind(str, Enum):
    UNAPPROVED_MODEL = "unapproved_model"  # a deployment serves a model version no deployed promotion put there
    TRAFFIC_CHANGED = "traffic_changed"  # the endpoint's traffic is not what the app last set
    DEPLOYMENT_MISSING = "deployment_missing"  # a deployed promotion's deployment (or endpoint) is gone
    STALE_DEPLOYMENT = "stale_deployment"  # at 0% traffic for longer than production.stale_deployment_days


@dataclass(frozen=True)
class DriftFinding:
    """One difference between a production endpoint and what the store says it should be. At most one finding of
    a kind is open per endpoint and deployment (`key`); it stays open, and is published once, until it clears."""

    kind: DriftKind
    endpoint: str
    deployment: str  # "" for a finding about the whole endpoint (its traffic)
    expected: Mapping[str, Any]
    actual: Mapping[str, Any]
    detected_at: datetime
    promotion_id: str | None = None  # the promotion it concerns, when there is one
    model: ModelRef | None = None  # the model version it concerns, when it can be named
    resolved_at: datetime | None = None

    @property
    def key(self) -> str:
        return f"{self.kind.value}|{self.endpoint}|{self.deployment}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "endpoint": self.endpoint,
            "deployment": self.deployment or None,
            "expected": dict(self.expected),
            "actual": dict(self.actual),
            "promotion_id": self.promotion_id,
            "model": self.model.to_json() if self.model else None,
            "detected_at": isoformat(self.detected_at),
            "resolved_at": isoformat(self.resolved_at) if self.resolved_at else None,
        }


# --- lifecycle events ------------------------------------------------------------------------------


class EventType(str, Enum):
    """The CloudEvents this app publishes, one per change it makes."""

    COPIED_TO_REGISTRY = "ModelPromotion.CopiedToRegistry"
    REGISTRY_COPY_FAILED = "ModelPromotion.RegistryCopyFailed"
    APPROVAL_REQUESTED = "ModelPromotion.ApprovalRequested"
    APPROVED = "ModelPromotion.Approved"
    REJECTED = "ModelPromotion.Rejected"
    EXPIRED = "ModelPromotion.Expired"
    DEPLOYMENT_STARTED = "ModelPromotion.DeploymentStarted"
    DEPLOYED = "ModelPromotion.Deployed"
    DEPLOYMENT_FAILED = "ModelPromotion.DeploymentFailed"
    ROLLED_BACK = "ModelPromotion.RolledBack"
    VOIDED = "ModelPromotion.Voided"
    DRIFT_DETECTED = "ModelPromotion.DriftDetected"
    DRIFT_RESOLVED = "ModelPromotion.DriftResolved"


# Drift events are about a production endpoint, not one model version: their subject names the endpoint.
DRIFT_EVENTS = frozenset({EventType.DRIFT_DETECTED, EventType.DRIFT_RESOLVED})


@dataclass(frozen=True)
class LifecycleEvent:
    """One change, as a CloudEvent. Its id is fixed when the change is recorded, so every delivery of it,
    retries included, carries the same id and subscribers can de-duplicate."""

    id: str
    type: EventType
    source: str
    model: ModelRef | None  # None only for a drift event about a deployment that serves no model we can name
    at: datetime
    data: Mapping[str, Any]
    published_at: datetime | None = None

    @property
    def subject(self) -> str:
        if self.type in DRIFT_EVENTS:
            deployment = self.data.get("deployment")
            where = f"onlineEndpoints/{self.data.get('endpoint')}"
            return f"{where}/deployments/{deployment}" if deployment else where
        assert self.model is not None
        return f"models/{self.model.name}/versions/{self.model.version}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type.value,
            "source": self.source,
            "subject": self.subject,
            "time": isoformat(self.at),
            "data": dict(self.data),
            "published_at": isoformat(self.published_at) if self.published_at else None,
        }


def now() -> datetime:
    return datetime.now(timezone.utc)


def isoformat(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def new_promotion_id(at: datetime) -> str:
    """A promotion id shaped like a UUID (RFC 9562 version 8, a custom layout) whose first 48 bits are the
    creation time in milliseconds counted down from the end of that range: ids sort newest first as text, so a
    store that pages in key order (Table Storage can do no other) lists the newest promotions first."""
    import secrets

    countdown = (1 << 48) - 1 - int(at.timestamp() * 1000)
    rand = secrets.randbits(74)
    value = (countdown << 80) | (0x8 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
