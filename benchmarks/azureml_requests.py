"""Azure ML HTTP requests, counted by the HTTP-level fake of Azure ML (tests/fakes/azureml_http.py).

The real SDKs (azure-mgmt-core, azure-ai-ml) and the real DefaultAzureCredential run against the fake, in a warm
process: one event is handled first, so the per-process set-up (the token, the lookup of the registry's resource
group) is paid before counting. The fake's copy takes several polls and its answers carry no Retry-After, the
service's worst case for a client that waits.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from promotion import service
from promotion.adapters.azureml import AzureMLBackend
from promotion.adapters.sqlite import SqlitePromotionStore
from promotion.domain import ModelRef
from promotion.events import MODEL_REGISTERED
from promotion.policy import Policy
from promotion.settings import Settings
from tests.fakes.azureml_http import MANAGED_IDENTITY_ENV, OTHER_CREDENTIAL_VARIABLES, FakeAzureML
from tests.fakes.fixtures import AZUREML_ENV

ROOT = Path(__file__).resolve().parents[1]


def _now() -> datetime:
    """The benchmarks' clock: time is an input to every use case."""
    return datetime.now(timezone.utc)


CANDIDATE = {"type": "mlflow_model", "tags": {"stage": "candidate", "accuracy": "0.91"}}
COPY_POLLS = 5


@contextmanager
def azure_world() -> Iterator[tuple[FakeAzureML, AzureMLBackend, SqlitePromotionStore, Settings]]:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in OTHER_CREDENTIAL_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update(MANAGED_IDENTITY_ENV)
    settings = Settings.from_env(AZUREML_ENV)
    with tempfile.TemporaryDirectory() as folder, FakeAzureML(settings) as fake:
        fake.publish_polls = COPY_POLLS
        backend = AzureMLBackend(settings)
        yield fake, backend, SqlitePromotionStore(Path(folder) / "promotions.sqlite3"), settings


def event_path() -> list[tuple[str, int, str]]:
    """Requests per event in the handler, and per run of the timer that finishes the copy."""
    policy = Policy.load(ROOT / "promotion-policy.json")
    with azure_world() as (fake, backend, store, settings):

        def handle(name: str) -> tuple[int, float]:
            fake.reset_log()
            started = time.perf_counter()
            service.propagate(
                {
                    "id": f"event-{name}",
                    "topic": settings.staging_workspace_id,
                    "eventType": MODEL_REGISTERED,
                    "data": {"ModelName": name, "ModelVersion": 1},
                },
                staging_workspace_id=settings.staging_workspace_id,
                staging=backend.staging,
                registry=backend.registry,
                load_policy=lambda: policy,
                store=store,
                source="benchmark",
                clock=_now,
            )
            return fake.count(), time.perf_counter() - started

        def advance() -> int:
            fake.reset_log()
            service.advance_registry_copies(registry=backend.registry, store=store, source="benchmark", clock=_now)
            return fake.count()

        fake.add_workspace_model("warm-up", 1, **CANDIDATE)
        handle("warm-up")
        fake.run_publishes()
        advance()

        fake.add_workspace_model("new-model", 1, **CANDIDATE)
        start, elapsed = handle("new-model")
        polls_in_handler = fake.count("GET", "mfeOperation")
        runs = [advance() for _ in range(COPY_POLLS + 1)]
        duplicate, _ = handle("new-model")
        fake.add_workspace_model("weak-model", 1, type="mlflow_model", tags={"stage": "candidate", "accuracy": "0.5"})
        refused, _ = handle("weak-model")
    return [
        ("duplicate event", duplicate, "<= 1"),
        ("non-qualifying event", refused, "<= 2"),
        ("new qualifying model: start the copy", start, "<= 3"),
        ("  of which status polls", polls_in_handler, "0"),
        (f"  handler time, copy of {COPY_POLLS} polls, no Retry-After", round(elapsed * 1000), "ms"),
        ("timer run while the copy runs", runs[0], "1"),
        ("timer run that finishes it (poll, read, tag)", runs[-1], "<= 3"),
    ]


def reconcile(names: int = 10, versions: int = 10, new_per_name: int = 1, page_size: int = 100) -> dict[str, Any]:
    """One real reconcile over names x versions staging versions, `new_per_name` of each name missing."""
    policy = Policy.load(ROOT / "promotion-policy.json")
    with azure_world() as (fake, backend, store, settings):
        fake.page_size = page_size
        for n in range(names):
            for v in range(1, versions + 1):
                fake.add_workspace_model(f"model-{n}", v, **CANDIDATE)
                if v <= versions - new_per_name:
                    lineage = {
                        "promotion.source_workspace": settings.staging_workspace_id,
                        "promotion.source_model": f"model-{n}:{v}",
                    }
                    fake.add_registry_model(f"model-{n}", v, tags=lineage)
        backend.registry.get(ModelRef("warm-up", "1"))
        fake.reset_log()
        started = time.perf_counter()
        report = service.reconcile(
            staging_workspace_id=settings.staging_workspace_id,
            staging=backend.staging,
            registry=backend.registry,
            policy=lambda: policy,
            store=store,
            dry_run=False,
            clock=_now,
        )
        elapsed = time.perf_counter() - started
        pages = -(-names // page_size)
        version_pages = -(-versions // page_size)
        return {
            "versions": names * versions,
            "names": names,
            "copies": len(report.copied),
            "requests": fake.count(),
            "budget": pages + 2 * names * version_pages + 2 * len(report.copied),
            "seconds": elapsed,
        }


def copy_options() -> list[tuple[str, int, int, str]]:
    """The ways to copy a workspace model into a registry, each measured on the same fake: requests to start the
    copy, requests until it is known to be done, and whether the call blocks while the service copies."""
    import logging

    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import WorkspaceModelReference

    logging.getLogger("azure.ai.ml").setLevel(logging.ERROR)  # share() warns that it is experimental, on every call
    with azure_world() as (fake, backend, store, settings):
        fake.import_polls = COPY_POLLS  # the data-plane import, which azure-ai-ml waits on
        results = []

        # (1) ARM ModelVersions_Publish, as this app sends it
        fake.add_workspace_model("arm-warm", 1, **CANDIDATE)
        backend.registry.start_copy(backend.staging.get(ModelRef("arm-warm", "1")))
        backend.registry.get(ModelRef("arm-warm", "1"))  # the registry's resource group, once per process
        fake.add_workspace_model("arm", 1, **CANDIDATE)
        model = backend.staging.get(ModelRef("arm", "1"))
        fake.reset_log()
        handle = backend.registry.start_copy(model)
        started = fake.count()
        while backend.registry.copy_status(handle).progress.value == "running":
            pass
        backend.registry.tag(model.ref, {"promotion.event_id": "x"}, None)
        results.append(("ARM ModelVersions_Publish (this app)", started, fake.count(), "no: returns at once"))

        # (2) the public MLClient: the registry client's models.create_or_update(WorkspaceModelReference)
        registry_client = MLClient(backend.credential, registry_name=settings.registry_name)
        source = f"azureml://locations/{fake.location}/workspaces/{fake.staging.guid}/models"

        def import_by_reference(name: str) -> None:
            fake.add_workspace_model(name, 1, **CANDIDATE)
            fake.reset_log()
            registry_client.models.create_or_update(
                WorkspaceModelReference(name=name, version="1", asset_id=f"{source}/{name}/versions/1")
            )

        try:
            import_by_reference("sdk-with-body")
            crash = ""
        except AttributeError as error:  # azure-ai-ml goes on to upload files it does not have
            crash = f"; raises {type(error).__name__} after the copy when the import answers a body"
        fake.import_returns_body = False
        import_by_reference("sdk-warm")
        import_by_reference("sdk")
        total = fake.count()
        polls = fake.count("GET", "importOperations")
        results.append(
            (
                "MLClient models.create_or_update(WorkspaceModelReference)",
                total - polls,
                total,
                "yes: polls until done" + crash,
            )
        )

        # (3) models.share(), experimental
        workspace_client = MLClient(
            backend.credential,
            subscription_id=settings.subscription_id,
            resource_group_name=settings.staging_resource_group,
            workspace_name=settings.staging_workspace,
        )
        for name in ("share-warm", "share"):
            fake.add_workspace_model(name, 1, **CANDIDATE)
            fake.reset_log()
            workspace_client.models.share(
                name, "1", share_with_name=name, share_with_version="1", registry_name=settings.registry_name
            )
        total = fake.count()
        polls = fake.count("GET", "importOperations")
        results.append(("MLClient models.share() (experimental)", total - polls, total, "yes: polls until done"))
    return results


def drift(endpoints: int = 5, deployments: int = 3, unmanaged: int = 5) -> dict[str, Any]:
    """One real detect_drift run over `endpoints` endpoints the app deployed to (each with `deployments` deployed
    promotions, the newest live), next to `unmanaged` endpoints it never deployed to, with one deployment made by
    hand on the first endpoint. Budget: one endpoint listing, and one deployment listing per managed endpoint."""
    from datetime import datetime, timezone

    from promotion.domain import DEPLOYMENT_MODEL_TAG, HistoryEntry, Promotion, State
    from promotion.policy import ProductionRules

    at = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
    with azure_world() as (fake, backend, store, settings):
        for e in range(endpoints):
            endpoint = f"model-{e}-prod"
            live = f"model-{e}-v{deployments}"
            fake.add_endpoint(endpoint, traffic={live: 100})
            for v in range(1, deployments + 1):
                ref = ModelRef(f"model-{e}", str(v))
                name = f"model-{e}-v{v}"
                fake.add_deployment(
                    endpoint, name, model=settings.registry_model_uri(ref), tags={DEPLOYMENT_MODEL_TAG: str(ref)}
                )
                traffic = {live: 100} if v == deployments else {}
                history = (
                    HistoryEntry(at, "alice", "requested", {}),
                    HistoryEntry(at.replace(minute=v), "deploy_promotion", "deployed", {"traffic": traffic}),
                )
                store.add(
                    Promotion(
                        f"p-{e}-{v}",
                        ref,
                        State.DEPLOYED,
                        "alice",
                        at,
                        at,
                        deployment={"endpoint": endpoint, "deployment": name},
                        history=history,
                    )
                )
        for u in range(unmanaged):
            fake.add_endpoint(f"other-{u}", traffic={})
        fake.add_deployment("model-0-prod", "by-hand", model=settings.registry_model_uri(ModelRef("model-0", "99")))
        backend.production.online_endpoints()  # warm: the production client and its token, once per process
        fake.reset_log()
        started = time.perf_counter()
        report = service.detect_drift(
            store=store, deployer=backend.production, rules=ProductionRules(), source="benchmark", clock=lambda: at
        )
        elapsed = time.perf_counter() - started
        return {
            "endpoints": endpoints,
            "unmanaged": unmanaged,
            "deployments": endpoints * deployments + 1,
            "requests": fake.count(),
            "budget": 1 + endpoints,
            "findings": len(report.detected),
            "seconds": elapsed,
        }
