import pytest

from promotion.domain import ModelRef
from promotion.events import MODEL_REGISTERED, MalformedEvent, ModelRegistered, OtherEvent, parse, same_resource

# The ModelRegistered event as the Azure ML docs show it, in both schemas. Note the number 20 in one and
# the string "20" in the other, and the empty dataVersion.
_DOCS_DATA = {
    "ModelName": "sklearn_regression_model",
    "ModelTags": {"area": "diabetes", "type": "regression"},
    "ModelProperties": {"type": "test"},
}
_DOCS_TOPIC = (
    "/subscriptions/{subscription-id}/resourceGroups/{resource-group-name}"
    "/providers/Microsoft.MachineLearningServices/workspaces/{workspace-name}"
)
DOCS_EVENT_GRID = {
    "topic": _DOCS_TOPIC,
    "subject": "models/sklearn_regression_model:20",
    "eventType": MODEL_REGISTERED,
    "eventTime": "2017-06-26T18:41:00.9584103Z",
    "id": "831e1650-001e-001b-66ab-eeb76e069631",
    "data": {**_DOCS_DATA, "ModelVersion": 20},
    "dataVersion": "",
    "metadataVersion": "1",
}
DOCS_CLOUD_EVENT = {
    "source": _DOCS_TOPIC,
    "subject": "models/sklearn_regression_model:20",
    "type": MODEL_REGISTERED,
    "time": "2017-06-26T18:41:00.9584103Z",
    "id": "831e1650-001e-001b-66ab-eeb76e069631",
    "data": {**_DOCS_DATA, "ModelVersion": "20"},
    "specversion": "1.0",
}
TOPIC = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws"


def event(**overrides):
    base = {
        "id": "e-1",
        "topic": TOPIC,
        "subject": "models/churn:3",
        "eventType": MODEL_REGISTERED,
        "data": {"ModelName": "churn", "ModelVersion": "3", "ModelTags": {"stage": "candidate"}, "ModelProperties": {}},
    }
    base.update(overrides)
    return base


@pytest.mark.parametrize("raw", [DOCS_EVENT_GRID, DOCS_CLOUD_EVENT], ids=["event-grid", "cloudevents"])
def test_parses_the_docs_samples_in_both_schemas(raw):
    parsed = parse(raw)
    assert isinstance(parsed, ModelRegistered)
    assert parsed.model == ModelRef("sklearn_regression_model", "20")
    assert parsed.event_id == "831e1650-001e-001b-66ab-eeb76e069631"
    assert parsed.tags == {"area": "diabetes", "type": "regression"}
    assert parsed.topic.endswith("/workspaces/{workspace-name}")


def test_numeric_version_becomes_text_and_unknown_fields_are_ignored():
    parsed = parse(event(data={"ModelName": "churn", "ModelVersion": 3, "Extra": 1}, brandNew="x", subject=None))
    assert parsed.model == ModelRef("churn", "3")
    assert parsed.tags == {} and parsed.properties == {}


def test_other_event_types_are_recognised_not_rejected():
    parsed = parse(event(eventType="Microsoft.MachineLearningServices.ModelDeployed", data={}))
    assert parsed == OtherEvent("e-1", "Microsoft.MachineLearningServices.ModelDeployed")


@pytest.mark.parametrize(
    "raw, field",
    [
        ([], "not a JSON object"),
        (event(id=""), "id"),
        (event(eventType=None), "eventType"),
        (event(topic=None), "topic"),
        (event(data="x"), "data"),
        (event(data={"ModelName": "../etc", "ModelVersion": "1"}), "invalid model name"),
        (event(data={"ModelName": "churn", "ModelVersion": True}), "invalid model version"),
        (event(data={"ModelName": "churn", "ModelVersion": ".."}), "invalid model version"),
        (event(data={"ModelName": "churn", "ModelVersion": "3", "ModelTags": []}), "data.ModelTags"),
        (event(subject="models/other:1"), "subject"),
    ],
)
def test_malformed_events_name_what_is_wrong(raw, field):
    with pytest.raises(MalformedEvent, match=field.replace(".", r"\.")):
        parse(raw)


def test_resource_ids_compare_like_arm():
    assert same_resource(TOPIC.upper(), TOPIC + "/")
    assert not same_resource(TOPIC, TOPIC + "2")
