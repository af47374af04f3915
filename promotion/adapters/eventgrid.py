"""EventPublisher on an Event Grid topic, through azure-eventgrid's EventGridPublisherClient.

A custom topic takes the CloudEvents batch at its endpoint (`https://{topic}.{region}-1.eventgrid.azure.net/
api/events`); a namespace topic at the namespace's endpoint plus the topic's name (PROMOTION_EVENTS_NAMESPACE_TOPIC).
With PROMOTION_EVENTS_KEY the key goes in the request (AzureKeyCredential); without it DefaultAzureCredential
signs the request, and the managed identity needs the EventGrid Data Sender role on the topic.

azure.eventgrid is imported on the first publish, never at cold start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from promotion.domain import LifecycleEvent
from promotion.settings import EventTopic

# The attempt right after a change must not hold up the API answer or the event handler: one try, short waits.
QUICK = {"retry_total": 0, "connection_timeout": 2, "read_timeout": 5}
# The timer's publisher may wait longer and retry a server error (POSTs are retried only on 500, 503 and 504).
PATIENT = {"retry_total": 2, "connection_timeout": 10, "read_timeout": 30}


class _UnknownAttributeNoise(logging.Filter):
    """For custom topics the SDK takes timeouts and retries only per call, and then warns, once per event, that
    each of them "is not a known attribute" of the event model. That is noise about options it did apply."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is not a known attribute" not in record.getMessage()


_noise_filter = _UnknownAttributeNoise()


class EventGridPublisher:
    def __init__(
        self, topic: EventTopic, *, quick: bool = False, credential: Any = None, console: str | None = None
    ) -> None:
        self._topic = topic
        self._console = console  # the app's public origin: events link to the console's page of their promotion
        self._options = QUICK if quick else PATIENT
        self._credential = credential
        self._client: Any = None
        self._lock = threading.Lock()

    def publish(self, events: Sequence[LifecycleEvent]) -> None:
        from azure.core.messaging import CloudEvent

        batch = [
            CloudEvent(
                source=event.source,
                type=event.type.value,
                data=self._with_link(dict(event.data)),
                subject=event.subject,
                id=event.id,  # fixed when the change was recorded: every retry re-sends the same id
                time=event.at,
            )
            for event in events
        ]
        self._publisher().send(batch, **self._options)

    def _with_link(self, data: dict[str, Any]) -> dict[str, Any]:
        promotion_id = data.get("promotion_id")
        if self._console and isinstance(promotion_id, str):
            data["console_url"] = f"{self._console}/api/console?promotion={quote(promotion_id, safe='')}"
        return data

    def _publisher(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._build()
            return self._client

    def _build(self) -> Any:
        from azure.eventgrid import EventGridPublisherClient

        logging.getLogger("azure.eventgrid._legacy._generated._serialization").addFilter(_noise_filter)
        credential = self._credential
        if credential is None and self._topic.key:
            from azure.core.credentials import AzureKeyCredential

            credential = AzureKeyCredential(self._topic.key)
        elif credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        options: dict[str, Any] = (
            {"namespace_topic": self._topic.namespace_topic} if self._topic.namespace_topic else {}
        )
        return EventGridPublisherClient(self._topic.endpoint, credential, **options)
