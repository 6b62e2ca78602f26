"""The repository explains itself: no document, docstring or comment points outside it (a
`../shared` folder, "issue 3", "the issue's target": a reader of the repository has neither),
and every link and every path it names exists."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.repo import ROOT, tracked_files

TEXT_SUFFIXES = {".md", ".py", ".pyi", ".pyx", ".pxd", ".proto", ".toml", ".service", ".conf",
                 ".cfg", ".txt", ".sh", ".ini", ".yaml", ".yml"}
TEXT_NAMES = {"Makefile", "run", ".gitignore"}
RECORDED = "bench/results/"  # output of other programs (redis-server's log), kept as recorded

OUTSIDE = [
    (re.compile(r"\.\./shared\b"), "a path outside the repository"),
    (re.compile(r"\bissues?\s*#?\d+\b", re.IGNORECASE), "an issue number"),
    (re.compile(r"\bthe issue'?s?\b", re.IGNORECASE), "\"the issue\" (say the thing itself)"),
]
MARKDOWN_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
# a repository path named in prose: a top-level folder, then a file with a known suffix
NAMED_PATH = re.compile(r"(?<![\w/.~-])((?:switchboard|bench|docs|deploy|tests|\.ci)/[\w./@-]*"
                        r"\.(?:py|pyx|pxd|pyi|md|toml|proto|service|conf))\b")


def text_files() -> list[Path]:
    return [path for path in tracked_files()
            if (path.suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES)
            and not str(path.relative_to(ROOT)).startswith(RECORDED)]


def lines_of(path: Path):
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        yield f"{path.relative_to(ROOT)}:{number}", line


def test_nothing_points_outside_the_repository():
    found = [f"{where}: {why}: {line.strip()}" for path in text_files()
             for where, line in lines_of(path) for pattern, why in OUTSIDE
             if pattern.search(line) and path != Path(__file__)]
    assert not found, "\n".join(found)


def slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in path.read_text().splitlines()
            if line.startswith("#")}


def test_every_markdown_link_reaches_a_file_and_heading_that_exist():
    broken = []
    for path in text_files():
        if path.suffix != ".md":
            continue
        for where, line in lines_of(path):
            for target in MARKDOWN_LINK.findall(line):
                if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                    continue
                file_part, _, anchor = target.partition("#")
                linked = (path.parent / file_part).resolve() if file_part else path
                if not linked.exists():
                    broken.append(f"{where}: {target}: no such file")
                elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                    broken.append(f"{where}: {target}: no such heading")
    assert not broken, "\n".join(broken)


def test_every_repository_path_named_in_text_exists():
    missing = []
    for path in text_files():
        for where, line in lines_of(path):
            for named in NAMED_PATH.findall(line):
                if not ((ROOT / named).exists() or (path.parent / named).exists()):
                    missing.append(f"{where}: {named}")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("text, caught", [
    ("see ../shared/DESIGN.md", True), ("(issue 3)", True), ("Issue #12 says", True),
    ("the issue's target is 8 KiB", True), ("it issues tokens", False),
    ("issuer_name(subject)", False),
])
def test_the_outside_patterns_catch_what_they_should(text, caught):
    assert any(pattern.search(text) for pattern, _ in OUTSIDE) == caught
