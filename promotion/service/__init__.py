"""Use cases, one module each. Every use case takes its ports as parameters, so the same code runs on Azure,
locally and in tests:

- propagation: a ModelRegistered event starts the registry copy of a qualifying model;
- copies: the timer finishes registry copies (lineage, or the failure);
- reconcile: the sweep that catches what events miss, and the policy backtest;
- approval: production sharing requests, N-of-M approvals, rejection, expiry and rollback;
- artifact: the check that binds an approval to the exact registry version requested;
- deployment: the deployment worker and its timer;
- drift: production compared with what was approved;
- lifecycle: the lifecycle events the app publishes (a transactional outbox);
- status: the status view of a model version.
"""

from promotion.service.approval import (
    ConcurrentChange,
    Conflict,
    ModelNotInRegistry,
    NotAllowed,
    NotDeployable,
    advance_rollback,
    approve,
    expire_stale_requests,
    may_approve,
    reject,
    request_promotion,
    rollback,
)
from promotion.service.artifact import Voided
from promotion.service.copies import advance_registry_copies
from promotion.service.deployment import advance_deployments, deploy, fail_abandoned_job
from promotion.service.drift import detect_drift
from promotion.service.lifecycle import publish_pending, publish_soon, purge_decisions, purge_published
from promotion.service.propagation import consider, propagate
from promotion.service.reconcile import backtest, reconcile
from promotion.service.status import model_status

__all__ = [
    "ConcurrentChange",
    "Conflict",
    "ModelNotInRegistry",
    "NotAllowed",
    "NotDeployable",
    "Voided",
    "advance_deployments",
    "advance_registry_copies",
    "advance_rollback",
    "approve",
    "backtest",
    "consider",
    "deploy",
    "detect_drift",
    "expire_stale_requests",
    "fail_abandoned_job",
    "model_status",
    "may_approve",
    "propagate",
    "publish_pending",
    "publish_soon",
    "purge_decisions",
    "purge_published",
    "reconcile",
    "reject",
    "request_promotion",
    "rollback",
]
