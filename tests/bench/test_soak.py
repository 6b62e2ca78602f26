"""The soak (bench/soak.py) in a short run: a load with reconnect waves against one gateway,
sampled. The long run tells a plateau from a leak by its slopes (bench/README.md); this one
checks what holds at any length: every in-memory map stays within what the users, devices
and chats in play can fill, however many connections came and went, and Python's heap does not
grow between the end of the warm-up and the end."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEVICES, USERS, CHATS = 12, 6, 3


def test_short_soak_keeps_every_map_bounded(tmp_path):
    out = tmp_path / "soak.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--minutes", "0.4", "--sample", "2",
         "--devices", str(DEVICES), "--users", str(USERS), "--chats", str(CHATS),
         "--churn", "2", "--rate", "4", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    result = json.loads(out.read_text())
    samples = result["samples"]
    assert len(samples) >= 8
    assert samples[-1]["connects"] > DEVICES + 1  # reconnect waves happened
    assert samples[-1]["sends"] > 100
    users = USERS + 1  # the chats' creator ("setup" device) is a user too
    for sample in samples:
        assert sample["connections"] <= DEVICES + 1
        assert sample["hub_users"] <= users and sample["presence_devices"] <= users
        assert sample["presence_subjects"] <= users and sample["presence_last_seen"] <= users
        assert sample["member_cache"] <= CHATS and sample["receipt_cache"] <= CHATS
        assert sample["user_limits"] <= users * 5  # five kinds of limit
        assert sample["pending_auth"] <= DEVICES
        assert sample["descriptors"] < 3 * DEVICES + 40
    growth = sum(item["size_diff"] for item in result["tracemalloc_growth"])
    assert growth < 2 * 2 ** 20, result["tracemalloc_growth"]
