"""The repository's own files, for checks that read them all."""
from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_NOT_SOURCE = {".git", ".venv", "build", "__pycache__", ".pytest_cache", ".hypothesis",
               ".benchmarks", "switchboard-data", "runs"}


def tracked_files(*patterns: str) -> list[Path]:
    """The files git tracks (matching `patterns`, git pathspecs); outside a git checkout (an
    unpacked tarball) every file that is not a build, cache or run output."""
    if (ROOT / ".git").exists():
        names = subprocess.run(["git", "ls-files", "-z", *patterns], cwd=ROOT, check=True,
                               capture_output=True, text=True).stdout.split("\0")
        return [ROOT / name for name in names if name and (ROOT / name).is_file()]
    found = []
    for path in ROOT.rglob("*"):
        parts = set(path.relative_to(ROOT).parts)
        if path.is_file() and not parts & _NOT_SOURCE and not path.name.endswith(".egg-info") \
                and (not patterns or any(path.match(p) for p in patterns)):
            found.append(path)
    return found
