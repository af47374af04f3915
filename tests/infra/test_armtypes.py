"""The type checker (tests/infra/armtypes.py): planted mistakes fail it, and the project's Bicep passes it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.infra import bicep

SITE = """
resource app 'Microsoft.Web/sites@2024-11-01' = {{
  name: 'func-x'
  location: location
  kind: 'functionapp,linux'
  properties: {{
    httpsOnly: true
    {extra}
  }}
}}
"""

AUTH = """
resource auth 'Microsoft.Web/sites/config@2024-11-01' = {{
  name: '{name}'
  parent: app
  properties: {{
    globalValidation: {{
      requireAuthentication: {require}
      unauthenticatedClientAction: '{action}'
    }}
  }}
}}
"""


def problems(type_index, text: str) -> list[str]:
    root = bicep.parse(text)
    assert bicep.syntax_errors(root) == []
    return [found for resource in bicep.resources(root, Path("planted.bicep")) for found in type_index.check(resource)]


def test_a_clean_resource_passes(type_index):
    assert problems(type_index, SITE.format(extra="")) == []
    assert problems(type_index, AUTH.format(name="authsettingsV2", require="true", action="Return401")) == []


def test_property_names_and_enum_values_compare_case_insensitively(type_index):
    assert problems(type_index, SITE.format(extra="HTTPSONLY: false")) == []
    assert problems(type_index, AUTH.format(name="authSettingsV2", require="true", action="return401")) == []


def test_an_unknown_property_fails(type_index):
    [found] = problems(type_index, SITE.format(extra="httpOnly: true"))
    assert "planted.bicep:2 app: properties.httpOnly: unknown property" in found


def test_a_wrong_enum_value_fails(type_index):
    [found] = problems(type_index, AUTH.format(name="authsettingsV2", require="true", action="RejectWith401"))
    assert "unauthenticatedClientAction: 'RejectWith401' is not one of:" in found
    assert "Return401" in found


def test_a_wrong_primitive_type_fails(type_index):
    [found] = problems(type_index, AUTH.format(name="authsettingsV2", require="'yes'", action="Return401"))
    assert "requireAuthentication: expected a boolean, got 'yes'" in found
    [found] = problems(
        type_index, SITE.format(extra="functionAppConfig: { scaleAndConcurrency: { instanceMemoryMB: '2048' } }")
    )
    assert "instanceMemoryMB: expected an integer" in found


def test_an_unknown_discriminator_fails(type_index):
    [found] = problems(type_index, AUTH.format(name="authsettingsv3", require="true", action="Return401"))
    assert "name: 'authsettingsv3' is not one of:" in found


def test_a_missing_required_property_fails(type_index):
    text = "resource app 'Microsoft.Web/sites@2024-11-01' = {\n  name: 'x'\n}\n"
    [found] = problems(type_index, text)
    assert "location: required property missing" in found


def test_writing_a_read_only_property_fails(type_index):
    [found] = problems(type_index, SITE.format(extra="defaultHostName: 'x.azurewebsites.net'"))
    assert "properties.defaultHostName: read-only property written" in found


def test_an_unknown_api_version_or_type_fails(type_index):
    [found] = problems(type_index, SITE.format(extra="").replace("2024-11-01", "2024-13-01"))
    assert "Microsoft.Web/sites@2024-13-01 does not exist (known versions: 2024-04-01, 2024-11-01)" in found
    [found] = problems(type_index, SITE.format(extra="").replace("Microsoft.Web/sites", "Microsoft.Web/site"))
    assert "unknown resource type" in found


def test_both_branches_of_a_condition_and_loop_bodies_are_checked(type_index):
    text = SITE.format(extra="clientCertMode: cond ? 'Required' : 'Sometimes'")
    [found] = problems(type_index, text)
    assert "clientCertMode: 'Sometimes' is not one of:" in found
    loop = (
        "resource q 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for n in names: {\n"
        "  name: n\n  properties: { metadat: {} }\n}]\n"
    )
    [found] = problems(type_index, loop)
    assert "properties.metadat: unknown property" in found


def test_values_known_only_at_deployment_are_not_judged(type_index):
    assert problems(type_index, SITE.format(extra="httpsOnly: param1\n    clientCertMode: '${a}b'")) == []


def test_child_resources_declared_inside_their_parent_get_the_full_type(type_index):
    text = """
resource st 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'st'
  location: 'westeurope'
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  resource blobs 'blobServices' = {
    name: 'default'
    resource c 'containers' = {
      name: 'x'
      properties: { publicAccess: 'Public' }
    }
  }
}
"""
    [found] = problems(type_index, text)
    assert found.startswith("planted.bicep:9 c: properties.publicAccess: 'Public' is not one of:")


def test_the_project_bicep_passes(type_index, infra):
    found = []
    for name, root in infra.items():
        for resource in bicep.resources(root, bicep.INFRA / name):
            found += type_index.check(resource)
    assert found == []
    count = sum(len(bicep.resources(root, bicep.INFRA / name)) for name, root in infra.items())
    assert count >= 25  # every resource is seen, nested children and `existing` ones included


def test_resource_functions_exist(type_index, infra):
    calls = [
        match
        for name, root in infra.items()
        for match in re.finditer(r"listKeys\('\$\{(\w+)\.id\}/host/default', '([\d-]+)'\)", root.text.decode())
    ]
    assert calls, "the Event Grid deployment reads the extension's system key with listKeys"
    for call in calls:
        assert type_index.has_function("Microsoft.Web/sites/host", call.group(2), "listKeys")
    with pytest.raises(AssertionError):
        assert type_index.has_function("Microsoft.Web/sites/host", "2099-01-01", "listKeys")
