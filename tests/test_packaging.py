"""The package, its command line and the two dependency lists stay consistent."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

import tcmplib

REPO = Path(__file__).resolve().parents[1]


def _normalise(requirement: str) -> str:
    """Lower-case, '_' -> '-', no spaces: how pip compares requirement names."""
    match = re.match(r"^([A-Za-z0-9_.\-]+)(.*)$", requirement.strip())
    assert match is not None, f"unparsable requirement {requirement!r}"
    name, rest = match.groups()
    return name.lower().replace("_", "-") + rest.replace(" ", "")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_environment_yml_lists_exactly_the_pyproject_requirements() -> None:
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    wanted = {_normalise(r) for r in project["dependencies"] + extras["book"] + extras["test"]}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {_normalise(r) for r in pip_section if not r.startswith("-e")}
    assert listed == wanted, (
        f"environment.yml and pyproject.toml disagree: only in environment.yml "
        f"{sorted(listed - wanted)}, only in pyproject.toml {sorted(wanted - listed)}"
    )


def test_jupyter_book_is_pinned_below_2() -> None:
    book = [
        r
        for r in _pyproject()["project"]["optional-dependencies"]["book"]
        if r.startswith("jupyter-book")
    ]
    assert book == ["jupyter-book>=1.0.4.post1,<2"]


def test_package_is_typed() -> None:
    assert (Path(tcmplib.__file__).parent / "py.typed").is_file()


def test_cli_help_and_version() -> None:
    run = [sys.executable, "-m", "tcmplib.cli"]
    help_text = subprocess.run([*run, "--help"], capture_output=True, text=True, check=True)
    assert "usage: tcmp" in help_text.stdout
    version = subprocess.run([*run, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"tcmp {tcmplib.__version__}"


def test_no_generated_files_are_tracked() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    generated = [
        f
        for f in tracked.stdout.splitlines()
        if f.startswith(("_build/", ".venv/", "runs/"))
        or "__pycache__" in f
        or f.endswith((".pyc", ".egg-info"))
    ]
    assert generated == []
