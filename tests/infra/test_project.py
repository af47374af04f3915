"""The project's own rules, read from the parsed infrastructure: what platform authentication lets through, what
Event Grid delivers and where it dead-letters, which roles are assigned (against the README's table), which
settings are set (against what the app reads), no secrets, no shared keys."""

from __future__ import annotations

import json
import re

import pytest

from tests.infra import bicep
from tests.infra.conftest import REPO
from tests.infra.settings_read import settings_read

# Built-in role definition ids, the same in every tenant (Azure's "built-in roles" reference).
BUILT_IN_ROLES = {
    "AzureML Data Scientist": "f6c7c914-8db3-469d-8ca1-694a8f32e121",
    "AzureML Registry User": "1823dd4f-9b8c-4ab6-ab4e-7397a3684615",
    "EventGrid Data Sender": "d5a91429-5739-47e2-a06b-3470a27159e7",
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
}

# Settings the app reads that the deployment deliberately leaves unset.
NOT_SET = {
    "AzureWebJobsStorage": "a connection string holds the account key; the identity-based __ settings are set",
    "AzureWebJobsStorage__accountName": "the service URIs are set instead, and the app reads __tableServiceUri first",
    "AzureWebJobsScriptRoot": "set by the Functions host",
    "PROMOTION_EVENTS_KEY": "a secret: the managed identity signs (EventGrid Data Sender) instead",
    "PROMOTION_EVENTS_NAMESPACE_TOPIC": "for an Event Grid namespace; the deployment creates a custom topic",
    "PROMOTION_TRUST_IDENTITY_HEADERS": "for a developer's machine only; the app refuses it in Azure",
    "PROMOTION_LOCAL_ROOT": "the local backend's and the SQLite store's folder; Azure uses Azure ML and Tables",
}
PLATFORM_PREFIX = "WEBSITE_"  # App Service sets these itself
HOST_AND_IDENTITY = {
    "AZURE_CLIENT_ID",  # azure-identity picks a user-assigned identity only when this names it
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
}
# A connection string to Application Insights names the resource; with local auth off it grants nothing.
NOT_SECRETS = {"APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"}
SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|CONNECTION_?STRING|SAS", re.IGNORECASE)
SECRET_VALUE = re.compile(r"AccountKey=|SharedAccessSignature|sig=|listKeys|listSecrets|primaryKey|\.keys", re.I)


def only(found: list, what: str):
    assert len(found) == 1, f"expected one {what}, found {len(found)}"
    return found[0]


def resources_of(infra, name: str, type_name: str) -> list[bicep.Resource]:
    return [r for r in bicep.resources(infra[name], bicep.INFRA / name) if r.type.lower() == type_name.lower()]


def text(value: object) -> str:
    return value.text if isinstance(value, bicep.Expr) else str(value)


# --- platform authentication -------------------------------------------------------------------------------------


def auth_settings(infra) -> bicep.Obj:
    configs = resources_of(infra, "app/function.bicep", "Microsoft.Web/sites/config")
    return only([c for c in configs if c.body.get("name") == "authsettingsV2"], "authsettingsV2").body.get("properties")


def test_platform_authentication_requires_sign_in_and_answers_401(infra):
    validation = auth_settings(infra).get("globalValidation")
    assert validation.get("requireAuthentication") is True
    assert validation.get("unauthenticatedClientAction") == "Return401"
    assert auth_settings(infra).get("platform").get("enabled") is True
    entra = auth_settings(infra).get("identityProviders").get("azureActiveDirectory")
    assert text(entra.get("registration").get("clientId")) == "authClientId"
    assert "clientSecretSettingName" not in {k for k in entra.get("registration").items}


def test_excluded_paths_are_the_webhook_and_the_console_page_only(infra):
    validation = auth_settings(infra).get("globalValidation")
    assert text(validation.get("excludedPaths")) == "excludedPaths"
    paths = bicep.parameters(infra["app/function.bicep"])["excludedPaths"]
    assert paths == ["/runtime/webhooks/eventgrid", "/api/console", "/api/console/app.js", "/api/console/app.css"]
    # main.bicep keeps the default: nothing else is let through.
    function = only([m for m in bicep.modules(infra["main.bicep"]) if m.path == "app/function.bicep"], "module")
    assert "excludedPaths" not in function.body.get("params").items


def test_the_readme_names_the_same_excluded_paths(infra):
    readme = (REPO / "README.md").read_text()
    for path in bicep.parameters(infra["app/function.bicep"])["excludedPaths"]:
        assert f"`{path}`" in readme


# --- Event Grid ----------------------------------------------------------------------------------------------------


def event_subscription(infra) -> bicep.Obj:
    found = resources_of(infra, "eventgrid.bicep", "Microsoft.EventGrid/systemTopics/eventSubscriptions")
    return only(found, "event subscription").body.get("properties")


def test_the_subscription_takes_model_registered_only(infra):
    assert event_subscription(infra).get("filter").get("includedEventTypes") == [
        "Microsoft.MachineLearningServices.ModelRegistered"
    ]


def test_the_subscription_delivers_to_on_model_registered(infra):
    destination = event_subscription(infra).get("destination")
    assert destination.get("endpointType") == "WebHook"
    url = text(destination.get("properties").get("endpointUrl"))
    assert "/runtime/webhooks/eventgrid?functionName=${functionName}&code=${systemKey}" in url
    assert bicep.parameters(infra["eventgrid.bicep"])["functionName"] == "on_model_registered"
    triggers = (REPO / "promotion" / "triggers" / "events.py").read_text()
    assert re.search(r"@bp\.event_grid_trigger\(.*\)\ndef on_model_registered\(", triggers)
    key = text(bicep.variables(infra["eventgrid.bicep"])["systemKey"])
    assert key.endswith(".systemKeys.eventgrid_extension") and "/host/default" in key


def test_the_subscription_dead_letters_with_the_topic_identity(infra):
    subscription = event_subscription(infra)
    assert subscription.get("deadLetterDestination") is None  # the key-based variant cannot work without shared keys
    dead_letter = subscription.get("deadLetterWithResourceIdentity")
    assert dead_letter.get("identity").get("type") == "SystemAssigned"
    destination = dead_letter.get("deadLetterDestination")
    assert destination.get("endpointType") == "StorageBlob"
    assert text(destination.get("properties").get("blobContainerName")) == "deadLetterContainerName"
    topics = resources_of(infra, "eventgrid.bicep", "Microsoft.EventGrid/systemTopics")
    topic = only([t for t in topics if not t.existing], "new topic")
    assert topic.body.get("identity").get("type") == "SystemAssigned"
    assert topic.body.get("properties").get("topicType") == "Microsoft.MachineLearningServices.Workspaces"


def test_the_subscription_sets_retries_and_the_delivery_schema(infra):
    subscription = event_subscription(infra)
    assert subscription.get("retryPolicy").items == {"maxDeliveryAttempts": 30, "eventTimeToLiveInMinutes": 1440}
    assert subscription.get("eventDeliverySchema") == "EventGridSchema"


def test_an_existing_system_topic_is_reused(infra):
    topics = {r.symbol: r for r in resources_of(infra, "eventgrid.bicep", "Microsoft.EventGrid/systemTopics")}
    assert topics["newTopic"].condition == "!reuseSystemTopic" and not topics["newTopic"].existing
    assert topics["existingTopic"].condition == "reuseSystemTopic" and topics["existingTopic"].existing


def test_the_events_topic_takes_cloudevents_and_no_keys(infra):
    topic = only(resources_of(infra, "app/events-topic.bicep", "Microsoft.EventGrid/topics"), "topic").body
    assert topic.get("properties").get("inputSchema") == "CloudEventSchemaV1_0"
    assert topic.get("properties").get("disableLocalAuth") is True


def test_every_topic_the_readme_creates_takes_cloudevents():
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"az eventgrid topic create(?:[^\n]*\\\n)*[^\n]*", readme)
    assert commands
    for command in commands:
        assert "--input-schema cloudeventschemav1_0" in command, command


# --- roles ----------------------------------------------------------------------------------------------------------


def role_ids(infra) -> dict[str, tuple[str, str]]:
    """roles.bicep: symbol -> (id, the role name in the comment beside it)."""
    roles = bicep.variables(infra["app/roles.bicep"])["roles"]
    return {key: (value, roles.comments.get(key, "")) for key, value in roles.items.items()}


def test_every_role_id_matches_the_name_beside_it(infra):
    ids = role_ids(infra)
    assert ids
    for symbol, (role_id, name) in ids.items():
        assert BUILT_IN_ROLES.get(name) == role_id, f"{symbol}: {role_id} is not {name!r}"


def bicep_assignments(infra) -> set[tuple[str, str, str, bool]]:
    """(identity, scope, role name, conditional) of every role assignment in rbac.bicep."""
    ids = role_ids(infra)
    found = set()
    for resource in resources_of(infra, "app/rbac.bicep", "Microsoft.Authorization/roleAssignments"):
        properties = resource.body.get("properties")
        symbol = re.search(r"roles\.(\w+)\)", text(properties.get("roleDefinitionId"))).group(1)
        name = ids[symbol][1]
        assert properties.comments.get("roleDefinitionId") == name, f"{resource.symbol}: comment is not {name!r}"
        assert properties.get("principalType") == "ServicePrincipal"
        scope = properties.get("description").split(":")[0]
        target = re.fullmatch(r"target == '(\w+)'(?: && (.+))?", resource.condition)
        assert target, f"{resource.symbol}: condition {resource.condition!r}"
        identity = "system topic" if target.group(1) == "deadletter" else "app"
        found.add((identity, scope, name, target.group(2) is not None))
    return found


def readme_assignments() -> set[tuple[str, str, str, bool]]:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Permissions\n") :]
    found = set()
    for row in re.findall(r"^\| (app|system topic) \| (.+?) \| \*\*(.+?)\*\* \| (.+) \|$", section, re.MULTILINE):
        found.add((row[0], row[1], row[2], "*conditional*" in row[3]))
    return found


def test_the_readme_permission_table_and_the_bicep_assign_the_same_roles(infra):
    readme = readme_assignments()
    assert len(readme) == 9
    assert bicep_assignments(infra) == readme


def test_each_rbac_target_is_deployed(infra):
    targets = {}
    for name, root in infra.items():
        for module in bicep.modules(root):
            if module.path.endswith("rbac.bicep"):
                targets[module.body.get("params").get("target")] = name
    assert targets == {
        "app": "main.bicep",
        "staging": "grants.bicep",
        "registry": "grants.bicep",
        "production": "grants.bicep",
        "deadletter": "eventgrid.bicep",
    }


def test_azd_provision_writes_nothing_outside_the_app_resource_group(infra):
    # `azd down` deletes every resource group its deployment wrote to: main.bicep's modules all go to `rg`.
    for module in bicep.modules(infra["main.bicep"]):
        assert text(module.body.get("scope")) == "rg", module.symbol


# --- settings -------------------------------------------------------------------------------------------------------


def app_settings(infra) -> bicep.Obj:
    settings = bicep.variables(infra["main.bicep"])["appSettings"]
    function = only([m for m in bicep.modules(infra["main.bicep"]) if m.path == "app/function.bicep"], "module")
    assert text(function.body.get("params").get("appSettings")) == "appSettings"
    config = [c for c in resources_of(infra, "app/function.bicep", "Microsoft.Web/sites/config")]
    applied = only([c for c in config if c.body.get("name") == "appsettings"], "appsettings").body
    assert text(applied.get("properties")) == "appSettings"
    return settings


def test_every_setting_the_app_reads_is_set(infra):
    read = settings_read(sorted((REPO / "promotion").rglob("*.py")))
    assert {"AZURE_SUBSCRIPTION_ID", "PROMOTION_RECONCILE_SCHEDULE", "WEBSITE_AUTH_ENABLED"} <= read  # the scan works
    expected = {name for name in read if not name.startswith(PLATFORM_PREFIX)} - set(NOT_SET)
    missing = expected - set(app_settings(infra).items)
    assert missing == set(), f"settings the app reads but the deployment does not set: {sorted(missing)}"


def test_every_exemption_is_still_read_by_the_app():
    read = settings_read(sorted((REPO / "promotion").rglob("*.py")))
    assert set(NOT_SET) - read == set()


def test_the_host_and_azure_identity_settings_are_set(infra):
    settings = app_settings(infra)
    assert set(settings.items) >= HOST_AND_IDENTITY
    assert settings.get("AzureWebJobsStorage__credential") == "managedidentity"
    assert text(settings.get("AZURE_CLIENT_ID")) == text(settings.get("AzureWebJobsStorage__clientId"))
    assert "identity.outputs.clientId" in text(settings.get("AZURE_CLIENT_ID"))
    # Flex Consumption takes the runtime from functionAppConfig and refuses these settings.
    assert {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION"}.isdisjoint(settings.items)


def test_the_registry_location_is_explicit(infra):
    settings = app_settings(infra)
    assert text(settings.get("REGISTRY_RESOURCE_GROUP")) == "registryResourceGroup"
    assert text(settings.get("REGISTRY_SUBSCRIPTION_ID")) == "registrySubscription"


def test_no_setting_holds_a_secret(infra):
    for name, value in app_settings(infra).items.items():
        if name not in NOT_SECRETS:
            assert not SECRET_NAME.search(name), name
        assert not SECRET_VALUE.search(text(value)), name


@pytest.mark.parametrize("planted", ["PROMOTION_EVENTS_KEY: 'abc'", "X: listKeys(topic.id, '2025-02-15').key1"])
def test_a_planted_secret_is_caught(infra, planted):
    source = (
        (bicep.INFRA / "main.bicep")
        .read_text()
        .replace("var appSettings = {\n", f"var appSettings = {{\n  {planted}\n")
    )
    settings = bicep.variables(bicep.parse(source))["appSettings"]
    with pytest.raises(AssertionError):
        for name, value in settings.items.items():
            if name not in NOT_SECRETS:
                assert not SECRET_NAME.search(name), name
            assert not SECRET_VALUE.search(text(value)), name


# --- storage and the rest -------------------------------------------------------------------------------------------


def test_storage_takes_no_shared_key(infra):
    account = only(resources_of(infra, "core/storage.bicep", "Microsoft.Storage/storageAccounts"), "account").body
    assert account.get("properties").get("allowSharedKeyAccess") is False
    assert account.get("properties").get("allowBlobPublicAccess") is False
    containers = resources_of(infra, "core/storage.bicep", "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert {text(c.body.get("name")) for c in containers} == {"deploymentContainerName", "deadLetterContainerName"}
    assert bicep.variables(infra["main.bicep"])["deadLetterContainerName"] == "promotion-deadletter"


def test_the_queues_and_table_are_the_ones_the_app_uses(infra):
    params = bicep.parameters(infra["core/storage.bicep"])
    jobs = (REPO / "promotion" / "triggers" / "jobs.py").read_text()
    queue = re.search(r'JOBS_QUEUE = "([^"]+)"', jobs).group(1)
    assert params["queueNames"] == [queue, f"{queue}-poison"]
    assert params["tableNames"] == ["promotions"]


def test_flex_consumption_python_311_by_default(infra):
    plan = only(resources_of(infra, "app/function.bicep", "Microsoft.Web/serverfarms"), "plan").body
    assert plan.get("sku").items == {"name": "FC1", "tier": "FlexConsumption"}
    main = bicep.parameters(infra["main.bicep"])
    assert main["pythonVersion"] == "3.11"
    site = only(resources_of(infra, "app/function.bicep", "Microsoft.Web/sites"), "site").body
    runtime = site.get("properties").get("functionAppConfig").get("runtime")
    assert runtime.get("name") == "python" and text(runtime.get("version")) == "pythonVersion"
    assert site.get("identity").get("type") == "UserAssigned"
    assert site.get("properties").get("httpsOnly") is True


def test_application_insights_needs_entra_by_default(infra):
    assert bicep.parameters(infra["main.bicep"])["appInsightsLocalAuthDisabled"] is True
    settings = app_settings(infra)
    assert "Authorization=AAD" in text(settings.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING"))


def test_the_package_leaves_out_the_deployment_files():
    from tests.worker.test_worker_indexing import shipped_files  # Core Tools' own reading of .funcignore

    shipped = shipped_files(REPO)
    assert "function_app.py" in shipped
    leaked = [f for f in shipped if f.split("/")[0] in {"infra", "scripts", "azure.yaml", ".azure"}]
    assert leaked == []


def test_the_app_roles_hold_the_policy_approver_role_and_the_readme_ids():
    roles = {role["value"]: role for role in json.loads((REPO / "infra" / "entra" / "app-roles.json").read_text())}
    policy = json.loads((REPO / "promotion-policy.json").read_text())
    assert set(policy["production"]["approver_roles"]) <= set(roles)
    readme = (REPO / "README.md").read_text()
    for role in roles.values():
        assert role["isEnabled"] and role["allowedMemberTypes"] == ["User"]
        assert role["id"] in readme, role["value"]
    assert "appRoleAssignmentRequired=true" in readme
    assert "04b07795-8ddb-461a-bbee-02f9e1bf7b46" in readme  # the Azure CLI, pre-authorised
    assert "/.auth/login/aad/callback" in readme and "--enable-id-token-issuance true" in readme
