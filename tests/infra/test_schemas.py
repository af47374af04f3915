"""azure.yaml and infra/main.parameters.json against azd's and ARM's schemas (vendored in ../shared/schemas)."""

from __future__ import annotations

import json

import jsonschema
import yaml
from referencing import Registry, Resource

from tests.infra import bicep
from tests.infra.conftest import REPO, SHARED, need_shared

# The parameters schema refers to two definitions of ARM's template schema, which is not vendored. ARM defines a
# parameter value as any JSON value, and a Key Vault reference as below.
ARM_TEMPLATE = "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json"
ARM_TEMPLATE_DEFINITIONS = {
    "$schema": "http://json-schema.org/draft-04/schema#",
    "definitions": {
        "parameterValueTypes": {"type": ["string", "array", "object", "integer", "number", "boolean", "null"]},
        "keyVaultReference": {
            "type": "object",
            "properties": {
                "keyVault": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
                "secretName": {"type": "string"},
                "secretVersion": {"type": "string"},
            },
            "required": ["keyVault", "secretName"],
        },
    },
}


def validator(name: str):
    schema = json.loads((need_shared(SHARED / "schemas") / name).read_text())
    registry = Registry().with_resource(ARM_TEMPLATE, Resource.from_contents(ARM_TEMPLATE_DEFINITIONS))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, registry=registry)


def errors(name: str, document: object) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(name).iter_errors(document)]


def azure_yaml() -> dict:
    return yaml.safe_load((REPO / "azure.yaml").read_text())


def parameters_file() -> dict:
    return json.loads((REPO / "infra" / "main.parameters.json").read_text())


def test_azure_yaml_is_valid():
    assert errors("azure.yaml.v1.0.json", azure_yaml()) == []


def test_a_planted_mistake_in_azure_yaml_fails():
    document = azure_yaml()
    document["hooks"]["postdeploy"]["posix"]["shell"] = "bash -e"
    document["services"]["api"]["remoteBuild"] = "yes"
    found = errors("azure.yaml.v1.0.json", document)
    assert any(e.startswith("hooks/postdeploy") for e in found), found
    assert "services/api/remoteBuild: 'yes' is not of type 'boolean'" in found


def test_main_parameters_are_valid():
    assert errors("deploymentParameters.2019-04-01.json", parameters_file()) == []


def test_a_planted_mistake_in_the_parameters_fails():
    document = parameters_file()
    document["parameters"]["location"] = {"valu": "westeurope"}
    assert errors("deploymentParameters.2019-04-01.json", document)


def test_one_python_function_service_and_hooks_that_exist():
    document = azure_yaml()
    assert document["services"] == {"api": {"project": ".", "language": "python", "host": "function"}}
    for event, hook in document["hooks"].items():
        assert hook["posix"]["shell"] == "sh"
        assert (REPO / hook["posix"]["run"]).is_file(), event
    assert set(document["hooks"]) == {"preprovision", "postprovision", "postdeploy", "predown"}


def test_the_parameters_file_matches_main_bicep():
    declared = bicep.parameters(bicep.parse((bicep.INFRA / "main.bicep").read_text()))
    given = set(parameters_file()["parameters"])
    assert given <= set(declared), given - set(declared)
    required = {name for name, default in declared.items() if default is bicep.REQUIRED}
    assert required <= given, required - given


def test_the_function_app_is_tagged_for_azd_deploy():
    # azd finds the service's resource by the tag azd-service-name, equal to the service's name in azure.yaml.
    source = (bicep.INFRA / "app" / "function.bicep").read_text()
    [service] = azure_yaml()["services"]
    assert f"'azd-service-name': '{service}'" in source


def test_schemas_and_types_are_read_from_shared_not_copied():
    copied = [
        path
        for folder in ("infra", "tests", "scripts")
        for path in (REPO / folder).rglob("*")
        if path.name in {"azure.yaml.v1.0.json", "deploymentParameters.2019-04-01.json", "types.json"}
    ]
    assert copied == []
