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


def test_an_event_id_too_long_to_keep_becomes_its_start_and_a_digest():
    huge = "e" * 40_000
    parsed = parse(event(id=huge))
    assert len(parsed.event_id) <= 200 and parsed.event_id.startswith("e" * 100)
    assert parse(event(id=huge)).event_id == parsed.event_id  # a redelivery is the same cause
    assert parse(event(id=huge[:-1] + "f")).event_id != parsed.event_id  # another event is another cause
    assert parse(event(id="e" * 200)).event_id == "e" * 200  # ordinary ids are kept as they are
    assert len(parse(event(id=huge, eventType="Other.Type")).event_id) <= 200


def test_resource_ids_compare_like_arm():
    assert same_resource(TOPIC.upper(), TOPIC + "/")
    assert not same_resource(TOPIC, TOPIC + "2")


KELVIN = "\u212a"  # KELVIN SIGN: lower-cases to an ASCII "k" in Unicode
LONG_S = "\u017f"  # LATIN SMALL LETTER LONG S: upper-cases to an ASCII "S"


@pytest.mark.parametrize(
    "lookalike",
    [
        TOPIC.replace("workspaces", f"wor{KELVIN}spaces"),
        TOPIC.replace("subscriptions", f"{LONG_S}ubscriptions"),
        TOPIC.replace("/ws", "/w\u0455"),  # CYRILLIC SMALL LETTER DZE, looks like "s"
        TOPIC.replace("rg", "r\u0261"),  # LATIN SMALL LETTER SCRIPT G
        TOPIC.upper().replace("K", KELVIN),
        TOPIC + "\u200b",  # an invisible character at the end
    ],
)
def test_non_ascii_lookalikes_of_the_topic_do_not_match(lookalike):
    assert lookalike != TOPIC
    assert not same_resource(lookalike, TOPIC)
    assert not same_resource(TOPIC, lookalike)


def test_the_kelvin_sign_would_pass_a_unicode_case_insensitive_comparison():
    # Why the comparison must be ASCII-only: Unicode case folding makes the lookalike equal.
    lookalike = TOPIC.replace("workspaces", f"wor{KELVIN}spaces")
    assert lookalike.lower() == TOPIC.lower()
    assert not same_resource(lookalike, TOPIC)


@pytest.mark.parametrize(
    "left, right, same",
    [
        (TOPIC, TOPIC, True),
        (TOPIC.lower(), TOPIC.upper(), True),
        (TOPIC + "/", TOPIC, True),
        (TOPIC, TOPIC.replace("/ws", "/ws2"), False),
        (TOPIC, TOPIC.replace("/workspaces/ws", "/registries/ws"), False),
        (TOPIC, TOPIC.replace("/subscriptions/s/", "/subscriptions/t/"), False),
        (TOPIC, "", False),
    ],
)
def test_same_resource(left, right, same):
    assert same_resource(left, right) is same


def cloud_event(**overrides):
    """A CloudEvents 1.0 ModelRegistered event, shaped as the Functions trigger hands a func.CloudEvent over."""
    base = {
        "id": "ce-1",
        "source": TOPIC,
        "type": MODEL_REGISTERED,
        "subject": "models/churn:3",
        "specversion": "1.0",
        "data": {"ModelName": "churn", "ModelVersion": "3", "ModelTags": {"stage": "candidate"}, "ModelProperties": {}},
    }
    base.update(overrides)
    return base


def test_a_cloud_event_parses_like_an_event_grid_event():
    from_cloud = parse(cloud_event())
    from_grid = parse(event(id="ce-1"))

    assert from_cloud == from_grid
    assert from_cloud == ModelRegistered(
        event_id="ce-1", topic=TOPIC, model=ModelRef("churn", "3"), tags={"stage": "candidate"}, properties={}
    )


def test_a_cloud_event_without_subject_or_specversion_still_parses():
    parsed = parse(cloud_event(subject=None, specversion=None, time="2026-11-26T12:00:00Z"))
    assert parsed.model == ModelRef("churn", "3")


def test_a_cloud_event_of_another_type_is_recognised():
    parsed = parse(cloud_event(type="Microsoft.MachineLearningServices.RunCompleted", data=None))
    assert parsed == OtherEvent("ce-1", "Microsoft.MachineLearningServices.RunCompleted")


def test_a_cloud_event_from_a_lookalike_source_parses_but_is_not_the_workspace():
    lookalike = TOPIC.replace("workspaces", f"wor{KELVIN}spaces")
    parsed = parse(cloud_event(source=lookalike))
    assert parsed.topic == lookalike  # kept as sent, for the refusal to name it
    assert not same_resource(parsed.topic, TOPIC)


@pytest.mark.parametrize(
    "raw, field",
    [
        (cloud_event(source=None), "source: expected a non-empty string"),
        (cloud_event(source=""), "source: expected a non-empty string"),
        ({k: v for k, v in cloud_event().items() if k != "source"}, "topic: missing"),
        (cloud_event(type=""), "type: expected a non-empty string"),
        ({k: v for k, v in cloud_event().items() if k != "type"}, "eventType: missing"),
        (cloud_event(data=None), "data"),
        (cloud_event(data=[]), "data"),
        (cloud_event(subject="models/churn:4"), "subject"),
        (cloud_event(id=None), "id"),
    ],
)
def test_malformed_cloud_events_name_what_is_wrong(raw, field):
    with pytest.raises(MalformedEvent, match=field):
        parse(raw)
