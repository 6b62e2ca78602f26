"""Where the bench runs and writes: every child the tests and the bench start runs on the
interpreter running them (the project's .venv), whether or not that venv is activated, so no
child finds another `python` or tool on PATH; and new results go to a folder git ignores."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.repo import tracked_files

REPO = Path(__file__).resolve().parents[2]
# a child started as a bare python or python3 literal followed by an option: PATH picks it
BARE_PYTHON = re.compile(r"""["']python[0-9.]*["']\s*,\s*["']-""")


def test_every_spawned_interpreter_is_sys_executable():
    offenders = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
                 for path in tracked_files("*.py")
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if BARE_PYTHON.search(line)]
    assert not offenders, "spawn sys.executable instead:\n" + "\n".join(offenders)


def test_py_spy_is_found_next_to_the_interpreter_without_an_activated_venv():
    beside = Path(sys.executable).parent / "py-spy"
    if not beside.is_file():
        pytest.skip(f"py-spy is not installed next to {sys.executable} (pip install '.[bench]')")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PATH")}
    env["PATH"] = "/usr/bin:/bin"  # what a shell without `. .venv/bin/activate` has
    done = subprocess.run([sys.executable, "-c", "from bench.profile import Profiler, find_tool;"
                           "from pathlib import Path;"
                           "print(find_tool('py-spy'), Profiler(Path('x')).pyspy)"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(beside)] * 2


def test_new_runs_land_in_an_ignored_folder_and_cited_runs_stay_tracked():
    from bench import report
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: nothing is tracked or ignored")
    run = report.RESULTS / "20260101-000000-chat" / "result.json"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(run)], cwd=REPO)
    assert ignored.returncode == 0, f"{run} would show in git status"
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: nothing is tracked or ignored")
    tracked = [str(p.relative_to(REPO)) for p in tracked_files("bench/results")]
    assert tracked and not any(name.startswith("bench/results/runs/") for name in tracked)
