"""The fixtures of the worker tests: the deployment's Python 3.13 environment, the shipped app, and its index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.worker.test_worker_indexing import WorkerRun, ensure_worker_venv, find_python313, run_worker, ship


@pytest.fixture(scope="session")
def worker_python() -> Path:
    return ensure_worker_venv(find_python313())


@pytest.fixture(scope="session")
def shipped_app(tmp_path_factory) -> Path:
    return ship(tmp_path_factory.mktemp("shipped") / "wwwroot")


@pytest.fixture
def app_copy(tmp_path) -> Path:
    """A copy of the shipped app of this test's own, to plant a bug in."""
    return ship(tmp_path / "wwwroot")


@pytest.fixture(scope="session")
def indexed(worker_python, shipped_app) -> WorkerRun:
    return run_worker(worker_python, shipped_app)


@pytest.fixture(scope="session")
def in_process() -> dict[str, Any]:
    from tests.functions.conftest import FUNCTIONS  # app.get_functions() may run only once per process

    return FUNCTIONS
