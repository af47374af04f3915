"""The README as tested truth: its `console` examples run in the order shown, on a fresh local state, and print
what the README shows.

In a ```console block, a line starting with `$ ` is a command; the lines after it, up to the next command, are
output the command must print, in that order (other lines may come between them), where `…` stands for any text.
A command must exit 0. `source .venv/bin/activate` and `export NAME=value` change the environment of the commands
after them, as in a shell. Blocks in other languages (bash, json) show what needs Azure or Core Tools and are not run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
VENV = Path(sys.prefix)


@dataclass
class Command:
    line: str
    expected: list[str] = field(default_factory=list)


def console_commands(text: str) -> list[Command]:
    commands: list[Command] = []
    for block in re.findall(r"^```console\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        for line in block.splitlines():
            if line.startswith("$ "):
                commands.append(Command(line[2:].strip()))
            elif line.strip() and line.strip() != "…":
                commands[-1].expected.append(line)
    return commands


def matches(expected: str, actual: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in expected.rstrip().split("…"))
    return re.fullmatch(pattern, actual.rstrip()) is not None


def missing_lines(expected: list[str], output: str) -> list[str]:
    """The expected lines not found, in order, among the output's lines."""
    lines = iter(output.splitlines())
    return [wanted for wanted in expected if not any(matches(wanted, line) for line in lines)]


def test_the_readme_has_console_examples_for_the_quick_start_and_the_cli():
    commands = [command.line for command in console_commands(README.read_text(encoding="utf-8"))]
    assert commands[0] == "make demo"
    assert any(line.startswith("promotion policy check") for line in commands)
    assert any(line.startswith("promotion reconcile") for line in commands)


def test_the_output_matcher_can_fail():
    assert missing_lines(["a …", "c"], "a b\nc") == []
    assert missing_lines(["c", "a …"], "a b\nc") == ["a …"]  # order matters
    assert missing_lines(["a"], "ab") == ["a"]  # whole lines only


def test_every_console_example_works_as_shown_in_the_order_shown(tmp_path):
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PROMOTION_", "AZURE_", "STAGING_", "REGISTRY_", "PRODUCTION_", "WEBSITE_"))
        and key not in ("AzureWebJobsStorage", "VIRTUAL_ENV")
    }
    env["PROMOTION_LOCAL_ROOT"] = str(tmp_path / "state")  # a fresh state, as on a fresh clone
    for command in console_commands(README.read_text(encoding="utf-8")):
        if command.line == "source .venv/bin/activate":
            env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env['PATH']}"
            env["VIRTUAL_ENV"] = str(VENV)
            continue
        if command.line.startswith("export "):
            name, _, value = command.line.removeprefix("export ").partition("=")
            env[name] = value
            continue
        line = command.line
        if line == "make demo":  # the venv this test runs in, already installed
            line = f"make demo VENV={shlex.quote(str(VENV))} -o {shlex.quote(str(VENV / '.installed'))}"
        result = subprocess.run(["bash", "-c", line], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"`{command.line}` exited {result.returncode}:\n{output}"
        missing = missing_lines(command.expected, output)
        assert missing == [], f"`{command.line}` did not print, in order:\n" + "\n".join(missing) + f"\n\n{output}"


if __name__ == "__main__":  # pragma: no cover - a quick way to see the commands
    for found in console_commands(README.read_text(encoding="utf-8")):
        print(found.line, found.expected, sep="\n    ")
    pytest.main([__file__])


def test_the_lifecycle_event_table_lists_exactly_the_events_the_app_publishes():
    from promotion.domain import EventType

    section = README.read_text(encoding="utf-8").split("## Notifications: lifecycle events", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `(ModelPromotion\.\w+)` \|", section, flags=re.MULTILINE)
    assert listed == [event.value for event in EventType]
