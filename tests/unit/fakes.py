"""Hand-written fakes of the ports, for fast tests of the service layer. They keep state; tests assert on it."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from promotion.domain import OPEN_STATES, Decision, Lineage, ModelRef, ModelVersion, Promotion, State, split_traffic
from promotion.ports import (
    AlreadyExists,
    DeploymentFailed,
    DeploymentPlan,
    OpenPromotionExists,
    Progress,
    PromotionNotFound,
    StaleRevision,
)


class FakeWorkspace:
    def __init__(self, *models: ModelVersion):
        self.models = {model.ref: model for model in models}
        self.reads = 0

    def get(self, ref: ModelRef) -> ModelVersion | None:
        self.reads += 1
        return self.models.get(ref)


class FakeRegistry(FakeWorkspace):
    def __init__(self, *models: ModelVersion):
        super().__init__(*models)
        self.copies = 0
        self.copied_by_someone_else_first: ModelVersion | None = None  # what the race winner left behind

    def copy_from_workspace(self, model: ModelVersion, lineage: Lineage) -> ModelVersion:
        if self.copied_by_someone_else_first:
            self.models[model.ref] = self.copied_by_someone_else_first
        if model.ref in self.models:
            raise AlreadyExists(str(model.ref))
        self.copies += 1
        copied = replace(model, tags={**model.tags, **lineage.as_tags()})
        self.models[model.ref] = copied
        return copied

    def add_lineage(self, model: ModelVersion, lineage: Lineage) -> ModelVersion:
        tagged = replace(
            self.models[model.ref], tags={**self.models[model.ref].tags, **model.tags, **lineage.as_tags()}
        )
        self.models[model.ref] = tagged
        return tagged


class FakeDeployer:
    """Production, where each long-running step needs `polls_per_step` calls before it is done."""

    def __init__(self, polls_per_step: int = 0, fail_deployment_with: str | None = None):
        self.polls_per_step = polls_per_step
        self.fail_deployment_with = fail_deployment_with
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.created_deployments: list[str] = []
        self._calls: dict[tuple[str, str], int] = {}

    def _done_after_polls(self, step: str, key: str) -> bool:
        count = self._calls.get((step, key), 0)
        self._calls[(step, key)] = count + 1
        return count >= self.polls_per_step

    def ensure_endpoint(self, plan: DeploymentPlan) -> Progress:
        self.endpoints.setdefault(plan.endpoint, {"deployments": {}, "traffic": {}})
        return Progress.READY if self._done_after_polls("endpoint", plan.endpoint) else Progress.PENDING

    def ensure_deployment(self, plan: DeploymentPlan) -> Progress:
        deployments = self.endpoints[plan.endpoint]["deployments"]
        if plan.deployment not in deployments:
            deployments[plan.deployment] = {"model": plan.model_uri, "tags": dict(plan.tags)}
            self.created_deployments.append(plan.deployment)
        if self.fail_deployment_with:
            raise DeploymentFailed(self.fail_deployment_with)
        return Progress.READY if self._done_after_polls("deployment", plan.deployment) else Progress.PENDING

    def ensure_traffic(self, plan: DeploymentPlan) -> Progress:
        endpoint = self.endpoints[plan.endpoint]
        endpoint["traffic"] = split_traffic(endpoint["traffic"], plan.deployment, plan.traffic_percent)
        return Progress.READY

    def deployments_of(self, model: ModelRef) -> list[dict[str, Any]]:
        return [
            {"endpoint": name, "deployment": deployment, "traffic": endpoint["traffic"].get(deployment, 0)}
            for name, endpoint in self.endpoints.items()
            for deployment, spec in endpoint["deployments"].items()
            if spec["tags"].get("promotion.model") == str(model)
        ]


class InMemoryPromotionStore:
    def __init__(self) -> None:
        self.promotions: dict[str, Promotion] = {}
        self.recorded: dict[str, Decision] = {}

    def add(self, promotion: Promotion) -> Promotion:
        for other in self.promotions.values():
            if other.model == promotion.model and other.state in OPEN_STATES:
                raise OpenPromotionExists(other)
        stored = replace(promotion, revision="1")
        self.promotions[promotion.id] = stored
        return copy.deepcopy(stored)

    def get(self, promotion_id: str) -> Promotion:
        if promotion_id not in self.promotions:
            raise PromotionNotFound(promotion_id)
        return copy.deepcopy(self.promotions[promotion_id])

    def list(self, *, state: State | None = None, model: ModelRef | None = None) -> list[Promotion]:
        found = [
            p
            for p in self.promotions.values()
            if (state is None or p.state is state) and (model is None or p.model == model)
        ]
        return sorted(found, key=lambda p: p.created_at, reverse=True)

    def save(self, promotion: Promotion) -> Promotion:
        stored = self.promotions[promotion.id]
        if stored.revision != promotion.revision:
            raise StaleRevision(promotion.id)
        saved = replace(
            promotion,
            history=(*stored.history, *promotion.history[len(stored.history) :]),
            revision=str(int(stored.revision or 0) + 1),
        )
        self.promotions[promotion.id] = saved
        return copy.deepcopy(saved)

    def record_decision(self, decision: Decision) -> bool:
        if decision.event_id in self.recorded:
            return False
        self.recorded[decision.event_id] = decision
        return True

    def decisions(self, model: ModelRef) -> list[Decision]:
        return sorted((d for d in self.recorded.values() if d.model == model), key=lambda d: d.decided_at)
