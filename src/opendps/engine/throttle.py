"""Rate limits that answer 429 THROTTLED with `retry-after` (protocol.md §9); nothing is stored
for a throttled request. The per-instance registration rate is checked right after the ID scope
resolves (before any enrollment is read, so it also bounds the cost of bad credentials); the
per-device polling limit after the device authenticated (so nobody spends another's allowance).

Both limiters are per node and in memory: a limit exists to protect this node and its store,
and a device talks to one node per connection. With N nodes an instance can reach N times its
configured rate; size the setting per node.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Hashable

from opendps.engine.ports import Clock
from opendps.model.errors import THROTTLED, DpsError

# Devices tracked by the polling limiter. Entries older than the window are dropped first; past
# this many active devices the oldest are forgotten (they get a fresh allowance), bounding memory.
MAX_TRACKED_DEVICES = 200_000


class SlidingWindowLimiter:
    """At most `limit` events per `window_seconds` per key (Azure: 5 polls per 10 s per device)."""

    def __init__(
        self, clock: Clock, limit: int, window_seconds: float, max_keys: int = MAX_TRACKED_DEVICES
    ) -> None:
        self._clock = clock
        self._limit = limit
        self._window = window_seconds
        self._max_keys = max_keys
        self._events: OrderedDict[Hashable, deque[float]] = OrderedDict()

    def check(self, key: Hashable, what: str) -> None:
        """Count one event for `key`, or raise DpsError(THROTTLED) with `retry_after` if over."""
        now = self._clock.now().timestamp()
        events = self._events.get(key)
        if events is None:
            self._evict(now)
            events = deque()
            self._events[key] = events
        while events and events[0] <= now - self._window:
            events.popleft()
        if len(events) >= self._limit:
            wait = events[0] + self._window - now
            raise DpsError(
                THROTTLED,
                f"Too many {what}: at most {self._limit} per {self._window:g} s per device.",
                retry_after=max(1, math.ceil(wait)),
            )
        events.append(now)
        self._events.move_to_end(key)

    def __len__(self) -> int:
        """How many devices are tracked."""
        return len(self._events)

    def _evict(self, now: float) -> None:
        """Make room for one more key: drop idle keys, then the least recently active."""
        if len(self._events) < self._max_keys:
            return
        for key in [k for k, ev in self._events.items() if not ev or ev[-1] <= now - self._window]:
            del self._events[key]
        while len(self._events) >= self._max_keys:
            self._events.popitem(last=False)


class TokenBucketLimiter:
    """`rate` events per second per key on average, bursts up to `burst` (per-instance registrations)."""

    def __init__(self, clock: Clock, rate: float, burst: int) -> None:
        self._clock = clock
        self._rate = rate
        self._burst = float(burst)
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, at)

    def check(self, key: Hashable, what: str) -> None:
        """Take one token for `key`, or raise DpsError(THROTTLED) with `retry_after`."""
        now = self._clock.now().timestamp()
        tokens, at = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            raise DpsError(
                THROTTLED,
                f"Too many {what} for this instance: at most {self._rate:g} per second.",
                retry_after=max(1, math.ceil((1.0 - tokens) / self._rate)),
            )
        self._buckets[key] = (tokens - 1.0, now)
