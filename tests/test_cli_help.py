"""Every ``heartseg`` command's ``--help`` fits one screen of 100 columns and shows flags as flags (``--force``, not
``--force <bool>``)."""

from __future__ import annotations

import re

import pytest
import typer
from typer._click import Command
from typer.testing import CliRunner

from scheduler.cli import app

#: The most lines a ``--help`` may take at 100 columns: one screen.
MAX_LINES = 40
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def command_paths(command: Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The path of ``command`` and of every command below it (``()``, ``("db",)``, ``("db", "upgrade")``, ...)."""
    below = getattr(command, "commands", {})
    return [path, *(p for name, sub in below.items() for p in command_paths(sub, (*path, name)))]


COMMANDS = command_paths(typer.main.get_command(app))


def test_every_command_is_checked() -> None:
    names = {" ".join(path) for path in COMMANDS}
    assert {"", "submit", "run", "report", "db upgrade", "predict", "evaluate", "worker gpu", "viewer"} <= names


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "heartseg")
def test_help_fits_one_screen_and_shows_no_bool_metavar(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    text = ANSI.sub("", result.output)
    assert "<bool>" not in text, text
    lines = text.rstrip("\n").splitlines()
    assert len(lines) <= MAX_LINES, f"heartseg {' '.join(path)} --help: {len(lines)} lines\n{text}"
    assert max(len(line.rstrip()) for line in lines) <= 100, text
