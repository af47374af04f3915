import json
import math
import re
from datetime import timedelta

import pytest

from promotion.domain import ModelRef, ModelVersion
from promotion.policy import Policy, PolicyError

ISSUE_EXAMPLE = {
    "share_to_registry": {
        "model_types": ["mlflow_model"],
        "include": ["*"],
        "exclude": [],
        "require_tags": {"stage": "candidate"},
        "require_description": False,
        "thresholds": [{"tag": "accuracy", "op": ">=", "value": 0.8}],
    }
}


def model(name="churn", type="mlflow_model", tags=None, properties=None, description=None):
    return ModelVersion(ModelRef(name, "1"), type, tags or {}, properties or {}, description)


def test_the_documented_example_admits_a_good_candidate():
    verdict = Policy.from_document(ISSUE_EXAMPLE).evaluate(model(tags={"stage": "candidate", "accuracy": "0.91"}))
    assert verdict.qualifies and verdict.failed_rules == ()
    assert verdict.policy_digest.startswith("sha256:")


def test_every_failed_rule_is_listed():
    policy = Policy.from_document(
        {
            "share_to_registry": {
                "model_types": ["mlflow_model"],
                "include": ["credit-*"],
                "exclude": ["*-tmp"],
                "require_tags": {"stage": "candidate", "owner": "*"},
                "require_description": True,
                "thresholds": [
                    {"tag": "accuracy", "op": ">=", "value": 0.8},
                    {"property": "auc", "op": ">", "value": 0.7},
                    {"tag": "latency_ms", "op": "<", "value": 50},
                ],
            }
        }
    )
    verdict = policy.evaluate(
        model("churn-tmp", "custom_model", tags={"stage": "dev", "accuracy": "0.5", "latency_ms": "fast"})
    )
    assert not verdict.qualifies
    assert [rule.split(":")[0] for rule in verdict.failed_rules] == [
        "model_types",
        "include",
        "exclude",
        "require_tags",
        "require_tags",
        "require_description",
        "thresholds[0]",
        "thresholds[1]",
        "thresholds[2]",
    ]
    assert "tag 'stage' is 'dev', needs 'candidate'" in verdict.failed_rules[3]
    assert "tag 'owner' is missing" in verdict.failed_rules[4]
    assert "0.5, needs >= 0.8" in verdict.failed_rules[6]
    assert "property 'auc' is missing" in verdict.failed_rules[7]
    assert "not a number" in verdict.failed_rules[8]


@pytest.mark.parametrize(
    "op, value, qualifies",
    [(">", 0.8, False), (">=", 0.8, True), ("<", 0.9, True), ("<=", 0.7, False), ("==", 0.8, True), ("!=", 0.8, False)],
)
def test_threshold_operators(op, value, qualifies):
    policy = Policy.from_document({"share_to_registry": {"thresholds": [{"tag": "a", "op": op, "value": value}]}})
    assert policy.evaluate(model(tags={"a": "0.8"})).qualifies is qualifies


def test_a_missing_key_does_not_restrict():
    assert Policy.from_document({}).evaluate(model(type="custom_model")).qualifies


def test_wildcard_tag_requires_presence_only():
    policy = Policy.from_document({"share_to_registry": {"require_tags": {"owner": "*"}}})
    assert policy.evaluate(model(tags={"owner": "anyone"})).qualifies
    assert not policy.evaluate(model()).qualifies


def test_the_digest_changes_with_the_policy():
    other = json.loads(json.dumps(ISSUE_EXAMPLE))
    other["share_to_registry"]["thresholds"][0]["value"] = 0.9
    assert Policy.from_document(ISSUE_EXAMPLE).digest != Policy.from_document(other).digest


@pytest.mark.parametrize(
    "document, message",
    [
        ([], "policy: expected an object"),
        ({"share": {}}, "policy: unknown key 'share'"),
        ({"share_to_registry": {"require_tag": {}}}, "share_to_registry: unknown key 'require_tag'"),
        ({"share_to_registry": {"model_types": ["onnx"]}}, "share_to_registry.model_types: 'onnx'"),
        ({"share_to_registry": {"include": "*"}}, "share_to_registry.include: expected a list"),
        ({"share_to_registry": {"require_tags": {"a": 1}}}, "share_to_registry.require_tags"),
        ({"share_to_registry": {"require_description": "yes"}}, "share_to_registry.require_description"),
        ({"share_to_registry": {"thresholds": [{"tag": "a", "op": "=>", "value": 1}]}}, r"thresholds\[0\]\.op"),
        ({"share_to_registry": {"thresholds": [{"tag": "a", "op": ">", "value": "1"}]}}, r"thresholds\[0\]\.value"),
        ({"share_to_registry": {"thresholds": [{"op": ">", "value": 1}]}}, r"thresholds\[0\]: give exactly one"),
        ({"production": {"traffic_percent": 0}}, "production.traffic_percent"),
        ({"production": {"endpoint": "{model}-prod"}}, "production.endpoint"),
        ({"production": {"approvers": [""]}}, "production.approvers"),
        ({"production": {"void_on_tag_change": "accuracy"}}, "production.void_on_tag_change: expected a list"),
        ({"production": {"void_on_tag_change": [1]}}, "production.void_on_tag_change: expected a list"),
        ({"production": {"stale_deployment_days": 0}}, "production.stale_deployment_days: expected a positive"),
        ({"production": {"remove_stale_deployments": "yes"}}, "production.remove_stale_deployments: expected true"),
        ({"production": {"void_on_tag_changes": []}}, "production: unknown key 'void_on_tag_changes'"),
    ],
)
def test_invalid_documents_name_the_field(document, message):
    with pytest.raises(PolicyError, match=message):
        Policy.from_document(document)


def test_load_names_the_file(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(PolicyError, match=re.escape(f"{missing}: policy file not found")):
        Policy.load(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(PolicyError, match=re.escape(f"{broken}: not valid JSON")):
        Policy.load(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"production": {"instance_count": -1}}')
    with pytest.raises(PolicyError, match=re.escape(f"{wrong}: production.instance_count")):
        Policy.load(wrong)


@pytest.mark.parametrize(
    "content, detail",
    [
        (None, "policy file not found (check PROMOTION_POLICY_FILE)"),
        ("{not json", "not valid JSON"),
        ('{"production": {"required_approvals": 0}}', "production.required_approvals"),
        ('{"production": {"approval_ttl_hours": "1"}}', "production.approval_ttl_hours"),
        (b"\xff\xfe not utf-8", "cannot read the policy file"),
    ],
)
def test_the_detail_of_a_policy_error_has_no_file_path(tmp_path, content, detail):
    # The detail goes into API answers, where the path (a setting's value) must not appear.
    folder = tmp_path / "secret-folder-name"
    folder.mkdir()
    path = folder / "policy.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)

    with pytest.raises(PolicyError) as refused:
        Policy.load(path)

    assert detail in refused.value.detail
    assert "secret-folder-name" not in refused.value.detail and str(tmp_path) not in refused.value.detail
    assert str(path) in str(refused.value)  # the log and the CLI still say which file


def test_a_policy_error_outside_a_file_has_its_message_as_detail():
    with pytest.raises(PolicyError) as refused:
        Policy.from_document({"production": {"required_approvals": 0}})
    assert refused.value.detail == str(refused.value)


def test_production_defaults_and_endpoint_template():
    rules = Policy.from_document({"production": {"endpoint": "{name}-v{version}"}}).production
    assert rules.require_distinct_approver is True and rules.traffic_percent == 100
    assert rules.endpoint_for(ModelRef("churn", "7")) == "churn-v7"


def test_production_defaults_of_the_new_fields():
    rules = Policy.from_document({}).production
    assert rules.required_approvals == 1
    assert rules.approval_ttl == timedelta(hours=168)
    assert rules.deploy_timeout == timedelta(minutes=90)
    assert rules.job_grace == timedelta(minutes=10)
    assert rules.void_on_tag_change == () and rules.remove_stale_deployments is False
    assert rules.stale_after == timedelta(days=14)


def test_the_artifact_and_drift_options_are_read():
    production = {
        "void_on_tag_change": ["accuracy", "mae"],
        "stale_deployment_days": 0.5,
        "remove_stale_deployments": True,
    }
    rules = Policy.from_document({"production": production}).production
    assert rules.void_on_tag_change == ("accuracy", "mae") and rules.remove_stale_deployments is True
    assert rules.stale_after == timedelta(hours=12)


def test_production_fields_take_fractions_so_tests_can_use_seconds():
    rules = Policy.from_document(
        {
            "production": {
                "required_approvals": 2,
                "approval_ttl_hours": 0.5,
                "deploy_timeout_minutes": 0.05,
                "job_grace_minutes": 1.5,
            }
        }
    ).production
    assert rules.required_approvals == 2
    assert rules.approval_ttl == timedelta(minutes=30)
    assert rules.deploy_timeout == timedelta(seconds=3)
    assert rules.job_grace == timedelta(seconds=90)


@pytest.mark.parametrize("value", [1, 2, 3, 100])
def test_required_approvals_accepts_whole_numbers_from_1_to_100(value):
    assert Policy.from_document({"production": {"required_approvals": value}}).production.required_approvals == value


@pytest.mark.parametrize("value", [0, -1, 101, 1.5, 2.0, "2", True, False, None, [2], math.nan])
def test_required_approvals_refuses_anything_else_naming_the_field(value):
    with pytest.raises(PolicyError, match=r"production\.required_approvals: expected a whole number from 1 to 100"):
        Policy.from_document({"production": {"required_approvals": value}})


DURATIONS = ("approval_ttl_hours", "deploy_timeout_minutes", "job_grace_minutes")


@pytest.mark.parametrize("field", DURATIONS)
@pytest.mark.parametrize("value", [1, 0.001, 2.5, 168, 24 * 365])
def test_durations_accept_positive_numbers(field, value):
    rules = Policy.from_document({"production": {field: value}}).production
    assert getattr(rules, field) == value
    assert isinstance(getattr(rules, field), float)
    assert rules.approval_ttl > timedelta(0) and rules.deploy_timeout > timedelta(0) and rules.job_grace > timedelta(0)


@pytest.mark.parametrize("field", DURATIONS)
@pytest.mark.parametrize(
    "value", [0, 0.0, -1, -0.5, "1", "", True, False, None, [], {}, math.nan, math.inf, -math.inf, 1e300]
)
def test_durations_refuse_anything_else_naming_the_field(field, value):
    # 1e300 would pass as positive, and then overflow the timedelta the service computes from it.
    with pytest.raises(PolicyError, match=rf"production\.{field}: expected a positive number"):
        Policy.from_document({"production": {field: value}})


def test_a_nan_duration_in_a_file_is_refused(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text('{"production": {"deploy_timeout_minutes": NaN}}')  # Python's json module reads NaN
    with pytest.raises(PolicyError, match=r"production\.deploy_timeout_minutes"):
        Policy.load(path)


def test_the_digest_covers_the_production_fields():
    base = Policy.from_document({"production": {"required_approvals": 1}}).digest
    assert Policy.from_document({"production": {"required_approvals": 2}}).digest != base
    assert Policy.from_document({"production": {"required_approvals": 1, "job_grace_minutes": 5}}).digest != base
