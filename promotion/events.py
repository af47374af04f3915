"""ModelRegistered events: the raw Event Grid (or CloudEvents) payload becomes a typed value or a rejection.

Follows the Event Grid guidance for Azure ML events: check the topic and the event type, ignore unknown
fields, and expect duplicates and replays (the handler re-reads the model instead of trusting the event).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from promotion.domain import InvalidName, ModelRef

MODEL_REGISTERED = "Microsoft.MachineLearningServices.ModelRegistered"
# Event Grid ids are GUIDs. A longer id is kept as its start and a digest of all of it, so that it fits a store key
# and property and a registry tag alike, and its redeliveries are still one cause.
MAX_EVENT_ID = 200
_KEPT_START = MAX_EVENT_ID - len("~sha256:") - 64


class MalformedEvent(ValueError):
    """The event cannot be a ModelRegistered event as Azure ML emits it; redelivering will not help."""


@dataclass(frozen=True)
class ModelRegistered:
    event_id: str
    topic: str
    model: ModelRef
    tags: Mapping[str, Any] = field(default_factory=dict)
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OtherEvent:
    """A valid event of another type, such as ModelDeployed: logged and ignored."""

    event_id: str
    event_type: str


def parse(raw: Mapping[str, Any]) -> ModelRegistered | OtherEvent:
    """Parse one event in the Event Grid schema (topic, eventType) or CloudEvents 1.0 (source, type).

    Raises MalformedEvent naming the field that is wrong.
    """
    if not isinstance(raw, Mapping):
        raise MalformedEvent("event is not a JSON object")
    event_id = kept_event_id(_text(raw, "id"))
    event_type = _first_text(raw, ("eventType", "event_type", "type"), "eventType")
    if event_type.lower() != MODEL_REGISTERED.lower():
        return OtherEvent(event_id=event_id, event_type=event_type)
    topic = _first_text(raw, ("topic", "source"), "topic")

    data = raw.get("data")
    if not isinstance(data, Mapping):
        raise MalformedEvent("data: expected an object with ModelName and ModelVersion")
    try:
        model = ModelRef.parse(data.get("ModelName"), data.get("ModelVersion"))
    except InvalidName as error:
        raise MalformedEvent(f"data: {error}") from None

    subject = raw.get("subject")
    if subject not in (None, "") and subject != f"models/{model}":
        raise MalformedEvent(f"subject {subject!r} does not match data (expected 'models/{model}')")
    return ModelRegistered(
        event_id=event_id,
        topic=topic,
        model=model,
        tags=_object(data, "ModelTags"),
        properties=_object(data, "ModelProperties"),
    )


def kept_event_id(event_id: str) -> str:
    """The event id as it is recorded: as it is up to MAX_EVENT_ID characters, else its start and a digest."""
    if len(event_id) <= MAX_EVENT_ID:
        return event_id
    digest = hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{event_id[:_KEPT_START]}~sha256:{digest}"


def same_resource(left: str, right: str) -> bool:
    """ARM resource ids compare case-insensitively, over ASCII only: a look-alike such as the Kelvin sign (U+212A)
    lower-cases to "k" in Unicode, and must not pass for the staging workspace. A trailing slash does not make
    another resource."""
    if not (left.isascii() and right.isascii()):
        return False
    return left.rstrip("/").lower() == right.rstrip("/").lower()


def _text(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise MalformedEvent(f"{key}: expected a non-empty string")
    return value


def _first_text(raw: Mapping[str, Any], keys: tuple[str, ...], name: str) -> str:
    for key in keys:
        if key in raw:
            return _text(raw, key)
    raise MalformedEvent(f"{name}: missing")


def _object(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MalformedEvent(f"data.{key}: expected an object")
    return value
