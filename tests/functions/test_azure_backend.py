"""The whole app on the azureml backend: the registered functions, the real azure-ai-ml SDK and the real
DefaultAzureCredential, against the HTTP-level fake of Azure ML. SQLite keeps the promotions."""

import json
from datetime import datetime, timezone

import azure.functions as func
import pytest

from promotion.domain import Lineage, ModelRef
from tests.fakes.azureml_http import FakeAzureML
from tests.fakes.fixtures import AZUREML_ENV, managed_identity_env
from tests.functions.conftest import http, user_function
from tests.functions.test_api import CAROL, approve, request

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:marshmallow.*")


@pytest.fixture
def azure_app(tmp_path, monkeypatch, local_app):
    managed_identity_env(monkeypatch)
    for name, value in AZUREML_ENV.items():
        monkeypatch.setenv(name, value)
    local_app.reset()
    with FakeAzureML(local_app.settings()) as fake:
        yield fake


def registered(fake, name, version, **tags):
    fake.add_workspace_model(name, version, type="mlflow_model", tags=tags, description="taxi fares")
    topic = AZUREML_ENV["AZURE_SUBSCRIPTION_ID"]
    return func.EventGridEvent(
        id=f"event-{name}-{version}",
        data={"ModelName": name, "ModelVersion": int(version)},
        topic=f"/subscriptions/{topic}/resourceGroups/rg-ml-staging/providers/Microsoft.MachineLearningServices/workspaces/ws-staging",
        subject=f"models/{name}:{version}",
        event_type="Microsoft.MachineLearningServices.ModelRegistered",
        event_time=datetime.now(timezone.utc),
        data_version="",
    )


def test_a_qualifying_model_lands_in_the_registry_with_lineage(azure_app):
    user_function("on_model_registered")(registered(azure_app, "taxi-fare", "3", stage="candidate", accuracy="0.93"))
    copy = azure_app.registry_model("taxi-fare", "3")
    tags = copy["properties"]["tags"]
    assert tags["stage"] == "candidate" and tags["promotion.event_id"] == "event-taxi-fare-3"
    assert tags["promotion.source_model"] == "taxi-fare:3"
    assert copy["properties"]["description"] == "taxi fares"


def test_a_refused_model_is_not_copied_and_the_reason_is_in_the_status_view(azure_app):
    user_function("on_model_registered")(registered(azure_app, "taxi-fare", "4", stage="candidate", accuracy="0.5"))
    assert azure_app.registry_model("taxi-fare", "4") is None
    status, view = http("model_status", "GET", "m", route_params={"name": "taxi-fare", "version": "4"})
    assert status == 200 and view["registry"] is None and view["staging"]["tags"]["accuracy"] == "0.5"
    [decision] = view["decisions"]
    assert decision["outcome"] == "not_qualified" and "thresholds[0]" in decision["reasons"][0]


def test_throttling_raises_so_event_grid_redelivers_and_the_retry_copies(azure_app):
    event = registered(azure_app, "taxi-fare", "5", stage="candidate", accuracy="0.9")
    azure_app.fail_next("POST", "/import", 429)  # azure-core does not retry a POST answered 429
    with pytest.raises(Exception) as raised:
        user_function("on_model_registered")(event)
    assert getattr(raised.value, "status_code", None) == 429
    assert azure_app.registry_model("taxi-fare", "5") is None
    user_function("on_model_registered")(event)
    assert azure_app.registry_model("taxi-fare", "5")["properties"]["tags"]["promotion.event_id"] == event.id


def approved_promotion(fake):
    fake.add_registry_model(
        "taxi-fare", "6", tags=Lineage("ws", ModelRef("taxi-fare", "6"), "event-6", "sha256:6").as_tags()
    )
    _, created = request(model_version="6")
    status, _, jobs = approve(created["id"], who=CAROL)
    assert status == 202
    return created["id"], jobs.get()


def state_of(promotion_id):
    return http("get_promotion", "GET", "p", route_params={"id": promotion_id})[1]


def test_deployment_goes_step_by_step_without_waiting(azure_app):
    promotion_id, job = approved_promotion(azure_app)
    user_function("deploy_promotion")(func.QueueMessage(body=job.encode()))
    assert state_of(promotion_id)["state"] == "deploying"
    assert azure_app.endpoint("taxi-fare-prod")["properties"]["authMode"] == "Key"

    tick = user_function("advance_deployments")
    tick(None)  # endpoint still provisioning
    assert azure_app.deployment("taxi-fare-prod", "taxi-fare-v6") is None
    azure_app.finish("taxi-fare-prod")
    tick(None)  # endpoint ready: the deployment starts
    deployment = azure_app.deployment("taxi-fare-prod", "taxi-fare-v6")
    assert deployment["properties"]["model"] == "azureml://registries/shared-registry/models/taxi-fare/versions/6"
    assert deployment["tags"]["promotion.id"] == promotion_id
    assert deployment["tags"]["promotion.event_id"] == "event-6"
    azure_app.finish("taxi-fare-prod", "taxi-fare-v6")
    tick(None)  # deployment ready: traffic moves
    assert azure_app.endpoint("taxi-fare-prod")["properties"]["traffic"] == {"taxi-fare-v6": 100}
    azure_app.finish("taxi-fare-prod")
    tick(None)
    done = state_of(promotion_id)
    assert done["state"] == "deployed"
    assert [h["action"] for h in done["history"]] == ["requested", "approved", "deploying", "deployed"]
    # a redelivered job and more ticks change nothing
    user_function("deploy_promotion")(func.QueueMessage(body=job.encode()))
    tick(None)
    assert state_of(promotion_id) == done
    _, view = http("model_status", "GET", "m", route_params={"name": "taxi-fare", "version": "6"})
    assert [(d["endpoint"], d["deployment"], d["traffic"]) for d in view["production"]] == [
        ("taxi-fare-prod", "taxi-fare-v6", 100)
    ]


def test_a_failed_deployment_records_the_error(azure_app):
    promotion_id, job = approved_promotion(azure_app)
    azure_app.add_endpoint("taxi-fare-prod")
    user_function("deploy_promotion")(func.QueueMessage(body=job.encode()))
    azure_app.finish("taxi-fare-prod", "taxi-fare-v6", state="Failed", logs="ModuleNotFoundError: No module named 'x'")
    user_function("advance_deployments")(None)
    failed = state_of(promotion_id)
    assert failed["state"] == "failed"
    assert "Failed" in failed["error"] and "ModuleNotFoundError" in failed["error"]
    assert json.dumps(failed["history"][-1]["detail"]).count("ModuleNotFoundError") == 1


def test_policy_check_reads_staging_through_the_sdk_and_reports_azure_errors_plainly(azure_app, capsys):
    from promotion.__main__ import main

    azure_app.add_workspace_model("taxi-fare", "8", type="mlflow_model", tags={"stage": "candidate", "accuracy": "0.7"})
    assert main(["policy", "check", "--name", "taxi-fare", "--version", "8"]) == 0
    assert "thresholds[0]: tag 'accuracy' = 0.7, needs >= 0.8" in capsys.readouterr().out
    azure_app.fail_next("GET", "/models/taxi-fare/versions/9", 403, message="identity lacks models/read")
    assert main(["policy", "check", "--name", "taxi-fare", "--version", "9"]) == 1
    assert "error: Azure ML: HttpResponseError" in capsys.readouterr().err


def test_an_azure_outage_answers_503_and_changes_nothing(azure_app):
    azure_app.add_registry_model("taxi-fare", "10")
    # azure-core retries a 503 three times; Retry-After-Ms keeps its waits short here.
    azure_app.fail_next("GET", "/models/taxi-fare/versions/10", 503, times=4, headers={"Retry-After-Ms": "1"})
    status, answer = request(model_version="10")
    assert status == 503 and "Azure ML is unavailable right now (503)" in answer["error"]
    assert http("list_promotions", "GET", "promotions")[1] == {"promotions": []}
    assert request(model_version="10")[0] == 201
