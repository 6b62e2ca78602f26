import asyncio

import pytest

from switchboard.core.lru import LRU


def test_forgets_the_least_recently_used_entry():
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.use("a") == 1  # a is now the most recent
    cache.put("c", 3)
    assert dict(cache) == {"a": 1, "c": 3}
    assert cache.use("b") is None


def test_put_replaces_and_refreshes():
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("a", 10)
    cache.put("c", 3)
    assert dict(cache) == {"a": 10, "c": 3}


async def test_use_many_loads_what_is_not_held_a_bounded_number_at_once():
    cache: LRU[str, int] = LRU(100)
    cache.put("held", 1)
    in_flight = peak = 0

    async def load(key: str) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0)
        in_flight -= 1
        return len(key)

    keys = ["held", *(f"k{i}" for i in range(10))]
    assert await cache.use_many(keys, load, 4) == {"held": 1, **{f"k{i}": 2 for i in range(10)}}
    assert peak == 4  # rounds of at most 4 loads


async def test_use_many_fails_with_the_first_failed_load():
    async def load(key: str) -> int:
        if key == "bad":
            raise LookupError(key)
        return 0

    with pytest.raises(LookupError):
        await LRU(10).use_many(["a", "bad", "c"], load, 2)
