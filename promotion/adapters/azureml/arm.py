"""Azure Resource Manager requests through azure-mgmt-core: the pipeline the staging and registry ports use, with
bounded retries, explicit timeouts and no resource-provider registration, and the small helpers that read ARM's
answers. Every Azure import happens inside a function, so importing this module costs nothing at cold start."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from promotion.redaction import kept
from promotion.settings import SettingsError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

ARM = "https://management.azure.com"
API_VERSION = "2024-04-01"
# Every HTTP call: a connection must open within this, and an answer arrive within that.
CONNECTION_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = 30
# A throttled or busy service that asks to be called back later than this is answered with an error instead of
# a sleep: Event Grid redelivers, and timers run again within a minute.
MAX_RETRY_AFTER_SECONDS = 5
RETRIES = 2


def bounded_retry_policy(retry_total: int) -> Any:
    """azure-core's RetryPolicy, except that it does not retry when the service asks to wait longer than
    MAX_RETRY_AFTER_SECONDS (azure-core would sleep that long, without a limit)."""
    from azure.core.pipeline.policies import RetryPolicy

    class BoundedRetryPolicy(RetryPolicy):
        def is_retry(self, settings: Any, response: Any) -> bool:
            wait = self.get_retry_after(response)
            return (wait is None or wait <= MAX_RETRY_AFTER_SECONDS) and super().is_retry(settings, response)

    return BoundedRetryPolicy(retry_total=retry_total, retry_backoff_factor=0.5, retry_backoff_max=4)


class Arm:
    """Azure Resource Manager requests through azure-mgmt-core, with the policies chosen one by one: no
    automatic resource-provider registration (it sleeps 10 s between checks), bounded retries, and timeouts."""

    def __init__(self, credential: TokenCredential, *, retry_total: int) -> None:
        from azure.core.configuration import Configuration
        from azure.core.pipeline import policies
        from azure.mgmt.core import ARMPipelineClient
        from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy, ARMHttpLoggingPolicy

        config: Any = Configuration()
        config.user_agent_policy = policies.UserAgentPolicy(sdk_moniker="azureml-model-promotion")
        config.headers_policy = policies.HeadersPolicy()
        config.proxy_policy = policies.ProxyPolicy()
        config.redirect_policy = policies.RedirectPolicy()
        config.retry_policy = bounded_retry_policy(retry_total)
        config.custom_hook_policy = policies.CustomHookPolicy()
        config.logging_policy = policies.NetworkTraceLoggingPolicy()
        config.http_logging_policy = ARMHttpLoggingPolicy()
        config.authentication_policy = ARMChallengeAuthenticationPolicy(credential, f"{ARM}/.default")
        self._client = ARMPipelineClient(
            base_url=ARM,
            config=config,
            per_call_policies=[],
            connection_timeout=CONNECTION_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
        )

    def send(self, method: str, url: str, body: Any = None, **params: str) -> Any:
        """One request; the raw response, whatever its status."""
        from azure.core.rest import HttpRequest

        if not is_arm_url(url):
            url = f"{ARM}{url}"
        query = {"api-version": API_VERSION, **params} if "api-version=" not in url else params
        return self._client.send_request(HttpRequest(method, url, params=query, json=body))

    def get(self, path: str, **params: str) -> dict[str, Any] | None:
        """The resource, or None when ARM answers 404."""
        response = self.send("GET", path, **params)
        if response.status_code == 404:
            return None
        raise_for(response)
        return response.json()

    def list(self, path: str, **params: str) -> Iterator[dict[str, Any]]:
        """Every item of a paged listing, following nextLink (one request per page); nothing for a 404."""
        response = self.send("GET", path, **params)
        while True:
            if response.status_code == 404:
                return
            raise_for(response)
            page = response.json()
            yield from page.get("value", [])
            next_link = page.get("nextLink")
            if not next_link:
                return
            if not is_arm_url(next_link):  # never send our token anywhere else
                raise ValueError(f"refusing to follow a nextLink outside {ARM}")
            response = self.send("GET", next_link)

    def registry_resource_group(self, subscription_id: str, registry: str) -> str:
        """The fallback when REGISTRY_RESOURCE_GROUP is not set: the registry's group, from the subscription's
        listing of registries, which needs a role wider than the registry itself."""
        from azure.core.exceptions import HttpResponseError

        path = f"/subscriptions/{subscription_id}/providers/Microsoft.MachineLearningServices/registries"
        try:
            for item in self.list(path):
                if item.get("name", "").lower() == registry.lower():
                    match = re.search(r"/resourceGroups/([^/]+)/", item.get("id", ""), re.IGNORECASE)
                    if match:
                        return match[1]
        except HttpResponseError as error:
            if error.status_code not in (401, 403):
                raise
            raise SettingsError(
                f"the app's identity may not list registries ({error.status_code}): {REGISTRY_HINT}"
            ) from None
        raise SettingsError(
            f"setting REGISTRY_NAME names no registry the app's identity can list in the subscription: {REGISTRY_HINT}"
        )


# What to do when the registry's resource group is not set and cannot be looked up.
REGISTRY_HINT = (
    "set REGISTRY_RESOURCE_GROUP and REGISTRY_SUBSCRIPTION_ID (where the registry lives), or give the identity "
    "Microsoft.MachineLearningServices/registries/read at the scope of REGISTRY_SUBSCRIPTION_ID's subscription "
    "(the lookup lists the registries of the whole subscription)"
)


def workspace_path(subscription_id: str, resource_group: str, workspace: str) -> str:
    return (
        f"/subscriptions/{subscription_id}/resourceGroups/{quote(resource_group, safe='')}"
        f"/providers/Microsoft.MachineLearningServices/workspaces/{workspace}"
    )


def is_arm_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" and parts.netloc.lower() == urlsplit(ARM).netloc


def permanent_status(status: int) -> bool:
    return 400 <= status < 500 and status not in (404, 408, 409, 429)


def raise_for(response: Any) -> None:
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.core.exceptions import ARMErrorFormat

    if not 200 <= response.status_code < 300:
        raise HttpResponseError(response=response, error_format=ARMErrorFormat)


def error_message(response: Any) -> str:
    try:
        error = response.json().get("error") or {}
    except ValueError:
        error = {}
    message = error.get("message") or response.reason or "no message"
    return kept(f"{error.get('code', '')}: {message}".lstrip(": "))
