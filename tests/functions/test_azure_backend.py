"""The whole app on the azureml backend: the registered functions, the real Azure SDKs (azure-mgmt-core for ARM,
azure-ai-ml for production) and the real DefaultAzureCredential, against the HTTP-level fake of Azure ML. SQLite
keeps the promotions. The fake behaves as the service's worst case does: a copy takes many polls and its answers
carry no Retry-After, so anything that waited on it would sleep azure-core's 30 s default per poll."""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timezone

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from promotion import wiring
from promotion.cli import main
from promotion.domain import CopyState, ModelRef
from tests.fakes.azureml_http import FakeAzureML
from tests.fakes.fixtures import AZUREML_ENV, managed_identity_env
from tests.functions.conftest import http, user_function

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:marshmallow.*")

STAGING = (
    f"/subscriptions/{AZUREML_ENV['AZURE_SUBSCRIPTION_ID']}/resourceGroups/rg-ml-staging"
    "/providers/Microsoft.MachineLearningServices/workspaces/ws-staging"
)
ALICE = ("alice@contoso.com", "11111111-1111-1111-1111-111111111111")
CAROL = ("carol@contoso.com", "33333333-3333-3333-3333-333333333333")


@pytest.fixture
def azure_app(tmp_path, monkeypatch, local_app):
    managed_identity_env(monkeypatch)
    for name, value in AZUREML_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PROMOTION_TRUST_IDENTITY_HEADERS", "true")
    local_app.reset()
    with FakeAzureML(local_app.settings()) as fake:
        fake.publish_polls = 50  # minutes of copying, polled once a minute
        yield fake


def who(person: tuple[str, str]) -> dict[str, str]:
    claims = [{"typ": "roles", "val": "Promotion.Approver"}] if person is ALICE else []
    principal = base64.b64encode(json.dumps({"auth_typ": "aad", "claims": claims}).encode()).decode()
    return {
        "X-MS-CLIENT-PRINCIPAL-NAME": person[0],
        "X-MS-CLIENT-PRINCIPAL-ID": person[1],
        "X-MS-CLIENT-PRINCIPAL": principal,
    }


def registered(fake, name, version, **tags) -> func.EventGridEvent:
    fake.add_workspace_model(name, version, type="mlflow_model", tags=tags, description="taxi fares")
    return func.EventGridEvent(
        id=f"event-{name}-{version}",
        data={"ModelName": name, "ModelVersion": int(version), "ModelTags": tags, "ModelProperties": {}},
        topic=STAGING,
        subject=f"models/{name}:{version}",
        event_type="Microsoft.MachineLearningServices.ModelRegistered",
        event_time=datetime.now(timezone.utc),
        data_version="",
    )


def warm(fake) -> None:
    """One event of another model first, so the process is warm (credential, registry lookup), as in Azure."""
    user_function("on_model_registered")(registered(fake, "warm-up", "1", stage="dev"))
    fake.reset_log()


def tick(name: str) -> None:
    assert user_function(name)(TimerRequest(past_due=False)) is None


def copy_state(ref: ModelRef) -> CopyState | None:
    copy = wiring.store().copy(ref)
    return copy.state if copy else None


# ---- staging -> registry


def test_a_slow_copy_is_started_in_three_requests_and_the_handler_never_polls(azure_app):
    warm(azure_app)
    event = registered(azure_app, "taxi-fare", "3", stage="candidate", accuracy="0.93")
    azure_app.reset_log()

    started = time.monotonic()
    user_function("on_model_registered")(event)
    elapsed = time.monotonic() - started

    assert elapsed < 2, "the handler must answer Event Grid within seconds"
    assert [r.method for r in azure_app.requests] == ["GET", "GET", "POST"], azure_app.log()
    assert azure_app.count("GET", "mfeOperation") == 0
    assert copy_state(ModelRef("taxi-fare", "3")) is CopyState.COPYING
    assert azure_app.registry_model("taxi-fare", "3") is None


def copied_events(ref: ModelRef) -> list:
    return [
        e
        for e in wiring.store().events()
        if e.type.value == "ModelPromotion.CopiedToRegistry"
        and e.subject.endswith(f"/{ref.name}/versions/{ref.version}")
    ]


def test_the_timer_finishes_the_copy_with_lineage_in_at_most_three_requests(azure_app):
    """The worst case: the copy takes 2 polls, and the registry applies the lineage tags as a long-running
    operation that takes 3 more (201 with Azure-AsyncOperation). The copy is `copied`, and CopiedToRegistry
    recorded, only once the registry shows the tags; no run waits."""
    warm(azure_app)
    azure_app.publish_polls = 2
    assert azure_app.registry_update_polls == 3
    user_function("on_model_registered")(registered(azure_app, "taxi-fare", "3", stage="candidate", accuracy="0.93"))
    ref = ModelRef("taxi-fare", "3")

    per_run, states = [], []
    for _ in range(7):
        azure_app.reset_log()
        started = time.monotonic()
        tick("advance_registry_copies")
        assert time.monotonic() - started < 2
        per_run.append(azure_app.count())
        states.append((copy_state(ref), len(copied_events(ref))))
        if 3 <= len(states) <= 6:  # the tags accepted, not applied: `promotion copies list` shows the step
            assert wiring.store().copy(ref).step == "tagging"

    assert per_run == [1, 1, 3, 1, 1, 1, 2], (
        "poll, poll, then poll + registry read + tag write (accepted); the tag operation's polls, then its last "
        "poll + the read of the version"
    )
    assert states == [(CopyState.COPYING, 0)] * 6 + [(CopyState.COPIED, 1)]
    assert copy_state(ref) is CopyState.COPIED
    tags = azure_app.registry_model("taxi-fare", "3")["properties"]["tags"]
    assert tags["stage"] == "candidate" and tags["promotion.event_id"] == "event-taxi-fare-3"
    assert tags["promotion.source_model"] == "taxi-fare:3" and tags["promotion.source_workspace"] == STAGING
    assert azure_app.registry_model("taxi-fare", "3")["properties"]["description"] == "taxi fares"

    azure_app.reset_log()
    tick("advance_registry_copies")  # nothing left under way
    assert azure_app.count() == 0

    status, view = http("model_status", "GET", "m", who=who(ALICE), route_params={"name": "taxi-fare", "version": "3"})
    assert status == 200 and view["copy"]["state"] == "copied"
    assert [d["outcome"] for d in view["decisions"]] == ["copied", "copy_started"]  # newest first


def test_a_failed_copy_is_recorded_with_the_service_message(azure_app):
    azure_app.publish_polls = 0
    azure_app.publish_outcome = "Failed"
    azure_app.publish_error = "the source artifacts could not be read"
    user_function("on_model_registered")(registered(azure_app, "taxi-fare", "3", stage="candidate", accuracy="0.93"))

    tick("advance_registry_copies")

    copy = wiring.store().copy(ModelRef("taxi-fare", "3"))
    assert copy.state is CopyState.COPY_FAILED and "the source artifacts could not be read" in copy.error
    [finished] = [d for d in wiring.store().decisions(copy.model) if d.event_id.startswith("copy:")]
    assert finished.outcome.value == "copy_failed"


def test_a_copy_past_its_timeout_is_recorded_as_failed(azure_app, monkeypatch, app_clock):
    monkeypatch.setenv("PROMOTION_COPY_TIMEOUT_MINUTES", str(1 / 60 / 10))  # 0.1 s
    wiring.reset()
    user_function("on_model_registered")(registered(azure_app, "taxi-fare", "3", stage="candidate", accuracy="0.93"))
    app_clock.advance(seconds=0.2)

    tick("advance_registry_copies")

    copy = wiring.store().copy(ModelRef("taxi-fare", "3"))
    assert copy.state is CopyState.COPY_FAILED
    assert "did not finish within" in copy.error and "PROMOTION_COPY_TIMEOUT_MINUTES" in copy.error


def test_a_duplicate_costs_one_request_and_a_refused_model_two(azure_app):
    warm(azure_app)
    azure_app.publish_polls = 0
    event = registered(azure_app, "taxi-fare", "3", stage="candidate", accuracy="0.93")
    user_function("on_model_registered")(event)
    tick("advance_registry_copies")
    refused = registered(azure_app, "taxi-fare", "4", stage="dev", accuracy="0.4")

    azure_app.reset_log()
    user_function("on_model_registered")(event)
    duplicate = azure_app.count()
    azure_app.reset_log()
    user_function("on_model_registered")(refused)
    not_qualified = azure_app.count()

    assert (duplicate, not_qualified) == (1, 2), azure_app.log()


def test_a_redelivery_while_the_copy_runs_starts_nothing_new(azure_app):
    event = registered(azure_app, "taxi-fare", "3", stage="candidate", accuracy="0.93")
    user_function("on_model_registered")(event)
    azure_app.reset_log()

    user_function("on_model_registered")(event)

    assert azure_app.count("POST") == 0 and azure_app.count() == 1
    [decision] = wiring.store().decisions(ModelRef("taxi-fare", "3"))
    assert decision.outcome.value == "copy_started"  # the redelivery did not overwrite it


def test_a_cloud_event_is_handled_like_an_event_grid_event(azure_app):
    azure_app.add_workspace_model("taxi-fare", "7", tags={"stage": "candidate", "accuracy": "0.9"})
    event = func.CloudEvent(
        id="cloud-event-7",
        source=STAGING,
        type="Microsoft.MachineLearningServices.ModelRegistered",
        specversion="1.0",
        subject="models/taxi-fare:7",
        data={"ModelName": "taxi-fare", "ModelVersion": "7", "ModelTags": {}, "ModelProperties": {}},
        time=datetime.now(timezone.utc),
    )

    assert user_function("on_model_registered")(event) is None

    copy = wiring.store().copy(ModelRef("taxi-fare", "7"))
    assert copy.state is CopyState.COPYING and copy.cause == "cloud-event-7"


def test_throttling_raises_so_event_grid_redelivers_and_the_retry_starts_the_copy(azure_app):
    event = registered(azure_app, "taxi-fare", "5", stage="candidate", accuracy="0.9")
    azure_app.fail_next("POST", "/publish", 429)  # azure-core does not retry a POST answered 429
    with pytest.raises(Exception) as raised:
        user_function("on_model_registered")(event)
    assert getattr(raised.value, "status_code", None) == 429
    assert copy_state(ModelRef("taxi-fare", "5")) is None  # the claim was released

    user_function("on_model_registered")(event)
    assert copy_state(ModelRef("taxi-fare", "5")) is CopyState.COPYING


# ---- reconcile


def test_reconcile_dry_run_then_real_run_then_a_second_run(azure_app, capsys):
    for version, tags in [("1", {"stage": "candidate", "accuracy": "0.9"}), ("2", {"stage": "dev"})]:
        azure_app.add_workspace_model("taxi-fare", version, tags=tags)
    azure_app.add_workspace_model("churn", "1", tags={"stage": "candidate", "accuracy": "0.95"})
    azure_app.add_registry_model(
        "churn", "1", tags={"promotion.source_workspace": STAGING, "promotion.source_model": "churn:1"}
    )

    assert main(["reconcile", "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["copied"] == ["taxi-fare:1"] and list(dry["not_qualified"]) == ["taxi-fare:2"]
    assert dry["already_in_registry"] == ["churn:1"] and azure_app.count("POST") == 0

    assert main(["reconcile", "--json"]) == 0
    real = json.loads(capsys.readouterr().out)
    assert real["copied"] == ["taxi-fare:1"] and azure_app.count("POST", "/publish") == 1
    [decision] = wiring.store().decisions(ModelRef("taxi-fare", "1"))
    assert decision.event_id == f"reconcile:{real['run_id']}:taxi-fare:1"

    assert main(["reconcile", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["copied"] == [] and again["copying"] == ["taxi-fare:1"]
    assert azure_app.count("POST", "/publish") == 1


def test_reconcile_stays_within_its_request_budget(azure_app):
    """N versions in M names: one name listing per page, one version listing per name in staging and in the
    registry, at most two requests per copy started, and nothing per version the registry holds."""
    from promotion import service

    names, per_name = 4, 5
    for n in range(names):
        for v in range(1, per_name + 1):
            azure_app.add_workspace_model(f"model-{n}", v, tags={"stage": "candidate", "accuracy": "0.9"})
            if v < per_name:  # all but the newest version are in the registry already
                azure_app.add_registry_model(
                    f"model-{n}",
                    v,
                    tags={"promotion.source_workspace": STAGING, "promotion.source_model": f"model-{n}:{v}"},
                )
    azure_app.page_size = 3
    backend = wiring.backend()
    backend.registry.get(ModelRef("warm-up", "1"))  # the registry's resource group, once per process
    azure_app.reset_log()

    report = service.reconcile(
        staging_workspace_id=STAGING,
        staging=backend.staging,
        registry=backend.registry,
        policy=wiring.policy,
        store=wiring.store(),
        dry_run=False,
        clock=wiring.clock(),
    )

    copies = len(report.copied)
    assert copies == names and len(report.already_in_registry) == names * (per_name - 1)
    name_pages = -(-names // azure_app.page_size)
    version_pages = -(-per_name // azure_app.page_size)
    budget = name_pages + names * version_pages + names * version_pages + 2 * copies
    assert azure_app.count() <= budget, azure_app.log()
    assert azure_app.count("GET", "/versions/") == 0  # no per-version read


def test_tags_added_later_are_caught_by_reconcile(azure_app):
    event = registered(azure_app, "taxi-fare", "3", stage="dev", accuracy="0.93")
    user_function("on_model_registered")(event)
    assert copy_state(ModelRef("taxi-fare", "3")) is None  # not qualified

    azure_app.set_workspace_model_tags("taxi-fare", "3", {"stage": "candidate"})  # no event, as in Azure
    tick("reconcile_registry")

    assert copy_state(ModelRef("taxi-fare", "3")) is CopyState.COPYING


# ---- production


def approved_promotion(fake) -> tuple[str, str]:
    fake.add_registry_model(
        "taxi-fare",
        "6",
        tags={"promotion.source_model": "taxi-fare:6", "promotion.event_id": "event-6"},
    )
    body = {"model_name": "taxi-fare", "model_version": "6", "reason": "better MAE"}
    status, created = http("request_promotion", "POST", "promotions", who=who(ALICE), body=body)
    assert status == 201, created
    jobs = JobsOut()
    status, approved = http(
        "approve_promotion", "POST", "a", who=who(CAROL), body={}, route_params={"id": created["id"]}, jobs=jobs
    )
    assert status == 202, approved
    return created["id"], jobs.value


class JobsOut:
    value = ""

    def set(self, value: str) -> None:
        self.value = value

    def get(self) -> str:
        return self.value


def state_of(promotion_id: str) -> dict:
    return http("get_promotion", "GET", "p", who=who(ALICE), route_params={"id": promotion_id})[1]


def test_deployment_goes_step_by_step_without_waiting(azure_app):
    promotion_id, job = approved_promotion(azure_app)
    user_function("deploy_promotion")(func.QueueMessage(body=job.encode()))
    assert state_of(promotion_id)["state"] == "deploying"
    assert azure_app.endpoint("taxi-fare-prod")["properties"]["authMode"] == "Key"

    tick("advance_deployments")  # endpoint still provisioning
    assert azure_app.deployment("taxi-fare-prod", "taxi-fare-v6") is None
    azure_app.finish("taxi-fare-prod")
    tick("advance_deployments")  # endpoint ready: the deployment starts
    deployment = azure_app.deployment("taxi-fare-prod", "taxi-fare-v6")
    assert deployment["properties"]["model"] == "azureml://registries/shared-registry/models/taxi-fare/versions/6"
    assert deployment["tags"]["promotion.id"] == promotion_id
    assert deployment["tags"]["promotion.event_id"] == "event-6"
    azure_app.finish("taxi-fare-prod", "taxi-fare-v6")
    tick("advance_deployments")  # deployment ready: traffic moves
    assert azure_app.endpoint("taxi-fare-prod")["properties"]["traffic"] == {"taxi-fare-v6": 100}
    azure_app.finish("taxi-fare-prod")
    tick("advance_deployments")
    done = state_of(promotion_id)
    assert done["state"] == "deployed"
    actions = [h["action"] for h in done["history"]]
    assert actions == ["requested", "approval", "approved", "deploying", "deployed"]
    # a redelivered job and more ticks change nothing
    user_function("deploy_promotion")(func.QueueMessage(body=job.encode()))
    tick("advance_deployments")
    assert state_of(promotion_id) == done


def test_a_failed_deployment_records_the_error_once_and_redacted(azure_app):
    promotion_id, job = approved_promotion(azure_app)
    owner = {"promotion.owner": wiring.settings().events_source, "promotion.endpoint_model": "taxi-fare"}
    azure_app.add_endpoint("taxi-fare-prod", tags=owner)  # made by this app earlier
    user_function("deploy_promotion")(func.QueueMessage(body=job.encode()))
    secrets = ["c2VjcmV0c2lnbmF0dXJl", "ZW5jb2RlZFNpZw", "Sup3rS3cret"]
    logs = (
        "ModuleNotFoundError: No module named 'x'\nusing sig=c2VjcmV0c2lnbmF0dXJl&se=2030\n"
        "GET /load?src=https%3A%2F%2Facct.blob.core.windows.net%2Fm%3Fsv%3D2022%26sig%3DZW5jb2RlZFNpZw%26sp%3Dr\n"
        "Looking in indexes: https://builder:Sup3rS3cret@pkgs.contoso.com/simple"
    )
    azure_app.finish("taxi-fare-prod", "taxi-fare-v6", state="Failed", logs=logs)
    tick("advance_deployments")
    failed = state_of(promotion_id)
    assert failed["state"] == "failed"
    assert "Failed" in failed["error"] and "ModuleNotFoundError" in failed["error"]
    assert "pkgs.contoso.com" in failed["error"]  # the log line stays, without its secret
    events = json.dumps([event.to_json() for event in wiring.store().events()])
    assert "ModuleNotFoundError" in events
    for secret in secrets:  # not in the error, the history, or the events
        assert secret not in json.dumps(failed) and secret not in events


def test_an_endpoint_made_by_hand_is_never_taken_over(azure_app):
    promotion_id, job = approved_promotion(azure_app)
    azure_app.add_endpoint("taxi-fare-prod", traffic={"by-hand": 100})
    azure_app.add_deployment("taxi-fare-prod", "by-hand", model="azureml:by-hand:1")
    user_function("deploy_promotion")(func.QueueMessage(body=job.encode()))
    failed = state_of(promotion_id)
    assert failed["state"] == "failed" and "was not made by this app" in failed["error"]
    assert azure_app.count("PUT", "/onlineEndpoints/taxi-fare-prod") == 0  # no deployment, no traffic change
    assert azure_app.endpoint("taxi-fare-prod")["properties"]["traffic"] == {"by-hand": 100}


def test_a_name_taken_in_the_region_fails_the_promotion_with_the_service_message(azure_app):
    promotion_id, job = approved_promotion(azure_app)
    message = "Endpoint name taxi-fare-prod is not available in westeurope"
    azure_app.fail_next(
        "PUT", "/onlineEndpoints/taxi-fare-prod?", 409, code="EndpointNameNotAvailable", message=message
    )

    user_function("deploy_promotion")(func.QueueMessage(body=job.encode()))

    failed = state_of(promotion_id)
    assert failed["state"] == "failed" and message in failed["error"]


def test_policy_check_reads_staging_and_reports_azure_errors_plainly(azure_app, capsys, monkeypatch):
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)  # policy check needs no store
    monkeypatch.setenv("PROMOTION_STATE_STORE", "tables")
    azure_app.add_workspace_model("taxi-fare", "8", type="mlflow_model", tags={"stage": "candidate", "accuracy": "0.7"})
    assert main(["policy", "check", "--name", "taxi-fare", "--version", "8"]) == 0
    assert "thresholds[0]: tag 'accuracy' = 0.7, needs >= 0.8" in capsys.readouterr().out
    azure_app.fail_next("GET", "/models/taxi-fare/versions/9", 403, message="identity lacks models/read")
    assert main(["policy", "check", "--name", "taxi-fare", "--version", "9"]) == 1
    assert "error: Azure: HttpResponseError" in capsys.readouterr().err


def test_an_azure_outage_answers_503_and_changes_nothing(azure_app):
    azure_app.add_registry_model("taxi-fare", "10")
    azure_app.fail_next("GET", "/models/taxi-fare/versions/10", 503, times=4)
    body = {"model_name": "taxi-fare", "model_version": "10"}

    status, answer = http("request_promotion", "POST", "promotions", who=who(ALICE), body=body)

    assert status == 503 and "Azure ML is unavailable right now" in answer["error"]
    assert http("list_promotions", "GET", "promotions", who=who(ALICE))[1] == {"promotions": [], "continuation": None}
    assert http("request_promotion", "POST", "promotions", who=who(ALICE), body=body)[0] == 201
