"""The artifact fingerprint: what it covers, what it leaves out, and the caps on the tags kept next to it."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from promotion import fingerprint
from promotion.domain import ModelRef, ModelVersion

MODEL = ModelVersion(
    ModelRef("taxi-fare", "4"),
    "mlflow_model",
    {"accuracy": "0.91", "stage": "candidate"},
    {"auc": "0.9"},
    "taxi fares",
    "azureml://registries/shared/models/taxi-fare/versions/4",
    asset_id="/subscriptions/s/resourceGroups/rg/providers/x/registries/shared/models/taxi-fare/versions/4",
    flavors={"python_function": {"loader_module": "mlflow.sklearn"}},
    created_at="2024-05-01T12:00:00+00:00",
)


def test_the_fingerprint_is_a_sha256_of_the_immutable_parts_in_canonical_json():
    parts = {
        "asset_id": MODEL.asset_id,
        "created_at": MODEL.created_at,
        "flavors": {"python_function": {"loader_module": "mlflow.sklearn"}},
        "model_type": "mlflow_model",
        "model_uri": MODEL.path,
        "properties": {"auc": "0.9"},
    }
    import hashlib

    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    assert fingerprint.fingerprint(MODEL) == "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.parametrize(
    "change",
    [
        {"asset_id": "elsewhere"},
        {"path": "azureml://elsewhere"},
        {"type": "triton_model"},
        {"properties": {"auc": "0.5"}},
        {"flavors": {}},
        {"created_at": "2025-01-01T00:00:00+00:00"},
    ],
)
def test_every_immutable_part_changes_the_fingerprint(change):
    assert fingerprint.fingerprint(replace(MODEL, **change)) != fingerprint.fingerprint(MODEL)


def test_tags_description_and_the_archive_flag_are_not_part_of_it():
    other = replace(MODEL, tags={"accuracy": "0.1"}, description="other", archived=True)
    assert fingerprint.fingerprint(other) == fingerprint.fingerprint(MODEL)


def test_the_comparison_names_the_part_that_changed():
    recorded = fingerprint.record(MODEL)
    comparison = fingerprint.compare(recorded, replace(MODEL, properties={"auc": "0.5"}))
    assert comparison.changed_parts == ("properties",) and "properties" in comparison.void_reason
    assert fingerprint.compare(recorded, MODEL).void_reason is None


def test_tags_are_capped_for_the_store_and_for_events_and_say_how_many_were_left_out():
    tags = {f"metric_{i:04d}": "x" * 200 for i in range(300)}  # about 66 KB of tags
    recorded = fingerprint.record(replace(MODEL, tags=tags))
    stored = json.dumps(recorded["tags"], separators=(",", ":")).encode()
    assert len(stored) <= fingerprint.STORED_TAGS_BYTES and recorded["tags_omitted"] > 0
    assert len(recorded["tags"]) + recorded["tags_omitted"] == 300
    assert list(recorded["tags"]) == sorted(tags)[: len(recorded["tags"])]  # the first names, in order
    event = fingerprint.for_event(recorded)
    assert len(json.dumps(event["tags"], separators=(",", ":")).encode()) <= fingerprint.EVENT_TAGS_BYTES
    assert len(event["tags"]) + event["tags_omitted"] == 300


def test_with_tags_left_out_a_new_tag_is_not_reported_as_new():
    tags = {f"metric_{i:04d}": "x" * 200 for i in range(300)}
    recorded = fingerprint.record(replace(MODEL, tags=tags))
    now = replace(MODEL, tags={**tags, "metric_0000": "changed", "zzz": "new"})
    assert set(fingerprint.compare(recorded, now).tag_changes) == {"metric_0000"}
