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
