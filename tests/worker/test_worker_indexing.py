"""The app as the Azure Functions Python worker sees it: shipped files only, deployed packages only, Python 3.13.

In-process tests import the app from the repository, with the dev dependencies and azure-functions 1.x. The host
on Python 3.13+ runs azure-functions-runtime instead, in an environment built from requirements.txt alone, on the
files `func azure functionapp publish` ships (the repository less .funcignore). Its indexing resolves every
annotation with typing.get_type_hints and checks it against the binding, and it fails a whole app on one bad
function. tests/worker/index_app.py runs that indexing in a subprocess; these tests check the shipped app passes
it, and plant known bugs in copies to show each one is caught.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

RUNTIME_PIN = "azure-functions-runtime==1.3.0"
ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-worker"
STAMP = VENV / "promotion-worker.stamp"
SCRIPT = Path(__file__).with_name("index_app.py")
SAMPLE_EVENTS = ROOT / "samples" / "model-registered.eventgrid.json"
BUILD_TIMEOUT_SECONDS = 1200
WORKER_TIMEOUT_SECONDS = 120
HARNESS_FAILED = 3  # index_app.py's exit code when the harness itself broke, as opposed to the worker refusing


# ------------------------------------------------------------------------------------------------
# .funcignore, the way Core Tools reads it
# ------------------------------------------------------------------------------------------------

# Core Tools skips these wherever they are, before .funcignore is read (FileSystemHelpers.GetLocalFiles).
ALWAYS_SKIPPED_DIRECTORIES = {".git", ".vscode"}
ALWAYS_SKIPPED_FILES = {".funcignore", ".gitignore", "local.settings.json", "project.lock.json"}
_REGEX_SPECIALS = re.compile(r"[\-\[\]/{}()+?.\\^$|]")


class FuncIgnore:
    """Core Tools' GitIgnoreParser (a port of codemix/gitignore-parser), which is gitignore-like, not gitignore.

    Each pattern becomes a regex anchored at the start of the file's path relative to the app root and not at
    its end: `tests` also drops `tests_x.py`, `.venv` also drops `.venv-worker/`, and `__pycache__` or `*.pyc`
    match only at the root. `**` is `.+`, `*` is `[^/]+`, `?` and `[...]` are literal, one leading `/` is dropped,
    and a file is shipped when a `!` pattern matches it or no other pattern does.
    """

    def __init__(self, text: str | None) -> None:
        positive: list[str] = []
        negative: list[str] = []
        for raw in (text or "").split("\n"):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            if negated:
                line = line[1:]
            if line.startswith("/"):
                line = line[1:]
            (negative if negated else positive).append(line)
        self._positive = self._compile(positive)
        self._negative = self._compile(negative)

    @staticmethod
    def _compile(patterns: list[str]) -> re.Pattern[str] | None:
        if not patterns:
            return None
        prepared = [
            _REGEX_SPECIALS.sub(lambda m: "\\" + m.group(0), p).replace("**", "(.+)").replace("*", "([^\\/]+)")
            for p in sorted(patterns)
        ]
        return re.compile("^((" + ")|(".join(prepared) + "))")

    def accepts(self, path: str) -> bool:
        if self._negative is not None and self._negative.match(path):
            return True
        return self._positive is None or not self._positive.match(path)

    def drops_tree(self, directory: str) -> bool:
        """Every file under `directory` is dropped (the patterns are prefix matches), so it need not be walked."""
        return self._negative is None and self._positive is not None and bool(self._positive.match(directory + "/"))


def shipped_files(root: Path) -> list[str]:
    """The paths, relative to root with `/`, of the files Core Tools would put in the deployment package."""
    funcignore = root / ".funcignore"
    rules = FuncIgnore(funcignore.read_text(encoding="utf-8") if funcignore.is_file() else None)
    files: list[str] = []
    for current, directories, names in os.walk(root):
        relative = Path(current).relative_to(root).as_posix()
        prefix = "" if relative == "." else relative + "/"
        directories[:] = sorted(
            d for d in directories if d.lower() not in ALWAYS_SKIPPED_DIRECTORIES and not rules.drops_tree(prefix + d)
        )
        for name in sorted(names):
            if name.lower() not in ALWAYS_SKIPPED_FILES and rules.accepts(prefix + name):
                files.append(prefix + name)
    return files


def ship(destination: Path) -> Path:
    """Copy the app as a deployment ships it."""
    for relative in shipped_files(ROOT):
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, target)
    return destination


# ------------------------------------------------------------------------------------------------
# Python 3.13 and the deployment's virtual environment
# ------------------------------------------------------------------------------------------------


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _minor_version(python: str) -> str | None:
    try:
        probe = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return probe.stdout.strip() if probe.returncode == 0 else None


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.parent.name))


def find_python313() -> str:
    explicit = os.environ.get("PROMOTION_PYTHON313", "").strip()
    if explicit:
        if _minor_version(explicit) != "3.13":
            pytest.fail(f"PROMOTION_PYTHON313={explicit!r} is not a working Python 3.13 interpreter", pytrace=False)
        return explicit
    candidates = []
    on_path = shutil.which("python3.13")
    if on_path:
        candidates.append(on_path)  # may be a pyenv shim for a version that is not selected: probe it
    pyenv = sorted(Path.home().glob(".pyenv/versions/3.13*/bin/python"), key=_version_key, reverse=True)
    candidates.extend(str(path) for path in pyenv)
    for candidate in candidates:
        if _minor_version(candidate) == "3.13":
            return candidate
    _unavailable(
        "Python 3.13 is needed to index the app the way the Functions Python worker does (azure-functions-runtime)"
        f"; none found (tried PROMOTION_PYTHON313, python3.13 on PATH, ~/.pyenv/versions/3.13*: {candidates or '-'})"
        ". Install it, e.g. `pyenv install 3.13`, or point PROMOTION_PYTHON313 at one."
    )
    raise AssertionError("unreachable")


def requirements_digest() -> str:
    digest = hashlib.sha256((ROOT / "requirements.txt").read_bytes())
    digest.update(b"\0" + RUNTIME_PIN.encode())
    return digest.hexdigest()


def _run_build_step(command: list[str]) -> None:
    try:
        step = subprocess.run(
            command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS, env=_clean_env(), cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"building {VENV.name} timed out after {BUILD_TIMEOUT_SECONDS} s: {command}", pytrace=False)
    if step.returncode != 0:
        output = (step.stdout + step.stderr)[-6000:]
        pytest.fail(f"building {VENV.name} failed ({' '.join(command)}):\n{output}", pytrace=False)


def ensure_worker_venv(python313: str) -> Path:
    """<repo>/.venv-worker with requirements.txt and the runtime only; rebuilt when either changes."""
    venv_python = VENV / "bin" / "python"
    wanted = requirements_digest()
    lock_path = Path(tempfile.gettempdir()) / f"promotion-venv-worker-{hashlib.sha256(bytes(ROOT)).hexdigest()[:12]}"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time, even across pytest processes
        current = STAMP.read_text().strip() if STAMP.is_file() else None
        if current == wanted and _minor_version(str(venv_python)) == "3.13":
            return venv_python
        shutil.rmtree(VENV, ignore_errors=True)
        _run_build_step([python313, "-m", "venv", str(VENV)])
        _run_build_step(
            [
                str(venv_python),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--quiet",
                "-r",
                str(ROOT / "requirements.txt"),
                RUNTIME_PIN,
            ]
        )
        STAMP.write_text(wanted + "\n")
    return venv_python


# ------------------------------------------------------------------------------------------------
# Running the worker's indexing
# ------------------------------------------------------------------------------------------------


def _clean_env(**extra: str) -> dict[str, str]:
    """The machine's basics only: nothing from this test process's Python or the app's settings leaks in."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env.update({name: value for name, value in os.environ.items() if name.startswith("PIP_")})
    env.update(extra)
    return env


@dataclass
class WorkerRun:
    exit_code: int
    result: dict[str, Any]
    log: str

    @property
    def error(self) -> str:
        return self.result.get("error", "")


def run_worker(python: Path, app: Path, *args: str, **env: str) -> WorkerRun:
    settings = {
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "FUNCTIONS_EXTENSION_VERSION": "~4",
        "AzureWebJobsScriptRoot": str(app),
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    }
    try:
        process = subprocess.run(
            [str(python), "-I", str(SCRIPT), *args],
            cwd=app,
            env=_clean_env(**settings, **env),
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired as timeout:
        pytest.fail(f"the worker's indexing took over {WORKER_TIMEOUT_SECONDS} s:\n{timeout.stderr}", pytrace=False)
    try:
        result = json.loads(process.stdout)
    except ValueError:
        pytest.fail(f"index_app.py gave no JSON (exit {process.returncode}):\n{process.stderr[-6000:]}", pytrace=False)
    if process.returncode == HARNESS_FAILED:
        pytest.fail(f"index_app.py itself failed: {result.get('error')}\n{process.stderr[-6000:]}", pytrace=False)
    return WorkerRun(process.returncode, result, process.stderr)


def assert_refused(run: WorkerRun, stage: str, *fragments: str) -> None:
    assert run.exit_code == 1 and run.result["ok"] is False, f"the worker accepted the planted bug:\n{run.log[-3000:]}"
    assert run.result["stage"] == stage, run.result
    for fragment in fragments:
        assert fragment in run.error, f"{fragment!r} is not in the worker's message: {run.error}"


def plant(app: Path, relative: str, old: str, new: str) -> None:
    """A textual edit of the shipped copy that fails loudly when the source it targets has changed."""
    path = app / relative
    assert path.is_file(), f"{relative} is not in the shipped app: update this planted bug"
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{relative} no longer contains {old!r}: update this planted bug"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _bindings(function: Any) -> dict[str, tuple[str, str]]:
    bindings = json.loads(function.get_function_json())["bindings"]
    return {b["name"]: (b["type"], b["direction"].lower()) for b in bindings}


def _event_file(directory: Path) -> Path:
    [event] = json.loads(SAMPLE_EVENTS.read_text(encoding="utf-8"))  # the host sends each array element alone
    path = directory / "event.json"
    path.write_text(json.dumps(event), encoding="utf-8")
    return path


def invoke_on_model_registered(python: Path, app: Path, work: Path) -> WorkerRun:
    """One Event Grid delivery of the sample event, on the local backend (no Azure), through the runtime."""
    return run_worker(
        python,
        app,
        "--invoke",
        "on_model_registered",
        "--json-input",
        f"event={_event_file(work)}",
        PROMOTION_BACKEND="local",
        PROMOTION_STATE_STORE="sqlite",
        PROMOTION_LOCAL_ROOT=str(work / "state"),
    )


# ------------------------------------------------------------------------------------------------
# The shipped app
# ------------------------------------------------------------------------------------------------


def test_funcignore_is_read_the_way_core_tools_reads_it():
    rules = FuncIgnore("# comment\ntests\n/.venv\n__pycache__\n*.pyc\nbuild/**/x.txt\n!tests/keep.me\n")
    dropped = [
        "tests/unit/a.py",
        "tests_x.py",
        ".venv/bin/python",
        ".venv-worker/bin/python",
        "__pycache__/a.pyc",
        "a.pyc",
        "build/a/b/x.txt",
    ]
    shipped = ["promotion/a.py", "promotion/__pycache__/a.pyc", "promotion/a.pyc", "tests/keep.me", "x/tests/a.py"]
    assert [path for path in dropped if rules.accepts(path)] == []
    assert [path for path in shipped if not rules.accepts(path)] == []
    assert FuncIgnore(None).accepts("anything/at/all.py")


def test_the_deployment_leaves_out_tests_and_tools():
    files = shipped_files(ROOT)
    assert {"function_app.py", "host.json", "requirements.txt", "promotion/triggers/events.py"} <= set(files)
    leaked = [f for f in files if f.split("/")[0] in {"tests", ".venv", VENV.name, ".git", "requirements-dev.txt"}]
    assert leaked == [], f"the deployment package would carry {leaked[:10]}"


def test_the_worker_indexes_the_shipped_app(indexed, in_process):
    assert indexed.exit_code == 0 and indexed.result["ok"], f"the worker refused the app: {indexed.error}"
    functions = indexed.result["functions"]
    assert indexed.result["python"].startswith("3.13.")
    assert indexed.result["azure-functions-runtime"] == RUNTIME_PIN.split("==")[1]
    # The runtime's own indexing ran, in the worker's order.
    assert indexed.result["calls"] == [
        "load_binding_registry",
        "index_function_app:function_app.py",
        *(f"add_indexed_function:{name}" for name in functions),
    ]
    assert sorted(functions) == sorted(in_process)
    for name, function in in_process.items():
        expected = _bindings(function)
        triggers = [binding_type for binding_type, _ in expected.values() if binding_type.endswith("Trigger")]
        assert [functions[name]["trigger"]] == triggers, name
        worker = {binding: (b["type"], b["direction"]) for binding, b in functions[name]["bindings"].items()}
        assert worker == expected, name


def test_the_worker_invokes_on_model_registered(worker_python, shipped_app, tmp_path):
    """The control for the return-value test below: the same delivery succeeds on the shipped handler."""
    run = invoke_on_model_registered(worker_python, shipped_app, tmp_path)
    assert run.exit_code == 0 and run.result["ok"], f"the invocation failed: {run.error}\n{run.log[-3000:]}"
    assert run.result["invocation"]["status"] == "Success"
    state = tmp_path / "state"
    assert state.is_dir() and any(state.iterdir()), "the handler returned before it reached the promotion store"


# ------------------------------------------------------------------------------------------------
# Planted bugs: each passes in-process and is refused by the worker
# ------------------------------------------------------------------------------------------------

EVENT_HANDLER = "def on_model_registered(event: func.EventGridEvent) -> None:\n"


def test_a_trigger_type_imported_only_for_type_checking(worker_python, app_copy):
    events = "promotion/triggers/events.py"
    assert "from __future__ import annotations" in (app_copy / events).read_text(encoding="utf-8")
    plant(
        app_copy,
        events,
        "import azure.functions as func\n",
        "from typing import TYPE_CHECKING\n\nimport azure.functions as func\n\n"
        "if TYPE_CHECKING:\n    from azure.functions import EventGridEvent\n",
    )
    plant(app_copy, events, EVENT_HANDLER, EVENT_HANDLER.replace("func.EventGridEvent", "EventGridEvent"))
    run = run_worker(worker_python, app_copy)
    assert_refused(run, "worker_init_request", "NameError", "EventGridEvent")


def test_a_queue_trigger_annotated_as_an_http_request(worker_python, app_copy):
    plant(
        app_copy,
        "promotion/triggers/jobs.py",
        "def deploy_promotion(message: func.QueueMessage)",
        "def deploy_promotion(message: func.HttpRequest)",
    )
    run = run_worker(worker_python, app_copy)
    assert_refused(
        run, "worker_init_request", "cannot load the deploy_promotion function", "queueTrigger", "HttpRequest"
    )


def test_an_output_binding_of_a_dict(worker_python, app_copy):
    plant(app_copy, "promotion/triggers/api.py", "jobs: func.Out[str]", "jobs: func.Out[dict]")
    run = run_worker(worker_python, app_copy)
    assert_refused(run, "worker_init_request", "cannot load the approve_promotion function", "annotation dict")


@pytest.mark.parametrize("package", ["responses", "pytest"])
def test_app_code_importing_a_dev_only_package(worker_python, app_copy, package):
    assert package in (ROOT / "requirements-dev.txt").read_text(encoding="utf-8")
    plant(
        app_copy,
        "promotion/triggers/jobs.py",
        "import azure.functions as func\n",
        f"import azure.functions as func\nimport {package}  # noqa: F401\n",
    )
    run = run_worker(worker_python, app_copy)
    assert_refused(run, "worker_init_request", f"No module named '{package}'", "requirements.txt")


def test_app_code_importing_from_the_tests(worker_python, app_copy):
    assert (ROOT / "tests" / "models.py").is_file()  # so the import works in-process
    assert not (app_copy / "tests").exists()
    plant(
        app_copy,
        "promotion/triggers/events.py",
        "import azure.functions as func\n",
        "import azure.functions as func\n\nfrom tests.models import MLFLOW_MODEL  # noqa: F401\n",
    )
    run = run_worker(worker_python, app_copy)
    assert_refused(run, "worker_init_request", "No module named 'tests'")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (EVENT_HANDLER, EVENT_HANDLER + "    return 1\n"),
        ("\n    service.propagate(\n", "\n    return service.propagate(\n"),  # returns the Decision
    ],
    ids=["return-1", "return-the-decision"],
)
def test_an_event_grid_handler_that_returns_a_value(worker_python, app_copy, tmp_path, old, new):
    plant(app_copy, "promotion/triggers/events.py", old, new)
    run = invoke_on_model_registered(worker_python, app_copy, tmp_path)
    functions = run.result.get("functions", {})
    assert functions.get("on_model_registered", {}).get("has_return") is False, "indexing should accept it"
    assert_refused(run, "invocation_request", "RuntimeError", "without a $return binding", "non-None value")
