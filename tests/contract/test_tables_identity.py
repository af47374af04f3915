"""Identity-based Table Storage: no key in any setting; a bearer token from the credential on every request.

Azurite accepts tokens only over HTTPS, so this checks the requests at the HTTP boundary instead."""

import re
import time

import pytest
import responses
from azure.core.credentials import AccessToken

from promotion import wiring
from promotion.adapters.tables import TablePromotionStore
from promotion.ports import PromotionNotFound
from promotion.settings import Settings, SettingsError
from tests.fakes.fixtures import AZUREML_ENV


class StaticToken:
    def get_token(self, *scopes, **kwargs):
        self.scopes = scopes
        return AccessToken("token-from-managed-identity", int(time.time()) + 3600)


def test_settings_take_the_host_identity_based_storage_settings():
    env = {**AZUREML_ENV, "PROMOTION_STATE_STORE": "tables", "AzureWebJobsStorage__accountName": "promotionsacct"}
    assert Settings.from_env(env).table_store().endpoint == "https://promotionsacct.table.core.windows.net"
    with pytest.raises(SettingsError, match="AzureWebJobsStorage__accountName is not a valid") as raised:
        Settings.from_env({**env, "AzureWebJobsStorage__accountName": "Bad_Name"}).table_store()
    assert "Bad_Name" not in str(raised.value)
    with pytest.raises(SettingsError, match="must be an https:// URL"):
        Settings.from_env({**env, "AzureWebJobsStorage__tableServiceUri": "http://plain"}).table_store()


def test_wiring_builds_an_identity_store(monkeypatch):
    for name, value in AZUREML_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PROMOTION_STATE_STORE", "tables")
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.setenv("AzureWebJobsStorage__accountName", "promotionsacct")
    wiring.reset()
    try:
        store = wiring.store()
        assert isinstance(store, TablePromotionStore)
        assert store.url.rstrip("/") == "https://promotionsacct.table.core.windows.net"
    finally:
        wiring.reset()


@responses.activate
def test_requests_carry_the_credential_token():
    host = "https://promotionsacct.table.core.windows.net"
    responses.post(f"{host}/Tables", status=201, json={"TableName": "promotions"})
    marker = {"PartitionKey": "promotions", "RowKey": "meta|open-work", "odata.etag": 'W/"1"', "version": 1}
    responses.get(re.compile(re.escape(f"{host}/promotions(PartitionKey=")), json=marker)  # the table is migrated
    responses.get(f"{host}/promotions()", json={"value": []})
    credential = StaticToken()
    store = TablePromotionStore(endpoint=host, credential=credential)
    with pytest.raises(PromotionNotFound):
        store.get("00000000-0000-4000-8000-000000000000")
    assert [call.request.method for call in responses.calls] == ["POST", "GET", "GET"]
    assert {call.request.headers["Authorization"] for call in responses.calls} == {"Bearer token-from-managed-identity"}
    assert credential.scopes == ("https://storage.azure.com/.default",)
