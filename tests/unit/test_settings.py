"""Settings: every error names the setting and never its value (a setting may hold a secret), each part of the app
checks only what it uses, and relative paths resolve against the app root."""

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest

from promotion import settings as settings_module
from promotion.settings import APP_ROOT, EventTopic, Settings, SettingsError, TableStoreLocation

SUBSCRIPTION = "12345678-1234-1234-1234-123456789abc"
PRODUCTION_SUBSCRIPTION = "87654321-4321-4321-4321-cba987654321"
AZURE = {
    "AZURE_SUBSCRIPTION_ID": SUBSCRIPTION,
    "STAGING_RESOURCE_GROUP": "rg-staging",
    "STAGING_WORKSPACE": "ws-staging",
    "REGISTRY_NAME": "shared",
    "REGISTRY_LOCATION": "westeurope",
    "PRODUCTION_RESOURCE_GROUP": "rg-prod",
    "PRODUCTION_WORKSPACE": "ws-prod",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
}
SECRET = "c3VwZXJzZWNyZXRrZXk="  # a base64 account key, as Storage issues them
CONNECTION_WITH_KEY = (
    f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={SECRET};EndpointSuffix=core.windows.net"
)
SAS_ENDPOINT = f"https://topic.westeurope-1.eventgrid.azure.net/api/events?sv=2023&sig={SECRET}"


@pytest.fixture(autouse=True)
def no_script_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's AzureWebJobsScriptRoot would move the app root; these tests set it only where they mean to."""
    monkeypatch.delenv("AzureWebJobsScriptRoot", raising=False)


def azure(**changes: str) -> Settings:
    return Settings.from_env({**AZURE, **changes})


# -- the Azure settings -------------------------------------------------------------------------------------


def test_azure_settings_and_derived_ids():
    settings = azure()
    assert settings.backend == "azureml" and settings.state_store == "tables"
    assert settings.staging_workspace_id == (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-staging"
        "/providers/Microsoft.MachineLearningServices/workspaces/ws-staging"
    )


def test_production_subscription_defaults_to_the_azure_subscription():
    settings = azure()
    assert settings.production_subscription_id == SUBSCRIPTION
    assert settings.production_workspace_id == (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-prod"
        "/providers/Microsoft.MachineLearningServices/workspaces/ws-prod"
    )
    assert azure(PRODUCTION_SUBSCRIPTION_ID="  ").production_subscription_id == SUBSCRIPTION


def test_production_may_live_in_another_subscription():
    settings = azure(PRODUCTION_SUBSCRIPTION_ID=PRODUCTION_SUBSCRIPTION)
    assert settings.production_subscription_id == PRODUCTION_SUBSCRIPTION
    assert settings.production_workspace_id.startswith(
        f"/subscriptions/{PRODUCTION_SUBSCRIPTION}/resourceGroups/rg-prod/"
    )
    assert settings.staging_workspace_id.startswith(f"/subscriptions/{SUBSCRIPTION}/")  # staging stays where it was
    assert settings.registry_subscription_id == SUBSCRIPTION


def test_the_registry_may_live_in_another_subscription_and_resource_group():
    settings = azure(REGISTRY_SUBSCRIPTION_ID=PRODUCTION_SUBSCRIPTION, REGISTRY_RESOURCE_GROUP="rg-registry")
    assert settings.registry_subscription_id == PRODUCTION_SUBSCRIPTION
    assert settings.registry_resource_group == "rg-registry"
    assert azure().registry_resource_group is None


def test_local_backend_needs_no_azure_settings():
    settings = Settings.from_env({"PROMOTION_BACKEND": "local"})
    assert settings.state_store == "sqlite" and settings.staging_workspace == "ws-staging"
    assert settings.event_topic() is None


def test_settings_are_read_from_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch):
    for name, value in AZURE.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("STAGING_WORKSPACE", "ws-from-env")
    assert Settings.from_env().staging_workspace == "ws-from-env"


@pytest.mark.parametrize(
    "name",
    [
        "AZURE_SUBSCRIPTION_ID",
        "STAGING_RESOURCE_GROUP",
        "STAGING_WORKSPACE",
        "REGISTRY_NAME",
        "REGISTRY_LOCATION",
        "PRODUCTION_RESOURCE_GROUP",
        "PRODUCTION_WORKSPACE",
    ],
)
def test_a_missing_azure_setting_is_named(name):
    with pytest.raises(SettingsError, match=f"setting {name} is missing"):
        Settings.from_env({key: value for key, value in AZURE.items() if key != name})
    with pytest.raises(SettingsError, match=f"setting {name} is missing"):
        azure(**{name: "   "})


# Bad values that carry a secret: the message must name the setting and leave the value out.
BAD_VALUES = [
    ("AZURE_SUBSCRIPTION_ID", f"not-a-guid-{SECRET}"),
    ("AZURE_SUBSCRIPTION_ID", "12345678-1234-1234-1234-123456789abz"),
    ("PRODUCTION_SUBSCRIPTION_ID", f"{{{SECRET}}}"),
    ("PRODUCTION_SUBSCRIPTION_ID", CONNECTION_WITH_KEY),
    ("REGISTRY_SUBSCRIPTION_ID", f"{SECRET}-1234-1234-1234-123456789abc"),
    ("STAGING_RESOURCE_GROUP", f"rg/{SECRET}"),
    ("STAGING_WORKSPACE", f"../{SECRET}"),
    ("REGISTRY_NAME", f"registry {SECRET}"),
    ("REGISTRY_LOCATION", f"West Europe {SECRET}"),
    ("REGISTRY_RESOURCE_GROUP", f"rg?sig={SECRET}"),
    ("PRODUCTION_RESOURCE_GROUP", "rg-ending-in-a-dot."),
    ("PRODUCTION_WORKSPACE", CONNECTION_WITH_KEY),
    ("PROMOTION_BACKEND", f"aws-{SECRET}"),
    ("PROMOTION_STATE_STORE", f"cosmos;AccountKey={SECRET}"),
    ("PROMOTION_COPY_TIMEOUT_MINUTES", SECRET),
    ("PROMOTION_COPY_TIMEOUT_MINUTES", "-15"),
    ("PROMOTION_EVENTS_RETENTION_DAYS", f"30{SECRET}"),
    ("PROMOTION_EVENTS_RETENTION_DAYS", "0"),
    ("PROMOTION_DECISIONS_RETENTION_DAYS", f"7{SECRET}"),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_bad_settings_name_the_setting_never_the_value(name, value):
    with pytest.raises(SettingsError, match=f"setting {name} ") as refused:
        azure(**{name: value})
    message = str(refused.value)
    assert value not in message
    assert SECRET not in message


@pytest.mark.parametrize(
    ("name", "value", "check"),
    [
        ("AzureWebJobsStorage__tableServiceUri", f"http://acct.table.core.windows.net/?sig={SECRET}", "table_store"),
        ("AzureWebJobsStorage__tableServiceUri", f"not a url {SECRET}", "table_store"),
        ("AzureWebJobsStorage__accountName", f"Bad_Account_{SECRET}", "table_store"),
        ("PROMOTION_EVENTS_ENDPOINT", SAS_ENDPOINT.replace("https://", "http://"), "event_topic"),
        ("PROMOTION_EVENTS_ENDPOINT", f"https://user:{SECRET}@topic.eventgrid.azure.net/api/events", "event_topic"),
        ("PROMOTION_EVENTS_ENDPOINT", f"ftp://topic/{SECRET}", "event_topic"),
        ("PROMOTION_EVENTS_ENDPOINT", f"topic.eventgrid.azure.net/{SECRET}", "event_topic"),
        ("PROMOTION_EVENTS_NAMESPACE_TOPIC", f"bad topic {SECRET}!", "event_topic"),
    ],
)
def test_settings_checked_on_use_name_the_setting_never_the_value(name, value, check):
    env = {key: val for key, val in AZURE.items() if key != "AzureWebJobsStorage"}
    if name == "PROMOTION_EVENTS_NAMESPACE_TOPIC":
        env["PROMOTION_EVENTS_ENDPOINT"] = "https://ns.westeurope-1.eventgrid.azure.net"
    settings = Settings.from_env({**env, name: value})  # not checked yet: the Azure settings are fine

    with pytest.raises(SettingsError, match=f"setting {name} ") as refused:
        getattr(settings, check)()

    assert value not in str(refused.value)
    assert SECRET not in str(refused.value)


def test_secret_settings_never_show_in_the_settings_repr():
    settings = azure(
        AzureWebJobsStorage=CONNECTION_WITH_KEY,
        PROMOTION_EVENTS_ENDPOINT=SAS_ENDPOINT,
        PROMOTION_EVENTS_KEY=f"key-{SECRET}",
        SOME_OTHER_SECRET=f"other-{SECRET}",
    )
    for text in (repr(settings), str(settings), f"{settings!r}"):
        assert SECRET not in text
    assert settings.env["AzureWebJobsStorage"] == CONNECTION_WITH_KEY  # kept, only not shown


def test_the_event_topic_repr_hides_its_key():
    topic = azure(
        PROMOTION_EVENTS_ENDPOINT="https://t.westeurope-1.eventgrid.azure.net/api/events",
        PROMOTION_EVENTS_KEY=SECRET,
    ).event_topic()
    assert topic is not None and topic.key == SECRET
    assert SECRET not in repr(topic) and SECRET not in str(topic)


def test_the_table_store_location_repr_hides_the_account_key():
    location = azure(AzureWebJobsStorage=CONNECTION_WITH_KEY).table_store()
    assert location.connection_string == CONNECTION_WITH_KEY
    assert SECRET not in repr(location) and SECRET not in str(location)


# -- the store's settings: checked only when the store is built ---------------------------------------------


def test_missing_storage_does_not_fail_the_settings_only_the_store():
    settings = Settings.from_env({key: value for key, value in AZURE.items() if key != "AzureWebJobsStorage"})

    assert settings.staging_workspace == "ws-staging"  # policy check and a dry-run reconcile can go on
    with pytest.raises(SettingsError, match="setting AzureWebJobsStorage is missing"):
        settings.table_store()
    with pytest.raises(SettingsError, match="setting AzureWebJobsStorage is missing"):
        azure(AzureWebJobsStorage="   ").table_store()


def test_the_store_uses_the_connection_string_as_it_is():
    assert azure().table_store() == TableStoreLocation(connection_string="UseDevelopmentStorage=true")
    assert azure(AzureWebJobsStorage=f" {CONNECTION_WITH_KEY} ").table_store() == TableStoreLocation(
        connection_string=CONNECTION_WITH_KEY
    )


@pytest.mark.parametrize(
    ("variant", "endpoint"),
    [
        ({"AzureWebJobsStorage__accountName": "acct01"}, "https://acct01.table.core.windows.net"),
        (
            {"AzureWebJobsStorage__tableServiceUri": "https://acct01.table.core.chinacloudapi.cn"},
            "https://acct01.table.core.chinacloudapi.cn",
        ),
        (
            {
                "AzureWebJobsStorage__tableServiceUri": "https://uri.table.core.windows.net",
                "AzureWebJobsStorage__accountName": "name",
            },
            "https://uri.table.core.windows.net",
        ),
    ],
)
def test_identity_based_storage_gives_the_table_endpoint(variant, endpoint):
    env = {key: value for key, value in AZURE.items() if key != "AzureWebJobsStorage"}
    assert Settings.from_env({**env, **variant}).table_store() == TableStoreLocation(endpoint=endpoint)


def test_a_connection_string_wins_over_the_identity_based_variants():
    settings = azure(AzureWebJobsStorage__accountName="acct01")
    assert settings.table_store() == TableStoreLocation(connection_string="UseDevelopmentStorage=true")


# -- the event topic: checked only when publishing ----------------------------------------------------------


@pytest.mark.parametrize("endpoint", [None, "", "   "])
def test_no_endpoint_means_publishing_is_off(endpoint):
    env = {**AZURE, "PROMOTION_EVENTS_KEY": "k"}
    if endpoint is not None:
        env["PROMOTION_EVENTS_ENDPOINT"] = endpoint
    assert Settings.from_env(env).event_topic() is None


def test_an_https_endpoint_without_a_key_uses_the_managed_identity():
    url = "https://topic.westeurope-1.eventgrid.azure.net/api/events"
    assert azure(PROMOTION_EVENTS_ENDPOINT=url).event_topic() == EventTopic(url, None, None)


def test_plain_http_is_allowed_only_with_a_key():
    url = "http://127.0.0.1:7071/api/receiver"
    assert azure(PROMOTION_EVENTS_ENDPOINT=url, PROMOTION_EVENTS_KEY="k").event_topic() == EventTopic(url, "k", None)
    with pytest.raises(SettingsError, match="setting PROMOTION_EVENTS_ENDPOINT"):
        azure(PROMOTION_EVENTS_ENDPOINT=url).event_topic()
    with pytest.raises(SettingsError, match="setting PROMOTION_EVENTS_ENDPOINT"):
        azure(PROMOTION_EVENTS_ENDPOINT=url, PROMOTION_EVENTS_KEY="   ").event_topic()


@pytest.mark.parametrize("topic", ["orders", "abc", "model-events-2", "A" * 50])
def test_a_valid_namespace_topic_is_kept(topic):
    settings = azure(
        PROMOTION_EVENTS_ENDPOINT="https://ns.westeurope-1.eventgrid.azure.net", PROMOTION_EVENTS_NAMESPACE_TOPIC=topic
    )
    assert settings.event_topic().namespace_topic == topic


@pytest.mark.parametrize("topic", ["ab", "A" * 51, "has space", "under_score", "dot.ted", "slash/ed", "ümlaut"])
def test_an_invalid_namespace_topic_is_refused(topic):
    settings = azure(
        PROMOTION_EVENTS_ENDPOINT="https://ns.westeurope-1.eventgrid.azure.net", PROMOTION_EVENTS_NAMESPACE_TOPIC=topic
    )
    with pytest.raises(SettingsError, match="setting PROMOTION_EVENTS_NAMESPACE_TOPIC") as refused:
        settings.event_topic()
    assert topic not in str(refused.value)


def test_a_bad_event_topic_does_not_fail_the_settings():
    settings = azure(PROMOTION_EVENTS_ENDPOINT="ftp://nope")
    assert settings.table_store().connection_string == "UseDevelopmentStorage=true"
    with pytest.raises(SettingsError):
        settings.event_topic()


# -- numbers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, timedelta(minutes=120)), ("", timedelta(minutes=120)), ("30", timedelta(minutes=30)),
     (" 45 ", timedelta(minutes=45)), ("0.5", timedelta(seconds=30)), ("1e-3", timedelta(milliseconds=60))],
)  # fmt: skip
def test_copy_timeout_minutes(value, expected):
    env = {**AZURE} if value is None else {**AZURE, "PROMOTION_COPY_TIMEOUT_MINUTES": value}
    assert Settings.from_env(env).copy_timeout == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, timedelta(days=30)), ("7", timedelta(days=7)), ("0.25", timedelta(hours=6)), ("365", timedelta(days=365))],
)
def test_events_retention_days(value, expected):
    env = {**AZURE} if value is None else {**AZURE, "PROMOTION_EVENTS_RETENTION_DAYS": value}
    assert Settings.from_env(env).events_retention == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, timedelta(days=7)), (" 2 ", timedelta(days=2)), ("1.5", timedelta(hours=36)), ("365", timedelta(days=365))],
)
def test_decisions_retention_days(value, expected):
    env = {**AZURE} if value is None else {**AZURE, "PROMOTION_DECISIONS_RETENTION_DAYS": value}
    assert Settings.from_env(env).decisions_retention == expected


@pytest.mark.parametrize("value", ["1", "0.99", "0.5", "1.0"])
def test_decisions_are_kept_longer_than_event_grids_day_of_redelivery(value):
    with pytest.raises(SettingsError, match="PROMOTION_DECISIONS_RETENTION_DAYS must be more than 1 day: Event Grid"):
        azure(PROMOTION_DECISIONS_RETENTION_DAYS=value)


@pytest.mark.parametrize(
    "name", ["PROMOTION_COPY_TIMEOUT_MINUTES", "PROMOTION_EVENTS_RETENTION_DAYS", "PROMOTION_DECISIONS_RETENTION_DAYS"]
)
@pytest.mark.parametrize("value", ["0", "-1", "-0.5", "abc", "nan", "NaN", "inf", "-inf", "1e300", "1,5", "true"])
def test_durations_must_be_positive_numbers(name, value):
    with pytest.raises(SettingsError, match=f"setting {name} must be a positive number") as refused:
        azure(**{name: value})
    assert value not in str(refused.value).replace(name, "")


# -- the source of lifecycle events -------------------------------------------------------------------------


def test_the_event_source_is_the_function_app():
    assert azure().events_source == "local"
    assert azure(WEBSITE_SITE_NAME="promotion-app").events_source == "/sites/promotion-app"
    assert azure(WEBSITE_SITE_NAME="x", PROMOTION_EVENTS_SOURCE="urn:mine").events_source == "urn:mine"


# -- paths --------------------------------------------------------------------------------------------------


def test_the_app_root_is_the_folder_of_function_app():
    assert (APP_ROOT / "function_app.py").is_file()
    assert (APP_ROOT / "promotion" / "settings.py").resolve() == Path(settings_module.__file__).resolve()


def test_default_paths_are_in_the_app_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.chdir(tmp_path)  # wherever the command runs from
    settings = azure()
    assert settings.policy_file == APP_ROOT / "promotion-policy.json"
    assert settings.local_root == APP_ROOT / ".promotion"


def test_relative_paths_resolve_against_the_app_root_not_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.chdir(tmp_path)
    settings = azure(PROMOTION_POLICY_FILE="policies/strict.json", PROMOTION_LOCAL_ROOT="state/local")

    assert settings.policy_file == APP_ROOT / "policies" / "strict.json"
    assert settings.local_root == APP_ROOT / "state" / "local"
    assert settings.policy_file.is_absolute() and settings.local_root.is_absolute()
    assert not str(settings.policy_file).startswith(str(tmp_path))


def test_absolute_paths_stay_as_they_are(tmp_path: Path):
    settings = azure(PROMOTION_POLICY_FILE=str(tmp_path / "p.json"), PROMOTION_LOCAL_ROOT=str(tmp_path / "root"))
    assert settings.policy_file == tmp_path / "p.json"
    assert settings.local_root == tmp_path / "root"


def test_the_hosts_script_root_is_the_app_root_in_azure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    # In Azure the host sets AzureWebJobsScriptRoot to the folder of function_app.py (/home/site/wwwroot).
    monkeypatch.setenv("AzureWebJobsScriptRoot", str(tmp_path))
    settings = azure(AzureWebJobsScriptRoot=str(tmp_path), PROMOTION_POLICY_FILE="p.json")
    assert settings.policy_file == tmp_path / "p.json"
    assert settings.local_root == tmp_path / ".promotion"


# -- a newcomer's first run -------------------------------------------------------------------------------------


def test_a_missing_azure_setting_without_a_backend_points_at_the_local_backend():
    with pytest.raises(SettingsError) as unchosen:
        Settings.from_env({})
    assert str(unchosen.value).startswith("setting AZURE_SUBSCRIPTION_ID is missing")
    assert "PROMOTION_BACKEND is not set" in str(unchosen.value) and "PROMOTION_BACKEND=local" in str(unchosen.value)

    with pytest.raises(SettingsError) as chosen:
        Settings.from_env({"PROMOTION_BACKEND": "azureml"})
    assert "PROMOTION_BACKEND" not in str(chosen.value)  # Azure was asked for: no hint


def test_local_settings_values_complete_the_environment_which_wins(tmp_path):
    (tmp_path / "local.settings.json").write_text(
        json.dumps({"IsEncrypted": False, "Values": {"PROMOTION_BACKEND": "local", "REGISTRY_NAME": "from-file"}})
    )

    env = settings_module.with_local_settings({"REGISTRY_NAME": "from-env", "PATH": "/bin"}, root=tmp_path)

    assert env == {"PROMOTION_BACKEND": "local", "REGISTRY_NAME": "from-env", "PATH": "/bin"}
    assert settings_module.with_local_settings({"A": "1"}, root=tmp_path / "none") == {"A": "1"}  # no file


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not a readable JSON file"),
        ('{"Values": []}', 'expected an object "Values"'),
        ('{"Values": {"PROMOTION_EVENTS_KEY": 12345}}', "Values.PROMOTION_EVENTS_KEY must be a string"),
    ],
)
def test_a_broken_local_settings_file_is_named_never_its_values(tmp_path, text, message):
    (tmp_path / "local.settings.json").write_text(text)
    with pytest.raises(SettingsError, match=re.escape(message)) as raised:
        settings_module.with_local_settings({}, root=tmp_path)
    assert "12345" not in str(raised.value)


def test_without_an_app_root_relative_paths_are_refused_not_put_in_site_packages(monkeypatch, tmp_path):
    """What a non-editable `pip install .` leaves: the package without host.json beside it."""
    monkeypatch.setattr(settings_module, "APP_ROOT", tmp_path / "site-packages")
    with pytest.raises(SettingsError, match=r"installed package \(pip install \.\).*pip install -e \."):
        Settings.from_env({"PROMOTION_BACKEND": "local"})
    absolute = Settings.from_env(
        {
            "PROMOTION_BACKEND": "local",
            "PROMOTION_POLICY_FILE": str(tmp_path / "policy.json"),
            "PROMOTION_LOCAL_ROOT": str(tmp_path / "state"),
        }
    )
    assert absolute.local_root == tmp_path / "state"
    hosted = Settings.from_env({"PROMOTION_BACKEND": "local", "AzureWebJobsScriptRoot": str(tmp_path / "app")})
    assert hosted.local_root == tmp_path / "app" / ".promotion"
