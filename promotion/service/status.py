"""The status view of one model version: where it is, how its copy went, and what was decided about it."""

from __future__ import annotations

from typing import Any

from promotion.domain import ModelRef
from promotion.ports import Deployer, PromotionStore, RegistryModels, WorkspaceModels


def model_status(
    ref: ModelRef,
    *,
    staging: WorkspaceModels,
    registry: RegistryModels,
    deployer: Deployer,
    store: PromotionStore,
) -> dict[str, Any] | None:
    """Everything known about a model version, or None when nobody knows it."""
    staged = staging.get(ref)
    shared = registry.get(ref)
    copy = store.copy(ref)
    status = {
        "model_name": ref.name,
        "model_version": ref.version,
        "staging": staged.to_json() if staged else None,
        "registry": shared.to_json() if shared else None,
        "copy": copy.to_json() if copy else None,
        "production": deployer.deployments_of(ref),
        "promotions": [promotion.to_json() for promotion in store.list(model=ref)],
        "decisions": [decision.to_json() for decision in reversed(store.decisions(ref))],
        # Open drift findings about this version: production does not match what was approved.
        "drift": [finding.to_json() for finding in store.drift_findings() if finding.model == ref],
    }
    known = ("staging", "registry", "copy", "production", "promotions", "decisions")
    return status if any(status[key] for key in known) else None
