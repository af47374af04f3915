"""Command line: `python -m promotion --help`.

policy check --name N --version V   the policy's verdict for a staging model (a dry run: copies nothing)
local register ...                  register a model in the local staging workspace, like `az ml model create`
local list staging|registry|production
demo                                the whole flow on the local backend, step by step
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from promotion import wiring
from promotion.domain import InvalidName, ModelRef, ModelVersion, isoformat, now
from promotion.events import MODEL_REGISTERED
from promotion.policy import PolicyError
from promotion.ports import AlreadyExists
from promotion.settings import Settings, SettingsError


class CommandError(Exception):
    """A user error: printed as one line, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (CommandError, SettingsError, PolicyError, InvalidName) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        if not type(error).__module__.startswith("azure."):
            raise
        # Sign-in, permission and service errors of the azureml backend: the SDK's message says what to do.
        print(f"error: Azure ML: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m promotion", description="Model promotion for Azure ML.")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    policy = commands.add_parser("policy", help="the promotion policy").add_subparsers(required=True, metavar="ACTION")
    check = policy.add_parser("check", help="print the verdict for a staging model; copies nothing")
    check.add_argument("--name", required=True)
    check.add_argument("--version", required=True)
    check.set_defaults(run=policy_check)

    local = commands.add_parser("local", help="the local backend").add_subparsers(required=True, metavar="ACTION")
    register = local.add_parser("register", help="register a model in the local staging workspace")
    register.add_argument("--name", required=True)
    register.add_argument("--version", required=True)
    register.add_argument("--path", required=True, type=Path, help="the model's file or folder")
    register.add_argument("--type", default="custom_model", choices=["mlflow_model", "custom_model", "triton_model"])
    register.add_argument("--tag", action="append", default=[], metavar="K=V")
    register.add_argument("--property", action="append", default=[], metavar="K=V")
    register.add_argument("--description")
    register.add_argument(
        "--notify", metavar="URL", help="also POST the event to a Functions host, e.g. http://localhost:7071"
    )
    register.set_defaults(run=local_register)
    listing = local.add_parser("list", help="list models (or production endpoints)")
    listing.add_argument("where", choices=["staging", "registry", "production"])
    listing.add_argument("--json", action="store_true", help="print JSON (the default is a table)")
    listing.set_defaults(run=local_list)

    demo = commands.add_parser("demo", help="run the whole flow on the local backend, step by step")
    demo.set_defaults(run=run_demo)
    return parser


def policy_check(args: argparse.Namespace) -> int:
    ref = ModelRef.parse(args.name, args.version)
    policy = wiring.policy()
    model = wiring.backend().staging.get(ref)
    if model is None:
        raise CommandError(f"model {ref} is not in the staging workspace")
    verdict = policy.evaluate(model)
    print(f"policy {wiring.policy_path()} ({verdict.policy_digest})")
    if verdict.qualifies:
        print(f"{ref} qualifies for the registry")
    else:
        print(f"{ref} does not qualify for the registry; failed rules:")
        for rule in verdict.failed_rules:
            print(f"  - {rule}")
    return 0


def local_settings() -> Settings:
    """The local commands always act on the local backend, whatever PROMOTION_BACKEND says."""
    return Settings.from_env({**os.environ, "PROMOTION_BACKEND": "local", "PROMOTION_STATE_STORE": "sqlite"})


def local_register(args: argparse.Namespace) -> int:
    from promotion.adapters.local import InvalidModelFolder, LocalBackend

    settings = local_settings()
    model = ModelVersion(
        ref=ModelRef.parse(args.name, args.version),
        type=args.type,
        tags=_pairs(args.tag, "--tag"),
        properties=_pairs(args.property, "--property"),
        description=args.description,
    )
    try:
        registered = LocalBackend(settings).staging.register(model, args.path)
    except (AlreadyExists, InvalidModelFolder) as error:
        raise CommandError(str(error)) from None
    event = model_registered_event(registered, settings.staging_workspace_id)
    print(json.dumps([event], indent=2))
    if args.notify:
        notify(args.notify, [event])
    return 0


def model_registered_event(model: ModelVersion, staging_workspace_id: str) -> dict[str, Any]:
    """The event Azure ML emits when a model is registered (Event Grid schema)."""
    return {
        "id": str(uuid.uuid4()),
        "topic": staging_workspace_id,
        "subject": f"models/{model.ref}",
        "eventType": MODEL_REGISTERED,
        "eventTime": isoformat(now()),
        "data": {
            "ModelName": model.name,
            "ModelVersion": model.version,
            "ModelTags": dict(model.tags),
            "ModelProperties": dict(model.properties),
        },
        "dataVersion": "",
        "metadataVersion": "1",
    }


def notify(host: str, events: list[dict[str, Any]]) -> None:
    """POST the events to a running Functions host's Event Grid webhook, as Event Grid would."""
    if not host.startswith(("http://", "https://")):
        raise CommandError(f"--notify {host!r}: expected an http:// or https:// URL such as http://localhost:7071")
    url = f"{host.rstrip('/')}/runtime/webhooks/eventgrid?functionName=on_model_registered"
    request = urllib.request.Request(
        url,
        data=json.dumps(events).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "aeg-event-type": "Notification"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            print(f"notified {url}: HTTP {response.status}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as error:
        raise CommandError(f"the model is registered, but notifying {url} failed: {error}") from None


def local_list(args: argparse.Namespace) -> int:
    from promotion.adapters.local import LocalBackend

    backend = LocalBackend(local_settings())
    if args.where == "production":
        items: list[dict[str, Any]] = backend.production.list()
    else:
        items = [model.to_json() for model in getattr(backend, args.where).list()]
    if args.json:
        print(json.dumps(items, indent=2))
    elif args.where == "production":
        for endpoint in items:
            print(f"{endpoint['name']}  traffic={json.dumps(endpoint['traffic'])}")
    else:
        for item in items:
            tags = " ".join(f"{key}={value}" for key, value in item["tags"].items())
            print(f"{item['name']}:{item['version']}  {item['type']}  {tags}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from promotion.demo import run

    return run()


def _pairs(items: list[str], option: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise CommandError(f"{option} {item!r}: expected KEY=VALUE")
        pairs[key] = value
    return pairs


if __name__ == "__main__":
    sys.exit(main())
