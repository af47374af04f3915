"""openapi.yaml describes exactly the HTTP functions the host indexes, and every status the tests saw them answer.

The status check reads what tests/functions/conftest.py recorded while the rest of the suite ran, so this module
runs last (tests/conftest.py moves it to the end); run on its own, it checks what a short run of the API tests saw.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.functions.conftest import FUNCTIONS, OBSERVED_STATUSES

ROOT = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((ROOT / "openapi.yaml").read_text(encoding="utf-8"))
ROUTE_PREFIX = "/api"


def indexed_http_routes() -> dict[str, tuple[str, str]]:
    """function name -> (route, method), as the host indexes them."""
    routes = {}
    for name, function in FUNCTIONS.items():
        for binding in json.loads(function.get_function_json())["bindings"]:
            if binding["type"] == "httpTrigger":
                (method,) = binding["methods"]
                routes[name] = (f"{ROUTE_PREFIX}/{binding['route']}", method.upper())
    return routes


def documented_operations() -> dict[str, tuple[str, str, set[int]]]:
    """operationId -> (path, method, documented statuses)."""
    operations = {}
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            statuses = {int(status) for status in operation["responses"]}
            operations[operation["operationId"]] = (f"{ROUTE_PREFIX}{path}", method.upper(), statuses)
    return operations


def test_it_is_openapi_3_1():
    assert SPEC["openapi"] == "3.1.0"


def test_the_documented_routes_are_exactly_the_indexed_http_functions():
    documented = {name: (path, method) for name, (path, method, _) in documented_operations().items()}
    assert documented == indexed_http_routes()


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_every_reference_resolves():
    for ref in _refs(SPEC):
        node: Any = SPEC
        for part in ref.removeprefix("#/").split("/"):
            assert part in node, f"{ref} does not resolve"
            node = node[part]


def test_every_status_the_tests_observed_is_documented():
    if not OBSERVED_STATUSES:
        pytest.skip("no HTTP function ran in this session; run the whole suite")
    documented = documented_operations()
    undocumented = {
        name: sorted(statuses - documented[name][2])
        for name, statuses in OBSERVED_STATUSES.items()
        if statuses - documented[name][2]
    }
    assert undocumented == {}


def test_the_check_of_observed_statuses_can_fail():
    documented = documented_operations()
    assert 418 not in documented["request_promotion"][2]
    assert 202 not in documented["reject_promotion"][2]


def test_the_documented_states_and_drift_kinds_are_the_domains():
    from promotion.domain import DriftKind, State

    schemas = SPEC["components"]["schemas"]
    assert schemas["State"]["enum"] == [state.value for state in State]
    assert schemas["DriftFinding"]["properties"]["kind"]["enum"] == [kind.value for kind in DriftKind]
