"""The README and the pages under docs/: every relative link resolves, and every page can be reached.

A link is Markdown's ``[text](target)`` or ``![alt](target)``, or an HTML ``<img src="target">``; links in code
blocks and code spans are not links. ``http(s)://``, ``mailto:`` and in-page ``#anchor`` links are skipped;
an anchor after a path is dropped before the path is looked up.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

#: ``[text](target)`` and ``![alt](target)``, with an optional title after the target.
MARKDOWN_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
#: ``<img ... src="target">`` (single or double quotes).
IMG_SRC = re.compile(r"<img\b[^>]*?\bsrc\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
EXTERNAL = ("http://", "https://", "mailto:")


def pages() -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def links(page: Path) -> Iterator[tuple[int, str]]:
    """(line number, target) of every link of a page, outside code blocks and code spans."""
    in_fence = False
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        text = CODE_SPAN.sub("", line)
        for pattern in (MARKDOWN_LINK, IMG_SRC):
            for match in pattern.finditer(text):
                yield number, match.group(1)


def local_target(page: Path, target: str) -> Path | None:
    """The file a relative link points at, or None for an external or in-page link."""
    if target.startswith(EXTERNAL) or target.startswith("#"):
        return None
    path = unquote(target.split("#", 1)[0].split("?", 1)[0])
    return (page.parent / path).resolve()


def name(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("page", pages(), ids=name)
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for number, target in links(page):
        resolved = local_target(page, target)
        if resolved is not None and not resolved.exists():
            broken.append(f"{name(page)}:{number}: ({target}) -> {resolved} does not exist")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    seen: set[Path] = set()
    todo = [README.resolve()]
    while todo:
        page = todo.pop()
        if page in seen:
            continue
        seen.add(page)
        for _, target in links(page):
            resolved = local_target(page, target)
            if resolved is not None and resolved.suffix == ".md" and resolved.is_file():
                todo.append(resolved)
    unreached = [name(page) for page in sorted(DOCS.rglob("*.md")) if page.resolve() not in seen]
    assert not unreached, "docs pages no link from README.md leads to (link them from docs/index.md):\n" + \
        "\n".join(unreached)


def test_the_link_finder_sees_what_it_should() -> None:
    """The parser finds Markdown and HTML links and ignores code."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        page = Path(folder) / "page.md"
        page.write_text('[a](x.md) ![b](img/y.png "title") <img src="z.png"> `[c](no.md)`\n'
                        "```\n[d](no.md)\n```\n[e](https://example.org) [f](#here) [g](w.md#part)\n")
        assert [target for _, target in links(page)] == ["x.md", "img/y.png", "z.png", "https://example.org",
                                                         "#here", "w.md#part"]
        assert local_target(page, "w.md#part") == (Path(folder) / "w.md").resolve()
        assert local_target(page, "#here") is None
