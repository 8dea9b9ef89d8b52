"""The README's two opening commands stay true: CI runs the README's test command verbatim."""

import re

from conftest import REPO_ROOT


def readme_commands() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", readme, re.DOTALL).group(1)
    return [line for line in first_block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_opens_with_two_commands_each_installing():
    commands = readme_commands()
    assert len(commands) == 2
    for command in commands:
        assert command.startswith("python -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0")


def test_ci_runs_the_readme_test_command():
    main_job, test_command = readme_commands()
    assert "training/train.py" in main_job and "pytest" in test_command
    ci_lines = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test_command in ci_lines
