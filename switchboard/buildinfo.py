"""What build is running, for the switchboard_build_info metric: the package version, the git
commit and the Python version.

The commit comes from git when the code runs from a checkout (an editable install), else from
`_commit.txt`, which setup.py writes into a built package; "unknown" when neither exists (a
tarball without git). Never raises.
"""
from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


@functools.cache
def build_info() -> dict[str, str]:
    return {"version": _version(), "commit": _commit(), "python": platform.python_version()}


def _version() -> str:
    try:
        return importlib.metadata.version("switchboard")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _commit() -> str:
    checkout = PACKAGE.parent
    if (checkout / ".git").exists() and (checkout / "pyproject.toml").exists():
        try:
            done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout,
                                  capture_output=True, text=True, timeout=5)
            if done.returncode == 0 and done.stdout.strip():
                return done.stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        return (PACKAGE / "_commit.txt").read_text().strip() or "unknown"
    except OSError:
        return "unknown"
