"""The promotion policy, kept as code in a JSON file.

Validation is strict: an unknown key is an error, because a misspelt rule ("require_tag") would
otherwise restrict nothing and let every model through.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import operator
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from promotion.domain import MODEL_TYPES, ModelRef, ModelVersion, Verdict

_OPERATORS: Mapping[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


class PolicyError(ValueError):
    """The policy file is missing or invalid; the message names the file and the field.

    `detail` is the message without the file's path, for answers that must not show a setting's value.
    """

    def __init__(self, message: str, *, detail: str | None = None):
        super().__init__(message)
        self.detail = detail or message


@dataclass(frozen=True)
class Threshold:
    source: str  # "tag" or "property"
    key: str
    op: str
    value: float

    def check(self, model: ModelVersion) -> str | None:
        """None when the rule holds, else why it failed."""
        values = model.tags if self.source == "tag" else model.properties
        label = f"{self.source} {self.key!r}"
        if self.key not in values:
            return f"{label} is missing (needs {self.op} {self.value:g})"
        actual = _number(values[self.key])
        if actual is None:
            return f"{label} = {values[self.key]!r} is not a number (needs {self.op} {self.value:g})"
        if not _OPERATORS[self.op](actual, self.value):
            return f"{label} = {actual:g}, needs {self.op} {self.value:g}"
        return None


@dataclass(frozen=True)
class ShareRules:
    model_types: tuple[str, ...] | None = None
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    require_tags: Mapping[str, str] = field(default_factory=dict)
    require_description: bool = False
    thresholds: tuple[Threshold, ...] = ()


@dataclass(frozen=True)
class ProductionRules:
    approvers: tuple[str, ...] = ()
    approver_roles: tuple[str, ...] = ()
    require_distinct_approver: bool = True
    endpoint: str = "{name}-prod"
    instance_type: str = "Standard_F4s_v2"
    instance_count: int = 1
    traffic_percent: int = 100
    required_approvals: int = 1
    approval_ttl_hours: float = 168
    deploy_timeout_minutes: float = 90
    job_grace_minutes: float = 10
    # Tags whose change between request and approval (or deployment) voids the promotion, e.g. a metric.
    void_on_tag_change: tuple[str, ...] = ()
    # A deployment at 0% traffic for longer than this is reported as stale drift; removed only when
    # remove_stale_deployments is true, and never one a rollback could return to.
    stale_deployment_days: float = 14
    remove_stale_deployments: bool = False

    def endpoint_for(self, model: ModelRef) -> str:
        return self.endpoint.format(name=model.name, version=model.version)

    @property
    def endpoint_per_model(self) -> bool:
        """Whether the endpoint template names the model: then each endpoint serves one model only. A template
        without {name} shares one endpoint between models on purpose."""
        return any(field == "name" for _, field, _, _ in string.Formatter().parse(self.endpoint))

    @property
    def approval_ttl(self) -> timedelta:
        return timedelta(hours=self.approval_ttl_hours)

    @property
    def deploy_timeout(self) -> timedelta:
        return timedelta(minutes=self.deploy_timeout_minutes)

    @property
    def job_grace(self) -> timedelta:
        return timedelta(minutes=self.job_grace_minutes)

    @property
    def stale_after(self) -> timedelta:
        return timedelta(days=self.stale_deployment_days)


@dataclass(frozen=True)
class Policy:
    share: ShareRules
    production: ProductionRules
    digest: str  # identifies the exact policy that admitted a model; recorded in lineage tags

    def evaluate(self, model: ModelVersion) -> Verdict:
        rules = self.share
        failed: list[str] = []
        if rules.model_types is not None and model.type not in rules.model_types:
            failed.append(f"model_types: type {model.type!r} is not one of {', '.join(rules.model_types)}")
        if rules.include is not None and not any(fnmatch.fnmatchcase(model.name, p) for p in rules.include):
            failed.append(f"include: name {model.name!r} matches none of {', '.join(rules.include)}")
        excluded_by = [p for p in rules.exclude if fnmatch.fnmatchcase(model.name, p)]
        if excluded_by:
            failed.append(f"exclude: name {model.name!r} matches {', '.join(excluded_by)}")
        for tag, wanted in rules.require_tags.items():
            if tag not in model.tags:
                failed.append(f"require_tags: tag {tag!r} is missing")
            elif wanted != "*" and str(model.tags[tag]) != wanted:
                failed.append(f"require_tags: tag {tag!r} is {model.tags[tag]!r}, needs {wanted!r}")
        if rules.require_description and not (model.description or "").strip():
            failed.append("require_description: the model has no description")
        for index, threshold in enumerate(rules.thresholds):
            reason = threshold.check(model)
            if reason:
                failed.append(f"thresholds[{index}]: {reason}")
        return Verdict(failed_rules=tuple(failed), policy_digest=self.digest)

    @classmethod
    def load(cls, path: Path, *, named_by: str = "PROMOTION_POLICY_FILE") -> Policy:
        """`named_by` is where the path came from (the setting, or a command-line option): a missing file names it."""

        def error(detail: str) -> PolicyError:
            return PolicyError(f"{path}: {detail}", detail=detail)

        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise error(f"policy file not found (check {named_by})") from None
        except (OSError, UnicodeDecodeError) as problem:
            raise error(f"cannot read the policy file: {type(problem).__name__}") from None
        try:
            document = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as problem:
            raise error(f"not valid JSON: {problem}") from None
        try:
            return cls.from_document(document)
        except PolicyError as problem:
            raise error(str(problem)) from None

    @classmethod
    def from_document(cls, document: Any) -> Policy:
        root = _Fields(document, "policy", allowed=("share_to_registry", "production"))
        share = _parse_share(_Fields(root.get("share_to_registry", {}), "share_to_registry", _SHARE_KEYS))
        production = _parse_production(_Fields(root.get("production", {}), "production", _PRODUCTION_KEYS))
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
        digest = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]
        return cls(share=share, production=production, digest=digest)


_SHARE_KEYS = ("model_types", "include", "exclude", "require_tags", "require_description", "thresholds")
_PRODUCTION_KEYS = (
    "approvers",
    "approver_roles",
    "require_distinct_approver",
    "endpoint",
    "instance_type",
    "instance_count",
    "traffic_percent",
    "required_approvals",
    "approval_ttl_hours",
    "deploy_timeout_minutes",
    "job_grace_minutes",
    "void_on_tag_change",
    "stale_deployment_days",
    "remove_stale_deployments",
)


def _parse_share(fields: _Fields) -> ShareRules:
    model_types = fields.strings("model_types") if "model_types" in fields else None
    for model_type in model_types or ():
        if model_type not in MODEL_TYPES:
            raise PolicyError(f"share_to_registry.model_types: {model_type!r} is not one of {', '.join(MODEL_TYPES)}")
    require_tags = fields.get("require_tags", {})
    if not isinstance(require_tags, dict) or not all(isinstance(v, str) for v in require_tags.values()):
        raise PolicyError('share_to_registry.require_tags: expected an object of tag -> value ("*" for any)')
    thresholds = fields.get("thresholds", [])
    if not isinstance(thresholds, list):
        raise PolicyError("share_to_registry.thresholds: expected a list")
    return ShareRules(
        model_types=model_types,
        include=fields.strings("include") if "include" in fields else None,
        exclude=fields.strings("exclude") if "exclude" in fields else (),
        require_tags=dict(require_tags),
        require_description=fields.boolean("require_description", False),
        thresholds=tuple(
            _parse_threshold(item, f"share_to_registry.thresholds[{i}]") for i, item in enumerate(thresholds)
        ),
    )


def _parse_threshold(item: Any, where: str) -> Threshold:
    fields = _Fields(item, where, allowed=("tag", "property", "op", "value"))
    sources = [source for source in ("tag", "property") if source in fields]
    if len(sources) != 1:
        raise PolicyError(f'{where}: give exactly one of "tag" or "property"')
    key = fields.get(sources[0])
    if not isinstance(key, str) or not key:
        raise PolicyError(f"{where}.{sources[0]}: expected a non-empty string")
    op = fields.get("op")
    if op not in _OPERATORS:
        raise PolicyError(f"{where}.op: {op!r} is not one of {' '.join(_OPERATORS)}")
    value = fields.get("value")
    if _number(value) is None or isinstance(value, str):
        raise PolicyError(f"{where}.value: expected a number")
    return Threshold(source=sources[0], key=key, op=op, value=float(value))


def _parse_production(fields: _Fields) -> ProductionRules:
    defaults = ProductionRules()
    endpoint = fields.get("endpoint", defaults.endpoint)
    if not isinstance(endpoint, str) or not endpoint:
        raise PolicyError('production.endpoint: expected a name template such as "{name}-prod"')
    placeholders = {name for _, name, _, _ in string.Formatter().parse(endpoint) if name is not None}
    if not placeholders <= {"name", "version"}:
        raise PolicyError("production.endpoint: only {name} and {version} may be used in the template")
    instance_type = fields.get("instance_type", defaults.instance_type)
    if not isinstance(instance_type, str) or not instance_type:
        raise PolicyError('production.instance_type: expected a VM size such as "Standard_F4s_v2"')
    return ProductionRules(
        approvers=fields.strings("approvers") if "approvers" in fields else (),
        approver_roles=fields.strings("approver_roles") if "approver_roles" in fields else (),
        require_distinct_approver=fields.boolean("require_distinct_approver", True),
        endpoint=endpoint,
        instance_type=instance_type,
        instance_count=fields.integer("instance_count", defaults.instance_count, 1, 1000),
        traffic_percent=fields.integer("traffic_percent", defaults.traffic_percent, 1, 100),
        required_approvals=fields.integer("required_approvals", defaults.required_approvals, 1, 100),
        approval_ttl_hours=fields.duration("approval_ttl_hours", defaults.approval_ttl_hours),
        deploy_timeout_minutes=fields.duration("deploy_timeout_minutes", defaults.deploy_timeout_minutes),
        job_grace_minutes=fields.duration("job_grace_minutes", defaults.job_grace_minutes),
        void_on_tag_change=fields.strings("void_on_tag_change") if "void_on_tag_change" in fields else (),
        stale_deployment_days=fields.duration("stale_deployment_days", defaults.stale_deployment_days),
        remove_stale_deployments=fields.boolean("remove_stale_deployments", defaults.remove_stale_deployments),
    )


class _Fields:
    """One JSON object of the policy, with typed getters whose errors name the field."""

    def __init__(self, value: Any, where: str, allowed: tuple[str, ...]):
        if not isinstance(value, dict):
            raise PolicyError(f"{where}: expected an object")
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise PolicyError(f"{where}: unknown key {unknown[0]!r} (known keys: {', '.join(allowed)})")
        self._value = value
        self._where = where

    def __contains__(self, key: str) -> bool:
        return key in self._value

    def get(self, key: str, default: Any = None) -> Any:
        return self._value.get(key, default)

    def strings(self, key: str) -> tuple[str, ...]:
        value = self._value[key]
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise PolicyError(f"{self._where}.{key}: expected a list of non-empty strings")
        return tuple(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._value.get(key, default)
        if not isinstance(value, bool):
            raise PolicyError(f"{self._where}.{key}: expected true or false")
        return value

    def duration(self, key: str, default: float) -> float:
        """A positive number of hours or minutes; fractions are allowed (a test may use seconds)."""
        value = self._value.get(key, default)
        if _number(value) is None or isinstance(value, str) or not 0 < value <= 10**6:
            raise PolicyError(f"{self._where}.{key}: expected a positive number (fractions are allowed)")
        return float(value)

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self._value.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise PolicyError(f"{self._where}.{key}: expected a whole number from {low} to {high}")
        return value


def _number(value: Any) -> float | None:
    """Tags and properties are strings in Azure ML; thresholds compare them as numbers."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
