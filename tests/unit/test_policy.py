import json

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
    ],
)
def test_invalid_documents_name_the_field(document, message):
    with pytest.raises(PolicyError, match=message):
        Policy.from_document(document)


def test_load_names_the_file(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(PolicyError, match=f"{missing}: policy file not found"):
        Policy.load(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(PolicyError, match=f"{broken}: not valid JSON"):
        Policy.load(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"production": {"instance_count": -1}}')
    with pytest.raises(PolicyError, match=f"{wrong}: production.instance_count"):
        Policy.load(wrong)


def test_production_defaults_and_endpoint_template():
    rules = Policy.from_document({"production": {"endpoint": "{name}-v{version}"}}).production
    assert rules.require_distinct_approver is True and rules.traffic_percent == 100
    assert rules.endpoint_for(ModelRef("churn", "7")) == "churn-v7"
