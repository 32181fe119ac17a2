"""``heartseg status --wait`` rides out a record that does not answer for a while, one line per outage, and exits 3
(not 1, which means "a study failed") when it never answers."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from rich.console import Console
from sqlalchemy.exc import OperationalError

from scheduler.progress import RecordUnreachableError, _reach


def test_an_outage_is_one_line_and_the_answer_comes_after_it() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))
        return "counts"

    out = io.StringIO()
    assert _reach(flaky, Console(file=out, width=200), unreachable_s=30) == "counts"
    lines = out.getvalue().splitlines()
    assert lines[0] == "record unreachable, retrying (OperationalError)"
    assert lines[1].startswith("record reachable again after ") and len(lines) == 2


def test_a_record_that_never_answers_gives_up_after_the_timeout() -> None:
    def down() -> str:
        raise ConnectionRefusedError("connection refused")

    with pytest.raises(RecordUnreachableError, match=r"did not answer for 0\.5 s: connection refused"):
        _reach(down, Console(file=io.StringIO()), unreachable_s=0.5)


def test_status_exits_3_when_the_record_cannot_be_reached() -> None:
    env = {**os.environ, "HEARTSEG_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/heartseg",
           "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "scheduler.cli", "status", "any-run", "--wait",
                             "--unreachable-timeout", "2"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "record unreachable, retrying" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: the record did not answer for 2 s: ")
    assert "Traceback" not in result.stderr
