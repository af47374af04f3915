"""`python -m promotion`: promotion.cli.main(argv) in-process, and real subprocesses where what matters is what a
user's shell sees (one line on stderr, no traceback, the exit status, the working directory)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from promotion.cli import main
from promotion.domain import ModelRef
from tests.functions.conftest import POLICY, ROOT, SEED_MODEL, backend, share

EXIT_USAGE = 2


def run(capsys, *argv):
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def register(capsys, *extra, name="taxi-fare", version="1", path=SEED_MODEL, tags=("stage=candidate", "accuracy=0.9")):
    tag_args = [arg for tag in tags for arg in ("--tag", tag)]
    return run(
        capsys,
        "local",
        "register",
        "--name",
        name,
        "--version",
        version,
        "--path",
        path,
        *tag_args,
        "--property",
        "run=r1",
        "--description",
        "fares",
        *extra,
    )


def staged(capsys):
    return json.loads(run(capsys, "local", "list", "staging", "--json")[1])


def tree(folder: Path) -> dict[str, int]:
    """Every file under `folder` with its size and modification time: a write shows."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")} if folder.exists() else {}


def one_clear_line(err: str) -> None:
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ")


def subprocess_env(**changes: str | None) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def cli(*argv, cwd=ROOT, env=None, timeout=60):
    """`python -m promotion ...` in a subprocess, with the repository importable from any working directory."""
    env = subprocess_env() if env is None else env
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "promotion", *map(str, argv)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --- local register ---------------------------------------------------------------------------------


def test_register_prints_the_event_azure_ml_would_emit(local_app, capsys):
    code, out, _ = register(capsys)
    assert code == 0
    [event] = json.loads(out)
    assert event["eventType"] == "Microsoft.MachineLearningServices.ModelRegistered"
    assert event["topic"] == local_app.settings().staging_workspace_id
    assert event["subject"] == "models/taxi-fare:1"
    assert event["data"] == {
        "ModelName": "taxi-fare",
        "ModelVersion": "1",
        "ModelTags": {"stage": "candidate", "accuracy": "0.9"},
        "ModelProperties": {"run": "r1"},
    }


def test_register_defaults_to_mlflow_model_for_a_folder_with_an_mlmodel_file(local_app, capsys):
    assert (SEED_MODEL / "MLmodel").is_file()
    assert register(capsys)[0] == 0
    [model] = staged(capsys)
    assert model["type"] == "mlflow_model"


def test_register_defaults_to_custom_model_otherwise(local_app, capsys, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"\x00\x01")
    assert register(capsys, path=folder)[0] == 0
    single = tmp_path / "model.pkl"
    single.write_bytes(b"\x00")
    assert register(capsys, version="2", path=single)[0] == 0
    assert [model["type"] for model in staged(capsys)] == ["custom_model", "custom_model"]


def test_register_accepts_triton_model(local_app, capsys, tmp_path):
    folder = tmp_path / "triton"
    folder.mkdir()
    (folder / "config.pbtxt").write_text('name: "fare"')
    code, _, err = register(capsys, "--type", "triton_model", path=folder)
    assert code == 0, err
    assert staged(capsys)[0]["type"] == "triton_model"


def test_register_lists_triton_model_in_its_help(local_app, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["local", "register", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "triton_model" in out and "mlflow_model" in out and "custom_model" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--name", "bad/name", "--version", "1", "--path", SEED_MODEL], "invalid model name 'bad/name'"),
        (["--name", "m", "--version", "1/2", "--path", SEED_MODEL], "invalid model version"),
        (["--name", "m", "--version", "1", "--path", "/does/not/exist"], "path /does/not/exist does not exist"),
        (
            ["--name", "m", "--version", "1", "--path", SEED_MODEL / "MLmodel", "--type", "mlflow_model"],
            "no MLmodel",
        ),
        (["--name", "m", "--version", "1", "--path", SEED_MODEL, "--tag", "novalue"], "--tag 'novalue': expected"),
        (["--name", "m", "--version", "1", "--path", SEED_MODEL, "--property", "=x"], "--property '=x': expected"),
        (["--name", "m", "--version", "1", "--path", SEED_MODEL, "--notify", "localhost:7071"], "--notify"),
        (["--name", "m", "--version", "1", "--path", SEED_MODEL, "--notify", "ftp://host"], "--notify"),
        (["--name", "m", "--version", "1", "--path", SEED_MODEL, "--notify", "http://h/?q=1"], "--notify"),
    ],
)
def test_every_argument_is_checked_before_anything_is_written(local_app, capsys, argv, message):
    root = local_app.settings().local_root
    code, out, err = run(capsys, "local", "register", *argv)
    assert code == EXIT_USAGE and out == "" and message in err
    one_clear_line(err)
    assert staged(capsys) == []
    assert not (root / "workspaces" / "ws-staging" / "models").exists() or not any(
        (root / "workspaces" / "ws-staging" / "models").rglob("model.json")
    )


def test_a_bad_notify_url_leaves_the_version_free_for_the_corrected_retry(local_app, capsys, eventgrid_receiver):
    code, _, err = register(capsys, "--notify", "localhost:7071")
    assert code == EXIT_USAGE and "http://" in err
    code, _, err = register(capsys, "--notify", f"http://127.0.0.1:{eventgrid_receiver.port}")
    assert code == 0, err  # not "already exists"


def test_a_duplicate_version_is_refused(local_app, capsys):
    register(capsys)
    code, _, err = register(capsys)
    assert code == EXIT_USAGE and "taxi-fare:1 already exists" in err


def test_notify_posts_the_event_to_the_functions_host_webhook(local_app, capsys, eventgrid_receiver):
    code, out, err = register(capsys, "--notify", f"http://127.0.0.1:{eventgrid_receiver.port}/")
    assert code == 0 and "HTTP 200" in err
    [received] = eventgrid_receiver.requests
    assert received.path == "/runtime/webhooks/eventgrid?functionName=on_model_registered"
    assert received.headers["aeg-event-type"] == "Notification"
    assert received.headers["content-type"] == "application/json"
    assert json.loads(received.body) == json.loads(out)


def test_notify_failure_says_the_model_is_registered(local_app, capsys, eventgrid_receiver):
    eventgrid_receiver.down()
    code, _, err = register(capsys, "--notify", f"http://127.0.0.1:{eventgrid_receiver.port}")
    assert code == EXIT_USAGE and "the model is registered, but notifying" in err
    assert staged(capsys)[0]["version"] == "1"


# --- local tag and local list -----------------------------------------------------------------------


def test_tag_changes_the_tags_in_place_and_prints_no_event(local_app, capsys):
    register(capsys, tags=("stage=dev",))
    code, out, err = run(
        capsys,
        "local",
        "tag",
        "--name",
        "taxi-fare",
        "--version",
        "1",
        "--tag",
        "stage=candidate",
        "--tag",
        "owner=fares",
    )
    assert code == 0, err
    assert "eventType" not in out and "ModelRegistered" not in out
    assert out.strip() == "taxi-fare:1  stage=candidate owner=fares"
    [model] = staged(capsys)
    assert model["tags"] == {"stage": "candidate", "owner": "fares"} and model["properties"] == {"run": "r1"}
    assert local_app.store().events() == [] and local_app.store().decisions(ModelRef("taxi-fare", "1")) == []


def test_tag_of_an_unknown_model_exits_2(local_app, capsys):
    register(capsys)
    for name, version in (("taxi-fare", "2"), ("nothing", "1")):
        code, _, err = run(capsys, "local", "tag", "--name", name, "--version", version, "--tag", "a=b")
        assert code == EXIT_USAGE and f"{name}:{version}" in err
        one_clear_line(err)


def test_tag_checks_its_arguments(local_app, capsys):
    register(capsys)
    code, _, err = run(capsys, "local", "tag", "--name", "taxi-fare", "--version", "1", "--tag", "novalue")
    assert code == EXIT_USAGE and "--tag 'novalue'" in err


def test_list_prints_model_objects_and_tables(local_app, capsys):
    register(capsys)
    code, out, _ = run(capsys, "local", "list", "staging", "--json")
    [model] = json.loads(out)
    assert code == 0 and {k: model[k] for k in ("name", "version", "type", "tags", "properties", "description")} == {
        "name": "taxi-fare",
        "version": "1",
        "type": "mlflow_model",
        "tags": {"stage": "candidate", "accuracy": "0.9"},
        "properties": {"run": "r1"},
        "description": "fares",
    }
    code, out, _ = run(capsys, "local", "list", "staging")
    assert code == 0 and out.strip() == "taxi-fare:1  mlflow_model  stage=candidate accuracy=0.9"
    assert json.loads(run(capsys, "local", "list", "registry", "--json")[1]) == []
    assert json.loads(run(capsys, "local", "list", "production", "--json")[1]) == []


def test_list_production_shows_endpoints_and_traffic(local_app, capsys):
    from tests.functions.test_api import deployed

    deployed(local_app, "1")
    code, out, _ = run(capsys, "local", "list", "production")
    assert code == 0 and out.strip() == 'taxi-fare-prod  traffic={"taxi-fare-v1": 100}'
    code, out, _ = run(capsys, "local", "list", "registry")
    assert code == 0 and out.startswith("taxi-fare:1  mlflow_model")


# --- policy check and policy backtest ---------------------------------------------------------------


def test_policy_check_says_whether_a_model_qualifies(local_app, capsys):
    register(capsys)
    register(capsys, version="2", tags=("stage=dev", "accuracy=0.4"))
    code, out, _ = run(capsys, "policy", "check", "--name", "taxi-fare", "--version", "1")
    assert code == 0 and "taxi-fare:1 qualifies for the registry" in out
    assert out.startswith(f"policy promotion-policy.json ({local_app.policy().digest})")
    code, out, _ = run(capsys, "policy", "check", "--name", "taxi-fare", "--version", "2")
    assert code == 0 and "taxi-fare:2 does not qualify" in out
    assert "require_tags: tag 'stage' is 'dev', needs 'candidate'" in out
    assert "thresholds[0]: tag 'accuracy' = 0.4, needs >= 0.8" in out
    assert json.loads(run(capsys, "local", "list", "registry", "--json")[1]) == []


def test_policy_check_json(local_app, capsys):
    register(capsys, version="2", tags=("stage=dev", "accuracy=0.4"))
    code, out, _ = run(capsys, "policy", "check", "--name", "taxi-fare", "--version", "2", "--json")
    assert code == 0
    answer = json.loads(out)
    assert answer["model"] == "taxi-fare:2" and answer["qualifies"] is False
    assert len(answer["failed_rules"]) == 2


def test_policy_check_on_an_unknown_model_or_a_bad_policy_exits_2(local_app, capsys, tmp_path, monkeypatch):
    code, _, err = run(capsys, "policy", "check", "--name", "nope", "--version", "1")
    assert code == EXIT_USAGE and "nope:1 is not in the staging workspace" in err
    one_clear_line(err)
    broken = tmp_path / "policy.json"
    broken.write_text('{"share_to_registry": {"thresholds": [{"tag": "a", "op": "~", "value": 1}]}}')
    monkeypatch.setenv("PROMOTION_POLICY_FILE", str(broken))
    code, _, err = run(capsys, "policy", "check", "--name", "nope", "--version", "1")
    assert code == EXIT_USAGE and f"{broken}: share_to_registry.thresholds[0].op" in err
    one_clear_line(err)


def _candidate(tmp_path, threshold):
    document = json.loads(POLICY.read_text())
    document["share_to_registry"]["thresholds"] = [{"tag": "accuracy", "op": ">=", "value": threshold}]
    path = tmp_path / "candidate.json"
    path.write_text(json.dumps(document))
    return path


def test_policy_backtest_compares_a_candidate_and_writes_nothing(local_app, capsys, tmp_path):
    register(capsys, tags=("stage=candidate", "accuracy=0.9"))
    register(capsys, version="2", tags=("stage=candidate", "accuracy=0.85"))
    register(capsys, version="3", tags=("stage=dev", "accuracy=0.4"))
    root = local_app.settings().local_root
    before = tree(root)
    candidate = _candidate(tmp_path, 0.88)
    code, out, err = run(capsys, "policy", "backtest", "--policy", candidate)
    assert code == 0, err
    assert "3 staging versions" in out
    assert "current policy" in out and "2 admitted, 1 refused" in out
    assert "candidate policy" in out and "1 admitted, 2 refused" in out
    assert "taxi-fare:2: admitted -> refused" in out and "+ fails thresholds[0]" in out
    code, out, _ = run(capsys, "policy", "backtest", "--policy", candidate, "--json")
    report = json.loads(out)
    assert report["versions"] == 3
    assert report["admitted"] == {"current": 2, "candidate": 1}
    assert report["refused"] == {"current": 1, "candidate": 2}
    [change] = [c for c in report["changes"] if c["model"] == "taxi-fare:2"]
    assert change["admitted_by_current"] is True and change["admitted_by_candidate"] is False
    assert change["rules_now_failing"] and change["rules_now_passing"] == []
    assert tree(root) == before  # nothing written: no store, no copy


def test_policy_backtest_with_a_broken_candidate_exits_2(local_app, capsys, tmp_path):
    broken = tmp_path / "candidate.json"
    broken.write_text("{")
    code, _, err = run(capsys, "policy", "backtest", "--policy", broken)
    assert code == EXIT_USAGE and "not valid JSON" in err


# --- reconcile, copies, events ----------------------------------------------------------------------


def test_reconcile_dry_run_then_real_run_then_second_run(local_app, capsys):
    register(capsys, version="1")
    register(capsys, version="2", tags=("stage=dev", "accuracy=0.4"))
    share(local_app, ModelRef("taxi-fare", "3"))  # copied by its event already
    keys = {"copied", "already_in_registry", "not_qualified", "errors"}

    code, out, _ = run(capsys, "reconcile", "--dry-run", "--json")
    dry = json.loads(out)
    assert code == 0 and keys <= set(dry) and dry["dry_run"] is True
    assert dry["copied"] == ["taxi-fare:1"] and dry["already_in_registry"] == ["taxi-fare:3"]
    assert list(dry["not_qualified"]) == ["taxi-fare:2"]
    assert any("require_tags" in rule for rule in dry["not_qualified"]["taxi-fare:2"])
    assert dry["errors"] == {}
    assert local_app.store().copy(ModelRef("taxi-fare", "1")) is None  # the dry run changed nothing
    assert local_app.store().decisions(ModelRef("taxi-fare", "2")) == []

    code, out, _ = run(capsys, "reconcile", "--json")
    real = json.loads(out)
    assert code == 0 and real["dry_run"] is False and real["copied"] == ["taxi-fare:1"]
    assert real["already_in_registry"] == ["taxi-fare:3"] and list(real["not_qualified"]) == ["taxi-fare:2"]
    [decision] = local_app.store().decisions(ModelRef("taxi-fare", "1"))
    assert decision.event_id == f"reconcile:{real['run_id']}:taxi-fare:1"

    code, out, _ = run(capsys, "reconcile", "--json")
    second = json.loads(out)
    assert code == 0 and second["copied"] == [] and second["copying"] == ["taxi-fare:1"]
    assert len(local_app.store().copies()) == 2

    code, out, _ = run(capsys, "copies", "advance")
    assert code == 0 and out.strip() == "1 copied, 0 failed, 0 still copying, 0 errors"
    code, out, _ = run(capsys, "reconcile")
    assert code == 0 and "0 copy started, 2 already in the registry" in out


def test_reconcile_text_summary(local_app, capsys):
    register(capsys, version="1")
    code, out, _ = run(capsys, "reconcile", "--dry-run")
    assert code == 0 and "(dry run: nothing changed)" in out and "would copy: taxi-fare:1" in out
    assert "1 would copy, 0 already in the registry" in out


def test_copies_list_and_advance(local_app, capsys):
    register(capsys)
    run(capsys, "reconcile")
    code, out, _ = run(capsys, "copies", "list", "--json")
    [copy] = json.loads(out)
    assert code == 0 and copy["model"] == "taxi-fare:1" and copy["state"] == "copying"
    assert copy["started_by"].startswith("reconcile:")
    code, out, _ = run(capsys, "copies", "list")
    assert out.startswith("taxi-fare:1  copying  started by reconcile:")
    assert run(capsys, "copies", "advance")[0] == 0
    assert json.loads(run(capsys, "copies", "list", "--json")[1])[0]["state"] == "copied"
    assert backend(local_app).registry.get(ModelRef("taxi-fare", "1")).tags["promotion.source_model"] == "taxi-fare:1"


def test_events_list(local_app, capsys):
    share(local_app, ModelRef("taxi-fare", "1"))
    code, out, _ = run(capsys, "events", "list", "--json")
    [event] = json.loads(out)
    assert code == 0 and event["type"] == "ModelPromotion.CopiedToRegistry" and event["published_at"] is None
    assert event["subject"] == "models/taxi-fare/versions/1" and event["source"] == "local"
    code, out, _ = run(capsys, "events", "list")
    assert "ModelPromotion.CopiedToRegistry" in out and event["id"] in out and out.rstrip().endswith("unpublished")
    code, out, _ = run(capsys, "events", "list", "--unpublished", "--json")
    assert [e["id"] for e in json.loads(out)] == [event["id"]]


def test_events_publish_exits_2_when_publishing_is_off(local_app, capsys):
    code, out, err = run(capsys, "events", "publish")
    assert code == EXIT_USAGE and "PROMOTION_EVENTS_ENDPOINT is not set" in err
    one_clear_line(err)


def test_events_publish_sends_the_outbox(local_app, capsys, eventgrid_receiver, monkeypatch):
    share(local_app, ModelRef("taxi-fare", "1"))
    monkeypatch.setenv("PROMOTION_EVENTS_ENDPOINT", eventgrid_receiver.url)
    monkeypatch.setenv("PROMOTION_EVENTS_KEY", "key")
    code, out, _ = run(capsys, "events", "publish")
    assert code == 0 and out.strip() == "published 1 lifecycle events"
    assert len(eventgrid_receiver.delivered) == 1
    code, out, _ = run(capsys, "events", "list", "--unpublished", "--json")
    assert json.loads(out) == []
    listed = run(capsys, "events", "list")[1]
    assert "published 20" in listed


def test_events_publish_reports_an_unreachable_topic(local_app, capsys, eventgrid_receiver, monkeypatch):
    share(local_app, ModelRef("taxi-fare", "1"))
    monkeypatch.setenv("PROMOTION_EVENTS_ENDPOINT", eventgrid_receiver.url)
    monkeypatch.setenv("PROMOTION_EVENTS_KEY", "secret-key-value")
    eventgrid_receiver.answer(400)  # not retried
    code, out, err = run(capsys, "events", "publish")
    assert code == 1 and "published 0 lifecycle events" in out and "then publishing stopped" in err
    assert "secret-key-value" not in out + err


# --- paths ------------------------------------------------------------------------------------------

UNUSABLE_ROOT_COMMANDS = [
    ["local", "register", "--name", "m", "--version", "1", "--path", SEED_MODEL],
    ["local", "tag", "--name", "m", "--version", "1", "--tag", "a=b"],
    ["local", "list", "staging"],
    ["policy", "check", "--name", "m", "--version", "1"],
    ["policy", "backtest", "--policy", POLICY],
    ["reconcile"],
    ["reconcile", "--dry-run"],
    ["copies", "list"],
    ["events", "list"],
    ["demo"],
]


@pytest.mark.parametrize("where", ["a file", "under a file"])
@pytest.mark.parametrize("argv", UNUSABLE_ROOT_COMMANDS, ids=lambda argv: " ".join(map(str, argv[:2])))
def test_an_unusable_local_root_is_one_clear_line_with_exit_2(local_app, capsys, monkeypatch, tmp_path, argv, where):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    root = blocker if where == "a file" else blocker / "root"
    monkeypatch.setenv("PROMOTION_LOCAL_ROOT", str(root))
    code, out, err = run(capsys, *argv)
    assert code == EXIT_USAGE, (out, err)
    one_clear_line(err)
    assert "PROMOTION_LOCAL_ROOT" in err


def test_an_unusable_local_root_in_a_real_process(local_app, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    env = subprocess_env(PROMOTION_LOCAL_ROOT=str(blocker / "root"))
    result = cli("local", "register", "--name", "m", "--version", "1", "--path", SEED_MODEL, env=env)
    assert result.returncode == EXIT_USAGE and result.stdout == ""
    assert result.stderr.strip() == (
        "error: setting PROMOTION_LOCAL_ROOT names a folder that cannot be created (Not a directory)"
    )


def test_a_relative_policy_file_resolves_against_the_app_root_from_any_directory(local_app, tmp_path, capsys):
    register(capsys)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "promotion-policy.json").write_text("{ this is not the app's policy")  # a decoy in the cwd
    env = subprocess_env(PROMOTION_POLICY_FILE="promotion-policy.json")
    result = cli("policy", "check", "--name", "taxi-fare", "--version", "1", cwd=elsewhere, env=env)
    assert result.returncode == 0, result.stderr
    assert "policy promotion-policy.json" in result.stdout and "taxi-fare:1 qualifies" in result.stdout


def test_the_demo_runs_twice_in_a_row_in_a_fresh_root(local_app, tmp_path):
    env = subprocess_env(PROMOTION_LOCAL_ROOT=str(tmp_path / "demo-root"), PROMOTION_TRUST_IDENTITY_HEADERS=None)
    first = cli("demo", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Traceback" not in first.stderr
    second = cli("demo", cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "-> 202" in second.stdout and "Done." in second.stdout
    names = json.loads(cli("local", "list", "staging", "--json", env=env).stdout)
    assert len({(model["name"], model["version"]) for model in names}) == 4  # a good and a weak version per run


# --- the Azure ML backend without a sign-in ---------------------------------------------------------

AZURE_SETTINGS = {
    "PROMOTION_BACKEND": "azureml",
    "AZURE_SUBSCRIPTION_ID": "11111111-2222-4333-8444-555555555555",
    "STAGING_RESOURCE_GROUP": "rg-ml-staging",
    "STAGING_WORKSPACE": "ws-staging",
    "REGISTRY_NAME": "shared-registry",
    "REGISTRY_LOCATION": "westeurope",
    "PRODUCTION_RESOURCE_GROUP": "rg-ml-production",
    "PRODUCTION_WORKSPACE": "ws-production",
}
CREDENTIAL_VARIABLES = (
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AzureWebJobsStorage",
)


def test_policy_check_on_azure_without_a_sign_in_is_one_clear_line_and_needs_no_storage(tmp_path):
    empty = tmp_path / "no-tools"
    empty.mkdir()
    env = subprocess_env(**{name: None for name in CREDENTIAL_VARIABLES}, **AZURE_SETTINGS)
    env.update(
        PATH=str(empty),  # no az, azd or pwsh to ask
        HOME=str(tmp_path),  # no token cache of the developer's
        PROMOTION_STATE_STORE="tables",  # the store is not needed, so its missing setting must not matter
        PROMOTION_LOCAL_ROOT=str(tmp_path / "root"),
    )
    began = time.monotonic()
    result = cli("policy", "check", "--name", "taxi-fare", "--version", "1", cwd=tmp_path, env=env, timeout=30)
    elapsed = time.monotonic() - began
    assert elapsed < 10, f"the sign-in failure took {elapsed:.1f}s"
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "AzureWebJobsStorage" not in result.stderr
    assert result.stdout == ""
    assert "sign in" in result.stderr
    one_clear_line(result.stderr)


# --- causing drift on the local backend, and finding it ---------------------------------------------


def test_drift_caused_by_hand_on_the_local_backend_is_found_once_and_resolved(local_app, capsys):
    from tests.functions.test_api import deployed

    deployed(local_app, "1")
    code, out, _ = run(capsys, "drift")
    assert code == 0 and out.strip() == "1 endpoints compared, 0 new findings, 0 resolved, 0 open"
    code, out, err = run(
        capsys, "local", "deploy-by-hand", "--endpoint", "taxi-fare-prod", "--deployment", "by-hand", "--model", "x:9"
    )
    assert code == 0 and "taxi-fare-prod/by-hand serves azureml://registries/" in out, err
    code, out, _ = run(
        capsys,
        "local",
        "set-traffic",
        "--endpoint",
        "taxi-fare-prod",
        "--traffic",
        "taxi-fare-v1=90",
        "--traffic",
        "by-hand=10",
    )
    assert code == 0
    code, out, _ = run(capsys, "drift", "--json")
    report = json.loads(out)
    assert code == 0 and sorted(f["kind"] for f in report["detected"]) == ["traffic_changed", "unapproved_model"]
    code, out, _ = run(capsys, "drift")
    assert "0 new findings" in out and "2 open" in out  # persisting drift is not reported again
    run(capsys, "local", "set-traffic", "--endpoint", "taxi-fare-prod", "--traffic", "taxi-fare-v1=100")
    code, out, _ = run(capsys, "local", "delete-deployment", "--endpoint", "taxi-fare-prod", "--deployment", "by-hand")
    assert code == 0 and out.strip() == "taxi-fare-prod/by-hand deleted"
    code, out, _ = run(capsys, "drift")
    assert out.count("drift resolved: ") == 2 and "0 open" in out
    kinds = [e.type.value for e in local_app.store().events() if "Drift" in e.type.value]
    assert kinds == ["ModelPromotion.DriftDetected"] * 2 + ["ModelPromotion.DriftResolved"] * 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["set-traffic", "--endpoint", "taxi-fare-prod", "--traffic", "taxi-fare-v1=50"], "add up to 100"),
        (["set-traffic", "--endpoint", "taxi-fare-prod", "--traffic", "taxi-fare-v1=x"], "expected a whole percent"),
        (["set-traffic", "--endpoint", "taxi-fare-prod", "--traffic", "nothing=100"], "has no deployment nothing"),
        (["set-traffic", "--endpoint", "nowhere", "--traffic", "a=100"], "nowhere does not exist"),
        (["delete-deployment", "--endpoint", "taxi-fare-prod", "--deployment", "taxi-fare-v1"], "move its traffic"),
        (["deploy-by-hand", "--endpoint", "nowhere", "--deployment", "abc", "--model", "x:1"], "does not exist"),
        (
            ["deploy-by-hand", "--endpoint", "taxi-fare-prod", "--deployment", "taxi-fare-v1", "--model", "x:1"],
            "exists",
        ),
        (["deploy-by-hand", "--endpoint", "taxi-fare-prod", "--deployment", "abc", "--model", "x"], "name:version"),
    ],
)
def test_local_changes_outside_the_app_keep_azures_rules(local_app, capsys, argv, message):
    from tests.functions.test_api import deployed

    deployed(local_app, "1")
    code, _, err = run(capsys, "local", *argv)
    assert code == EXIT_USAGE and message in err
    one_clear_line(err)
    assert backend(local_app).production.endpoint("taxi-fare-prod").traffic == {"taxi-fare-v1": 100}


def test_list_registry_shows_a_copy_that_is_not_finished(local_app, capsys):
    """The local registry holds the files as soon as the copy starts, without lineage until the timer finishes it:
    the listing says so, and stops saying so once it is copied."""
    from tests.functions.conftest import grid_event, user_function

    register(capsys)
    topic = local_app.settings().staging_workspace_id
    user_function("on_model_registered")(grid_event(ModelRef("taxi-fare", "1"), topic=topic))

    code, out, _ = run(capsys, "local", "list", "registry")
    assert code == 0 and out.startswith("taxi-fare:1  mlflow_model  [copying: not finished]"), out
    [listed] = json.loads(run(capsys, "local", "list", "registry", "--json")[1])
    assert listed["copy"] == "copying"

    run(capsys, "copies", "advance")
    code, out, _ = run(capsys, "local", "list", "registry")
    assert "not finished" not in out and out.startswith("taxi-fare:1  mlflow_model  ")
    assert "promotion.event_id=" in out
    [listed] = json.loads(run(capsys, "local", "list", "registry", "--json")[1])
    assert listed["copy"] == "copied"


def test_policy_backtest_with_a_missing_candidate_names_the_option(local_app, capsys, tmp_path):
    code, _, err = run(capsys, "policy", "backtest", "--policy", tmp_path / "missing.json")
    assert code == EXIT_USAGE
    one_clear_line(err)
    assert "missing.json: policy file not found (check --policy)" in err and "PROMOTION_POLICY_FILE" not in err


# --- local.settings.json, as Core Tools reads it ---------------------------------------------------


@pytest.fixture
def app_root(monkeypatch, tmp_path):
    """An app root of this test's own (host.json beside it), and an environment the CLI may change freely."""
    from promotion import settings as settings_module

    root = tmp_path / "app"
    root.mkdir()
    (root / "host.json").write_text("{}")
    shutil.copy2(POLICY, root / "promotion-policy.json")
    monkeypatch.setattr(settings_module, "APP_ROOT", root)
    monkeypatch.setattr(
        os, "environ", {k: v for k, v in os.environ.items() if not k.startswith(("PROMOTION_", "AZURE"))}
    )
    for name in ("PROMOTION_BACKEND", "PROMOTION_POLICY_FILE", "PROMOTION_LOCAL_ROOT", "AzureWebJobsScriptRoot"):
        os.environ.pop(name, None)
    return root


def test_without_a_backend_the_error_points_at_the_local_one(app_root, capsys):
    code, _, err = run(capsys, "policy", "check", "--name", "taxi-fare", "--version", "1")
    assert code == EXIT_USAGE
    one_clear_line(err)
    assert "setting AZURE_SUBSCRIPTION_ID is missing" in err and "set PROMOTION_BACKEND=local" in err


def test_the_cli_reads_local_settings_json_at_the_app_root_and_the_environment_wins(app_root, capsys):
    values = json.loads((ROOT / "local.settings.example.json").read_text())
    (app_root / "local.settings.json").write_text(json.dumps(values))
    register(capsys)  # into the app root's .promotion, as local.settings.json says

    code, out, err = run(capsys, "policy", "check", "--name", "taxi-fare", "--version", "1")
    assert code == 0, err
    assert "taxi-fare:1 qualifies" in out and (app_root / ".promotion").is_dir()

    os.environ["PROMOTION_LOCAL_ROOT"] = str(app_root.parent / "elsewhere")  # the environment wins over the file
    code, _, err = run(capsys, "policy", "check", "--name", "taxi-fare", "--version", "1")
    assert code == EXIT_USAGE and "taxi-fare:1 is not in the staging workspace" in err


# --- paging ----------------------------------------------------------------------------------------


def _pages(capsys, *argv):
    """Every page of a listing, following the tokens the command prints, and how many pages there were."""
    found, pages, token = [], 0, None
    while True:
        code, out, err = run(capsys, *argv, *(["--continuation", token] if token else []))
        assert code == 0, err
        found += json.loads(out)
        pages += 1
        if "--continuation" not in err:
            return found, pages
        token = err.split("--continuation ", 1)[1].split()[0]


def test_copies_and_events_list_page_through_history(local_app, capsys):
    for version in range(1, 6):
        share(local_app, ModelRef("taxi-fare", str(version)))
    copies, pages = _pages(capsys, "copies", "list", "--json", "--page-size", "2")
    assert [copy["model"] for copy in copies] == [f"taxi-fare:{version}" for version in range(1, 6)] and pages == 3
    events, pages = _pages(capsys, "events", "list", "--json", "--page-size", "4")
    assert len(events) == len({event["id"] for event in events}) == 5 and pages == 2
    code, out, err = run(capsys, "copies", "list", "--page-size", "3")
    assert code == 0 and len(out.splitlines()) == 3 and "more: add --continuation " in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["copies", "list", "--continuation", "not-a-token"], "invalid continuation token"),
        (["events", "list", "--continuation", "bm9wZQ"], "invalid continuation token"),
    ],
)
def test_a_bad_page_is_one_clear_line_with_exit_2(local_app, capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == EXIT_USAGE and message in err and out == ""
    one_clear_line(err)


@pytest.mark.parametrize("size", ["0", "1001", "many", "-3"])
def test_a_page_size_out_of_range_is_a_usage_error(local_app, capsys, size):
    with pytest.raises(SystemExit) as exited:
        main(["events", "list", "--page-size", size])
    assert exited.value.code == EXIT_USAGE
    assert "argument --page-size: a whole number from 1 to 1000" in capsys.readouterr().err
