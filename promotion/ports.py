"""The ports the service layer talks to. Adapters (local folders, Azure ML, Tables, SQLite, Event Grid) implement
them, and so do the hand-written fakes in tests/unit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Generic, Protocol, TypeVar

from promotion.domain import (
    CopyState,
    Decision,
    DriftFinding,
    LifecycleEvent,
    ModelRef,
    ModelVersion,
    Promotion,
    RegistryCopy,
    State,
)


class AlreadyExists(Exception):
    """The target already holds that name and version (Azure ML assets are immutable)."""


class CopyRefused(Exception):
    """The registry refused a copy in a way that retrying will not fix (an invalid name, a missing permission)."""


class WorkspaceModels(Protocol):
    """Models registered in a workspace (staging)."""

    def get(self, ref: ModelRef) -> ModelVersion | None: ...

    def names(self) -> list[str]:
        """The names of the workspace's active (not archived) models."""
        ...

    def versions(self, name: str) -> list[ModelVersion]:
        """The active versions of one model, with their tags and properties; [] for an unknown name."""
        ...


class CopyProgress(str, Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class CopyStatus:
    progress: CopyProgress
    message: str | None = None  # the service's own words when it failed


class StatusUnavailable(Exception):
    """The status of an operation could not be read this time (a 5xx, throttling, a timeout, a dropped
    connection): the operation itself may be fine, so ask again later."""


@dataclass(frozen=True)
class TagUpdate:
    """A tag update the registry accepted but has not applied yet (a long-running operation): ask
    `RegistryModels.tag_status` about `operation` until it says SUCCEEDED."""

    operation: str


class RegistryModels(Protocol):
    """Models in the shared Azure ML registry."""

    def get(self, ref: ModelRef) -> ModelVersion | None: ...

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of one model the registry holds; [] for an unknown name."""
        ...

    def start_copy(self, model: ModelVersion) -> str:
        """Start copying a staging model version into the registry under the same name and version, and return
        at once with a handle to ask `copy_status` about. Never waits for the copy.

        Raises AlreadyExists when the registry holds that version already, and CopyRefused when the registry
        refuses the copy for good; other errors may pass, and raise as they are.
        """
        ...

    def copy_status(self, operation: str) -> CopyStatus:
        """How the copy behind a handle from `start_copy` is going: one status read, never a wait. Raises
        StatusUnavailable when the status cannot be read this time."""
        ...

    def tag(
        self,
        ref: ModelRef,
        tags: Mapping[str, str],
        description: str | None,
        *,
        check: Callable[[ModelVersion], None] = lambda held: None,
    ) -> ModelVersion | TagUpdate | None:
        """Add tags to a registry version (and a description if it has none), keeping everything else as it is:
        a version's content is immutable, only its metadata may change. One read and one write.

        `check` sees the version as the registry holds it before anything changes; whatever it raises leaves
        the version untouched and reaches the caller. None when the registry lacks the version; a TagUpdate
        when the registry accepted the change but has not applied it yet (never waited for).
        """
        ...

    def tag_status(
        self, ref: ModelRef, operation: str, tags: Mapping[str, str], description: str | None = None
    ) -> CopyStatus:
        """How a tag update from `tag` is going, never a wait: SUCCEEDED only once the registry version shows
        `tags` (a version whose update ended without them is tagged again, with `description` if it has none).
        Raises StatusUnavailable when the status cannot be read this time."""
        ...


class Progress(str, Enum):
    READY = "ready"
    PENDING = "pending"  # a long-running operation is under way; ask again later


class DeploymentFailed(Exception):
    """The production workspace refused or failed the work in a way that retrying will not fix."""


@dataclass(frozen=True)
class DeploymentPlan:
    """Where and how one registry model version goes into production."""

    model: ModelRef
    model_uri: str  # azureml://registries/{registry}/models/{name}/versions/{version}
    endpoint: str
    deployment: str
    instance_type: str
    instance_count: int
    traffic_percent: int
    tags: Mapping[str, str] = field(default_factory=dict)  # set on the deployment
    endpoint_tags: Mapping[str, str] = field(default_factory=dict)  # set on the endpoint when it is created


@dataclass(frozen=True)
class EndpointState:
    """An online endpoint as it stands: its traffic, what each of its deployments serves, and whether an
    operation is under way on it."""

    traffic: Mapping[str, int]  # deployment -> percent; deployments without traffic are left out
    models: Mapping[str, str | None]  # every deployment -> the "name:version" it serves, None when unknown
    busy: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)  # the endpoint's own tags


@dataclass(frozen=True)
class OnlineEndpoint:
    """One online endpoint as an endpoint listing shows it."""

    name: str
    traffic: Mapping[str, int]  # deployment -> percent; deployments without traffic are left out
    busy: bool = False  # an operation is under way on it
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OnlineDeployment:
    """One deployment as a deployment listing shows it."""

    name: str
    model: str | None  # the "name:version" it serves (our tag, or the tail of a registry model URI); None if unknown
    model_uri: str | None
    state: str  # the provisioning state: Succeeded, Creating, Updating, Deleting, Failed...
    tags: Mapping[str, str] = field(default_factory=dict)


class Deployer(Protocol):
    """The production workspace. Each step is idempotent and never waits for a long-running operation:
    it starts the work if needed and answers PENDING until the work has finished.

    Errors that retrying cannot fix (a refused request, quota, SKU, region, a name taken in the region)
    raise DeploymentFailed with the service's message; anything else (throttling, outages, timeouts)
    raises as it is and is retried later.
    """

    def ensure_endpoint(self, plan: DeploymentPlan) -> Progress:
        """Create the endpoint with `plan.endpoint_tags` if it is missing; an existing endpoint keeps its tags."""
        ...

    def ensure_deployment(self, plan: DeploymentPlan) -> Progress: ...

    def endpoint(self, name: str) -> EndpointState | None: ...

    def set_traffic(self, endpoint: str, traffic: Mapping[str, int]) -> Progress:
        """READY once the endpoint's traffic is exactly `traffic` and nothing is under way on it; otherwise
        start the change if it is not under way yet, and answer PENDING."""
        ...

    def deployments_of(self, model: ModelRef) -> list[dict[str, Any]]:
        """Production deployments serving this model version: endpoint, deployment, traffic, state."""
        ...

    def online_endpoints(self) -> list[OnlineEndpoint]:
        """Every online endpoint of the production workspace, with its traffic: one listing."""
        ...

    def online_deployments(self, endpoint: str) -> list[OnlineDeployment]:
        """Every deployment of one endpoint, with what it serves: one listing; [] when the endpoint is gone."""
        ...

    def delete_deployment(self, endpoint: str, deployment: str) -> Progress:
        """Start deleting a deployment; READY once it is gone. Azure refuses to delete a deployment that still has
        traffic: that raises DeploymentFailed, as does any other refusal."""
        ...


class EventPublisher(Protocol):
    """Where lifecycle events go (an Event Grid topic)."""

    def publish(self, events: Sequence[LifecycleEvent]) -> None:
        """Send the events as one batch; raises when they may not have arrived."""
        ...


class OpenPromotionExists(Exception):
    def __init__(self, existing: Promotion):
        super().__init__(f"promotion {existing.id} is already open for {existing.model}")
        self.existing = existing


class PromotionNotFound(LookupError):
    def __init__(self, promotion_id: str):
        super().__init__(f"no promotion with id {promotion_id!r}")
        self.promotion_id = promotion_id


class StaleRevision(Exception):
    """Someone else changed the record since it was read (optimistic concurrency)."""


class CopyClaimed(Exception):
    """A copy of that model version is under way or done already; nothing new was started."""

    def __init__(self, existing: RegistryCopy):
        super().__init__(f"the copy of {existing.model} is {existing.state.value} (started by {existing.cause})")
        self.existing = existing


class ValueTooLarge(ValueError):
    """A value larger than the store keeps in one property (Table Storage: 64 KiB, 32 K UTF-16 code units).
    Both stores refuse it alike, before anything is written. The boundaries (event parsing, identity, the API's
    text limits) keep values far below, so this is a backstop, not a path users meet."""


class InvalidContinuation(ValueError):
    """A continuation token this store never gave out (or one for another listing)."""


@dataclass(frozen=True)
class PromotionFilter:
    """Which promotions a page lists: every field that is set must match exactly."""

    state: State | None = None
    model_name: str | None = None
    model_version: str | None = None


EVERY_PROMOTION = PromotionFilter()


MAX_PAGE_SIZE = 200


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing, and the token that asks for the next one (None after the last page)."""

    items: list[T]
    continuation: str | None = None


class StoreUnavailable(Exception):
    """The promotion store cannot be reached right now (an outage, throttling); retry later."""


class PromotionStore(Protocol):
    """Promotions with their append-only history, registry copies, the decisions made about events, and the
    outbox of lifecycle events. A change and the events that report it are written in one transaction."""

    # -- promotions

    def add(self, promotion: Promotion, events: Sequence[LifecycleEvent] = ()) -> Promotion:
        """Insert a new promotion with its history; returns it with its revision.

        Raises OpenPromotionExists if another open promotion (see domain.OPEN_STATES) holds the same
        model version. The check and the insert are one atomic step.
        """
        ...

    def get(self, promotion_id: str) -> Promotion:
        """Raises PromotionNotFound."""
        ...

    def list(self, *, state: State | None = None, model: ModelRef | None = None) -> list[Promotion]:
        """Newest first."""
        ...

    def list_page(
        self, wanted: PromotionFilter = EVERY_PROMOTION, *, page_size: int = 50, continuation: str | None = None
    ) -> Page[Promotion]:
        """One page of promotions, in promotion id order (new ids sort newest first, see domain.new_promotion_id),
        reading only that page's rows and their history. `continuation` is the token of the previous page; a page
        may hold fewer than `page_size` promotions while a continuation follows. Raises InvalidContinuation."""
        ...

    def open_promotions(self, states: Iterable[State]) -> list[Promotion]:
        """The promotions in these states, oldest first, read through the store's index of open work: what it reads
        grows with the promotions in these states, never with finished ones. Only pending_approval, approved,
        deploying and rolling_back are indexed; any other state raises ValueError."""
        ...

    def save(self, promotion: Promotion, events: Sequence[LifecycleEvent] = ()) -> Promotion:
        """Replace the stored promotion if its revision still equals `promotion.revision`, appending the
        history entries the store does not hold yet; returns it with the new revision.

        Raises StaleRevision if the stored revision differs, and changes nothing then.
        Stored history entries are never rewritten or removed.
        """
        ...

    # -- decisions

    def record_decision(self, decision: Decision) -> bool:
        """Insert once per cause (event id); False when that cause was already recorded (a redelivery)."""
        ...

    def decisions(self, model: ModelRef) -> list[Decision]:
        """Oldest first."""
        ...

    def purge_decisions(self, *, before: datetime) -> int:
        """Delete decisions made before `before`, reading only those; returns how many."""
        ...

    # -- registry copies

    def copy(self, model: ModelRef) -> RegistryCopy | None:
        """The latest copy attempt of a model version."""
        ...

    def copies(self, *, state: CopyState | None = None) -> list[RegistryCopy]: ...

    def copies_in_flight(self) -> list[RegistryCopy]:
        """The copies under way (every state but copied and copy_failed), oldest first, read through the store's
        index of open work: what it reads never grows with finished copies."""
        ...

    def copies_page(self, *, page_size: int, continuation: str | None = None) -> Page[RegistryCopy]:
        """One page of every copy, by model name and version; ValueError for a token this store did not give."""
        ...

    def claim_copy(self, copy: RegistryCopy, *, replacing: RegistryCopy | None = None) -> RegistryCopy:
        """Record a new copy attempt, before it is started, so that one attempt runs at a time.

        With `replacing` (a failed attempt as it was read), the new attempt takes its place. Raises CopyClaimed
        with the stored attempt when there is one and it is not exactly `replacing`.
        """
        ...

    def save_copy(
        self, copy: RegistryCopy, *, decision: Decision | None = None, events: Sequence[LifecycleEvent] = ()
    ) -> RegistryCopy:
        """Replace the stored attempt if its revision still equals `copy.revision` (else StaleRevision), and
        record the decision of the cause that made this change, replacing any other decision of that cause."""
        ...

    def release_copy(self, claimed: RegistryCopy, *, previous: RegistryCopy | None) -> None:
        """Undo a claim whose copy could not be started: put `previous` back, or remove the claim."""
        ...

    # -- the outbox of lifecycle events

    def unpublished_events(self, *, limit: int) -> list[LifecycleEvent]:
        """The oldest unpublished events, oldest first."""
        ...

    def events(self, *, unpublished_only: bool = False) -> list[LifecycleEvent]:
        """Every event kept, oldest first, with its publish time (None while unpublished)."""
        ...

    def events_page(
        self, *, page_size: int, continuation: str | None = None, unpublished_only: bool = False
    ) -> Page[LifecycleEvent]:
        """One page of the events kept: the unpublished ones oldest first, then the published ones in the order they
        were published. An event published while the pages are read may show twice. ValueError for a bad token."""
        ...

    def mark_published(self, events: Sequence[LifecycleEvent], at: datetime) -> None:
        """Idempotent; events another publisher marked already are left as they are."""
        ...

    def purge_published(self, *, before: datetime) -> int:
        """Delete events published before `before`; returns how many."""
        ...

    # -- drift in production (see service.drift)

    def drift_findings(self, *, open_only: bool = True) -> list[DriftFinding]:
        """Drift findings, oldest first: the open ones, or every one kept (the resolved ones with resolved_at)."""
        ...

    def open_drift(self, finding: DriftFinding, events: Sequence[LifecycleEvent] = ()) -> bool:
        """Record a new finding and the events that report it, in one transaction. False, and nothing written, when
        a finding with the same key is open already (it is recorded, and published, once)."""
        ...

    def resolve_drift(self, finding: DriftFinding, events: Sequence[LifecycleEvent] = ()) -> bool:
        """Close the open finding with `finding`'s key (`finding` carries resolved_at) and write the events, in one
        transaction. False, and nothing written, when no such finding is open (another run closed it)."""
        ...

    def zero_traffic_since(self) -> dict[tuple[str, str], datetime]:
        """(endpoint, deployment) -> when the app first saw that deployment at 0% traffic (Azure records no such
        time)."""
        ...

    def note_zero_traffic(self, endpoint: str, deployment: str, at: datetime) -> datetime:
        """Record that the deployment is at 0% now, unless that is recorded already; returns the first sighting."""
        ...

    def clear_zero_traffic(self, endpoint: str, deployment: str) -> None:
        """Forget the 0% sighting (the deployment has traffic again, or is gone); nothing happens when there is none."""
        ...
