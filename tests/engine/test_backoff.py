"""The one backoff policy: bounds, growth, cap, jitter range, determinism."""

from __future__ import annotations

import asyncio
import random

import pytest

from thoonk_bridge.backoff import Backoff
from thoonk_bridge.router import RetryPolicy
from thoonk_bridge.testing import FAST_RETRY


def test_ceiling_doubles_from_base_up_to_cap() -> None:
    policy = Backoff(base=0.5, cap=5.0, jitter=0)
    assert [policy.delay(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert policy.ceiling(-3) == 0.5  # negative attempts count as the first
    assert policy.ceiling(10_000) == 5.0  # huge attempts: the cap, no overflow


def test_full_jitter_stays_between_zero_and_the_ceiling() -> None:
    policy = Backoff(base=0.2, cap=30.0, rng=random.Random(7))
    for attempt in range(40):
        high = min(30.0, 0.2 * 2**attempt)
        samples = [policy.delay(attempt) for _ in range(50)]
        assert all(0 <= d <= high for d in samples)
    late = [policy.delay(20) for _ in range(500)]
    assert min(late) < 3.0 and max(late) > 27.0  # spread over the whole range, not bunched


def test_equal_jitter_stays_in_the_upper_half() -> None:
    policy = Backoff(base=10.0, cap=600.0, jitter=0.5, rng=random.Random(3))
    for attempt in range(10):
        high = min(600.0, 10.0 * 2**attempt)
        samples = [policy.delay(attempt) for _ in range(50)]
        assert all(high / 2 <= d <= high for d in samples)
        assert len(set(samples)) > 1


def test_floor_bounds_every_delay() -> None:
    reconnect = Backoff(base=1.0, cap=60.0, floor=1.0, rng=random.Random(5))
    assert all(1.0 <= reconnect.delay(0) <= 1.0 for _ in range(20))  # the ceiling is the floor at first
    assert all(1.0 <= reconnect.delay(3) <= 8.0 for _ in range(50))
    poll = Backoff(base=5.0, cap=60.0, jitter=0.5, floor=5.0, rng=random.Random(1))
    assert all(5.0 <= poll.delay(n) <= 60.0 for n in range(12) for _ in range(20))
    assert Backoff(base=1.0, cap=2.0, jitter=0, floor=3.0).delay(5) == 3.0


def test_average_delay_grows_until_the_cap() -> None:
    policy = Backoff(base=0.1, cap=10.0, rng=random.Random(11))
    means = [sum(policy.delay(n) for _ in range(400)) / 400 for n in range(10)]
    assert all(a < b for a, b in zip(means[:7], means[1:8], strict=True))
    assert 4.0 < means[-1] < 6.0  # capped: uniform over [0, 10]


def test_seeded_random_gives_the_same_delays() -> None:
    a = Backoff(base=0.5, cap=30.0, rng=random.Random(42))
    b = Backoff(base=0.5, cap=30.0, rng=random.Random(42))
    assert [a.delay(n) for n in range(20)] == [b.delay(n) for n in range(20)]
    assert a == b  # the random source is not part of the policy's identity


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=1.5)
    with pytest.raises(ValueError, match=">= 0"):
        Backoff(base=-1.0)


async def test_sleep_waits_the_delay_it_returns() -> None:
    policy = Backoff(base=0.01, cap=0.02, jitter=0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    waited = await policy.sleep(1)
    assert waited == 0.02 and loop.time() - started >= 0.015


def test_the_router_retry_policy_is_the_backoff() -> None:
    assert RetryPolicy is Backoff
    assert (RetryPolicy().base, RetryPolicy().cap, RetryPolicy().jitter) == (0.2, 30.0, 1.0)
    assert all(0 <= FAST_RETRY.delay(n) <= 0.5 for n in range(20))
