"""bench/conncost.py in a short run: every device connects and stays, and both figures come
out as a heap growth split by allocating line (the figures themselves are read in
bench/README.md, not asserted); with --churn, dropped devices leave nothing for the cyclic
collector (tests/e2e/test_closed_connections.py proves it for each way a connection ends)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_connections_and_peer_users_are_measured():
    run = subprocess.run(
        [sys.executable, "-m", "bench.conncost", "--connections", "40", "--peer-users", "2000"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    out = run.stdout
    assert "40 of 40 connected" in out
    per_connection = re.search(r"^([\d,]+) bytes per idle connection", out, re.M)
    per_peer_user = re.search(r"^([\d,]+) bytes per user of a peer", out, re.M)
    assert per_connection and per_peer_user, out
    assert int(per_connection[1].replace(",", "")) > 0 and int(per_peer_user[1]) > 0
    assert re.search(r"^\s+[\d.]+ B\s+[\d.]+ blocks\s+\S+:\d+$", out, re.M), out


def test_churn_counts_what_dropped_devices_leave_for_the_collector():
    run = subprocess.run([sys.executable, "-m", "bench.conncost", "--churn", "40"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert re.search(r"^40 of 40 connected and dropped; .* 0 Connection objects were left for "
                     r"the cyclic collector and a complete collection freed 0 objects$",
                     run.stdout, re.M), run.stdout
