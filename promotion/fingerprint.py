"""The artifact fingerprint: what binds an approval to the exact registry version the approvers saw.

A registry version's content is immutable (Azure ML refuses to change `modelUri`, `modelType`, `properties` or
`flavors` without a new version, and never re-creates a deleted version), so a SHA-256 over those parts, with the
asset id and the creation time, names one artifact. A different fingerprint later means the registry broke its own
rules (a misconfigured registry, or a version deleted and made again elsewhere under the same name). The model's
files are not hashed: the fingerprint trusts the registry's `modelUri` to point at content that never changes.

Tags (metrics and lineage included) may change at any time, so they are not part of the fingerprint: they are
recorded next to it as they were, capped, and compared as tags.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from promotion.domain import ModelVersion

# The request's history entry keeps the tags in one Table string property (at most 64 KiB of UTF-16, so 32 Ki
# characters): 16 KiB of UTF-8 JSON leaves room for the rest of the entry. Events travel 100 to an Event Grid
# batch of at most 1 MB, so each carries at most 4 KiB of tags.
STORED_TAGS_BYTES = 16 * 1024
EVENT_TAGS_BYTES = 4 * 1024
# A tag difference shows each value shortened to this many characters, and at most this many tags.
_SHOWN_VALUE = 200
_SHOWN_CHANGES = 50


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(value: Any) -> str:
    return hashlib.sha256(_canonical(value).encode("utf-8", "surrogatepass")).hexdigest()


def immutable_parts(model: ModelVersion) -> dict[str, Any]:
    return {
        "asset_id": model.asset_id,
        "model_uri": model.path,
        "model_type": model.type,
        "properties": dict(model.properties),
        "flavors": dict(model.flavors),
        "created_at": model.created_at,
    }


def fingerprint(model: ModelVersion) -> str:
    """`sha256:` and the hex SHA-256 of the canonical JSON (sorted keys, no spaces) of the immutable parts."""
    return "sha256:" + _digest(immutable_parts(model))


def capped_tags(tags: Mapping[str, str], limit: int) -> tuple[dict[str, str], int]:
    """The tags in name order while their JSON fits in `limit` bytes, and how many were left out."""
    kept: dict[str, str] = {}
    size = 2
    for name in sorted(tags):
        item = len(_canonical({name: tags[name]}).encode("utf-8", "surrogatepass"))  # '{"k":"v"}', braces = comma
        if size + item - 1 > limit:
            break
        kept[name] = tags[name]
        size += item - 1
    return kept, len(tags) - len(kept)


def record(model: ModelVersion) -> dict[str, Any]:
    """What the request keeps about the version: its fingerprint, one digest per immutable part (to say later
    which part changed), and its tags as they were, capped to STORED_TAGS_BYTES."""
    tags, omitted = capped_tags(model.tags, STORED_TAGS_BYTES)
    return {
        "fingerprint": fingerprint(model),
        "parts": {name: _digest(value)[:16] for name, value in immutable_parts(model).items()},
        "tags": tags,
        "tags_omitted": omitted,
    }


def for_event(artifact: Mapping[str, Any]) -> dict[str, Any]:
    """The recorded artifact as an event carries it: the fingerprint and the tags, capped to EVENT_TAGS_BYTES."""
    tags, omitted = capped_tags(artifact.get("tags") or {}, EVENT_TAGS_BYTES)
    return {"fingerprint": artifact["fingerprint"], "tags": tags, "tags_omitted": omitted + artifact["tags_omitted"]}


@dataclass(frozen=True)
class Comparison:
    """The version as it is now against what was recorded at request time."""

    void_reason: str | None = None  # why what was approved is no longer what would deploy
    fingerprint_before: str | None = None
    fingerprint_now: str | None = None
    changed_parts: tuple[str, ...] = ()
    tag_changes: Mapping[str, Mapping[str, str | None]] = field(default_factory=dict)

    def detail(self) -> dict[str, Any]:
        """For a history entry: both fingerprints, the parts that differ and the tag differences."""
        shown: dict[str, Any] = {}
        if self.void_reason:
            shown["reason"] = self.void_reason
        if self.fingerprint_before:
            shown["fingerprint_requested"] = self.fingerprint_before
            shown["fingerprint_now"] = self.fingerprint_now
        if self.changed_parts:
            shown["changed_parts"] = list(self.changed_parts)
        if self.tag_changes:
            changes = list(self.tag_changes.items())[:_SHOWN_CHANGES]
            shown["tags_changed"] = {name: dict(change) for name, change in changes}
        return shown


def compare(
    artifact: Mapping[str, Any], now: ModelVersion | None, *, void_on_tag_change: tuple[str, ...] = ()
) -> Comparison:
    before = artifact["fingerprint"]
    if now is None:
        return Comparison(void_reason="the registry no longer holds the version", fingerprint_before=before)
    current = fingerprint(now)
    if current != before:
        parts = {name: _digest(value)[:16] for name, value in immutable_parts(now).items()}
        changed = tuple(name for name, digest in parts.items() if artifact.get("parts", {}).get(name) != digest)
        return Comparison(
            void_reason=f"the version's content changed since the request ({', '.join(changed) or 'fingerprint'})",
            fingerprint_before=before,
            fingerprint_now=current,
            changed_parts=changed,
            tag_changes=_tag_changes(artifact, now.tags),
        )
    changes = _tag_changes(artifact, now.tags)
    if now.archived:
        return Comparison(
            void_reason="the version was archived in the registry",
            fingerprint_before=before,
            fingerprint_now=current,
            tag_changes=changes,
        )
    voiding = sorted(set(changes) & set(void_on_tag_change))
    if voiding:
        return Comparison(
            void_reason=f"tag {', '.join(voiding)} changed since the request (production.void_on_tag_change)",
            fingerprint_before=before,
            fingerprint_now=current,
            tag_changes=changes,
        )
    return Comparison(tag_changes=changes)


def _tag_changes(artifact: Mapping[str, Any], tags: Mapping[str, str]) -> dict[str, dict[str, str | None]]:
    """Tags recorded at request time that changed or went, and new ones (only when none was left out, since an
    omitted tag cannot be told from a new one)."""
    recorded: Mapping[str, str] = artifact.get("tags") or {}
    names = set(recorded) | (set(tags) if not artifact.get("tags_omitted") else set())
    return {
        name: {"requested": _short(recorded.get(name)), "now": _short(tags.get(name))}
        for name in sorted(names)
        if recorded.get(name) != tags.get(name)
    }


def _short(value: str | None) -> str | None:
    if value is None or len(value) <= _SHOWN_VALUE:
        return value
    return value[: _SHOWN_VALUE - 3] + "..."
