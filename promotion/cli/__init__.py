"""Command line: `promotion --help` (or `python -m promotion --help`).

Exit status: 0 when the command ran; 2 for a usage or configuration error, a missing Azure sign-in, or a model
that is not where the command looked (one line on stderr); 1 when Azure or the store answered with an error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from promotion import wiring
from promotion.cli.local import CommandError, default_model_type, local_settings, pairs
from promotion.domain import MODEL_TYPES, InvalidName, ModelRef, ModelVersion
from promotion.policy import Policy, PolicyError
from promotion.settings import SettingsError, with_local_settings

PAGE_SIZE = 100  # what `copies list` and `events list` print at once; the rest is paged, never loaded whole


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    wiring.reset()  # settings come from this process's environment as it is now
    # The SDKs' own warnings (azure-identity lists every credential it tried) would bury the one line this prints.
    logging.getLogger("azure").setLevel(logging.ERROR)
    try:
        # Like Core Tools: local.settings.json's Values at the app root, under whatever the environment sets.
        for name, value in with_local_settings(os.environ).items():
            os.environ.setdefault(name, value)
        return args.run(args)
    except (CommandError, SettingsError, PolicyError, InvalidName) as error:
        return _fail(str(error), 2)
    except Exception as error:
        return _azure_failure(error)


def _fail(message: str, status: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


def _azure_failure(error: Exception) -> int:
    from promotion.ports import StoreUnavailable

    if isinstance(error, StoreUnavailable):
        return _fail(str(error), 1)
    if not type(error).__module__.startswith("azure."):
        raise error
    from azure.core.exceptions import ClientAuthenticationError

    if isinstance(error, ClientAuthenticationError):
        return _fail("cannot sign in to Azure: run `az login`, or give the app a managed identity", 2)
    first_line = (str(error).strip().splitlines() or [""])[0]
    return _fail(f"Azure: {type(error).__name__}: {first_line}", 1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promotion", description="Model promotion for Azure ML.")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    policy = commands.add_parser("policy", help="the promotion policy").add_subparsers(required=True, metavar="ACTION")
    check = policy.add_parser("check", help="print the verdict for a staging model; copies nothing")
    check.add_argument("--name", required=True)
    check.add_argument("--version", required=True)
    check.add_argument("--json", action="store_true", help="print JSON")
    check.set_defaults(run=policy_check)
    backtest = policy.add_parser("backtest", help="compare a candidate policy with the current one on staging")
    backtest.add_argument("--policy", required=True, type=Path, metavar="CANDIDATE.json")
    backtest.add_argument("--json", action="store_true", help="print JSON")
    backtest.set_defaults(run=policy_backtest)

    reconcile = commands.add_parser("reconcile", help="copy qualifying staging versions the registry lacks")
    reconcile.add_argument("--dry-run", action="store_true", help="change nothing; say what a real run would do")
    reconcile.add_argument("--json", action="store_true", help="print JSON")
    reconcile.set_defaults(run=run_reconcile)

    copies = commands.add_parser("copies", help="registry copies").add_subparsers(required=True, metavar="ACTION")
    listing = copies.add_parser("list", help="the copies and their states, one page at a time, by model")
    listing.add_argument("--json", action="store_true", help="print JSON")
    _paging(listing)
    listing.set_defaults(run=copies_list)
    copies.add_parser("advance", help="take every copy under way one step further (as the timer does)").set_defaults(
        run=copies_advance
    )

    events = commands.add_parser("events", help="lifecycle events").add_subparsers(required=True, metavar="ACTION")
    listing = events.add_parser(
        "list", help="the outbox, one page at a time: unpublished events oldest first, then the published ones"
    )
    listing.add_argument("--unpublished", action="store_true", help="only events not published yet")
    listing.add_argument("--json", action="store_true", help="print JSON")
    _paging(listing)
    listing.set_defaults(run=events_list)
    events.add_parser("publish", help="publish what is unpublished, now").set_defaults(run=events_publish)

    local = commands.add_parser("local", help="the local backend").add_subparsers(required=True, metavar="ACTION")
    register = local.add_parser("register", help="register a model in the local staging workspace")
    register.add_argument("--name", required=True)
    register.add_argument("--version", required=True)
    register.add_argument("--path", required=True, type=Path, help="the model's file or folder")
    register.add_argument(
        "--type", choices=MODEL_TYPES, help="default: mlflow_model for a folder with an MLmodel file, else custom_model"
    )
    register.add_argument("--tag", action="append", default=[], metavar="K=V")
    register.add_argument("--property", action="append", default=[], metavar="K=V")
    register.add_argument("--description")
    register.add_argument(
        "--notify", metavar="URL", help="also POST the event to a Functions host, e.g. http://localhost:7071"
    )
    register.set_defaults(run=local_register)
    tag = local.add_parser("tag", help="add or change tags of a staging model version (no event, as in Azure)")
    tag.add_argument("--name", required=True)
    tag.add_argument("--version", required=True)
    tag.add_argument("--tag", action="append", required=True, metavar="K=V")
    tag.set_defaults(run=local_tag)
    listing = local.add_parser("list", help="list models (or production endpoints)")
    listing.add_argument("where", choices=["staging", "registry", "production"])
    listing.add_argument("--json", action="store_true", help="print JSON (the default is a table)")
    listing.set_defaults(run=local_list)

    by_hand = local.add_parser(
        "deploy-by-hand", help="deploy a registry model version to a production endpoint outside the app (no traffic)"
    )
    by_hand.add_argument("--endpoint", required=True)
    by_hand.add_argument("--deployment", required=True)
    by_hand.add_argument("--model", required=True, metavar="NAME:VERSION")
    by_hand.set_defaults(run=local_deploy_by_hand)
    traffic = local.add_parser("set-traffic", help="set a production endpoint's traffic outside the app")
    traffic.add_argument("--endpoint", required=True)
    traffic.add_argument(
        "--traffic", action="append", required=True, metavar="DEPLOYMENT=PERCENT", help="the shares add up to 100"
    )
    traffic.set_defaults(run=local_set_traffic)
    delete = local.add_parser(
        "delete-deployment", help="delete a production deployment outside the app (refused while it has traffic)"
    )
    delete.add_argument("--endpoint", required=True)
    delete.add_argument("--deployment", required=True)
    delete.set_defaults(run=local_delete_deployment)

    drift = commands.add_parser("drift", help="compare production with what was approved; record and report drift")
    drift.add_argument("--json", action="store_true", help="print JSON")
    drift.set_defaults(run=run_drift)

    commands.add_parser("demo", help="run the whole flow on the local backend, step by step").set_defaults(run=run_demo)

    serve = commands.add_parser(
        "serve", help="serve the app and its approver console on 127.0.0.1, on the local backend"
    )
    serve.add_argument("--port", type=int, default=7071, help="default: 7071")
    serve.add_argument("--as", dest="who", metavar="NAME", help="who the console and the API see (local only)")
    serve.add_argument(
        "--role", action="append", default=[], metavar="ROLE", help="an app role of --as, such as Promotion.Approver"
    )
    serve.set_defaults(run=run_serve)
    return parser


def _paging(listing: argparse.ArgumentParser) -> None:
    listing.add_argument(
        "--page-size", type=_page_size, default=PAGE_SIZE, metavar="N", help=f"1-1000, default {PAGE_SIZE}"
    )
    listing.add_argument("--continuation", metavar="TOKEN", help="the token the previous page printed")


def _page_size(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError("a whole number from 1 to 1000")
    return int(text)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


# --- policy ----------------------------------------------------------------------------------------


def policy_check(args: argparse.Namespace) -> int:
    ref = ModelRef.parse(args.name, args.version)
    policy = wiring.policy()
    model = wiring.backend().staging.get(ref)
    if model is None:
        raise CommandError(f"model {ref} is not in the staging workspace")
    verdict = policy.evaluate(model)
    if args.json:
        _print_json({"model": str(ref), "qualifies": verdict.qualifies, "failed_rules": list(verdict.failed_rules)})
        return 0
    print(f"policy {wiring.policy_path().name} ({verdict.policy_digest})")
    if verdict.qualifies:
        print(f"{ref} qualifies for the registry")
    else:
        print(f"{ref} does not qualify for the registry; failed rules:")
        for rule in verdict.failed_rules:
            print(f"  - {rule}")
    return 0


def policy_backtest(args: argparse.Namespace) -> int:
    from promotion import service

    # A command-line path: relative to where the command runs.
    candidate = Policy.load(args.policy, named_by="--policy")
    report = service.backtest(current=wiring.policy(), candidate=candidate, staging=wiring.backend().staging)
    if args.json:
        _print_json(report.to_json())
        return 0
    print(f"{report.versions} staging versions")
    print(
        f"  current policy   {report.current_digest}: {report.admitted['current']} admitted, "
        f"{report.refused['current']} refused"
    )
    print(
        f"  candidate policy {report.candidate_digest}: {report.admitted['candidate']} admitted, "
        f"{report.refused['candidate']} refused"
    )
    if not report.changes:
        print("no verdict changes")
    for change in report.changes:
        verdicts = {True: "admitted", False: "refused"}
        print(f"{change.model}: {verdicts[change.admitted_before]} -> {verdicts[change.admitted_after]}")
        for rule in change.rules_now_failing:
            print(f"  + fails {rule}")
        for rule in change.rules_now_passing:
            print(f"  - no longer fails {rule}")
    return 0


# --- the registry ----------------------------------------------------------------------------------


def run_reconcile(args: argparse.Namespace) -> int:
    from promotion import service

    settings = wiring.settings()
    backend = wiring.backend()
    report = service.reconcile(
        staging_workspace_id=settings.staging_workspace_id,
        staging=backend.staging,
        registry=backend.registry,
        policy=wiring.policy,
        store=None if args.dry_run else wiring.store(),
        dry_run=args.dry_run,
        source=settings.events_source,
        clock=wiring.clock(),
    )
    if args.json:
        _print_json(report.to_json())
        return 0
    would = "would copy" if args.dry_run else "copy started"
    print(f"reconcile {report.run_id}{' (dry run: nothing changed)' if args.dry_run else ''}")
    for key in report.copied:
        print(f"  {would}: {key}")
    for key in report.copying:
        print(f"  copy under way: {key}")
    for key, rules in report.not_qualified.items():
        print(f"  not qualified: {key}: {'; '.join(rules)}")
    for key, reason in report.conflicts.items():
        print(f"  left alone: {key}: {reason}")
    for key, reason in report.errors.items():
        print(f"  error: {key}: {reason}")
    print(
        f"{len(report.copied)} {would}, {len(report.already_in_registry)} already in the registry, "
        f"{len(report.copying)} under way, {len(report.not_qualified)} not qualified, {len(report.errors)} errors"
    )
    return 1 if report.errors else 0


def _page(args: argparse.Namespace, read: Any) -> Any:
    """One page of a listing, as the store reads it (never the whole history); the next page's token goes to stderr,
    so that stdout stays one JSON document with --json."""
    try:
        return read(page_size=args.page_size, continuation=args.continuation)
    except ValueError as error:
        raise CommandError(str(error)) from error


def _next_page(args: argparse.Namespace, page: Any) -> None:
    if page.continuation:
        print(f"more: add --continuation {page.continuation} for the next {args.page_size}", file=sys.stderr)


def copies_list(args: argparse.Namespace) -> int:
    page = _page(args, wiring.store().copies_page)
    if args.json:
        _print_json([{"model": str(copy.model), **copy.to_json()} for copy in page.items])
    for copy in [] if args.json else page.items:
        print(f"{copy.model}  {copy.step}  started by {copy.cause}{f'  ({copy.error})' if copy.error else ''}")
    _next_page(args, page)
    return 0


def copies_advance(args: argparse.Namespace) -> int:
    from promotion import service

    run = service.advance_registry_copies(**wiring.copy_ports())
    print(f"{run.copied} copied, {run.failed} failed, {run.copying} still copying, {run.errors} errors")
    return 1 if run.errors else 0


# --- lifecycle events ------------------------------------------------------------------------------


def events_list(args: argparse.Namespace) -> int:
    store = wiring.store()
    page = _page(args, lambda **paging: store.events_page(unpublished_only=args.unpublished, **paging))
    if args.json:
        _print_json([event.to_json() for event in page.items])
    for event in [] if args.json else page.items:
        state = f"published {event.to_json()['published_at']}" if event.published_at else "unpublished"
        print(f"{event.to_json()['time']}  {event.type.value:<36} {event.subject}  {event.id}  {state}")
    _next_page(args, page)
    return 0


def events_publish(args: argparse.Namespace) -> int:
    from promotion import service

    publisher = wiring.publisher()
    if publisher is None:
        raise CommandError("PROMOTION_EVENTS_ENDPOINT is not set: publishing is off (events are still recorded)")
    report = service.publish_pending(wiring.store(), publisher, clock=wiring.clock())
    print(f"published {report.published} lifecycle events")
    if report.error:
        return _fail(f"then publishing stopped: {report.error}", 1)
    return 0


# --- the local backend -----------------------------------------------------------------------------


def local_register(args: argparse.Namespace) -> int:
    """Everything is checked before anything is written, --notify included."""
    from promotion.adapters.local import InvalidModelFolder, check_model_source
    from promotion.cli.local import local_backend, model_registered_event, notify, webhook_url
    from promotion.ports import AlreadyExists

    settings = local_settings()
    model_type = args.type or default_model_type(args.path)
    model = ModelVersion(
        ref=ModelRef.parse(args.name, args.version),
        type=model_type,
        tags=pairs(args.tag, "--tag"),
        properties=pairs(args.property, "--property"),
        description=args.description,
    )
    url = webhook_url(args.notify) if args.notify else None
    try:
        check_model_source(model_type, args.path)
        registered = local_backend(settings).staging.register(model, args.path)
    except (AlreadyExists, InvalidModelFolder) as error:
        raise CommandError(str(error)) from None
    event = model_registered_event(registered, settings.staging_workspace_id)
    _print_json([event])
    if url:
        notify(url, [event])
    return 0


def local_tag(args: argparse.Namespace) -> int:
    from promotion.cli.local import local_backend

    ref = ModelRef.parse(args.name, args.version)
    tags = pairs(args.tag, "--tag")
    try:
        model = local_backend().staging.set_tags(ref, tags)
    except LookupError as error:
        raise CommandError(str(error)) from None
    print(f"{model.ref}  {' '.join(f'{key}={value}' for key, value in model.tags.items())}")
    return 0


def local_list(args: argparse.Namespace) -> int:
    from promotion.cli.local import local_backend

    settings = local_settings()
    backend = local_backend(settings)
    if args.where == "production":
        items: list[dict[str, Any]] = backend.production.list()
    else:
        items = [model.to_json() for model in getattr(backend, args.where).list()]
    if args.where == "registry":
        # The local registry holds a copy's files as soon as it starts; the timer adds the lineage and finishes it.
        steps = _copy_steps(settings.local_root / "promotions.sqlite3", items)
        items = [{**item, "copy": steps.get((item["name"], item["version"]))} for item in items]
    if args.json:
        _print_json(items)
    elif args.where == "production":
        for endpoint in items:
            print(f"{endpoint['name']}  traffic={json.dumps(endpoint['traffic'])}")
    else:
        for item in items:
            tags = " ".join(f"{key}={value}" for key, value in item["tags"].items())
            unfinished = f"  [{item['copy']}: not finished]" if item.get("copy") not in (None, "copied") else ""
            print(f"{item['name']}:{item['version']}  {item['type']}{unfinished}  {tags}")
    return 0


def _by_hand(action: Any) -> None:
    """Run a change outside the app on the local production folder; its refusals are user errors."""
    from promotion.ports import AlreadyExists, DeploymentFailed

    try:
        action()
    except (AlreadyExists, DeploymentFailed, LookupError, ValueError) as error:
        raise CommandError(str(error)) from None


def local_deploy_by_hand(args: argparse.Namespace) -> int:
    from promotion.cli.local import local_backend

    settings = local_settings()
    uri = settings.registry_model_uri(ModelRef.from_text(args.model))
    _by_hand(lambda: local_backend(settings).production.deploy_by_hand(args.endpoint, args.deployment, uri))
    print(f"{args.endpoint}/{args.deployment} serves {uri} (0% of the traffic)")
    return 0


def local_set_traffic(args: argparse.Namespace) -> int:
    from promotion.cli.local import local_backend

    traffic = {}
    for name, share in pairs(args.traffic, "--traffic").items():
        if not share.isdigit():
            raise CommandError(f"--traffic {name}={share}: expected a whole percent such as {name}=100")
        traffic[name] = int(share)
    _by_hand(lambda: local_backend().production.set_traffic_by_hand(args.endpoint, traffic))
    print(f"{args.endpoint} traffic={json.dumps(traffic)}")
    return 0


def local_delete_deployment(args: argparse.Namespace) -> int:
    from promotion.cli.local import local_backend

    _by_hand(lambda: local_backend().production.delete_deployment(args.endpoint, args.deployment))
    print(f"{args.endpoint}/{args.deployment} deleted")
    return 0


# --- drift -----------------------------------------------------------------------------------------


def run_drift(args: argparse.Namespace) -> int:
    from promotion import service

    report = service.detect_drift(**wiring.drift_ports())
    service.publish_soon(wiring.store(), wiring.publisher(), clock=wiring.clock())
    if args.json:
        _print_json(report.to_json())
        return 1 if report.errors else 0
    for finding in report.detected:
        print(f"drift found:    {describe_drift(finding)}")
    for finding in report.resolved:
        print(f"drift resolved: {describe_drift(finding)}")
    for endpoint, why in report.skipped.items():
        print(f"left for the next run: {endpoint}: {why}")
    for where, error in report.errors.items():
        print(f"error: {where}: {error}")
    print(
        f"{len(report.examined)} endpoints compared, {len(report.detected)} new findings, "
        f"{len(report.resolved)} resolved, {len(report.open)} open"
    )
    return 1 if report.errors else 0


def describe_drift(finding: Any) -> str:
    where = f"{finding.endpoint}/{finding.deployment}" if finding.deployment else finding.endpoint
    return f"{finding.kind.value} on {where}: expected {json.dumps(dict(finding.expected))}, " + (
        f"found {json.dumps(dict(finding.actual))}"
    )


def _copy_steps(store_file: Path, items: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """Where the copy of each listed registry version stands (copying, tagging, copied, copy_failed), from the
    local store when there is one; nothing is created to find out."""
    if not store_file.is_file():
        return {}
    from promotion.adapters.sqlite import SqlitePromotionStore

    store = SqlitePromotionStore(store_file)
    found = {}
    for item in items:
        copy = store.copy(ModelRef(item["name"], item["version"]))
        if copy is not None:
            found[(item["name"], item["version"])] = copy.step
    return found


def run_serve(args: argparse.Namespace) -> int:
    from promotion.cli.serve import Identity, run
    from promotion.identity import visible_text

    if not 0 < args.port < 65536:
        raise CommandError(f"--port {args.port}: expected a port number from 1 to 65535")
    if args.role and not args.who:
        raise CommandError("--role needs --as NAME: the roles are that person's")
    if args.who is not None and not visible_text(args.who):
        raise CommandError("--as: expected a name with visible characters")
    roles = tuple(role for role in (visible_text(role) for role in args.role) if role)
    return run(args.port, Identity(visible_text(args.who), roles) if args.who else None)


def run_demo(args: argparse.Namespace) -> int:
    from promotion.cli.demo import run

    return run()
