"""The ports the service layer talks to. Adapters (local folders, Azure ML, Tables, SQLite) implement them,
and so do the hand-written fakes in tests/unit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from promotion.domain import Decision, Lineage, ModelRef, ModelVersion, Promotion, State


class AlreadyExists(Exception):
    """The target already holds that name and version (Azure ML assets are immutable)."""


class WorkspaceModels(Protocol):
    """Models registered in a workspace (staging)."""

    def get(self, ref: ModelRef) -> ModelVersion | None: ...


class RegistryModels(Protocol):
    """Models in the shared Azure ML registry."""

    def get(self, ref: ModelRef) -> ModelVersion | None: ...

    def copy_from_workspace(self, model: ModelVersion, lineage: Lineage) -> ModelVersion:
        """Copy a staging model into the registry under the same name and version, adding the lineage tags.

        Raises AlreadyExists when the registry holds that version already (including when another
        instance won a race to copy it).
        """
        ...

    def add_lineage(self, model: ModelVersion, lineage: Lineage) -> ModelVersion:
        """Tag an existing registry copy as copy_from_workspace would have.

        An import cannot carry tags, so a copy can exist untagged for a moment, or for good if the
        process stopped in between; this finishes such a copy.
        """
        ...


class Progress(str, Enum):
    READY = "ready"
    PENDING = "pending"  # a long-running operation is under way; ask again later


class DeploymentFailed(Exception):
    """The production workspace reported a failure that retrying will not fix."""


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
    tags: Mapping[str, str] = field(default_factory=dict)


class Deployer(Protocol):
    """The production workspace. Each step is idempotent and never waits for a long-running operation:
    it starts the work if needed and answers PENDING until the work has finished."""

    def ensure_endpoint(self, plan: DeploymentPlan) -> Progress: ...

    def ensure_deployment(self, plan: DeploymentPlan) -> Progress: ...

    def ensure_traffic(self, plan: DeploymentPlan) -> Progress:
        """Give the plan's deployment traffic_percent of the traffic, the rest to the previous live deployment."""
        ...

    def deployments_of(self, model: ModelRef) -> list[dict[str, Any]]:
        """Production deployments serving this model version: endpoint, deployment, traffic, state."""
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
    """Someone else changed the promotion since it was read (optimistic concurrency)."""


class PromotionStore(Protocol):
    """Promotions, their append-only history, and the decisions on_model_registered made."""

    def add(self, promotion: Promotion) -> Promotion:
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

    def save(self, promotion: Promotion) -> Promotion:
        """Replace the stored promotion if its revision still equals `promotion.revision`, appending the
        history entries the store does not hold yet; returns it with the new revision.

        Raises StaleRevision if the stored revision differs, and changes nothing then.
        Stored history entries are never rewritten or removed.
        """
        ...

    def record_decision(self, decision: Decision) -> bool:
        """Insert once per event id; False when that event was already recorded (a redelivery)."""
        ...

    def decisions(self, model: ModelRef) -> list[Decision]:
        """Oldest first."""
        ...
