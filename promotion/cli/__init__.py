"""Command line: `promotion --help` (or `python -m promotion --help`).

Exit status: 0 when the command ran; 2 for a usage or configuration error, a missing Azure sign-in, or a model
that is not where the command looked (one line on stderr); 1 when Azure or the store answered with an error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from promotion import wiring
from promotion.cli.local import CommandError, default_model_type, local_settings, pairs
from promotion.domain import MODEL_TYPES, InvalidName, ModelRef, ModelVersion
from promotion.policy import Policy, PolicyError
from promotion.settings import SettingsError

PAGE_SIZE = 100  # what `copies list` and `events list` print at once; the rest is paged, never loaded whole


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    wiring.reset()  # settings come from this process's environment as it is now
    # The SDKs' own warnings (azure-identity lists every credential it tried) would bury the one line this prints.
    logging.getLogger("azure").setLevel(logging.ERROR)
    try:
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

    commands.add_parser("demo", help="run the whole flow on the local backend, step by step").set_defaults(run=run_demo)
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

    candidate = Policy.load(args.policy)  # a command-line path: relative to where the command runs
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
        print(f"{copy.model}  {copy.state.value}  started by {copy.cause}{f'  ({copy.error})' if copy.error else ''}")
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

    backend = local_backend()
    if args.where == "production":
        items: list[dict[str, Any]] = backend.production.list()
    else:
        items = [model.to_json() for model in getattr(backend, args.where).list()]
    if args.json:
        _print_json(items)
    elif args.where == "production":
        for endpoint in items:
            print(f"{endpoint['name']}  traffic={json.dumps(endpoint['traffic'])}")
    else:
        for item in items:
            tags = " ".join(f"{key}={value}" for key, value in item["tags"].items())
            print(f"{item['name']}:{item['version']}  {item['type']}  {tags}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from promotion.cli.demo import run

    return run()
