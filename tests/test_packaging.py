"""The project installs as a package with a `promotion` command, and `make` refuses a Python older than 3.10."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_promotion_console_script_is_installed_and_runs():
    [script] = [entry for entry in entry_points(group="console_scripts") if entry.name == "promotion"]
    assert script.value == "promotion.cli:main"
    command = Path(sys.executable).with_name("promotion")
    assert command.exists(), "run `pip install -e .` (make does)"
    result = subprocess.run([str(command), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "policy" in result.stdout and "reconcile" in result.stdout


def test_the_package_declares_its_python_and_its_dependencies_once():
    from importlib.metadata import metadata, requires

    assert metadata("azureml-model-promotion")["Requires-Python"] == ">=3.10"

    def normalised(text: str) -> tuple[str, frozenset[str], str]:
        requirement, _, marker = text.partition(";")
        name, *specifiers = re.split(r"(?=[<>=!~])", requirement.strip(), maxsplit=1)
        return name, frozenset("".join(specifiers).replace(" ", "").split(",")), marker.replace(" ", "")

    declared = {normalised(line) for line in requires("azureml-model-promotion") or []}
    listed = {
        normalised(line)
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert declared == listed  # pyproject reads requirements.txt: one list, what Azure installs


def test_make_refuses_a_python_older_than_3_10(tmp_path):
    old_python = tmp_path / "python3.9"
    old_python.write_text("#!/bin/sh\n# stands in for Python 3.9: the version check fails\nexit 1\n")
    old_python.chmod(0o755)

    result = subprocess.run(
        ["make", "-C", str(ROOT), "check-python", f"PYTHON={old_python}"], capture_output=True, text=True, timeout=60
    )

    assert result.returncode != 0
    assert "is not Python 3.10 or newer" in result.stderr
    assert not (tmp_path / ".venv").exists()


def test_make_accepts_this_python():
    assert shutil.which("make")
    result = subprocess.run(
        ["make", "-C", str(ROOT), "check-python", f"PYTHON={sys.executable}"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_a_non_editable_install_refuses_to_guess_an_app_root(tmp_path):
    """`pip install .` copies the package and function_app.py into site-packages, without host.json or the policy:
    the command says how to install it instead, and writes nothing into site-packages."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "requirements.txt", "README.md", "LICENSE", "function_app.py"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "promotion", source / "promotion", ignore=shutil.ignore_patterns("__pycache__"))
    site = tmp_path / "site-packages"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check"]
        + ["--target", str(site), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    assert (site / "function_app.py").is_file() and not (site / "host.json").exists()

    command = (
        "import sys; sys.path.insert(0, sys.argv[1]); import promotion; "
        "assert promotion.__file__.startswith(sys.argv[1]), promotion.__file__; "
        "from promotion.cli import main; sys.exit(main(['local', 'list', 'staging']))"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", command, str(site)],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "installed package (pip install .)" in result.stderr and "pip install -e ." in result.stderr
    assert not (site / ".promotion").exists()


def test_make_says_when_the_python_command_does_not_exist(tmp_path):
    missing = "python3.12-that-does-not-exist"
    result = subprocess.run(
        ["make", "-C", str(ROOT), "check-python", f"PYTHON={missing}"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert f"{missing}: command not found" in result.stderr
    assert "not Python 3.10 or newer" not in result.stderr


def test_the_console_files_ship_in_the_package_and_in_the_deployment():
    import fnmatch

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    shipped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["promotion"]
    files = sorted(path.relative_to(ROOT / "promotion").as_posix() for path in (ROOT / "promotion/console").iterdir())
    assert files == ["console/app.css", "console/app.js", "console/index.html"]
    assert all(any(fnmatch.fnmatch(name, pattern) for pattern in shipped) for name in files)
    ignored = [line.strip() for line in (ROOT / ".funcignore").read_text().splitlines() if line.strip()]
    for name in ("promotion", "promotion/console", *(f"promotion/{name}" for name in files)):
        assert not any(fnmatch.fnmatch(name, pattern) for pattern in ignored), name
