"""Reconcile: catch what events miss, and backtest: what a candidate policy would have let through.

Events are not the whole truth. Azure ML emits none when tags are added to a model after it was registered,
and events can be dropped (answers Event Grid does not retry, a subscription created after the models, a
dead-lettered delivery). The sweep lists staging and the registry and starts, through the same path as an
event, the copies of qualifying versions the registry lacks.

Request budget over N staging versions in M names: one staging name listing (per page), one version listing
per name in staging and one in the registry, and one request per copy started. Versions the registry holds
cost nothing more.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from promotion import logs
from promotion.domain import Lineage, ModelRef, ModelVersion, Outcome
from promotion.policy import Policy
from promotion.ports import PromotionStore, RegistryModels, WorkspaceModels
from promotion.service.common import Clock
from promotion.service.propagation import consider, foreign_source

log = logging.getLogger("promotion")
ACTOR = "reconcile_registry"


@dataclass
class ReconcileReport:
    run_id: str
    dry_run: bool
    copied: list[str] = field(default_factory=list)  # copies started (or, in a dry run, that would be)
    already_in_registry: list[str] = field(default_factory=list)
    copying: list[str] = field(default_factory=list)  # a copy is under way already
    not_qualified: dict[str, list[str]] = field(default_factory=dict)  # version -> failed rules
    conflicts: dict[str, str] = field(default_factory=dict)  # the registry holds it, but not as our copy
    errors: dict[str, str] = field(default_factory=dict)  # a name or version -> what went wrong

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "copied": self.copied,
            "already_in_registry": self.already_in_registry,
            "copying": self.copying,
            "not_qualified": self.not_qualified,
            "conflicts": self.conflicts,
            "errors": self.errors,
        }


def reconcile(
    *,
    staging_workspace_id: str,
    staging: WorkspaceModels,
    registry: RegistryModels,
    policy: Callable[[], Policy],
    store: PromotionStore | None,
    dry_run: bool,
    source: str = "local",
    clock: Clock,
) -> ReconcileReport:
    """Start the copies of qualifying staging versions that the registry lacks. A dry run changes nothing and
    needs no store: it says what a real run would do (not knowing which copies are under way)."""
    if not dry_run and store is None:
        raise ValueError("a real reconcile run needs the promotion store")
    report = ReconcileReport(run_id=clock().strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6], dry_run=dry_run)
    rules = policy()  # read once, so the whole run judges by one policy
    for name in staging.names():
        try:
            staged = staging.versions(name)
            held = {model.version: model for model in registry.versions(name)}
        except Exception as error:
            report.errors[name] = f"{type(error).__name__}: {error}"
            log.warning("reconcile could not list %s: %s", name, error)
            continue
        for model in staged:
            version = held.get(model.version)
            if version is not None and Lineage.is_tagged(version.tags):
                other = foreign_source(version.tags, model.ref, staging_workspace_id)
                if other is None:
                    report.already_in_registry.append(str(model.ref))
                else:
                    report.conflicts[str(model.ref)] = f"the registry holds it as a copy of {other}; left untouched"
            elif dry_run:
                _predict(report, model, version, rules)
            else:
                assert store is not None
                ports = {"staging": staging, "registry": registry, "store": store, "source": source, "clock": clock}
                _act(report, model, version, rules, staging_workspace_id, ports)
    log.info(
        "reconcile %s%s: %d copied, %d already in the registry, %d copying, %d not qualified, %d errors",
        report.run_id,
        " (dry run)" if dry_run else "",
        len(report.copied),
        len(report.already_in_registry),
        len(report.copying),
        len(report.not_qualified),
        len(report.errors),
    )
    return report


def _predict(report: ReconcileReport, model: ModelVersion, held: ModelVersion | None, rules: Policy) -> None:
    verdict = rules.evaluate(model)
    if not verdict.qualifies:
        report.not_qualified[str(model.ref)] = list(verdict.failed_rules)
    elif held is not None and held.type != model.type:
        report.conflicts[str(model.ref)] = f"the registry holds it as a {held.type}, staging as a {model.type}"
    else:
        report.copied.append(str(model.ref))


def _act(
    report: ReconcileReport,
    model: ModelVersion,
    held: ModelVersion | None,
    rules: Policy,
    staging_workspace_id: str,
    ports: dict[str, Any],
) -> None:
    key = str(model.ref)
    cause = reconcile_cause(report.run_id, model.ref)
    with logs.fields(event_id=cause, model=model.ref):
        try:
            decision = consider(
                model.ref,
                cause=cause,
                staging_workspace_id=staging_workspace_id,
                policy=lambda: rules,
                actor=ACTOR,
                held=held,
                staged=model,
                **ports,
            )
        except Exception as error:
            report.errors[key] = f"{type(error).__name__}: {error}"
            log.warning("reconcile could not act on %s: %s", key, error)
            return
    outcome = decision.outcome
    if outcome is Outcome.COPY_STARTED:
        report.copied.append(key)  # consider() recorded the decision with the copy
    elif outcome is Outcome.COPY_IN_PROGRESS:
        report.copying.append(key)
    elif outcome is Outcome.NOT_QUALIFIED:
        report.not_qualified[key] = list(decision.reasons)
    elif outcome is Outcome.ALREADY_IN_REGISTRY:
        report.already_in_registry.append(key)
    elif outcome is Outcome.COPY_FAILED:
        report.errors[key] = "; ".join(decision.reasons)  # the registry refused the copy for good
    else:
        report.conflicts[key] = "; ".join(decision.reasons)


def reconcile_cause(run_id: str, ref: ModelRef) -> str:
    return f"reconcile:{run_id}:{ref.name}:{ref.version}"


# --- policy backtest -------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerdictChange:
    model: str
    admitted_before: bool
    admitted_after: bool
    rules_now_failing: tuple[str, ...]
    rules_now_passing: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "admitted_by_current": self.admitted_before,
            "admitted_by_candidate": self.admitted_after,
            "rules_now_failing": list(self.rules_now_failing),
            "rules_now_passing": list(self.rules_now_passing),
        }


@dataclass
class BacktestReport:
    current_digest: str
    candidate_digest: str
    versions: int = 0
    admitted: dict[str, int] = field(default_factory=lambda: {"current": 0, "candidate": 0})
    refused: dict[str, int] = field(default_factory=lambda: {"current": 0, "candidate": 0})
    changes: list[VerdictChange] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "current_policy": self.current_digest,
            "candidate_policy": self.candidate_digest,
            "versions": self.versions,
            "admitted": self.admitted,
            "refused": self.refused,
            "changes": [change.to_json() for change in self.changes],
        }


def backtest(*, current: Policy, candidate: Policy, staging: WorkspaceModels) -> BacktestReport:
    """Evaluate both policies on every active staging version. Reads only; writes nothing."""
    report = BacktestReport(current.digest, candidate.digest)
    for name in staging.names():
        for model in staging.versions(name):
            before, after = current.evaluate(model), candidate.evaluate(model)
            report.versions += 1
            for which, verdict in (("current", before), ("candidate", after)):
                (report.admitted if verdict.qualifies else report.refused)[which] += 1
            if before.failed_rules != after.failed_rules:
                report.changes.append(
                    VerdictChange(
                        str(model.ref),
                        before.qualifies,
                        after.qualifies,
                        tuple(rule for rule in after.failed_rules if rule not in before.failed_rules),
                        tuple(rule for rule in before.failed_rules if rule not in after.failed_rules),
                    )
                )
    return report
