"""The MLflow model folder the tests register: the original notebook's model when ../shared is beside the
checkout (as in CI), else the project's own sample, so a plain clone runs the same tests."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_SEED = ROOT.parent / "shared" / "fixtures" / "seed-mlflow-model"
MLFLOW_MODEL = _SEED if (_SEED / "MLmodel").is_file() else ROOT / "samples" / "models" / "taxi-fare"
