import base64
import json

import pytest

from promotion.identity import Unauthenticated, principal_from_headers
from promotion.settings import Settings, SettingsError

IN_AZURE_AUTH_ON = {"WEBSITE_INSTANCE_ID": "abc", "WEBSITE_AUTH_ENABLED": "True"}
IN_AZURE_AUTH_OFF = {"WEBSITE_INSTANCE_ID": "abc"}


def principal_header(claims):
    return base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims}).encode()).decode()


def test_easy_auth_headers_give_name_id_and_roles():
    headers = {
        "x-ms-client-principal-name": "carol@contoso.com",
        "X-MS-CLIENT-PRINCIPAL-ID": "33333333-0000-0000-0000-000000000000",
        "X-MS-CLIENT-PRINCIPAL": principal_header(
            [{"typ": "roles", "val": "Promotion.Approver"}, {"typ": "roles", "val": "Reader"}]
        ),
    }
    principal = principal_from_headers(headers, IN_AZURE_AUTH_ON)
    assert principal.name == "carol@contoso.com" and principal.id.startswith("3333")
    assert principal.roles == {"Promotion.Approver", "Reader"}


def test_name_can_come_from_the_claims():
    headers = {"X-MS-CLIENT-PRINCIPAL": principal_header([{"typ": "name", "val": "dave"}])}
    assert principal_from_headers(headers, {}).name == "dave"


def test_in_azure_without_platform_auth_headers_are_not_trusted():
    with pytest.raises(Unauthenticated, match="App Service Authentication is off"):
        principal_from_headers({"X-MS-CLIENT-PRINCIPAL-NAME": "mallory"}, IN_AZURE_AUTH_OFF)


@pytest.mark.parametrize(
    "headers, message",
    [
        ({}, "no identity"),
        ({"x-functions-key": "secret"}, "no identity"),
        ({"X-MS-CLIENT-PRINCIPAL": "%%%"}, "not valid base64 JSON"),
        ({"X-MS-CLIENT-PRINCIPAL": base64.b64encode(b'{"claims": 3}').decode()}, "not valid base64 JSON"),
    ],
)
def test_missing_or_broken_identity_is_unauthenticated(headers, message):
    with pytest.raises(Unauthenticated, match=message):
        principal_from_headers(headers, {})


AZURE = {
    "AZURE_SUBSCRIPTION_ID": "12345678-1234-1234-1234-123456789abc",
    "STAGING_RESOURCE_GROUP": "rg-staging",
    "STAGING_WORKSPACE": "ws-staging",
    "REGISTRY_NAME": "shared",
    "REGISTRY_LOCATION": "westeurope",
    "PRODUCTION_RESOURCE_GROUP": "rg-prod",
    "PRODUCTION_WORKSPACE": "ws-prod",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
}


def test_azure_settings_and_derived_ids():
    settings = Settings.from_env(AZURE)
    assert settings.backend == "azureml" and settings.state_store == "tables"
    assert settings.staging_workspace_id == (
        "/subscriptions/12345678-1234-1234-1234-123456789abc/resourceGroups/rg-staging"
        "/providers/Microsoft.MachineLearningServices/workspaces/ws-staging"
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"AZURE_SUBSCRIPTION_ID": ""}, "setting AZURE_SUBSCRIPTION_ID is missing"),
        ({"AZURE_SUBSCRIPTION_ID": "not-a-guid"}, "setting AZURE_SUBSCRIPTION_ID='not-a-guid' is not a valid"),
        ({"STAGING_WORKSPACE": "../x"}, "setting STAGING_WORKSPACE"),
        ({"REGISTRY_LOCATION": "West Europe"}, "setting REGISTRY_LOCATION"),
        ({"PROMOTION_BACKEND": "aws"}, "setting PROMOTION_BACKEND='aws' must be one of"),
        ({"AzureWebJobsStorage": ""}, "setting AzureWebJobsStorage is missing"),
    ],
)
def test_bad_settings_name_the_variable(change, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({**AZURE, **change})


def test_local_backend_needs_no_azure_settings():
    settings = Settings.from_env({"PROMOTION_BACKEND": "local"})
    assert settings.state_store == "sqlite" and settings.staging_workspace == "ws-staging"
