"""Paths built from names and keys that come from outside: one segment per name, never outside a root.

Everything HeartSeg writes or deletes at a path made from input (a patient ID, a run name, an S3
key, a DICOM UID) goes through this module:

- :func:`key_part` turns any name into one path segment, without collisions: a plain name
  (``[A-Za-z0-9._-]``, not starting with ``.``, at most :data:`MAX_PLAIN` characters) stays as
  is; any other name becomes a readable slug of it, ``~`` and 12 hex digits of the SHA-256 of the
  exact name (``Müller`` -> ``Muller~<hash>``, ``Möller`` -> ``Moller~<hash>``). ``~`` never
  occurs in a plain name, so two different names never share an encoding (short of a hash
  collision).
- :func:`check_object_key` refuses an object key (S3) that cannot be mapped onto folders as is
  (``..`` or ``.`` segments, a leading ``/``, empty segments, backslashes, NUL).
- :func:`inside` joins segments onto a root and checks that the result, symbolic links
  resolved, lies strictly below the root.

A path that would leave its root because of a name or key is bad input: :class:`StudyError`,
so the study fails with the message instead of being retried.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

from heartseg.errors import StudyError

#: The longest name kept as is; longer ones are encoded (a file name must stay under 255 bytes with
#: the suffixes the layouts add, like ``_frame01_seg.dcm``).
MAX_PLAIN = 100
#: The longest slug kept in an encoded name (before ``~`` and the hash).
MAX_SLUG = 64
HASH_DIGITS = 12

_PLAIN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def key_part(name: str) -> str:
    """``name`` as one path segment, readable and distinct from the segment of any other name.

    A plain name (only ``A-Z a-z 0-9 . _ -``, not starting with ``.``, 1 to :data:`MAX_PLAIN`
    characters) is returned unchanged; any other becomes ``<slug>~<12 hex of sha256(name)>``, where
    the slug keeps the name's safe characters (accents dropped: ``Müller`` -> ``Muller``) and may be
    empty (``患者`` -> ``~<hash>``). The result is never empty, ``.`` or ``..``, and holds no ``/``.
    """
    if len(name) <= MAX_PLAIN and _PLAIN.fullmatch(name):
        return name
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = _UNSAFE.sub("_", folded).strip("._-")[:MAX_SLUG].rstrip("._-")
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_DIGITS]
    return f"{slug}~{digest}"


def printable(text: str) -> str:
    """``text`` with control characters (NUL, newlines) written as ``\\xNN``, for messages and the record."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def check_object_key(key: str, *, where: str | None = None) -> str:
    """``key`` when its ``/``-separated segments can be used as folder and file names as they are.

    Raises
    ------
    StudyError
        Naming the key (or ``where``, e.g. its ``s3://`` URI), for a key with a ``..`` or ``.``
        segment, a leading ``/``, an empty segment (``a//b``, a trailing ``/``), a backslash or a NUL.
    """
    problem = None
    if not key:
        problem = "empty object key"
    elif "\x00" in key:
        problem = "object key holds a NUL character"
    elif "\\" in key:
        problem = "object key holds a backslash"
    elif key.startswith("/"):
        problem = "object key starts with '/'"
    else:
        segments = key.split("/")
        if "" in segments:
            problem = "object key has an empty segment ('//' or a trailing '/')"
        elif ".." in segments or "." in segments:
            problem = "object key has a '..' or '.' segment"
    if problem is not None:
        raise StudyError(printable(where or key), f"{problem}; refused, it would not map to a path "
                                                  "inside the download folder")
    return key


def inside(root: Path, *parts: str) -> Path:
    """``root / parts...``, resolved, checked to lie strictly below ``root`` (also resolved).

    Raises
    ------
    StudyError
        Naming the path and the root, when the path would be the root itself or outside it (``..``,
        an absolute part, a symbolic link pointing elsewhere), or a part holds a NUL character.
    """
    base = Path(root).resolve()
    joined = base.joinpath(*parts)
    if any("\x00" in part for part in parts):
        raise StudyError(printable(str(joined)), f"path holds a NUL character; refused (root {base})")
    target = joined.resolve()
    if target == base or not target.is_relative_to(base):
        raise StudyError(printable(str(joined)), f"resolves to {target}, not inside {base}; refused")
    return target
