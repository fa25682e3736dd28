"""In-memory caches of the engine: small, bounded, time-limited, explicitly invalidated.

Why caching is safe here: what is cached (instances by ID scope, linked hubs, the list of
symmetric-key groups) only *narrows a search*; every security decision is made on a fresh read
(the matched enrollment is re-read before its keys verify a token). Entries expire after a short
TTL so a change made on another node shows within seconds (ARCHITECTURE §4 step 3); the node that
makes a change calls `invalidate`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from opendps.engine.ports import Clock

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Instances, hub lists and group lists are few per deployment; this bounds memory if a client
# sprays random ID scopes (negative entries are cached too, so unknown scopes cost no reads).
DEFAULT_TTL_CACHE_ENTRIES = 10_000
# One remembered group per registration ID: ~200 bytes each, so 100,000 entries ≈ 20 MB. Past
# that the least recently used are forgotten (they fall back to the registration state's group).
DEFAULT_MEMO_ENTRIES = 100_000


class TtlCache(Generic[K, V]):
    """A mapping whose entries expire `ttl_seconds` after they were stored."""

    def __init__(
        self, clock: Clock, ttl_seconds: float, max_entries: int = DEFAULT_TTL_CACHE_ENTRIES
    ) -> None:
        self._clock = clock
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def lookup(self, key: K) -> tuple[bool, V | None]:
        """`(True, value)` for a live entry (the value may be None: a cached miss), else `(False, None)`."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        stored_at, value = entry
        if self._now() - stored_at >= self._ttl:
            del self._entries[key]
            return False, None
        return True, value

    def store(self, key: K, value: V) -> None:
        self._entries[key] = (self._now(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def invalidate(self, key: K | None = None) -> None:
        """Forget `key`, or everything when `key` is None."""
        if key is None:
            self._entries.clear()
        else:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


class LruMemo(Generic[K, V]):
    """A bounded least-recently-used map without expiry (for hints that are re-verified)."""

    def __init__(self, max_entries: int = DEFAULT_MEMO_ENTRIES) -> None:
        self._max = max_entries
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def forget(self, key: K) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
