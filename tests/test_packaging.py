"""The project's install files agree with each other and with the README."""

import re
import tomllib

import yaml

from tests.conftest import REPO_ROOT


def requirement_names(requirements):
    return {re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0].strip().lower() for r in requirements}


def test_environment_yml_mirrors_pyproject_dependencies():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    environment = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    conda_pip = [r for r in pip_section if not r.startswith("-e")]
    assert requirement_names(conda_pip) == requirement_names(project["dependencies"])


def test_torch_requirement_is_a_range():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    torch_requirement = next(r for r in project["dependencies"] if r.startswith("torch>") or r.startswith("torch="))
    assert ">=" in torch_requirement and "==" not in torch_requirement


def test_ci_runs_the_readme_test_command():
    readme = (REPO_ROOT / "README.md").read_text()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    command = 'pip install -e ".[test]" && ruff check . && pytest -q'
    assert command in readme and command in ci
