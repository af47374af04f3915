"""Reading Bicep files offline: a tree-sitter parse, and the literal values of resource bodies.

No Bicep compiler can be installed here, so this reads what a parse can show: declarations, literal strings,
numbers, booleans, objects and arrays, and the comments beside them. Any other expression (a parameter, a function
call, an interpolated string) is kept as an `Expr`: its value is unknown until deployment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import tree_sitter_bicep
from tree_sitter import Language, Node, Parser

INFRA = Path(__file__).resolve().parents[2] / "infra"


@cache
def _parser() -> Parser:
    return Parser(Language(tree_sitter_bicep.language()))


def parse(text: str) -> Node:
    return _parser().parse(text.encode()).root_node


def syntax_errors(root: Node) -> list[str]:
    """Every ERROR or MISSING node, as `line:column what`."""
    found: list[str] = []

    def walk(node: Node) -> None:
        if node.is_error or node.is_missing:
            kind = "missing " + node.type if node.is_missing else "unexpected " + repr(node.text.decode()[:40])
            found.append(f"{node.start_point[0] + 1}:{node.start_point[1] + 1} {kind}")
        for child in node.children:
            walk(child)

    walk(root)
    return found


@dataclass(frozen=True)
class Expr:
    """A value only known at deployment (a parameter, a call, an interpolated string...)."""

    text: str


@dataclass(frozen=True)
class Choice:
    """`cond ? a : b`: either branch may be deployed."""

    options: tuple[object, ...]


@dataclass
class Obj:
    """A literal object: keys as written, values, and the comment written on each property's line."""

    items: dict[str, object] = field(default_factory=dict)
    comments: dict[str, str] = field(default_factory=dict)
    line: int = 0

    def get(self, key: str, default: object = None) -> object:
        for name, value in self.items.items():
            if name.lower() == key.lower():
                return value
        return default


@dataclass
class Resource:
    symbol: str
    type: str  # full type, such as Microsoft.Web/sites/config
    api_version: str
    existing: bool
    body: object  # an Obj, or an Expr
    line: int
    file: Path
    conditional: bool = False
    loop: bool = False
    condition: str = ""  # the text of `if (...)`, empty when unconditional


@dataclass
class Module:
    symbol: str
    path: str
    body: object
    line: int
    conditional: bool = False


def _string(node: Node) -> str | None:
    """The value of a string without interpolation, else None."""
    if node.type == "multiline_string":
        return node.text.decode()[3:-3].lstrip("\n")
    parts = []
    for child in node.children:
        if child.type == "string_content":
            parts.append(child.text.decode())
        elif child.type == "escape_sequence":
            escapes = {"\\'": "'", "\\\\": "\\", "\\n": "\n", "\\r": "\r", "\\t": "\t", "\\$": "$"}
            parts.append(escapes.get(child.text.decode(), child.text.decode()))
        elif child.type != "'":
            return None
    return "".join(parts)


def value(node: Node) -> object:
    """A node's literal value: str, int, bool, None, Obj, list, Choice, or Expr."""
    kind = node.type
    if kind in ("string", "multiline_string"):
        text = _string(node)
        return Expr(node.text.decode()) if text is None else text
    if kind == "number":
        return int(node.text.decode())
    if kind == "boolean":
        return node.text.decode() == "true"
    if kind == "null":
        return None
    if kind == "unary_expression" and node.text.decode().lstrip("-").strip().isdigit():
        return int(node.text.decode().replace(" ", ""))
    if kind == "object":
        return _object(node)
    if kind == "array":
        return [value(child) for child in node.named_children if child.type != "comment"]
    if kind == "ternary_expression":
        branches = [child for child in node.named_children if child.type != "comment"]
        return Choice((value(branches[1]), value(branches[2])))
    if kind == "parenthesized_expression":
        inner = [child for child in node.named_children if child.type != "comment"]
        return value(inner[0]) if len(inner) == 1 else Expr(node.text.decode())
    return Expr(node.text.decode())


def _object(node: Node) -> Obj:
    obj = Obj(line=node.start_point[0] + 1)
    last_key: str | None = None
    last_line = -1
    for child in node.named_children:
        if child.type == "comment":
            if last_key is not None and child.start_point[0] == last_line:
                obj.comments[last_key] = child.text.decode().lstrip("/").strip()
            continue
        if child.type != "object_property":
            continue
        named = [c for c in child.named_children if c.type != "comment"]
        if len(named) == 1 and named[0].type == "resource_declaration":
            continue  # a nested child resource, read by resources()
        if len(named) < 2:
            continue  # a spread (`...other`) or something else that has no key
        key_node, value_node = named[0], named[-1]
        key = _string(key_node) if key_node.type == "string" else key_node.text.decode()
        if key is None:
            continue
        obj.items[key] = value(value_node)
        last_key, last_line = key, child.end_point[0]
        for inner in child.named_children:  # a comment after the value, still inside the property node
            if inner.type == "comment" and inner.start_point[0] == child.start_point[0]:
                obj.comments[key] = inner.text.decode().lstrip("/").strip()
    return obj


def _condition(node: Node) -> str:
    while node.type == "for_statement":
        inner = [c for c in node.named_children if c.type in ("object", "if_statement")]
        if not inner:
            return ""
        node = inner[-1]
    if node.type != "if_statement":
        return ""
    test = [c for c in node.named_children if c.type == "parenthesized_expression"]
    return test[0].text.decode()[1:-1].strip() if test else ""


def _body(node: Node) -> tuple[object, bool, bool]:
    """The object of a declaration, unwrapping `if (...) {...}` and `[for ...: {...}]`."""
    conditional = loop = False
    while True:
        if node.type == "if_statement":
            conditional = True
            node = [c for c in node.named_children if c.type in ("object", "for_statement")][-1]
        elif node.type == "for_statement":
            loop = True
            inner = [c for c in node.named_children if c.type in ("object", "if_statement")]
            if not inner:
                return Expr(node.text.decode()), conditional, loop
            node = inner[-1]
        else:
            return value(node), conditional, loop


def resources(root: Node, file: Path) -> list[Resource]:
    found: list[Resource] = []

    def declare(node: Node, parent: Resource | None) -> None:
        named = [c for c in node.named_children if c.type != "comment"]
        symbol = named[0].text.decode()
        type_text = _string(named[1]) or ""
        type_name, _, api = type_text.partition("@")
        if parent is not None and "." not in type_name:  # a child declared inside its parent: a relative type
            type_name = f"{parent.type}/{type_name}"
            api = api or parent.api_version
        existing = any(c.type == "existing" for c in node.children)
        body, conditional, loop = _body(named[-1])
        resource = Resource(
            symbol,
            type_name,
            api,
            existing,
            body,
            node.start_point[0] + 1,
            file,
            conditional,
            loop,
            _condition(named[-1]),
        )
        found.append(resource)
        obj_node = named[-1]
        while obj_node.type in ("if_statement", "for_statement"):
            obj_node = [c for c in obj_node.named_children if c.type in ("object", "if_statement", "for_statement")][-1]
        for prop in obj_node.named_children if obj_node.type == "object" else []:
            for inner in prop.named_children:
                if inner.type == "resource_declaration":
                    declare(inner, resource)

    for node in root.named_children:
        if node.type == "resource_declaration":
            declare(node, None)
    return found


def modules(root: Node) -> list[Module]:
    found = []
    for node in root.named_children:
        if node.type == "module_declaration":
            named = [c for c in node.named_children if c.type != "comment"]
            body, conditional, _ = _body(named[-1])
            found.append(
                Module(named[0].text.decode(), _string(named[1]) or "", body, node.start_point[0] + 1, conditional)
            )
    return found


REQUIRED = Expr("<no default>")


def parameters(root: Node) -> dict[str, object]:
    """Each `param` of a file and its default value (`REQUIRED` without one)."""
    found: dict[str, object] = {}
    for node in root.named_children:
        if node.type == "parameter_declaration":
            named = [c for c in node.named_children if c.type != "comment"]
            has_default = any(c.type == "=" for c in node.children)
            found[named[0].text.decode()] = value(named[-1]) if has_default else REQUIRED
    return found


def variables(root: Node) -> dict[str, object]:
    """Each `var` of a file and its value."""
    found: dict[str, object] = {}
    for node in root.named_children:
        if node.type == "variable_declaration":
            named = [c for c in node.named_children if c.type != "comment"]
            found[named[0].text.decode()] = value(named[-1])
    return found


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))
