"""Token buckets per key (client address, token): how the alerts API bounds request rates.

A bucket holds at most ``burst`` tokens and gains ``rate_per_s`` tokens per second; a request takes
one token, or is refused with the time until one is there. Pure: time comes from an injected
monotonic clock (seconds), so tests are exact without sleeping.

Memory is bounded: at most ``max_keys`` buckets are tracked. When a new key arrives at the cap,
the least recently used bucket is dropped. A dropped bucket comes back full, which is what an idle
client's bucket holds anyway once ``burst / rate_per_s`` seconds have passed; a client can only
gain from eviction if ``max_keys`` other clients arrived in between.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT_MAX_KEYS", "RateLimits", "TokenBuckets"]

DEFAULT_MAX_KEYS: Final = 10_000
"""Buckets tracked per limiter (client addresses or tokens) before the oldest is dropped."""


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The API's limits (config keys ``alerts.api_rate_per_s``, ``api_burst``,
    ``api_auth_failures_per_min``).

    Attributes:
        rate_per_s: Requests per second per client address, and per token; 0 turns both off.
        burst: Requests a client (or token) may send at once before the rate applies.
        auth_failures_per_min: Failed authentications (no or wrong token) per minute per client
            address; that many may come at once. Beyond it, the address gets 429 on every
            ``/api`` route until a failure has drained. 0 turns it off.
        max_clients: Buckets tracked per limiter (see :data:`DEFAULT_MAX_KEYS`).

    Raises:
        ValueError: A value is negative, not finite, or ``burst`` / ``max_clients`` is below 1.
    """

    rate_per_s: float = 20.0
    burst: int = 40
    auth_failures_per_min: float = 5.0
    max_clients: int = DEFAULT_MAX_KEYS

    def __post_init__(self) -> None:
        for name in ("rate_per_s", "auth_failures_per_min"):
            value: float = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: must be a finite number >= 0 (0 turns it off)")
        if self.burst < 1:
            raise ValueError("burst: must be at least 1")
        if self.max_clients < 1:
            raise ValueError("max_clients: must be at least 1")


class TokenBuckets:
    """One token bucket per key, at most ``max_keys`` of them (least recently used dropped).

    Args:
        rate_per_s: Tokens gained per second (> 0).
        burst: Capacity of a bucket, in tokens (>= 1); a new key starts full.
        clock: Monotonic time in seconds (``time.monotonic`` in production).
        max_keys: Buckets tracked at most.

    Raises:
        ValueError: ``rate_per_s`` is not a positive finite number, ``burst`` or ``max_keys`` is
            below 1.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: float,
        *,
        clock: Callable[[], float],
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        if not (math.isfinite(rate_per_s) and rate_per_s > 0):
            raise ValueError(f"rate_per_s must be a positive finite number, not {rate_per_s!r}")
        if not (math.isfinite(burst) and burst >= 1):
            raise ValueError(f"burst must be at least 1 token, not {burst!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, not {max_keys!r}")
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.max_keys = max_keys
        self._clock = clock
        # key -> (tokens, time of that level in clock seconds); oldest use first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _level(self, key: str, now: float) -> float:
        found = self._buckets.get(key)
        if found is None:
            return self.burst
        tokens, at = found
        # max(0, ...): an injected clock that steps back never drains a bucket.
        return min(self.burst, tokens + max(0.0, now - at) * self.rate_per_s)

    def _wait(self, tokens: float, cost: float) -> float:
        return (cost - tokens) / self.rate_per_s

    def acquire(self, key: str, cost: float = 1.0) -> float:
        """Take ``cost`` tokens from ``key``'s bucket if it holds them.

        Returns:
            0.0 when taken; otherwise the seconds until the bucket will hold them (nothing is
            taken then).
        """
        now = self._clock()
        tokens = self._level(key, now)
        if key in self._buckets:
            # Refused keys are touched too: a client that keeps knocking stays tracked.
            self._buckets.move_to_end(key)
        if tokens < cost:
            return self._wait(tokens, cost)
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            self._buckets.popitem(last=False)
        self._buckets[key] = (tokens - cost, now)
        return 0.0

    def wait_s(self, key: str, cost: float = 1.0) -> float:
        """Seconds until ``key``'s bucket holds ``cost`` tokens (0.0: now); takes nothing and
        tracks no new key."""
        tokens = self._level(key, self._clock())
        return 0.0 if tokens >= cost else self._wait(tokens, cost)
