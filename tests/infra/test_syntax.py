"""Every .bicep file parses with tree-sitter-bicep, without error or missing nodes."""

from __future__ import annotations

from tests.infra import bicep

EXPECTED = {
    "main.bicep",
    "grants.bicep",
    "eventgrid.bicep",
    "app/function.bicep",
    "app/rbac.bicep",
    "app/roles.bicep",
    "app/events-topic.bicep",
    "core/identity.bicep",
    "core/monitoring.bicep",
    "core/storage.bicep",
}


def test_every_bicep_file_parses(infra):
    assert set(infra) >= EXPECTED
    problems = {name: bicep.syntax_errors(root) for name, root in infra.items()}
    assert {name: found for name, found in problems.items() if found} == {}


def test_a_syntax_error_is_found_with_its_line():
    broken = "param a string\nresource x 'Microsoft.Web/sites@2024-11-01' = {\n  name: 'it's'\n}\n"
    found = bicep.syntax_errors(bicep.parse(broken))
    assert found and found[0].startswith("3:")


def test_an_unclosed_object_is_missing_a_brace():
    assert bicep.syntax_errors(bicep.parse("var a = {\n  b: 1\n"))


def test_every_module_path_exists_and_gets_its_required_parameters(infra):
    for name, root in infra.items():
        folder = (bicep.INFRA / name).parent
        for module in bicep.modules(root):
            target = folder / module.path
            assert target.is_file(), f"{name}:{module.line} module {module.symbol}: {module.path} does not exist"
            declared = bicep.parameters(bicep.parse(target.read_text()))
            given = module.body.get("params")
            given_names = set(given.items) if isinstance(given, bicep.Obj) else set()
            assert given_names <= set(declared), f"{name}:{module.line}: unknown {given_names - set(declared)}"
            required = {param for param, default in declared.items() if default is bicep.REQUIRED}
            assert required <= given_names, f"{name}:{module.line}: {module.symbol} lacks {required - given_names}"
