"""Where a message waits on its way, per hop: `bench cluster --trace-hops` and `bench chat
--trace-hops` (debug only).

`enable(directory)` makes every server the bench starts afterwards load site/sitecustomize.py,
which records per message the time it passed each hop; `analyse(directory)` joins the
processes' records by message and returns, per class of message (one gateway, and the
cluster's local, same, cross1, cross2 as in scenarios/cluster.py), the p50/p90/p99 of each
segment, plus each process's waits that are no message's (mesh flush delay, SQLite write lock
wait and hold, event-loop lag). The wrappers cost a little CPU per message, so a traced run's
latencies are not the untraced figures: use it to see where time goes, not how much there is.

Hops, in the order a message passes them: `sender` (the sender's gateway routes the Send),
`owner_in` (the owner read the ForwardSend off the mesh; forwarded sends only), `service`
(MessageService took it), `queued` (into the writer), `commit` (taken into a commit),
`committed` (the commit returned), `receiver_in` (the receiver's gateway read the Deliver;
other nodes only), `offered` (offered to the receiver's connection). The bench itself measures
the last leg, offered -> the device has it.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

SITE = Path(__file__).parent / "site"
SEGMENTS = (("send", "sender"), ("sender", "owner_in"), ("sender", "service"),
            ("service", "queued"), ("queued", "commit"), ("commit", "committed"),
            ("committed", "receiver_in"), ("committed", "offered"), ("send", "offered"))
WAITS = ("flush_delay", "lock_wait", "lock_hold", "loop_lag")


def enable(directory: Path) -> None:
    """Trace every server started from now on into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["HOPTRACE_DIR"] = str(directory)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SITE), os.environ.get("PYTHONPATH")) if p)


def disable() -> None:
    """Servers started from now on are not traced (enable's PYTHONPATH entry removed)."""
    os.environ.pop("HOPTRACE_DIR", None)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(SITE)]
    if paths:
        os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    else:
        os.environ.pop("PYTHONPATH", None)


def analyse(directory: Path) -> dict:
    """{"segments": {class: {"a->b": {p50, p90, p99, n} in ms}}, "waits": [per process]}."""
    from ..scenarios.cluster import flow_class
    messages: dict = defaultdict(lambda: defaultdict(list))
    waits = []
    for path in sorted(directory.glob("*.jsonl")):
        doc = _read(path)
        role = "cluster" if doc["cluster"] else "single"
        waits.append({"process": path.stem, "role": role,
                      **{name: _percentiles([v / 1e6 for v in doc["waits"][name]])
                         for name in WAITS}})
        for hop, entries in doc["hops"].items():
            for key, t in entries:
                if len(key) == 32:  # a bench device's body; the SDK clients' are not traced
                    messages[(role, key)][hop].append((t, path.stem))
    segments: dict = defaultdict(lambda: defaultdict(list))
    for (role, key), hops in messages.items():
        if not {"sender", "commit", "offered"} <= hops.keys():
            continue  # traced in part (the run started or ended in its middle)
        sender, owner = hops["sender"][0][1], hops["commit"][0][1]
        receiver = hops["offered"][0][1]  # offers to the sender's own devices are not recorded
        times = {hop: min(t for t, _ in entries) for hop, entries in hops.items()}
        # a Deliver goes to the sender's gateway too (the sender's other devices): the one
        # that counts is the receiver's
        times["receiver_in"] = min((t for t, p in hops.get("receiver_in", ()) if p == receiver),
                                   default=None)
        times["send"] = int.from_bytes(bytes.fromhex(key)[8:16], "little")
        kind = "single" if role == "single" else flow_class(sender, receiver, owner)
        for a, b in SEGMENTS:
            if times.get(a) is not None and times.get(b) is not None:
                segments[kind][f"{a}->{b}"].append((times[b] - times[a]) / 1e6)
    return {"segments": {kind: {seg: _percentiles(v) for seg, v in by_segment.items()}
                         for kind, by_segment in segments.items()},
            "waits": waits}


def _read(path: Path) -> dict:
    """One process's trace: its header line, then chunks of hops and waits (appended)."""
    with path.open() as lines_:
        doc = {**json.loads(next(lines_)), "hops": defaultdict(list),
               "waits": {name: [] for name in WAITS}}
        for line in lines_:
            try:
                chunk = json.loads(line)
            except json.JSONDecodeError:  # the last line of a process killed while writing it
                continue
            if "hop" in chunk:
                doc["hops"][chunk["hop"]] += chunk["entries"]
            else:
                doc["waits"][chunk["wait"]] += chunk["entries"]
    return doc


def lines(result: dict) -> list[str]:
    out = []
    for kind in ("single", "local", "same", "cross1", "cross2"):
        by_segment = result["segments"].get(kind)
        if not by_segment:
            continue
        out.append(f"hops, {kind} ({by_segment['send->offered']['n']} messages; p50 / p90 / "
                   f"p99 ms):")
        for a, b in SEGMENTS:
            figures = by_segment.get(f"{a}->{b}")
            if figures:
                out.append(f"  {a:>10} -> {b:<12} {figures['p50']:8.3f} {figures['p90']:8.3f} "
                           f"{figures['p99']:8.3f}")
    for process in result["waits"]:
        shown = [f"{name} {process[name]['p50']:.3f} / {process[name]['p99']:.3f}"
                 for name in WAITS if process[name]["n"]]
        out.append(f"waits (p50 / p99 ms), {process['role']} process {process['process']}: "
                   + ", ".join(shown))
    return out


def _percentiles(values: list[float]) -> dict:
    values = sorted(values)
    if not values:
        return {"n": 0}
    return {"n": len(values), **{f"p{round(q * 100)}": round(
        values[min(len(values) - 1, int(q * len(values)))], 3) for q in (0.5, 0.9, 0.99)}}
