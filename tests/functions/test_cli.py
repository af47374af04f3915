"""python -m promotion: the local stand-in for `az ml model create`, listing, and the policy dry run."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from promotion.__main__ import main
from tests.functions.conftest import SEED_MODEL


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def register(capsys, *extra, version="1", tags=("stage=candidate", "accuracy=0.9")):
    tag_args = [arg for tag in tags for arg in ("--tag", tag)]
    return run(
        capsys,
        "local",
        "register",
        "--name",
        "taxi-fare",
        "--version",
        version,
        "--path",
        str(SEED_MODEL),
        "--type",
        "mlflow_model",
        *tag_args,
        "--property",
        "run=r1",
        "--description",
        "fares",
        *extra,
    )


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


def test_list_prints_model_objects(local_app, capsys):
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
    assert json.loads(run(capsys, "local", "list", "registry", "--json")[1]) == []


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--name", "bad/name", "--version", "1", "--path", str(SEED_MODEL)], "invalid model name 'bad/name'"),
        (["--name", "m", "--version", "1", "--path", "/does/not/exist"], "path /does/not/exist does not exist"),
        (
            ["--name", "m", "--version", "1", "--path", str(SEED_MODEL / "MLmodel"), "--type", "mlflow_model"],
            "no MLmodel",
        ),
        (
            ["--name", "m", "--version", "1", "--path", str(SEED_MODEL), "--tag", "novalue"],
            "--tag 'novalue': expected KEY=VALUE",
        ),
    ],
)
def test_bad_registrations_exit_non_zero_with_a_message(local_app, capsys, argv, message):
    code, out, err = run(capsys, "local", "register", *argv)
    assert code == 2 and out == "" and message in err


def test_a_duplicate_version_is_refused(local_app, capsys):
    register(capsys)
    code, _, err = register(capsys)
    assert code == 2 and "taxi-fare:1 already exists" in err


def test_notify_posts_the_event_to_the_functions_host_webhook(local_app, capsys):
    received = []

    class Webhook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["aeg-event-type"], self.headers["Content-Type"], json.loads(body)))
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Webhook)
    threading.Thread(target=server.handle_request, daemon=True).start()
    code, out, err = register(capsys, "--notify", f"http://127.0.0.1:{server.server_port}/")
    server.server_close()
    assert code == 0 and "HTTP 202" in err
    [(path, event_type, content_type, events)] = received
    assert path == "/runtime/webhooks/eventgrid?functionName=on_model_registered"
    assert (event_type, content_type) == ("Notification", "application/json")
    assert events == json.loads(out)


def test_notify_failure_says_the_model_is_registered(local_app, capsys):
    code, _, err = register(capsys, "--notify", "http://127.0.0.1:9")
    assert code == 2 and "the model is registered, but notifying" in err
    assert json.loads(run(capsys, "local", "list", "staging", "--json")[1])[0]["version"] == "1"


def test_policy_check_is_a_dry_run(local_app, capsys):
    register(capsys)
    register(capsys, version="2", tags=("stage=dev", "accuracy=0.4"))
    code, out, _ = run(capsys, "policy", "check", "--name", "taxi-fare", "--version", "1")
    assert code == 0 and "taxi-fare:1 qualifies for the registry" in out
    code, out, _ = run(capsys, "policy", "check", "--name", "taxi-fare", "--version", "2")
    assert code == 0 and "taxi-fare:2 does not qualify" in out
    assert "require_tags: tag 'stage' is 'dev', needs 'candidate'" in out and "thresholds[0]" in out
    assert json.loads(run(capsys, "local", "list", "registry", "--json")[1]) == []


def test_policy_check_on_an_unknown_model_or_a_bad_policy_fails_clearly(local_app, capsys, tmp_path, monkeypatch):
    code, _, err = run(capsys, "policy", "check", "--name", "nope", "--version", "1")
    assert code == 2 and "nope:1 is not in the staging workspace" in err
    broken = tmp_path / "policy.json"
    broken.write_text('{"share_to_registry": {"thresholds": [{"tag": "a", "op": "~", "value": 1}]}}')
    monkeypatch.setenv("PROMOTION_POLICY_FILE", str(broken))
    local_app.reset()
    code, _, err = run(capsys, "policy", "check", "--name", "nope", "--version", "1")
    assert code == 2 and f"{broken}: share_to_registry.thresholds[0].op" in err
