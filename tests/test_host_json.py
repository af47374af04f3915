"""host.json, which the host reads before any of our code: nothing in-process would notice a wrong extension bundle
range or a queue setting the README no longer describes, so this checks it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOST = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))
README = (ROOT / "README.md").read_text(encoding="utf-8")

# Functions host 4.x with the v2 Python programming model: bundle 4.x (see azure-facts: the documented range).
BUNDLE = {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}
# What the README promises about the deployment job: five deliveries, then the poison queue; a 5-minute timeout.
MAX_DEQUEUE_COUNT = 5
FUNCTION_TIMEOUT = "00:05:00"


def problems(host: dict[str, Any]) -> list[str]:
    found = []
    if host.get("version") != "2.0":
        found.append(f"version is {host.get('version')!r}, not '2.0'")
    bundle = host.get("extensionBundle") or {}
    for field, wanted in BUNDLE.items():
        if bundle.get(field) != wanted:
            found.append(f"extensionBundle.{field} is {bundle.get(field)!r}, not {wanted!r}")
    queues = (host.get("extensions") or {}).get("queues") or {}
    if queues.get("maxDequeueCount") != MAX_DEQUEUE_COUNT:
        found.append(f"extensions.queues.maxDequeueCount is {queues.get('maxDequeueCount')!r}, not {MAX_DEQUEUE_COUNT}")
    if host.get("functionTimeout") != FUNCTION_TIMEOUT:
        found.append(f"functionTimeout is {host.get('functionTimeout')!r}, not {FUNCTION_TIMEOUT!r}")
    return found


def test_host_json_is_what_the_host_and_the_readme_expect():
    assert problems(HOST) == []


def test_the_readme_describes_these_settings():
    assert f"extension bundle {BUNDLE['version']}" in README
    assert f"maxDequeueCount {MAX_DEQUEUE_COUNT}" in README and "5-minute function timeout" in README


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("extensionBundle", "version"), "[3.*, 4.0.0)"),
        (("extensionBundle", "version"), "[4.*, 6.0.0)"),
        (("extensionBundle", "id"), "Microsoft.Azure.Functions.ExtensionBundle.Preview"),
        (("version",), "1.0"),
        (("extensions", "queues", "maxDequeueCount"), 1),
        (("functionTimeout",), "00:10:00"),
    ],
)
def test_a_planted_mistake_is_caught(path, value):
    planted = copy.deepcopy(HOST)
    target = planted
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert problems(planted) != []
