"""Settings, read from the environment once. Every error names the variable to fix, and never its value: a
setting may hold a secret (a connection string with its AccountKey, a SAS URL, an access key).

Each part of the app asks only for what it uses: the Azure ML settings are checked when Settings are read,
the store's and the event topic's only when the store or the publisher is built, so `policy check` and a
dry-run reconcile need nothing but the Azure settings and a credential.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from promotion.domain import ModelRef

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Resource group names: letters, digits, '_', '-', '.', '(' and ')', at most 90, not ending in '.'.
_RESOURCE_GROUP = re.compile(r"[-\w.()]{0,89}[-\w()]", re.ASCII)
# Workspace and registry names: 3-33 characters, letters, digits, '-' and '_', starting with a letter or digit.
_WORKSPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{2,32}")
_LOCATION = re.compile(r"[a-z0-9]{2,40}")
_STORAGE_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
_TOPIC = re.compile(r"[A-Za-z0-9-]{3,50}")

# The app root: the folder of function_app.py, which is what AzureWebJobsScriptRoot points at in Azure.
APP_ROOT = Path(__file__).resolve().parent.parent

BACKENDS = ("azureml", "local")
STATE_STORES = ("tables", "sqlite")

# The local backend needs no subscription, so it gets stand-in ids that keep the Azure shapes.
LOCAL_DEFAULTS = {
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
    "STAGING_RESOURCE_GROUP": "rg-ml-staging",
    "STAGING_WORKSPACE": "ws-staging",
    "REGISTRY_NAME": "shared-registry",
    "REGISTRY_LOCATION": "westeurope",
    "PRODUCTION_RESOURCE_GROUP": "rg-ml-production",
    "PRODUCTION_WORKSPACE": "ws-production",
}


class SettingsError(ValueError):
    """A missing or invalid setting; the message names it, never its value."""


@dataclass(frozen=True)
class TableStoreLocation:
    connection_string: str | None = field(default=None, repr=False)  # may hold the AccountKey
    endpoint: str | None = None  # identity-based storage: the Table endpoint, used with the managed identity


@dataclass(frozen=True)
class EventTopic:
    endpoint: str
    key: str | None  # None: DefaultAzureCredential (the managed identity needs EventGrid Data Sender)
    namespace_topic: str | None  # set for an Event Grid namespace topic, None for a custom topic

    def __repr__(self) -> str:  # the key is a secret: keep it out of logs and tracebacks
        return f"EventTopic(endpoint={self.endpoint!r}, key={'***' if self.key else None}, ...)"


@dataclass(frozen=True)
class Settings:
    backend: str
    subscription_id: str
    staging_resource_group: str
    staging_workspace: str
    registry_name: str
    registry_location: str
    production_resource_group: str
    production_workspace: str
    policy_file: Path
    local_root: Path
    state_store: str
    production_subscription_id: str = ""
    registry_subscription_id: str = ""
    registry_resource_group: str | None = None  # looked up from the registry's name when not given
    copy_timeout: timedelta = timedelta(minutes=120)
    events_retention: timedelta = timedelta(days=30)
    decisions_retention: timedelta = timedelta(days=7)
    events_source: str = "local"
    # What the lazily checked settings are read from. Kept out of repr: it holds every secret of the environment.
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "production_subscription_id", self.production_subscription_id or self.subscription_id)
        object.__setattr__(self, "registry_subscription_id", self.registry_subscription_id or self.subscription_id)

    @property
    def staging_workspace_id(self) -> str:
        return workspace_resource_id(self.subscription_id, self.staging_resource_group, self.staging_workspace)

    @property
    def production_workspace_id(self) -> str:
        return workspace_resource_id(
            self.production_subscription_id, self.production_resource_group, self.production_workspace
        )

    def registry_model_uri(self, model: ModelRef) -> str:
        return f"azureml://registries/{self.registry_name}/models/{model.name}/versions/{model.version}"

    def table_store(self) -> TableStoreLocation:
        """Where the `tables` store lives: AzureWebJobsStorage, or its identity-based variants."""
        env = self.env
        connection = env.get("AzureWebJobsStorage", "").strip()
        if connection:
            if not _is_storage_connection(connection):
                raise SettingsError("setting AzureWebJobsStorage is not a valid Storage connection string")
            return TableStoreLocation(connection_string=connection)
        uri = env.get("AzureWebJobsStorage__tableServiceUri", "").strip()
        if uri:
            if not _is_url(uri, schemes=("https",)):
                raise SettingsError("setting AzureWebJobsStorage__tableServiceUri must be an https:// URL")
            return TableStoreLocation(endpoint=uri)
        account = env.get("AzureWebJobsStorage__accountName", "").strip()
        if account:
            if not _STORAGE_ACCOUNT.fullmatch(account):
                raise SettingsError("setting AzureWebJobsStorage__accountName is not a valid storage account name")
            return TableStoreLocation(endpoint=f"https://{account}.table.core.windows.net")
        raise SettingsError(
            "setting AzureWebJobsStorage is missing (the Storage connection string for the promotion store, "
            "UseDevelopmentStorage=true for Azurite; or AzureWebJobsStorage__accountName for managed identity)"
        )

    def event_topic(self) -> EventTopic | None:
        """The Event Grid topic lifecycle events go to; None when publishing is off."""
        env = self.env
        endpoint = env.get("PROMOTION_EVENTS_ENDPOINT", "").strip()
        if not endpoint:
            return None
        key = env.get("PROMOTION_EVENTS_KEY", "").strip() or None
        # Tokens travel only over TLS; an access key may go to a plain-HTTP receiver on a developer's machine.
        if not _is_url(endpoint, schemes=("https",) if key is None else ("https", "http")):
            raise SettingsError(
                "setting PROMOTION_EVENTS_ENDPOINT must be the topic's https:// URL "
                "(http:// only together with PROMOTION_EVENTS_KEY, for a local receiver)"
            )
        topic = env.get("PROMOTION_EVENTS_NAMESPACE_TOPIC", "").strip() or None
        if topic is not None and not _TOPIC.fullmatch(topic):
            raise SettingsError("setting PROMOTION_EVENTS_NAMESPACE_TOPIC is not a valid topic name")
        return EventTopic(endpoint=endpoint, key=key, namespace_topic=topic)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        backend = _choice(env, "PROMOTION_BACKEND", BACKENDS, default="azureml")
        defaults = LOCAL_DEFAULTS if backend == "local" else {}

        def azure(name: str, pattern: re.Pattern[str], hint: str, *, required: bool = True) -> str:
            value = env.get(name, "").strip() or defaults.get(name, "")
            if not value and required:
                unchosen = "" if env.get("PROMOTION_BACKEND", "").strip() else NO_BACKEND_HINT
                raise SettingsError(f"setting {name} is missing (the {hint}){unchosen}")
            if value and not pattern.fullmatch(value):
                raise SettingsError(f"setting {name} is not a valid {hint}")
            return value

        site = env.get("WEBSITE_SITE_NAME", "").strip()
        return cls(
            backend=backend,
            subscription_id=azure("AZURE_SUBSCRIPTION_ID", _GUID, "subscription id (a GUID)"),
            staging_resource_group=azure("STAGING_RESOURCE_GROUP", _RESOURCE_GROUP, "resource group name"),
            staging_workspace=azure("STAGING_WORKSPACE", _WORKSPACE, "workspace name"),
            registry_name=azure("REGISTRY_NAME", _WORKSPACE, "registry name"),
            registry_location=azure("REGISTRY_LOCATION", _LOCATION, "Azure region name, such as westeurope"),
            production_resource_group=azure("PRODUCTION_RESOURCE_GROUP", _RESOURCE_GROUP, "resource group name"),
            production_workspace=azure("PRODUCTION_WORKSPACE", _WORKSPACE, "workspace name"),
            production_subscription_id=azure(
                "PRODUCTION_SUBSCRIPTION_ID", _GUID, "subscription id (a GUID)", required=False
            ),
            registry_subscription_id=azure(
                "REGISTRY_SUBSCRIPTION_ID", _GUID, "subscription id (a GUID)", required=False
            ),
            registry_resource_group=azure(
                "REGISTRY_RESOURCE_GROUP", _RESOURCE_GROUP, "resource group name", required=False
            )
            or None,
            policy_file=app_path(env.get("PROMOTION_POLICY_FILE", "").strip() or "promotion-policy.json", env),
            local_root=app_path(env.get("PROMOTION_LOCAL_ROOT", "").strip() or ".promotion", env),
            state_store=_choice(
                env, "PROMOTION_STATE_STORE", STATE_STORES, default="sqlite" if backend == "local" else "tables"
            ),
            copy_timeout=timedelta(minutes=_positive(env, "PROMOTION_COPY_TIMEOUT_MINUTES", 120)),
            events_retention=timedelta(days=_positive(env, "PROMOTION_EVENTS_RETENTION_DAYS", 30)),
            decisions_retention=_decisions_retention(env),
            events_source=env.get("PROMOTION_EVENTS_SOURCE", "").strip() or (f"/sites/{site}" if site else "local"),
            env=env,
        )


PUBLIC_ORIGIN = "PROMOTION_PUBLIC_ORIGIN"
_LOCAL_HOSTS = ("127.0.0.1", "localhost")


def configured_origin(env: Mapping[str, str]) -> str | None:
    """PROMOTION_PUBLIC_ORIGIN, checked: an https origin (scheme, host, optional port; no path), or http only on
    this machine (127.0.0.1, localhost). None when unset."""
    text = env.get(PUBLIC_ORIGIN, "").strip()
    if not text:
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if (
        parts is None
        or parts.scheme not in ("https", "http")
        or not parts.hostname
        or parts.username
        or parts.password
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or (parts.scheme == "http" and parts.hostname not in _LOCAL_HOSTS)
    ):
        raise SettingsError(
            f"setting {PUBLIC_ORIGIN} must be an origin such as https://promo.contoso.com "
            "(http only for 127.0.0.1 or localhost), without a path"
        )
    return f"{parts.scheme}://{parts.hostname}{f':{port}' if port else ''}"


def public_origin(env: Mapping[str, str]) -> str | None:
    """Where people reach the app: PROMOTION_PUBLIC_ORIGIN, else https:// + WEBSITE_HOSTNAME in Azure; None here."""
    configured = configured_origin(env)
    if configured:
        return configured
    host = env.get("WEBSITE_HOSTNAME", "").strip()
    return f"https://{host}" if host and env.get("WEBSITE_INSTANCE_ID") else None


def app_path(text: str, env: Mapping[str, str]) -> Path:
    """A path setting: relative paths are relative to the app root, wherever the command runs from."""
    path = Path(text).expanduser()
    if path.is_absolute():
        return path
    script_root = env.get("AzureWebJobsScriptRoot")  # the host's own word for the app root, in Azure
    return (Path(script_root) if script_root else checkout_root()) / path


def checkout_root() -> Path:
    """The folder of function_app.py and host.json. A non-editable `pip install .` copies the package into
    site-packages without the app's files, so there is no app root there: refused, rather than writing the local
    state into site-packages and looking for the policy beside it."""
    if not (APP_ROOT / "host.json").is_file():
        raise SettingsError(NOT_AN_APP_ROOT)
    return APP_ROOT


NOT_AN_APP_ROOT = (
    "promotion runs from an installed package (pip install .), which has no app root (the folder of host.json and "
    "promotion-policy.json): install it from the checkout with `pip install -e .` (make does), or set "
    "AzureWebJobsScriptRoot to the app's folder, or give PROMOTION_POLICY_FILE and PROMOTION_LOCAL_ROOT as "
    "absolute paths"
)
NO_BACKEND_HINT = (
    "; PROMOTION_BACKEND is not set, so the Azure ML backend is used: set PROMOTION_BACKEND=local to run without "
    "Azure (local.settings.example.json does)"
)


def with_local_settings(env: Mapping[str, str], root: Path | None = None) -> dict[str, str]:
    """The environment completed with the `Values` of local.settings.json at the app root, when there is one, as
    Core Tools does for the host: a variable set in the environment wins. Values must be strings, as for Core Tools.
    The file may hold secrets, so errors name the file and the key, never a value."""
    path = (APP_ROOT if root is None else root) / "local.settings.json"
    if not path.is_file():
        return dict(env)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise SettingsError(f"{path}: not a readable JSON file ({type(error).__name__})") from None
    values = document.get("Values") if isinstance(document, dict) else None
    if not isinstance(values, dict):
        raise SettingsError(f'{path}: expected an object "Values" of settings')
    for key, value in values.items():
        if not isinstance(value, str):
            raise SettingsError(f"{path}: Values.{key} must be a string")
    return {**values, **env}


def workspace_resource_id(subscription_id: str, resource_group: str, workspace: str) -> str:
    return (
        f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.MachineLearningServices/workspaces/{workspace}"
    )


def _is_url(text: str, *, schemes: tuple[str, ...]) -> bool:
    try:
        parts = urlsplit(text)
    except ValueError:
        return False
    return parts.scheme in schemes and bool(parts.hostname) and not parts.username and not parts.password


def _is_storage_connection(text: str) -> bool:
    """The shapes the Storage SDKs accept: Azurite's shortcut, or `Key=value;` pairs naming an account (or an
    endpoint) with a base64 account key or a SAS. Checked here, because a bad key otherwise surfaces as a signing
    error on the first request, and a bad account name as an outage."""
    if text == "UseDevelopmentStorage=true":
        return True
    parts = dict(part.split("=", 1) for part in text.split(";") if "=" in part)
    if not parts or any(not part or "=" not in part for part in text.rstrip(";").split(";")):
        return False
    account = parts.get("AccountName")
    if account is not None and not _STORAGE_ACCOUNT.fullmatch(account):
        return False
    if account is None and not any(key.endswith("Endpoint") for key in parts):
        return False
    key = parts.get("AccountKey")
    if key is not None:
        try:
            base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            return False
    return key is not None or "SharedAccessSignature" in parts


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 10**6:  # also false for nan
        raise SettingsError(f"setting {name} must be a positive number")
    return value


def _decisions_retention(env: Mapping[str, str]) -> timedelta:
    """Event Grid redelivers an event for up to 24 hours, and a redelivery must still find the decision made
    about it (or the event would be decided, and perhaps copied, again): so more than a day, always."""
    days = _positive(env, "PROMOTION_DECISIONS_RETENTION_DAYS", 7)
    if days <= 1:
        raise SettingsError(
            "setting PROMOTION_DECISIONS_RETENTION_DAYS must be more than 1 day: Event Grid redelivers an event "
            "for up to 24 hours, and a redelivery must still find its decision"
        )
    return timedelta(days=days)


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], *, default: str) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in allowed:
        raise SettingsError(f"setting {name} must be one of: {', '.join(allowed)}")
    return value
