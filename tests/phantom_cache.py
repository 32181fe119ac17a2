"""``heartseg.phantom.write_cohort`` for the tests: each cohort (patients, seed, prefix) is drawn and written once per
test session, then copied into the folder a test asks for (a copy: a test may change or break its files)."""

from __future__ import annotations

import atexit
import copy
import shutil
import tempfile
from pathlib import Path

from heartseg import phantom

_written: dict[tuple[int, int, str], tuple[Path, list[dict[str, object]]]] = {}
_cache: Path | None = None


def write_cohort(out: Path, n_patients: int, seed: int, prefix: str = "phantom") -> list[dict[str, object]]:
    """What :func:`heartseg.phantom.write_cohort` writes into ``out`` and returns, from this session's copy."""
    global _cache
    key = (n_patients, seed, prefix)
    if key not in _written:
        if _cache is None:
            _cache = Path(tempfile.mkdtemp(prefix="heartseg-phantoms-"))
            atexit.register(shutil.rmtree, _cache, True)
        folder = _cache / f"{prefix}-{n_patients}-{seed}"
        _written[key] = (folder, phantom.write_cohort(folder, n_patients, seed, prefix=prefix))
    folder, truths = _written[key]
    shutil.copytree(folder, out, dirs_exist_ok=True)
    return copy.deepcopy(truths)
