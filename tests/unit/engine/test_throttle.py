from __future__ import annotations

import pytest
from tests.unit.engine.manual_clock import ManualClock

from opendps.engine.throttle import SlidingWindowLimiter, TokenBucketLimiter
from opendps.model.errors import THROTTLED, DpsError


def test_sixth_poll_within_ten_seconds_is_throttled_with_retry_after(clock: ManualClock) -> None:
    limiter = SlidingWindowLimiter(clock, limit=5, window_seconds=10)
    for _ in range(5):
        limiter.check("dev", "polls")
        clock.advance(1)
    with pytest.raises(DpsError) as caught:
        limiter.check("dev", "polls")
    assert caught.value.error_code == THROTTLED and caught.value.http_status == 429
    assert caught.value.retry_after == 5  # the first poll (t=0) leaves the window at t=10


def test_polls_every_two_seconds_are_never_throttled(clock: ManualClock) -> None:
    limiter = SlidingWindowLimiter(clock, limit=5, window_seconds=10)
    for _ in range(50):
        limiter.check("dev", "polls")
        clock.advance(2)


def test_devices_have_separate_allowances(clock: ManualClock) -> None:
    limiter = SlidingWindowLimiter(clock, limit=1, window_seconds=10)
    limiter.check("a", "polls")
    limiter.check("b", "polls")
    with pytest.raises(DpsError):
        limiter.check("a", "polls")


def test_a_throttled_poll_does_not_count(clock: ManualClock) -> None:
    limiter = SlidingWindowLimiter(clock, limit=1, window_seconds=10)
    limiter.check("a", "polls")
    clock.advance(9)
    with pytest.raises(DpsError):
        limiter.check("a", "polls")
    clock.advance(1)
    limiter.check("a", "polls")


def test_tracked_devices_are_bounded(clock: ManualClock) -> None:
    limiter = SlidingWindowLimiter(clock, limit=1, window_seconds=10, max_keys=10)
    for n in range(100):
        limiter.check(n, "polls")
    assert len(limiter) <= 10


def test_token_bucket_allows_the_burst_then_the_rate(clock: ManualClock) -> None:
    bucket = TokenBucketLimiter(clock, rate=2, burst=3)
    for _ in range(3):
        bucket.check("inst", "registrations")
    with pytest.raises(DpsError) as caught:
        bucket.check("inst", "registrations")
    assert caught.value.retry_after == 1
    clock.advance(0.5)
    bucket.check("inst", "registrations")
    with pytest.raises(DpsError):
        bucket.check("inst", "registrations")
    bucket.check("other", "registrations")
