"""The README's Identity example (the curls of "The HTTP API"), replayed through the functions with the headers it
defines: each request answers what its comment says."""

from __future__ import annotations

import base64
import re
import shlex
from pathlib import Path

from promotion.domain import ModelRef
from tests.functions.conftest import Output, http
from tests.functions.test_api import put_in_registry

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def example() -> str:
    [block] = [b for b in re.findall(r"```bash\n(.*?)```", README, re.DOTALL) if b.startswith("API=")]
    return block


def people(block: str) -> dict[str, dict[str, str]]:
    """The header arrays (ALICE=(-H "…" …)), with $APPROVER_ROLE worked out as the shell would."""
    [claims] = re.findall(r"APPROVER_ROLE=\$\(printf '(.*?)' \| base64 -w0\)", block)
    role = base64.b64encode(claims.encode()).decode()
    found = {}
    for name, body in re.findall(r"^(\w+)=\((.*?)\)[ ]*(?:#[^\n]*)?$", block, re.DOTALL | re.MULTILINE):
        words = shlex.split(body.replace("$APPROVER_ROLE", role), comments=True)
        headers = [words[i + 1] for i, word in enumerate(words) if word == "-H"]
        found[name] = dict(header.split(": ", 1) for header in headers)
    return found


def curls(block: str) -> list[tuple[str, str, str]]:
    """(person, route after $API, comment) of each curl."""
    return re.findall(r'^curl -s "\$\{(\w+)\[@\]\}" (?:-X \w+ )?\$API/(\S+).*?(?:#\s*(.*))?$', block, re.MULTILINE)


def test_the_identity_example_answers_what_its_comments_say(local_app):
    put_in_registry(local_app, ModelRef("taxi-fare", "100"))
    block = example()
    who = people(block)
    assert set(who) == {"ALICE", "BOB", "CAROL"}

    status, created = http(
        "request_promotion",
        "POST",
        "promotions",
        who=who["ALICE"],
        body={"model_name": "taxi-fare", "model_version": "100", "reason": "better MAE"},
    )
    assert status == 201
    route = {"route_params": {"id": created["id"]}}
    answers = {}
    for person, target, comment in curls(block):
        if target == "promotions/$ID/approve":
            status, body = http(
                "approve_promotion",
                "POST",
                f"promotions/{created['id']}/approve",
                who=who[person],
                body={"comment": "metrics reviewed"} if person == "CAROL" else None,
                jobs=Output(),
                **route,
            )
            answers[person] = (status, body, comment)

    assert answers["BOB"][:1] == (403,) and "is not an approver" in answers["BOB"][1]["error"]
    assert answers["BOB"][2].startswith("403: bob is not an approver")
    assert answers["ALICE"][:1] == (403,) and "may not decide it" in answers["ALICE"][1]["error"]
    assert answers["ALICE"][2].startswith("403: an approver, but the requester")
    assert answers["CAROL"][0] == 202 and answers["CAROL"][2] == "202"
