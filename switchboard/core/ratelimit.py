"""Token bucket: two floats per limited thing, refilled lazily on use (no timers)."""
from __future__ import annotations


class TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take `cost` tokens; returns 0.0 when allowed, else the seconds until it would be."""
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens >= cost:
            self.tokens = tokens - cost
            return 0.0
        self.tokens = tokens
        return (cost - tokens) / self.rate

    def debit(self, now: float, amount: float) -> None:
        """Charge `amount` spent elsewhere (another node); the debt is at most one burst."""
        self.tokens = max(-self.burst, min(self.burst, self.tokens + (now - self.stamp) * self.rate)
                          - amount)
        self.stamp = now

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.stamp) * self.rate >= self.burst


class UserLimits:
    """Token buckets per (kind, user), shared by all of a user's devices on this node, so ten
    devices or ten reconnects do not multiply a limit.

    In a cluster a user's devices may sit on several nodes. Each node then reports what it let
    each user spend (`drain_usage`, in batches every sync interval) and charges what the other
    nodes let them spend (`charge`): every node's bucket is debited with the user's whole
    consumption, a little late. Over a long run the user gets the configured rate; a user
    spread over N nodes can get ahead by at most N bursts plus (N - 1) x rate x interval.
    Buckets that refilled completely are dropped (`prune`), so memory follows active users."""

    def __init__(self, rates: dict[str, tuple[float, float]]) -> None:
        self.rates = rates  # kind -> (tokens per second, burst)
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._used: dict[tuple[str, str], int] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, kind: str, user: str, now: float, cost: int = 1) -> float:
        """0.0 when allowed, else the seconds until it would be."""
        key = (kind, user)
        bucket = self._buckets.get(key)
        if bucket is None:
            rate, burst = self.rates[kind]
            bucket = self._buckets[key] = TokenBucket(rate, burst, now)
        wait = bucket.take(now, cost)
        if not wait:
            self._used[key] = self._used.get(key, 0) + cost
        return wait

    def drain_usage(self) -> dict[tuple[str, str], int]:
        """What each live bucket spent since the last call (0 for the idle ones, so that what
        other nodes spent is learnt for them too)."""
        used, self._used = self._used, {}
        return {key: used.get(key, 0) for key in self._buckets}

    def charge(self, key: tuple[str, str], amount: float, now: float) -> None:
        bucket = self._buckets.get(key)
        if bucket is not None and amount > 0:
            bucket.debit(now, amount)

    def prune(self, now: float) -> list[tuple[str, str]]:
        """Drop the buckets that are full again; returns their keys."""
        gone = [key for key, bucket in self._buckets.items()
                if bucket.full(now) and key not in self._used]
        for key in gone:
            del self._buckets[key]
        return gone
