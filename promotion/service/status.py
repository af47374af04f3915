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
    endpoint: str | None = None,
) -> dict[str, Any] | None:
    """Everything known about a model version, or None when nobody knows it. `endpoint` is where the policy
    would deploy it: its live traffic is shown even before anything was deployed, so a reviewer sees what an
    approval would change."""
    staged = staging.get(ref)
    shared = registry.get(ref)
    copy = store.copy(ref)
    promotions = store.list(model=ref)
    production = deployer.deployments_of(ref)
    status = {
        "model_name": ref.name,
        "model_version": ref.version,
        "staging": staged.to_json() if staged else None,
        "registry": shared.to_json() if shared else None,
        "copy": copy.to_json() if copy else None,
        "production": production,
        "promotions": [promotion.to_json() for promotion in promotions],
        "decisions": [decision.to_json() for decision in reversed(store.decisions(ref))],
        # Open drift findings about this version: production does not match what was approved.
        "drift": [finding.to_json() for finding in store.drift_findings() if finding.model == ref],
    }
    known = ("staging", "registry", "copy", "production", "promotions", "decisions")
    if not any(status[key] for key in known):
        return None
    endpoints = [endpoint] if endpoint else []
    endpoints += [str(p.deployment["endpoint"]) for p in promotions if p.deployment.get("endpoint")]
    endpoints += [str(found["endpoint"]) for found in production]
    status["serving"] = [live for name in dict.fromkeys(endpoints) if (live := serving_now(name, deployer))]
    return status


def serving_now(endpoint: str, deployer: Deployer) -> dict[str, Any] | None:
    """What an endpoint serves now: each deployment taking traffic, its share and the model version behind it."""
    try:
        state = deployer.endpoint(endpoint)
    except ValueError:  # a name the workspace could never hold (the policy's pattern made it invalid)
        return None
    if state is None:
        return {"endpoint": endpoint, "exists": False, "busy": False, "traffic": []}
    traffic = [
        {"deployment": deployment, "percent": percent, "model": state.models.get(deployment)}
        for deployment, percent in sorted(state.traffic.items(), key=lambda item: -item[1])
        if percent > 0
    ]
    return {"endpoint": endpoint, "exists": True, "busy": state.busy, "traffic": traffic}
