"""Azure ML HTTP requests per handled ModelRegistered event, counted by the HTTP-level fake of Azure ML.

The real azure-ai-ml SDK and the real DefaultAzureCredential run against tests/fakes/azureml_http.py, in a
warm process: one event is handled first, so the per-process set-up (token, workspace GET for the staging
GUID, registry discovery) is paid before counting. The import answers 202 and completes at its first poll.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

from promotion import service
from promotion.adapters.azureml import AzureMLBackend
from promotion.adapters.sqlite import SqlitePromotionStore
from promotion.events import MODEL_REGISTERED
from promotion.policy import Policy
from promotion.settings import Settings
from tests.fakes.azureml_http import MANAGED_IDENTITY_ENV, OTHER_CREDENTIAL_VARIABLES, FakeAzureML
from tests.fakes.fixtures import AZUREML_ENV

ROOT = Path(__file__).resolve().parents[1]
CANDIDATE = {"type": "mlflow_model", "tags": {"stage": "candidate", "accuracy": "0.91"}}


def measure() -> list[tuple[str, int, int]]:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in OTHER_CREDENTIAL_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update(MANAGED_IDENTITY_ENV)
    settings = Settings.from_env(AZUREML_ENV)
    policy = Policy.load(ROOT / "promotion-policy.json")
    with tempfile.TemporaryDirectory() as folder, FakeAzureML(settings) as fake:
        backend = AzureMLBackend(settings)
        store = SqlitePromotionStore(Path(folder) / "promotions.sqlite3")

        def handle(name: str) -> int:
            fake.reset_log()
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
            )
            return fake.count()

        fake.add_workspace_model("warm-up", 1, **CANDIDATE)
        handle("warm-up")

        fake.add_workspace_model("new-model", 1, **CANDIDATE)
        copy = handle("new-model")
        duplicate = handle("new-model")
        fake.add_workspace_model("weak-model", 1, type="mlflow_model", tags={"stage": "candidate", "accuracy": "0.5"})
        refused = handle("weak-model")
    return [("duplicate", duplicate, 1), ("non-qualifying", refused, 2), ("new qualifying copy", copy, 5)]
