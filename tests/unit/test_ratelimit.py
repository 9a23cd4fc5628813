"""Token buckets: exact refills on an injected clock, no sleeping; bounded memory."""

from __future__ import annotations

import math

import pytest

from alerts.ratelimit import RateLimits, TokenBuckets


class Clock:
    def __init__(self) -> None:
        self.s = 1_000.0

    def __call__(self) -> float:
        return self.s


def test_burst_then_the_rate() -> None:
    clock = Clock()
    buckets = TokenBuckets(2.0, 5, clock=clock)
    assert [buckets.acquire("a") for _ in range(5)] == [0.0] * 5
    assert buckets.acquire("a") == pytest.approx(0.5)  # one token comes in 1/2 s
    clock.s += 0.25
    assert buckets.acquire("a") == pytest.approx(0.25)  # refused: nothing was taken
    clock.s += 0.25
    assert buckets.acquire("a") == 0.0
    assert buckets.acquire("a") == pytest.approx(0.5)


def test_refill_is_capped_at_the_burst() -> None:
    clock = Clock()
    buckets = TokenBuckets(1.0, 3, clock=clock)
    for _ in range(3):
        buckets.acquire("a")
    clock.s += 3_600  # an hour idle: full again, not 3603 tokens
    assert [buckets.acquire("a") for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(1.0)]


def test_keys_are_independent() -> None:
    clock = Clock()
    buckets = TokenBuckets(1.0, 1, clock=clock)
    assert buckets.acquire("10.0.0.1") == 0.0
    assert buckets.acquire("10.0.0.1") > 0
    assert buckets.acquire("10.0.0.2") == 0.0


def test_wait_s_takes_nothing_and_tracks_nothing() -> None:
    clock = Clock()
    buckets = TokenBuckets(0.1, 2, clock=clock)
    assert buckets.wait_s("new") == 0.0
    assert len(buckets) == 0
    buckets.acquire("a")
    buckets.acquire("a")
    assert buckets.wait_s("a") == pytest.approx(10.0)
    assert buckets.wait_s("a") == pytest.approx(10.0)  # peeking again changes nothing
    clock.s += 4
    assert buckets.wait_s("a") == pytest.approx(6.0)


def test_a_clock_stepping_back_never_drains() -> None:
    clock = Clock()
    buckets = TokenBuckets(1.0, 2, clock=clock)
    buckets.acquire("a")
    clock.s -= 100
    assert buckets.acquire("a") == 0.0  # the one token left, not -99
    assert buckets.acquire("a") > 0


def test_memory_is_bounded_least_recently_used_first() -> None:
    clock = Clock()
    buckets = TokenBuckets(1.0, 1, clock=clock, max_keys=3)
    for key in ("a", "b", "c"):
        assert buckets.acquire(key) == 0.0
    assert buckets.acquire("a") > 0  # refused, but "a" is now the most recently seen
    assert buckets.acquire("d") == 0.0  # evicts "b", the least recently used
    assert len(buckets) == 3
    assert buckets.acquire("a") > 0  # still tracked: still empty
    assert buckets.acquire("c") > 0
    assert buckets.acquire("b") == 0.0  # forgotten, so full again
    assert len(buckets) == 3


def test_many_clients_never_grow_the_table() -> None:
    buckets = TokenBuckets(1.0, 1, clock=Clock(), max_keys=100)
    for i in range(10_000):
        buckets.acquire(f"10.0.{i // 256}.{i % 256}")
    assert len(buckets) == 100


@pytest.mark.parametrize(
    ("rate", "burst", "max_keys"),
    [(0.0, 1, 1), (-1.0, 1, 1), (math.nan, 1, 1), (math.inf, 1, 1), (1.0, 0.5, 1), (1.0, 1, 0)],
)
def test_bad_parameters_are_refused(rate: float, burst: float, max_keys: int) -> None:
    with pytest.raises(ValueError, match=r"rate_per_s|burst|max_keys"):
        TokenBuckets(rate, burst, clock=Clock(), max_keys=max_keys)


def test_rate_limits_validate_and_name_the_field() -> None:
    assert RateLimits() == RateLimits(20.0, 40, 5.0)
    RateLimits(rate_per_s=0, auth_failures_per_min=0)  # 0 turns them off: valid
    for kwargs, field in [
        ({"rate_per_s": -1.0}, "rate_per_s"),
        ({"rate_per_s": math.nan}, "rate_per_s"),
        ({"auth_failures_per_min": math.inf}, "auth_failures_per_min"),
        ({"burst": 0}, "burst"),
        ({"max_clients": 0}, "max_clients"),
    ]:
        with pytest.raises(ValueError, match=f"^{field}: "):
            RateLimits(**kwargs)  # type: ignore[arg-type]
