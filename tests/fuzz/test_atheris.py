"""A short coverage-guided run of every fuzz target (tests/fuzz/targets.py) with atheris: a few
seconds each, from the corpus kept in tests/fuzz/corpus, failing on any exception other than
the target's documented errors. Inputs that once crashed a target stay in
tests/fuzz/regressions/TARGET and are replayed here. Longer runs: tests/fuzz/README.md."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent
SECONDS = int(os.environ.get("SWITCHBOARD_FUZZ_SECONDS", "3"))

atheris = pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris)")


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_short_fuzz_run_finds_nothing(target, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(HERE / "corpus" / target, corpus)  # new inputs stay out of the repository
    run = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.run", target, f"-max_total_time={SECONDS}",
         "-rss_limit_mb=1024", f"-artifact_prefix={tmp_path}/", str(corpus)],
        cwd=ROOT, capture_output=True, text=True, timeout=SECONDS + 120)
    crashes = [p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "oom-"))]
    assert run.returncode == 0 and not crashes, f"{target}: {crashes}\n{run.stderr[-3000:]}"
    assert "Done" in run.stderr, run.stderr[-2000:]


def regressions() -> list[tuple[str, Path]]:
    found = []
    for target in sorted(TARGETS):
        folder = HERE / "regressions" / target
        if folder.is_dir():
            found += [(target, path) for path in sorted(folder.iterdir())]
    return found


@pytest.mark.parametrize("target,path", regressions(), ids=lambda v: getattr(v, "name", v))
def test_inputs_that_once_crashed_are_handled(target, path):
    TARGETS[target](path.read_bytes())
