"""Azurite for tests that need Azure Storage: reuse one that already listens, or run one for the session.

CI must run these tests, so a missing or broken Azurite fails them with the reason; it never skips them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Exactly this: azure-data-tables refuses the shortcut with a trailing ';'.
CONNECTION = "UseDevelopmentStorage=true"
PORTS = {"blob": 10000, "queue": 10001, "table": 10002}
START_TIMEOUT_SECONDS = 30
# No --location: Azurite 3.35 refuses it together with --inMemoryPersistence, so the work folder is its cwd.
COMMAND = ["--yes", "azurite@3", "--silent", "--inMemoryPersistence", "--skipApiVersionCheck", "--disableTelemetry"]


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else "(no output)"


def _stop(process: subprocess.Popen) -> None:
    # npx runs Azurite as a grandchild, so signal the whole process group we created for it.
    stop = (lambda sig: os.killpg(process.pid, sig)) if hasattr(os, "killpg") else (lambda sig: process.kill())
    try:
        stop(signal.SIGTERM)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        stop(getattr(signal, "SIGKILL", signal.SIGTERM))
        process.wait(timeout=10)
    except ProcessLookupError:
        pass  # already gone


@pytest.fixture(scope="session")
def azurite_connection(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The connection string of an Azurite answering on 127.0.0.1:10000-10002."""
    up = {name: _listening(port) for name, port in PORTS.items()}
    if all(up.values()):
        yield CONNECTION  # a developer's or CI's own Azurite: use it, leave it running
        return
    if any(up.values()):
        pytest.fail(
            f"Azure Storage ports half taken ({', '.join(f'{n} {PORTS[n]}: {up[n]}' for n in PORTS)}): "
            "stop whatever holds them or start a full Azurite"
        )
    npx = shutil.which("npx")
    if npx is None:
        pytest.fail("Azurite is not running and npx is not installed: install Node.js 18+ or run `npx azurite`")
    workdir = tmp_path_factory.mktemp("azurite")
    log = workdir / "azurite.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [npx, *COMMAND], cwd=workdir, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not all(_listening(port) for port in PORTS.values()):
            if process.poll() is not None:
                pytest.fail(f"Azurite exited with code {process.returncode}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"Azurite did not listen on {sorted(PORTS.values())} within {START_TIMEOUT_SECONDS}s:\n{_tail(log)}"
                )
            time.sleep(0.2)
        yield CONNECTION
    finally:
        _stop(process)


@pytest.fixture
def azurite_table_name() -> str:
    """A table of its own for each test (table names: a letter, then letters and digits)."""
    return f"t{uuid.uuid4().hex}"
