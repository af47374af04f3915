"""The deployment worker and its timer: every promotion in flight ends, each on its own."""

import logging
import threading
from dataclasses import replace

import pytest
from azure.core.exceptions import HttpResponseError

from promotion import service
from promotion.adapters.sqlite import SqlitePromotionStore
from promotion.domain import (
    DEPLOYMENT_APPROVER_TAG,
    DEPLOYMENT_MODEL_TAG,
    DEPLOYMENT_PROMOTION_TAG,
    ENDPOINT_MODEL_TAG,
    ENDPOINT_OWNER_TAG,
    LINEAGE_SOURCE_MODEL,
    EventType,
    ModelRef,
    ModelVersion,
    State,
)
from promotion.identity import Principal
from promotion.policy import ProductionRules
from promotion.ports import DeploymentFailed, StaleRevision
from tests.unit.fakes import FakeDeployer, FakeEndpoint, FakeRegistry, Production, registry_uri

ALICE = Principal("alice@contoso.com", "11111111-0000-0000-0000-000000000000")
CAROL = Principal("carol@contoso.com", "33333333-0000-0000-0000-000000000000")
RULES = ProductionRules(approvers=("carol@contoso.com",), job_grace_minutes=0.5, deploy_timeout_minutes=10)


def mlflow(name, version):
    return ModelVersion(ModelRef(name, version), "mlflow_model", {LINEAGE_SOURCE_MODEL: f"{name}:{version}"})


CHURN_2, CHURN_3, FRAUD_7 = ModelRef("churn", "2"), ModelRef("churn", "3"), ModelRef("fraud", "7")


@pytest.fixture
def deployer():
    return FakeDeployer()


@pytest.fixture
def prod(tmp_path, deployer, clock):
    registry = FakeRegistry(
        *(mlflow(ref.name, ref.version) for ref in (CHURN_2, CHURN_3, FRAUD_7)),
        mlflow("taxi.fare", "1"),
        mlflow("taxi-fare", "1"),
        mlflow("Taxi_Fare", "1"),
    )
    store = SqlitePromotionStore(tmp_path / "p.sqlite3")
    return Production(store=store, registry=registry, deployer=deployer, rules=RULES, clock=clock)


def approved(prod, ref):
    return prod.approved(ref, ALICE, CAROL)


# --- the job ---------------------------------------------------------------------------------------


def test_the_job_starts_the_deployment_and_later_calls_finish_it(prod, deployer):
    deployer.polls = 1
    promotion = approved(prod, CHURN_3)
    states = [prod.deploy(promotion.id).state for _ in range(3)]
    assert states == [State.DEPLOYING, State.DEPLOYING, State.DEPLOYED]
    done = prod.store.get(promotion.id)
    assert done.deployment["endpoint"] == "churn-prod" and done.deployment["deployment"] == "churn-v3"
    assert done.deployment["model_uri"] == registry_uri(CHURN_3)
    tags = done.deployment["tags"]
    assert tags[DEPLOYMENT_APPROVER_TAG] == CAROL.name and tags[DEPLOYMENT_PROMOTION_TAG] == promotion.id
    assert tags[DEPLOYMENT_MODEL_TAG] == "churn:3" and tags[LINEAGE_SOURCE_MODEL] == "churn:3"
    assert [entry.action for entry in done.history] == ["requested", "approval", "approved", "deploying", "deployed"]
    assert deployer.live("churn-prod") == {"churn-v3": 100}

    assert prod.event_types(promotion.id) == ["ApprovalRequested", "Approved", "DeploymentStarted", "Deployed"]
    started, deployed = prod.events(promotion.id)[-2:]
    assert started.data["endpoint"] == "churn-prod" and started.data["deployment"] == "churn-v3"
    assert started.data["state"] == "deploying" and started.data["actor"] == "deploy_promotion"
    assert deployed.data["endpoint"] == "churn-prod" and deployed.data["deployment"] == "churn-v3"
    assert deployed.data["traffic"] == {"churn-v3": 100} and deployed.data["state"] == "deployed"


def test_repeated_jobs_never_create_a_second_deployment_or_history(prod, deployer):
    promotion = approved(prod, CHURN_3)
    for _ in range(3):
        assert prod.deploy(promotion.id).state is State.DEPLOYED
    assert list(deployer.endpoints["churn-prod"].deployments) == ["churn-v3"]
    assert len(prod.store.get(promotion.id).history) == 5
    assert prod.event_types(promotion.id).count("Deployed") == 1


def test_the_new_deployment_shares_traffic_with_the_previous_live_one(prod, deployer):
    prod.rules = replace(RULES, traffic_percent=25)
    prod.deployed(CHURN_2, ALICE, CAROL)
    promotion = prod.deployed(CHURN_3, ALICE, CAROL)
    assert deployer.live("churn-prod") == {"churn-v2": 75, "churn-v3": 25}
    assert prod.events(promotion.id)[-1].data["traffic"] == {"churn-v2": 75, "churn-v3": 25}


def test_an_even_split_keeps_the_most_recent_previous_version_live(prod, deployer):
    # A 50/50 split ties the previous two deployments: the newer version keeps the rest, by version order
    # (numeric parts compare as numbers), never the older one by name.
    prod.rules = replace(RULES, traffic_percent=50)
    lives = []
    for version in ("8", "9", "10", "11"):
        prod.registry.models[ModelRef("churn", version)] = mlflow("churn", version)
        promotion = prod.deployed(ModelRef("churn", version), ALICE, CAROL)
        assert promotion.state is State.DEPLOYED
        lives.append(deployer.live("churn-prod"))
    assert lives == [
        {"churn-v8": 100},
        {"churn-v9": 50, "churn-v8": 50},
        {"churn-v10": 50, "churn-v9": 50},
        {"churn-v11": 50, "churn-v10": 50},
    ]


def test_a_model_removed_from_the_registry_voids_the_promotion_and_nothing_deploys(prod):
    promotion = approved(prod, CHURN_3)
    del prod.registry.models[CHURN_3]
    void = prod.deploy(promotion.id)
    assert void.state is State.VOIDED and "no longer holds the version" in void.error
    assert prod.event_types(promotion.id)[-1] == "Voided" and not prod.deployer.calls and not prod.deployer.endpoints


def test_a_name_taken_in_the_region_fails_the_promotion_with_the_services_message(prod, deployer):
    message = "(EndpointNameNotAvailable) the name churn-prod is already in use in this region"
    deployer.failures["churn-prod"] = DeploymentFailed(message)
    promotion = approved(prod, CHURN_3)
    failed = prod.deploy(promotion.id)
    assert failed.state is State.FAILED and failed.error == message
    assert prod.store.get(promotion.id).history[-1].detail == {"error": message}
    [reported] = [e for e in prod.events(promotion.id) if e.type is EventType.DEPLOYMENT_FAILED]
    assert reported.data["reason"] == message and reported.data["state"] == "failed"


# --- the timer: each promotion on its own ----------------------------------------------------------


def _two_deploying(prod, deployer):
    deployer.polls = 1
    churn, fraud = approved(prod, CHURN_3), approved(prod, FRAUD_7)
    assert prod.deploy(churn.id).state is prod.deploy(fraud.id).state is State.DEPLOYING
    deployer.polls = 0  # the deployments are quick from now on
    return churn, fraud


def test_a_permanent_failure_of_one_promotion_does_not_stop_another_in_the_same_run(prod, deployer):
    churn, fraud = _two_deploying(prod, deployer)
    message = "(QuotaExceeded) not enough quota for Standard_F4s_v2 in westeurope"
    deployer.failures["churn-v3"] = DeploymentFailed(message)
    report = prod.advance()
    assert report.advanced == {churn.id: "failed", fraud.id: "deployed"} and report.errors == {}
    failed = prod.store.get(churn.id)
    assert failed.state is State.FAILED and failed.error == message
    assert prod.store.get(fraud.id).state is State.DEPLOYED and deployer.live("fraud-prod") == {"fraud-v7": 100}
    assert prod.events(churn.id)[-1].type is EventType.DEPLOYMENT_FAILED
    assert prod.events(churn.id)[-1].data["reason"] == message
    # final: the next run leaves it alone
    calls = deployer.calls["ensure_deployment"]
    assert prod.advance().advanced == {} and deployer.calls["ensure_deployment"] == calls


@pytest.mark.parametrize(
    "error",
    [RuntimeError("connection reset"), HttpResponseError(message="(ServiceUnavailable) try again"), TimeoutError()],
    ids=["runtime", "http-5xx", "timeout"],
)
def test_a_transient_error_on_one_promotion_leaves_it_deploying_and_the_others_advance(prod, deployer, error):
    churn, fraud = _two_deploying(prod, deployer)
    deployer.failures["churn-v3"] = error
    report = prod.advance()
    assert report.advanced == {fraud.id: "deployed"} and list(report.errors) == [churn.id]
    assert type(error).__name__ in report.errors[churn.id]
    assert prod.store.get(churn.id).state is State.DEPLOYING
    assert prod.store.get(fraud.id).state is State.DEPLOYED
    assert "DeploymentFailed" not in prod.event_types(churn.id)
    # retried at the next tick
    del deployer.failures["churn-v3"]
    assert prod.advance().advanced == {churn.id: "deployed"}


def test_each_failure_is_logged_with_the_promotion_it_is_about(prod, deployer, caplog):
    churn, fraud = _two_deploying(prod, deployer)
    deployer.failures["churn-v3"] = RuntimeError("connection reset")
    with caplog.at_level(logging.INFO, logger="promotion"):
        prod.advance()
    [failure] = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert failure.promotion_id == churn.id and failure.model == "churn:3"
    assert "could not advance" in failure.getMessage() and failure.exc_info[0] is RuntimeError
    assert any(getattr(record, "promotion_id", None) == fraud.id for record in caplog.records)


def test_the_job_and_two_timers_at_once_deploy_once(prod, deployer, clock):
    deployer.polls = 2
    promotion = approved(prod, CHURN_3)
    clock.advance(minutes=1)  # past the job grace: the timers start it too
    barrier = threading.Barrier(3)
    unexpected = []

    def run(step):
        barrier.wait()
        for _ in range(6):
            try:
                step()
            except StaleRevision:
                pass  # the job raises and is retried by the queue; the timer logs it and goes on
            except Exception as error:  # pragma: no cover - reported below
                unexpected.append(error)

    steps = [lambda: prod.deploy(promotion.id), prod.advance, prod.advance]
    threads = [threading.Thread(target=run, args=(step,)) for step in steps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert unexpected == []
    for _ in range(3):
        prod.advance()
    done = prod.store.get(promotion.id)
    assert done.state is State.DEPLOYED and deployer.live("churn-prod") == {"churn-v3": 100}
    assert [entry.action for entry in done.history].count("deploying") == 1
    assert prod.event_types(promotion.id) == ["ApprovalRequested", "Approved", "DeploymentStarted", "Deployed"]
    assert list(deployer.endpoints["churn-prod"].deployments) == ["churn-v3"]


def test_a_deployment_past_its_timeout_fails_with_that_reason(prod, deployer, clock):
    prod.rules = replace(RULES, deploy_timeout_minutes=0.5)
    deployer.polls = 10**6
    promotion = approved(prod, CHURN_3)
    assert prod.deploy(promotion.id).state is State.DEPLOYING
    clock.advance(seconds=20)
    assert prod.advance().advanced == {promotion.id: "deploying"}
    clock.advance(seconds=11)
    assert prod.advance().advanced == {promotion.id: "failed"}
    failed = prod.store.get(promotion.id)
    assert "0.5 minutes" in failed.error and "production.deploy_timeout_minutes" in failed.error
    assert prod.events(promotion.id)[-1].data["reason"] == failed.error


def test_a_lost_job_is_started_by_the_timer_after_the_grace_period(prod, deployer, clock):
    promotion = approved(prod, CHURN_3)  # the job message is lost: nothing calls deploy
    clock.advance(seconds=20)
    assert prod.advance().advanced == {}
    assert prod.store.get(promotion.id).state is State.APPROVED and deployer.calls == {}
    clock.advance(seconds=11)
    assert prod.advance().advanced == {promotion.id: "deployed"}
    assert deployer.live("churn-prod") == {"churn-v3": 100}
    assert prod.event_types(promotion.id)[-2:] == ["DeploymentStarted", "Deployed"]


def test_the_timer_also_expires_stale_requests(prod, clock):
    prod.rules = replace(RULES, approval_ttl_hours=0.01)
    pending = prod.request(CHURN_3, ALICE)
    clock.advance(seconds=40)
    assert prod.advance().expired == [pending.id]
    assert prod.store.get(pending.id).state is State.EXPIRED


# --- the poison queue ------------------------------------------------------------------------------


def test_a_poisoned_job_fails_an_approved_promotion_whose_deployment_never_started(prod):
    promotion = approved(prod, CHURN_3)
    failed = service.fail_abandoned_job(
        promotion.id, store=prod.store, reason="poisoned", source="test-app", clock=prod.clock
    )
    assert failed.state is State.FAILED and failed.error == "poisoned"
    assert prod.events(promotion.id)[-1].type is EventType.DEPLOYMENT_FAILED
    again = service.fail_abandoned_job(
        promotion.id, store=prod.store, reason="again", source="test-app", clock=prod.clock
    )
    assert again.error == "poisoned" and prod.event_types(promotion.id).count("DeploymentFailed") == 1


@pytest.mark.parametrize("polls, state", [(5, State.DEPLOYING), (0, State.DEPLOYED)])
def test_a_poisoned_job_leaves_a_promotion_further_along_alone(prod, deployer, polls, state):
    deployer.polls = polls
    promotion = approved(prod, CHURN_3)
    assert prod.deploy(promotion.id).state is state
    before = prod.store.get(promotion.id)
    after = service.fail_abandoned_job(
        promotion.id, store=prod.store, reason="poisoned", source="test-app", clock=prod.clock
    )
    assert after.state is state and prod.store.get(promotion.id) == before
    assert "DeploymentFailed" not in prod.event_types(promotion.id)


# --- order and names -------------------------------------------------------------------------------


def test_an_older_version_finishing_after_a_newer_one_is_live_stays_at_zero_traffic(prod, deployer):
    deployer.polls_for["churn-v2"] = 3  # v2's deployment is slow
    v2 = approved(prod, CHURN_2)
    assert prod.deploy(v2.id).state is State.DEPLOYING
    v3 = prod.deployed(CHURN_3, ALICE, CAROL)
    assert v3.state is State.DEPLOYED and deployer.live("churn-prod") == {"churn-v3": 100}
    for _ in range(5):
        prod.advance()
    late = prod.store.get(v2.id)
    assert late.state is State.DEPLOYED
    assert late.history[-1].detail["traffic"] == {}
    note = late.history[-1].detail["note"]
    assert "churn:3" in note and "0%" in note and "rollback" in note
    assert deployer.live("churn-prod") == {"churn-v3": 100}  # traffic unchanged
    deployed = prod.events(v2.id)[-1]
    assert deployed.type is EventType.DEPLOYED and deployed.data["traffic"] == {}
    assert deployed.data["comment"] == note


def test_versions_that_normalise_alike_get_their_own_deployment(prod, deployer):
    for version in ("1.0", "1_0", "1-0"):
        prod.registry.models[ModelRef("churn", version)] = mlflow("churn", version)
    promotions = [prod.deployed(ModelRef("churn", version), ALICE, CAROL) for version in ("1.0", "1_0", "1-0")]
    assert all(p.state is State.DEPLOYED for p in promotions)
    names = [p.deployment["deployment"] for p in promotions]
    assert len(set(names)) == 3 and set(deployer.endpoints["churn-prod"].deployments) == set(names)
    for promotion in promotions:
        [served] = deployer.deployments_of(promotion.model)
        assert served["deployment"] == promotion.deployment["deployment"]


@pytest.mark.parametrize("names", [("taxi.fare", "taxi-fare"), ("Taxi_Fare", "taxi-fare"), ("taxi.fare", "Taxi_Fare")])
def test_names_that_normalise_alike_get_their_own_endpoint_and_deployment(prod, deployer, names):
    promotions = [prod.deployed(ModelRef(name, "1"), ALICE, CAROL) for name in names]
    assert [p.state for p in promotions] == [State.DEPLOYED, State.DEPLOYED]
    endpoints = [p.deployment["endpoint"] for p in promotions]
    deployments = [p.deployment["deployment"] for p in promotions]
    assert len(set(endpoints)) == 2 and len(set(deployments)) == 2
    for promotion, endpoint, deployment in zip(promotions, endpoints, deployments, strict=True):
        assert deployer.live(endpoint) == {deployment: 100}  # no model took another's traffic
        [served] = deployer.deployments_of(promotion.model)
        assert (served["endpoint"], served["deployment"], served["traffic"]) == (endpoint, deployment, 100)


# --- whose endpoint it is ------------------------------------------------------------------------------------


def test_an_endpoint_serving_another_model_is_refused_and_its_traffic_never_moves(prod, deployer):
    prod.deployed(CHURN_2, ALICE, CAROL)  # on churn-prod, by the default template {name}-prod
    prod.rules = replace(RULES, endpoint="{name}")  # a policy edit: now model "churn-prod" names the same endpoint
    intruder = ModelRef("churn-prod", "1")
    prod.registry.models[intruder] = mlflow(intruder.name, intruder.version)
    failed = prod.deployed(intruder, ALICE, CAROL)
    assert failed.state is State.FAILED
    assert "online endpoint churn-prod serves model churn" in failed.error and "churn-prod" in failed.error
    assert deployer.live("churn-prod") == {"churn-v2": 100}
    assert set(deployer.endpoints["churn-prod"].deployments) == {"churn-v2"}  # nothing was added to it
    assert prod.event_types(failed.id)[-1] == "DeploymentFailed"


def test_an_endpoint_not_made_by_this_app_is_never_taken_over(prod, deployer):
    hand_made = {"model_uri": "azureml:by-hand:1", "model": None, "tags": {}}
    deployer.endpoints["churn-prod"] = FakeEndpoint(deployments={"by-hand": hand_made}, traffic={"by-hand": 100})
    failed = prod.deployed(CHURN_3, ALICE, CAROL)
    assert failed.state is State.FAILED
    assert "was not made by this app" in failed.error and "promotion.owner" in failed.error
    assert deployer.live("churn-prod") == {"by-hand": 100}
    assert set(deployer.endpoints["churn-prod"].deployments) == {"by-hand"}


def test_an_endpoint_of_another_app_is_never_taken_over(prod, deployer):
    deployer.endpoints["churn-prod"] = FakeEndpoint(tags={ENDPOINT_OWNER_TAG: "/sites/another-app"})
    failed = prod.deployed(CHURN_3, ALICE, CAROL)
    assert failed.state is State.FAILED and "belongs to /sites/another-app" in failed.error
    assert deployer.endpoints["churn-prod"].deployments == {}


def test_the_endpoint_this_app_made_carries_its_owner_and_model(prod, deployer):
    prod.deployed(CHURN_3, ALICE, CAROL)
    assert deployer.endpoints["churn-prod"].tags == {ENDPOINT_OWNER_TAG: prod.source, ENDPOINT_MODEL_TAG: "churn"}


def test_a_template_without_name_shares_one_endpoint_on_purpose(prod, deployer):
    prod.rules = replace(RULES, endpoint="shared-prod")
    churn = prod.deployed(CHURN_3, ALICE, CAROL)
    fraud = prod.deployed(FRAUD_7, ALICE, CAROL)
    assert churn.state is fraud.state is State.DEPLOYED
    assert deployer.live("shared-prod") == {"fraud-v7": 100}
    assert deployer.endpoints["shared-prod"].tags == {ENDPOINT_OWNER_TAG: prod.source}  # no one model's
