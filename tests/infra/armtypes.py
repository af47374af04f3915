"""Checks Bicep resource bodies against Azure's own resource types (the bicep-types-az data), offline.

For each resource `type@apiVersion`: the type exists; every literal property name is known (case-insensitively, as
in ARM); every literal enum value and primitive type matches; required properties are present; no read-only
property is written. Values only known at deployment (`Expr`) are accepted where they stand, and their insides are
not checked: that is the compiler's job, and none can be installed here.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path

from tests.infra.bicep import Choice, Expr, Obj, Resource

REQUIRED, READ_ONLY = 1, 2
# Bicep's own keywords in a resource body; they are not properties of the resource type.
RESOURCE_KEYWORDS = {"scope", "parent", "dependson"}


def shared_types_dir(repo_root: Path) -> Path:
    """Where CI keeps the type data: `../shared/bicep-types` beside the checkout."""
    return repo_root.parent / "shared" / "bicep-types"


@dataclass(frozen=True)
class _Table:
    types: list[dict]

    def at(self, ref: dict) -> dict:
        return self.types[int(ref["$ref"].rsplit("/", 1)[1])]


class TypeIndex:
    """Every ResourceType of every types.json under a folder, by lower-case `type@apiVersion`."""

    def __init__(self, folder: Path) -> None:
        self._resources: dict[str, tuple[_Table, dict]] = {}
        self._functions: dict[str, tuple[_Table, dict]] = {}
        for path in sorted(folder.rglob("types.json")):
            table = _Table(json.loads(path.read_text()))
            for entry in table.types:
                if entry["$type"] == "ResourceType":
                    self._resources[entry["name"].lower()] = (table, entry)
                elif entry["$type"] == "ResourceFunctionType":
                    key = f"{entry['resourceType']}@{entry['apiVersion']}#{entry['name']}".lower()
                    self._functions[key] = (table, entry)

    def has(self, type_name: str, api_version: str) -> bool:
        return f"{type_name}@{api_version}".lower() in self._resources

    def has_function(self, type_name: str, api_version: str, name: str) -> bool:
        return f"{type_name}@{api_version}#{name}".lower() in self._functions

    def api_versions(self, type_name: str) -> list[str]:
        prefix = type_name.lower() + "@"
        return sorted(key.split("@", 1)[1] for key in self._resources if key.startswith(prefix))

    def check(self, resource: Resource) -> list[str]:
        """Problems with one resource, each naming the file, line and property path."""
        where = f"{resource.file.name}:{resource.line} {resource.symbol}"
        key = f"{resource.type}@{resource.api_version}".lower()
        if key not in self._resources:
            known = self.api_versions(resource.type)
            hint = f" (known versions: {', '.join(known)})" if known else " (unknown resource type)"
            return [f"{where}: {resource.type}@{resource.api_version} does not exist{hint}"]
        if resource.existing or not isinstance(resource.body, Obj):
            return []  # an existing resource's body names it; it writes nothing
        table, entry = self._resources[key]
        body = Obj(
            {k: v for k, v in resource.body.items.items() if k.lower() not in RESOURCE_KEYWORDS},
            line=resource.body.line,
        )
        problems: list[str] = []
        _Checker(table, problems, where).check(body, table.at(entry["body"]), "")
        return problems


class _Checker:
    def __init__(self, table: _Table, problems: list[str], where: str) -> None:
        self.table, self.problems, self.where = table, problems, where

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{self.where}: {path or '<body>'}: {message}")

    def errors(self, value: object, type_: dict, path: str) -> list[str]:
        """The problems `value` would have as `type_`, without recording them (for unions)."""
        saved, self.problems = self.problems, []
        try:
            self.check(value, type_, path)
            return self.problems
        finally:
            self.problems = saved

    def check(self, value: object, type_: dict, path: str) -> None:
        if isinstance(value, Expr) or value is None:
            return
        if isinstance(value, Choice):
            for option in value.options:
                self.check(option, type_, path)
            return
        kind = type_["$type"]
        if kind == "AnyType":
            return
        if kind == "StringType":
            if not isinstance(value, str):
                self.fail(path, f"expected a string, got {_show(value)}")
        elif kind == "IntegerType":
            if not isinstance(value, int) or isinstance(value, bool):
                self.fail(path, f"expected an integer, got {_show(value)}")
        elif kind == "BooleanType":
            if not isinstance(value, bool):
                self.fail(path, f"expected a boolean, got {_show(value)}")
        elif kind == "StringLiteralType":
            if not isinstance(value, str) or value.lower() != type_["value"].lower():
                self.fail(path, f"expected '{type_['value']}', got {_show(value)}")
        elif kind == "UnionType":
            self._union(value, [self.table.at(ref) for ref in type_["elements"]], path)
        elif kind == "ArrayType":
            if not isinstance(value, list):
                self.fail(path, f"expected an array, got {_show(value)}")
                return
            item = self.table.at(type_["itemType"])
            for index, element in enumerate(value):
                self.check(element, item, f"{path}[{index}]")
        elif kind == "ObjectType":
            self._object(value, type_["properties"], type_.get("additionalProperties"), path)
        elif kind == "DiscriminatedObjectType":
            self._discriminated(value, type_, path)
        else:
            self.fail(path, f"cannot check a {kind}")

    def _union(self, value: object, options: list[dict], path: str) -> None:
        outcomes = [self.errors(value, option, path) for option in options]
        if any(not problems for problems in outcomes):
            return
        literals = [option["value"] for option in options if option["$type"] == "StringLiteralType"]
        if literals and isinstance(value, str):
            self.fail(path, f"{_show(value)} is not one of: {', '.join(literals)}")
        else:
            self.problems.extend(min(outcomes, key=len))

    def _object(self, value: object, properties: dict, additional: dict | None, path: str) -> None:
        if not isinstance(value, Obj):
            self.fail(path, f"expected an object, got {_show(value)}")
            return
        by_name = {name.lower(): (name, spec) for name, spec in properties.items()}
        for key, item in value.items.items():
            here = f"{path}.{key}" if path else key
            if key.lower() not in by_name:
                if additional is not None:
                    self.check(item, self.table.at(additional), here)
                else:
                    close = difflib.get_close_matches(key.lower(), list(by_name), n=3, cutoff=0.6)
                    hint = f" (did you mean {', '.join(by_name[name][0] for name in close)}?)" if close else ""
                    self.fail(here, f"unknown property{hint}")
                continue
            _, spec = by_name[key.lower()]
            if spec.get("flags", 0) & READ_ONLY:
                self.fail(here, "read-only property written")
                continue
            self.check(item, self.table.at(spec["type"]), here)
        written = {key.lower() for key in value.items}
        for name, spec in properties.items():
            flags = spec.get("flags", 0)
            if flags & REQUIRED and not flags & READ_ONLY and name.lower() not in written:
                self.fail(f"{path}.{name}" if path else name, "required property missing")

    def _discriminated(self, value: object, type_: dict, path: str) -> None:
        if not isinstance(value, Obj):
            self.fail(path, f"expected an object, got {_show(value)}")
            return
        discriminator = type_["discriminator"]
        chosen = value.get(discriminator)
        elements = {name.lower(): ref for name, ref in type_["elements"].items()}
        base = type_.get("baseProperties", {})
        if isinstance(chosen, str):
            ref = elements.get(chosen.lower())
            if ref is None:
                self.fail(
                    f"{path}.{discriminator}" if path else discriminator,
                    f"{_show(chosen)} is not one of: {', '.join(type_['elements'])}",
                )
                return
            element = self.table.at(ref)
            self._object(value, {**base, **element["properties"]}, element.get("additionalProperties"), path)
        elif chosen is None and discriminator.lower() not in {key.lower() for key in value.items}:
            self.fail(f"{path}.{discriminator}" if path else discriminator, "required property missing")
        else:  # chosen at deployment: accept the body if any variant accepts it
            outcomes = [self.errors(value, _merged(self.table.at(ref), base), path) for ref in elements.values()]
            if all(outcomes):
                self.problems.extend(min(outcomes, key=len))


def _merged(element: dict, base: dict) -> dict:
    return {**element, "properties": {**base, **element["properties"]}}


def _show(value: object) -> str:
    if isinstance(value, Obj):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return repr(value)
