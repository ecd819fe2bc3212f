from app.cache import RowCache


def test_cache_is_bounded_and_evicts_least_recently_used():
    cache = RowCache(max_rows=2)
    cache.put_many("v1", "item", ["a", "b"], [b"A", b"B"], cache.epoch)
    assert cache.get_many("v1", "item", ["a"]) == [b"A"]  # a is now the most recent
    cache.put_many("v1", "item", ["c"], [b"C"], cache.epoch)
    assert cache.get_many("v1", "item", ["a", "b", "c"]) == [b"A", None, b"C"]


def test_a_row_read_before_an_invalidation_is_not_stored_after_it():
    cache = RowCache(max_rows=10)
    epoch = cache.epoch  # a request reads this, then fetches the old row from Redis
    cache.invalidate("v1", "item", ["a"])  # the update lands meanwhile
    cache.put_many("v1", "item", ["a"], [b"old"], epoch)
    assert cache.get_many("v1", "item", ["a"]) == [None]


def test_rows_are_keyed_by_version_and_other_versions_can_be_dropped():
    cache = RowCache(max_rows=10)
    cache.put_many("v1", "item", ["a"], [b"1"], cache.epoch)
    cache.put_many("v2", "item", ["a"], [b"2"], cache.epoch)
    cache.drop_other_versions({"v2"})
    assert cache.get_many("v1", "item", ["a"]) == [None]
    assert cache.get_many("v2", "item", ["a"]) == [b"2"]
