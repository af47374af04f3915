"""The Azure ML adapter through the real azure-ai-ml SDK and the real DefaultAzureCredential, against the
in-process HTTP fake of Azure ML (tests/fakes/azureml_http.py). Offline and fast."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError

from promotion.adapters.azureml import AzureMLBackend
from promotion.domain import DEPLOYMENT_MODEL_TAG as MODEL_TAG
from promotion.domain import Lineage, ModelRef
from promotion.ports import AlreadyExists, DeploymentFailed, DeploymentPlan, Progress

pytest_plugins = ["tests.fakes.fixtures"]
# azure-ai-ml builds its marshmallow schemas on first use, each with a deprecation warning that is not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:marshmallow.*")

CREDIT = ModelRef("credit-risk", "3")
SOURCE = {
    "type": "mlflow_model",
    "tags": {"stage": "candidate", "team": "risk"},
    "properties": {"auc": "0.91"},
    "description": "Gradient boosting on the 2024 book",
}


def lineage_of(ref: ModelRef) -> Lineage:
    return Lineage("/subscriptions/s/resourceGroups/rg/providers/x/workspaces/ws-staging", ref, "event-1", "digest-1")


def plan(*, traffic_percent: int = 100, deployment: str = "credit-risk-v3") -> DeploymentPlan:
    return DeploymentPlan(
        model=CREDIT,
        model_uri="azureml://registries/shared-registry/models/credit-risk/versions/3",
        endpoint="credit-risk",
        deployment=deployment,
        instance_type="Standard_F4s_v2",
        instance_count=2,
        traffic_percent=traffic_percent,
        tags={MODEL_TAG: str(CREDIT), "promotion.id": "p-1"},
    )


def test_importing_the_module_imports_no_azure_sdk():
    code = "import sys, promotion.adapters.azureml; print([m for m in sys.modules if m.startswith('azure')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- staging and registry reads


def test_staging_get_finds_the_model_version(fake_azureml, azureml_backend):
    fake_azureml.add_workspace_model(CREDIT.name, CREDIT.version, **SOURCE)

    model = azureml_backend.staging.get(CREDIT)

    assert model.ref == CREDIT
    assert (model.type, dict(model.tags), dict(model.properties), model.description) == (
        SOURCE["type"],
        SOURCE["tags"],
        SOURCE["properties"],
        SOURCE["description"],
    )
    assert model.path.startswith("azureml://subscriptions/")
    assert fake_azureml.token_requests == 1  # the real DefaultAzureCredential, through managed identity


def test_staging_get_answers_none_for_a_missing_version(fake_azureml, azureml_backend):
    fake_azureml.add_workspace_model(CREDIT.name, "2")

    assert azureml_backend.staging.get(CREDIT) is None


def test_registry_get_finds_the_model_version(fake_azureml, azureml_backend):
    fake_azureml.add_registry_model(CREDIT.name, CREDIT.version, **SOURCE)

    model = azureml_backend.registry.get(CREDIT)

    assert model.ref == CREDIT
    assert dict(model.tags) == SOURCE["tags"] and model.type == "mlflow_model"
    assert model.path == "azureml://registries/shared-registry/models/credit-risk/versions/3"


def test_registry_get_answers_none_for_a_missing_version(fake_azureml, azureml_backend):
    assert azureml_backend.registry.get(CREDIT) is None


# ---- copying into the registry


def warm_up(fake, backend) -> None:
    """One copy of another model, so clients and the staging workspace's GUID are cached, as in a warm process."""
    other = ModelRef("warm-up", "1")
    fake.add_workspace_model(other.name, other.version)
    backend.registry.copy_from_workspace(backend.staging.get(other), lineage_of(other))
    fake.reset_log()


def test_a_new_copy_carries_the_source_metadata_and_the_lineage(fake_azureml, azureml_backend):
    fake_azureml.add_workspace_model(CREDIT.name, CREDIT.version, **SOURCE)
    warm_up(fake_azureml, azureml_backend)

    # The service's flow for a new model: registry first, then staging, then the copy.
    assert azureml_backend.registry.get(CREDIT) is None
    model = azureml_backend.staging.get(CREDIT)
    copied = azureml_backend.registry.copy_from_workspace(model, lineage_of(CREDIT))

    expected_tags = {**SOURCE["tags"], **lineage_of(CREDIT).as_tags()}
    stored = fake_azureml.registry_model(CREDIT.name, CREDIT.version)["properties"]
    assert (stored["modelType"], stored["tags"], stored["properties"], stored["description"]) == (
        SOURCE["type"],
        expected_tags,
        SOURCE["properties"],
        SOURCE["description"],
    )
    assert copied.ref == CREDIT and dict(copied.tags) == expected_tags
    assert copied.description == SOURCE["description"] and dict(copied.properties) == SOURCE["properties"]
    # registry GET, staging GET, then the copy: import POST, its first poll, the PUT of the tags.
    copy_calls = [(r.method, r.path.split("/registries/shared-registry/")[-1]) for r in fake_azureml.requests[2:]]
    assert [method for method, _ in copy_calls] == ["POST", "GET", "PUT"]
    assert copy_calls[0][1] == "import" and copy_calls[1][1].startswith("importOperations/")
    assert copy_calls[2][1] == "models/credit-risk/versions/3"
    assert fake_azureml.count() == 5, fake_azureml.log()


def test_the_source_is_named_by_the_staging_workspace_guid_and_location(fake_azureml, azureml_backend):
    fake_azureml.add_workspace_model(CREDIT.name, CREDIT.version)

    azureml_backend.registry.copy_from_workspace(azureml_backend.staging.get(CREDIT), lineage_of(CREDIT))

    (imported,) = [r for r in fake_azureml.requests if r.path.endswith("/import")]
    assert imported.body == {
        "properties": {
            "referenceType": "Id",
            "destinationName": CREDIT.name,
            "destinationVersion": CREDIT.version,
            "sourceAssetId": f"azureml://locations/westeurope/workspaces/{fake_azureml.staging.guid}"
            f"/models/{CREDIT.name}/versions/{CREDIT.version}",
        }
    }


def test_an_import_without_a_final_body_costs_one_get_more(fake_azureml, azureml_backend):
    fake_azureml.add_workspace_model(CREDIT.name, CREDIT.version, **SOURCE)
    warm_up(fake_azureml, azureml_backend)
    fake_azureml.import_returns_body = False
    fake_azureml.import_polls = 2
    model = azureml_backend.staging.get(CREDIT)
    fake_azureml.reset_log()

    copied = azureml_backend.registry.copy_from_workspace(model, lineage_of(CREDIT))

    assert copied.tags["promotion.event_id"] == "event-1"
    assert fake_azureml.count() == 5, fake_azureml.log()  # POST, 2 polls, GET, PUT


def test_tags_the_import_copied_are_kept_and_the_sources_win(fake_azureml, azureml_backend):
    fake_azureml.import_copies_tags = True
    fake_azureml.add_workspace_model(CREDIT.name, CREDIT.version, **SOURCE)

    copied = azureml_backend.registry.copy_from_workspace(azureml_backend.staging.get(CREDIT), lineage_of(CREDIT))

    assert dict(copied.tags) == {**SOURCE["tags"], **lineage_of(CREDIT).as_tags()}


def test_a_duplicate_costs_one_request_and_copying_it_raises_already_exists(fake_azureml, azureml_backend):
    fake_azureml.add_workspace_model(CREDIT.name, CREDIT.version, **SOURCE)
    warm_up(fake_azureml, azureml_backend)
    existing = fake_azureml.add_registry_model(CREDIT.name, CREDIT.version, tags={"owner": "someone else"})

    assert azureml_backend.registry.get(CREDIT) is not None
    assert fake_azureml.count() == 1

    with pytest.raises(AlreadyExists):
        azureml_backend.registry.copy_from_workspace(azureml_backend.staging.get(CREDIT), lineage_of(CREDIT))
    assert existing["properties"]["tags"] == {"owner": "someone else"}  # left untouched


def test_losing_the_race_to_another_instance_raises_already_exists(fake_azureml, azureml_backend):
    fake_azureml.add_workspace_model(CREDIT.name, CREDIT.version, **SOURCE)
    assert azureml_backend.registry.get(CREDIT) is None
    model = azureml_backend.staging.get(CREDIT)
    other_instance = lineage_of(CREDIT).as_tags() | {"promotion.event_id": "event-2"}
    fake_azureml.before_next(
        "POST", "/import", lambda: fake_azureml.add_registry_model(CREDIT.name, CREDIT.version, tags=other_instance)
    )

    with pytest.raises(AlreadyExists):
        azureml_backend.registry.copy_from_workspace(model, lineage_of(CREDIT))

    assert list(fake_azureml.registry_models) == [(CREDIT.name, CREDIT.version)]
    assert fake_azureml.registry_model(CREDIT.name, CREDIT.version)["properties"]["tags"] == other_instance
    assert fake_azureml.count("PUT") == 0


def test_a_conflict_reported_by_the_import_operation_raises_already_exists(fake_azureml, azureml_backend):
    fake_azureml.add_workspace_model(CREDIT.name, CREDIT.version)
    model = azureml_backend.staging.get(CREDIT)
    fake_azureml.fail_next("GET", "/importOperations/", 409)

    with pytest.raises(AlreadyExists):
        azureml_backend.registry.copy_from_workspace(model, lineage_of(CREDIT))
    assert fake_azureml.count("PUT") == 0


# ---- transient faults propagate, and nothing is half-written


@pytest.mark.parametrize("status", [429, 503])
def test_a_throttled_or_failing_import_propagates_and_writes_nothing(fake_azureml, azureml_backend, status):
    fake_azureml.add_workspace_model(CREDIT.name, CREDIT.version, **SOURCE)
    warm_up(fake_azureml, azureml_backend)
    model = azureml_backend.staging.get(CREDIT)
    fake_azureml.fail_next("POST", "/import", status)

    with pytest.raises(HttpResponseError) as raised:
        azureml_backend.registry.copy_from_workspace(model, lineage_of(CREDIT))

    assert raised.value.status_code == status
    assert fake_azureml.registry_model(CREDIT.name, CREDIT.version) is None
    assert fake_azureml.count("POST", "/import") == 1  # retry_total=0: Event Grid redelivers instead
    assert fake_azureml.count("PUT") == 0


@pytest.mark.parametrize("port", ["staging", "registry"])
@pytest.mark.parametrize("status", [429, 500, 503])
def test_a_throttled_or_failing_read_propagates(fake_azureml, azureml_backend, port, status):
    fake_azureml.add_workspace_model(CREDIT.name, CREDIT.version)
    fake_azureml.add_registry_model(CREDIT.name, CREDIT.version)
    fake_azureml.fail_next("GET", f"/models/{CREDIT.name}/versions/{CREDIT.version}", status)

    with pytest.raises(HttpResponseError) as raised:
        getattr(azureml_backend, port).get(CREDIT)

    assert raised.value.status_code == status
    assert fake_azureml.count("GET", "/versions/") == 1


def test_a_connection_failure_propagates(fake_azureml, azureml_backend):
    fake_azureml.drop_next("GET", "/models/")

    with pytest.raises(ServiceRequestError):
        azureml_backend.staging.get(CREDIT)


def test_a_failed_tagging_propagates_and_add_lineage_finishes_the_copy(fake_azureml, azureml_backend):
    fake_azureml.add_workspace_model(CREDIT.name, CREDIT.version, **SOURCE)
    model = azureml_backend.staging.get(CREDIT)
    fake_azureml.fail_next("PUT", "/versions/", 503)

    with pytest.raises(HttpResponseError) as raised:
        azureml_backend.registry.copy_from_workspace(model, lineage_of(CREDIT))
    assert raised.value.status_code == 503
    # The import cannot carry tags, so this window exists: the copy is there, without its lineage.
    assert fake_azureml.registry_model(CREDIT.name, CREDIT.version)["properties"]["tags"] == {}

    finished = azureml_backend.registry.add_lineage(model, lineage_of(CREDIT))

    assert dict(finished.tags) == {**SOURCE["tags"], **lineage_of(CREDIT).as_tags()}


def test_the_sdk_default_retries_ride_out_one_503(fake_azureml, azureml_settings):
    backend = AzureMLBackend(azureml_settings)  # retry_total=None: azure-core's policy, first retry at once
    fake_azureml.add_workspace_model(CREDIT.name, CREDIT.version)
    backend.staging.get(CREDIT)
    fake_azureml.reset_log()
    fake_azureml.fail_next("GET", "/models/", 503)

    started = time.monotonic()
    assert backend.staging.get(CREDIT) is not None
    assert time.monotonic() - started < 1
    assert fake_azureml.count() == 2


# ---- clients and the staging workspace are read once per process


def test_clients_and_the_staging_workspace_are_built_once(fake_azureml, azureml_backend):
    for version in ("1", "2"):
        fake_azureml.add_workspace_model("credit-risk", version)
    for version in ("1", "2"):
        ref = ModelRef("credit-risk", version)
        assert azureml_backend.registry.get(ref) is None
        azureml_backend.registry.copy_from_workspace(azureml_backend.staging.get(ref), lineage_of(ref))

    assert fake_azureml.count("GET", "/workspaces/ws-staging?") == 1
    assert fake_azureml.count("GET", "/discovery") == 1
    assert fake_azureml.token_requests == 1
    assert azureml_backend.registry_client is azureml_backend.registry_client


def test_a_failed_registry_discovery_propagates_and_is_tried_again_next_time(fake_azureml, azureml_backend):
    fake_azureml.fail_next("GET", "/discovery", 503)

    with pytest.raises(HttpResponseError) as raised:
        azureml_backend.registry.get(CREDIT)
    assert raised.value.status_code == 503

    assert azureml_backend.registry.get(CREDIT) is None
    assert fake_azureml.count("GET", "/discovery") == 2


def test_a_credential_passed_in_is_used_instead_of_the_default(fake_azureml, azureml_settings):
    class StaticCredential:
        calls = 0

        def get_token(self, *scopes, **kwargs):
            from azure.core.credentials import AccessToken

            StaticCredential.calls += 1
            return AccessToken("static", int(time.time()) + 3600)

    backend = AzureMLBackend(azureml_settings, credential=StaticCredential(), retry_total=0)

    assert backend.staging.get(CREDIT) is None
    assert StaticCredential.calls >= 1 and fake_azureml.token_requests == 0


# ---- production


@pytest.fixture
def production(fake_azureml, azureml_backend):
    fake_azureml.add_registry_model(CREDIT.name, CREDIT.version)
    return azureml_backend.production


def test_a_missing_endpoint_is_created_and_ready_once_provisioned(fake_azureml, production):
    assert production.ensure_endpoint(plan()) is Progress.PENDING
    endpoint = fake_azureml.endpoint("credit-risk")
    assert endpoint["properties"]["authMode"] == "Key"

    assert production.ensure_endpoint(plan()) is Progress.PENDING  # still creating: no second PUT
    assert fake_azureml.count("PUT", "/onlineEndpoints/credit-risk?") == 1

    fake_azureml.finish("credit-risk")
    assert production.ensure_endpoint(plan()) is Progress.READY


def test_an_endpoint_that_provisions_on_a_later_poll(fake_azureml, production):
    fake_azureml.provisioning_gets = 2

    assert production.ensure_endpoint(plan()) is Progress.PENDING
    assert production.ensure_endpoint(plan()) is Progress.PENDING
    assert production.ensure_endpoint(plan()) is Progress.READY


def test_a_failed_endpoint_raises(fake_azureml, production):
    fake_azureml.add_endpoint("credit-risk", state="Failed")

    with pytest.raises(DeploymentFailed, match="credit-risk.*Failed"):
        production.ensure_endpoint(plan())


def test_a_missing_deployment_is_created_once_with_the_registry_model(fake_azureml, production):
    fake_azureml.add_endpoint("credit-risk")

    assert production.ensure_deployment(plan()) is Progress.PENDING
    assert production.ensure_deployment(plan()) is Progress.PENDING

    (put,) = [r for r in fake_azureml.requests if r.method == "PUT"]
    assert put.path.endswith("/onlineEndpoints/credit-risk/deployments/credit-risk-v3")
    assert put.body["properties"]["model"] == plan().model_uri
    assert put.body["properties"]["instanceType"] == "Standard_F4s_v2"
    assert put.body["sku"]["capacity"] == 2
    assert put.body["tags"] == dict(plan().tags)

    fake_azureml.finish("credit-risk", "credit-risk-v3")
    assert production.ensure_deployment(plan()) is Progress.READY
    assert fake_azureml.count("PUT") == 1


def test_a_failed_deployment_raises_with_the_service_s_log(fake_azureml, production):
    fake_azureml.add_endpoint("credit-risk")
    production.ensure_deployment(plan())
    fake_azureml.finish(
        "credit-risk", "credit-risk-v3", state="Failed", logs="Liveness probe failed: no module 'sklearn'"
    )

    with pytest.raises(DeploymentFailed) as raised:
        production.ensure_deployment(plan())

    assert "credit-risk-v3" in str(raised.value) and "Failed" in str(raised.value)
    assert "Liveness probe failed: no module 'sklearn'" in str(raised.value)


def test_a_deployment_of_that_name_serving_another_model_raises(fake_azureml, production):
    fake_azureml.add_endpoint("credit-risk")
    fake_azureml.add_deployment(
        "credit-risk", "credit-risk-v3", model="azureml://registries/shared-registry/models/other/versions/1"
    )

    with pytest.raises(DeploymentFailed, match="serves"):
        production.ensure_deployment(plan())


def test_a_lone_deployment_gets_all_the_traffic(fake_azureml, production):
    fake_azureml.add_endpoint("credit-risk")
    fake_azureml.add_deployment("credit-risk", "credit-risk-v3", model=plan().model_uri)

    assert production.ensure_traffic(plan(traffic_percent=20)) is Progress.PENDING
    assert fake_azureml.endpoint("credit-risk")["properties"]["traffic"] == {"credit-risk-v3": 100}
    assert production.ensure_traffic(plan(traffic_percent=20)) is Progress.PENDING  # still updating

    fake_azureml.finish("credit-risk")
    assert production.ensure_traffic(plan(traffic_percent=20)) is Progress.READY
    assert fake_azureml.count("PUT") == 1


def test_the_new_deployment_shares_the_traffic_with_the_previous_live_one(fake_azureml, production):
    fake_azureml.add_endpoint("credit-risk", traffic={"credit-risk-v2": 90, "credit-risk-v1": 10})
    for version in ("1", "2"):
        fake_azureml.add_deployment(
            "credit-risk",
            f"credit-risk-v{version}",
            model=f"azureml://registries/shared-registry/models/credit-risk/versions/{version}",
        )
    fake_azureml.add_deployment("credit-risk", "credit-risk-v3", model=plan().model_uri)

    assert production.ensure_traffic(plan(traffic_percent=20)) is Progress.PENDING
    assert fake_azureml.endpoint("credit-risk")["properties"]["traffic"] == {"credit-risk-v3": 20, "credit-risk-v2": 80}

    fake_azureml.finish("credit-risk")
    assert production.ensure_traffic(plan(traffic_percent=20)) is Progress.READY


def test_deployments_of_finds_the_deployments_serving_a_model_version(fake_azureml, production):
    fake_azureml.add_endpoint("credit-risk", traffic={"credit-risk-v3": 20, "credit-risk-v2": 80})
    fake_azureml.add_endpoint("shadow")
    fake_azureml.add_deployment("credit-risk", "credit-risk-v3", model=plan().model_uri, tags={MODEL_TAG: str(CREDIT)})
    fake_azureml.add_deployment(
        "credit-risk", "credit-risk-v2", model="azureml://registries/shared-registry/models/credit-risk/versions/2"
    )
    fake_azureml.add_deployment("shadow", "by-hand", model=plan().model_uri, state="Creating")

    found = production.deployments_of(CREDIT)

    assert sorted(found, key=lambda d: d["endpoint"]) == [
        {
            "endpoint": "credit-risk",
            "deployment": "credit-risk-v3",
            "traffic": 20,
            "state": "Succeeded",
            "model": plan().model_uri,
        },
        {"endpoint": "shadow", "deployment": "by-hand", "traffic": 0, "state": "Creating", "model": plan().model_uri},
    ]
