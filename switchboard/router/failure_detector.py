"""A phi-accrual failure detector for one mesh link (docs/cluster.md, "Telling slow from dead").

A fixed silence timeout cannot tell a peer that is slow from one that is dead: on a saturated
host every process's event loop runs late, heartbeats arrive late, and a timeout tight enough to
catch a hung peer quickly drops healthy links by the thousand. The phi-accrual detector (Hayashi
et al., 2004) instead keeps the recent intervals between a peer's heartbeats and answers, for the
silence so far, how unlikely it is under that history:

    phi = -log10(P(the next heartbeat comes later than this silence))

with the intervals taken as a normal distribution. phi 1 means a 10% chance the peer is merely
late, phi 8 one in 10^8. A peer whose heartbeats were always punctual is suspected soon after it
falls silent; one whose heartbeats have been jittery (its host is busy) gets slack in proportion.

Two floors keep a short stall from ever looking like a death: `acceptable_pause` is added to the
mean interval (a GC or a loop stall of that length costs nothing), and the standard deviation is
never taken below `min_std_deviation` (a perfectly regular history would otherwise make a few
milliseconds of lateness look impossible). The hard ceiling for a truly hung peer is the
caller's (the mesh's link_timeout): phi alone never grows past a history that keeps stretching.

No I/O and no clock of its own: the caller passes the times (its loop's monotonic clock), so tests
drive it with any sequence of arrivals.
"""
from __future__ import annotations

import math
from collections import deque

#: -log10 of the smallest probability a float tells from 0: phi past this is "certainly late".
_PHI_MAX = 300.0


class PhiAccrualDetector:
    """Heartbeat arrivals in (`heartbeat`, `alive`), phi and suspicion out."""

    __slots__ = ("threshold", "_acceptable_pause", "_min_std", "_window", "_intervals",
                 "_sum", "_squares", "_last_heartbeat", "_last_seen")

    def __init__(self, *, expected_interval: float, threshold: float, acceptable_pause: float,
                 min_std_deviation: float, started_at: float, window: int = 100) -> None:
        """`expected_interval`: the heartbeat period the peer was told to keep; the history
        starts from it (as if two heartbeats had come a quarter of it early and late), so a link
        is judged sensibly before it has a history of its own. `started_at`: the link's start,
        counted as its first heartbeat."""
        if expected_interval <= 0 or threshold <= 0 or window < 2:
            raise ValueError("expected_interval and threshold must be positive, window >= 2")
        if acceptable_pause < 0 or min_std_deviation <= 0:
            raise ValueError("acceptable_pause must be >= 0, min_std_deviation > 0")
        self.threshold = threshold
        self._acceptable_pause = acceptable_pause
        self._min_std = min_std_deviation
        self._window = window
        self._intervals: deque[float] = deque()
        self._sum = self._squares = 0.0
        spread = expected_interval / 4
        self._record(expected_interval - spread)
        self._record(expected_interval + spread)
        self._last_heartbeat = self._last_seen = started_at

    def heartbeat(self, at: float) -> None:
        """A heartbeat arrived at `at`: its interval since the previous one joins the history."""
        if at > self._last_heartbeat:
            self._record(at - self._last_heartbeat)
            self._last_heartbeat = at
        self.alive(at)

    def alive(self, at: float) -> None:
        """Anything else arrived from the peer at `at`: proof of life, not a sample (other
        traffic comes at whatever rate the application makes, not the heartbeat's)."""
        if at > self._last_seen:
            self._last_seen = at

    def silence(self, now: float) -> float:
        return max(0.0, now - self._last_seen)

    def phi(self, now: float) -> float:
        """How unlikely the silence so far is: 0 while within the usual interval, growing
        without bound (up to _PHI_MAX) as the silence lengthens."""
        count = len(self._intervals)
        mean = self._sum / count
        variance = max(0.0, self._squares / count - mean * mean)
        std = max(math.sqrt(variance), self._min_std)
        z = (self.silence(now) - mean - self._acceptable_pause) / std
        later = 0.5 * math.erfc(z / math.sqrt(2))  # P(an interval longer than this silence)
        if later <= 0.0:
            return _PHI_MAX
        return min(_PHI_MAX, max(0.0, -math.log10(later)))

    def suspects(self, now: float) -> bool:
        return self.phi(now) >= self.threshold

    def _record(self, interval: float) -> None:
        self._intervals.append(interval)
        self._sum += interval
        self._squares += interval * interval
        if len(self._intervals) > self._window:
            old = self._intervals.popleft()
            self._sum -= old
            self._squares -= old * old
