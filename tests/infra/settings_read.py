"""The names of the environment settings the app's code reads, derived from its source, so that a setting added
later is caught without anyone updating a list."""

from __future__ import annotations

import ast
import re
from pathlib import Path

# Upper-case names with an underscore (PROMOTION_X, AZURE_CLIENT_ID, WEBSITE_AUTH_ENABLED), and the host's own.
SETTING_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|AzureWebJobs[A-Za-z]*(?:__[A-Za-z]+)?")


def settings_read(sources: list[Path]) -> set[str]:
    """Every string literal shaped like a setting name used as a value in the code: a call's argument, a subscript,
    a dict key or a constant. Docstrings, `__all__` and f-strings are not reads."""
    found: set[str] = set()
    for path in sources:
        tree = ast.parse(path.read_text(), str(path))
        skipped: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
            ):
                skipped.update(id(inner) for inner in ast.walk(node.value))
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
                first = node.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                    skipped.add(id(first.value))
            if isinstance(node, ast.JoinedStr):
                skipped.update(id(inner) for inner in ast.walk(node))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in skipped
                and SETTING_NAME.fullmatch(node.value)
            ):
                found.add(node.value)
    return found
