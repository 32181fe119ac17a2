"""Hostile input: names, keys and paths that try to leave their roots or to collide.

:func:`snapshot` and :func:`changed_outside` check that a test wrote or deleted nothing outside the
folders it allows (every file and folder under a root, before and after).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def snapshot(root: Path) -> dict[Path, tuple[bool, int, bytes | None]]:
    """Every path under ``root`` (symbolic links not followed): whether a folder, its size, a file's bytes."""
    found: dict[Path, tuple[bool, int, bytes | None]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            found[path] = (True, 0, None)
        else:
            data = path.read_bytes() if path.is_file() else None
            found[path] = (False, len(data or b""), data)
    return found


def changed_outside(before: dict[Path, tuple[bool, int, bytes | None]],
                    after: dict[Path, tuple[bool, int, bytes | None]], allowed: Iterable[Path]) -> list[str]:
    """Paths created, deleted or changed between two snapshots that lie outside every ``allowed`` folder
    (the folders above an allowed one may appear: making it makes them)."""
    roots = [Path(p) for p in allowed]

    def outside(path: Path) -> bool:
        return not any(path.is_relative_to(root) or root.is_relative_to(path) for root in roots)

    changes = [(p, "created") for p in after.keys() - before.keys()]
    changes += [(p, "deleted") for p in before.keys() - after.keys()]
    changes += [(p, "changed") for p in before.keys() & after.keys() if before[p] != after[p]]
    return sorted(f"{verb} {path}" for path, verb in changes if outside(path))
