"""Benchmarks: cold-start import cost, Azure ML requests per event, and local event throughput.

    python benchmarks/run.py            (or: make bench)

Each figure says what was measured and how. Nothing here is a test: it prints, it does not assert.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IMPORT_RUNS = 15
BURST = 1_000


def import_seconds(module: str) -> float:
    """Wall time of one import in a fresh interpreter, measured inside it (interpreter start-up excluded)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(result.stdout)


def bench_import() -> None:
    baseline, app = [], []
    for _ in range(IMPORT_RUNS):  # interleaved, so a noisy moment hits both sides
        baseline.append(import_seconds("azure.functions"))
        app.append(import_seconds("function_app"))
    base_median, app_median = statistics.median(baseline), statistics.median(app)
    first_call = statistics.median(
        import_seconds("function_app, promotion.service, promotion.wiring, promotion.adapters.local") for _ in range(5)
    )
    ai_ml = statistics.median(import_seconds("azure.ai.ml") for _ in range(3))
    print("(a) cold-start import cost, median of", IMPORT_RUNS, "fresh interpreters each")
    print(f"    import azure.functions   {base_median * 1000:7.1f} ms")
    print(f"    import function_app      {app_median * 1000:7.1f} ms")
    print(f"    ratio                    {app_median / base_median:7.2f}   (target <= 1.3)")
    print(
        f"    the first invocation then imports the service layer: {(first_call - app_median) * 1000:.1f} ms more, "
        "once per process"
    )
    print(f"    for scale: import azure.ai.ml alone takes {ai_ml * 1000:.0f} ms; only the azureml adapter imports it")


def bench_requests_per_event() -> None:
    from benchmarks.azureml_requests import measure

    print("\n(b) Azure ML HTTP requests per handled event, counted by the HTTP-level fake, warm process")
    for case, count, target in measure():
        print(f"    {case:<28} {count:3d}   (target <= {target})")


def bench_local_throughput() -> None:
    import azure.functions as func

    from function_app import app
    from promotion import wiring
    from promotion.adapters.local import LocalBackend
    from promotion.domain import ModelRef, ModelVersion

    sample = ROOT / "samples" / "models" / "taxi-fare"
    with tempfile.TemporaryDirectory() as root:
        os.environ.update(
            PROMOTION_BACKEND="local",
            PROMOTION_STATE_STORE="sqlite",
            PROMOTION_LOCAL_ROOT=root,
            PROMOTION_POLICY_FILE=str(ROOT / "promotion-policy.json"),
        )
        wiring.reset()
        settings = wiring.settings()
        backend = LocalBackend(settings)
        handler = {f.get_function_name(): f for f in app.get_functions()}["on_model_registered"].get_user_function()
        events = []
        for number in range(BURST):
            ref = ModelRef(f"model-{number:04d}", "1")
            tags = {"stage": "candidate", "accuracy": "0.9" if number % 2 else "0.5"}  # half qualify
            backend.staging.register(ModelVersion(ref, "mlflow_model", tags), sample)
            events.append(
                func.EventGridEvent(
                    id=f"event-{number}",
                    data={"ModelName": ref.name, "ModelVersion": 1},
                    topic=settings.staging_workspace_id,
                    subject=f"models/{ref}",
                    event_type="Microsoft.MachineLearningServices.ModelRegistered",
                    event_time=datetime.now(timezone.utc),
                    data_version="",
                )
            )
        print(f"\n(c) local backend, a burst of {BURST} events through on_model_registered, one process, SQLite store")
        for label, burst in (("first delivery (half copied)", events), ("redelivery of the same burst", events)):
            start = time.perf_counter()
            for event in burst:
                handler(event)
            elapsed = time.perf_counter() - start
            print(f"    {label:<30} {BURST / elapsed:8.0f} events/s   ({elapsed:.2f} s)")
        print(f"    registry now holds {len(backend.registry.list())} copies")


if __name__ == "__main__":
    bench_import()
    bench_requests_per_event()
    bench_local_throughput()
