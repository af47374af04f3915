"""The azd hooks: shellcheck, and runs with stand-in `az` and `azd` commands on PATH that record their calls and
answer as told."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.conftest import REPO

HOOKS = sorted((REPO / "scripts").glob("*.sh"))
SUB = "11111111-1111-1111-1111-111111111111"
REGISTRY_SUB = "22222222-2222-2222-2222-222222222222"
ML = "providers/Microsoft.MachineLearningServices"
STAGING_WS = f"/subscriptions/{SUB}/resourceGroups/rg-ml-staging/{ML}/workspaces/ws-staging"
REGISTRY = f"/subscriptions/{REGISTRY_SUB}/resourceGroups/rg-ml-registry/{ML}/registries/shared-registry"
PRODUCTION_WS = f"/subscriptions/{SUB}/resourceGroups/rg-ml-production/{ML}/workspaces/ws-production"
STAGING_RG, REGISTRY_RG, PRODUCTION_RG = (scope.split(f"/{ML}/")[0] for scope in (STAGING_WS, REGISTRY, PRODUCTION_WS))

ENV = {
    "AZURE_ENV_NAME": "promotion-dev",
    "AZURE_LOCATION": "westeurope",
    "AZURE_SUBSCRIPTION_ID": SUB,
    "AZURE_RESOURCE_GROUP": "rg-promotion-dev",
    "AZURE_FUNCTION_APP_NAME": "func-promotion-abc",
    "AZURE_PRINCIPAL_ID": "33333333-3333-3333-3333-333333333333",
    "AZURE_STORAGE_ACCOUNT_NAME": "stpromoabc",
    "DEAD_LETTER_CONTAINER": "promotion-deadletter",
    "STAGING_RESOURCE_GROUP": "rg-ml-staging",
    "STAGING_WORKSPACE": "ws-staging",
    "REGISTRY_NAME": "shared-registry",
    "REGISTRY_LOCATION": "westeurope",
    "REGISTRY_RESOURCE_GROUP": "rg-ml-registry",
    "REGISTRY_SUBSCRIPTION_ID": REGISTRY_SUB,
    "PRODUCTION_RESOURCE_GROUP": "rg-ml-production",
    "PRODUCTION_WORKSPACE": "ws-production",
}

# The stand-in: records its arguments (one JSON list per call) and answers with the first rule whose words all
# appear in the call; a rule's `answers` are used in turn, the last one repeating.
STAND_IN = """#!{python} -S
import json, os, sys
name = os.path.basename(sys.argv[0])
args = sys.argv[1:]
folder = os.environ["STAND_IN_DIR"]
with open(os.path.join(folder, "calls.jsonl"), "a") as calls:
    calls.write(json.dumps([name, *args]) + "\\n")
rules = json.load(open(os.path.join(folder, "rules.json")))
for index, rule in enumerate(rules):
    if rule["tool"] == name and all(word in args for word in rule["when"]):
        seen_file = os.path.join(folder, f"seen-{{index}}")
        seen = int(open(seen_file).read()) if os.path.exists(seen_file) else 0
        open(seen_file, "w").write(str(seen + 1))
        out, code = rule["answers"][min(seen, len(rule["answers"]) - 1)]
        sys.stdout.write(out)
        sys.exit(code)
"""


class Run:
    def __init__(self, result: subprocess.CompletedProcess, folder: Path) -> None:
        self.code, self.out, self.err = result.returncode, result.stdout, result.stderr
        log = folder / "calls.jsonl"
        self.calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def az(self, *words: str) -> list[list[str]]:
        """The az calls that start with these words."""
        return [call[1:] for call in self.calls if call[0] == "az" and call[1 : 1 + len(words)] == list(words)]

    def value(self, call: list[str], option: str) -> str:
        return call[call.index(option) + 1]


@pytest.fixture
def hook(tmp_path):
    def run(script: str, rules: list[dict], env: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> Run:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        for tool in ("az", "azd"):
            (bin_dir / tool).write_text(STAND_IN.format(python=sys.executable))
            (bin_dir / tool).chmod(0o755)
        (tmp_path / "rules.json").write_text(json.dumps(rules))
        environment = {k: v for k, v in {**ENV, **(env or {})}.items() if k not in drop}
        environment.update(
            PATH=f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
            STAND_IN_DIR=str(tmp_path),
            PROMOTION_HOOK_PAUSE_SECONDS="0",
        )
        result = subprocess.run(
            ["sh", str(REPO / "scripts" / script)], env=environment, capture_output=True, text=True, timeout=60
        )
        return Run(result, tmp_path)

    return run


def rule(tool: str, when: list[str], *answers: tuple[str, int]) -> dict:
    return {"tool": tool, "when": when, "answers": [list(a) for a in answers] or [["", 0]]}


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed (Debian: shellcheck)")
@pytest.mark.parametrize("script", HOOKS, ids=lambda p: p.name)
def test_shellcheck(script):
    result = subprocess.run(
        ["shellcheck", "-x", "-s", "sh", str(script.relative_to(REPO))], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", HOOKS, ids=lambda p: p.name)
def test_hooks_are_posix_sh_with_set_eu(script):
    lines = script.read_text().splitlines()
    if script.name == "common.sh":
        assert lines[0] == "# shellcheck shell=sh"
    else:
        assert lines[0] == "#!/bin/sh" and "set -eu" in lines


# --- preprovision: the deployer's roles ----------------------------------------------------------------------------


def roles_at(staging: str, registry: str, production: str) -> list[dict]:
    return [
        rule("az", ["ad", "signed-in-user", "show"], ("44444444-0000-0000-0000-000000000000\n", 0)),
        rule("az", ["role", "assignment", "list", STAGING_RG], (staging, 0)),
        rule("az", ["role", "assignment", "list", REGISTRY_RG], (registry, 0)),
        rule("az", ["role", "assignment", "list", PRODUCTION_RG], (production, 0)),
    ]


def test_preflight_passes_with_owner_or_an_rbac_administrator_who_may_deploy(hook):
    run = hook(
        "preprovision.sh",
        roles_at("Owner\n", "Reader\nRole Based Access Control Administrator\nContributor\n", "Owner\n"),
    )
    assert run.code == 0, run.err
    listed = run.az("role", "assignment", "list")
    assert [run.value(call, "--scope") for call in listed] == [STAGING_RG, REGISTRY_RG, PRODUCTION_RG]
    for call in listed:
        assert run.value(call, "--assignee") == "44444444-0000-0000-0000-000000000000"
        assert "--include-inherited" in call and "--include-groups" in call


def test_preflight_fails_naming_each_resource_group_without_the_roles(hook):
    run = hook(
        "preprovision.sh",
        roles_at(
            "Owner\n", "Role Based Access Control Administrator\nStorage Blob Data Contributor\n", "Contributor\n"
        ),
    )
    assert run.code == 1
    assert (
        "you need Owner, or Role Based Access Control Administrator and Contributor, on the resource group of the "
        f"registry ({REGISTRY_RG}), to give the app's identity its role on {REGISTRY}"
    ) in run.err
    assert f"of the production workspace ({PRODUCTION_RG})" in run.err
    assert "staging workspace (" not in run.err
    assert "nothing was created" in run.err


def test_preflight_can_be_skipped_for_custom_roles(hook):
    run = hook("preprovision.sh", [], {"PROMOTION_PREFLIGHT": "off"})
    assert run.code == 0 and run.calls == []
    assert "preflight skipped" in run.out


def test_preflight_fails_where_it_cannot_read_the_assignments(hook):
    rules = roles_at("Owner\n", "", "Owner\n")
    rules[2] = rule("az", ["role", "assignment", "list", REGISTRY_RG], ("", 1))
    run = hook("preprovision.sh", rules)
    assert run.code == 1
    assert f"cannot read your role assignments on the resource group of the registry ({REGISTRY_RG})" in run.err


def test_preflight_finds_a_service_principal(hook):
    rules = [
        rule("az", ["ad", "signed-in-user", "show"], ("", 1)),
        rule("az", ["account", "show"], ("55555555-0000-0000-0000-000000000000\n", 0)),
        rule("az", ["ad", "sp", "show"], ("66666666-0000-0000-0000-000000000000\n", 0)),
        rule("az", ["role", "assignment", "list"], ("Owner\n", 0)),
    ]
    run = hook("preprovision.sh", rules)
    assert run.code == 0, run.err
    assert run.value(run.az("ad", "sp", "show")[0], "--id") == "55555555-0000-0000-0000-000000000000"
    assert run.value(run.az("role", "assignment", "list")[0], "--assignee") == "66666666-0000-0000-0000-000000000000"


def test_preflight_names_missing_values_before_calling_azure(hook):
    run = hook("preprovision.sh", [], drop=("STAGING_WORKSPACE", "REGISTRY_RESOURCE_GROUP"))
    assert run.code == 1
    assert "missing azd environment values: STAGING_WORKSPACE REGISTRY_RESOURCE_GROUP" in run.err
    assert "azd env set NAME VALUE" in run.err
    assert run.calls == []


# --- postprovision: the cross-scope grants -------------------------------------------------------------------------


def test_postprovision_deploys_the_grants_with_every_scope(hook):
    run = hook("postprovision.sh", [])
    assert run.code == 0, run.err
    [call] = run.az("deployment", "sub", "create")
    assert run.value(call, "--template-file").endswith("scripts/../infra/grants.bicep")
    assert run.value(call, "--name") == "promotion-grants-promotion-dev"
    parameters = call[call.index("--parameters") + 1 : call.index("--output")]
    assert dict(p.split("=", 1) for p in parameters) == {
        "principalId": ENV["AZURE_PRINCIPAL_ID"],
        "stagingResourceGroup": "rg-ml-staging",
        "stagingWorkspaceName": "ws-staging",
        "registrySubscriptionId": REGISTRY_SUB,
        "registryResourceGroup": "rg-ml-registry",
        "registryName": "shared-registry",
        "productionSubscriptionId": SUB,
        "productionResourceGroup": "rg-ml-production",
        "productionWorkspaceName": "ws-production",
    }


# --- postdeploy: the Event Grid subscription after the code ---------------------------------------------------------

KEY = "c2VjcmV0LWtleS1uZXZlci1wcmludGVk"


def eventgrid_parameters(run: Run) -> dict[str, str]:
    [call] = run.az("deployment", "group", "create")
    assert run.value(call, "--resource-group") == "rg-ml-staging"
    assert run.value(call, "--template-file").endswith("scripts/../infra/eventgrid.bicep")
    parameters = call[call.index("--parameters") + 1 : call.index("--output")]
    return dict(p.split("=", 1) for p in parameters)


def test_postdeploy_waits_for_the_key_then_creates_the_topic_and_subscription(hook):
    other = STAGING_WS.replace("ws-staging", "ws-other")
    rules = [
        rule("az", ["eventgrid", "system-topic", "list"], (f"other-topic\t{other}\n", 0)),
        rule("az", ["functionapp", "keys", "list"], ("", 0), ("\n", 0), (f"{KEY}\n", 0)),
    ]
    run = hook("postdeploy.sh", rules)
    assert run.code == 0, run.err
    assert len(run.az("functionapp", "keys", "list")) == 3
    assert run.out.count("waiting for the Event Grid extension's system key") == 2
    assert KEY not in run.out + run.err
    assert run.az("eventgrid", "system-topic", "update") == []
    assert eventgrid_parameters(run) == {
        "systemTopicName": "evgst-ws-staging",
        "reuseSystemTopic": "false",
        "stagingWorkspaceName": "ws-staging",
        "appResourceGroup": "rg-promotion-dev",
        "functionAppName": "func-promotion-abc",
        "storageAccountName": "stpromoabc",
        "deadLetterContainerName": "promotion-deadletter",
    }
    assert [c[1:] for c in run.calls if c[0] == "azd"] == [
        ["env", "set", "PROMOTION_SYSTEM_TOPIC", "evgst-ws-staging"],
        ["env", "set", "PROMOTION_SYSTEM_TOPIC_CREATED", "true"],
    ]


def test_postdeploy_reuses_the_workspace_system_topic(hook):
    rules = [
        rule("az", ["eventgrid", "system-topic", "list"], (f"theirs\t{STAGING_WS.upper()}\n", 0)),
        rule("az", ["functionapp", "keys", "list"], (f"{KEY}\n", 0)),
    ]
    run = hook("postdeploy.sh", rules)
    assert run.code == 0, run.err
    [update] = run.az("eventgrid", "system-topic", "update")
    assert run.value(update, "--name") == "theirs" and run.value(update, "--identity") == "systemassigned"
    assert eventgrid_parameters(run)["reuseSystemTopic"] == "true"
    assert eventgrid_parameters(run)["systemTopicName"] == "theirs"
    assert ["env", "set", "PROMOTION_SYSTEM_TOPIC_CREATED", "false"] in [c[1:] for c in run.calls]


def test_postdeploy_remembers_a_topic_it_created_on_the_next_deploy(hook):
    rules = [
        rule("az", ["eventgrid", "system-topic", "list"], (f"evgst-ws-staging\t{STAGING_WS}\n", 0)),
        rule("az", ["functionapp", "keys", "list"], (f"{KEY}\n", 0)),
    ]
    env = {"PROMOTION_SYSTEM_TOPIC": "evgst-ws-staging", "PROMOTION_SYSTEM_TOPIC_CREATED": "true"}
    run = hook("postdeploy.sh", rules, env)
    assert run.code == 0, run.err
    assert eventgrid_parameters(run)["reuseSystemTopic"] == "true"
    assert ["env", "set", "PROMOTION_SYSTEM_TOPIC_CREATED", "true"] in [c[1:] for c in run.calls]


def test_postdeploy_uses_the_named_topic_without_searching(hook):
    run = hook("postdeploy.sh", [rule("az", ["functionapp", "keys", "list"], (KEY, 0))], {"SYSTEM_TOPIC_NAME": "named"})
    assert run.code == 0, run.err
    assert run.az("eventgrid", "system-topic", "list") == []
    assert eventgrid_parameters(run)["systemTopicName"] == "named"


def test_postdeploy_gives_up_when_the_key_never_appears(hook):
    rules = [
        rule("az", ["eventgrid", "system-topic", "list"], ("", 0)),
        rule("az", ["functionapp", "keys", "list"], ("", 1)),
    ]
    run = hook("postdeploy.sh", rules, {"PROMOTION_HOOK_ATTEMPTS": "4"})
    assert run.code == 1
    assert len(run.az("functionapp", "keys", "list")) == 4
    assert "has not created the eventgrid_extension system key after 4 attempts" in run.err
    assert run.az("deployment", "group", "create") == []


def test_postdeploy_retries_the_subscription_while_the_handshake_fails(hook):
    rules = [
        rule("az", ["eventgrid", "system-topic", "list"], ("", 0)),
        rule("az", ["functionapp", "keys", "list"], (KEY, 0)),
        rule("az", ["deployment", "group", "create"], ("", 1), ("", 0)),
    ]
    run = hook("postdeploy.sh", rules)
    assert run.code == 0, run.err
    assert len(run.az("deployment", "group", "create")) == 2


# --- predown: what the app added outside its resource group ---------------------------------------------------------


def never_touches_workspaces_or_the_registry(run: Run) -> None:
    for call in run.calls:
        assert call[1] not in ("ml", "group", "resource"), call
        if "delete" in call and call[1:3] != ["role", "assignment"]:
            assert call[1:3] == ["eventgrid", "system-topic"], call


def test_predown_removes_the_subscription_from_a_reused_topic_and_the_grants(hook):
    run = hook("predown.sh", [], {"PROMOTION_SYSTEM_TOPIC": "theirs", "PROMOTION_SYSTEM_TOPIC_CREATED": "false"})
    assert run.code == 0, run.err
    [delete] = run.az("eventgrid", "system-topic", "event-subscription", "delete")
    assert run.value(delete, "--name") == "promote-models" and run.value(delete, "--system-topic-name") == "theirs"
    assert run.az("eventgrid", "system-topic", "delete") == []
    deletes = run.az("role", "assignment", "delete")
    assert [run.value(c, "--scope") for c in deletes] == [STAGING_WS, REGISTRY, PRODUCTION_WS]
    assert {run.value(c, "--assignee") for c in deletes} == {ENV["AZURE_PRINCIPAL_ID"]}
    never_touches_workspaces_or_the_registry(run)


def test_predown_deletes_a_system_topic_it_created_once_it_is_unused(hook):
    env = {"PROMOTION_SYSTEM_TOPIC": "evgst-ws-staging", "PROMOTION_SYSTEM_TOPIC_CREATED": "true"}
    run = hook("predown.sh", [rule("az", ["event-subscription", "list"], ("0\n", 0))], env)
    assert run.code == 0, run.err
    assert len(run.az("eventgrid", "system-topic", "event-subscription", "delete")) == 1
    [delete] = run.az("eventgrid", "system-topic", "delete")
    assert run.value(delete, "--name") == "evgst-ws-staging"
    never_touches_workspaces_or_the_registry(run)


def test_predown_keeps_a_system_topic_others_subscribed_to(hook):
    env = {"PROMOTION_SYSTEM_TOPIC": "evgst-ws-staging", "PROMOTION_SYSTEM_TOPIC_CREATED": "true"}
    run = hook("predown.sh", [rule("az", ["event-subscription", "list"], ("2\n", 0))], env)
    assert run.code == 0, run.err
    assert run.az("eventgrid", "system-topic", "delete") == []
    assert "kept the system topic evgst-ws-staging: it has 2 other subscriptions" in run.out


def test_predown_stops_azd_down_when_a_removal_fails(hook):
    rules = [rule("az", ["role", "assignment", "delete", REGISTRY], ("", 1))]
    run = hook("predown.sh", rules, {"PROMOTION_SYSTEM_TOPIC": "theirs"})
    assert run.code != 0
    assert len(run.az("role", "assignment", "delete")) == 2
