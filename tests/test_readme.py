"""The README's command reference and quick start stay true to the code."""
from __future__ import annotations

from pathlib import Path

from nucleus.cli import reference_markdown

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_lists_every_command_and_flag():
    assert reference_markdown() in README.read_text(), (
        "README command reference is stale: paste nucleus.cli.reference_markdown() into it")


def test_ci_runs_the_readme_test_command():
    readme = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    command = ('pip install -e ".[test]" && python -m pytest -q tests'
               ' && KERAS_BACKEND=jax python -m pytest -q -m backends tests')
    assert command in readme and command in ci


def test_readme_installs_without_tensorflow_from_the_jax_requirements():
    readme = README.read_text()
    assert "pip install -r requirements-jax.txt && pip install --no-deps ." in readme
    assert (README.parent / "requirements-jax.txt").is_file()
