"""The Azure ML adapter through the real Azure SDKs (azure-mgmt-core for ARM, azure-ai-ml's MLClient for production)
and the real DefaultAzureCredential, against the in-process HTTP fake of Azure ML (tests/fakes/azureml_http.py).
Offline and fast; the fake is as slow and as strict as the service where it matters."""

from __future__ import annotations

import ast
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError

from promotion.adapters.azureml import AzureMLBackend
from promotion.domain import DEPLOYMENT_MODEL_TAG as MODEL_TAG
from promotion.domain import ModelRef, ModelVersion
from promotion.ports import (
    AlreadyExists,
    CopyProgress,
    CopyRefused,
    DeploymentFailed,
    DeploymentPlan,
    Progress,
    StatusUnavailable,
    TagUpdate,
)
from promotion.settings import Settings, SettingsError
from tests.fakes.fixtures import AZUREML_ENV

# azure-ai-ml builds its marshmallow schemas on first use, each with a deprecation warning that is not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:marshmallow.*")

ROOT = Path(__file__).resolve().parents[2]
CREDIT = ModelRef("credit-risk", "3")
SOURCE = {
    "type": "mlflow_model",
    "tags": {"stage": "candidate", "team": "risk"},
    "properties": {"auc": "0.91"},
    "description": "Gradient boosting on the 2024 book",
}
LINEAGE = {"promotion.source_model": "credit-risk:3", "promotion.event_id": "event-1"}


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


def staged(fake, backend, ref: ModelRef = CREDIT) -> ModelVersion:
    fake.add_workspace_model(ref.name, ref.version, **SOURCE)
    return backend.staging.get(ref)


def tag_until_done(backend, ref: ModelRef, tags: dict, description: str | None, polls: int = 10) -> ModelVersion:
    """Tag, then ask how the tag update is going until it has succeeded, as later timer runs would."""
    update = backend.registry.tag(ref, tags, description)
    for _ in range(polls):
        if not isinstance(update, TagUpdate):
            return update
        if backend.registry.tag_status(ref, update.operation, tags, description).progress is CopyProgress.SUCCEEDED:
            return backend.registry.get(ref)
    raise AssertionError(f"the tag update of {ref} did not finish in {polls} polls")


def warm_up(fake, backend) -> None:
    """A registry read, so the credential and the registry's resource group are known, as in a warm process."""
    backend.registry.get(ModelRef("warm-up", "1"))
    fake.reset_log()


# ---- the rules the adapter lives by


def test_importing_the_module_imports_no_azure_sdk():
    modules = "promotion.adapters.azureml, promotion.adapters.azureml.models, promotion.adapters.azureml.production"
    code = f"import sys, {modules}; print([m for m in sys.modules if m.startswith('azure')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _private_uses(path: Path) -> list[str]:
    """Imports of private Azure SDK modules, and private attributes read from anything but self or cls."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        modules = []
        if isinstance(node, ast.ImportFrom) and node.module:
            modules = [".".join([node.module, *(a.name for a in node.names if a.name.startswith("_"))])]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        for module in modules:
            parts = module.split(".")
            if parts[0] == "azure" and any(part.startswith("_") for part in parts):
                found.append(f"{path.name}:{node.lineno} imports {module}")
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not (node.attr.startswith("__") and node.attr.endswith("__"))
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            found.append(f"{path.name}:{node.lineno} reads .{node.attr}")
    return found


def test_no_module_uses_private_sdk_internals():
    found = [use for path in sorted((ROOT / "promotion").rglob("*.py")) for use in _private_uses(path)]
    assert found == []


def test_the_private_use_check_can_fail(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from azure.ai.ml._utils._registry_utils import get_registry_client\n"
        "import azure.ai.ml._restclient\n"
        "guid = workspace._workspace_id\n"
    )
    assert len(_private_uses(planted)) == 3


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
    (request,) = fake_azureml.requests
    assert "api-version=2024-04-01" in request.url and request.url.startswith("https://management.azure.com/")


def test_staging_get_answers_none_for_a_missing_version(fake_azureml, azureml_backend):
    fake_azureml.add_workspace_model(CREDIT.name, "2")

    assert azureml_backend.staging.get(CREDIT) is None


def test_staging_listings_follow_every_page_and_leave_archived_versions_out(fake_azureml, azureml_backend):
    for name in ("churn", "credit-risk", "fraud"):
        for version in (1, 2, 3):
            fake_azureml.add_workspace_model(name, version, archived=(name, version) == ("credit-risk", 2))
    fake_azureml.add_workspace_model("retired", 1, archived=True)
    fake_azureml.page_size = 2

    assert azureml_backend.staging.names() == ["churn", "credit-risk", "fraud"]
    assert [m.version for m in azureml_backend.staging.versions("credit-risk")] == ["1", "3"]
    assert azureml_backend.staging.versions("unknown") == []
    # names: 2 pages; versions: 1 page (2 active versions), and one request for the unknown name
    assert fake_azureml.count("GET", "/models") == 4, fake_azureml.log()


def test_a_next_link_outside_arm_is_refused(fake_azureml, azureml_backend):
    fake_azureml.add_workspace_model("churn", 1)
    fake_azureml.add_workspace_model("fraud", 1)
    fake_azureml.page_size = 1
    fake_azureml._current_path = "https://evil.example.com/steal"  # the next page link the fake will hand out

    original = fake_azureml._page

    def page_with_foreign_link(items, query):
        status, headers, body = original(items, query)
        return status, headers, body.replace("https://management.azure.com", "https://evil.example.com")

    fake_azureml._page = page_with_foreign_link
    with pytest.raises(ValueError, match="nextLink outside"):
        azureml_backend.staging.names()
    assert all("evil.example.com" not in request.url for request in fake_azureml.requests)


def test_registry_get_finds_the_model_version(fake_azureml, azureml_backend):
    fake_azureml.add_registry_model(CREDIT.name, CREDIT.version, **SOURCE)

    model = azureml_backend.registry.get(CREDIT)

    assert model.ref == CREDIT
    assert dict(model.tags) == SOURCE["tags"] and model.type == "mlflow_model"
    assert model.path == "azureml://registries/shared-registry/models/credit-risk/versions/3"


def test_registry_get_answers_none_for_a_missing_version(fake_azureml, azureml_backend):
    assert azureml_backend.registry.get(CREDIT) is None


def test_registry_versions_list_one_model(fake_azureml, azureml_backend):
    for version in (1, 2):
        fake_azureml.add_registry_model(CREDIT.name, version)
    fake_azureml.add_registry_model("other", 1)

    assert [m.version for m in azureml_backend.registry.versions(CREDIT.name)] == ["1", "2"]
    assert azureml_backend.registry.versions("unknown") == []


def test_registry_versions_include_archived_ones_which_the_listing_hides_by_default(fake_azureml, azureml_backend):
    """An archived version's name is taken: reconcile must see it, or it would try to publish over it."""
    fake_azureml.add_registry_model(CREDIT.name, 1)
    fake_azureml.add_registry_model(CREDIT.name, 2, archived=True)

    assert [m.version for m in azureml_backend.registry.versions(CREDIT.name)] == ["1", "2"]
    (listing,) = [r for r in fake_azureml.requests if r.path.endswith("/models/credit-risk/versions")]
    assert "listViewType=All" in listing.url
    # The fake hides archived versions without it, as Azure does, so the assertion above can fail.
    hidden = azureml_backend.arm.list(f"{azureml_backend.registry_path}/models/{CREDIT.name}/versions")
    assert [item["name"] for item in hidden] == ["1"]


def test_the_registry_resource_group_is_looked_up_once_per_process(fake_azureml, azureml_backend):
    for version in ("1", "2", "3"):
        azureml_backend.registry.get(ModelRef(CREDIT.name, version))

    assert fake_azureml.count("GET", "/providers/Microsoft.MachineLearningServices/registries?") == 1
    assert fake_azureml.count() == 4


def test_a_configured_registry_resource_group_needs_no_lookup(fake_azureml):
    settings = Settings.from_env({**AZUREML_ENV, "REGISTRY_RESOURCE_GROUP": "rg-ml-registry"})
    backend = AzureMLBackend(settings, retry_total=0)

    assert backend.registry.get(CREDIT) is None
    assert fake_azureml.count() == 1


def test_an_unknown_registry_says_which_settings_to_check(fake_azureml):
    settings = Settings.from_env({**AZUREML_ENV, "REGISTRY_NAME": "no-such-registry"})
    backend = AzureMLBackend(settings, retry_total=0)

    with pytest.raises(SettingsError, match="REGISTRY_RESOURCE_GROUP and REGISTRY_SUBSCRIPTION_ID") as raised:
        backend.registry.get(CREDIT)
    assert "Microsoft.MachineLearningServices/registries/read at the scope of" in str(raised.value)
    assert "no-such-registry" not in str(raised.value) and AZUREML_ENV["AZURE_SUBSCRIPTION_ID"] not in str(raised.value)


def test_a_lookup_the_identity_may_not_make_names_both_settings_and_the_permission(fake_azureml, azureml_backend):
    fake_azureml.fail_next("GET", "/registries?", 403, code="AuthorizationFailed", message="no access")

    with pytest.raises(SettingsError) as raised:
        azureml_backend.registry.get(CREDIT)
    message = str(raised.value)
    assert message.startswith("the app's identity may not list registries (403)")
    assert "REGISTRY_RESOURCE_GROUP and REGISTRY_SUBSCRIPTION_ID" in message
    assert "Microsoft.MachineLearningServices/registries/read" in message


def test_the_registry_may_live_in_another_subscription_with_no_lookup(fake_azureml):
    other = "99999999-9999-4999-8999-999999999999"
    fake_azureml.subscription_id = other  # where the fake's registry now lives
    settings = Settings.from_env(
        {**AZUREML_ENV, "REGISTRY_RESOURCE_GROUP": "rg-ml-registry", "REGISTRY_SUBSCRIPTION_ID": other}
    )
    backend = AzureMLBackend(settings, retry_total=0)

    assert backend.registry.get(CREDIT) is None
    (read,) = fake_azureml.requests
    assert read.path.startswith(f"/subscriptions/{other}/resourceGroups/rg-ml-registry/")
    assert "/registries?" not in read.url


@pytest.mark.parametrize("spelling", ["MLFlowModel", "mlflow_model", "TritonModel", "custom_model"])
def test_model_types_read_in_either_spelling(fake_azureml, azureml_backend, spelling):
    fake_azureml.add_workspace_model(CREDIT.name, CREDIT.version, type=spelling)

    model = azureml_backend.staging.get(CREDIT)

    assert model.type in ("mlflow_model", "triton_model", "custom_model")
    assert model.type.replace("_", "") == spelling.replace("_", "").lower()


# ---- starting the copy: one request, never a wait


@pytest.mark.parametrize("retry_after", [None, 60])
def test_starting_a_copy_is_one_request_and_never_waits(fake_azureml, azureml_backend, retry_after):
    model = staged(fake_azureml, azureml_backend)
    warm_up(fake_azureml, azureml_backend)
    fake_azureml.publish_polls = 1000  # a copy that takes minutes
    fake_azureml.publish_retry_after = retry_after

    started = time.monotonic()
    handle = azureml_backend.registry.start_copy(model)

    assert time.monotonic() - started < 1
    (publish,) = fake_azureml.requests
    assert publish.method == "POST" and publish.path.endswith(
        "/workspaces/ws-staging/models/credit-risk/versions/3/publish"
    )
    assert publish.body == {
        "destinationName": "credit-risk",
        "destinationVersion": "3",
        "registryName": "shared-registry",
    }
    assert handle.startswith("Location:https://management.azure.com/")
    assert fake_azureml.registry_model(CREDIT.name, CREDIT.version) is None  # still copying


@pytest.mark.parametrize("async_operation", [False, True])
def test_the_copy_reports_running_until_done_one_request_per_question(fake_azureml, azureml_backend, async_operation):
    fake_azureml.publish_async_operation = async_operation
    fake_azureml.publish_polls = 3
    handle = azureml_backend.registry.start_copy(staged(fake_azureml, azureml_backend))
    assert handle.startswith("Azure-AsyncOperation:" if async_operation else "Location:")
    fake_azureml.reset_log()

    progress = [azureml_backend.registry.copy_status(handle).progress for _ in range(4)]

    assert progress == [CopyProgress.RUNNING] * 3 + [CopyProgress.SUCCEEDED]
    assert fake_azureml.count() == 4
    copy = fake_azureml.registry_model(CREDIT.name, CREDIT.version)["properties"]
    assert (copy["modelType"], copy["properties"], copy["tags"]) == ("mlflow_model", SOURCE["properties"], {})


@pytest.mark.parametrize("async_operation", [False, True])
def test_a_failed_copy_reports_the_service_message(fake_azureml, azureml_backend, async_operation):
    fake_azureml.publish_async_operation = async_operation
    fake_azureml.publish_polls = 0
    fake_azureml.publish_outcome = "Failed"
    fake_azureml.publish_error = "the source model's artifacts are gone"
    handle = azureml_backend.registry.start_copy(staged(fake_azureml, azureml_backend))

    status = azureml_backend.registry.copy_status(handle)

    assert status.progress is CopyProgress.FAILED
    assert "the source model's artifacts are gone" in status.message
    assert fake_azureml.registry_model(CREDIT.name, CREDIT.version) is None


def test_an_operation_the_service_forgot_counts_as_done_so_the_registry_is_asked(fake_azureml, azureml_backend):
    handle = azureml_backend.registry.start_copy(staged(fake_azureml, azureml_backend))
    fake_azureml._operations.clear()

    assert azureml_backend.registry.copy_status(handle).progress is CopyProgress.SUCCEEDED


@pytest.mark.parametrize(
    "handle", ["Location:https://evil.example.com/operations/1", "Other:https://management.azure.com/x", "garbage"]
)
def test_a_handle_this_app_did_not_make_is_never_followed(fake_azureml, azureml_backend, handle):
    status = azureml_backend.registry.copy_status(handle)

    assert status.progress is CopyProgress.FAILED
    assert fake_azureml.count() == 0


def test_a_version_the_registry_holds_already_raises_already_exists(fake_azureml, azureml_backend):
    model = staged(fake_azureml, azureml_backend)
    fake_azureml.add_registry_model(CREDIT.name, CREDIT.version, tags={"owner": "someone else"})

    with pytest.raises(AlreadyExists):
        azureml_backend.registry.start_copy(model)
    assert fake_azureml.registry_model(CREDIT.name, CREDIT.version)["properties"]["tags"] == {"owner": "someone else"}


def test_a_name_the_registry_refuses_is_a_permanent_refusal_with_the_service_message(fake_azureml, azureml_backend):
    dotted = ModelRef("credit.risk", "3")  # valid in a workspace, not in a registry
    model = staged(fake_azureml, azureml_backend, dotted)

    with pytest.raises(CopyRefused, match="invalid destination model name"):
        azureml_backend.registry.start_copy(model)


def test_missing_permission_is_a_permanent_refusal(fake_azureml, azureml_backend):
    model = staged(fake_azureml, azureml_backend)
    fake_azureml.fail_next("POST", "/publish", 403, code="AuthorizationFailed", message="no publish permission")

    with pytest.raises(CopyRefused, match="no publish permission"):
        azureml_backend.registry.start_copy(model)


@pytest.mark.parametrize("status", [429, 503])
def test_a_throttled_or_failing_start_propagates_and_copies_nothing(fake_azureml, azureml_backend, status):
    model = staged(fake_azureml, azureml_backend)
    warm_up(fake_azureml, azureml_backend)
    fake_azureml.fail_next("POST", "/publish", status)

    with pytest.raises(HttpResponseError) as raised:
        azureml_backend.registry.start_copy(model)

    assert raised.value.status_code == status
    assert fake_azureml.count("POST", "/publish") == 1  # retry_total=0: Event Grid redelivers instead
    fake_azureml.run_publishes()
    assert fake_azureml.registry_model(CREDIT.name, CREDIT.version) is None


# ---- tagging the copy: the content stays as it is


def test_tagging_sends_every_immutable_field_back_unchanged(fake_azureml, azureml_backend):
    fake_azureml.add_registry_model(CREDIT.name, CREDIT.version, type="mlflow_model", properties={"auc": "0.91"})
    before = dict(fake_azureml.registry_model(CREDIT.name, CREDIT.version)["properties"])
    warm_up(fake_azureml, azureml_backend)

    tagged = tag_until_done(azureml_backend, CREDIT, {**SOURCE["tags"], **LINEAGE}, "from staging")

    assert dict(tagged.tags) == {**SOURCE["tags"], **LINEAGE} and tagged.description == "from staging"
    after = fake_azureml.registry_model(CREDIT.name, CREDIT.version)["properties"]
    for field in ("modelUri", "modelType", "properties", "flavors"):
        assert after[field] == before[field]
    (put,) = [r for r in fake_azureml.requests if r.method == "PUT"]
    assert "provisioningState" not in put.body["properties"]  # read-only: never sent back


def test_a_tag_update_is_followed_until_the_registry_shows_the_tags_one_request_per_question(
    fake_azureml, azureml_backend
):
    """RegistryModelVersions_CreateOrUpdate answers 201 with Azure-AsyncOperation, and the fake's operation takes
    3 polls, as Azure's can: until it succeeds the version shows its old tags, so nothing may count it tagged."""
    fake_azureml.add_registry_model(CREDIT.name, CREDIT.version)
    warm_up(fake_azureml, azureml_backend)

    update = azureml_backend.registry.tag(CREDIT, LINEAGE, "from staging")

    assert isinstance(update, TagUpdate) and update.operation.startswith("Azure-AsyncOperation:https://management.")
    assert [r.method for r in fake_azureml.requests] == ["GET", "PUT"]
    assert azureml_backend.registry.get(CREDIT).tags == {}  # accepted, not applied
    fake_azureml.reset_log()

    progress = [azureml_backend.registry.tag_status(CREDIT, update.operation, LINEAGE).progress for _ in range(4)]

    assert progress == [CopyProgress.RUNNING] * 3 + [CopyProgress.SUCCEEDED]
    # 3 polls that answer InProgress, then the poll that answers Succeeded and the read of the original URI.
    assert fake_azureml.count() == 5 and fake_azureml.count("GET", "/models/credit-risk/versions/3") == 1
    assert dict(azureml_backend.registry.get(CREDIT).tags) == LINEAGE


def test_a_tag_update_that_fails_reports_the_service_message_and_changes_nothing(fake_azureml, azureml_backend):
    fake_azureml.registry_update_outcome = "Failed"
    fake_azureml.registry_update_polls = 1
    fake_azureml.add_registry_model(CREDIT.name, CREDIT.version, tags={"owner": "risk"})
    update = azureml_backend.registry.tag(CREDIT, LINEAGE, None)

    progress = [azureml_backend.registry.tag_status(CREDIT, update.operation, LINEAGE) for _ in range(2)]

    assert [status.progress for status in progress] == [CopyProgress.RUNNING, CopyProgress.FAILED]
    assert progress[1].message == "the registry could not update the model version"
    assert dict(azureml_backend.registry.get(CREDIT).tags) == {"owner": "risk"}


def test_a_tag_update_answered_at_once_is_done(fake_azureml, azureml_backend):
    fake_azureml.registry_update_polls = 0  # 200 with the version, which Azure may also answer
    fake_azureml.add_registry_model(CREDIT.name, CREDIT.version)

    tagged = azureml_backend.registry.tag(CREDIT, LINEAGE, None)

    assert isinstance(tagged, ModelVersion) and dict(tagged.tags) == LINEAGE


def test_a_version_with_an_update_under_way_is_re_read_then_tagged(fake_azureml, azureml_backend):
    """Someone else's update is running (the version reads Updating): ours is not sent over it, and once the
    version has settled without our tags they are sent then."""
    fake_azureml.add_registry_model(CREDIT.name, CREDIT.version)
    someone = azureml_backend.registry.tag(CREDIT, {"owner": "someone"}, None)
    assert isinstance(someone, TagUpdate)

    update = azureml_backend.registry.tag(CREDIT, LINEAGE, None)

    assert update == TagUpdate("version:") and fake_azureml.count("PUT") == 1
    assert azureml_backend.registry.tag_status(CREDIT, update.operation, LINEAGE).progress is CopyProgress.RUNNING
    fake_azureml.run_registry_updates()
    assert azureml_backend.registry.tag_status(CREDIT, update.operation, LINEAGE).progress is CopyProgress.RUNNING
    assert fake_azureml.count("PUT") == 2  # ours, now that the other one is done
    fake_azureml.run_registry_updates()
    assert azureml_backend.registry.tag_status(CREDIT, update.operation, LINEAGE).progress is CopyProgress.SUCCEEDED
    assert dict(azureml_backend.registry.get(CREDIT).tags) == {"owner": "someone", **LINEAGE}


@pytest.mark.parametrize("operation", ["copy", "tag update"])
@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_status_poll_that_fails_is_unavailable_not_a_failure(fake_azureml, azureml_backend, operation, status):
    fake_azureml.publish_async_operation = True
    if operation == "copy":
        handle = azureml_backend.registry.start_copy(staged(fake_azureml, azureml_backend))

        def ask():
            return azureml_backend.registry.copy_status(handle)
    else:
        fake_azureml.add_registry_model(CREDIT.name, CREDIT.version)
        update = azureml_backend.registry.tag(CREDIT, LINEAGE, None)

        def ask():
            return azureml_backend.registry.tag_status(CREDIT, update.operation, LINEAGE)

    fake_azureml.fail_next("GET", "/mfeOperationsStatus/", status, times=3, message="the front door is down")

    for _ in range(3):
        with pytest.raises(StatusUnavailable, match=f"{status} .*the front door is down"):
            ask()
    assert ask().progress is CopyProgress.RUNNING  # the operation itself was never in trouble


def test_a_status_poll_whose_connection_drops_is_unavailable(fake_azureml, azureml_backend):
    handle = azureml_backend.registry.start_copy(staged(fake_azureml, azureml_backend))
    fake_azureml.drop_next("GET", "/mfeOperationResults/")

    with pytest.raises(StatusUnavailable, match="ServiceRequestError"):
        azureml_backend.registry.copy_status(handle)


def test_the_fake_refuses_a_change_of_content_as_the_registry_does(fake_azureml, azureml_backend):
    """The strictness the test above relies on: a tag update that changes or leaves out content is refused."""
    fake_azureml.add_registry_model(CREDIT.name, CREDIT.version)
    arm = azureml_backend.arm
    path = f"{azureml_backend.registry_path}/models/{CREDIT.name}/versions/{CREDIT.version}"

    response = arm.send("PUT", path, {"properties": {"tags": {"only": "tags"}}})

    assert response.status_code == 400 and "cannot change without a new version" in response.text()


def test_a_description_the_registry_has_is_kept(fake_azureml, azureml_backend):
    fake_azureml.add_registry_model(CREDIT.name, CREDIT.version, description="written by hand")

    tagged = tag_until_done(azureml_backend, CREDIT, LINEAGE, "from staging")

    assert tagged.description == "written by hand"


def test_a_refusing_check_leaves_the_version_untouched(fake_azureml, azureml_backend):
    fake_azureml.add_registry_model(CREDIT.name, CREDIT.version, tags={"owner": "someone else"})

    def refuse(held):
        raise RuntimeError(f"not ours: {dict(held.tags)}")

    with pytest.raises(RuntimeError, match="not ours"):
        azureml_backend.registry.tag(CREDIT, LINEAGE, None, check=refuse)
    assert fake_azureml.count("PUT") == 0
    assert fake_azureml.registry_model(CREDIT.name, CREDIT.version)["properties"]["tags"] == {"owner": "someone else"}


def test_tagging_a_version_the_registry_lacks_answers_none(fake_azureml, azureml_backend):
    assert azureml_backend.registry.tag(CREDIT, LINEAGE, None) is None
    assert fake_azureml.count("PUT") == 0


# ---- transient faults, retries and waits


@pytest.mark.parametrize("port", ["staging", "registry"])
@pytest.mark.parametrize("status", [429, 500, 503])
def test_a_throttled_or_failing_read_propagates(fake_azureml, azureml_backend, port, status):
    fake_azureml.add_workspace_model(CREDIT.name, CREDIT.version)
    fake_azureml.add_registry_model(CREDIT.name, CREDIT.version)
    warm_up(fake_azureml, azureml_backend)
    fake_azureml.fail_next("GET", f"/models/{CREDIT.name}/versions/{CREDIT.version}", status)

    with pytest.raises(HttpResponseError) as raised:
        getattr(azureml_backend, port).get(CREDIT)

    assert raised.value.status_code == status
    assert fake_azureml.count("GET", "/versions/") == 1


def test_a_connection_failure_propagates(fake_azureml, azureml_backend):
    fake_azureml.drop_next("GET", "/models/")

    with pytest.raises(ServiceRequestError):
        azureml_backend.staging.get(CREDIT)


def test_the_default_retries_ride_out_one_503_at_once(fake_azureml, azureml_settings):
    backend = AzureMLBackend(azureml_settings)  # the app's own retry policy
    fake_azureml.add_workspace_model(CREDIT.name, CREDIT.version)
    backend.staging.get(CREDIT)
    fake_azureml.reset_log()
    fake_azureml.fail_next("GET", "/models/", 503)

    started = time.monotonic()
    assert backend.staging.get(CREDIT) is not None
    assert time.monotonic() - started < 2
    assert fake_azureml.count() == 2


def test_a_service_asking_to_wait_a_minute_is_answered_with_an_error_not_a_sleep(fake_azureml, azureml_settings):
    backend = AzureMLBackend(azureml_settings)  # retries on, as in Azure
    fake_azureml.add_workspace_model(CREDIT.name, CREDIT.version)
    backend.staging.get(CREDIT)
    fake_azureml.fail_next("GET", "/models/", 429, headers={"Retry-After": "60"})

    started = time.monotonic()
    with pytest.raises(HttpResponseError) as raised:
        backend.staging.get(CREDIT)

    assert raised.value.status_code == 429
    assert time.monotonic() - started < 2  # azure-core alone would sleep 60 s here


def test_an_unregistered_resource_provider_fails_at_once(fake_azureml, azureml_backend):
    """azure-mgmt-core's automatic registration would sleep 10 s between checks; the adapter leaves it out."""
    fake_azureml.fail_next(
        "GET", "/models/", 409, code="MissingSubscriptionRegistration", message="not registered to use the namespace"
    )

    started = time.monotonic()
    with pytest.raises(HttpResponseError):
        azureml_backend.staging.get(CREDIT)
    assert time.monotonic() - started < 2
    assert all("/register" not in r.url for r in fake_azureml.requests)


def test_clients_are_built_once(fake_azureml, azureml_backend):
    for version in ("1", "2"):
        fake_azureml.add_workspace_model(CREDIT.name, version)
        azureml_backend.staging.get(ModelRef(CREDIT.name, version))

    assert fake_azureml.token_requests == 1
    assert azureml_backend.arm is azureml_backend.arm


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


def test_the_production_client_has_explicit_timeouts_and_polling_interval(azureml_backend):
    from promotion.adapters import azureml

    client = azureml_backend.production_client
    config = client.online_endpoints._online_operation._config  # read only here, to check what the app passed
    assert config.polling_interval == azureml.POLLING_INTERVAL_SECONDS
    assert config.retry_policy.total_retries == 0
    transport = client.online_endpoints._online_operation._client._pipeline._transport
    assert transport.connection_config.timeout == azureml.CONNECTION_TIMEOUT_SECONDS
    assert transport.connection_config.read_timeout == azureml.READ_TIMEOUT_SECONDS


def test_a_missing_endpoint_is_created_without_waiting_and_ready_once_provisioned(fake_azureml, production):
    fake_azureml.operation_retry_after = 3600  # the SDK's poller, on its daemon thread, sleeps; we must not

    started = time.monotonic()
    assert production.ensure_endpoint(plan()) is Progress.PENDING
    assert time.monotonic() - started < 5
    assert fake_azureml.endpoint("credit-risk")["properties"]["authMode"] == "Key"

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


def test_an_endpoint_name_taken_in_the_region_is_a_permanent_failure_with_the_service_message(fake_azureml, production):
    fake_azureml.fail_next(
        "PUT",
        "/onlineEndpoints/credit-risk?",
        409,
        code="EndpointNameNotAvailable",
        message="Endpoint name credit-risk is already taken in westeurope",
    )

    with pytest.raises(DeploymentFailed, match="already taken in westeurope"):
        production.ensure_endpoint(plan())


@pytest.mark.parametrize(
    "status, code, message",
    [
        (400, "QuotaExceeded", "Not enough quota for Standard_F4s_v2"),
        (400, "InvalidSku", "Standard_F4s_v2 is not a valid SKU"),
        (403, "AuthorizationFailed", "no write permission on the workspace"),
        (404, "ResourceGroupNotFound", "resource group rg-ml-production not found"),
    ],
)
def test_permanent_refusals_of_a_deployment_fail_it(fake_azureml, production, status, code, message):
    fake_azureml.add_endpoint("credit-risk")
    fake_azureml.fail_next("PUT", "/deployments/credit-risk-v3", status, code=code, message=message)

    with pytest.raises(DeploymentFailed, match=message):
        production.ensure_deployment(plan())


@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_transient_errors_of_a_deployment_step_pass_through_to_be_retried(fake_azureml, production, status):
    fake_azureml.add_endpoint("credit-risk")
    fake_azureml.fail_next("PUT", "/deployments/credit-risk-v3", status)

    with pytest.raises(HttpResponseError) as raised:
        production.ensure_deployment(plan())
    assert raised.value.status_code == status


def test_an_operation_in_progress_is_pending_not_a_failure(fake_azureml, production):
    fake_azureml.add_endpoint("credit-risk", traffic={"old": 100})
    fake_azureml.add_deployment("credit-risk", "old", model="azureml://registries/shared-registry/models/x/versions/1")
    fake_azureml.add_deployment("credit-risk", "credit-risk-v3", model=plan().model_uri)
    fake_azureml.fail_next(
        "PUT",
        "/onlineEndpoints/credit-risk?",
        409,
        message="an operation is in progress on online endpoint credit-risk",
    )

    assert production.set_traffic("credit-risk", {"credit-risk-v3": 100}) is Progress.PENDING


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


def test_a_failed_deployment_keeps_a_capped_redacted_log(fake_azureml, production):
    fake_azureml.add_endpoint("credit-risk")
    production.ensure_deployment(plan())
    secret = "AccountKey=c2VjcmV0LWtleS12YWx1ZS10aGF0LWlzLWxvbmc="
    log = "\n".join(f"line {n}: loading model" for n in range(2000))
    log += f"\nconnecting with {secret}\nLiveness probe failed: no module 'sklearn'"
    fake_azureml.finish("credit-risk", "credit-risk-v3", state="Failed", logs=log)

    with pytest.raises(DeploymentFailed) as raised:
        production.ensure_deployment(plan())

    message = str(raised.value)
    assert "credit-risk-v3" in message and "Failed" in message
    assert "Liveness probe failed: no module 'sklearn'" in message  # the end of the log, where the reason is
    assert "c2VjcmV0" not in message and "AccountKey=[redacted]" in message
    assert len(message) < 4500


def test_a_deployment_of_that_name_serving_another_model_raises(fake_azureml, production):
    fake_azureml.add_endpoint("credit-risk")
    fake_azureml.add_deployment(
        "credit-risk", "credit-risk-v3", model="azureml://registries/shared-registry/models/other/versions/1"
    )

    with pytest.raises(DeploymentFailed, match="serves"):
        production.ensure_deployment(plan())


def test_a_deployment_serving_a_look_alike_model_is_not_ours(fake_azureml, production):
    fake_azureml.add_endpoint("credit-risk")
    fake_azureml.add_deployment(
        "credit-risk", "credit-risk-v3", model="azureml://registries/shared-registry/models/Credit-Risk/versions/3"
    )

    with pytest.raises(DeploymentFailed, match="serves"):
        production.ensure_deployment(plan())


def test_the_endpoint_state_shows_traffic_models_and_whether_it_is_busy(fake_azureml, production):
    fake_azureml.add_endpoint("credit-risk", traffic={"credit-risk-v3": 20, "credit-risk-v2": 80}, state="Updating")
    fake_azureml.add_deployment("credit-risk", "credit-risk-v3", model=plan().model_uri, tags={MODEL_TAG: str(CREDIT)})
    fake_azureml.add_deployment(
        "credit-risk", "credit-risk-v2", model="azureml://registries/shared-registry/models/credit-risk/versions/2"
    )
    fake_azureml.add_deployment("credit-risk", "by-hand", model="azureml://workspaces/x/models/unknown")

    state = production.endpoint("credit-risk")

    assert dict(state.traffic) == {"credit-risk-v3": 20, "credit-risk-v2": 80}
    assert dict(state.models) == {"credit-risk-v3": "credit-risk:3", "credit-risk-v2": "credit-risk:2", "by-hand": None}
    assert state.busy
    assert production.endpoint("missing") is None


def test_set_traffic_starts_the_change_once_and_is_ready_when_applied(fake_azureml, production):
    fake_azureml.add_endpoint("credit-risk", traffic={"credit-risk-v2": 100})
    for version in ("2", "3"):
        fake_azureml.add_deployment(
            "credit-risk",
            f"credit-risk-v{version}",
            model=f"azureml://registries/shared-registry/models/credit-risk/versions/{version}",
        )
    desired = {"credit-risk-v3": 20, "credit-risk-v2": 80}

    assert production.set_traffic("credit-risk", desired) is Progress.PENDING
    assert fake_azureml.endpoint("credit-risk")["properties"]["traffic"] == desired
    assert production.set_traffic("credit-risk", desired) is Progress.PENDING  # still updating: no second PUT
    fake_azureml.finish("credit-risk")
    assert production.set_traffic("credit-risk", desired) is Progress.READY
    assert fake_azureml.count("PUT") == 1


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


def test_production_may_live_in_another_subscription(fake_azureml):
    other = "99999999-2222-4333-8444-555555555555"
    settings = Settings.from_env({**AZUREML_ENV, "PRODUCTION_SUBSCRIPTION_ID": other})
    backend = AzureMLBackend(settings, retry_total=0)

    assert backend.production.endpoint("credit-risk") is None

    assert fake_azureml.requests and all(f"/subscriptions/{other}/" in r.url for r in fake_azureml.requests)
    assert settings.production_workspace_id.startswith(f"/subscriptions/{other}/")


def test_a_failure_message_is_capped_and_redacted_before_it_is_kept(fake_azureml, azureml_backend):
    fake_azureml.publish_async_operation = True
    fake_azureml.publish_polls = 0
    fake_azureml.publish_outcome = "Failed"
    fake_azureml.publish_error = "x" * 100_000 + " read with sig=c2VjcmV0c2lnbmF0dXJl&se=2030 and failed"
    handle = azureml_backend.registry.start_copy(staged(fake_azureml, azureml_backend))

    status = azureml_backend.registry.copy_status(handle)

    assert len(status.message) <= 4096 and status.message.endswith("and failed")
    assert "c2VjcmV0c2lnbmF0dXJl" not in status.message


def test_azure_core_logs_no_request_at_information(fake_azureml, azureml_backend, caplog):
    """azure-core's HTTP logging policy logs every request's headers at INFO, which the host would ship to
    Application Insights; the adapters lower it to warnings."""
    caplog.set_level(logging.INFO)  # the root logger, as the Functions host's worker sets it

    azureml_backend.registry.get(CREDIT)
    fake_azureml.fail_next("GET", "/models/credit-risk/versions/3", 500)
    with pytest.raises(HttpResponseError):
        azureml_backend.registry.get(CREDIT)

    assert fake_azureml.count() >= 3
    http_logs = [r for r in caplog.records if r.name.startswith("azure.core.pipeline.policies.http_logging")]
    assert http_logs == []
    assert logging.getLogger("azure.core.pipeline.policies.http_logging_policy").getEffectiveLevel() == logging.WARNING


def test_without_the_adapter_azure_core_would_log_each_request(fake_azureml, azureml_backend, caplog):
    """The check above can fail: with the policy's logger at INFO (the root's level in the worker, which it would
    inherit untouched), the same call logs its request."""
    logger = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        caplog.set_level(logging.INFO)
        azureml_backend.registry.get(CREDIT)
    finally:
        logger.setLevel(level)
    assert any(r.name == logger.name and "Request URL" in r.getMessage() for r in caplog.records)
