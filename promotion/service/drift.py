"""Drift detection: does each production endpoint the app manages still serve what the store says was approved?

The endpoints the app manages are those its promotions deployed to. One run reads the endpoint listing once and
each managed endpoint's deployment listing once (the request budget), and compares them with the store:

- `unapproved_model`: a deployment serves a model version that no promotion deployed there (deployed by hand, or
  by another tool, or another model put under the app's deployment name);
- `traffic_changed`: the traffic split differs from what the app last set (the traffic recorded by the latest
  `deployed` or `rolled_back` history entry of a promotion on that endpoint);
- `deployment_missing`: a `deployed` promotion whose deployment, or whole endpoint, is gone;
- `stale_deployment`: a deployment at 0% traffic for longer than production.stale_deployment_days. Azure records
  no "0% since", so the app records when it first saw one at 0%. Reported only, unless
  production.remove_stale_deployments is true; even then a deployment a rollback could return to, or the
  deployment of a `deployed` promotion, is never removed.

An endpoint with work in flight (an operation under way, a promotion approved, deploying or rolling back there) is
left alone for this run: its findings stay as they are, neither new ones nor resolutions. Each new finding is
recorded once and published once (`ModelPromotion.DriftDetected`), in one transaction; it stays open, and silent,
while it persists; when it clears, that is recorded and published once (`ModelPromotion.DriftResolved`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from promotion.domain import (
    DriftFinding,
    DriftKind,
    EventType,
    InvalidName,
    LifecycleEvent,
    ModelRef,
    Promotion,
    State,
    isoformat,
    online_name,
)
from promotion.policy import ProductionRules
from promotion.ports import Deployer, DeploymentFailed, OnlineDeployment, OnlineEndpoint, PromotionStore
from promotion.service.common import Clock

log = logging.getLogger("promotion")

DRIFT_ACTOR = "detect_drift"
# Promotions whose deployment the app put on the endpoint, and so approved to be there.
_DEPLOYED_ONCE = (State.DEPLOYED, State.ROLLING_BACK, State.ROLLED_BACK)
# History entries that record the traffic the app set on an endpoint.
_TRAFFIC_SET = (State.DEPLOYED.value, State.ROLLED_BACK.value)
_SETTLED = ("succeeded", "failed", "canceled")


@dataclass
class DriftReport:
    examined: list[str] = field(default_factory=list)  # managed endpoints compared in this run
    skipped: dict[str, str] = field(default_factory=dict)  # endpoint -> why it was left for the next run
    detected: list[DriftFinding] = field(default_factory=list)  # new this run (recorded and published)
    resolved: list[DriftFinding] = field(default_factory=list)  # cleared this run
    open: list[DriftFinding] = field(default_factory=list)  # every finding open after this run
    removed: list[str] = field(default_factory=list)  # "endpoint/deployment" stale deployments being deleted
    errors: dict[str, str] = field(default_factory=dict)  # endpoint -> why it could not be compared

    def to_json(self) -> dict[str, Any]:
        return {
            "examined": self.examined,
            "skipped": self.skipped,
            "detected": [finding.to_json() for finding in self.detected],
            "resolved": [finding.to_json() for finding in self.resolved],
            "open": [finding.to_json() for finding in self.open],
            "removed": self.removed,
            "errors": self.errors,
        }


def detect_drift(
    *, store: PromotionStore, deployer: Deployer, rules: ProductionRules, source: str, clock: Clock
) -> DriftReport:
    """One run: compare every managed endpoint with the store, record and publish what changed."""
    report = DriftReport()
    at = clock()
    promotions = store.list()
    managed: dict[str, list[Promotion]] = {}
    for promotion in promotions:
        if promotion.deployment.get("endpoint"):
            managed.setdefault(promotion.deployment["endpoint"], []).append(promotion)
    live = {endpoint.name: endpoint for endpoint in deployer.online_endpoints()}
    zero_since = store.zero_traffic_since()
    current: dict[str, DriftFinding] = {}
    for name in sorted(managed):
        busy = _work_in_flight(name, promotions, rules, live.get(name))
        if busy:
            report.skipped[name] = busy
            continue
        try:
            deployments = deployer.online_deployments(name) if name in live else []
        except Exception as error:  # one endpoint's failure never keeps the others from being compared
            report.errors[name] = f"{type(error).__name__}: {error}"
            log.exception("the deployments of endpoint %s could not be read; compared again at the next run", name)
            continue
        unsettled = [d.name for d in deployments if d.state.lower() not in _SETTLED]
        if unsettled:
            report.skipped[name] = f"an operation is under way on {', '.join(unsettled)}"
            continue
        report.examined.append(name)
        ours = managed[name]
        endpoint = live.get(name)
        found = [*_missing(name, ours, endpoint, deployments, at)]
        if endpoint is not None:
            found += _unapproved(name, ours, deployments, at)
            found += _traffic(name, ours, endpoint, at)
            found += _stale(name, ours, endpoint, deployments, rules, store, zero_since, deployer, report, at)
        current.update((finding.key, finding) for finding in found)

    _record(store, current, report, source, at)
    return report


def _record(
    store: PromotionStore, current: dict[str, DriftFinding], report: DriftReport, source: str, at: datetime
) -> None:
    """New findings opened, cleared ones resolved (on examined endpoints only), each with its one event."""
    already = {finding.key: finding for finding in store.drift_findings()}
    for key, finding in current.items():
        if key not in already and store.open_drift(finding, [drift_event(EventType.DRIFT_DETECTED, finding, source)]):
            report.detected.append(finding)
            log.warning("drift on %s: %s %s", finding.endpoint, finding.kind.value, finding.deployment or "")
    for key, finding in already.items():
        if finding.endpoint in report.examined and key not in current:
            cleared = replace(finding, resolved_at=at)
            if store.resolve_drift(cleared, [drift_event(EventType.DRIFT_RESOLVED, cleared, source)]):
                report.resolved.append(cleared)
                log.info("drift on %s resolved: %s %s", finding.endpoint, finding.kind.value, finding.deployment)
    report.open = store.drift_findings()


def drift_event(type: EventType, finding: DriftFinding, source: str) -> LifecycleEvent:
    at = finding.resolved_at if type is EventType.DRIFT_RESOLVED and finding.resolved_at else finding.detected_at
    return LifecycleEvent(str(uuid.uuid4()), type, source, finding.model, at, finding.to_json())


def _work_in_flight(name: str, promotions: list[Promotion], rules: ProductionRules, live: OnlineEndpoint | None) -> str:
    """Why the endpoint is mid-change, or "" when it is settled."""
    if live is not None and live.busy:
        return "an operation is under way on the endpoint"
    for promotion in promotions:
        if promotion.state in (State.DEPLOYING, State.ROLLING_BACK) and promotion.deployment.get("endpoint") == name:
            return f"promotion {promotion.id} is {promotion.state.value} there"
        if promotion.state is State.APPROVED and online_name(rules.endpoint_for(promotion.model)) == name:
            return f"promotion {promotion.id} is approved and about to deploy there"
    return ""


def _model(text: str | None) -> ModelRef | None:
    try:
        return ModelRef.from_text(text) if text else None
    except InvalidName:
        return None


def _missing(
    name: str, ours: list[Promotion], endpoint: OnlineEndpoint | None, deployments: list[OnlineDeployment], at: datetime
) -> list[DriftFinding]:
    present = {deployment.name for deployment in deployments}
    found = []
    for promotion in ours:
        deployment = promotion.deployment.get("deployment", "")
        if promotion.state is not State.DEPLOYED or deployment in present:
            continue
        actual = {"endpoint": None} if endpoint is None else {"endpoint": name, "deployment": None}
        found.append(
            DriftFinding(
                DriftKind.DEPLOYMENT_MISSING,
                name,
                deployment,
                expected={"endpoint": name, "deployment": deployment, "model": str(promotion.model)},
                actual=actual,
                detected_at=at,
                promotion_id=promotion.id,
                model=promotion.model,
            )
        )
    return found


def _unapproved(
    name: str, ours: list[Promotion], deployments: list[OnlineDeployment], at: datetime
) -> list[DriftFinding]:
    placed = {
        promotion.deployment.get("deployment"): promotion for promotion in ours if promotion.state in _DEPLOYED_ONCE
    }
    found = []
    for deployment in deployments:
        promotion = placed.get(deployment.name)
        if promotion is not None and deployment.model == str(promotion.model):
            continue
        found.append(
            DriftFinding(
                DriftKind.UNAPPROVED_MODEL,
                name,
                deployment.name,
                expected={"model": str(promotion.model) if promotion else None},
                actual={"model": deployment.model, "model_uri": deployment.model_uri},
                detected_at=at,
                promotion_id=promotion.id if promotion else None,
                model=_model(deployment.model),
            )
        )
    return found


def last_set_traffic(ours: list[Promotion]) -> tuple[dict[str, int], Promotion] | None:
    """The traffic the app last set on an endpoint: the latest `deployed` or `rolled_back` history entry, among the
    endpoint's promotions, that moved traffic (a deployment left at 0% records an empty split and moved none)."""
    latest: tuple[datetime, dict[str, int], Promotion] | None = None
    for promotion in ours:
        for entry in promotion.history:
            traffic = entry.detail.get("traffic")
            if entry.action in _TRAFFIC_SET and traffic and (latest is None or entry.at > latest[0]):
                latest = (entry.at, {key: int(share) for key, share in traffic.items() if int(share)}, promotion)
    return (latest[1], latest[2]) if latest else None


def _traffic(name: str, ours: list[Promotion], endpoint: OnlineEndpoint, at: datetime) -> list[DriftFinding]:
    last = last_set_traffic(ours)
    if last is None:
        return []
    expected, promotion = last
    actual = {key: int(share) for key, share in endpoint.traffic.items() if int(share)}
    if actual == expected:
        return []
    return [
        DriftFinding(
            DriftKind.TRAFFIC_CHANGED,
            name,
            "",
            expected={"traffic": expected},
            actual={"traffic": actual},
            detected_at=at,
            promotion_id=promotion.id,
            model=promotion.model,
        )
    ]


def _stale(
    name: str,
    ours: list[Promotion],
    endpoint: OnlineEndpoint,
    deployments: list[OnlineDeployment],
    rules: ProductionRules,
    store: PromotionStore,
    zero_since: dict[tuple[str, str], datetime],
    deployer: Deployer,
    report: DriftReport,
    at: datetime,
) -> list[DriftFinding]:
    present = {deployment.name for deployment in deployments}
    for endpoint_name, deployment_name in list(zero_since):
        if endpoint_name == name and deployment_name not in present:
            store.clear_zero_traffic(name, deployment_name)  # gone: a new one of that name starts afresh
    protected = _protected(ours)
    found = []
    for deployment in deployments:
        key = (name, deployment.name)
        if endpoint.traffic.get(deployment.name, 0):
            if key in zero_since:
                store.clear_zero_traffic(name, deployment.name)
            continue
        since = zero_since.get(key) or store.note_zero_traffic(name, deployment.name, at)
        if at - since <= rules.stale_after:
            continue
        promotion = next((p for p in ours if p.deployment.get("deployment") == deployment.name), None)
        actual: dict[str, Any] = {"traffic": 0, "at_zero_since": isoformat(since)}
        if rules.remove_stale_deployments:
            actual["removal"] = protected.get(deployment.name) or _remove(deployer, name, deployment.name, report)
        found.append(
            DriftFinding(
                DriftKind.STALE_DEPLOYMENT,
                name,
                deployment.name,
                expected={"stale_deployment_days": rules.stale_deployment_days},
                actual=actual,
                detected_at=at,
                promotion_id=promotion.id if promotion else None,
                model=_model(deployment.model),
            )
        )
    return found


def _protected(ours: list[Promotion]) -> dict[str, str]:
    """Deployments never removed, and why: those a rollback could return to, and those of deployed promotions."""
    kept = {}
    for promotion in ours:
        if promotion.state not in (State.DEPLOYED, State.ROLLING_BACK):
            continue
        for before in promotion.deployment.get("previous_traffic") or {}:
            kept[before] = f"kept: a rollback of promotion {promotion.id} could return to it"
        kept[promotion.deployment.get("deployment", "")] = f"kept: the deployment of promotion {promotion.id}"
    return kept


def _remove(deployer: Deployer, endpoint: str, deployment: str, report: DriftReport) -> str:
    try:
        deployer.delete_deployment(endpoint, deployment)
    except DeploymentFailed as refused:
        report.errors[f"{endpoint}/{deployment}"] = str(refused)
        return f"refused: {refused}"
    report.removed.append(f"{endpoint}/{deployment}")
    log.warning(
        "stale deployment %s on %s is being removed (production.remove_stale_deployments)", deployment, endpoint
    )
    return "started"
