"""Rate limits for teacher requests: requests per minute (evenly spaced) and tokens per minute (a bucket)."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """An async token bucket: ``rate_per_s`` tokens flow in, at most ``capacity`` are held.

    :meth:`acquire` waits until enough tokens are there (callers are served in
    order); :meth:`adjust` gives tokens back or takes extra ones (the balance may
    go negative, which simply delays later callers).
    """

    def __init__(self, rate_per_s: float, capacity: float) -> None:
        if rate_per_s <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be positive")
        self.rate = float(rate_per_s)
        self.capacity = float(capacity)
        self.tokens = float(capacity)
        self._stamp = time.monotonic()
        self._lock: asyncio.Lock | None = None

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, amount: float = 1.0) -> float:
        """Take ``amount`` tokens (capped at the capacity); returns the seconds waited."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        amount = min(float(amount), self.capacity)
        waited = 0.0
        async with self._lock:
            while True:
                self._refill()
                if self.tokens >= amount:
                    self.tokens -= amount
                    return waited
                delay = (amount - self.tokens) / self.rate
                waited += delay
                await asyncio.sleep(delay)

    def adjust(self, delta: float) -> None:
        self._refill()
        self.tokens = min(self.capacity, self.tokens + delta)


class RateLimiter:
    """Requests-per-minute (evenly spaced) and tokens-per-minute limits together."""

    def __init__(self, rpm: float | None, tpm: float | None) -> None:
        self.requests = TokenBucket(rpm / 60.0, 1.0) if rpm else None
        self.tokens = TokenBucket(tpm / 60.0, tpm) if tpm else None

    async def acquire(self, estimate: int) -> None:
        if self.tokens is not None:
            await self.tokens.acquire(estimate)
        if self.requests is not None:
            await self.requests.acquire(1.0)

    def refund(self, estimate: int) -> None:
        """The server rejected the request outright: its tokens were not spent."""
        if self.tokens is not None:
            self.tokens.adjust(estimate)

    def settle(self, estimate: int, actual: int) -> None:
        """Correct the estimate with the real usage."""
        if self.tokens is not None and actual > 0:
            self.tokens.adjust(estimate - actual)
