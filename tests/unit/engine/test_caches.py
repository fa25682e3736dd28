from __future__ import annotations

from tests.unit.engine.manual_clock import ManualClock

from opendps.engine.caches import LruMemo, TtlCache


def test_entries_expire_after_the_ttl(clock: ManualClock) -> None:
    cache: TtlCache[str, int] = TtlCache(clock, ttl_seconds=5)
    cache.store("a", 1)
    assert cache.lookup("a") == (True, 1)
    clock.advance(4.9)
    assert cache.lookup("a") == (True, 1)
    clock.advance(0.1)
    assert cache.lookup("a") == (False, None)


def test_a_cached_miss_is_distinguished_from_no_entry(clock: ManualClock) -> None:
    cache: TtlCache[str, int | None] = TtlCache(clock, ttl_seconds=5)
    assert cache.lookup("x") == (False, None)
    cache.store("x", None)
    assert cache.lookup("x") == (True, None)


def test_invalidate_one_or_all(clock: ManualClock) -> None:
    cache: TtlCache[str, int] = TtlCache(clock, ttl_seconds=60)
    cache.store("a", 1)
    cache.store("b", 2)
    cache.invalidate("a")
    assert cache.lookup("a") == (False, None) and cache.lookup("b") == (True, 2)
    cache.invalidate()
    assert len(cache) == 0


def test_ttl_cache_is_bounded(clock: ManualClock) -> None:
    cache: TtlCache[int, int] = TtlCache(clock, ttl_seconds=60, max_entries=3)
    for n in range(5):
        cache.store(n, n)
    assert len(cache) == 3
    assert cache.lookup(0) == (False, None) and cache.lookup(4) == (True, 4)


def test_memo_forgets_the_least_recently_used() -> None:
    memo: LruMemo[str, str] = LruMemo(max_entries=2)
    memo.put("a", "1")
    memo.put("b", "2")
    assert memo.get("a") == "1"  # a is now the most recent
    memo.put("c", "3")
    assert memo.get("b") is None and memo.get("a") == "1" and memo.get("c") == "3"
    memo.forget("a")
    assert memo.get("a") is None and len(memo) == 1
