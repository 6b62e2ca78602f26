"""Every bench scenario at a tiny size: the run succeeds, writes well-formed JSON and its plots,
and the counts add up (every message sent was delivered exactly once to every intended device).
No timing assertions: CI machines are noisy and these sizes measure nothing.

The runs are started together (each is a `python -m bench` process with its own server and
workers) and each test waits for its own, so the file takes about as long as the slowest run.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.targets import WS_REDIS_WORKERS

REPO = Path(__file__).resolve().parents[2]
RUNS = {
    "hold": ["--size", "60", "--duration", "0.2"],
    "chat": ["--size", "4", "--duration", "0.3", "--loads", "0.5", "--peers"],
    "fanout": ["--size", "25", "--messages", "3"],
    "storm": ["--size", "20", "--messages", "3"],
    "chat-workers": ["--size", "4", "--duration", "0.3", "--loads", "0.5", "--no-peers",
                     "--server-workers", "2"],
    "hold-workers": ["--size", "60", "--duration", "0.2", "--server-workers", "2"],
    "cluster": ["--size", "27", "--load", "0.02", "--duration", "2", "--rounds", "1",
                "--soak", "1", "--trace-hops"],
    "media": ["--size", "1", "--duration", "0.5"],
}
#: Every run starts at once (eight benches, each with a server and two generator processes):
#: on a busy two-core machine the last one finishes minutes after an idle machine's ~40 s.
#: The deadline is one for the whole set, counted from the start.
DEADLINE = 480
pytestmark = pytest.mark.timeout(DEADLINE + 60)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Start every scenario at once; yields scenario -> (process, its results root)."""
    started = {"deadline": time.monotonic() + DEADLINE}
    for scenario, options in RUNS.items():
        out = tmp_path_factory.mktemp(f"bench-{scenario}")
        # A session of its own, so that teardown can stop the bench with everything it
        # started (server, workers, generators, peers) even when its test was deselected or
        # failed before waiting for it: killing the bench alone orphaned them.
        proc = subprocess.Popen([sys.executable, "-m", "bench", scenario.split("-")[0],
                                 "--workers", "2",
                                 "--out", str(out), *options], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        started[scenario] = (proc, out)
    yield started
    # A bench still running (its test deselected or failed) is interrupted first, so that its
    # own clean-up stops what it started in sessions of their own (the cluster scenario's
    # gateways and Redis); what is left after the grace is killed with the bench's group.
    running = [proc for proc, _ in (started[s] for s in RUNS) if proc.poll() is None]
    for proc in running:
        _signal_group(proc, signal.SIGINT)
    for proc in running:
        try:
            proc.wait(timeout=INTERRUPT_GRACE)
        except subprocess.TimeoutExpired:
            pass
    for scenario in RUNS:
        proc, _ = started[scenario]
        _signal_group(proc, signal.SIGKILL)
        proc.wait()


INTERRUPT_GRACE = 30  # s a bench gets to stop what it started once interrupted


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        pass  # the bench and everything it started are gone already


def result(runs, scenario: str) -> tuple[dict, Path, str]:
    proc, out = runs[scenario]
    output, _ = proc.communicate(timeout=max(1.0, runs["deadline"] - time.monotonic()))
    assert proc.returncode == 0, output
    [run_dir] = out.iterdir()
    doc = json.loads((run_dir / "result.json").read_text())
    assert doc["scenario"] == scenario.split("-")[0]
    machine = doc["machine"]
    for key in ("cpu_model", "cores", "python", "packages", "git_commit"):
        assert key in machine
    assert machine["packages"]["picows"]
    assert list(run_dir.glob("*.png")), "no plots written"
    assert "results:" in output
    return doc, run_dir, output


def test_hold(runs):
    doc, _, _ = result(runs, "hold")
    [run_] = doc["runs"]
    [res] = run_["targets"]
    assert res["target"] == "switchboard"
    assert res["opened"] == res["requested"] == 60
    assert res["still_connected"] == 60 and res["drops"] == 0 and res["server_closes"] == {}
    assert res["handshake"]["count"] == 60
    assert res["server"]["rss_after"] > 0 and res["server"]["fds_after"] >= 60
    known = res["known"]  # every device, the warm-up's too, closed and opened again
    assert known["opened"] == known["handshake"]["count"] == 60 + res["warmup"]
    assert known["errors"] == [] and known["server_cpu_us_per_handshake"] >= 0


def test_chat_with_both_peers(runs):
    doc, _, output = result(runs, "chat")
    [run_] = doc["runs"]
    names = [t["target"] for t in run_["targets"]]
    redis = shutil.which("redis-server") is not None
    assert names == ["switchboard", "picows-relay"] + ([f"ws-redis-relay x{WS_REDIS_WORKERS}"] if redis else [])
    if not redis:
        assert any("redis-server" in note for note in doc["notes"])
    for res in run_["targets"]:
        counts = res["counts"]
        assert counts["sent"] > 0
        assert counts["delivered"] == counts["sent"], res["target"]
        assert counts["anomalies"] == 0 and counts["drops"] == 0
        assert res["exactly_once"] is True
        phases = [res["saturation"], *res["steps"]]
        assert len(res["steps"]) == 1
        assert sum(p["completed"] for p in phases) == counts["sent"]
        assert all(p["unfinished"] == 0 for p in phases)
        assert all(p["deliver"]["count"] == p["completed"] for p in phases)
    ours = run_["targets"][0]
    assert ours["counts"]["acked"] == ours["counts"]["sent"]
    assert ours["counts"]["send_errors"] == 0
    assert set(run_["ratios"]) == set(names[1:])
    assert "strictly more work" in output


def test_fanout(runs):
    doc, _, _ = result(runs, "fanout")
    [run_] = doc["runs"]
    assert [res["target"] for res in run_["targets"]] == ["switchboard", "picows-relay"]
    for res in run_["targets"]:
        counts = res["counts"]
        assert counts["expected_deliveries"] == 25 * 4  # 3 sends and the warm-up
        assert counts["delivered"] == counts["expected_deliveries"]
        assert counts["anomalies"] == 0 and counts["incomplete_messages"] == 0
        assert res["last_member"]["count"] == 3 and res["per_member"]["count"] == 100
        assert res["exactly_once"] is True
        assert res["server_cpu_ms_per_message"] >= 0  # the target's CPU over the sends
    ours, relay = run_["targets"]
    assert ours["group_members"] == 26  # 25 members and the sender
    assert ours["send_ack"]["count"] == 3 and relay["send_ack"]["count"] == 0
    assert set(run_["ratios"]) == {"last_member_p50", "last_member_p99"}


def test_storm(runs):
    doc, _, _ = result(runs, "storm")
    [run_] = doc["runs"]
    [res] = run_["targets"]
    assert res["messaged"] == 10  # half of the 20 get 3 messages while their process is dead
    assert res["fill"]["acked"] == 10 * 3 and res["fill"]["send_errors"] == 0
    assert res["synced"] == res["reconnected"] == 20
    assert res["attempts"] >= 20
    counts = res["counts"]
    assert counts["delivered"] == counts["expected"] == 30
    assert counts["anomalies"] == 0
    assert res["time_to_synced"]["count"] == 20
    assert res["server"]["peak_rss"] >= res["server"]["rss_before"] > 0
    assert res["exactly_once"] is True


def test_chat_against_two_workers(runs):
    """`--server-workers 2`: the server is a two-worker cluster, measured over both workers."""
    doc, _, _ = result(runs, "chat-workers")
    [run_] = doc["runs"]
    [ours] = run_["targets"]
    assert ours["target"] == "switchboard x2"
    assert ours["exactly_once"] is True and ours["counts"]["send_errors"] == 0
    assert ours["counts"]["delivered"] == ours["counts"]["sent"] > 0
    assert {"worker0", "worker1", "supervisor"} <= set(ours["processes"])


def test_hold_against_two_workers_sums_every_process(runs):
    """Each worker holds its share of the connections: the per-connection figure is the growth
    of all the server's processes together over all connections, not one worker's."""
    doc, _, _ = result(runs, "hold-workers")
    [run_] = doc["runs"]
    [res] = run_["targets"]
    assert res["target"] == "switchboard x2" and res["opened"] == res["still_connected"] == 60
    server, processes = res["server"], res["processes"]
    assert set(server["per_process"]) == set(processes) == {"worker0", "worker1", "supervisor"}
    assert server["rss_after"] == sum(p["rss"] for p in processes.values())
    assert server["fds_after"] == sum(p["fds"] for p in processes.values())
    assert server["rss_before"] == sum(p["rss_before"] for p in server["per_process"].values())
    assert server["bytes_per_connection"] == pytest.approx(
        (server["rss_after"] - server["rss_before"]) / res["opened"])
    # both workers took connections (the kernel spreads them): each holds descriptors for them
    assert all(server["per_process"][w]["fds_after"] > 10 for w in ("worker0", "worker1"))
    assert server["fds_after"] >= 60


def test_media(runs):
    doc, _, output = result(runs, "media")
    [run_] = doc["runs"]
    assert run_["baseline"]["count"] > 0
    for kind in run_["kinds"]:
        # every file went up and came down whole (the worker checks each SHA-256)
        assert kind["errors"] == [] and kind["files"] >= 1, kind
        assert kind["probe"]["count"] > 0
    assert "photo 100 KB" in output and "video 5000 KB" in output


def test_chat_ratios_report_none_for_a_peer_that_measured_nothing():
    """A peer starved of CPU may complete nothing in a phase: its ratios are None, not a
    ZeroDivisionError that loses the whole run."""
    from bench.scenarios.chat import _ratios

    def target(name: str, achieved: float, p99: float | None) -> dict:
        deliver = {} if p99 is None else {"p99_ms": p99}
        return {"target": name, "saturation": {"achieved": achieved},
                "steps": [{"fraction": 0.5, "deliver": deliver}]}
    ratios = _ratios([target("switchboard", 900.0, 4.0), target("starved", 0.0, None),
                      target("fine", 300.0, 2.0), target("no-steps", 0.0, None) | {"steps": []}])
    assert ratios == {"starved": {"throughput": None, "p99_at_half_load": None},
                      "fine": {"throughput": 3.0, "p99_at_half_load": 2.0},
                      "no-steps": {"throughput": None, "p99_at_half_load": None}}


def test_cluster(runs):
    """One gateway and three, the same load (a fraction of the one gateway's measured
    capacity); a short soak; then a Redis master killed and a gateway paused under it. Counts
    only: every message once, in order, both ways, in every class of placement; no registry
    call unanswered with Redis healthy; every send pending at the pause acknowledged elsewhere."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    doc, _, output = result(runs, "cluster")
    [run_] = doc["runs"]
    assert run_["capacity"] > 0 and run_["rate"] == pytest.approx(0.02 * run_["capacity"])
    for phase in ("single", "cluster", "soak", "failover"):
        figures = run_[phase]
        assert all(figures[name]["unfinished"] == 0 for name in ("local", "same", "cross")), phase
    assert run_["single"]["exactly_once"] and run_["cluster"]["exactly_once"]
    assert run_["single"]["all"]["deliver"]["count"] == run_["single"]["local"]["deliver"]["count"]
    # 27 pairs: each of the 3 x 3 x 3 placements once, so every class has messages
    assert all(run_["cluster"][name]["deliver"]["count"] > 0
               for name in ("local", "same", "cross", "cross2"))
    assert run_["cluster"]["registry_timeouts"] == 0
    soak = run_["soak"]
    assert soak["exactly_once"] and soak["registry_timeouts"] == soak["timeout_log_lines"] == 0
    assert run_["failover"]["probes"] > 0 and run_["failover"]["promoted_after_kill_s"] > 0
    pause = run_["pause"]
    assert pause["acked"] == pause["pending_at_pause"] > 0 and pause["silent_drops"] > 0
    assert "cross-node p50" in output and "soak:" in output
    # the trace tells classes by the processes a message passed: the bench's placement held
    hops = run_["hops"]["segments"]
    assert {"single", "local", "same", "cross1", "cross2"} <= hops.keys()
    assert "sender->owner_in" not in hops["local"] and "committed->receiver_in" not in hops["local"]
    assert hops["cross2"]["sender->owner_in"]["n"] == hops["cross2"]["send->offered"]["n"] > 0
