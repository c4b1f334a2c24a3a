"""Rate limiting for submissions: one token bucket per agency, in memory, per API process."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from hub.domain.error import TooManyRequests


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBucketLimiter:
    """``burst`` requests at once, refilled at ``rate`` per second, per key (organisation id).

    In memory on purpose: each API process limits on its own, which bounds the total at
    processes × rate; the broker, not this limiter, is what protects the pipeline.
    """

    def __init__(self, rate: float, burst: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.rate = max(rate, 1e-6)
        self.burst = max(burst, 1)
        self._now = monotonic
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> None:
        """Spend one token or raise TooManyRequests with the seconds until one is back."""
        with self._lock:
            now = self._now()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return
            wait = (1.0 - bucket.tokens) / self.rate
        raise TooManyRequests(
            f"submission rate limit for '{key}' reached ({self.burst} at once, {self.rate:g}/s)",
            retry_after=math.ceil(wait),
            code="rate-limited",
        )
